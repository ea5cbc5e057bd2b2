//! The table's half of a sweep: plan a bounded page, apply verdicts by compare-and-set.

use super::GhostTable;
use crate::stub::PurgeReason;
use crate::sweep::{ApplyReport, CheckedVerdict, PlannedCheck, SweepPage, Verdict};

impl GhostTable {
    /// Plans the next page: examines at most `max_scan` stubs from the pass
    /// cursor and returns those due for verification (older than the grace
    /// period and out of back-off). Refcount-zero stubs that are due are purged
    /// here, without a remote call. A page stops at the end of a pass, so
    /// successive pages visit every stub once per pass at O(page) cost each.
    pub fn plan_sweep(&mut self, now_ms: u64, max_scan: usize) -> SweepPage {
        let mut page = SweepPage::default();
        let grace = self.config.grace_ms;
        while (page.scanned as usize) < max_scan {
            if self.cursor >= self.slab.len() {
                self.cursor = 0;
                page.pass_complete = true;
                break;
            }
            let i = self.cursor;
            self.cursor += 1;
            page.scanned += 1;
            let s = *self.slab.slot(i);
            if s.created_at_ms.saturating_add(grace) > now_ms || s.retry_at_ms > now_ms {
                continue;
            }
            if s.refcount == 0 {
                self.purge(i, PurgeReason::RefcountZero);
                page.purged_zero += 1;
                continue;
            }
            page.checks.push(PlannedCheck {
                node_id: self.slab.id(i).into(),
                target_shard: s.target,
                epoch: s.epoch,
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
                    if epoch <= self.slab.slot(i).epoch {
                        // The verifier knows no newer move than we do: not actionable.
                        report.stale += 1;
                        self.counters.stale_verdicts += 1;
                    } else if shard == self.shard {
                        self.purge(i, PurgeReason::Reclaimed);
                        report.reclaimed += 1;
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

    fn keep(&mut self, i: usize, local_edges: Option<u32>, now_ms: u64, report: &mut ApplyReport) {
        self.counters.kept += 1;
        report.kept += 1;
        let mut not_before = 0;
        if let Some(n) = local_edges
            && n != self.slab.slot(i).refcount
        {
            self.counters.refcount_corrections += 1;
            report.corrected += 1;
            let version = self.bump();
            let s = self.slab.slot_mut(i);
            s.refcount = n;
            s.version = version;
            if n == 0 {
                // Never purge here: the count was read when the verify ran, and an
                // edge the host added since may still be on its way to this shard.
                // A zero ghost is purged by a later plan, a grace period from now.
                not_before = now_ms.saturating_add(self.config.grace_ms);
            }
        }
        let s = self.slab.slot_mut_clean(i);
        s.attempts = 0;
        s.retry_at_ms = not_before;
    }

    /// Exponential back-off with "equal jitter": the delay is uniform in
    /// `[d/2, d]` for `d = min(cap, base * 2^attempts)`, so retries of many
    /// ghosts on one unreachable shard spread out instead of arriving together.
    fn back_off(&mut self, i: usize, now_ms: u64) {
        self.counters.inconclusive += 1;
        let (base, cap) = (self.config.backoff_base_ms, self.config.backoff_cap_ms);
        let attempts = self.slab.slot(i).attempts;
        let factor = 1u64.checked_shl(u32::from(attempts)).unwrap_or(u64::MAX);
        let d = base.saturating_mul(factor).min(cap);
        let delay = self.rng.u64(d / 2..=d);
        let s = self.slab.slot_mut_clean(i);
        s.attempts = attempts.saturating_add(1);
        s.retry_at_ms = now_ms.saturating_add(delay).max(1);
    }
}
