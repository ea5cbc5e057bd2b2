//! The sweeper's lifetime on a `GhostRuntime`: one at a time, started and
//! stopped by the host, on a thread of its own.

use super::GhostRuntime;
use crate::actors::SweeperActor;
use crate::config::SweeperConfig;
use crate::error::{Error, Result};
use crate::messages::StopSweeper;
use crate::sweep::{SweepTotals, Verifier};
use actix::{Addr, Arbiter};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// The end of a stop: its totals, once the sweeper's thread is joined.
pub(crate) type StopDone = Shared<BoxFuture<'static, Result<SweepTotals>>>;

/// Where the runtime's sweeper is in its life.
#[derive(Default)]
pub(crate) enum SweeperSlot {
    /// None runs.
    #[default]
    Idle,
    /// One runs, on its own arbiter (`None`: on the runtime's calling arbiter).
    Running(Addr<SweeperActor>, Option<Arbiter>),
    /// One is finishing its verifies in flight: a new one must wait, or the
    /// two would sweep at twice the rate. The stop runs in a task of its own,
    /// so it ends (and the slot goes back to `Idle`) even if every caller that
    /// waited for it went away.
    Stopping(StopDone),
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
        let mut slot = self.sweeper.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the slot's lock: a shutdown that has begun either sees this
        // sweeper in the slot and stops it, or is seen here.
        self.check_open(true)?;
        match &*slot {
            SweeperSlot::Running(addr, _) if addr.connected() => return Err(Error::SweeperRunning),
            SweeperSlot::Stopping(_) => return Err(Error::SweeperRunning),
            _ => {}
        }
        let actor = SweeperActor::new(self.shards.clone(), verifier, config, self.clock.clone())?;
        *slot = if self.own_threads {
            let arbiter = Arbiter::new();
            let addr = actor.own_thread().start_in(&arbiter.handle());
            SweeperSlot::Running(addr, Some(arbiter))
        } else {
            SweeperSlot::Running(actor.start_in(&Arbiter::current()), None)
        };
        Ok(())
    }

    /// Stops the sweeper gracefully and answers its final totals: no new
    /// verify starts, those in flight finish or time out (within the verify
    /// timeout), the verdicts gathered are applied, and its thread is joined.
    ///
    /// Cancel-safe: the stop runs in a task of its own, so a caller that times
    /// out or is dropped leaves it to finish; a call made while a stop is
    /// under way waits for that stop and answers its totals.
    pub async fn stop_sweeper(&self) -> Result<SweepTotals> {
        begin_stop(&self.sweeper)?.await
    }
}

/// Moves a running sweeper to `Stopping` and spawns its stop on the calling
/// arbiter, or joins the stop under way; `NoSweeper` when none runs.
pub(crate) fn begin_stop(slot: &Arc<Mutex<SweeperSlot>>) -> Result<StopDone> {
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    let (addr, arbiter) = match std::mem::take(&mut *guard) {
        SweeperSlot::Idle => return Err(Error::NoSweeper),
        SweeperSlot::Stopping(done) => {
            *guard = SweeperSlot::Stopping(done.clone());
            return Ok(done);
        }
        SweeperSlot::Running(addr, arbiter) => (addr, arbiter),
    };
    let (tx, rx) = oneshot::channel();
    let done: StopDone = rx.map(|r| r.unwrap_or(Err(Error::NoSweeper))).boxed().shared();
    *guard = SweeperSlot::Stopping(done.clone());
    drop(guard);
    let slot = slot.clone();
    actix::spawn(async move {
        let totals = addr.send(StopSweeper).await.map_err(|_| Error::NoSweeper);
        if let Some(arbiter) = arbiter {
            arbiter.stop();
            // Joining blocks: off this arbiter.
            let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
        }
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = SweeperSlot::Idle;
        let _ = tx.send(totals);
    });
    Ok(done)
}
