//! Regression tests of the promise under asynchrony, one per path that broke it:
//! each plays the exact interleaving through the runtime's public API.

use std::sync::Arc;
use std::time::Duration;
use support::{apply, fast_restarts, plan, refcount};
use vshard_ghosts::messages::{InjectPanic, InsertGhost, PlanReply, Retarget};
use vshard_ghosts::testing::{Fault, FaultyStore, ManualClock, StoreOp};
use vshard_ghosts::*;
use vshard_ghosts::{store::*, table::*};

#[allow(dead_code)] // each test file uses a different part of it
mod support;

const GRACE: u64 = 60_000;

fn runtime(store: StoreChoice, clock: &ManualClock) -> GhostRuntime {
    let table = TableConfig { grace: Duration::from_millis(GRACE), ..TableConfig::default() };
    let restart = fast_restarts(RestartPolicy::default().max_restarts);
    GhostRuntime::builder()
        .shards((0..3).map(ShardId))
        .arbiters(1)
        .shard_config(ShardConfig { table, restart, fault_injection: true, ..ShardConfig::default() })
        .store(store)
        .clock(Arc::new(clock.clone()))
        .start()
        .unwrap()
}

/// Shard 0 holds a ghost of "n" (moved to 1) whose count drifted to 1 while
/// no local edge is left: a removal was lost. The host counts 0 at batch 1.
async fn drifted_ghost_counted_zero(rt: &GhostRuntime, clock: &ManualClock) -> PlanReply {
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    rt.edge_batch(ShardId(0), Some(1), EdgeEvents::new()).await.unwrap();
    clock.advance(GRACE);
    let p = plan(rt, ShardId(0)).await;
    assert_eq!(p.page.checks.len(), 1);
    let zero = Verdict::Keep { local_edges: Some(LocalEdges::at(0, 1)) };
    assert_eq!(apply(rt, &p, zero).await.corrected, 1);
    p
}

/// After the zero count applies, the host adds an edge through the ghost; it
/// is on its way when something happens to the shard inside the hold.
async fn the_hold_outlives(what: &str, rt: &mut GhostRuntime, clock: &ManualClock, store: &StoreChoice) {
    drifted_ghost_counted_zero(rt, clock).await;
    clock.advance(20);
    match what {
        "retarget" => {
            // The node moved on, 1 → 2, and the host told the ghost.
            assert_eq!(
                rt.retarget(
                    ShardId(0),
                    Retarget { node_id: "n".into(), target: ShardId(2), epoch: Epoch(2) }
                )
                .await
                .unwrap(),
                MoveOutcome::Applied
            );
        }
        "panic" => {
            rt.flush().await.unwrap();
            assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
        }
        "restart" => {
            rt.shutdown().await.unwrap();
            *rt = runtime(store.clone(), clock);
        }
        _ => unreachable!(),
    }
    clock.advance(2);
    let p = plan(rt, ShardId(0)).await;
    assert_eq!(p.page.purged_zero, 0, "{what} 22 ms into a 60 s hold: the plan purged the held ghost");
    // The edge the host added after counting arrives and finds the ghost.
    let out = rt.edge_batch(ShardId(0), Some(2), vec![EdgeEvent::added("n")]).await.unwrap();
    assert_eq!((out.applied, out.unknown), (1, 0), "{what}: the edge in flight found no ghost");
    assert_eq!(refcount(rt, ShardId(0), "n").await, Some(1));
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn a_zero_count_hold_outlives_a_retarget() {
    let clock = ManualClock::new(1_000);
    let store = StoreChoice::Custom(Arc::new(MemoryStore::new()));
    the_hold_outlives("retarget", &mut runtime(store.clone(), &clock), &clock, &store).await;
}

#[actix::test]
async fn a_zero_count_hold_outlives_a_panic_and_reload() {
    let clock = ManualClock::new(1_000);
    let store = StoreChoice::Custom(Arc::new(MemoryStore::new()));
    the_hold_outlives("panic", &mut runtime(store.clone(), &clock), &clock, &store).await;
}

#[actix::test]
async fn a_zero_count_hold_outlives_a_restart_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let store = StoreChoice::Redb(dir.path().join("hold.redb"));
    the_hold_outlives("restart", &mut runtime(store.clone(), &clock), &clock, &store).await;
}

#[actix::test]
async fn a_held_ghost_goes_once_its_hold_ends() {
    let clock = ManualClock::new(1_000);
    let rt = runtime(StoreChoice::Memory, &clock);
    drifted_ghost_counted_zero(&rt, &clock).await;
    clock.advance(GRACE - 1);
    assert_eq!(plan(&rt, ShardId(0)).await.page.purged_zero, 0);
    clock.advance(1);
    assert_eq!(plan(&rt, ShardId(0)).await.page.purged_zero, 1, "purged without a remote call");
    assert_eq!(refcount(&rt, ShardId(0), "n").await, None);
}

#[actix::test]
async fn a_lower_count_waits_for_the_shard_to_reach_its_log_position() {
    let clock = ManualClock::new(1_000);
    let rt = runtime(StoreChoice::Memory, &clock);
    // Two of shard 0's edges point at "n": e1 and e2.
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 2, 1)).await.unwrap();
    rt.edge_batch(ShardId(0), Some(1), EdgeEvents::new()).await.unwrap();
    clock.advance(GRACE);
    let p = plan(&rt, ShardId(0)).await;
    // The host deletes e1 (batch 2, still queued to the shard), then counts 1.
    let one = Verdict::Keep { local_edges: Some(LocalEdges::at(1, 2)) };
    let r = apply(&rt, &p, one).await;
    assert_eq!((r.corrected, r.stale_counts), (0, 1), "counted at batch 2, the shard is at batch 1");
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(2));
    // Batch 2 arrives: e1's removal applies once, and e2 still has its ghost.
    rt.edge_batch(ShardId(0), Some(2), vec![EdgeEvent::removed("n")]).await.unwrap();
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(1), "the in-flight removal counted twice");
    // At its position, the same count applies (it changes nothing now).
    let p = plan(&rt, ShardId(0)).await;
    assert_eq!(apply(&rt, &p, one).await.stale_counts, 0);
    // A count with no position can raise a refcount, never lower it.
    let p = plan(&rt, ShardId(0)).await;
    let r = apply(&rt, &p, Verdict::Keep { local_edges: Some(LocalEdges::unsequenced(0)) }).await;
    assert_eq!((r.corrected, r.stale_counts), (0, 1));
    let p = plan(&rt, ShardId(0)).await;
    let r = apply(&rt, &p, Verdict::Keep { local_edges: Some(LocalEdges::unsequenced(4)) }).await;
    assert_eq!(r.corrected, 1);
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(4));
}

#[actix::test]
async fn an_unsequenced_event_since_the_count_blocks_a_lower_count() {
    let clock = ManualClock::new(1_000);
    let rt = runtime(StoreChoice::Memory, &clock);
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 3, 1)).await.unwrap();
    rt.edge_batch(ShardId(0), Some(5), EdgeEvents::new()).await.unwrap();
    // An edge added outside the log: the host's count at batch 5 may not see it.
    rt.edge_added(ShardId(0), "n").await.unwrap();
    clock.advance(GRACE);
    let p = plan(&rt, ShardId(0)).await;
    let r = apply(&rt, &p, Verdict::Keep { local_edges: Some(LocalEdges::at(1, 5)) }).await;
    assert_eq!((r.corrected, r.stale_counts), (0, 1));
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(4));
}

#[actix::test]
async fn a_reclaimed_ghost_is_not_made_again_by_a_stale_insert_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let store = StoreChoice::Redb(dir.path().join("tombs.redb"));
    let rt = runtime(store.clone(), &clock);
    // "n": shard 0 → 1 at epoch 1, back to 0 at epoch 2.
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 2, 1)).await.unwrap();
    assert_eq!(rt.reclaim(ShardId(0), "n", Epoch(2)).await.unwrap(), MoveOutcome::Applied);
    rt.shutdown().await.unwrap();
    let rt = runtime(store, &clock);
    // The host retries its unacknowledged insert of the first move.
    assert_eq!(
        rt.insert_ghost(ShardId(0), support::ghost("n", 1, 2, 1)).await.unwrap(),
        InsertOutcome::Stale
    );
    assert_eq!(
        rt.resolve_many(&[(ShardId(0), "n")]).await.unwrap(),
        vec![None],
        "shard 0 forwards its own node away"
    );
    // The next real move away makes the ghost again.
    assert_eq!(
        rt.insert_ghost(ShardId(0), support::ghost("n", 2, 1, 3)).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(rt.resolve_many(&[(ShardId(0), "n")]).await.unwrap(), vec![Some(ShardId(2))]);
}

#[actix::test]
async fn a_reclaim_of_a_ghost_purged_already_still_refuses_its_stale_insert() {
    let clock = ManualClock::new(1_000);
    let rt = runtime(StoreChoice::Memory, &clock);
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    rt.edge_batch(ShardId(0), Some(1), vec![EdgeEvent::removed("n")]).await.unwrap();
    assert_eq!(rt.reclaim(ShardId(0), "n", Epoch(2)).await.unwrap(), MoveOutcome::UnknownNode);
    assert_eq!(
        rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap(),
        InsertOutcome::Stale
    );
}

#[actix::test]
async fn an_insert_that_a_redirect_reached_first_takes_its_count() {
    let clock = ManualClock::new(1_000);
    let rt = runtime(StoreChoice::Memory, &clock);
    // "n": 0 → 1 (epoch 1, one edge), back to 0 (epoch 2; the reclaim is on its
    // way), then 0 → 2 with three edges (epoch 3; the insert is on its way).
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    clock.advance(GRACE);
    let p = plan(&rt, ShardId(0)).await;
    // The verifier already knows the third move.
    assert_eq!(apply(&rt, &p, Verdict::Redirect { shard: ShardId(2), epoch: Epoch(3) }).await.redirected, 1);
    assert_eq!(rt.reclaim(ShardId(0), "n", Epoch(2)).await.unwrap(), MoveOutcome::Stale);
    assert_eq!(
        rt.insert_ghost(ShardId(0), support::ghost("n", 2, 3, 3)).await.unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(3), "the new life's edges, not the old one's");
}

#[test]
fn seed_bytes_with_an_empty_node_id_load() {
    // The seed's bare map: {"": [2, 1, 5], "a": [3, 2, 6]}.
    let bytes = [0x82, 0xa0, 0x93, 0x02, 0x01, 0x05, 0xa1, b'a', 0x93, 0x03, 0x02, 0x06];
    let config = TableConfig::default();
    let t = codec::decode_snapshot(&bytes, ShardId(0), &config).unwrap();
    assert_eq!((t.len(), t.resolve(""), t.resolve("a")), (2, Some(ShardId(2)), Some(ShardId(3))));
    // Written back in this crate's format, it loads again.
    let again = codec::decode_snapshot(&codec::encode_snapshot(&t).unwrap(), ShardId(0), &config).unwrap();
    assert_eq!(again.resolve(""), Some(ShardId(2)));
    // New ids still may not be empty.
    let mut t = again;
    assert!(matches!(t.insert("", ShardId(1), 1, Epoch(1), 0), Err(Error::InvalidNodeId { len: 0, .. })));
}

#[actix::test]
async fn a_pipelined_batch_cannot_overtake_the_retry_of_one_a_restart_lost() {
    let clock = ManualClock::new(1_000);
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let rt = GhostRuntime::builder()
        .config(RuntimeConfig {
            shards: vec![ShardId(0)],
            arbiters: 1,
            commit_retries: 0,
            ..RuntimeConfig::default()
        })
        .store(StoreChoice::Custom(store.clone()))
        .clock(Arc::new(clock.clone()))
        .start()
        .unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap(); // edge e1
    rt.edge_batch(ShardId(0), Some(1), EdgeEvents::new()).await.unwrap();
    // Batch 1 was acknowledged at once (it adds nothing): make it durable before
    // the store starts failing, so that only batch 2 is lost.
    rt.flush().await.unwrap();
    store.inject(StoreOp::Commit, Fault::Fail);
    // Batch 2 adds e2; its flush fails and the shard restarts. Batch 3 was already
    // on its way behind it.
    let b2 = rt.edge_batch(ShardId(0), Some(2), vec![EdgeEvent::added("n")]).await;
    assert!(b2.as_ref().is_err_and(Error::is_retryable), "{b2:?}");
    let b3 = rt.edge_batch(ShardId(0), Some(3), vec![EdgeEvent::removed("other")]).await;
    assert_eq!(b3.map(|_| ()), Err(Error::SeqGap { shard: ShardId(0), applied: Some(1), awaiting: 2 }));
    assert!(Error::SeqGap { shard: ShardId(0), applied: Some(1), awaiting: 2 }.is_retryable());
    // The host sends again what was not acknowledged, in order.
    let retry = rt.edge_batch(ShardId(0), Some(2), vec![EdgeEvent::added("n")]).await.unwrap();
    assert!(!retry.skipped, "the retry of the lost batch was taken for applied");
    rt.edge_batch(ShardId(0), Some(3), vec![EdgeEvent::removed("other")]).await.unwrap();
    // e1 goes; e2 still points at n.
    rt.edge_batch(ShardId(0), Some(4), vec![EdgeEvent::removed("n")]).await.unwrap();
    assert_eq!(rt.resolve_many(&[(ShardId(0), "n")]).await.unwrap(), vec![Some(ShardId(1))]);
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(1));
}

#[actix::test]
async fn a_stale_insert_after_a_redirect_past_its_life_takes_its_count() {
    let clock = ManualClock::new(1_000);
    let rt = runtime(StoreChoice::Memory, &clock);
    // "n": 0 → 1 (epoch 1, one edge), back (epoch 2, reclaim on its way), 0 → 2 with
    // three edges (epoch 3, insert on its way), then 2 → 3 (epoch 4).
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    clock.advance(GRACE);
    let p = plan(&rt, ShardId(0)).await;
    assert_eq!(apply(&rt, &p, Verdict::Redirect { shard: ShardId(3), epoch: Epoch(4) }).await.redirected, 1);
    assert_eq!(rt.reclaim(ShardId(0), "n", Epoch(2)).await.unwrap(), MoveOutcome::Stale);
    assert_eq!(
        rt.insert_ghost(ShardId(0), support::ghost("n", 2, 3, 3)).await.unwrap(),
        InsertOutcome::Stale
    );
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(3), "the new life's three edges");
    for left in [2, 1] {
        rt.edge_batch(ShardId(0), Some(10 - u64::from(left)), vec![EdgeEvent::removed("n")]).await.unwrap();
        assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(left));
    }
}

#[actix::test]
async fn a_seeded_empty_id_lives_on_redb_through_changes_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.redb");
    // The seed's bare map: {"": [1, 2, 5]}.
    let seed = [0x81, 0xa0, 0x93, 0x01, 0x02, 0x05];
    RedbStore::open(&path).unwrap().import_snapshot(ShardId(0), &seed, &TableConfig::default()).unwrap();
    let clock = ManualClock::new(1_000);
    let rt = runtime(StoreChoice::Redb(path.clone()), &clock);
    rt.edge_batch(ShardId(0), Some(1), vec![EdgeEvent::added("")]).await.unwrap();
    rt.edge_batch(ShardId(0), Some(2), vec![EdgeEvent::removed("")]).await.unwrap();
    rt.shutdown().await.unwrap();
    let rt = runtime(StoreChoice::Redb(path), &clock);
    assert_eq!(refcount(&rt, ShardId(0), "").await, Some(2));
    assert_eq!(rt.shard_stats(ShardId(0)).await.unwrap().state, vshard_ghosts::messages::ShardState::Ready);
}

#[test]
fn a_snapshot_at_max_stubs_with_tombstones_imports() {
    let config = TableConfig { max_stubs: 2, ..TableConfig::default() };
    let mut t = GhostTable::new(ShardId(0), config.clone()).unwrap();
    for id in ["a", "c"] {
        t.insert(id, ShardId(1), 1, Epoch(1), 0).unwrap();
    }
    assert_eq!(
        t.insert("b", ShardId(1), 1, Epoch(1), 0),
        Err(Error::TableFull { shard: ShardId(0), limit: 2 })
    );
    assert_eq!(t.reclaim("c", Epoch(2), 0), Ok(MoveOutcome::Applied));
    // A tombstone is not a ghost: the room "c" left is "b"'s.
    t.insert("b", ShardId(1), 1, Epoch(1), 0).unwrap();
    let back = codec::decode_snapshot(&codec::encode_snapshot(&t).unwrap(), ShardId(0), &config).unwrap();
    assert_eq!((back.len(), back.tombstone_epoch("c")), (2, Some(Epoch(2))));
}

#[actix::test]
async fn under_interval_durability_a_lost_batch_blocks_nothing() {
    // Acknowledged at once, so a restart may lose it and the host never sends it again.
    let clock = ManualClock::new(1_000);
    let shard = ShardConfig {
        durability: Durability::Interval { interval: Duration::from_millis(60_000) },
        fault_injection: true,
        ..ShardConfig::default()
    };
    let rt = GhostRuntime::builder()
        .shards((0..1).map(ShardId))
        .shard_config(shard)
        .store(StoreChoice::Memory)
        .clock(Arc::new(clock.clone()))
        .start()
        .unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    rt.edge_batch(ShardId(0), Some(1), vec![EdgeEvent::added("n")]).await.unwrap();
    assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
    let next = rt.edge_batch(ShardId(0), Some(2), vec![EdgeEvent::added("m")]).await;
    assert!(next.is_ok(), "a batch after a loss the host was told of: {next:?}");
}

#[actix::test]
async fn a_reloaded_shard_lowers_no_refcount_before_its_next_sequenced_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let store = StoreChoice::Redb(dir.path().join("position.redb"));
    let rt = runtime(store.clone(), &clock);
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 2, 1)).await.unwrap();
    rt.edge_batch(ShardId(0), Some(1), EdgeEvents::new()).await.unwrap();
    // An edge added outside the log, durable; the host's count at batch 1 misses it.
    rt.edge_added(ShardId(0), "n").await.unwrap();
    rt.shutdown().await.unwrap();
    let rt = runtime(store, &clock);
    clock.advance(GRACE);
    let p = plan(&rt, ShardId(0)).await;
    let r = apply(&rt, &p, Verdict::Keep { local_edges: Some(LocalEdges::at(2, 1)) }).await;
    assert_eq!((r.corrected, r.stale_counts), (0, 1), "the reload forgot the unsequenced edge");
    assert_eq!(refcount(&rt, ShardId(0), "n").await, Some(3));
    // After the next sequenced batch, a count at its position applies.
    rt.edge_batch(ShardId(0), Some(2), EdgeEvents::new()).await.unwrap();
    let p = plan(&rt, ShardId(0)).await;
    let r = apply(&rt, &p, Verdict::Keep { local_edges: Some(LocalEdges::at(3, 2)) }).await;
    assert_eq!(r.stale_counts, 0);
}

/// Past `max_tombstones` reclaims within the tombstones' lifetime, the next
/// reclaim is refused (retryable, nothing changed) rather than a live
/// tombstone forgotten: every reclaimed node's stale insert stays refused,
/// across a restart too. Once the oldest tombstone lapses, the retried
/// reclaim goes through.
#[actix::test]
async fn past_max_tombstones_a_reclaim_waits_and_no_stale_insert_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreChoice::Redb(dir.path().join("tombs.redb"));
    let clock = ManualClock::new(1_000);
    let table =
        TableConfig { max_tombstones: 3, tombstone_ttl: Duration::from_secs(60), ..TableConfig::default() };
    let start = || {
        GhostRuntime::builder()
            .shards((0..2).map(ShardId))
            .arbiters(1)
            .shard_config(ShardConfig { table: table.clone(), ..ShardConfig::default() })
            .store(store.clone())
            .clock(Arc::new(clock.clone()))
            .start()
            .unwrap()
    };
    let ghost = |i: u32, epoch| InsertGhost {
        node_id: format!("n{i}").into(),
        target: ShardId(1),
        refcount: 1,
        epoch,
    };
    let rt = start();
    for i in 0..5 {
        assert_eq!(rt.insert_ghost(ShardId(0), ghost(i, Epoch(1))).await.unwrap(), InsertOutcome::Inserted);
    }
    for i in 0..3 {
        assert_eq!(rt.reclaim(ShardId(0), &format!("n{i}"), Epoch(2)).await.unwrap(), MoveOutcome::Applied);
        clock.advance(1_000);
    }
    // At the bound: refused, and the ghost is still there; the same for a
    // reclaim of a node with no ghost, which would leave a tombstone too.
    for node in ["n3", "gone"] {
        let refused = rt.reclaim(ShardId(0), node, Epoch(2)).await;
        assert_eq!(
            refused,
            Err(Error::TombstonesFull { shard: ShardId(0), limit: 3, lapses_in_ms: 57_000 }),
            "{node}"
        );
        assert!(refused.unwrap_err().is_retryable());
    }
    assert_eq!(rt.resolve(ShardId(0), "n3").await.unwrap(), Some(ShardId(1)));
    rt.shutdown().await.unwrap();
    let rt = start();
    for i in 0..3 {
        assert_eq!(
            rt.insert_ghost(ShardId(0), ghost(i, Epoch(1))).await.unwrap(),
            InsertOutcome::Stale,
            "n{i}"
        );
        assert_eq!(
            rt.resolve(ShardId(0), &format!("n{i}")).await.unwrap(),
            None,
            "n{i} is not forwarded away"
        );
    }
    // n0's tombstone lapses (taken at 1 s, for 60 s): the retry goes through.
    clock.advance(57_000 - 1);
    assert!(rt.reclaim(ShardId(0), "n3", Epoch(2)).await.is_err(), "one ms before the lapse");
    clock.advance(1);
    assert_eq!(rt.reclaim(ShardId(0), "n3", Epoch(2)).await.unwrap(), MoveOutcome::Applied);
    assert_eq!(rt.insert_ghost(ShardId(0), ghost(3, Epoch(1))).await.unwrap(), InsertOutcome::Stale);
    assert_eq!(rt.shard_stats(ShardId(0)).await.unwrap().table.tombstones, 3);
    rt.shutdown().await.unwrap();
}
