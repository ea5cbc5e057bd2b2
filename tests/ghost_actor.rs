//! GhostActor through its public API: durability, group commit, restarts, fail-closed, backpressure.

use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use vshard_ghosts::messages::*;
use vshard_ghosts::store::*;
use vshard_ghosts::table::{GhostTable, TableMemory};
use vshard_ghosts::testing::*;
use vshard_ghosts::*;

#[allow(dead_code)] // each test file uses a different part of it
mod support;

struct Shard {
    addr: Addr<GhostActor>,
    rt: GhostRuntime,
}

fn start(store: Arc<dyn GhostStore>, config: ShardConfig) -> Shard {
    let config = ShardConfig { fault_injection: true, ..config };
    let rt =
        support::local_runtime(store, [ShardId(0)], config, &ManualClock::new(1_000), 0).start().unwrap();
    Shard { addr: rt.addr(ShardId(0)).unwrap().clone(), rt }
}

fn added(id: &str) -> EdgeAdded {
    EdgeAdded { node_id: id.into() }
}

fn inspect(id: &str) -> Inspect {
    Inspect { node_id: id.into() }
}

#[actix::test]
async fn acknowledged_writes_are_in_the_store() {
    let store = Arc::new(MemoryStore::new());
    let s = start(store.clone(), ShardConfig::default());
    assert_eq!(s.addr.send(support::ghost("a", 1, 1, 1)).await.unwrap(), Ok(InsertOutcome::Inserted));
    assert_eq!(s.addr.send(added("a")).await.unwrap(), Ok(EdgeOutcome::Applied { refcount: 2 }));
    // Acknowledged means committed: the store alone already holds it.
    let stored = store.load(ShardId(0), &TableConfig::default()).unwrap();
    assert_eq!(stored.get("a").unwrap().refcount, 2);
    assert_eq!(s.addr.send(Resolve { node_id: "a".into() }).await.unwrap(), Ok(Some(ShardId(1))));
}

#[actix::test]
async fn a_panic_restarts_reloads_and_loses_nothing_acknowledged() {
    tokio::time::pause();
    let s = start(Arc::new(MemoryStore::new()), ShardConfig::default());
    s.addr.send(support::ghost("a", 1, 1, 1)).await.unwrap().unwrap();
    s.addr.send(added("a")).await.unwrap().unwrap();
    // Queue the panic and requests behind it before the actor runs again.
    let crash = s.addr.send(InjectPanic);
    let after = s.addr.send(inspect("a"));
    let more = s.addr.send(added("a"));
    let (crash, after, more) = futures::join!(crash, after, more);
    assert_eq!(crash.unwrap(), Err(Error::Panicked { shard: ShardId(0) }));
    assert_eq!(after.unwrap().unwrap().unwrap().refcount, 2, "reloaded before handling the queue");
    assert_eq!(more.unwrap(), Ok(EdgeOutcome::Applied { refcount: 3 }));
    let stats = s.addr.send(GetStats).await.unwrap();
    assert_eq!((stats.restarts, stats.state), (1, ShardState::Ready));
}

/// A `MemoryStore` that records the room of the memory each load is handed.
#[derive(Default)]
struct RecordingStore {
    inner: MemoryStore,
    handed: std::sync::Mutex<Vec<usize>>,
}

impl GhostStore for RecordingStore {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        self.inner.load(shard, config)
    }
    fn load_reusing(&self, shard: ShardId, config: &TableConfig, memory: TableMemory) -> Result<GhostTable> {
        self.handed.lock().unwrap().push(memory.capacity());
        self.inner.load_reusing(shard, config, memory)
    }
    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        self.inner.commit(batch)
    }
    fn replace(&self, table: &GhostTable) -> Result<()> {
        self.inner.replace(table)
    }
    fn kind(&self) -> &'static str {
        "recording"
    }
}

#[actix::test]
async fn a_shard_reloads_into_the_memory_of_the_table_its_panic_dropped() {
    tokio::time::pause();
    let store = Arc::new(RecordingStore::default());
    let s = start(store.clone(), ShardConfig::default());
    for i in 0..300 {
        s.addr.send(support::ghost(&format!("n{i}"), 1, 1, 1)).await.unwrap().unwrap();
    }
    assert_eq!(s.addr.send(InjectPanic).await.unwrap(), Err(Error::Panicked { shard: ShardId(0) }));
    assert_eq!(s.addr.send(Resolve { node_id: "n7".into() }).await.unwrap(), Ok(Some(ShardId(1))));
    let handed = store.handed.lock().unwrap().clone();
    assert_eq!(handed.len(), 2, "the first load and the reload: {handed:?}");
    assert_eq!(handed[0], 0, "a first load has no table to reuse");
    assert!(handed[1] >= 300, "the reload builds in the dropped table's memory: {handed:?}");
    let stats = s.addr.send(GetStats).await.unwrap();
    assert_eq!((stats.restarts, stats.state, stats.table.ghosts), (1, ShardState::Ready, 300));
}

/// A shard that goes down frees the memory of the table its panic dropped:
/// it loads again only if revived, and then without it.
#[actix::test]
async fn a_downed_shard_frees_the_memory_of_its_dropped_table() {
    tokio::time::pause();
    let store = Arc::new(RecordingStore::default());
    let restart = RestartPolicy { max_restarts: 0, ..RestartPolicy::default() };
    let s = start(store.clone(), ShardConfig { restart, ..ShardConfig::default() });
    for i in 0..300 {
        s.addr.send(support::ghost(&format!("n{i}"), 1, 1, 1)).await.unwrap().unwrap();
    }
    assert_eq!(s.addr.send(InjectPanic).await.unwrap(), Err(Error::Panicked { shard: ShardId(0) }));
    assert_eq!(s.addr.send(GetStats).await.unwrap().state, ShardState::Down);
    s.addr.send(Revive).await.unwrap().unwrap();
    assert_eq!(s.addr.send(Resolve { node_id: "n7".into() }).await.unwrap(), Ok(Some(ShardId(1))));
    let handed = store.handed.lock().unwrap().clone();
    assert_eq!(handed, vec![0, 0], "the downed shard held its dropped table's memory");
}

#[actix::test]
async fn restarts_beyond_the_policy_leave_the_shard_down() {
    tokio::time::pause();
    let config = ShardConfig {
        restart: RestartPolicy { max_restarts: 2, ..RestartPolicy::default() },
        ..ShardConfig::default()
    };
    let s = start(Arc::new(MemoryStore::new()), config);
    for _ in 0..3 {
        assert_eq!(s.addr.send(InjectPanic).await.unwrap(), Err(Error::Panicked { shard: ShardId(0) }));
    }
    let e = s.addr.send(inspect("a")).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::ShardDown { shard: ShardId(0), .. }), "{e}");
    assert_eq!(s.addr.send(GetStats).await.unwrap().state, ShardState::Down);
}

#[actix::test]
async fn concurrent_writes_share_few_commits() {
    let s =
        start(Arc::new(MemoryStore::new()), ShardConfig { mailbox_capacity: 4096, ..ShardConfig::default() });
    s.addr.send(GetStats).await.unwrap();
    let sends: Vec<_> = (0..1_000).map(|i| s.addr.send(support::ghost(&format!("n{i}"), 1, 1, 1))).collect();
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.unwrap(), Ok(InsertOutcome::Inserted));
    }
    let w = s.rt.writer_stats().unwrap();
    assert!(w.shard_flushes >= 1 && w.shard_flushes <= 50, "1000 acks took {} flushes", w.shard_flushes);
    assert_eq!(s.addr.send(GetStats).await.unwrap().table.ghosts, 1_000);
}

#[actix::test]
async fn replayed_batches_change_nothing_across_a_restart() {
    tokio::time::pause();
    let s = start(Arc::new(MemoryStore::new()), ShardConfig::default());
    s.addr.send(support::ghost("a", 1, 1, 1)).await.unwrap().unwrap();
    let batch = EdgeBatch { seq: Some(7), events: [EdgeEvent::added("a"), EdgeEvent::added("a")].into() };
    assert!(!s.addr.send(batch.clone()).await.unwrap().unwrap().skipped);
    assert!(s.addr.send(batch.clone()).await.unwrap().unwrap().skipped);
    let _ = s.addr.send(InjectPanic).await.unwrap();
    assert!(s.addr.send(batch).await.unwrap().unwrap().skipped, "the applied seq was persisted");
    assert_eq!(s.addr.send(inspect("a")).await.unwrap().unwrap().unwrap().refcount, 3);
}

#[actix::test]
async fn corrupt_stored_state_fails_closed() {
    let store = Arc::new(MemoryStore::new());
    let good = GhostTable::new(ShardId(0), TableConfig::default()).unwrap();
    let mut bytes = codec::encode_snapshot(&good).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    // A corrupt snapshot is refused and changes nothing.
    assert!(matches!(
        store.import_snapshot(ShardId(0), &bytes, &TableConfig::default()),
        Err(Error::Decode(_))
    ));
    let legacy = include_bytes!("fixtures/seed-v0-1000.msgpack");
    store.import_snapshot(ShardId(0), legacy, &TableConfig::default()).unwrap();
    // A node id longer than the shard's limit is unreadable for this shard.
    let strict = ShardConfig {
        table: TableConfig { max_node_id_len: 4, ..TableConfig::default() },
        ..ShardConfig::default()
    };
    let s = start(store.clone(), strict);
    let e = s.addr.send(inspect("node-1")).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::ShardFailed { shard: ShardId(0), .. }), "{e}");
    assert!(matches!(s.addr.send(GetStats).await.unwrap().state, ShardState::FailedClosed(_)));
    assert_eq!(store.rows(ShardId(0)), 1_000, "nothing written over the stored state");
}

#[actix::test]
async fn a_full_mailbox_pushes_back() {
    let s =
        start(Arc::new(MemoryStore::new()), ShardConfig { mailbox_capacity: 4, ..ShardConfig::default() });
    s.addr.send(GetStats).await.unwrap();
    // The actor cannot run until this task yields, so the mailbox only fills.
    let mut queued = Vec::new();
    let full = loop {
        match s.addr.try_send(EdgeRemoved { node_id: "x".into() }) {
            Ok(()) => queued.push(()),
            Err(SendError::Full(_)) => break true,
            Err(SendError::Closed(_)) => break false,
        }
        assert!(queued.len() <= 8, "the bound was not enforced");
    };
    assert!(full);
    // `send` waits for room instead of failing.
    assert_eq!(s.addr.send(EdgeRemoved { node_id: "x".into() }).await.unwrap(), Ok(EdgeOutcome::UnknownNode));
}

#[actix::test]
async fn interval_durability_acknowledges_at_once_and_flushes_later() {
    tokio::time::pause();
    let store = Arc::new(MemoryStore::new());
    let config = ShardConfig {
        durability: Durability::Interval { interval: Duration::from_millis(100) },
        ..ShardConfig::default()
    };
    let s = start(store.clone(), config);
    s.addr.send(support::ghost("a", 1, 1, 1)).await.unwrap().unwrap();
    assert_eq!(store.rows(ShardId(0)), 0, "not yet flushed");
    s.addr.send(Flush).await.unwrap().unwrap();
    assert_eq!(store.rows(ShardId(0)), 1);
}
