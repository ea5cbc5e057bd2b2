//! The operator's side of `GhostRuntime`: the sweeper's controls, one shard's stats, paged export, reviving a shard.

use super::GhostRuntime;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::messages::{ExportPage, GetStats, Revive, ShardState, ShardStats};
use crate::messages::{GetSweepStats, Pause, Resume, RunPass, SetRate};
use crate::sweep::{PassReport, SweepCounts, SweepTotals};
use crate::table::GhostPage;

/// Most passes [`GhostRuntime::wait_until_swept`] runs before it gives up.
const MAX_SWEEP_WAIT_PASSES: u32 = 16;

impl GhostRuntime {
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
    /// has been verified (and the verdict applied) or put into back-off, with
    /// the counts of the passes it ran.
    ///
    /// A pass visits each shard from where that shard's sweep cursor stands,
    /// which an earlier, cut-short visit may have left mid-table; so this runs
    /// passes until two in a row are clean (every shard's visit completed, none
    /// busy or failing, no verdict dropped as stale): the first brings every
    /// cursor round to the start, the second covers every table whole. It
    /// gives up with [`Error::NotSwept`] after 16 passes (a shard that stays busy, is down or failed closed, or whose
    /// ghosts keep changing under the sweep). While the sweeper is paused, it
    /// waits.
    pub async fn wait_until_swept(&self) -> Result<SweepCounts> {
        let mut counts = SweepCounts::default();
        let mut clean_in_a_row = 0;
        for _ in 0..MAX_SWEEP_WAIT_PASSES {
            let pass = self.run_sweep_pass().await?;
            counts.merge(&pass.counts);
            if !pass.complete {
                // Only a stop cuts a pass short.
                return Err(Error::NoSweeper);
            }
            let c = &pass.counts;
            let clean = c.skipped_busy == 0 && c.shard_errors == 0 && c.stale == 0;
            clean_in_a_row = if clean { clean_in_a_row + 1 } else { 0 };
            if clean_in_a_row == 2 {
                return Ok(counts);
            }
        }
        Err(Error::NotSwept { passes: MAX_SWEEP_WAIT_PASSES })
    }

    /// One page of `shard`'s ghosts in node-id order: those after `after`
    /// (`None`: from the first), at most `limit`. Walk a shard from `None`
    /// through each page's `next` to export it without holding it for more
    /// than one page at a time; every ghost that lives throughout the walk is
    /// in exactly one page. See [`GhostTable::export_page`](crate::table::GhostTable::export_page).
    pub async fn export_page(&self, shard: ShardId, after: Option<&str>, limit: usize) -> Result<GhostPage> {
        self.request(shard, ExportPage { after: after.map(Into::into), limit }).await
    }

    /// The sweeper's running totals, rate and state.
    pub async fn sweep_totals(&self) -> Result<SweepTotals> {
        self.sweeper_addr()?.send(GetSweepStats).await.map_err(|_| Error::NoSweeper)
    }

    /// One shard's state and counters.
    pub async fn shard_stats(&self, shard: ShardId) -> Result<ShardStats> {
        self.call(shard, GetStats).await
    }

    /// Brings back a shard that failed closed, went down past its restart
    /// intensity, or was fenced, once the operator has repaired what stopped it
    /// (the store's bytes, the disk, or, for a shared catalog, ownership:
    /// `EtcdStore::acquire` first). The shard reloads by the same fail-closed
    /// load as a restart, with a fresh restart budget; a shard that serves is
    /// left alone. Answers the shard's state after the reload: `Ready`, or
    /// the state it fell back to if the cause is still there.
    pub async fn revive_shard(&self, shard: ShardId) -> Result<ShardState> {
        self.request(shard, Revive).await?;
        // The reload holds the shard's mailbox: this answer comes after it.
        Ok(self.shard_stats(shard).await?.state)
    }
}
