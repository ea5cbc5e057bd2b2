//! Sweeper: achieved verify rate against its quota, and what it costs the foreground.
//!
//! The foreground figure is taken within each of [`ROUNDS`] rounds: an idle
//! phase and an active one back to back (order alternating), so that the
//! machine's drift between minutes, which on a shared 2-core machine is larger
//! than the effect, cancels out. Reported per quota: batches/s lost and the p99
//! change (median and range over the rounds), and the sweeper thread's own CPU
//! time per verify (from `/proc/thread-self/schedstat`).

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
const PHASE: Duration = Duration::from_secs(2);
/// Interleaved idle/active rounds; the ratio is taken within each round.
const ROUNDS: usize = 10;
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
        let mut t = GhostTable::with_capacity(shard, config.clone(), GHOSTS_PER_SHARD).unwrap();
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
    let shards: Shards = (0..SHARDS).map(|s| (s, rt.addr(s).unwrap().clone())).collect();
    for s in 0..SHARDS {
        rt.shard_stats(s).await.unwrap(); // loaded
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

fn print_row(label: &str, sorted: &[Duration], sweeper_rate: f64) {
    println!(
        "{label:<28} {:>9} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {sweeper_rate:>10.0}",
        sorted.len(),
        pct(sorted, 0.50),
        pct(sorted, 0.99),
        pct(sorted, 0.999),
        pct(sorted, 1.0),
    );
}

/// CPU time the calling thread has run, in ns (Linux schedstat; 0 elsewhere).
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

fn median_range(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:+.1}% (range {:+.1}% to {:+.1}%)", v[v.len() / 2], v[0], v[v.len() - 1])
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
        rt.shard_stats(s).await.unwrap();
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

        println!("== sweeper rate: instant verifier, {ghosts} ghosts on {SHARDS} shards, {RUN:?} per quota");
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

        println!();
        println!(
            "== foreground: awaited EdgeBatch of {} events (MemoryStore, group commit), {DRIVERS} drivers; \
             phases of {PHASE:?} interleaved over {ROUNDS} rounds after a {WARMUP:?} warm-up",
            2 * BATCH_PAIRS
        );
        let header = ["batches", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "sweeper/s"];
        println!(
            "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "phase", header[0], header[1], header[2], header[3], header[4], header[5]
        );
        let sweeper_thread = new_thread(|| start_sweeper(&rt, &dir, 10_000));
        rt.pause_sweeper().await.unwrap();
        foreground(&shards, WARMUP).await;
        let quotas = [100u32, 1_000, 10_000];
        // Per quota: per round, (throughput loss %, p99 increase %, sweeper CPU ns per verify).
        let mut per_quota: Vec<Vec<[f64; 3]>> = vec![Vec::new(); quotas.len()];
        for round in 1..=ROUNDS {
            for (q, &quota) in quotas.iter().enumerate() {
                // Idle first in odd rounds and active first in even ones, so
                // that a drift of the machine does not favour either.
                let mut idle = None;
                let mut active = None;
                for active_now in if round % 2 == 1 { [false, true] } else { [true, false] } {
                    if active_now {
                        rt.set_sweep_rate(quota, (quota / 100).max(10)).await.unwrap();
                        rt.resume_sweeper().await.unwrap();
                    }
                    let (calls, cpu0, t0) = (dir.calls(), thread_cpu_ns(&sweeper_thread), Instant::now());
                    let lat = foreground(&shards, PHASE).await;
                    rt.pause_sweeper().await.unwrap();
                    let took = t0.elapsed();
                    let (verifies, cpu) = (dir.calls() - calls, thread_cpu_ns(&sweeper_thread) - cpu0);
                    let label = if active_now { format!("sweeper at {quota}/s") } else { "sweeper idle".into() };
                    print_row(&format!("round {round}: {label}"), &lat, verifies as f64 / took.as_secs_f64());
                    let rate = lat.len() as f64 / took.as_secs_f64();
                    let cpu_per_verify = if verifies > 0 { cpu as f64 / verifies as f64 } else { 0.0 };
                    if active_now {
                        active = Some((rate, pct(&lat, 0.99), cpu_per_verify));
                    } else {
                        idle = Some((rate, pct(&lat, 0.99)));
                    }
                }
                let ((ir, ip), (ar, ap, cpu)) = (idle.unwrap(), active.unwrap());
                per_quota[q].push([(1.0 - ar / ir) * 100.0, (ap / ip - 1.0) * 100.0, cpu]);
            }
        }
        rt.stop_sweeper().await.unwrap();
        println!("-- within-round comparison, median over {ROUNDS} rounds (range)");
        for (q, rounds) in per_quota.iter().enumerate() {
            let col = |k: usize| rounds.iter().map(|r| r[k]).collect::<Vec<_>>();
            let mut cpu = col(2);
            cpu.sort_by(f64::total_cmp);
            println!(
                "quota {:>6}/s: foreground batches/s lost {} | p99 {} | sweeper thread CPU per verify {:.1} µs (range {:.1}–{:.1})",
                quotas[q],
                median_range(col(0)),
                median_range(col(1)),
                cpu[cpu.len() / 2] / 1e3,
                cpu[0] / 1e3,
                cpu[cpu.len() - 1] / 1e3
            );
        }
        rt.shutdown().await.unwrap();
        System::current().stop();
    });
}
