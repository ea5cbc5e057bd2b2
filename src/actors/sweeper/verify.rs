//! The verify calls of one page: tokens taken one at a time, calls bounded in
//! flight and in time, and every failure an `Inconclusive`, never a purge.

use super::control::Control;
use super::pass::PassEnv;
use crate::ids::ShardId;
use crate::sweep::{CheckedVerdict, PlannedCheck, Verdict, VerifyRequest};
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

/// A checked ghost and whether its verify failed; `None` if stopped before its token.
pub(super) type Checked = Option<(CheckedVerdict, bool)>;

/// Consecutive `Inconclusive` verdicts by target shard (for a gauge).
#[derive(Debug, Default)]
pub(super) struct Streaks(Mutex<HashMap<ShardId, u64>>);

impl Streaks {
    /// Counts a verdict against `target` in its inconclusive streak gauge.
    fn count(&self, target: ShardId, inconclusive: bool) {
        let mut streaks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = streaks.entry(target).or_default();
        if !inconclusive && *n == 0 {
            return;
        }
        *n = if inconclusive { *n + 1 } else { 0 };
        metrics::gauge!(crate::metrics::SWEEP_INCONCLUSIVE_STREAK, "target" => target.to_string())
            .set(*n as f64);
    }
}

/// Verifies a page's checks in calls of [`batch_size`] ghosts: tokens are
/// taken one per ghost, in page order and one waiter at a time, before a call
/// starts; at most `max_in_flight` ghosts are in flight.
pub(super) async fn verify_page(
    env: &Arc<PassEnv>,
    shard: ShardId,
    checks: Vec<PlannedCheck>,
    control: &watch::Receiver<Control>,
) -> Vec<Checked> {
    let size = batch_size(env);
    let mut calls = Vec::with_capacity(checks.len().div_ceil(size));
    let mut checks = checks.into_iter().peekable();
    while checks.peek().is_some() {
        calls.push(checks.by_ref().take(size).collect::<Vec<_>>());
    }
    let results: Vec<Vec<Checked>> = futures::stream::iter(calls)
        .then(|batch| {
            let (env, mut control) = (env.clone(), control.clone());
            async move {
                for _ in 0..batch.len() {
                    if !env.bucket.token(&mut control).await {
                        return (batch, false);
                    }
                }
                (batch, true)
            }
        })
        .map(|(batch, started)| call(env.clone(), shard, batch, started))
        .buffer_unordered((env.config.max_in_flight / size).max(1))
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// Ghosts per verify call: what the verifier takes, at most `max_in_flight`
/// (every ghost of a batch in flight counts); 1 means one `verify` per ghost.
fn batch_size(env: &PassEnv) -> usize {
    env.verifier.max_batch().min(env.config.max_in_flight).max(1)
}

fn request(shard: ShardId, check: &PlannedCheck) -> VerifyRequest {
    VerifyRequest {
        shard,
        node_id: check.node_id.clone(),
        target_shard: check.target_shard,
        epoch: check.epoch,
    }
}

/// One `verify` (one ghost) or `verify_batch` call bounded by the verify
/// timeout; every ghost of a call that failed as a whole is `Inconclusive`.
/// `started` false: stopped before the call had its tokens, nothing is asked.
async fn call(env: Arc<PassEnv>, shard: ShardId, batch: Vec<PlannedCheck>, started: bool) -> Vec<Checked> {
    if !started {
        return vec![None; batch.len()];
    }
    let single = batch.len() == 1 && batch_size(&env) == 1;
    let mut requests: Vec<_> = batch.iter().map(|c| request(shard, c)).collect();
    // A panicking host verifier must not take the sweeper's thread down with it.
    let call = AssertUnwindSafe(async {
        match (single, requests.pop()) {
            (true, Some(one)) => vec![env.verifier.verify(one).await],
            (_, last) => {
                requests.extend(last);
                env.verifier.verify_batch(requests).await
            }
        }
    })
    .catch_unwind();
    let span = if single {
        tracing::debug_span!(
            "verify",
            shard = shard.get(),
            target = batch[0].target_shard.get(),
            epoch = batch[0].epoch.get()
        )
    } else {
        tracing::debug_span!("verify_batch", shard = shard.get(), ghosts = batch.len())
    };
    let t0 = Instant::now();
    let answer = tokio::time::timeout(env.config.verify_timeout, call).instrument(span).await;
    metrics::histogram!(crate::metrics::VERIFY_SECONDS).record(t0.elapsed().as_secs_f64());
    let whole = match answer {
        Ok(Ok(answers)) if answers.len() == batch.len() => Ok(answers),
        // Answers cannot be matched to requests: none is trusted.
        Ok(Ok(answers)) => Err(format!("verifier answered {} of {} requests", answers.len(), batch.len())),
        Ok(Err(_)) => Err("verifier panicked".to_owned()),
        Err(_) => Err("verify timed out".to_owned()),
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

/// The verdict for `check` from what its verify gave, and whether it failed:
/// a failure of any kind is `Inconclusive`, never a purge.
fn checked(
    env: &PassEnv,
    shard: ShardId,
    check: &PlannedCheck,
    verdict: std::result::Result<Verdict, String>,
) -> Checked {
    let failed = verdict.is_err();
    if let Err(why) = &verdict {
        let target = check.target_shard.get();
        tracing::debug!(shard = shard.get(), node = %check.node_id, target, %why, "inconclusive");
    }
    let verdict = verdict.unwrap_or(Verdict::Inconclusive);
    env.streaks.count(check.target_shard, matches!(verdict, Verdict::Inconclusive));
    Some((CheckedVerdict::new(check, verdict), failed))
}
