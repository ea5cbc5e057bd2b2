//! `CoreDriver`: a shard's pure core driven by hand, for simulations: the
//! steps `GhostActor` takes for each request, with the store, the clock and
//! the mailbox left to the caller.

use crate::config::ShardConfig;
use crate::error::{Error, Result};
use crate::event::{BatchOutcome, EdgeEvents, EdgeOutcome, InsertOutcome, MoveOutcome};
use crate::ids::{Epoch, ShardId};
use crate::messages::PlanReply;
use crate::shard::{Answer, Effect, Restart, ShardCore, Token};
use crate::store::ShardChanges;
use crate::sweep::{ApplyReport, CheckedVerdict};
use crate::table::GhostTable;
use std::time::Duration;

/// One thing the core asks its host to do (the core's effects, public).
#[derive(Debug)]
#[non_exhaustive]
pub enum CoreEffect {
    /// Commit these changes, then call [`CoreDriver::commit_done`]. One at a time.
    Commit(ShardChanges),
    /// Answer the request that got `token`.
    Ack {
        /// The token [`CoreDriver`]'s request call handed out.
        token: u64,
        /// The answer.
        result: Result<()>,
    },
    /// Call [`CoreDriver::flush_due`] after this long.
    FlushAfter(Duration),
    /// Load the table once the clock reads `at_ms`, then call [`CoreDriver::loaded`].
    Load {
        /// The earliest time to load at.
        at_ms: u64,
    },
    /// Stop the shard, then call [`CoreDriver::restarting`] and [`CoreDriver::start`].
    Restart {
        /// An operator's revive rather than a failure.
        revive: bool,
    },
    /// The shard fenced itself.
    Fenced(String),
    /// The stored state is unreadable: the shard failed closed.
    FailedClosed(Box<Error>),
    /// The restart budget is spent.
    Down,
}

/// A request's immediate result and, when its answer waits for a commit, the
/// token an [`CoreEffect::Ack`] answers.
pub type Applied<R> = Result<(R, Option<u64>)>;

/// One shard's core (`ShardCore`), driven as `GhostActor` drives it but by hand.
pub struct CoreDriver {
    core: ShardCore,
}

impl std::fmt::Debug for CoreDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreDriver").field("shard", &self.core.shard()).finish()
    }
}

impl CoreDriver {
    /// A core for `shard`, loading; nothing happens before [`start`](Self::start).
    pub fn new(shard: ShardId, config: &ShardConfig, incarnation: u64) -> Self {
        Self { core: ShardCore::new(shard, config, incarnation) }
    }

    /// The effects queued since the last call, in order.
    pub fn ready(&mut self) -> Vec<CoreEffect> {
        let ready = self.core.ready();
        ready.effects.into_iter().map(public).collect()
    }

    /// The table, or the error a request gets while there is none.
    pub fn table(&self) -> Result<&GhostTable> {
        self.core.table()
    }

    /// The incarnation verdicts must be planned in.
    pub fn incarnation(&self) -> u64 {
        self.core.incarnation()
    }

    /// The shard (re)starts at `now`.
    pub fn start(&mut self, now: u64) {
        self.core.start(now);
    }

    /// What the store answered to the load.
    pub fn loaded(&mut self, result: Result<GhostTable>) {
        self.core.loaded(result);
    }

    /// What the store answered to the commit in flight.
    pub fn commit_done(&mut self, result: Result<()>) {
        self.core.commit_done(result);
    }

    /// The interval timer fired.
    pub fn flush_due(&mut self) {
        self.core.flush_due();
    }

    /// A step panicked; `batch`: the sequence number of the edge batch it
    /// handled, if it handled one (the actor refuses it, as any failed batch).
    pub fn panicked(&mut self, batch: Option<u64>) {
        self.core.panicked(false);
        self.core.batch_refused(batch);
    }

    /// The shard restarts at `now`; true when counted against the budget.
    pub fn restarting(&mut self, now: u64) -> bool {
        self.core.restarting(now)
    }

    /// The shard's claim lapsed.
    pub fn fence(&mut self, cause: &str) {
        self.core.fence(cause.to_owned());
    }

    /// An operator revives the shard.
    pub fn revive(&mut self) {
        self.core.revive();
    }

    /// `InsertGhost`.
    pub fn insert(
        &mut self,
        node_id: &str,
        target: ShardId,
        refcount: u32,
        epoch: Epoch,
        now: u64,
    ) -> Applied<Result<InsertOutcome>> {
        let out = self.core.insert(node_id, target, refcount, epoch, now);
        self.settle(out)
    }

    /// `EdgeAdded`.
    pub fn edge_added(&mut self, node_id: &str) -> Applied<EdgeOutcome> {
        let out = self.core.edge_added(node_id);
        self.settle(out)
    }

    /// `EdgeRemoved`.
    pub fn edge_removed(&mut self, node_id: &str) -> Applied<EdgeOutcome> {
        let out = self.core.edge_removed(node_id);
        self.settle(out)
    }

    /// `EdgeBatch`: warmed, applied, then staged ahead when due, as the actor does.
    pub fn edge_batch(&mut self, seq: Option<u64>, events: &EdgeEvents) -> Applied<BatchOutcome> {
        let out = match self.core.warm_batch(events) {
            Ok(mut warm) => self.core.edge_batch(seq, &mut warm),
            Err(e) => Err(e),
        };
        let out = self.settle(out);
        if out.is_err() {
            self.core.batch_refused(seq);
        }
        out
    }

    /// `Retarget`.
    pub fn retarget(&mut self, node_id: &str, target: ShardId, epoch: Epoch) -> Applied<Result<MoveOutcome>> {
        let out = self.core.retarget(node_id, target, epoch);
        self.settle(out)
    }

    /// `Reclaim`.
    pub fn reclaim(&mut self, node_id: &str, epoch: Epoch, now: u64) -> Applied<MoveOutcome> {
        let out = self.core.reclaim(node_id, epoch, now);
        self.settle(out)
    }

    /// `Flush`.
    pub fn flush(&mut self) -> Applied<()> {
        let out = self.core.flush();
        self.settle(out)
    }

    /// `PlanSweep`.
    pub fn plan_sweep(&mut self, max_scan: usize, now: u64) -> Applied<PlanReply> {
        let out = self.core.plan_sweep(max_scan, now);
        self.settle(out)
    }

    /// `ApplyVerdicts`.
    pub fn apply_verdicts(
        &mut self,
        incarnation: u64,
        verdicts: &[CheckedVerdict],
        now: u64,
    ) -> Applied<ApplyReport> {
        let out = self.core.apply_verdicts(incarnation, verdicts, now);
        self.settle(out)
    }

    /// Stages ahead when due (the actor's step after a request), then
    /// settles the request's answer.
    fn settle<R>(&mut self, out: Result<(R, Answer)>) -> Applied<R> {
        let (r, answer) = out?;
        if self.core.stage_due()
            && let Some(staged) = self.core.stage_ahead()
        {
            self.core.commit_staged(staged);
        }
        Ok((r, self.core.settle(answer).map(|t: Token| t)))
    }
}

fn public(effect: Effect) -> CoreEffect {
    match effect {
        Effect::Commit(changes) => CoreEffect::Commit(changes),
        Effect::Ack { token, result } => CoreEffect::Ack { token, result },
        Effect::FlushAfter(d) => CoreEffect::FlushAfter(d),
        Effect::Load { at_ms } => CoreEffect::Load { at_ms },
        Effect::Restart(why) => CoreEffect::Restart { revive: matches!(why, Restart::Revive) },
        Effect::Fenced(cause) => CoreEffect::Fenced(cause),
        Effect::FailedClosed(e) => CoreEffect::FailedClosed(e),
        Effect::Down => CoreEffect::Down,
    }
}
