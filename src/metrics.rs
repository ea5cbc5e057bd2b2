//! Every metric the crate exports through the `metrics` facade, named in one place.
//!
//! All carry a `shard` label unless noted. Install any `metrics` recorder
//! (Prometheus exporter, statsd, ...) in the host to collect them.

/// Counter: shard restarts (after a panic, a failed flush or a failed load).
pub const RESTARTS: &str = "vshard_ghosts_restarts_total";
/// Counter: shards that failed closed on unreadable state.
pub const FAILED_CLOSED: &str = "vshard_ghosts_failed_closed_total";
