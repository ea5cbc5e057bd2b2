//! The sweeper's lifetime on a `GhostRuntime`: one at a time, started and
//! stopped by the host, on a thread of its own.

use super::GhostRuntime;
use crate::actors::SweeperActor;
use crate::config::SweeperConfig;
use crate::error::{Error, Result};
use crate::messages::StopSweeper;
use crate::sweep::{SweepTotals, Verifier};
use actix::{Addr, Arbiter};
use std::sync::{Arc, PoisonError};

/// Where the runtime's sweeper is in its life.
#[derive(Default)]
pub(crate) enum SweeperSlot {
    /// None runs.
    #[default]
    Idle,
    /// One runs, on its own arbiter (`None`: on the runtime's calling arbiter).
    Running(Addr<SweeperActor>, Option<Arbiter>),
    /// One is finishing its verifies in flight: a new one must wait, or the
    /// two would sweep at twice the rate.
    Stopping,
}

impl GhostRuntime {
    pub(crate) fn sweeper_addr(&self) -> Result<Addr<SweeperActor>> {
        match &*self.sweeper.lock().unwrap_or_else(PoisonError::into_inner) {
            SweeperSlot::Running(addr, _) if addr.connected() => Ok(addr.clone()),
            _ => Err(Error::NoSweeper),
        }
    }

    /// Starts the sweeper over every shard, verifying through `verifier`, on
    /// an arbiter of its own so that sweeping never runs where a shard's
    /// requests do (with `arbiters = 0`, on the arbiter that calls this).
    /// A host that replays its edge logs after a restart starts it once the
    /// replay is done (verdicts on a shard behind its log only back off, but
    /// need not be spent), and may start it again after
    /// [`stop_sweeper`](Self::stop_sweeper). Refused with
    /// [`Error::SweeperRunning`] while one runs or stops, and with
    /// [`Error::Closed`] after [`shutdown`](Self::shutdown).
    pub fn start_sweeper(&self, verifier: Arc<dyn Verifier>, config: SweeperConfig) -> Result<()> {
        self.check_open(true)?;
        let mut slot = self.sweeper.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            SweeperSlot::Running(addr, _) if addr.connected() => return Err(Error::SweeperRunning),
            SweeperSlot::Stopping => return Err(Error::SweeperRunning),
            _ => {}
        }
        let actor = SweeperActor::new(self.shards.clone(), verifier, config, self.clock.clone())?;
        *slot = if self.own_threads {
            let arbiter = Arbiter::new();
            let addr = actor.start_in(&arbiter.handle());
            SweeperSlot::Running(addr, Some(arbiter))
        } else {
            SweeperSlot::Running(actor.start_in(&Arbiter::current()), None)
        };
        Ok(())
    }

    /// Stops the sweeper gracefully and answers its final totals: no new
    /// verify starts, those in flight finish or time out (within the verify
    /// timeout), the verdicts gathered are applied, and its thread is joined.
    pub async fn stop_sweeper(&self) -> Result<SweepTotals> {
        let (addr, arbiter) = {
            let mut slot = self.sweeper.lock().unwrap_or_else(PoisonError::into_inner);
            match std::mem::replace(&mut *slot, SweeperSlot::Stopping) {
                SweeperSlot::Running(addr, arbiter) => (addr, arbiter),
                other => {
                    *slot = other;
                    return Err(Error::NoSweeper);
                }
            }
        };
        let totals = addr.send(StopSweeper).await.map_err(|_| Error::NoSweeper);
        if let Some(arbiter) = arbiter {
            arbiter.stop();
            // Joining blocks: off this arbiter.
            let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
        }
        *self.sweeper.lock().unwrap_or_else(PoisonError::into_inner) = SweeperSlot::Idle;
        totals
    }
}
