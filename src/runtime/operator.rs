//! The operator's side of `GhostRuntime`: the sweeper's controls, one shard's stats, paged export, reviving a shard.

use super::GhostRuntime;
use crate::actors::SweeperActor;
use crate::config::SweeperConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::messages::{ExportPage, GetStats, Revive, ShardState, ShardStats};
use crate::messages::{GetSweepStats, Pause, Resume, RunPass, SetRate, StopSweeper};
use crate::sweep::Verifier;
use crate::sweep::{PassReport, SweepCounts, SweepTotals};
use crate::table::GhostPage;
use actix::Addr;
use actix::Arbiter;
use std::sync::{Arc, PoisonError};

impl GhostRuntime {
    fn sweeper_addr(&self) -> Result<Addr<SweeperActor>> {
        self.sweeper.lock().unwrap_or_else(PoisonError::into_inner).clone().ok_or(Error::NoSweeper)
    }

    /// Starts the sweeper over every shard, verifying through `verifier`: on an
    /// arbiter of its own, so that sweeping never runs where a shard's requests
    /// do (unless the runtime runs everything on the calling arbiter,
    /// `arbiters = 0`). A host may start it only once its edge logs are
    /// replayed, and again after [`stop_sweeper`](Self::stop_sweeper).
    /// Refused while one runs.
    pub fn start_sweeper(&self, verifier: Arc<dyn Verifier>, config: SweeperConfig) -> Result<()> {
        let mut slot = self.sweeper.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(Addr::connected) {
            return Err(Error::InvalidConfig("a sweeper runs already: stop it first".into()));
        }
        let mut shards: Vec<_> = self.shards.iter().map(|(&s, a)| (s, a.clone())).collect();
        shards.sort_unstable_by_key(|(s, _)| *s);
        let actor = SweeperActor::new(shards, verifier, config)?;
        *slot = Some(if self.own_threads {
            let arbiter = Arbiter::new();
            let addr = actor.start_in(&arbiter.handle());
            self.arbiters.lock().unwrap_or_else(PoisonError::into_inner).push(arbiter);
            addr
        } else {
            actor.start_in(&Arbiter::current())
        });
        Ok(())
    }

    /// Stops the sweeper gracefully and answers its final totals: no new
    /// verify starts, those in flight finish or time out (within the verify
    /// timeout), and the verdicts gathered are applied.
    pub async fn stop_sweeper(&self) -> Result<SweepTotals> {
        let addr =
            self.sweeper.lock().unwrap_or_else(PoisonError::into_inner).take().ok_or(Error::NoSweeper)?;
        addr.send(StopSweeper).await.map_err(|_| Error::NoSweeper)
    }

    /// Pauses the sweeper: it takes no token and starts no pass; a running
    /// pass waits at its next step. Foreground traffic is untouched.
    pub async fn pause_sweeper(&self) -> Result<()> {
        self.sweeper_addr()?.send(Pause).await.map_err(|_| Error::NoSweeper)
    }

    /// Undoes [`pause_sweeper`](Self::pause_sweeper).
    pub async fn resume_sweeper(&self) -> Result<()> {
        self.sweeper_addr()?.send(Resume).await.map_err(|_| Error::NoSweeper)
    }

    /// Sets the sweeper's token bucket: `per_second` verifies per second, bursts
    /// of `burst` (both at least 1). The new bucket starts full.
    pub async fn set_sweep_rate(&self, per_second: u32, burst: u32) -> Result<()> {
        self.sweeper_addr()?.send(SetRate { per_second, burst }).await.map_err(|_| Error::NoSweeper)?
    }

    /// Runs one full pass over every shard now and answers its report when it
    /// ends (a pass already running is followed by a new one, so the report
    /// covers every shard). While paused, it waits for a resume.
    pub async fn run_sweep_pass(&self) -> Result<PassReport> {
        self.sweeper_addr()?.send(RunPass).await.map_err(|_| Error::NoSweeper)
    }

    /// Returns once every ghost that was due for a verify when it was called
    /// has been verified (and the verdict applied) or put into back-off: it
    /// runs passes until one, started after the call, left no shard as busy
    /// and had no verdict go stale (a verdict for a ghost that changed after
    /// planning is dropped and the ghost planned again). Shards that cannot be
    /// swept at all (down, failed closed) are counted in the answer's
    /// `counts.shard_errors`, and their ghosts are not swept. Answers the
    /// counts of every pass it ran. While the sweeper is paused, it waits.
    pub async fn wait_until_swept(&self) -> Result<SweepCounts> {
        let mut counts = SweepCounts::default();
        loop {
            let pass = self.run_sweep_pass().await?;
            counts.merge(&pass.counts);
            if !pass.complete {
                // Only a stop cuts a pass short.
                return Err(Error::NoSweeper);
            }
            if pass.counts.skipped_busy == 0 && pass.counts.stale == 0 {
                return Ok(counts);
            }
        }
    }

    /// One page of `shard`'s ghosts in node-id order: those after `after`
    /// (`None`: from the first), at most `limit`. Walk a shard from `None`
    /// through each page's `next` to export it without holding it for more
    /// than one page at a time; every ghost that lives throughout the walk is
    /// in exactly one page. See [`GhostTable::export_page`](crate::table::GhostTable::export_page).
    pub async fn export_page(
        &self,
        shard: impl Into<ShardId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<GhostPage> {
        self.request(shard, ExportPage { after: after.map(Into::into), limit }).await
    }

    /// The sweeper's running totals, rate and state.
    pub async fn sweep_totals(&self) -> Result<SweepTotals> {
        self.sweeper_addr()?.send(GetSweepStats).await.map_err(|_| Error::NoSweeper)
    }

    /// One shard's state and counters.
    pub async fn shard_stats(&self, shard: impl Into<ShardId>) -> Result<ShardStats> {
        self.call(shard, GetStats).await
    }

    /// Brings back a shard that failed closed, went down past its restart
    /// intensity, or was fenced, once the operator has repaired what stopped it
    /// (the store's bytes, the disk, or, for a shared catalog, ownership:
    /// `EtcdStore::acquire` first). The shard reloads by the same fail-closed
    /// load as a restart, with a fresh restart budget; a shard that serves is
    /// left alone. Answers the shard's state after the reload: `Ready`, or
    /// the state it fell back to if the cause is still there.
    pub async fn revive_shard(&self, shard: impl Into<ShardId>) -> Result<ShardState> {
        let shard = shard.into();
        self.request(shard, Revive).await?;
        // The reload holds the shard's mailbox: this answer comes after it.
        Ok(self.shard_stats(shard).await?.state)
    }
}
