//! Sweeper: achieved verify rate against its quota, and the foreground latency it costs shards.

use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vshard_ghosts::actors::sweeper::*;
use vshard_ghosts::messages::*;
use vshard_ghosts::*;

const SHARDS: u16 = 8;
const ARBITERS: usize = 4;
const GHOSTS_PER_SHARD: usize = 8_000;
const RUN: Duration = Duration::from_secs(3);
const DRIVERS: usize = 4;
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
            t.insert(&id(shard, i), target, 1, 1, 0).unwrap();
            dir.record_move(&id(shard, i), target, 1);
        }
        store.replace(&t).unwrap();
    }
}

async fn start_shards(arbiters: &[Arbiter], dir: &DirectoryVerifier) -> Shards {
    let config = ShardConfig {
        table: TableConfig { grace_ms: 0, ..TableConfig::default() },
        ..ShardConfig::default()
    };
    let store = Arc::new(MemoryStore::new());
    seed(&store, dir, &config.table);
    let writer = StoreWriter::spawn(store, 3, Duration::from_millis(5)).unwrap();
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let mut shards = Vec::new();
    for shard in 0..SHARDS {
        let actor = GhostActor::new(shard, config.clone(), writer.clone(), clock.clone());
        shards.push((shard, actor.start_supervised_in(&arbiters[shard as usize % ARBITERS].handle())));
    }
    for (_, addr) in &shards {
        addr.send(GetStats).await.unwrap(); // loaded
    }
    shards
}

fn sweeper_config(per_second: u32) -> SweeperConfig {
    SweeperConfig {
        verifies_per_second: per_second,
        // Timers tick per millisecond: 10 ms worth of tokens keeps the bucket from overflowing.
        burst: (per_second / 100).max(10),
        max_in_flight: 64,
        page_size: 1_024,
        // Back to back: a new pass starts as soon as the last one ended.
        pass_interval: Some(Duration::from_millis(1)),
        ..SweeperConfig::default()
    }
}

fn start_sweeper(
    arbiter: &Arbiter,
    shards: &Shards,
    dir: &DirectoryVerifier,
    per_second: u32,
) -> Addr<SweeperActor> {
    let verifier: Arc<dyn Verifier> = Arc::new(dir.clone());
    SweeperActor::new(shards.clone(), verifier, sweeper_config(per_second))
        .unwrap()
        .start_in(&arbiter.handle())
}

/// Runs the sweeper at `quota` for [`RUN`]; answers verifies per second achieved and the totals.
async fn achieved_rate(
    arbiter: &Arbiter,
    shards: &Shards,
    dir: &DirectoryVerifier,
    quota: u32,
) -> (f64, SweepTotals) {
    let t0 = Instant::now();
    let sweeper = start_sweeper(arbiter, shards, dir, quota);
    tokio::time::sleep(RUN).await;
    let totals = sweeper.send(StopSweeper).await.unwrap();
    (totals.counts.checked as f64 / t0.elapsed().as_secs_f64(), totals)
}

/// Latencies of awaited 64-event `EdgeBatch` sends from [`DRIVERS`] closed-loop drivers, for [`RUN`].
async fn foreground(shards: &Shards) -> Vec<Duration> {
    let deadline = Instant::now() + RUN;
    let drivers = (0..DRIVERS).map(|d| {
        let shards = shards.clone();
        async move {
            let mut lat = Vec::new();
            let mut n = d;
            while Instant::now() < deadline {
                let (shard, addr) = &shards[n % shards.len()];
                let mut events = Vec::with_capacity(2 * BATCH_PAIRS);
                for k in 0..BATCH_PAIRS {
                    let node = id(*shard, (n * BATCH_PAIRS + k) % GHOSTS_PER_SHARD);
                    events.push(EdgeEvent::added(node.as_str()));
                    events.push(EdgeEvent::removed(node));
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

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    System::new().block_on(async {
        let arbiters: Vec<Arbiter> = (0..ARBITERS).map(|_| Arbiter::new()).collect();
        let sweeper_arbiter = Arbiter::new();
        let dir = DirectoryVerifier::new();
        let shards = start_shards(&arbiters, &dir).await;
        let ghosts = SHARDS as usize * GHOSTS_PER_SHARD;

        println!("== sweeper rate: instant verifier, {ghosts} ghosts on {SHARDS} shards, {RUN:?} per quota");
        println!("{:>12} {:>14} {:>15} {:>8} {:>7} {:>14}", "quota/s", "achieved/s", "achieved/quota", "passes", "stale", "deferred_busy");
        for quota in [1_000, 10_000, 100_000] {
            let (achieved, t) = achieved_rate(&sweeper_arbiter, &shards, &dir, quota).await;
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
            "== foreground: awaited EdgeBatch of {} events (MemoryStore, group commit), {DRIVERS} drivers, {RUN:?} per phase",
            2 * BATCH_PAIRS
        );
        println!("{:<26} {:>9} {:>10} {:>10} {:>10} {:>10} {:>14}", "phase", "batches", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "sweeper/s");
        let sweeper = start_sweeper(&sweeper_arbiter, &shards, &dir, 10_000);
        sweeper.send(Pause).await.unwrap();
        let mut base_p99 = None;
        for (phase, rate) in [("sweeper idle", None), ("sweeper at 10k/s", Some(10_000)), ("sweeper at 100k/s", Some(100_000)), ("sweeper idle again", None)] {
            if let Some(r) = rate {
                sweeper.send(SetRate { per_second: r, burst: (r / 100).max(10) }).await.unwrap().unwrap();
                sweeper.send(Resume).await.unwrap();
            }
            let before = sweeper.send(GetSweepStats).await.unwrap();
            let t0 = Instant::now();
            let lat = foreground(&shards).await;
            sweeper.send(Pause).await.unwrap();
            let after = sweeper.send(GetSweepStats).await.unwrap();
            // Totals grow at pass ends: a rough rate, for context.
            let swept = (after.counts.checked - before.counts.checked) as f64 / t0.elapsed().as_secs_f64();
            let p99 = pct(&lat, 0.99);
            let base = *base_p99.get_or_insert(p99);
            let label = match rate {
                None if base == p99 => phase.to_owned(),
                _ => format!("{phase} ({:+.1}% p99)", (p99 / base - 1.0) * 100.0),
            };
            println!(
                "{label:<26} {:>9} {:>10.0} {p99:>10.0} {:>10.0} {:>10.0} {swept:>14.0}",
                lat.len(),
                pct(&lat, 0.50),
                pct(&lat, 0.999),
                pct(&lat, 1.0),
            );
        }
        sweeper.send(StopSweeper).await.unwrap();
        println!("(p99 change is against the first idle phase; the second idle phase shows the run-to-run noise)");
        System::current().stop();
    });
}
