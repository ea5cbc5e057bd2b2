//! Fault injection and a manual clock, for the crate's own tests and for hosts'
//! chaos drills (cargo feature `testing`, off by default: none of it is in a
//! production build).
//!
//! The sweep's steps can be driven by hand with it too:
//! [`PlanSweep::new`](crate::messages::PlanSweep::new) and
//! [`ApplyVerdicts::new`](crate::messages::ApplyVerdicts::new), and a shard's
//! panic path with [`InjectPanic`](crate::messages::InjectPanic).

pub use crate::store::faulty::{Fault, FaultyStore, StoreOp};

/// A clock that moves only when told to; for tests and simulations (cargo
/// feature `testing`).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(start_ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl crate::clock::Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
