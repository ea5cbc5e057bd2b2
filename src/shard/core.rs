//! `ShardCore`: one shard's table and every promise the shard makes about
//! it, as a state machine with no I/O, no clock and no runtime.
//!
//! In the manner of raft-rs's `RawNode`: the host hands it the host's
//! requests (a method each), the time as `now` in milliseconds, and what the
//! store answered ([`commit_done`](ShardCore::commit_done),
//! [`loaded`](ShardCore::loaded)), and a panic it caught
//! ([`panicked`](ShardCore::panicked)); the core answers at once or queues
//! [`Effect`]s (commit these changes, answer that waiting request, load after
//! the back-off, restart, fence), which the host drains with
//! [`ready`](ShardCore::ready) and carries out in order.
//!
//! A request is applied by its method, which answers `(outcome, Answer)`,
//! then settled by [`settle`](ShardCore::settle), which schedules its flush
//! and, if its answer must wait for a commit, gives the token to wait on. In
//! between the host may stage the table's dirty stubs
//! ([`stage_due`](ShardCore::stage_due)), so that it can do the costly copy
//! under a lock its readers share.

use super::effects::{Effect, Token};
use super::flush::{Answer, FlushState};
use super::restart::RestartBudget;
use super::seq::SeqPositions;
use super::state::{State, unavailable};
use crate::config::{Durability, ShardConfig};
use crate::error::{Error, Result};
use crate::event::{BatchOutcome, EdgeEvents, EdgeOutcome, InsertOutcome, MoveOutcome};
use crate::ids::{Epoch, ShardId};
use crate::messages::{PlanReply, ShardState, ShardStats};
use crate::sweep::{ApplyReport, CheckedVerdict};
use crate::table::{GhostTable, StagedAhead, WarmBatch};

/// One shard's table and promise state (see the module documentation).
pub(crate) struct ShardCore {
    pub(super) shard: ShardId,
    pub(super) durability: Durability,
    /// Sequenced removal-only batches are acknowledged before they are durable.
    pub(super) removals_at_once: bool,
    pub(super) state: State,
    pub(super) seq: SeqPositions,
    pub(super) flush: FlushState,
    pub(super) restart: RestartBudget,
    /// Changes on every restart: verdicts planned before one are stale.
    pub(super) incarnation: u64,
    pub(super) stats: ShardStats,
    pub(super) next_token: Token,
    pub(super) effects: Vec<Effect>,
    /// States replaced since the last `ready` (a whole table, perhaps), for
    /// the host to drop once it has released the shard's lock.
    pub(super) retired: Vec<State>,
}

/// What [`ShardCore::ready`] hands the host.
pub(crate) struct Ready {
    /// To carry out, in order.
    pub(crate) effects: Vec<Effect>,
    /// To drop outside the shard's lock, so that readers do not wait for the free.
    pub(crate) retired: Vec<State>,
}

impl ShardCore {
    /// A core for `shard`, loading; `incarnation` is its first.
    pub(crate) fn new(shard: ShardId, config: &ShardConfig, incarnation: u64) -> Self {
        Self {
            shard,
            durability: config.durability,
            removals_at_once: config.ack_removal_batches_at_once,
            state: State::Loading,
            seq: SeqPositions::default(),
            flush: FlushState::default(),
            restart: RestartBudget::new(config.restart),
            incarnation,
            stats: ShardStats::default(),
            next_token: 0,
            effects: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// The effects queued since the last call, and the states to drop.
    pub(crate) fn ready(&mut self) -> Ready {
        Ready { effects: std::mem::take(&mut self.effects), retired: std::mem::take(&mut self.retired) }
    }

    /// The states replaced since the last call, to drop unlocked.
    pub(crate) fn take_retired(&mut self) -> Vec<State> {
        std::mem::take(&mut self.retired)
    }

    /// The shard's id.
    pub(crate) fn shard(&self) -> ShardId {
        self.shard
    }

    /// Where the shard is in its life.
    #[cfg(test)]
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Whether it has a table to serve from.
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready(_))
    }

    /// The table, or the error a request gets while there is none.
    pub(crate) fn table(&self) -> Result<&GhostTable> {
        match &self.state {
            State::Ready(t) => Ok(t),
            other => Err(unavailable(other, self.shard)),
        }
    }

    /// The table to change, or the error a request gets while there is none.
    pub(crate) fn table_mut(&mut self) -> Result<&mut GhostTable> {
        match &mut self.state {
            State::Ready(t) => Ok(t),
            other => Err(unavailable(other, self.shard)),
        }
    }

    /// Replaces the state; the old one is dropped by the host, unlocked.
    pub(crate) fn set_state(&mut self, state: State) {
        let old = std::mem::replace(&mut self.state, state);
        if matches!(old, State::Ready(_)) {
            self.retired.push(old);
        }
    }

    /// The incarnation verdicts must be planned in.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Requests waiting for the next commit: the shard's write backlog.
    pub(crate) fn pending_acks(&self) -> usize {
        self.flush.waiting()
    }

    /// The highest batch awaiting its acknowledgement, and the lowest known lost.
    #[cfg(test)]
    pub(crate) fn seq_positions(&self) -> (Option<u64>, Option<u64>) {
        (self.seq.unacked(), self.seq.lowest_lost())
    }

    pub(super) fn has_changes(&self) -> bool {
        matches!(&self.state, State::Ready(t) if t.has_changes())
    }

    /// Whether the table has enough dirty stubs to stage them now.
    pub(crate) fn stage_due(&self) -> bool {
        matches!(&self.state, State::Ready(t) if t.stage_due())
    }

    /// Copies the dirty stubs for the store (read-only: see [`GhostTable::stage_ahead`]).
    pub(crate) fn stage_ahead(&self) -> Option<StagedAhead> {
        self.table().ok().map(GhostTable::stage_ahead)
    }

    /// Makes a copy of [`stage_ahead`](Self::stage_ahead) the stubs' staged state.
    pub(crate) fn commit_staged(&mut self, staged: StagedAhead) {
        if let State::Ready(t) = &mut self.state {
            t.commit_staged(staged);
        }
    }

    /// Records on this shard that a node moved away.
    pub(crate) fn insert(
        &mut self,
        node_id: &str,
        target: ShardId,
        refcount: u32,
        epoch: Epoch,
        now: u64,
    ) -> Result<(Result<InsertOutcome>, Answer)> {
        let out = self.table_mut()?.insert(node_id, target, refcount, epoch, now);
        Ok((out, Answer::Durable))
    }

    /// A local edge to `node_id` was added.
    pub(crate) fn edge_added(&mut self, node_id: &str) -> Result<(EdgeOutcome, Answer)> {
        Ok((self.table_mut()?.edge_added(node_id), Answer::Durable))
    }

    /// A local edge to `node_id` was removed.
    pub(crate) fn edge_removed(&mut self, node_id: &str) -> Result<(EdgeOutcome, Answer)> {
        Ok((self.table_mut()?.edge_removed(node_id), Answer::Now))
    }

    /// The read-only first step of an edge batch (see [`GhostTable::warm_batch`]).
    pub(crate) fn warm_batch<'e>(&self, events: &'e EdgeEvents) -> Result<WarmBatch<'e>> {
        Ok(self.table()?.warm_batch(events))
    }

    /// Applies the edge batch `warm` holds, once per `seq`; refused with
    /// [`Error::SeqGap`] while a batch the shard lost is still to come again.
    pub(crate) fn edge_batch(
        &mut self,
        seq: Option<u64>,
        warm: &mut WarmBatch<'_>,
    ) -> Result<(BatchOutcome, Answer)> {
        let applied = self.table()?.applied_seq();
        if let Err(awaiting) = self.seq.admit(seq, applied) {
            return Err(Error::SeqGap { shard: self.shard, applied, awaiting });
        }
        // A sequenced batch is durable before it is acknowledged, whatever
        // it holds: the host will not send an acknowledged batch again, so a
        // removal lost after its acknowledgement would leave the shard and
        // the host's log apart. Early removals are the host's opt-in.
        let answer = if warm.events().any_added() || (seq.is_some() && !self.removals_at_once) {
            Answer::Durable
        } else {
            Answer::Now
        };
        // Under interval durability the batch is acknowledged at once: a
        // restart may lose it, but the host will not send it again.
        let awaits_ack = answer == Answer::Durable && matches!(self.durability, Durability::GroupCommit);
        self.seq.applying(seq, awaits_ack);
        Ok((self.table_mut()?.apply_warmed(seq, warm), answer))
    }

    /// Sequenced batch `seq` failed (refused, or its step panicked): the host
    /// sends it again, so no later batch may be applied before it, or the
    /// later one would move the sequence number past it and its retry would
    /// be answered `skipped`. Every driver calls this on every failed step of
    /// a sequenced batch.
    pub(crate) fn batch_refused(&mut self, seq: Option<u64>) {
        if let Some(seq) = seq {
            let applied = self.table().ok().and_then(GhostTable::applied_seq);
            self.seq.refused(seq, applied);
        }
    }

    /// A ghost follows its node to a newer shard.
    pub(crate) fn retarget(
        &mut self,
        node_id: &str,
        target: ShardId,
        epoch: Epoch,
    ) -> Result<(Result<MoveOutcome>, Answer)> {
        Ok((self.table_mut()?.retarget(node_id, target, epoch), Answer::Durable))
    }

    /// A node moved back to this shard.
    pub(crate) fn reclaim(&mut self, node_id: &str, epoch: Epoch, now: u64) -> Result<(MoveOutcome, Answer)> {
        Ok((self.table_mut()?.reclaim(node_id, epoch, now)?, Answer::Durable))
    }

    /// Everything applied so far, made durable.
    pub(crate) fn flush(&mut self) -> Result<((), Answer)> {
        self.table()?;
        Ok(((), Answer::AfterFlush))
    }

    /// Plans a page of the sweep.
    pub(crate) fn plan_sweep(&mut self, max_scan: usize, now: u64) -> Result<(PlanReply, Answer)> {
        let page = self.table_mut()?.plan_sweep(now, max_scan);
        let reply = PlanReply {
            shard: self.shard,
            incarnation: self.incarnation,
            page,
            pending_acks: self.pending_acks(),
            // The core knows no writer; its driver fills this in.
            writer_queue: 0,
        };
        Ok((reply, Answer::Now))
    }

    /// Applies verdicts planned in `incarnation`; those of another are stale.
    pub(crate) fn apply_verdicts(
        &mut self,
        incarnation: u64,
        verdicts: &[CheckedVerdict],
        now: u64,
    ) -> Result<(ApplyReport, Answer)> {
        if incarnation != self.incarnation {
            // Planned before a restart: versions restarted too, so none can be trusted.
            let n = verdicts.len() as u32;
            self.stats.stale_incarnation_verdicts += u64::from(n);
            return Ok((ApplyReport { stale: n, ..ApplyReport::default() }, Answer::Now));
        }
        Ok((self.table_mut()?.apply_verdicts(verdicts, now), Answer::Now))
    }

    /// The shard's counters and state.
    pub(crate) fn stats(&self, now: u64) -> ShardStats {
        let mut stats = self.stats.clone();
        stats.pending_acks = self.pending_acks();
        stats.state = match &self.state {
            State::Loading | State::Closed => ShardState::Loading,
            State::Ready(t) => {
                stats.table = t.stats(now);
                ShardState::Ready
            }
            State::Failed(cause) => ShardState::FailedClosed(cause.chain()),
            State::Fenced(cause) => ShardState::FailedClosed(
                Error::Fenced { shard: self.shard, cause: cause.clone() }.to_string(),
            ),
            State::Down { .. } => ShardState::Down,
        };
        stats
    }
}
