//! Every metric the crate exports through the `metrics` facade, named in one place.
//!
//! All carry a `shard` label unless noted. Install any `metrics` recorder
//! (Prometheus exporter, statsd, ...) in the host to collect them.

/// Counter: shard restarts (after a panic, a failed flush or a failed load).
pub const RESTARTS: &str = "vshard_ghosts_restarts_total";
/// Counter: shards that failed closed on unreadable state.
pub const FAILED_CLOSED: &str = "vshard_ghosts_failed_closed_total";
/// Gauge: ghosts held.
pub const GHOSTS: &str = "vshard_ghosts_ghosts";
/// Gauge: age of the oldest ghost, in seconds.
pub const OLDEST_GHOST_SECONDS: &str = "vshard_ghosts_oldest_ghost_age_seconds";
/// Counter: edge events handled (unknown nodes included).
pub const EDGE_EVENTS: &str = "vshard_ghosts_edge_events_total";
/// Counter: edge events for nodes without a ghost.
pub const UNKNOWN_EDGE_EVENTS: &str = "vshard_ghosts_unknown_edge_events_total";
/// Counter: ghosts inserted.
pub const INSERTED: &str = "vshard_ghosts_inserted_total";
/// Counter: ghosts purged; label `reason`: `refcount_zero`, `verified`, `reclaimed`.
pub const PURGED: &str = "vshard_ghosts_purged_total";
/// Counter: refcounts repaired from an authoritative count.
pub const CORRECTIONS: &str = "vshard_ghosts_refcount_corrections_total";
/// Counter: verdicts dropped as stale (the stub changed, or the shard restarted).
pub const STALE_VERDICTS: &str = "vshard_ghosts_stale_verdicts_total";
/// Counter: `Inconclusive` verdicts.
pub const INCONCLUSIVE: &str = "vshard_ghosts_inconclusive_total";
/// Counter: ghosts retargeted.
pub const REDIRECTED: &str = "vshard_ghosts_redirected_total";
/// Counter: flushes completed by the shard.
pub const FLUSHES: &str = "vshard_ghosts_flushes_total";
/// Counter: flushes that failed.
pub const FLUSH_FAILURES: &str = "vshard_ghosts_flush_failures_total";
/// Gauge: 1 while the shard is failed closed or down, else 0.
pub const SHARD_UNAVAILABLE: &str = "vshard_ghosts_shard_unavailable";

// The store writer's metrics carry no label: one writer serves all shards.

/// Counter: store transactions committed.
pub const STORE_COMMITS: &str = "vshard_ghosts_store_commits_total";
/// Histogram: duration of a store commit (one group of shard flushes), in seconds.
pub const FLUSH_SECONDS: &str = "vshard_ghosts_flush_seconds";

/// Publishes one shard's polled statistics. Table counters restart from zero
/// when a shard reloads; Prometheus-style `rate()` treats that as a counter reset.
pub fn export_shard(stats: &crate::messages::ShardStats, shard: u16) {
    use crate::messages::ShardState;
    let label = shard.to_string();
    let t = &stats.table;
    let c = &t.counters;
    metrics::gauge!(GHOSTS, "shard" => label.clone()).set(t.ghosts as f64);
    let age = t.oldest_age_ms.unwrap_or(0) as f64 / 1e3;
    metrics::gauge!(OLDEST_GHOST_SECONDS, "shard" => label.clone()).set(age);
    let counters = [
        (EDGE_EVENTS, c.edge_events),
        (UNKNOWN_EDGE_EVENTS, c.unknown_edge_events),
        (INSERTED, c.inserted),
        (CORRECTIONS, c.refcount_corrections),
        (STALE_VERDICTS, c.stale_verdicts + stats.stale_incarnation_verdicts),
        (INCONCLUSIVE, c.inconclusive),
        (REDIRECTED, c.redirected),
        (FLUSHES, stats.flushes),
        (FLUSH_FAILURES, stats.flush_failures),
    ];
    for (name, value) in counters {
        metrics::counter!(name, "shard" => label.clone()).absolute(value);
    }
    for (reason, value) in [
        ("refcount_zero", c.purged_refcount_zero),
        ("verified", c.purged_verified),
        ("reclaimed", c.purged_reclaimed),
    ] {
        metrics::counter!(PURGED, "shard" => label.clone(), "reason" => reason).absolute(value);
    }
    let down = matches!(stats.state, ShardState::FailedClosed(_) | ShardState::Down);
    metrics::gauge!(SHARD_UNAVAILABLE, "shard" => label).set(if down { 1.0 } else { 0.0 });
}

// The sweeper's metrics carry no `shard` label: they count whole passes.

/// Counter: sweep passes ended.
pub const SWEEP_PASSES: &str = "vshard_ghosts_sweep_passes_total";
/// Counter: verifies completed (failures included).
pub const SWEEP_CHECKED: &str = "vshard_ghosts_sweep_checked_total";
/// Counter: ghosts purged by the sweeper; label `reason`: `refcount_zero`
/// (in planning, no remote call; this includes counts repaired to zero) or
/// `verified` (a `Purge` verdict).
pub const SWEEP_PURGED: &str = "vshard_ghosts_sweep_purged_total";
/// Counter: `Keep` verdicts applied.
pub const SWEEP_KEPT: &str = "vshard_ghosts_sweep_kept_total";
/// Counter: refcounts repaired from an authoritative count.
pub const SWEEP_CORRECTED: &str = "vshard_ghosts_sweep_refcounts_corrected_total";
/// Counter: ghosts retargeted to follow their node.
pub const SWEEP_REDIRECTED: &str = "vshard_ghosts_sweep_redirected_total";
/// Counter: ghosts dropped because their node came back.
pub const SWEEP_RECLAIMED: &str = "vshard_ghosts_sweep_reclaimed_total";
/// Counter: `Inconclusive` verdicts applied (each a back-off).
pub const SWEEP_INCONCLUSIVE: &str = "vshard_ghosts_sweep_inconclusive_total";
/// Counter: verifies that failed or timed out.
pub const SWEEP_VERIFY_FAILURES: &str = "vshard_ghosts_sweep_verify_failures_total";
/// Counter: verdicts dropped because their stub changed since planning.
pub const SWEEP_STALE: &str = "vshard_ghosts_sweep_stale_total";
/// Counter: times a busy shard was put back to later in a pass.
pub const SWEEP_DEFERRED_BUSY: &str = "vshard_ghosts_sweep_deferred_busy_total";
/// Counter: shards left to the next pass because they stayed busy.
pub const SWEEP_SKIPPED_BUSY: &str = "vshard_ghosts_sweep_skipped_busy_total";
/// Counter: shards that failed a plan or apply request during a pass.
pub const SWEEP_SHARD_ERRORS: &str = "vshard_ghosts_sweep_shard_errors_total";
/// Histogram: duration of a sweep pass, in seconds.
pub const SWEEP_PASS_SECONDS: &str = "vshard_ghosts_sweep_pass_seconds";
/// Gauge: the sweeper's token bucket rate, in verifies per second.
pub const SWEEP_RATE: &str = "vshard_ghosts_sweep_rate_per_second";
/// Gauge: 1 while the sweeper is paused, else 0.
pub const SWEEP_PAUSED: &str = "vshard_ghosts_sweep_paused";
