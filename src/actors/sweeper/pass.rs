//! One sweep pass: visit every shard, plan pages, verify them, apply by compare-and-set.

use super::bucket::Bucket;
use super::control::{Control, pause, running};
use super::verify::{Streaks, verify_page};
use crate::actors::GhostActor;
use crate::clock::Clock;
use crate::config::SweeperConfig;
use crate::error::Error;
use crate::messages::{ApplyVerdicts, PlanReply, PlanSweep};
use crate::sweep::Verifier;
use crate::sweep::{Deferral, ShardQueue};
use crate::sweep::{PassReport, SweepCounts};
use actix::Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What every pass shares.
pub(super) struct PassEnv {
    pub(super) shards: Vec<(u16, Addr<GhostActor>)>,
    pub(super) verifier: Arc<dyn Verifier>,
    pub(super) config: SweeperConfig,
    pub(super) bucket: Bucket,
    pub(super) streaks: Streaks,
}

impl PassEnv {
    pub(super) fn new(
        shards: Vec<(u16, Addr<GhostActor>)>,
        verifier: Arc<dyn Verifier>,
        config: SweeperConfig,
        clock: Arc<dyn Clock>,
    ) -> crate::Result<Self> {
        let bucket = Bucket::new(config.rate()?, clock);
        Ok(Self { shards, verifier, config, bucket, streaks: Streaks::default() })
    }

    fn busy(&self, plan: &PlanReply, round_trip: Duration) -> bool {
        plan.pending_acks > self.config.busy_pending_acks || round_trip > self.config.busy_latency
    }
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
        let shard = env.shards[v.index].0.to_string();
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
    let (shard, addr) = (env.shards[index].0, &env.shards[index].1);
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
        let results = verify_page(env, shard, checks, control).await;
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
