//! GhostRuntime end to end: routing, unknown shards, shutdown, and a real crash of the process.

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::io::Write;
use std::sync::Arc;
use vshard_ghosts::messages::*;
use vshard_ghosts::store::*;
use vshard_ghosts::*;

fn memory_runtime() -> GhostRuntime {
    GhostRuntime::builder()
        .shards((0..8).map(ShardId))
        .arbiters(2)
        .store(StoreChoice::Memory)
        .start()
        .unwrap()
}

#[actix::test]
async fn routes_by_shard_and_resolves_a_frontier() {
    let rt = memory_runtime();
    for s in 0..8u16 {
        rt.insert_ghost(
            ShardId(s),
            InsertGhost {
                node_id: format!("n{s}").into(),
                target: ShardId((s + 1) % 8),
                refcount: 1,
                epoch: Epoch(1),
            },
        )
        .await
        .unwrap();
    }
    let frontier = [(ShardId(3), "n3"), (ShardId(0), "n0"), (ShardId(3), "n0"), (ShardId(7), "n7")];
    assert_eq!(
        rt.resolve_many(&frontier).await.unwrap(),
        vec![Some(ShardId(4)), Some(ShardId(1)), None, Some(ShardId(0))]
    );
    assert_eq!(rt.edge_added(ShardId(9), "x").await, Err(Error::UnknownShard(ShardId(9))));
    assert!(rt.addr(ShardId(9)).is_err());
    // Chaos hooks are off unless configured: no client can crash a shard.
    let refused = rt.request(ShardId(0), vshard_ghosts::messages::InjectPanic).await;
    assert!(matches!(refused, Err(Error::InvalidConfig(_))), "{refused:?}");
    let stats = rt.stats().await.unwrap();
    assert_eq!(stats.iter().map(|s| s.table.ghosts).sum::<u64>(), 8);
    rt.shutdown().await.unwrap();
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn invalid_configs_are_refused() {
    for b in [
        GhostRuntime::builder().shards(std::iter::empty()),
        GhostRuntime::builder().shards([ShardId(1), ShardId(1)]),
        GhostRuntime::builder().shard_config(ShardConfig { mailbox_capacity: 0, ..ShardConfig::default() }),
    ] {
        assert!(matches!(b.store(StoreChoice::Memory).start(), Err(Error::InvalidConfig(_))));
    }
}

#[actix::test]
async fn shutdown_flushes_and_the_store_reopens_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.redb");
    let rt = GhostRuntime::builder()
        .shards((0..4).map(ShardId))
        .arbiters(2)
        .store(StoreChoice::Redb(path.clone()))
        .start()
        .unwrap();
    rt.insert_ghost(
        ShardId(1),
        InsertGhost { node_id: "a".into(), target: ShardId(2), refcount: 3, epoch: Epoch(1) },
    )
    .await
    .unwrap();
    // Removals are acknowledged before they are durable; shutdown must still write them.
    rt.edge_removed(ShardId(1), "a").await.unwrap();
    rt.shutdown().await.unwrap();
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.load(ShardId(1), &TableConfig::default()).unwrap().get("a").unwrap().refcount, 2);
}

const CHILD_ENV: &str = "VSHARD_GHOSTS_CRASH_CHILD";

/// Child half of `a_crash_loses_nothing_acknowledged`: acknowledges writes, printing each, then aborts.
#[test]
#[ignore = "run by a_crash_loses_nothing_acknowledged in a child process"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    actix::System::new().block_on(async move {
        let rt = GhostRuntime::builder()
            .shards((0..4).map(ShardId))
            .arbiters(2)
            .store(StoreChoice::Redb(path.into()))
            .start()
            .unwrap();
        let mut out = std::io::stdout().lock();
        for i in 0..400u32 {
            let shard = (i % 4) as u16;
            let id = format!("n{i}");
            rt.insert_ghost(
                ShardId(shard),
                InsertGhost {
                    node_id: id.as_str().into(),
                    target: ShardId((shard + 1) % 4),
                    refcount: 1,
                    epoch: Epoch(1),
                },
            )
            .await
            .unwrap();
            rt.edge_added(ShardId(shard), &id).await.unwrap();
            writeln!(out, "ACK {shard} {id}").unwrap();
            out.flush().unwrap();
        }
        // No shutdown, no flush: the process dies as in a crash.
        std::process::abort();
    });
}

#[test]
fn a_crash_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let acked = support::acks_of_aborted_child("crash_child", CHILD_ENV, path.to_str().unwrap());
    assert_eq!(acked.len(), 400);
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let tables: Vec<_> = (0..4).map(|s| store.load(ShardId(s), &TableConfig::default()).unwrap()).collect();
    for (shard, id) in acked {
        let g = tables[shard as usize].get(&id).unwrap_or_else(|| panic!("acknowledged {id} lost"));
        assert_eq!(g.refcount, 2, "{id}: acknowledged edge lost");
    }
}

#[actix::test]
async fn clones_drive_the_same_shards_and_readers_show_the_ghost() {
    let rt = memory_runtime();
    assert!(rt.ready().await.unwrap().is_ready());
    let tasks: Vec<_> = (0..8u16)
        .map(|s| {
            let rt = rt.clone();
            let ghost = InsertGhost {
                node_id: format!("n{s}").into(),
                target: ShardId((s + 1) % 8),
                refcount: 2,
                epoch: Epoch(3),
            };
            actix::spawn(async move { rt.insert_ghost(ShardId(s), ghost).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // An owned frontier needs no borrowed copy.
    let owned: Vec<(ShardId, String)> = (0..8u16).map(|s| (ShardId(s), format!("n{s}"))).collect();
    let want: Vec<_> = (0..8u16).map(|s| Some(ShardId((s + 1) % 8))).collect();
    assert_eq!(rt.resolve_many(owned).await.unwrap(), want);
    let reader = rt.reader();
    let g = reader.ghost(ShardId(3), "n3").unwrap().unwrap();
    assert_eq!((g.target_shard, g.refcount, g.epoch), (ShardId(4), 2, Epoch(3)));
    assert_eq!(reader.ghost(ShardId(3), "n4"), Ok(None));
    assert_eq!(reader.ghost(ShardId(9), "n4"), Err(Error::UnknownShard(ShardId(9))));
    rt.shutdown().await.unwrap();
    assert_eq!(reader.ghost(ShardId(3), "n3"), Err(Error::Closed));
}

#[actix::test]
async fn a_dropped_runtime_frees_its_redb_file_for_the_next_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghosts.redb");
    let start = || {
        GhostRuntime::builder()
            .shards((0..4).map(ShardId))
            .arbiters(2)
            .store(StoreChoice::Redb(path.clone()))
            .start()
    };
    let rt = start().unwrap();
    rt.insert_ghost(
        ShardId(1),
        InsertGhost { node_id: "n".into(), target: ShardId(2), refcount: 1, epoch: Epoch(1) },
    )
    .await
    .unwrap();
    let clone = rt.clone();
    drop(rt);
    assert_eq!(clone.resolve(ShardId(1), "n").await, Ok(Some(ShardId(2))), "a clone keeps the runtime");
    let reader = clone.reader();
    drop(clone);
    assert_eq!(reader.resolve(ShardId(1), "n"), Err(Error::Closed), "readers of a dropped runtime say so");
    let rt = start().expect("the last drop released the file");
    assert!(rt.ready().await.unwrap().is_ready());
    assert_eq!(rt.resolve(ShardId(1), "n").await, Ok(Some(ShardId(2))), "acknowledged before the drop");
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn bulk_moves_answer_per_item_in_order_with_one_commit_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreChoice::Redb(dir.path().join("ghosts.redb"));
    let rt = GhostRuntime::builder().shards((0..4).map(ShardId)).arbiters(2).store(store).start().unwrap();
    rt.ready().await.unwrap();
    let ghost = |i: u16, target: u16| InsertGhost {
        node_id: format!("n{i}").into(),
        target: ShardId(target),
        refcount: 1,
        epoch: Epoch(1),
    };
    let mut batch: Vec<(ShardId, InsertGhost)> =
        (0..1_000u16).map(|i| (ShardId(i % 4), ghost(i, (i + 1) % 4))).collect();
    batch.insert(5, (ShardId(2), ghost(9_000, 2))); // its own shard: fails alone
    batch.insert(7, (ShardId(9), ghost(9_001, 1))); // no such shard
    let before = rt.writer_stats().unwrap();
    let out = rt.insert_ghosts(batch).await;
    let after = rt.writer_stats().unwrap();
    assert_eq!(out.len(), 1_002);
    assert_eq!(out[5], Err(Error::SelfTarget { shard: ShardId(2) }));
    assert_eq!(out[7], Err(Error::UnknownShard(ShardId(9))));
    assert_eq!(out.iter().filter(|o| **o == Ok(InsertOutcome::Inserted)).count(), 1_000);
    assert!(after.shard_flushes - before.shard_flushes <= 4, "{before:?} -> {after:?}");
    assert_eq!(rt.reader().resolve(ShardId(3), "n7"), Ok(Some(ShardId(0))));

    let moves = [
        (ShardId(3), Retarget { node_id: "n7".into(), target: ShardId(1), epoch: Epoch(2) }),
        (ShardId(0), Retarget { node_id: "n4".into(), target: ShardId(2), epoch: Epoch(1) }),
        (ShardId(0), Retarget { node_id: "absent".into(), target: ShardId(2), epoch: Epoch(2) }),
    ];
    assert_eq!(
        rt.retargets(moves).await,
        vec![Ok(MoveOutcome::Applied), Ok(MoveOutcome::Stale), Ok(MoveOutcome::UnknownNode)]
    );
    let back = [
        (ShardId(3), Reclaim { node_id: "n7".into(), epoch: Epoch(3) }),
        (ShardId(1), Reclaim { node_id: "n1".into(), epoch: Epoch(2) }),
    ];
    assert_eq!(rt.reclaims(back).await, vec![Ok(MoveOutcome::Applied), Ok(MoveOutcome::Applied)]);
    assert_eq!(rt.reader().resolve(ShardId(3), "n7"), Ok(None));
    rt.shutdown().await.unwrap();
}
