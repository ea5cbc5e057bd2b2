//! One sweep pass: visit every shard, plan pages, verify them, apply by compare-and-set.

use super::bucket::{Bucket, Refill};
use super::control::{Control, pause, running};
use super::verify::{Streaks, verify_page};
use crate::actors::{GhostActor, Shards};
use crate::clock::Clock;
use crate::config::SweeperConfig;
use crate::error::Error;
use crate::ids::ShardId;
use crate::messages::{ApplyVerdicts, PlanReply, PlanSweep};
use crate::sweep::Rate;
use crate::sweep::Verifier;
use crate::sweep::adapt::{AdaptiveRate, Signals};
use crate::sweep::{Deferral, ShardQueue};
use crate::sweep::{PassReport, SweepCounts};
use actix::Addr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often, while verifying, the sweeper probes one shard (round robin)
/// for the foreground's latency.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// What every pass shares.
pub(super) struct PassEnv {
    pub(super) shards: Shards,
    pub(super) verifier: Arc<dyn Verifier>,
    pub(super) config: SweeperConfig,
    pub(super) bucket: Bucket,
    pub(super) streaks: Streaks,
    clock: Arc<dyn Clock>,
    rate: Mutex<EffectiveRate>,
}

/// The configured rate, the adaptive one (`None`: fixed), and the rate the
/// bucket runs at.
struct EffectiveRate {
    configured: Rate,
    adaptive: Option<AdaptiveRate>,
    applied: NonZeroU32,
}

impl PassEnv {
    pub(super) fn new(
        shards: Shards,
        verifier: Arc<dyn Verifier>,
        config: SweeperConfig,
        clock: Arc<dyn Clock>,
    ) -> crate::Result<Self> {
        let configured = config.rate()?;
        let bucket = Bucket::new(configured, clock.clone());
        let adaptive = config.latency_target.map(|target| {
            let min = NonZeroU32::new(config.min_verifies_per_second).unwrap_or(NonZeroU32::MIN);
            AdaptiveRate::new(min, configured.per_second, target, config.busy_pending_acks)
        });
        let rate = Mutex::new(EffectiveRate { configured, adaptive, applied: configured.per_second });
        metrics::gauge!(crate::metrics::SWEEP_EFFECTIVE_RATE).set(f64::from(configured.per_second.get()));
        Ok(Self { shards, verifier, config, bucket, streaks: Streaks::default(), clock, rate })
    }

    fn rate(&self) -> std::sync::MutexGuard<'_, EffectiveRate> {
        self.rate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An operator's rate: the new ceiling, and the bucket starts full at it.
    pub(super) fn set_rate(&self, rate: Rate) {
        let mut r = self.rate();
        r.configured = rate;
        r.applied = rate.per_second;
        if let Some(a) = &mut r.adaptive {
            a.set_max(rate.per_second);
        }
        self.bucket.set_rate(rate, Refill::Full);
        metrics::gauge!(crate::metrics::SWEEP_EFFECTIVE_RATE).set(f64::from(rate.per_second.get()));
    }

    /// The rate the bucket runs at now.
    pub(super) fn effective_rate(&self) -> u32 {
        self.rate().applied.get()
    }

    /// Feeds one observation of a shard to the adaptive rate; the bucket
    /// follows once the rate moved by a tenth or reached a bound, so that
    /// slow growth does not replace the bucket at every probe.
    fn observe(&self, signals: Signals) {
        let now = self.clock.now_ms();
        let mut r = self.rate();
        let configured = r.configured;
        let Some(adaptive) = &mut r.adaptive else { return };
        let new = adaptive.observe(signals, now);
        let old = r.applied;
        let moved = new.get().abs_diff(old.get()) * 10 >= old.get();
        let bound = new == configured.per_second || new.get() <= self.config.min_verifies_per_second;
        if new != old && (moved || bound) {
            r.applied = new;
            self.bucket.set_rate(Rate { per_second: new, ..configured }, Refill::One);
            metrics::gauge!(crate::metrics::SWEEP_EFFECTIVE_RATE).set(f64::from(new.get()));
            tracing::debug!(
                from = old.get(),
                to = new.get(),
                ?signals,
                "sweeper rate follows the foreground"
            );
        }
    }

    fn busy(&self, plan: &PlanReply, round_trip: Duration) -> bool {
        plan.pending_acks > self.config.busy_pending_acks || round_trip > self.config.busy_latency
    }
}

/// What a probe saw of the foreground: its round trip, and the writes waiting
/// for a commit, the shard's own and every shard's queued at the one writer.
fn signals(probe: &PlanReply, round_trip: Duration) -> Signals {
    Signals { round_trip, backlog: probe.pending_acks.saturating_add(probe.writer_queue) }
}

/// Runs one pass over every shard: busy shards go to the back of the pass,
/// a bounded number of times.
pub(super) async fn run_pass(
    env: Arc<PassEnv>,
    mut control: watch::Receiver<Control>,
    pass: u64,
) -> PassReport {
    let start = Instant::now();
    let mut counts = SweepCounts::default();
    let mut queue = ShardQueue::new(env.shards.len(), env.config.max_deferrals);
    let mut complete = true;
    while let Some(v) = queue.next() {
        if !running(&mut control).await || (v.wait_first && !pause(env.config.busy_retry, &mut control).await)
        {
            complete = false;
            break;
        }
        let mut due = 0;
        let end = visit(&env, v.index, &mut control, &mut counts, &mut due).await;
        let shard = env.shards[v.index].id.get().to_string();
        metrics::gauge!(crate::metrics::SWEEP_DUE, "shard" => shard).set(due as f64);
        match end {
            VisitEnd::Swept => {
                counts.shards_swept += 1;
                queue.progressed();
            }
            VisitEnd::Failed => {
                counts.shard_errors += 1;
                queue.progressed();
            }
            VisitEnd::Busy => {
                counts.deferred_busy += 1;
                if queue.defer(v) == Deferral::GaveUp {
                    counts.skipped_busy += 1;
                }
            }
            VisitEnd::Stopped => {
                complete = false;
                break;
            }
        }
    }
    let report = PassReport { pass, counts, duration: start.elapsed(), complete };
    let c = &report.counts;
    tracing::info!(
        checked = c.checked,
        purged = c.purged(),
        kept = c.kept,
        corrected = c.corrected,
        redirected = c.redirected,
        reclaimed = c.reclaimed,
        inconclusive = c.inconclusive,
        stale = c.stale,
        deferred_busy = c.deferred_busy,
        duration_ms = report.duration.as_millis() as u64,
        complete,
        "sweep pass ended"
    );
    report
}

enum VisitEnd {
    Swept,
    Busy,
    Failed,
    Stopped,
}

/// Sweeps one shard page by page until its table pass completes, it turns
/// busy, or the sweeper stops.
async fn visit(
    env: &Arc<PassEnv>,
    index: usize,
    control: &mut watch::Receiver<Control>,
    counts: &mut SweepCounts,
    due: &mut u64,
) -> VisitEnd {
    let (shard, addr) = (env.shards[index].id, &env.shards[index].addr);
    // A zero-size plan is an O(1) probe: backlog and mailbox delay, no work.
    match request_plan(shard, addr, 0).await {
        Err(e) => return failed(shard, &e),
        Ok((probe, rtt)) => {
            env.observe(signals(&probe, rtt));
            if env.busy(&probe, rtt) {
                return VisitEnd::Busy;
            }
        }
    }
    loop {
        if !running(control).await {
            return VisitEnd::Stopped;
        }
        let (mut plan, rtt) = match request_plan(shard, addr, env.config.page_size).await {
            Ok(p) => p,
            Err(e) => return failed(shard, &e),
        };
        counts.purged_refcount_zero += u64::from(plan.page.purged_zero);
        *due += plan.page.checks.len() as u64;
        let checks = std::mem::take(&mut plan.page.checks);
        let adapts = env.rate().adaptive.is_some();
        let results = if adapts && !checks.is_empty() {
            tokio::select! {
                results = verify_page(env, shard, checks, control) => results,
                () = watch_foreground(env) => Vec::new(),
            }
        } else {
            verify_page(env, shard, checks, control).await
        };
        let mut verdicts = Vec::with_capacity(results.len());
        let mut cut_short = false;
        for r in results {
            let Some((v, failed)) = r else {
                cut_short = true;
                continue;
            };
            counts.checked += 1;
            counts.verify_failures += u64::from(failed);
            verdicts.push(v);
        }
        if !verdicts.is_empty() {
            let apply = ApplyVerdicts { incarnation: plan.incarnation, verdicts, by_hand: false };
            match addr.send(apply).await.map_err(|_| Error::MailboxClosed { shard }).and_then(|r| r) {
                Ok(report) => counts.add_applied(&report),
                Err(e) => return failed(shard, &e),
            }
        }
        if cut_short {
            return VisitEnd::Stopped;
        }
        if plan.page.pass_complete {
            return VisitEnd::Swept;
        }
        if env.busy(&plan, rtt) {
            return VisitEnd::Busy;
        }
    }
}

/// Probes the shards one at a time, [`PROBE_EVERY`] apart, and feeds what
/// they show to the adaptive rate; runs until dropped (with the page's verifies).
async fn watch_foreground(env: &PassEnv) {
    let mut next = 0;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let entry = &env.shards[next % env.shards.len()];
        next += 1;
        if let Ok((probe, rtt)) = request_plan(entry.id, &entry.addr, 0).await {
            env.observe(signals(&probe, rtt));
        }
    }
}

async fn request_plan(
    shard: ShardId,
    addr: &Addr<GhostActor>,
    max_scan: usize,
) -> crate::Result<(PlanReply, Duration)> {
    let t0 = Instant::now();
    let plan = addr
        .send(PlanSweep { max_scan, by_hand: false })
        .await
        .map_err(|_| Error::MailboxClosed { shard })??;
    Ok((plan, t0.elapsed()))
}

fn failed(shard: ShardId, e: &Error) -> VisitEnd {
    tracing::warn!(shard = shard.get(), error = %e.chain(), "sweep skips shard for this pass");
    VisitEnd::Failed
}
