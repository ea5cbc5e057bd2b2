//! Time for the actors: the pure table never reads a clock, the actors ask one of these.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of milliseconds for ghost ages, grace periods and back-off.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch (or any fixed origin the host prefers).
    fn now_ms(&self) -> u64;
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
