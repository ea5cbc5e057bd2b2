//! The sweeper's metrics: an ended pass's counts, exported through the `metrics` facade.

use crate::sweep::PassReport;

/// Exports an ended pass.
pub(super) fn record_pass(report: &PassReport) {
    use crate::metrics as m;
    let c = &report.counts;
    metrics::counter!(m::SWEEP_PASSES).increment(1);
    metrics::counter!(m::SWEEP_CHECKED).increment(c.checked);
    for (reason, n) in [("refcount_zero", c.purged_refcount_zero), ("verified", c.purged_verified)] {
        metrics::counter!(m::SWEEP_PURGED, "reason" => reason).increment(n);
    }
    metrics::counter!(m::SWEEP_KEPT).increment(c.kept);
    metrics::counter!(m::SWEEP_CORRECTED).increment(c.corrected);
    metrics::counter!(m::SWEEP_REDIRECTED).increment(c.redirected);
    metrics::counter!(m::SWEEP_RECLAIMED).increment(c.reclaimed);
    metrics::counter!(m::SWEEP_INCONCLUSIVE).increment(c.inconclusive);
    metrics::counter!(m::SWEEP_VERIFY_FAILURES).increment(c.verify_failures);
    metrics::counter!(m::SWEEP_STALE).increment(c.stale);
    metrics::counter!(m::SWEEP_DEFERRED_BUSY).increment(c.deferred_busy);
    metrics::counter!(m::SWEEP_SKIPPED_BUSY).increment(c.skipped_busy);
    metrics::counter!(m::SWEEP_SHARD_ERRORS).increment(c.shard_errors);
    metrics::histogram!(m::SWEEP_PASS_SECONDS).record(report.duration.as_secs_f64());
}
