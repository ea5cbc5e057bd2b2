//! The restart budget and back-off, and the core's life steps: start, load,
//! panic, restart, revive.

use super::core::ShardCore;
use super::effects::{Effect, Restart};
use super::state::State;
use crate::config::{RestartPolicy, millis};
use crate::error::{Error, Result};
use crate::table::GhostTable;
use std::collections::VecDeque;

/// Restarts within the policy's window, and whether the next one is an operator's.
#[derive(Debug)]
pub(crate) struct RestartBudget {
    policy: RestartPolicy,
    /// When each restart within the window happened, oldest first.
    times: VecDeque<u64>,
    /// The next restart is an operator's revive: not a failure, so not counted.
    reviving: bool,
}

impl RestartBudget {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        Self { policy, times: VecDeque::new(), reviving: false }
    }

    /// Records a restart at `now`; false when the policy's intensity is exceeded.
    pub(crate) fn note(&mut self, now: u64) -> bool {
        let window = millis(self.policy.window);
        while self.times.front().is_some_and(|&t| now.saturating_sub(t) > window) {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() as u32 <= self.policy.max_restarts
    }

    /// Restarts counted in the window.
    pub(crate) fn count(&self) -> u32 {
        self.times.len() as u32
    }

    /// How long to wait before reloading: the base doubled per restart in
    /// the window, capped.
    pub(crate) fn delay_ms(&self) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
        millis(self.policy.backoff_base.saturating_mul(factor).min(self.policy.backoff_cap))
    }
}

impl ShardCore {
    /// The shard (re)starts at `now`: it loads its table after the back-off,
    /// unless it is down.
    pub(crate) fn start(&mut self, now: u64) {
        if matches!(self.state, State::Down { .. }) {
            return;
        }
        self.set_state(State::Loading);
        let at_ms = now.saturating_add(self.restart.delay_ms());
        self.effects.push(Effect::Load { at_ms });
    }

    /// What the store answered to the load. The claim the table was loaded
    /// under is the host's to keep.
    pub(crate) fn loaded(&mut self, result: Result<GhostTable>) {
        match result {
            Ok(table) => self.state = State::Ready(Box::new(table)),
            Err(Error::Fenced { cause, .. }) => self.fence(cause),
            Err(e @ (Error::Decode(_) | Error::InvalidNodeId { .. } | Error::NotAStore(_))) => {
                self.state = State::Failed(Box::new(e.clone()));
                self.effects.push(Effect::FailedClosed(Box::new(e)));
            }
            Err(e) => self.effects.push(Effect::Restart(Restart::LoadFailed(e))),
        }
    }

    /// A step panicked: the state it left half done is replaced (and handed
    /// to the host to drop, see [`ShardCore::ready`]), and the shard restarts.
    pub(crate) fn panicked(&mut self, injected: bool) {
        self.effects.push(Effect::Restart(Restart::Panicked { injected }));
        self.set_state(State::Loading);
    }

    /// The shard restarts at `now` (after an [`Effect::Restart`]): what was
    /// not durable dies with the table, its waiters are told so, and the
    /// restart is counted against the budget (not an operator's revive).
    /// True when it was counted.
    pub(crate) fn restarting(&mut self, now: u64) -> bool {
        // Unflushed changes die with the table; their waiters learn it now,
        // and the host will send their batches again.
        let shard = self.shard;
        for token in self.flush.abandon() {
            self.effects.push(Effect::Ack { token, result: Err(Error::Unavailable { shard }) });
        }
        self.seq.restarted();
        self.incarnation = self.incarnation.wrapping_add(1);
        if std::mem::take(&mut self.restart.reviving) {
            self.set_state(State::Loading);
            return false;
        }
        self.stats.restarts += 1;
        if self.restart.note(now) {
            self.set_state(State::Loading);
        } else {
            self.set_state(State::Down { restarts: self.restart.count() });
            self.effects.push(Effect::Down);
        }
        true
    }

    /// An operator revives a shard that failed closed, was fenced or went
    /// down: a fresh restart budget and a reload. A shard that serves or
    /// loads is left as it is.
    pub(crate) fn revive(&mut self) {
        if matches!(self.state, State::Ready(_) | State::Loading) {
            return;
        }
        // A fresh restart budget: the operator has dealt with what exhausted it.
        self.restart.times.clear();
        self.restart.reviving = true;
        self.set_state(State::Loading);
        self.effects.push(Effect::Restart(Restart::Revive));
    }
}
