//! The table's half of a sweep: plan a bounded page, apply verdicts by compare-and-set.

use super::GhostTable;
use super::slab::{STORED_BIRTH, STORED_HOLD};
use crate::ids::{Epoch, ShardId};
use crate::stub::PurgeReason;
use crate::sweep::{ApplyReport, CheckedVerdict, LocalEdges, PlannedCheck, SweepPage, Verdict};

impl GhostTable {
    /// Plans the next page: examines at most `max_scan` stubs from the pass
    /// cursor and returns those due for verification (older than the grace
    /// period and out of back-off). Refcount-zero stubs that are due are purged
    /// here, without a remote call. A page stops at the end of a pass, so
    /// successive pages visit every stub once per pass at O(page) cost each
    /// (a growth of the table mid-pass, which moves every stub, may visit
    /// some a second time; none is skipped).
    /// Each page also forgets up to `max_scan` tombstones that lapsed.
    pub fn plan_sweep(&mut self, now_ms: u64, max_scan: usize) -> SweepPage {
        let mut page = SweepPage::default();
        let mut lapsed = Vec::new();
        self.tombstones.expire(now_ms, max_scan, &mut lapsed);
        self.forget_tombstones(&lapsed);
        let (grace, skew) = (self.config.grace_ms(), self.config.max_clock_skew_ms());
        while (page.scanned as usize) < max_scan {
            let Some(i) = self.slab.sweep_next() else {
                page.pass_complete = true;
                break;
            };
            page.scanned += 1;
            let s = *self.slab.slot(i);
            // A time read from the store is on the writer's clock, which may
            // be behind ours by up to `skew`: read it as that much later.
            let stored = |flag: u8| if s.flags & flag != 0 { skew } else { 0 };
            let born = s.created_at_ms.saturating_add(grace).saturating_add(stored(STORED_BIRTH));
            let hold = self.slab.retry_at(i).saturating_add(stored(STORED_HOLD));
            if born > now_ms || hold > now_ms {
                continue;
            }
            if s.refcount == 0 {
                self.purge(i, PurgeReason::RefcountZero);
                page.purged_zero += 1;
                continue;
            }
            page.checks.push(PlannedCheck {
                node_id: self.slab.id(i).into(),
                target_shard: ShardId(s.target),
                epoch: Epoch(s.epoch),
                version: s.version,
            });
        }
        page
    }

    /// Applies verdicts, each only if its stub's version still equals the one it
    /// was planned on; the rest are dropped and counted as stale, so nothing is
    /// ever purged on an old view.
    pub fn apply_verdicts<'a>(
        &mut self,
        verdicts: impl IntoIterator<Item = &'a CheckedVerdict>,
        now_ms: u64,
    ) -> ApplyReport {
        let mut report = ApplyReport::default();
        for v in verdicts {
            let Some(i) = self.slab.find(&v.node_id).filter(|&i| self.slab.slot(i).version == v.version)
            else {
                report.stale += 1;
                self.counters.stale_verdicts += 1;
                continue;
            };
            match v.verdict {
                Verdict::Keep { local_edges } => self.keep(i, local_edges, now_ms, &mut report),
                Verdict::Purge => {
                    self.purge(i, PurgeReason::Verified);
                    report.purged += 1;
                }
                Verdict::Redirect { shard, epoch } => {
                    let (shard, epoch) = (shard.get(), epoch.get());
                    if epoch <= self.slab.slot(i).epoch {
                        // The verifier knows no newer move than we do: not actionable.
                        report.stale += 1;
                        self.counters.stale_verdicts += 1;
                    } else if shard == self.shard {
                        let id = self.slab.id(i).to_owned();
                        if self.room_for_tombstone(&id, epoch, now_ms).is_ok() {
                            self.reclaim_slot(i, epoch, now_ms);
                            report.reclaimed += 1;
                        } else {
                            // No live tombstone is forgotten to make room:
                            // asked again once the oldest has lapsed.
                            self.back_off(i, now_ms);
                            report.inconclusive += 1;
                        }
                    } else {
                        self.follow(i, shard, epoch);
                        report.redirected += 1;
                    }
                }
                Verdict::Inconclusive => {
                    self.back_off(i, now_ms);
                    report.inconclusive += 1;
                }
            }
        }
        report
    }

    fn keep(&mut self, i: usize, local_edges: Option<LocalEdges>, now_ms: u64, report: &mut ApplyReport) {
        self.counters.kept += 1;
        report.kept += 1;
        let refcount = self.slab.slot(i).refcount;
        let mut not_before = 0;
        match local_edges {
            Some(c) if c.count > refcount => self.correct(i, c.count, report),
            Some(c) if c.count < refcount => {
                if !self.at_position(c.at_seq) {
                    // Counted at another point of the shard's edge log: an
                    // event between the two would count twice. Verified again
                    // on a later pass; the refcount stays as it is.
                    self.counters.stale_counts += 1;
                    report.stale_counts += 1;
                } else {
                    self.correct(i, c.count, report);
                    if c.count == 0 {
                        // Never purge here: an edge the host added after
                        // counting may still be on its way to this shard. The
                        // hold is persisted with the stub and outlives
                        // retargets and reloads; a plan purges after it.
                        not_before = now_ms.saturating_add(self.config.grace_ms()).max(1);
                    }
                }
            }
            _ => {}
        }
        self.slab.slot_mut_clean(i).attempts = 0;
        self.slab.set_retry_at(i, not_before);
    }

    /// True when a count taken at `at_seq` describes this table's position.
    fn at_position(&self, at_seq: Option<u64>) -> bool {
        at_seq.is_some() && at_seq == self.applied_seq && !self.unsequenced
    }

    fn correct(&mut self, i: usize, count: u32, report: &mut ApplyReport) {
        self.counters.refcount_corrections += 1;
        report.corrected += 1;
        let version = self.bump();
        let s = self.slab.slot_mut(i);
        s.refcount = count;
        s.version = version;
    }

    /// Exponential back-off with "equal jitter": the delay is uniform in
    /// `[d/2, d]` for `d = min(cap, base * 2^attempts)`, so retries of many
    /// ghosts on one unreachable shard spread out instead of arriving together.
    fn back_off(&mut self, i: usize, now_ms: u64) {
        self.counters.inconclusive += 1;
        let (base, cap) = (self.config.backoff_base_ms(), self.config.backoff_cap_ms());
        let attempts = self.slab.slot(i).attempts;
        let factor = 1u64.checked_shl(u32::from(attempts)).unwrap_or(u64::MAX);
        let d = base.saturating_mul(factor).min(cap);
        let delay = self.rng.u64(d / 2..=d);
        self.slab.slot_mut_clean(i).attempts = attempts.saturating_add(1);
        self.slab.set_retry_at(i, now_ms.saturating_add(delay).max(1));
    }
}
