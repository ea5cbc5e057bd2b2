//! Two runtimes over one etcd: a frozen or crashed owner's shards move to another runtime
//! with every acknowledged ghost, the old owner is fenced, and a graceful shutdown hands over at once.
//!
//! Needs `--features etcd` and `VSHARD_GHOSTS_ETCD=http://host:port`; without
//! the variable they fail. The test that restarts etcd
//! is in `etcd_restart.rs`.
#![cfg(feature = "etcd")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{etcd_endpoint, fresh_prefix};
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::store::*;
use vshard_ghosts::*;

const SHARDS: u16 = 4;

fn connect(ep: &str, prefix: &str, owner: &str) -> Arc<EtcdStore> {
    let config = EtcdConfig {
        prefix: prefix.to_owned(),
        owner_id: owner.to_owned(),
        lease_ttl_secs: 2,
        acquire_timeout: Duration::from_secs(15),
        ..EtcdConfig::default()
    };
    Arc::new(EtcdStore::connect([ep], config).unwrap())
}

fn runtime(store: &Arc<EtcdStore>) -> GhostRuntime {
    GhostRuntime::builder()
        .shards((0..SHARDS).map(ShardId))
        .arbiters(2)
        .store(StoreChoice::Custom(store.clone()))
        .start()
        .unwrap()
}

/// Inserts `n` ghosts round-robin over the shards, each with one more edge;
/// returns them as acknowledged.
async fn write_acknowledged(rt: &GhostRuntime, n: u32) -> Vec<(u16, String)> {
    let mut acked = Vec::new();
    for i in 0..n {
        let shard = (i % u32::from(SHARDS)) as u16;
        let id = format!("n{i}");
        rt.insert_ghost(
            ShardId(shard),
            InsertGhost {
                node_id: id.as_str().into(),
                target: ShardId((shard + 1) % SHARDS),
                refcount: 1,
                epoch: Epoch(1),
            },
        )
        .await
        .unwrap();
        rt.edge_batch(ShardId(shard), Some(u64::from(i) + 1), vec![EdgeEvent::added(id.as_str())])
            .await
            .unwrap();
        acked.push((shard, id));
    }
    acked
}

async fn assert_holds(rt: &GhostRuntime, acked: &[(u16, String)]) {
    for (shard, id) in acked {
        let g = rt.request(ShardId(*shard), messages::Inspect { node_id: id.as_str().into() }).await;
        let g = g.unwrap().unwrap_or_else(|| panic!("acknowledged {id} lost in the handoff"));
        assert_eq!(g.refcount, 2, "{id}: acknowledged edge lost");
    }
}

#[actix::test]
async fn a_frozen_owner_is_fenced_and_its_shards_move_with_every_acknowledged_ghost() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let store_a = connect(&ep, &prefix, "runtime-a");
    let rt_a = runtime(&store_a);
    let acked = write_acknowledged(&rt_a, 200).await;

    // A freezes: its lease is no longer renewed, but it keeps running.
    let s = store_a.clone();
    tokio::task::spawn_blocking(move || s.stop_keep_alive()).await.unwrap().unwrap();
    let started = Instant::now();
    let store_b = connect(&ep, &prefix, "runtime-b");
    let rt_b = runtime(&store_b);
    assert_holds(&rt_b, &acked).await;
    eprintln!("runtime B took the shards after {:?}", started.elapsed());

    // A cannot write any more: its shards stopped answering once its lease may
    // have lapsed, before B could take them, and they stay fenced.
    let err = rt_a
        .insert_ghost(
            ShardId(0),
            InsertGhost { node_id: "late".into(), target: ShardId(1), refcount: 1, epoch: Epoch(9) },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { shard: ShardId(0), .. }), "{err:?}");
    match rt_a
        .insert_ghost(
            ShardId(0),
            InsertGhost { node_id: "later".into(), target: ShardId(1), refcount: 1, epoch: Epoch(9) },
        )
        .await
    {
        Err(Error::Fenced { shard: ShardId(0), .. }) => {}
        other => panic!("a fenced shard must stay fenced: {other:?}"),
    }
    match &rt_a.stats().await.unwrap()[0].state {
        messages::ShardState::FailedClosed(cause) => assert!(cause.contains("fenced"), "{cause}"),
        other => panic!("a fenced shard must fail closed: {other:?}"),
    }
    assert!(matches!(store_a.ownership(ShardId(0)).unwrap(), store::etcd::Ownership::Fenced { .. }));
    let late = rt_b.request(ShardId(0), messages::Inspect { node_id: "late".into() }).await.unwrap();
    assert!(late.is_none(), "a fenced write must not land");

    rt_a.shutdown().await.unwrap();
    rt_b.shutdown().await.unwrap();
}

#[actix::test]
async fn a_lapsing_owner_stops_answering_within_the_lease_ttl() {
    let ep = etcd_endpoint();
    let store = connect(&ep, &fresh_prefix(), "runtime-a");
    let rt = runtime(&store);
    rt.insert_ghost(
        ShardId(0),
        InsertGhost { node_id: "g".into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) },
    )
    .await
    .unwrap();
    // A freezes: no keep-alive is sent from here on, so its lease lapses at the
    // latest one TTL (2 s) from now, and another owner may take the shard.
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.stop_keep_alive()).await.unwrap().unwrap();
    let stopped = Instant::now();
    let ttl = Duration::from_secs(2);
    // The lease is real, so is this wait: short polls, bounded by TTL + 1 s.
    loop {
        let elapsed = stopped.elapsed();
        match rt.request(ShardId(0), messages::Resolve { node_id: "g".into() }).await {
            Ok(Some(ShardId(1))) => assert!(
                elapsed < ttl,
                "still answering from its table {elapsed:?} after the lease's last keep-alive"
            ),
            Err(Error::Fenced { shard: ShardId(0), .. }) => break,
            other => panic!("a lapsing owner answers from its table or is fenced, never {other:?}"),
        }
        assert!(elapsed < ttl + Duration::from_secs(1), "not fenced {elapsed:?} after the last keep-alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fenced for good, reads and writes alike; nothing of it is written.
    let resolved = rt.request(ShardId(0), messages::Resolve { node_id: "g".into() }).await;
    assert!(matches!(resolved, Err(Error::Fenced { shard: ShardId(0), .. })), "{resolved:?}");
    let err = rt
        .insert_ghost(
            ShardId(0),
            InsertGhost { node_id: "late".into(), target: ShardId(1), refcount: 1, epoch: Epoch(9) },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { shard: ShardId(0), .. }), "{err:?}");
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn a_graceful_shutdown_hands_the_shards_over_at_once() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let store_a = connect(&ep, &prefix, "runtime-a");
    let rt_a = runtime(&store_a);
    let acked = write_acknowledged(&rt_a, 40).await;
    rt_a.shutdown().await.unwrap();
    let started = Instant::now();
    let store_b = connect(&ep, &prefix, "runtime-b");
    let s = store_b.clone();
    tokio::task::spawn_blocking(move || s.acquire(&[ShardId(0), ShardId(1), ShardId(2), ShardId(3)]))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "released, not lapsed: {:?}", started.elapsed());
    let rt_b = runtime(&store_b);
    assert_holds(&rt_b, &acked).await;
    rt_b.shutdown().await.unwrap();
}

const CHILD_ENV: &str = "VSHARD_GHOSTS_ETCD_CRASH_CHILD";

/// Child half of `a_crashed_owners_shards_move_once_its_lease_lapses`.
#[test]
#[ignore = "run by a_crashed_owners_shards_move_once_its_lease_lapses in a child process"]
fn etcd_crash_child() {
    let Ok(prefix) = std::env::var(CHILD_ENV) else { return };
    let ep = etcd_endpoint();
    actix::System::new().block_on(async move {
        let rt = runtime(&connect(&ep, &prefix, "crashing-child"));
        let mut out = std::io::stdout().lock();
        for i in 0..200u32 {
            let shard = (i % u32::from(SHARDS)) as u16;
            let id = format!("n{i}");
            rt.insert_ghost(
                ShardId(shard),
                InsertGhost {
                    node_id: id.as_str().into(),
                    target: ShardId((shard + 1) % SHARDS),
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
        // No shutdown, no release: the process dies, its lease lives on until it lapses.
        std::process::abort();
    });
}

#[test]
fn a_crashed_owners_shards_move_once_its_lease_lapses() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let acked = support::acks_of_aborted_child("etcd_crash_child", CHILD_ENV, &prefix);
    assert_eq!(acked.len(), 200);
    // Right after the crash the lease still holds: an impatient taker is refused.
    let impatient = EtcdConfig {
        prefix: prefix.clone(),
        owner_id: "impatient".into(),
        acquire_timeout: Duration::from_millis(100),
        ..EtcdConfig::default()
    };
    let refused = EtcdStore::connect([ep.as_str()], impatient).unwrap().acquire(&[ShardId(0)]);
    assert!(matches!(refused, Err(Error::Fenced { shard: ShardId(0), .. })), "{refused:?}");
    let store = connect(&ep, &prefix, "successor");
    let tables: Vec<_> =
        (0..SHARDS).map(|s| store.load(ShardId(s), &TableConfig::default()).unwrap()).collect();
    for (shard, id) in acked {
        let g = tables[shard as usize].get(&id).unwrap_or_else(|| panic!("acknowledged {id} lost"));
        assert_eq!(g.refcount, 2, "{id}: acknowledged edge lost");
    }
    store.release_all().unwrap();
}

/// Taking a shard that another owner holds waits for that owner's lease to
/// lapse; meanwhile the shards this store already holds keep committing. (Found
/// with issue 22: a survivor taking a dead peer's shards stalled the commits of
/// its own for up to the lease's TTL, since the wait held the store's state.)
#[test]
fn held_shards_keep_committing_while_acquire_waits_for_another_owner() {
    let (ep, prefix) = (etcd_endpoint(), fresh_prefix());
    let other = connect(&ep, &prefix, "other");
    other.acquire(&[ShardId(0)]).unwrap();
    let me = connect(&ep, &prefix, "me");
    me.acquire(&[ShardId(1)]).unwrap();
    // A frozen owner: shard 0 is free once its lease lapses, up to 2 s from now.
    other.stop_keep_alive().unwrap();
    let m2 = me.clone();
    let waiting = std::thread::spawn(move || m2.acquire(&[ShardId(0)]));
    let mut during = 0;
    let mut seq = 0;
    while !waiting.is_finished() {
        seq += 1;
        me.commit(&[support::changes(1, vec![support::rec(&format!("n{seq}"), 2, 1)], &[], Some(seq))])
            .unwrap();
        if !waiting.is_finished() {
            during += 1;
        }
    }
    waiting.join().unwrap().unwrap();
    // Each commit is a few ms; the wait lasts up to the TTL. Blocked behind
    // the wait, the first commit would only have returned after it.
    assert!(during >= 20, "only {during} commits of shard 1 while acquire waited for shard 0");
    assert!(matches!(me.ownership(ShardId(0)).unwrap(), vshard_ghosts::store::etcd::Ownership::Owned { .. }));
    let table = me.load(ShardId(1), &TableConfig::default()).unwrap();
    assert_eq!(table.applied_seq(), Some(seq));
    me.release_all().unwrap();
}
