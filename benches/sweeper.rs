//! Sweeper: achieved verify rate against its quota, and the foreground latency it costs shards.

use actix::prelude::*;
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
const ROUNDS: usize = 6;
const BATCH_PAIRS: usize = 32;

type Shards = Vec<(u16, Addr<GhostActor>)>;

fn id(shard: u16, i: usize) -> String {
    format!("s{shard}-node-{i:06}")
}

/// Every ghost points at the next shard, and the directory agrees: each verify answers `Keep`.
fn seed(store: &MemoryStore, dir: &DirectoryVerifier, config: &TableConfig) {
    for shard in 0..SHARDS {
        let target = (shard + 1) % SHARDS;
        let mut t = GhostTable::with_capacity(shard, config.clone(), GHOSTS_PER_SHARD).unwrap();
        for i in 0..GHOSTS_PER_SHARD {
            t.insert(&id(shard, i), ShardId(target), 1, Epoch(1), 0).unwrap();
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

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    System::new().block_on(async {
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
        start_sweeper(&rt, &dir, 10_000);
        rt.pause_sweeper().await.unwrap();
        foreground(&shards, WARMUP).await;
        let phases = [
            ("sweeper idle", None),
            ("sweeper at 100/s (default quota)", Some(100)),
            ("sweeper at 1k/s", Some(1_000)),
            ("sweeper at 10k/s", Some(10_000)),
            ("sweeper at 100k/s", Some(100_000)),
        ];
        let mut pooled: Vec<(Vec<Duration>, u64, Duration)> = vec![Default::default(); phases.len()];
        for round in 1..=ROUNDS {
            for (k, &(phase, rate)) in phases.iter().enumerate() {
                if let Some(r) = rate {
                    rt.set_sweep_rate(r, (r / 100).max(10)).await.unwrap();
                    rt.resume_sweeper().await.unwrap();
                }
                let (calls, t0) = (dir.calls(), Instant::now());
                let lat = foreground(&shards, PHASE).await;
                rt.pause_sweeper().await.unwrap();
                let (verifies, took) = (dir.calls() - calls, t0.elapsed());
                print_row(&format!("round {round}: {phase}"), &lat, verifies as f64 / took.as_secs_f64());
                pooled[k].0.extend(lat);
                pooled[k].1 += verifies;
                pooled[k].2 += took;
            }
        }
        rt.stop_sweeper().await.unwrap();
        println!("-- pooled over the rounds");
        let mut idle_p99 = 0.0;
        for (k, (lat, verifies, took)) in pooled.iter_mut().enumerate() {
            lat.sort_unstable();
            print_row(&format!("all: {}", phases[k].0), lat, *verifies as f64 / took.as_secs_f64());
            let p99 = pct(lat, 0.99);
            if k == 0 {
                idle_p99 = p99;
            } else {
                println!("    p99 with the {} vs idle: {:+.1}%", phases[k].0, (p99 / idle_p99 - 1.0) * 100.0);
            }
        }
        rt.shutdown().await.unwrap();
        System::current().stop();
    });
}
