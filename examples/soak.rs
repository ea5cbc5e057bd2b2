//! Soak: millions of edge events through 64 shards on redb; reports throughput and resident memory, checks every count.
//!
//! `cargo run --release --example soak [-- EVENTS]` (default 10 000 000). Exits non-zero if a
//! refcount differs from the model or memory keeps growing once the table is full.

use std::sync::Arc;
use std::time::Instant;
use vshard_ghosts::messages::ExportRecords;
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::store::*;
use vshard_ghosts::*;

const SHARDS: u16 = 64;
const GHOSTS_PER_SHARD: u32 = 4_096;
const BATCH: usize = 256;
const START_REFCOUNT: u32 = 1_000_000;
/// redb's page cache for the run, in bytes.
const CACHE_BYTES: usize = 32 << 20;
/// Commit log folded into rows past this many bytes: bounds the fold's working set.
const CHECKPOINT_BYTES: u64 = 8 << 20;

fn vm_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn node(i: u32) -> String {
    format!("node-{i:08}")
}

fn main() -> std::process::ExitCode {
    let events: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("soak.redb");
    let result = actix::System::new().block_on(soak(events, path.clone()));
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    match result {
        Ok(true) => {
            println!(
                "store size {:.1} MiB; peak RSS {:.0} MiB",
                size as f64 / 1048576.0,
                vm_kb("VmHWM") as f64 / 1024.0
            );
            println!("soak: OK");
            std::process::ExitCode::SUCCESS
        }
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn soak(events: u64, path: std::path::PathBuf) -> Result<bool> {
    let rt = Arc::new(
        GhostRuntime::builder()
            .shards((0..SHARDS).map(ShardId))
            .shard_config(ShardConfig { mailbox_capacity: 256, ..ShardConfig::default() })
            // A bounded redb cache: what remains must not grow with the events.
            .store(StoreChoice::Custom(Arc::new(
                RedbStore::open_with_cache(path, CACHE_BYTES)?.with_checkpoint_bytes(CHECKPOINT_BYTES),
            )))
            .start()?,
    );
    let fill = Instant::now();
    for s in 0..SHARDS {
        let sends = (0..GHOSTS_PER_SHARD).map(|i| {
            let rt = rt.clone();
            async move {
                rt.insert_ghost(
                    ShardId(s),
                    InsertGhost {
                        node_id: node(i).into(),
                        target: ShardId((s + 1) % SHARDS),
                        refcount: START_REFCOUNT,
                        epoch: Epoch(1),
                    },
                )
                .await
            }
        });
        for r in futures::future::join_all(sends).await {
            r?;
        }
    }
    println!(
        "filled {} ghosts in {:.1?}; RSS {} MiB",
        u32::from(SHARDS) * GHOSTS_PER_SHARD,
        fill.elapsed(),
        vm_kb("VmRSS") / 1024
    );

    let batches_per_shard = events / (BATCH as u64 * u64::from(SHARDS));
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut net = vec![vec![0i64; GHOSTS_PER_SHARD as usize]; SHARDS as usize];
    // Rounds keep the drivers in step so memory can be sampled as the run goes.
    let rounds = 10u64;
    for round in 0..rounds {
        let drivers = (0..SHARDS).map(|s| {
            let rt = rt.clone();
            async move {
                let mut rng = fastrand::Rng::with_seed(u64::from(s) * 1_000 + round);
                let mut delta = vec![0i64; GHOSTS_PER_SHARD as usize];
                for b in 0..batches_per_shard / rounds {
                    let batch: Vec<EdgeEvent> = (0..BATCH)
                        .map(|_| {
                            let i = rng.u32(0..GHOSTS_PER_SHARD);
                            let add = rng.bool();
                            delta[i as usize] += if add { 1 } else { -1 };
                            if add { EdgeEvent::added(node(i)) } else { EdgeEvent::removed(node(i)) }
                        })
                        .collect();
                    let seq = round * 1_000_000 + b + 1;
                    rt.edge_batch(ShardId(s), Some(seq), batch).await?;
                }
                Ok::<_, Error>((s, delta))
            }
        });
        for r in futures::future::join_all(drivers).await {
            let (s, delta) = r?;
            for (n, d) in net[s as usize].iter_mut().zip(delta) {
                *n += d;
            }
        }
        let done = (round + 1) * (batches_per_shard / rounds) * BATCH as u64 * u64::from(SHARDS);
        let kb = vm_kb("VmRSS");
        rss.push(kb);
        println!(
            "{:>10} events  {:>8.0} events/s  RSS {:>5} MiB",
            done,
            done as f64 / started.elapsed().as_secs_f64(),
            kb / 1024
        );
    }
    let total = (batches_per_shard / rounds) * rounds * BATCH as u64 * u64::from(SHARDS);
    let secs = started.elapsed().as_secs_f64();
    println!("{total} edge events in {secs:.1} s: {:.0} events/s", total as f64 / secs);

    let mut ok = true;
    for s in 0..SHARDS {
        let held = rt.request(ShardId(s), ExportRecords).await?;
        if held.len() != GHOSTS_PER_SHARD as usize {
            println!("shard {s}: {} ghosts, expected {GHOSTS_PER_SHARD}", held.len());
            ok = false;
        }
        for r in held {
            let i: usize = r.node_id[5..].parse().unwrap_or(usize::MAX);
            let want = i64::from(START_REFCOUNT) + net[s as usize].get(i).copied().unwrap_or(i64::MIN);
            if i64::from(r.refcount) != want {
                println!("shard {s} {}: refcount {}, model {want}", r.node_id, r.refcount);
                ok = false;
            }
        }
    }
    // Once the table is full and the caches warm, memory must stay flat: the
    // last sample may not exceed the one at 30 % of the run by more than 10 %.
    let base = rss[rss.len() * 3 / 10];
    let last = *rss.last().unwrap_or(&0);
    if last > base + base / 10 {
        println!("memory grew from {} MiB to {} MiB", base / 1024, last / 1024);
        ok = false;
    }
    println!("counts checked against the model: {}", if ok { "all equal" } else { "MISMATCH" });
    rt.shutdown().await?;
    Ok(ok)
}
