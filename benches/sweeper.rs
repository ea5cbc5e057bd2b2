//! Sweeper: what it costs with nothing to do, its achieved rate against its
//! quota, and what it costs the foreground.
//!
//! `cargo bench --bench sweeper -- idle|rate|foreground` runs one section.
//! *idle*: the sweeper thread's own CPU (`/proc/self/task/<tid>/schedstat`)
//! with no ghost due. *foreground*: [`ROUNDS`] rounds, each running every phase
//! (no sweeper; the default quota adaptive and fixed; 10k/s adaptive and fixed;
//! `SWEEP_ROUNDS=N` for more rounds, a narrower interval)
//! for [`PHASE`], the order rotating, so that the machine's drift between
//! minutes, larger than the effect on a shared 2-core machine, cancels out;
//! each figure is a ratio against the round's own no-sweeper phase, reported
//! as the median over the rounds with a distribution-free 95 % interval. The
//! steadiest is the foreground's CPU per batch: every thread's CPU but the
//! sweeper's own, over the batches done.

use actix::prelude::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vshard_ghosts::messages::*;
use vshard_ghosts::store::*;
use vshard_ghosts::sweep::SweepTotals;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::*;

const SHARDS: u16 = 8;
const ARBITERS: usize = 4;
const GHOSTS_PER_SHARD: usize = 8_000;
const RUN: Duration = Duration::from_secs(3);
const DRIVERS: usize = 4;
const WARMUP: Duration = Duration::from_secs(1);
const PHASE: Duration = Duration::from_secs(1);
/// Interleaved rounds of every phase by default; ratios are taken within each round.
const ROUNDS: usize = 20;

/// [`ROUNDS`], or `SWEEP_ROUNDS` from the environment.
fn rounds() -> usize {
    std::env::var("SWEEP_ROUNDS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(ROUNDS)
}
const BATCH_PAIRS: usize = 32;

type Shards = Vec<(u16, Addr<GhostActor>)>;

fn id(shard: u16, i: usize) -> String {
    format!("s{shard}-node-{i:06}")
}

/// Every ghost points at the next shard, and the directory agrees: each verify answers `Keep`.
fn seed(store: &MemoryStore, dir: &DirectoryVerifier, config: &TableConfig) {
    seed_at(store, dir, config, 0);
}

/// [`seed`] with every ghost created at `now_ms`.
fn seed_at(store: &MemoryStore, dir: &DirectoryVerifier, config: &TableConfig, now_ms: u64) {
    for shard in 0..SHARDS {
        let target = (shard + 1) % SHARDS;
        let mut t = GhostTable::with_capacity(ShardId(shard), config.clone(), GHOSTS_PER_SHARD).unwrap();
        for i in 0..GHOSTS_PER_SHARD {
            t.insert(&id(shard, i), ShardId(target), 1, Epoch(1), now_ms).unwrap();
            dir.record_move(&id(shard, i), ShardId(target), Epoch(1));
        }
        store.replace(&t).unwrap();
    }
}

/// The shards over [`ARBITERS`] arbiters (the sweeper gets one of its own), loaded.
async fn start_shards(dir: &DirectoryVerifier) -> (GhostRuntime, Shards) {
    let shard = ShardConfig {
        table: TableConfig { grace: Duration::ZERO, ..TableConfig::default() },
        ..ShardConfig::default()
    };
    let store = Arc::new(MemoryStore::new());
    seed(&store, dir, &shard.table);
    let config = RuntimeConfig {
        shards: (0..SHARDS).map(ShardId).collect(),
        arbiters: ARBITERS,
        shard,
        commit_retry_delay: Duration::from_millis(5),
        metrics_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let rt = GhostRuntime::builder().config(config).store(StoreChoice::Custom(store)).start().unwrap();
    let shards: Shards = (0..SHARDS).map(|s| (s, rt.addr(ShardId(s)).unwrap().clone())).collect();
    for s in 0..SHARDS {
        rt.shard_stats(ShardId(s)).await.unwrap(); // loaded
    }
    (rt, shards)
}

fn sweeper_config(per_second: u32) -> SweeperConfig {
    SweeperConfig {
        verifies_per_second: per_second,
        // Timers tick per millisecond: 10 ms worth of tokens keeps the bucket from overflowing.
        burst: (per_second / 100).max(10),
        max_in_flight: 64,
        // Back to back: a new pass starts as soon as the last one ended.
        pass_interval: Some(Duration::from_millis(1)),
        ..SweeperConfig::default()
    }
}

fn start_sweeper(rt: &GhostRuntime, dir: &DirectoryVerifier, per_second: u32) {
    rt.start_sweeper(Arc::new(dir.clone()), sweeper_config(per_second)).unwrap();
}

/// Runs the sweeper at `quota` for [`RUN`]; answers verifies per second achieved and the totals.
async fn achieved_rate(rt: &GhostRuntime, dir: &DirectoryVerifier, quota: u32) -> (f64, SweepTotals) {
    let t0 = Instant::now();
    start_sweeper(rt, dir, quota);
    tokio::time::sleep(RUN).await;
    let totals = rt.stop_sweeper().await.unwrap();
    (totals.counts.checked as f64 / t0.elapsed().as_secs_f64(), totals)
}

/// Latencies of awaited 64-event `EdgeBatch` sends from [`DRIVERS`] closed-loop drivers, sorted.
async fn foreground(shards: &Shards, run: Duration) -> Vec<Duration> {
    let deadline = Instant::now() + run;
    let drivers = (0..DRIVERS).map(|d| {
        let shards = shards.clone();
        async move {
            let mut lat = Vec::new();
            let mut n = d;
            while Instant::now() < deadline {
                let (shard, addr) = &shards[n % shards.len()];
                let mut events = EdgeEvents::with_capacity(2 * BATCH_PAIRS, 32 * BATCH_PAIRS);
                for k in 0..BATCH_PAIRS {
                    let node = id(*shard, (n * BATCH_PAIRS + k) % GHOSTS_PER_SHARD);
                    events.added(&node);
                    events.removed(&node);
                }
                let t = Instant::now();
                addr.send(EdgeBatch { seq: None, events }).await.unwrap().unwrap();
                lat.push(t.elapsed());
                n += DRIVERS;
            }
            lat
        }
    });
    let mut all: Vec<Duration> = futures::future::join_all(drivers).await.into_iter().flatten().collect();
    all.sort_unstable();
    all
}

/// This process's threads now.
fn threads() -> HashSet<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default()
}

/// The one thread `start` makes: the sweeper's own arbiter (`None` where
/// `/proc` is missing, and the CPU figure reads 0).
fn new_thread(start: impl FnOnce()) -> Option<String> {
    let before = threads();
    start();
    let mut new: Vec<String> = threads().difference(&before).cloned().collect();
    (new.len() == 1).then(|| new.remove(0))
}

/// CPU time of thread `tid` of this process so far, in ns.
fn thread_cpu_ns(tid: &Option<String>) -> u64 {
    let Some(tid) = tid else { return 0 };
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A foreground phase: what the sweeper does meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// No sweeper at all.
    Idle,
    /// At `quota` verifies/s, fixed (`latency_target: None`) or adaptive (the default target).
    Sweeping { quota: u32, adaptive: bool },
}

impl Phase {
    fn label(self) -> String {
        match self {
            Self::Idle => "no sweeper".into(),
            Self::Sweeping { quota, adaptive } => {
                format!("{quota}/s {}", if adaptive { "adaptive" } else { "fixed" })
            }
        }
    }
}

/// What one phase measured.
struct Measured {
    batches: usize,
    secs: f64,
    p99_us: f64,
    /// CPU of every thread but the sweeper's, per foreground batch, in µs.
    fg_cpu_per_batch_us: f64,
    sweeper_cpu_ms_per_s: f64,
    verifies_per_s: f64,
}

/// CPU time of every thread of this process so far, by thread id, in ns.
fn all_threads_cpu() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for tid in threads() {
        let cpu = thread_cpu_ns(&Some(tid.clone()));
        out.push((tid, cpu));
    }
    out
}

/// CPU spent between two readings by threads present at both, other than `except`.
fn cpu_between(before: &[(String, u64)], after: &[(String, u64)], except: &Option<String>) -> u64 {
    after
        .iter()
        .filter(|(tid, _)| Some(tid) != except.as_ref())
        .filter_map(|(tid, a)| before.iter().find(|(t, _)| t == tid).map(|(_, b)| a.saturating_sub(*b)))
        .sum()
}

async fn run_phase(rt: &GhostRuntime, dir: &DirectoryVerifier, shards: &Shards, phase: Phase) -> Measured {
    let sweeper = match phase {
        Phase::Idle => None,
        Phase::Sweeping { quota, adaptive } => {
            let mut config = SweeperConfig { verifies_per_second: quota, ..sweeper_config(quota) };
            config.latency_target = if adaptive { SweeperConfig::default().latency_target } else { None };
            config.min_verifies_per_second = 1;
            new_thread(|| rt.start_sweeper(Arc::new(dir.clone()), config).unwrap())
        }
    };
    let (calls, s0, all0, t0) = (dir.calls(), thread_cpu_ns(&sweeper), all_threads_cpu(), Instant::now());
    let lat = foreground(shards, PHASE).await;
    let secs = t0.elapsed().as_secs_f64();
    let (all1, s1, verifies) = (all_threads_cpu(), thread_cpu_ns(&sweeper), dir.calls() - calls);
    if phase != Phase::Idle {
        rt.stop_sweeper().await.unwrap();
    }
    Measured {
        batches: lat.len(),
        secs,
        p99_us: pct(&lat, 0.99),
        fg_cpu_per_batch_us: cpu_between(&all0, &all1, &sweeper) as f64 / 1e3 / lat.len() as f64,
        sweeper_cpu_ms_per_s: (s1 - s0) as f64 / 1e6 / secs,
        verifies_per_s: verifies as f64 / secs,
    }
}

/// The median of `v` and a distribution-free 95 % confidence interval for it
/// (order statistics of the binomial(n, ½) sign test).
fn median_ci(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    // Largest k with P(B < k) <= 2.5 %, B ~ binomial(n, 1/2): the interval is [x(k), x(n-k+1)].
    let mut cdf = 0.0;
    let mut k = 0;
    let mut coef = 1.0_f64;
    for i in 0..n {
        let p = coef / 2f64.powi(n as i32);
        if cdf + p > 0.025 {
            break;
        }
        cdf += p;
        k = i + 1;
        coef = coef * (n - i) as f64 / (i + 1) as f64;
    }
    let k = k.max(1);
    (median, v[k - 1], v[n - k])
}

fn show(label: &str, v: Vec<f64>) -> String {
    let (m, lo, hi) = median_ci(v);
    format!("{label} {m:+.2}% (95% CI {lo:+.2}% to {hi:+.2}%)")
}

/// What the sweeper costs the foreground: [`ROUNDS`] rounds, each running
/// every phase once for [`PHASE`] (the order rotating between rounds); every
/// figure is a ratio against the round's own no-sweeper phase.
async fn foreground_cost(rt: &GhostRuntime, dir: &DirectoryVerifier, shards: &Shards) {
    println!(
        "== foreground: awaited EdgeBatch of {} events (MemoryStore, group commit), {DRIVERS} drivers; \
         {} rounds of {PHASE:?} phases after a {WARMUP:?} warm-up",
        2 * BATCH_PAIRS,
        rounds()
    );
    foreground(shards, WARMUP).await;
    let phases = [
        Phase::Idle,
        Phase::Sweeping { quota: 100, adaptive: true },
        Phase::Sweeping { quota: 100, adaptive: false },
        Phase::Sweeping { quota: 10_000, adaptive: true },
        Phase::Sweeping { quota: 10_000, adaptive: false },
    ];
    // Per phase, per round: (CPU per batch +%, batches/s lost %, p99 +%, sweeper ms/s, verifies/s).
    let mut rows: Vec<Vec<[f64; 5]>> = vec![Vec::new(); phases.len()];
    for round in 0..rounds() {
        let mut got: Vec<Option<Measured>> = (0..phases.len()).map(|_| None).collect();
        for k in 0..phases.len() {
            let p = (k + round) % phases.len();
            got[p] = Some(run_phase(rt, dir, shards, phases[p]).await);
        }
        let got: Vec<Measured> = got.into_iter().map(Option::unwrap).collect();
        let idle = &got[0];
        for (p, m) in got.iter().enumerate() {
            rows[p].push([
                (m.fg_cpu_per_batch_us / idle.fg_cpu_per_batch_us - 1.0) * 100.0,
                (1.0 - (m.batches as f64 / m.secs) / (idle.batches as f64 / idle.secs)) * 100.0,
                (m.p99_us / idle.p99_us - 1.0) * 100.0,
                m.sweeper_cpu_ms_per_s,
                m.verifies_per_s,
            ]);
        }
        let idle_rate = idle.batches as f64 / idle.secs;
        println!(
            "round {:>2}: no sweeper {idle_rate:.0} batches/s, p99 {:.0} µs, {:.1} µs CPU/batch",
            round + 1,
            idle.p99_us,
            idle.fg_cpu_per_batch_us
        );
    }
    println!(
        "-- against the round's no-sweeper phase: median over {} rounds, 95% CI of the median",
        rounds()
    );
    for (p, phase) in phases.iter().enumerate().skip(1) {
        let col = |i: usize| rows[p].iter().map(|r| r[i]).collect::<Vec<_>>();
        let (sweeper_ms, _, _) = median_ci(col(3));
        let (verifies, _, _) = median_ci(col(4));
        println!(
            "{:<18} {} | {} | {} | sweeper thread {sweeper_ms:.2} ms CPU/s at {verifies:.0} verifies/s ({:.1} µs/verify)",
            phase.label(),
            show("foreground CPU/batch", col(0)),
            show("batches/s lost", col(1)),
            show("p99", col(2)),
            if verifies > 0.0 { sweeper_ms * 1e3 / verifies } else { 0.0 },
        );
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

/// Seconds each idle case is measured.
const IDLE: Duration = Duration::from_secs(5);

/// The sweeper thread's CPU per second with nothing to do: ghosts inside
/// their grace period (none due), the sweeper paused or running.
async fn idle_cost() {
    println!(
        "== idle: sweeper thread CPU with no ghost due, {ghosts} ghosts on {SHARDS} shards, {IDLE:?} per case",
        ghosts = SHARDS as usize * GHOSTS_PER_SHARD
    );
    let dir = DirectoryVerifier::new();
    let table = TableConfig { grace: Duration::from_secs(3_600), ..TableConfig::default() };
    let store = Arc::new(MemoryStore::new());
    let now = vshard_ghosts::clock::TokioClock::new();
    seed_at(&store, &dir, &table, vshard_ghosts::clock::Clock::now_ms(&now));
    let config = RuntimeConfig {
        shards: (0..SHARDS).map(ShardId).collect(),
        arbiters: ARBITERS,
        shard: ShardConfig { table, ..ShardConfig::default() },
        metrics_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let rt = GhostRuntime::builder().config(config).store(StoreChoice::Custom(store)).start().unwrap();
    for s in 0..SHARDS {
        rt.shard_stats(ShardId(s)).await.unwrap();
    }
    let cases: [(&str, Option<Duration>, bool); 4] = [
        ("paused, pass_interval 1 ms", Some(Duration::from_millis(1)), true),
        ("running, pass_interval 1 s", Some(Duration::from_secs(1)), false),
        ("running, pass_interval 60 s (default)", Some(Duration::from_secs(60)), false),
        ("running, no periodic pass", None, false),
    ];
    for (label, pass_interval, paused) in cases {
        let config = SweeperConfig { pass_interval, ..SweeperConfig::default() };
        let thread = new_thread(|| rt.start_sweeper(Arc::new(dir.clone()), config).unwrap());
        if paused {
            rt.pause_sweeper().await.unwrap();
        }
        // The first pass (one scan of every table) is settled before the window.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (cpu0, t0) = (thread_cpu_ns(&thread), Instant::now());
        tokio::time::sleep(IDLE).await;
        let ms_per_s = (thread_cpu_ns(&thread) - cpu0) as f64 / 1e6 / t0.elapsed().as_secs_f64();
        let totals = rt.stop_sweeper().await.unwrap();
        println!("{label:<40} {ms_per_s:>8.3} ms CPU/s   (verifies {})", totals.counts.checked);
    }
    rt.shutdown().await.unwrap();
}

/// Whether the section `name` runs: every one by default, or those named on
/// the command line (`cargo bench --bench sweeper -- idle`).
fn section(name: &str) -> bool {
    let named: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    named.is_empty() || named.iter().any(|n| n == name)
}

fn main() {
    System::new().block_on(async {
        if section("idle") {
            idle_cost().await;
            println!();
        }
        if !section("rate") && !section("foreground") {
            System::current().stop();
            return;
        }
        let dir = DirectoryVerifier::new();
        let (rt, shards) = start_shards(&dir).await;
        let ghosts = SHARDS as usize * GHOSTS_PER_SHARD;

        if section("rate") {
            println!(
                "== sweeper rate: instant verifier, {ghosts} ghosts on {SHARDS} shards, {RUN:?} per quota"
            );
            println!(
                "{:>12} {:>14} {:>15} {:>8} {:>7} {:>14}",
                "quota/s", "achieved/s", "achieved/quota", "passes", "stale", "deferred_busy"
            );
            for quota in [1_000, 10_000, 100_000] {
                let (achieved, t) = achieved_rate(&rt, &dir, quota).await;
                println!(
                    "{quota:>12} {achieved:>14.0} {:>15.3} {:>8} {:>7} {:>14}",
                    achieved / f64::from(quota),
                    t.passes,
                    t.counts.stale,
                    t.counts.deferred_busy
                );
            }
        }

        if section("foreground") {
            foreground_cost(&rt, &dir, &shards).await;
        }
        rt.shutdown().await.unwrap();
        System::current().stop();
    });
}
