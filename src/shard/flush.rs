//! Group commit: which requests wait for which commit, when a flush starts,
//! and what its outcome means for them.

use super::core::ShardCore;
use super::effects::{Effect, Restart, Token};
use super::state::State;
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::table::ShardChanges;

/// The requests waiting for a commit, and whether one is in flight or armed.
#[derive(Debug, Default)]
pub(crate) struct FlushState {
    /// Requests that wait for the next flush to commit.
    waiters: Vec<Token>,
    /// Requests that wait for the commit in flight.
    in_flight: Vec<Token>,
    /// A commit is in flight: one at a time keeps commits in order.
    flushing: bool,
    /// The interval timer is set.
    interval_armed: bool,
}

impl FlushState {
    /// Every waiting request, for a restart; nothing is in flight or armed after.
    pub(crate) fn abandon(&mut self) -> Vec<Token> {
        self.flushing = false;
        self.interval_armed = false;
        let mut all = std::mem::take(&mut self.in_flight);
        all.append(&mut self.waiters);
        all
    }

    /// Requests waiting for the next flush (not the one in flight).
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Takes the requests waiting for the next flush (a fence answers them).
    pub(crate) fn take_waiters(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.waiters)
    }
}

/// How a request is answered once applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// At once; its changes ride the next flush.
    Now,
    /// Once its changes are durable under group commit; at once under
    /// interval durability.
    Durable,
    /// Once everything applied so far is durable, whatever the durability.
    AfterFlush,
}

impl ShardCore {
    /// Settles a request applied with `answer`: schedules the flush its
    /// changes need and, when its answer waits for one, the token to wait on.
    pub(crate) fn settle(&mut self, answer: Answer) -> Option<Token> {
        let wait = match answer {
            Answer::Now => {
                if self.has_changes() {
                    self.schedule_flush();
                }
                return None;
            }
            Answer::Durable => matches!(self.durability, Durability::GroupCommit),
            Answer::AfterFlush => true,
        };
        let token = wait.then(|| {
            let token = self.next_token;
            self.next_token = self.next_token.wrapping_add(1);
            self.flush.waiters.push(token);
            token
        });
        self.schedule_flush();
        token
    }

    fn schedule_flush(&mut self) {
        if self.flush.flushing {
            return; // Joins the next flush, started when this one completes.
        }
        if let Durability::Interval { interval } = self.durability
            && self.flush.waiters.is_empty()
        {
            if !self.flush.interval_armed {
                self.flush.interval_armed = true;
                self.effects.push(Effect::FlushAfter(interval));
            }
            return;
        }
        self.start_flush();
    }

    /// The interval timer of an [`Effect::FlushAfter`] fired.
    pub(crate) fn flush_due(&mut self) {
        self.flush.interval_armed = false;
        self.start_flush();
    }

    fn start_flush(&mut self) {
        // One flush in flight per shard keeps commits in order; the interval
        // timer can fire during one, and its completion reschedules anyway.
        if self.flush.flushing {
            return;
        }
        let State::Ready(table) = &mut self.state else {
            return;
        };
        let waiters = std::mem::take(&mut self.flush.waiters);
        if !table.has_changes() {
            // Nothing applied is still in flight: everything is durable already.
            for token in waiters {
                self.effects.push(Effect::Ack { token, result: Ok(()) });
            }
            return;
        }
        let changes = ShardChanges { shard: self.shard, changes: table.take_changes() };
        self.flush.flushing = true;
        self.flush.in_flight = waiters;
        self.seq.flush_started();
        self.effects.push(Effect::Commit(changes));
    }

    /// What the store answered to the [`Effect::Commit`] in flight.
    pub(crate) fn commit_done(&mut self, result: Result<()>) {
        if !self.flush.flushing {
            return; // Not the commit of this incarnation.
        }
        self.flush.flushing = false;
        for token in std::mem::take(&mut self.flush.in_flight) {
            self.effects.push(Effect::Ack { token, result: result.clone() });
        }
        match result {
            Err(e) => {
                if matches!(self.state, State::Fenced(_)) {
                    return; // Stays fenced: a reload could take the shard again.
                }
                // The table is now ahead of the store; only a reload makes them agree.
                self.stats.flush_failures += 1;
                self.set_state(State::Loading);
                self.effects.push(Effect::Restart(Restart::FlushFailed(e)));
            }
            Ok(()) => {
                self.stats.flushes += 1;
                self.seq.flush_committed();
                if !self.flush.waiters.is_empty() || self.has_changes() {
                    self.schedule_flush();
                }
            }
        }
    }

    /// Drops the table and answers [`Error::Fenced`] from now on, to the
    /// requests waiting for the next flush too: it will not happen.
    pub(crate) fn fence(&mut self, cause: String) {
        let shard = self.shard;
        for token in self.flush.take_waiters() {
            self.effects
                .push(Effect::Ack { token, result: Err(Error::Fenced { shard, cause: cause.clone() }) });
        }
        self.set_state(State::Fenced(cause.clone()));
        self.effects.push(Effect::Fenced(cause));
    }
}
