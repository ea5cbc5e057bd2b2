//! Every metric the crate exports through the `metrics` facade, named in one place.
//!
//! All carry a `shard` label unless noted. Install any `metrics` recorder
//! (Prometheus exporter, statsd, ...) in the host to collect them, then call
//! [`describe`] so that each has its description and unit; [`ALL`] lists every
//! metric with its kind, labels and, for histograms, bucket bounds suited to its
//! values (hand them to the exporter, e.g. `PrometheusBuilder::set_buckets_for_metric`).
//! Labels are bounded: shard ids, a handful of reasons, states and message kinds,
//! never node ids.

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
/// Gauge: 1 for the shard's current state, 0 for the others; label `state`:
/// `ready`, `loading`, `failed_closed`, `down`.
pub const SHARD_STATE: &str = "vshard_ghosts_shard_state";
/// Gauge: acknowledgements waiting for the shard's next commit (its write backlog).
pub const PENDING_ACKS: &str = "vshard_ghosts_pending_acks";
/// Counter: edge batches skipped as already applied (a host replaying its log).
pub const SKIPPED_BATCHES: &str = "vshard_ghosts_skipped_batches_total";
/// Histogram, label `kind` (no `shard`): time a shard spends on one message's
/// table work, in seconds.
pub const HANDLER_SECONDS: &str = "vshard_ghosts_handler_seconds";
/// Histogram (no label): a shard's flush from start to commit answered, queueing
/// at the writer included, in seconds.
pub const SHARD_FLUSH_SECONDS: &str = "vshard_ghosts_shard_flush_seconds";

// The store writer's metrics carry no label: one writer serves all shards.

/// Counter: store transactions committed.
pub const STORE_COMMITS: &str = "vshard_ghosts_store_commits_total";
/// Histogram: duration of a store commit (one group of shard flushes), in seconds.
pub const FLUSH_SECONDS: &str = "vshard_ghosts_flush_seconds";
/// Gauge: commits and loads queued at the store writer, not yet taken up.
pub const WRITER_QUEUE: &str = "vshard_ghosts_writer_queue";

/// Publishes one shard's polled statistics. Table counters restart from zero
/// when a shard reloads; Prometheus-style `rate()` treats that as a counter reset.
pub fn export_shard(stats: &crate::messages::ShardStats, shard: crate::ShardId) {
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
    metrics::counter!(SKIPPED_BATCHES, "shard" => label.clone()).absolute(c.skipped_batches);
    metrics::gauge!(PENDING_ACKS, "shard" => label.clone()).set(stats.pending_acks as f64);
    let down = matches!(stats.state, ShardState::FailedClosed(_) | ShardState::Down);
    metrics::gauge!(SHARD_UNAVAILABLE, "shard" => label.clone()).set(if down { 1.0 } else { 0.0 });
    let current = shard_state_label(&stats.state);
    for state in SHARD_STATES {
        let on = if state == current { 1.0 } else { 0.0 };
        metrics::gauge!(SHARD_STATE, "shard" => label.clone(), "state" => state).set(on);
    }
}

/// The values of [`SHARD_STATE`]'s `state` label.
pub const SHARD_STATES: [&str; 4] = ["ready", "loading", "failed_closed", "down"];

/// The `state` label of a shard state.
pub fn shard_state_label(state: &crate::messages::ShardState) -> &'static str {
    use crate::messages::ShardState;
    match state {
        ShardState::Ready => "ready",
        ShardState::Loading => "loading",
        ShardState::FailedClosed(_) => "failed_closed",
        ShardState::Down => "down",
    }
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
/// Gauge: the rate the sweeper runs at now, having yielded to the foreground's
/// latency, in verifies per second.
pub const SWEEP_EFFECTIVE_RATE: &str = "vshard_ghosts_sweep_effective_rate_per_second";
/// Gauge: 1 while the sweeper's own thread runs at the OS's lowest priority,
/// 0 where the OS refused to lower it (set when the sweeper starts).
pub const SWEEP_THREAD_LOWERED: &str = "vshard_ghosts_sweep_thread_lowered";
/// Histogram (no label): one verify, from the call to its answer, error or
/// timeout, in seconds.
pub const VERIFY_SECONDS: &str = "vshard_ghosts_verify_seconds";
/// Gauge: due ghosts (verifies planned) on the shard's latest sweep visit: the
/// sweep queue's depth there.
pub const SWEEP_DUE: &str = "vshard_ghosts_sweep_due";
/// Gauge, label `target` (a shard id, no `shard`): consecutive `Inconclusive`
/// verdicts of verifies against that target shard; 0 after a conclusive one.
pub const SWEEP_INCONCLUSIVE_STREAK: &str = "vshard_ghosts_sweep_inconclusive_streak";

/// What kind of metric a [`MetricDesc`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (resets when a shard reloads, for the polled ones).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observed values.
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric: its name, kind, unit, labels and meaning.
#[derive(Debug, Clone, Copy)]
pub struct MetricDesc {
    /// The exported name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Its unit.
    pub unit: metrics::Unit,
    /// Its labels, comma-separated (`""`: none).
    pub labels: &'static str,
    /// What it means (the description registered by [`describe`]).
    pub help: &'static str,
    /// For histograms: upper bucket bounds suited to the values; empty otherwise.
    pub buckets: &'static [f64],
}

const fn desc(
    name: &'static str,
    kind: MetricKind,
    unit: metrics::Unit,
    labels: &'static str,
    help: &'static str,
) -> MetricDesc {
    MetricDesc { name, kind, unit, labels, help, buckets: &[] }
}

const fn hist(
    name: &'static str,
    labels: &'static str,
    help: &'static str,
    buckets: &'static [f64],
) -> MetricDesc {
    MetricDesc { name, kind: MetricKind::Histogram, unit: metrics::Unit::Seconds, labels, help, buckets }
}

/// Buckets for a store commit or a shard flush: 100 µs to 10 s.
const COMMIT_BUCKETS: &[f64] =
    &[1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Buckets for one message's table work: 1 µs to 100 ms.
const HANDLER_BUCKETS: &[f64] = &[1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.1];
/// Buckets for one verify (a remote call, up to its timeout): 50 µs to 30 s.
const VERIFY_BUCKETS: &[f64] =
    &[5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];
/// Buckets for a whole sweep pass: 1 ms to 10 minutes.
const PASS_BUCKETS: &[f64] =
    &[1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

/// Every metric the crate exports, in the order of the README's table.
pub const ALL: &[MetricDesc] = {
    use MetricKind::{Counter, Gauge};
    use metrics::Unit::Count;
    &[
        desc(
            RESTARTS,
            Counter,
            Count,
            "shard",
            "shard restarts (after a panic, a failed flush or a failed load)",
        ),
        desc(
            FAILED_CLOSED,
            Counter,
            Count,
            "shard",
            "shards that failed closed on unreadable state, or were fenced",
        ),
        desc(GHOSTS, Gauge, Count, "shard", "ghosts held"),
        desc(OLDEST_GHOST_SECONDS, Gauge, metrics::Unit::Seconds, "shard", "age of the oldest ghost"),
        desc(EDGE_EVENTS, Counter, Count, "shard", "edge events handled (unknown nodes included)"),
        desc(UNKNOWN_EDGE_EVENTS, Counter, Count, "shard", "edge events for nodes without a ghost"),
        desc(INSERTED, Counter, Count, "shard", "ghosts inserted"),
        desc(
            PURGED,
            Counter,
            Count,
            "shard, reason",
            "ghosts purged; reason: refcount_zero, verified, reclaimed",
        ),
        desc(CORRECTIONS, Counter, Count, "shard", "refcounts repaired from an authoritative count"),
        desc(
            STALE_VERDICTS,
            Counter,
            Count,
            "shard",
            "verdicts dropped as stale (the stub changed, or the shard restarted)",
        ),
        desc(INCONCLUSIVE, Counter, Count, "shard", "Inconclusive verdicts applied (each a back-off)"),
        desc(REDIRECTED, Counter, Count, "shard", "ghosts retargeted (by the host or the sweeper)"),
        desc(FLUSHES, Counter, Count, "shard", "flushes completed by the shard"),
        desc(FLUSH_FAILURES, Counter, Count, "shard", "flushes that failed (the shard then reloads)"),
        desc(SKIPPED_BATCHES, Counter, Count, "shard", "edge batches skipped as already applied (replays)"),
        desc(
            PENDING_ACKS,
            Gauge,
            Count,
            "shard",
            "acknowledgements waiting for the next commit: the shard's write backlog",
        ),
        desc(SHARD_UNAVAILABLE, Gauge, Count, "shard", "1 while the shard is failed closed or down, else 0"),
        desc(
            SHARD_STATE,
            Gauge,
            Count,
            "shard, state",
            "1 for the current state, else 0; state: ready, loading, failed_closed, down",
        ),
        hist(
            HANDLER_SECONDS,
            "kind",
            "one message's table work in a shard, by message kind",
            HANDLER_BUCKETS,
        ),
        hist(
            SHARD_FLUSH_SECONDS,
            "",
            "a shard's flush, from start to commit answered (writer queueing included)",
            COMMIT_BUCKETS,
        ),
        desc(STORE_COMMITS, Counter, Count, "", "store transactions committed"),
        hist(FLUSH_SECONDS, "", "one store commit (a group of shard flushes)", COMMIT_BUCKETS),
        desc(
            WRITER_QUEUE,
            Gauge,
            Count,
            "",
            "commits and loads queued at the store writer: the write backlog",
        ),
        desc(SWEEP_PASSES, Counter, Count, "", "sweep passes ended"),
        desc(SWEEP_CHECKED, Counter, Count, "", "verifies completed (failures included)"),
        desc(
            SWEEP_PURGED,
            Counter,
            Count,
            "reason",
            "ghosts purged by the sweeper; reason: refcount_zero, verified",
        ),
        desc(SWEEP_KEPT, Counter, Count, "", "Keep verdicts applied"),
        desc(SWEEP_CORRECTED, Counter, Count, "", "refcounts repaired from an authoritative count"),
        desc(SWEEP_REDIRECTED, Counter, Count, "", "ghosts retargeted to follow their node"),
        desc(SWEEP_RECLAIMED, Counter, Count, "", "ghosts dropped because their node came back"),
        desc(SWEEP_INCONCLUSIVE, Counter, Count, "", "Inconclusive verdicts applied (each a back-off)"),
        desc(SWEEP_VERIFY_FAILURES, Counter, Count, "", "verifies that failed or timed out"),
        desc(SWEEP_STALE, Counter, Count, "", "verdicts dropped because their stub changed since planning"),
        desc(SWEEP_DEFERRED_BUSY, Counter, Count, "", "times a busy shard was put back to later in a pass"),
        desc(SWEEP_SKIPPED_BUSY, Counter, Count, "", "shards left to the next pass because they stayed busy"),
        desc(
            SWEEP_SHARD_ERRORS,
            Counter,
            Count,
            "",
            "shards that failed a plan or apply request during a pass",
        ),
        hist(SWEEP_PASS_SECONDS, "", "one sweep pass", PASS_BUCKETS),
        hist(VERIFY_SECONDS, "", "one verify, to its answer, error or timeout", VERIFY_BUCKETS),
        desc(
            SWEEP_DUE,
            Gauge,
            Count,
            "shard",
            "due ghosts planned on the shard's latest sweep visit: the sweep queue's depth",
        ),
        desc(
            SWEEP_INCONCLUSIVE_STREAK,
            Gauge,
            Count,
            "target",
            "consecutive Inconclusive verdicts against the target shard",
        ),
        desc(
            SWEEP_RATE,
            Gauge,
            metrics::Unit::CountPerSecond,
            "",
            "the sweeper's token bucket rate, in verifies per second",
        ),
        desc(SWEEP_PAUSED, Gauge, Count, "", "1 while the sweeper is paused, else 0"),
        desc(
            SWEEP_EFFECTIVE_RATE,
            Gauge,
            metrics::Unit::CountPerSecond,
            "",
            "the rate the sweeper runs at now, having yielded to the foreground's latency",
        ),
        desc(
            SWEEP_THREAD_LOWERED,
            Gauge,
            Count,
            "",
            "1 while the sweeper's thread runs at the OS's lowest priority, 0 where the OS refused",
        ),
    ]
};

/// Registers every metric of [`ALL`] with its description and unit in the
/// installed recorder; call it once after installing one.
pub fn describe() {
    for d in ALL {
        match d.kind {
            MetricKind::Counter => metrics::describe_counter!(d.name, d.unit, d.help),
            MetricKind::Gauge => metrics::describe_gauge!(d.name, d.unit, d.help),
            MetricKind::Histogram => metrics::describe_histogram!(d.name, d.unit, d.help),
        }
    }
}
