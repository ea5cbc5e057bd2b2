//! Store faults end in a clean retry or a shard that fails closed: never an empty table, never a lost acknowledgement.

use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use vshard_ghosts::messages::*;
use vshard_ghosts::store::*;
use vshard_ghosts::testing::*;
use vshard_ghosts::*;

#[allow(dead_code)] // each test file uses a different part of it
mod support;

/// Shard 0 on the current arbiter over `store`, its address.
/// Shard 0's address, with the runtime that owns it: dropping the runtime
/// releases the store, so the test keeps it for as long as it sends.
struct Shard {
    addr: Addr<GhostActor>,
    _rt: GhostRuntime,
}

impl std::ops::Deref for Shard {
    type Target = Addr<GhostActor>;
    fn deref(&self) -> &Addr<GhostActor> {
        &self.addr
    }
}

fn shard(store: Arc<dyn GhostStore>, restart: RestartPolicy, retries: u32) -> Shard {
    let config = ShardConfig { restart, fault_injection: true, ..ShardConfig::default() };
    let rt =
        support::local_runtime(store, [ShardId(0)], config, &ManualClock::new(0), retries).start().unwrap();
    Shard { addr: rt.addr(ShardId(0)).unwrap().clone(), _rt: rt }
}

fn start(store: Arc<FaultyStore<MemoryStore>>, retries: u32) -> Shard {
    shard(store, RestartPolicy { max_restarts: 1_000, ..RestartPolicy::default() }, retries)
}

fn insert(id: &str) -> InsertGhost {
    InsertGhost { node_id: id.into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) }
}

async fn refcount(addr: &Addr<GhostActor>, id: &str) -> Option<u32> {
    addr.send(Inspect { node_id: id.into() }).await.unwrap().unwrap().map(|g| g.refcount)
}

#[actix::test]
async fn a_retried_commit_failure_is_invisible() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 2);
    addr.send(GetStats).await.unwrap();
    store.inject(StoreOp::Commit, Fault::Fail);
    store.inject(StoreOp::Commit, Fault::Panic);
    assert_eq!(addr.send(insert("a")).await.unwrap(), Ok(InsertOutcome::Inserted));
    assert_eq!(store.injected(), 2);
    assert_eq!(store.inner().load(ShardId(0), &TableConfig::default()).unwrap().len(), 1);
}

/// Batch `seq` of shard 0's edge log: one edge added to "n".
fn add_n(seq: u64) -> EdgeBatch {
    let mut events = EdgeEvents::new();
    events.added("n");
    EdgeBatch { seq: Some(seq), events }
}

/// Batches 2 and 3, pipelined, die with a failed flush (3 joins the flush after 2's).
async fn two_batches_lost(store: &FaultyStore<MemoryStore>, addr: &Addr<GhostActor>) {
    addr.send(insert("n")).await.unwrap().unwrap();
    store.inject(StoreOp::Commit, Fault::Fail);
    let (r2, r3) = futures::join!(addr.send(add_n(2)), addr.send(add_n(3)));
    assert!(r2.unwrap().is_err() && r3.unwrap().is_err());
}

#[actix::test]
async fn a_retry_lost_again_is_not_overtaken_and_never_answered_skipped() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 0);
    two_batches_lost(&store, &addr).await;
    // The retry of 2 is applied, but its flush fails too.
    store.inject(StoreOp::Commit, Fault::Fail);
    assert!(addr.send(add_n(2)).await.unwrap().is_err());
    // The retry of 3 may not overtake the next retry of 2.
    assert!(matches!(addr.send(add_n(3)).await.unwrap(), Err(Error::SeqGap { awaiting: 2, .. })));
    assert!(!addr.send(add_n(2)).await.unwrap().unwrap().skipped, "2 was lost: not skipped");
    assert!(!addr.send(add_n(3)).await.unwrap().unwrap().skipped);
    assert_eq!(refcount(&addr, "n").await, Some(3));
}

#[actix::test]
async fn a_retry_of_a_later_lost_batch_waits_for_the_earlier_one() {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 0);
    two_batches_lost(&store, &addr).await;
    assert!(matches!(addr.send(add_n(3)).await.unwrap(), Err(Error::SeqGap { awaiting: 2, .. })));
    assert!(!addr.send(add_n(2)).await.unwrap().unwrap().skipped);
    assert!(matches!(addr.send(add_n(4)).await.unwrap(), Err(Error::SeqGap { awaiting: 3, .. })));
    assert!(!addr.send(add_n(3)).await.unwrap().unwrap().skipped);
    assert_eq!(refcount(&addr, "n").await, Some(3));
}

/// Batch 2 reaches a shard that is down and is refused; the operator revives
/// the shard; batch 3, pipelined behind 2, arrives before the host resends 2.
/// Applying 3 would make 2's retry look applied (`skipped`): 3 waits for 2.
#[actix::test]
async fn a_refused_batch_is_not_overtaken_by_one_pipelined_behind_it() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = shard(store.clone(), RestartPolicy { max_restarts: 1, ..RestartPolicy::default() }, 0);
    addr.send(insert("n")).await.unwrap().unwrap();
    assert!(!addr.send(add_n(1)).await.unwrap().unwrap().skipped);
    store.set_random(1.0, 1);
    let _ = addr.send(InjectPanic).await.unwrap();
    let refused = addr.send(add_n(2)).await.unwrap().unwrap_err();
    assert!(matches!(refused, Error::ShardDown { .. }), "{refused}");
    store.set_random(0.0, 1);
    addr.send(Revive).await.unwrap().unwrap();
    let gap = addr.send(add_n(3)).await.unwrap().unwrap_err();
    assert!(matches!(gap, Error::SeqGap { awaiting: 2, .. }), "{gap}");
    assert!(!addr.send(add_n(2)).await.unwrap().unwrap().skipped);
    assert!(!addr.send(add_n(3)).await.unwrap().unwrap().skipped);
    assert_eq!(refcount(&addr, "n").await, Some(4), "the insert's 1 and batches 1, 2, 3");
}

#[actix::test]
async fn an_unretried_commit_failure_fails_the_ack_and_reloads() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 0);
    addr.send(insert("kept")).await.unwrap().unwrap();
    store.inject(StoreOp::Commit, Fault::Fail);
    assert!(matches!(addr.send(insert("lost")).await.unwrap(), Err(Error::Store { .. })));
    // The shard reloaded the durable state: the failed insert was never acknowledged.
    assert_eq!(refcount(&addr, "kept").await, Some(1));
    assert_eq!(refcount(&addr, "lost").await, None);
    assert_eq!(addr.send(GetStats).await.unwrap().restarts, 1);
    assert_eq!(addr.send(insert("lost")).await.unwrap(), Ok(InsertOutcome::Inserted));
}

/// A store that breaks the all-or-nothing contract lands one row of batch 1
/// (n's removal or m's add) without the batch's sequence number, then fails.
/// The host resends batch 1: the landed row's event is not applied twice (n
/// purged with an edge left, or m counted twice), and the other one is.
#[actix::test]
async fn a_commit_that_landed_in_part_does_not_make_its_retry_apply_twice() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 0);
    let n = InsertGhost { node_id: "n".into(), target: ShardId(1), refcount: 2, epoch: Epoch(1) };
    addr.send(n).await.unwrap().unwrap();
    addr.send(insert("m")).await.unwrap().unwrap();
    let mut events = EdgeEvents::new();
    events.removed("n");
    events.added("m");
    store.inject(StoreOp::Commit, Fault::LandPart(1));
    let batch = EdgeBatch { seq: Some(1), events };
    assert!(addr.send(batch.clone()).await.unwrap().is_err());
    let torn = (refcount(&addr, "n").await, refcount(&addr, "m").await);
    assert!(torn == (Some(1), Some(1)) || torn == (Some(2), Some(2)), "one row landed: {torn:?}");
    assert!(!addr.send(batch.clone()).await.unwrap().unwrap().skipped);
    let both = (refcount(&addr, "n").await, refcount(&addr, "m").await);
    assert_eq!(both, (Some(1), Some(2)), "each event counted once");
    // Applied: a resend is skipped, and a reload keeps the counts.
    assert!(addr.send(batch).await.unwrap().unwrap().skipped);
    let _ = addr.send(InjectPanic).await.unwrap();
    assert_eq!((refcount(&addr, "n").await, refcount(&addr, "m").await), (Some(1), Some(2)));
}

/// A torn commit lands n's row (one edge removed) without batch 1's sequence
/// number; before the host resends batch 1, n is retargeted (its row written
/// again, whole) and the shard restarts. The rewritten row still holds batch
/// 1: the resend does not remove n's last edge.
#[actix::test]
async fn a_row_landed_ahead_and_written_again_keeps_what_it_holds() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 0);
    let n = InsertGhost { node_id: "n".into(), target: ShardId(1), refcount: 2, epoch: Epoch(1) };
    addr.send(n).await.unwrap().unwrap();
    let mut events = EdgeEvents::new();
    events.removed("n");
    let batch = EdgeBatch { seq: Some(1), events };
    store.inject(StoreOp::Commit, Fault::LandPart(1));
    assert!(addr.send(batch.clone()).await.unwrap().is_err());
    assert_eq!(refcount(&addr, "n").await, Some(1), "n's row landed");
    let moved = Retarget { node_id: "n".into(), target: ShardId(2), epoch: Epoch(2) };
    assert_eq!(addr.send(moved).await.unwrap(), Ok(MoveOutcome::Applied));
    let _ = addr.send(InjectPanic).await.unwrap();
    assert!(!addr.send(batch).await.unwrap().unwrap().skipped);
    assert_eq!(refcount(&addr, "n").await, Some(1), "n has one local edge left");
}

#[actix::test]
async fn a_lost_reply_leaves_the_write_durable() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 0);
    store.inject(StoreOp::Commit, Fault::ApplyThenFail);
    assert!(addr.send(insert("a")).await.unwrap().is_err());
    // The host retries; the epoch makes the retry a no-op.
    assert_eq!(addr.send(insert("a")).await.unwrap(), Ok(InsertOutcome::Duplicate));
    assert_eq!(refcount(&addr, "a").await, Some(1));
}

#[actix::test]
async fn failed_or_panicking_loads_retry_and_never_serve_an_empty_table() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 0);
    addr.send(insert("a")).await.unwrap().unwrap();
    for fault in [Fault::Fail, Fault::Panic, Fault::Fail] {
        store.inject(StoreOp::Load, fault);
    }
    let _ = addr.send(InjectPanic).await.unwrap();
    // Requests queue behind the reloads; the first answer already sees the ghost.
    assert_eq!(refcount(&addr, "a").await, Some(1));
    assert_eq!(store.injected(), 3);
    assert_eq!(addr.send(GetStats).await.unwrap().restarts, 4);
}

#[actix::test]
async fn loads_failing_past_the_restart_limit_leave_the_shard_down_not_empty() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = shard(store.clone(), RestartPolicy { max_restarts: 2, ..RestartPolicy::default() }, 0);
    addr.send(insert("a")).await.unwrap().unwrap();
    store.set_random(1.0, 1);
    let _ = addr.send(InjectPanic).await.unwrap();
    let e = addr.send(Inspect { node_id: "a".into() }).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::ShardDown { .. }), "{e}");
}

#[actix::test]
async fn random_faults_lose_no_acknowledged_write() {
    tokio::time::pause();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let addr = start(store.clone(), 1);
    store.set_random(0.2, 7);
    // What the acknowledgements promise: a failed write is undone by the reload,
    // an acknowledged one is durable, so the table must equal this exactly.
    let mut promised: HashMap<String, u32> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0..300 {
        let id = format!("n{}", rng.u32(0..40));
        if i % 3 == 0 {
            if let Ok(InsertOutcome::Inserted) = addr.send(insert(&id)).await.unwrap() {
                promised.insert(id, 1);
            }
        } else if let Ok(EdgeOutcome::Applied { .. }) =
            addr.send(EdgeAdded { node_id: id.as_str().into() }).await.unwrap()
        {
            *promised.get_mut(&id).expect("an edge applied to an acknowledged ghost") += 1;
        }
    }
    assert!(store.injected() > 10, "faults were injected");
    store.clear();
    let _ = addr.send(InjectPanic).await.unwrap();
    let held: HashMap<String, u32> = addr
        .send(ExportRecords)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|r| (r.node_id, r.refcount))
        .collect();
    assert_eq!(held, promised);
}

/// A row of the redb file overwritten with garbage behind the process's back.
fn corrupt_row(path: &std::path::Path, shard: u16, id: &str) -> Vec<u8> {
    use support::redb_tables::GHOSTS;
    let garbage = b"\x00 not a stub \xff".to_vec();
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(GHOSTS).unwrap().insert((shard, id), garbage.as_slice()).unwrap();
    txn.commit().unwrap();
    garbage
}

fn two_shards_on(path: &std::path::Path) -> GhostRuntime {
    GhostRuntime::builder()
        .shards((0..2).map(ShardId))
        .arbiters(1)
        .store(StoreChoice::Redb(path.to_owned()))
        .start()
        .unwrap()
}

#[actix::test]
async fn a_corrupt_redb_row_fails_the_shard_closed_and_stays_untouched() {
    use redb::ReadableDatabase;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.redb");
    let rt = two_shards_on(&path);
    for i in 0..5 {
        rt.insert_ghost(
            ShardId(0),
            InsertGhost { node_id: format!("n{i}").into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) },
        )
        .await
        .unwrap();
    }
    rt.insert_ghost(
        ShardId(1),
        InsertGhost { node_id: "other".into(), target: ShardId(0), refcount: 1, epoch: Epoch(1) },
    )
    .await
    .unwrap();
    rt.shutdown().await.unwrap();
    // Reopening folds the commit log into rows, which is where the corruption goes.
    drop(RedbStore::open(&path).unwrap());
    let garbage = corrupt_row(&path, 0, "n3");

    let rt = two_shards_on(&path);
    let e = rt.resolve_many(&[(ShardId(0), "n1")]).await.unwrap_err();
    assert!(
        matches!(&e, Error::ShardFailed { shard: ShardId(0), cause } if matches!(**cause, Error::Decode(_))),
        "{e}"
    );
    assert!(matches!(rt.stats().await.unwrap()[0].state, ShardState::FailedClosed(_)));
    assert_eq!(
        rt.resolve_many(&[(ShardId(1), "other")]).await.unwrap(),
        vec![Some(ShardId(0))],
        "other shards serve"
    );
    rt.shutdown().await.unwrap();

    use support::redb_tables::GHOSTS;
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let stored = txn.open_table(GHOSTS).unwrap().get((0, "n3")).unwrap().unwrap().value().to_vec();
    assert_eq!(stored, garbage, "the stored bytes are left as they were");
}

/// A store that grants shard 0 under a claim the test can end, and counts commits.
#[derive(Debug)]
struct Claimed {
    inner: MemoryStore,
    watch: ClaimWatch,
    commits: std::sync::atomic::AtomicU64,
}

impl GhostStore for Claimed {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<vshard_ghosts::table::GhostTable> {
        self.inner.load(shard, config)
    }
    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        self.commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.commit(batch)
    }
    fn replace(&self, table: &vshard_ghosts::table::GhostTable) -> Result<()> {
        self.inner.replace(table)
    }
    fn kind(&self) -> &'static str {
        "claimed"
    }
    fn claim(&self, _shard: ShardId) -> Option<ClaimWatch> {
        Some(self.watch.clone())
    }
}

/// Once the claim the shard was loaded under lapses, the next write is
/// refused `Fenced` by the shard itself, with the lapse's cause, and never
/// reaches the store (the store's own guard is the last line, not the first).
#[actix::test]
async fn a_write_after_the_claim_lapsed_is_fenced_before_the_store() {
    let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    let store = Arc::new(Claimed {
        inner: MemoryStore::new(),
        watch: ClaimWatch::until(far),
        commits: Default::default(),
    });
    let addr = shard(store.clone(), RestartPolicy::default(), 0);
    addr.send(insert("a")).await.unwrap().unwrap();
    let commits = store.commits.load(std::sync::atomic::Ordering::SeqCst);
    store.watch.revoke();
    match addr.send(insert("b")).await.unwrap() {
        Err(Error::Fenced { cause, .. }) => assert!(cause.contains("released or lost"), "{cause}"),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(store.commits.load(std::sync::atomic::Ordering::SeqCst), commits, "nothing reached the store");
}
