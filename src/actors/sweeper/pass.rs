//! One sweep pass: visit every shard, plan pages, verify under the token bucket, apply by compare-and-set.

use crate::actors::{GhostActor, Shards};
use crate::clock::Clock;
use crate::config::SweeperConfig;
use crate::error::Error;
use crate::ids::{Epoch, ShardId};
use crate::messages::{ApplyVerdicts, PlanReply, PlanSweep};
use crate::sweep::{CheckedVerdict, PlannedCheck, Verdict};
use crate::sweep::{Deferral, ShardQueue};
use crate::sweep::{PassReport, SweepCounts};
use crate::sweep::{Verifier, VerifyRequest};
use actix::Addr;
use futures::{FutureExt, StreamExt};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

/// Whether passes may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    Run,
    Pause,
    Stop,
}

/// governor's clock over the runtime's one [`Clock`], which the tables read
/// too: a manual clock paces the bucket as it paces ghost ages, and the
/// default one follows tokio's time, paused test time included (governor's
/// own `until_ready` would sleep on a real-time timer instead).
#[derive(Debug, Clone)]
struct BucketClock(Arc<dyn Clock>);

impl governor::clock::Clock for BucketClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, BucketClock, NoOpMiddleware<Duration>>;

/// What every pass shares; the bucket is swapped whole on a rate change.
pub(super) struct PassEnv {
    pub(super) shards: Shards,
    verifier: Arc<dyn Verifier>,
    config: SweeperConfig,
    clock: BucketClock,
    limiter: RwLock<Arc<Limiter>>,
    /// Consecutive `Inconclusive` verdicts by target shard (for a gauge).
    streaks: std::sync::Mutex<std::collections::HashMap<u16, u64>>,
}

impl PassEnv {
    pub(super) fn new(
        shards: Shards,
        verifier: Arc<dyn Verifier>,
        config: SweeperConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let clock = BucketClock(clock);
        let limiter = RwLock::new(limiter(config.verifies_per_second, config.burst, clock.clone()));
        Self { shards, verifier, config, clock, limiter, streaks: Default::default() }
    }

    /// Replaces the bucket (it starts full); both values must be non-zero.
    pub(super) fn set_rate(&self, per_second: u32, burst: u32) {
        let new = limiter(per_second, burst, self.clock.clone());
        *self.limiter.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    fn limiter(&self) -> Arc<Limiter> {
        self.limiter.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Counts a verdict against `target` in its inconclusive streak gauge.
    fn streak(&self, target: u16, inconclusive: bool) {
        let mut streaks = self.streaks.lock().unwrap_or_else(PoisonError::into_inner);
        let n = streaks.entry(target).or_default();
        if !inconclusive && *n == 0 {
            return;
        }
        *n = if inconclusive { *n + 1 } else { 0 };
        metrics::gauge!(crate::metrics::SWEEP_INCONCLUSIVE_STREAK, "target" => target.to_string())
            .set(*n as f64);
    }

    fn busy(&self, plan: &PlanReply, round_trip: Duration) -> bool {
        plan.pending_acks > self.config.busy_pending_acks || round_trip > self.config.busy_latency
    }
}

fn limiter(per_second: u32, burst: u32, clock: BucketClock) -> Arc<Limiter> {
    let nz = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::per_second(nz(per_second)).allow_burst(nz(burst));
    Arc::new(RateLimiter::direct_with_clock(quota, clock))
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
    let (shard, addr) = (env.shards[index].id.get(), &env.shards[index].addr);
    // A zero-size plan is an O(1) probe: backlog and mailbox delay, no work.
    match request_plan(shard, addr, 0).await {
        Err(e) => return failed(shard, &e),
        Ok((probe, rtt)) if env.busy(&probe, rtt) => return VisitEnd::Busy,
        Ok(_) => {}
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
        let results = match batch_size(env) {
            1 => {
                futures::stream::iter(checks)
                    .map(|check| verify_one(env.clone(), shard, check, control.clone()))
                    .buffer_unordered(env.config.max_in_flight)
                    .collect()
                    .await
            }
            size => verify_page_in_batches(env, shard, checks, size, control).await,
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

async fn request_plan(
    shard: u16,
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

fn failed(shard: u16, e: &Error) -> VisitEnd {
    tracing::warn!(shard, error = %e.chain(), "sweep skips shard for this pass");
    VisitEnd::Failed
}

/// A checked ghost and whether its verify failed; `None` if stopped before its token.
type Checked = Option<(CheckedVerdict, bool)>;

fn request(shard: u16, check: &PlannedCheck) -> VerifyRequest {
    VerifyRequest {
        shard: ShardId(shard),
        node_id: check.node_id.clone(),
        target_shard: ShardId(check.target_shard),
        epoch: Epoch(check.epoch),
    }
}

/// The verdict for `check` from what its verify gave, and whether it failed:
/// a failure of any kind is `Inconclusive`, never a purge.
fn checked(
    env: &PassEnv,
    shard: u16,
    check: &PlannedCheck,
    verdict: std::result::Result<Verdict, String>,
) -> Checked {
    let failed = verdict.is_err();
    if let Err(why) = &verdict {
        tracing::debug!(shard, node = %check.node_id, target = check.target_shard, %why, "inconclusive");
    }
    let verdict = verdict.unwrap_or(Verdict::Inconclusive);
    env.streak(check.target_shard, matches!(verdict, Verdict::Inconclusive));
    Some((CheckedVerdict::new(check, verdict), failed))
}

/// Takes a token, then verifies with a timeout; `None` if stopped before the
/// token. The flag says the verify failed (error, timeout, panic).
async fn verify_one(
    env: Arc<PassEnv>,
    shard: u16,
    check: PlannedCheck,
    mut control: watch::Receiver<Control>,
) -> Checked {
    if !token(&env, &mut control).await {
        return None;
    }
    let request = request(shard, &check);
    // A panicking host verifier must not take the sweeper's thread down with it.
    let call = AssertUnwindSafe(async { env.verifier.verify(request).await }).catch_unwind();
    let span = tracing::debug_span!("verify", shard, target = check.target_shard, epoch = check.epoch);
    let started = Instant::now();
    let answer = tokio::time::timeout(env.config.verify_timeout, call).instrument(span).await;
    metrics::histogram!(crate::metrics::VERIFY_SECONDS).record(started.elapsed().as_secs_f64());
    let verdict = match answer {
        Ok(Ok(Ok(verdict))) => Ok(verdict),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("verifier panicked".to_owned()),
        Err(_) => Err("verify timed out".to_owned()),
    };
    checked(&env, shard, &check, verdict)
}

/// Ghosts per `verify_batch` call: what the verifier takes, at most
/// `max_in_flight` (every ghost of a batch in flight counts); 1 means one
/// `verify` per ghost.
fn batch_size(env: &PassEnv) -> usize {
    env.verifier.max_batch().min(env.config.max_in_flight).max(1)
}

/// Verifies a page's checks in batches of `size`: tokens are taken one per
/// ghost, in page order, before a batch is sent; at most `max_in_flight`
/// ghosts are in flight, so `max_in_flight / size` batches at once.
async fn verify_page_in_batches(
    env: &Arc<PassEnv>,
    shard: u16,
    checks: Vec<PlannedCheck>,
    size: usize,
    control: &watch::Receiver<Control>,
) -> Vec<Checked> {
    let mut batches = Vec::with_capacity(checks.len().div_ceil(size));
    let mut checks = checks.into_iter().peekable();
    while checks.peek().is_some() {
        batches.push(checks.by_ref().take(size).collect::<Vec<_>>());
    }
    let tokens = control.clone();
    let results: Vec<Vec<Checked>> = futures::stream::iter(batches)
        .then(|batch| {
            let (env, mut control) = (env.clone(), tokens.clone());
            async move {
                for _ in 0..batch.len() {
                    if !token(&env, &mut control).await {
                        return (batch, false);
                    }
                }
                (batch, true)
            }
        })
        .map(|(batch, started)| verify_batch(env.clone(), shard, batch, started))
        .buffer_unordered((env.config.max_in_flight / size).max(1))
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// One `verify_batch` call bounded by the verify timeout; every ghost of a
/// batch that failed as a whole is `Inconclusive`. `started` false: stopped
/// before the batch had its tokens, nothing is asked.
async fn verify_batch(
    env: Arc<PassEnv>,
    shard: u16,
    batch: Vec<PlannedCheck>,
    started: bool,
) -> Vec<Checked> {
    if !started {
        return vec![None; batch.len()];
    }
    let requests = batch.iter().map(|c| request(shard, c)).collect();
    let call = AssertUnwindSafe(async { env.verifier.verify_batch(requests).await }).catch_unwind();
    let span = tracing::debug_span!("verify_batch", shard, ghosts = batch.len());
    let started = Instant::now();
    let answer = tokio::time::timeout(env.config.verify_timeout, call).instrument(span).await;
    metrics::histogram!(crate::metrics::VERIFY_SECONDS).record(started.elapsed().as_secs_f64());
    let whole = match answer {
        Ok(Ok(answers)) if answers.len() == batch.len() => Ok(answers),
        // Answers cannot be matched to requests: none is trusted.
        Ok(Ok(answers)) => Err(format!("verifier answered {} of {} requests", answers.len(), batch.len())),
        Ok(Err(_)) => Err("verifier panicked".to_owned()),
        Err(_) => Err("verify batch timed out".to_owned()),
    };
    match whole {
        Ok(answers) => batch
            .iter()
            .zip(answers)
            .map(|(check, answer)| checked(&env, shard, check, answer.map_err(|e| e.to_string())))
            .collect(),
        Err(why) => batch.iter().map(|check| checked(&env, shard, check, Err(why.clone()))).collect(),
    }
}

/// Waits for a token of the current bucket; false once stopping.
async fn token(env: &PassEnv, control: &mut watch::Receiver<Control>) -> bool {
    loop {
        if !running(control).await {
            return false;
        }
        let Err(not_until) = env.limiter().check() else {
            return true;
        };
        // The clock counts whole ms: wait at least one, or a wait shorter
        // than that would spin.
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&env.clock));
        let deadline = env.clock.0.now_ms().saturating_add(crate::config::millis(wait).max(1));
        tokio::select! {
            () = env.clock.0.sleep_until(deadline) => {}
            changed = control.changed() => if changed.is_err() { return false },
        }
    }
}

/// Waits while paused; false once stopping.
async fn running(control: &mut watch::Receiver<Control>) -> bool {
    loop {
        match *control.borrow_and_update() {
            Control::Run => return true,
            Control::Stop => return false,
            Control::Pause => {}
        }
        if control.changed().await.is_err() {
            return false;
        }
    }
}

/// Sleeps `d`, cut short by a stop; false once stopping.
async fn pause(d: Duration, control: &mut watch::Receiver<Control>) -> bool {
    let deadline = tokio::time::sleep(d);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return running(control).await,
            changed = control.changed() => {
                if changed.is_err() || *control.borrow() == Control::Stop {
                    return false;
                }
            }
        }
    }
}

/// Exports an ended pass through the `metrics` facade.
pub(super) fn record_metrics(report: &PassReport) {
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
