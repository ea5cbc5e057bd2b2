//! `GhostReader::resolve_many` answers a frontier of any size from one state of
//! each shard: never half a batch, however many read locks the read takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::*;

const READERS: usize = 2;
/// Batches each case runs at least, and reads each reader makes at least.
const ROUNDS: u64 = 200;
const READS: u64 = 40;

fn ghost(id: &str) -> InsertGhost {
    InsertGhost { node_id: id.into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) }
}

/// A frontier of `size` ids on shard 0 (and with `mixed` one more on shard 1,
/// which takes the read's other path), and its pairs: pair `k` is `a{k}` in
/// the first half and `b{k}` in the second, so that past one chunk of the read
/// (64 lookups) a pair's two ids are read under different locks. An odd id
/// out in the middle is a ghost that stays.
fn frontier(size: usize, mixed: bool) -> (Vec<(ShardId, String)>, usize) {
    let pairs = size / 2;
    let mut ids: Vec<(ShardId, String)> = (0..pairs).map(|k| (ShardId(0), format!("a{k}"))).collect();
    if size % 2 == 1 {
        ids.push((ShardId(0), "stays".into()));
    }
    ids.extend((0..pairs).map(|k| (ShardId(0), format!("b{k}"))));
    if mixed {
        ids.push((ShardId(1), "elsewhere".into()));
    }
    (ids, pairs)
}

/// Readers resolve the frontier over and over while batches go on: each round
/// removes pair `k`'s last edges in one batch (both ghosts go at once), then
/// inserts `b{k}` and after it `a{k}`. In any one state of the shard `a{k}`
/// is a ghost only if `b{k}` is too, and `a{k}` comes first in the frontier:
/// a read that sees `a{k}` and not `b{k}` saw a batch land in the middle.
async fn never_half_a_batch(size: usize, mixed: bool) {
    let rt = GhostRuntime::builder()
        .shards((0..2).map(ShardId))
        .arbiters(1)
        .store(StoreChoice::Memory)
        .start()
        .unwrap();
    let (ids, pairs) = frontier(size, mixed);
    let churned = pairs.max(1);
    let mut all: Vec<String> = (0..churned).flat_map(|k| [format!("a{k}"), format!("b{k}")]).collect();
    all.push("stays".into());
    for chunk in all.chunks(200) {
        for r in
            futures::future::join_all(chunk.iter().map(|id| rt.insert_ghost(ShardId(0), ghost(id)))).await
        {
            assert_eq!(r.unwrap(), InsertOutcome::Inserted);
        }
    }
    // Shard 1 gets no insert: a request waits for its load, so that the
    // lock-free readers below never meet it still loading (`ShardLoading`).
    assert_eq!(rt.resolve(ShardId(1), "stays").await.unwrap(), None);
    let (finished, reads) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (reader, ids, finished, reads) = (rt.reader(), ids.clone(), finished.clone(), reads.clone());
            std::thread::spawn(move || {
                let frontier: Vec<(ShardId, &str)> = ids.iter().map(|(s, id)| (*s, &**id)).collect();
                let (mut own, mut gaps) = (0u64, 0u64);
                while !finished.load(Ordering::Acquire) || own < READS {
                    let got = reader.resolve_many(&frontier).unwrap();
                    for k in 0..pairs {
                        let (a, b) = (got[k], got[frontier.len() - pairs - usize::from(mixed) + k]);
                        assert!(a.is_none() || b.is_some(), "{size} ids: a{k} without b{k}: half a batch");
                        gaps += u64::from(a.is_none());
                    }
                    if size % 2 == 1 {
                        assert_eq!(got[pairs], Some(ShardId(1)), "{size} ids: the ghost that stays");
                    }
                    if mixed {
                        assert_eq!(got[frontier.len() - 1], None);
                    }
                    own += 1;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                gaps
            })
        })
        .collect();
    let mut round = 0u64;
    // Until a reader stops early (it found half a batch: its join says so).
    while (round < ROUNDS || reads.load(Ordering::Relaxed) < READS * READERS as u64)
        && !readers.iter().any(|r| r.is_finished())
    {
        let k = (round as usize) % churned;
        let (a, b) = (format!("a{k}"), format!("b{k}"));
        let mut events = EdgeEvents::new();
        events.removed(&a);
        events.removed(&b);
        assert_eq!(rt.edge_batch(ShardId(0), None, events).await.unwrap().purged, 2);
        rt.insert_ghost(ShardId(0), ghost(&b)).await.unwrap();
        rt.insert_ghost(ShardId(0), ghost(&a)).await.unwrap();
        round += 1;
    }
    finished.store(true, Ordering::Release);
    let gaps: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    // How often a read fell between a removal and its insert: that the batches landed.
    eprintln!("{size} ids (mixed: {mixed}): {round} rounds, {gaps} pairs seen gone");
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn a_frontier_of_1_id_is_read_whole() {
    never_half_a_batch(1, false).await;
    never_half_a_batch(1, true).await;
}

#[actix::test]
async fn a_frontier_of_64_ids_is_read_whole() {
    never_half_a_batch(64, false).await;
    never_half_a_batch(64, true).await;
}

#[actix::test]
async fn a_frontier_of_65_ids_is_read_whole() {
    never_half_a_batch(65, false).await;
    never_half_a_batch(65, true).await;
}

#[actix::test]
async fn a_frontier_of_10_000_ids_is_read_whole() {
    never_half_a_batch(10_000, false).await;
    never_half_a_batch(10_000, true).await;
}
