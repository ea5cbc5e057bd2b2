//! Fault injection and a manual clock, for the crate's own tests and for hosts'
//! chaos drills (cargo feature `testing`, off by default: none of it is in a
//! production build).
//!
//! The sweep's steps can be driven by hand with it too:
//! [`PlanSweep::new`](crate::messages::PlanSweep::new) and
//! [`ApplyVerdicts::new`](crate::messages::ApplyVerdicts::new), and a shard's
//! panic path with [`InjectPanic`](crate::messages::InjectPanic).

mod core;

pub use crate::store::faulty::{Fault, FaultyStore, StoreOp};
pub use core::{Applied, CoreDriver, CoreEffect};

use crate::clock::Clock;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// A clock that moves only when told to; for tests and simulations. Its time
/// drives the tables and the sweeper's token bucket alike: an empty bucket
/// refills only as the clock is moved.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    now_ms: AtomicU64,
    moved: Notify,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(Arc::new(Inner { now_ms: AtomicU64::new(start_ms), moved: Notify::new() }))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.now_ms.fetch_add(ms, Ordering::SeqCst);
        self.0.moved.notify_waiters();
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: u64) {
        self.0.now_ms.store(ms, Ordering::SeqCst);
        self.0.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.now_ms.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline_ms: u64) -> BoxFuture<'static, ()> {
        let inner = self.0.clone();
        Box::pin(async move {
            loop {
                // Registered before the check, so a move in between is not missed.
                let moved = inner.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if inner.now_ms.load(Ordering::SeqCst) >= deadline_ms {
                    return;
                }
                moved.await;
            }
        })
    }
}
