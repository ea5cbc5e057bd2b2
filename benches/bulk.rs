//! Bulk moves against one-by-one: 10 000 ghosts over 16 shards on redb, inserted
//! by `insert_ghosts` (one message and one commit per shard) and by
//! `insert_ghost` per ghost, all in flight at once (group commit shares their
//! commits) and, on 1 000, awaited one after another. Interleaved rounds on fresh
//! files; medians with ranges.
//!
//! `cargo bench --bench bulk [-- ROUNDS]` (default 5).

use std::time::{Duration, Instant};
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::{Epoch, GhostRuntime, ShardId, StoreChoice};

const SHARDS: u16 = 16;
const N: u32 = 10_000;
const SEQUENTIAL: u32 = 1_000;

fn moves(n: u32) -> Vec<(ShardId, InsertGhost)> {
    (0..n)
        .map(|i| {
            let from = (i % u32::from(SHARDS)) as u16;
            let node_id = format!("node-{i:08}").into();
            (
                ShardId(from),
                InsertGhost { node_id, target: ShardId((from + 1) % SHARDS), refcount: 1, epoch: Epoch(1) },
            )
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Way {
    Bulk,
    Concurrent,
    Sequential,
}

/// Ghosts per second of one way, on a fresh runtime and file.
fn run(way: Way) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghosts.redb");
    actix::System::new().block_on(async move {
        let rt = GhostRuntime::builder()
            .shards((0..SHARDS).map(ShardId))
            .arbiters(2)
            .store(StoreChoice::Redb(path))
            .start()
            .unwrap();
        rt.ready().await.unwrap();
        let n = if matches!(way, Way::Sequential) { SEQUENTIAL } else { N };
        let batch = moves(n);
        let start = Instant::now();
        match way {
            Way::Bulk => {
                for r in rt.insert_ghosts(batch).await {
                    r.unwrap();
                }
            }
            Way::Concurrent => {
                let calls = batch.into_iter().map(|(s, g)| rt.insert_ghost(s, g));
                for r in futures::future::join_all(calls).await {
                    r.unwrap();
                }
            }
            Way::Sequential => {
                for (s, g) in batch {
                    rt.insert_ghost(s, g).await.unwrap();
                }
            }
        }
        let took: Duration = start.elapsed();
        rt.shutdown().await.unwrap();
        f64::from(n) / took.as_secs_f64()
    })
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("median {:>9.0}/s (range {:.0}-{:.0})", v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; a number is the rounds.
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let (mut bulk, mut conc, mut seq, mut ratio) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let b = run(Way::Bulk);
        let c = run(Way::Concurrent);
        seq.push(run(Way::Sequential));
        ratio.push(b / c);
        bulk.push(b);
        conc.push(c);
    }
    println!("{N} ghosts over {SHARDS} shards on redb, {rounds} interleaved rounds:");
    println!("  insert_ghosts (bulk)          {}", summary(bulk));
    println!("  insert_ghost, all in flight   {}", summary(conc));
    println!("  insert_ghost, one at a time   {} ({SEQUENTIAL} ghosts)", summary(seq));
    println!("  bulk / all in flight          {}", summary(ratio).replace("/s", "x"));
}
