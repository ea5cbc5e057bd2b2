//! What the sweeper reports: per-pass counts and running totals, aggregated purely.

use crate::sweep::ApplyReport;
use std::time::Duration;

/// Counts of one pass, or summed over many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCounts {
    /// Verifies that completed (failures included, as `Inconclusive`).
    pub checked: u64,
    /// Ghosts purged in planning because their refcount was zero (no remote call).
    pub purged_refcount_zero: u64,
    /// Ghosts purged on a `Purge` verdict.
    pub purged_verified: u64,
    /// `Keep` verdicts applied.
    pub kept: u64,
    /// Refcounts repaired from an authoritative count (repairs to zero included).
    pub corrected: u64,
    /// Ghosts retargeted to follow their node.
    pub redirected: u64,
    /// Ghosts dropped because their node came back to the ghost's shard.
    pub reclaimed: u64,
    /// `Inconclusive` verdicts applied (each puts its ghost into back-off).
    pub inconclusive: u64,
    /// Verifies that failed or timed out (sent as `Inconclusive`).
    pub verify_failures: u64,
    /// Verdicts dropped by the shard because the stub changed since planning.
    pub stale: u64,
    /// Lower counts not applied because the shard was not at their log position.
    pub stale_counts: u64,
    /// Times a shard was found busy and put back to later in the pass.
    pub deferred_busy: u64,
    /// Shards left to the next pass because they stayed busy.
    pub skipped_busy: u64,
    /// Shards that failed a plan or apply request (down, failed closed, gone).
    pub shard_errors: u64,
    /// Shards whose table pass completed.
    pub shards_swept: u64,
}

impl SweepCounts {
    /// Purges of every reason (reclaims not included).
    pub fn purged(&self) -> u64 {
        self.purged_refcount_zero + self.purged_verified
    }

    /// Adds a shard's report on one batch of verdicts.
    pub(crate) fn add_applied(&mut self, r: &ApplyReport) {
        self.purged_verified += u64::from(r.purged);
        self.kept += u64::from(r.kept);
        self.corrected += u64::from(r.corrected);
        self.redirected += u64::from(r.redirected);
        self.reclaimed += u64::from(r.reclaimed);
        self.inconclusive += u64::from(r.inconclusive);
        self.stale += u64::from(r.stale);
        self.stale_counts += u64::from(r.stale_counts);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &SweepCounts) {
        let o = other;
        self.checked += o.checked;
        self.purged_refcount_zero += o.purged_refcount_zero;
        self.purged_verified += o.purged_verified;
        self.kept += o.kept;
        self.corrected += o.corrected;
        self.redirected += o.redirected;
        self.reclaimed += o.reclaimed;
        self.inconclusive += o.inconclusive;
        self.verify_failures += o.verify_failures;
        self.stale += o.stale;
        self.stale_counts += o.stale_counts;
        self.deferred_busy += o.deferred_busy;
        self.skipped_busy += o.skipped_busy;
        self.shard_errors += o.shard_errors;
        self.shards_swept += o.shards_swept;
    }
}

/// One pass over every shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// The pass number, from 1.
    pub pass: u64,
    /// What the pass did.
    pub counts: SweepCounts,
    /// From its start to its last apply (on the tokio clock, so paused test time applies).
    pub duration: Duration,
    /// False when the sweeper stopped before the pass ended (or before it began).
    pub complete: bool,
}

/// The sweeper's running totals and state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepTotals {
    /// Passes ended, complete or not.
    pub passes: u64,
    /// Passes cut short by a stop.
    pub incomplete_passes: u64,
    /// Counts summed over every ended pass.
    pub counts: SweepCounts,
    /// Time spent in passes.
    pub sweeping: Duration,
    /// The last ended pass.
    pub last: Option<PassReport>,
    /// Whether the sweeper is paused.
    pub paused: bool,
    /// Whether a pass is running now.
    pub pass_running: bool,
    /// The token bucket's configured rate (the most), verifies per second.
    pub verifies_per_second: u32,
    /// The rate the sweeper runs at now, having yielded to the foreground's
    /// latency (`SweeperConfig::latency_target`); equal to
    /// `verifies_per_second` with a fixed rate.
    pub effective_verifies_per_second: u32,
    /// The token bucket's burst.
    pub burst: u32,
    /// Whether the sweeper's thread runs at the OS's lowest priority (Linux
    /// `SCHED_IDLE`, else the lowest nice level); false where the OS refused
    /// or the sweeper shares its caller's arbiter (`arbiters = 0`).
    pub lowest_priority: bool,
}

impl SweepTotals {
    /// Adds an ended pass.
    pub fn absorb(&mut self, report: &PassReport) {
        self.passes += 1;
        self.incomplete_passes += u64::from(!report.complete);
        self.counts.merge(&report.counts);
        self.sweeping += report.duration;
        self.last = Some(*report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_reports_add_up() {
        let mut c = SweepCounts::default();
        let verified = ApplyReport { purged: 2, kept: 3, corrected: 1, stale: 1, ..ApplyReport::default() };
        c.add_applied(&verified);
        c.add_applied(&ApplyReport { kept: 4, corrected: 4, ..ApplyReport::default() });
        c.purged_refcount_zero = 5;
        assert_eq!((c.purged_verified, c.purged()), (2, 7));
        assert_eq!((c.kept, c.corrected, c.stale), (7, 5, 1));
    }

    #[test]
    fn totals_sum_passes() {
        let mut t = SweepTotals::default();
        let counts = SweepCounts { checked: 10, deferred_busy: 1, ..SweepCounts::default() };
        let pass = PassReport { pass: 1, counts, duration: Duration::from_secs(2), complete: true };
        t.absorb(&pass);
        t.absorb(&PassReport { pass: 2, complete: false, ..pass });
        assert_eq!((t.passes, t.incomplete_passes), (2, 1));
        assert_eq!((t.counts.checked, t.counts.deferred_busy), (20, 2));
        assert_eq!(t.sweeping, Duration::from_secs(4));
        assert_eq!(t.last.map(|p| p.pass), Some(2));
    }
}
