//! Time for the actors: the pure table never reads a clock; the shards and the
//! sweeper's token bucket ask the one [`Clock`] the runtime was given.

use futures::future::BoxFuture;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of milliseconds for ghost ages, grace periods, back-off and the
/// sweeper's token bucket.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch (or any fixed origin the host prefers).
    fn now_ms(&self) -> u64;

    /// Resolves once this clock reads `deadline_ms` or later: how the sweeper
    /// waits for its bucket to refill. The default sleeps on tokio's timer for
    /// the difference (so paused test time applies) and is right for any
    /// clock that moves with tokio's; a clock that moves only when told to
    /// resolves when it is moved there.
    fn sleep_until(&self, deadline_ms: u64) -> BoxFuture<'static, ()> {
        let wait = Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()));
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Wall-clock time at creation, advanced by tokio's monotonic clock; so it
/// survives restarts sensibly and follows tokio's paused time in tests.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin_ms: u64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Anchors the clock at the current wall-clock time.
    pub fn new() -> Self {
        let origin_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { origin_ms, origin: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.origin_ms + self.origin.elapsed().as_millis() as u64
    }
}
