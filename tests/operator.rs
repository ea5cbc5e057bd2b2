//! The operator's calls on `GhostRuntime`: the sweeper's controls, one shard's stats, reviving a shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vshard_ghosts::messages::{InjectPanic, InsertGhost, ShardState};
use vshard_ghosts::*;
use vshard_ghosts::{store::*, table::*};

fn shards(grace_ms: u64, max_restarts: u32) -> ShardConfig {
    let table = TableConfig { grace: Duration::from_millis(grace_ms), ..TableConfig::default() };
    let restart = RestartPolicy {
        max_restarts,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(1),
        ..RestartPolicy::default()
    };
    ShardConfig { table, restart, fault_injection: true, ..ShardConfig::default() }
}

#[actix::test]
async fn the_sweeper_pauses_resumes_changes_rate_and_runs_a_pass_on_demand() {
    let dir = DirectoryVerifier::new();
    let sweep = SweeperConfig { pass_interval: None, ..SweeperConfig::default() };
    let rt = GhostRuntime::builder()
        .shards(0..2)
        .shard_config(shards(0, 5))
        .store(StoreChoice::Memory)
        .sweeper(Arc::new(dir.clone()), sweep)
        .start()
        .unwrap();
    rt.insert_ghost(0, InsertGhost { node_id: "n".into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) })
        .await
        .unwrap();
    dir.record_move("n", ShardId(1), Epoch(1));

    rt.pause_sweeper().await.unwrap();
    assert!(rt.sweep_totals().await.unwrap().paused);
    rt.set_sweep_rate(7, 3).await.unwrap();
    let t = rt.sweep_totals().await.unwrap();
    assert_eq!((t.verifies_per_second, t.burst), (7, 3));
    assert!(matches!(rt.set_sweep_rate(0, 1).await, Err(Error::InvalidConfig(_))));
    rt.resume_sweeper().await.unwrap();
    assert!(!rt.sweep_totals().await.unwrap().paused);

    let pass = rt.run_sweep_pass().await.unwrap();
    assert!(pass.complete);
    assert_eq!((pass.counts.checked, pass.counts.kept, pass.counts.shards_swept), (1, 1, 2));
    assert_eq!(rt.sweep_totals().await.unwrap().passes, 1);
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn sweeper_calls_without_a_sweeper_say_so() {
    let rt = GhostRuntime::builder().shards(0..1).store(StoreChoice::Memory).start().unwrap();
    assert_eq!(rt.pause_sweeper().await, Err(Error::NoSweeper));
    assert_eq!(rt.run_sweep_pass().await.map(|_| ()), Err(Error::NoSweeper));
    assert!(!Error::NoSweeper.is_retryable());
}

#[actix::test]
async fn one_shards_stats() {
    let rt = GhostRuntime::builder().shards(0..2).store(StoreChoice::Memory).start().unwrap();
    rt.insert_ghost(1, InsertGhost { node_id: "n".into(), target: ShardId(0), refcount: 2, epoch: Epoch(1) })
        .await
        .unwrap();
    // Any host message, with one `Result` to handle.
    let g = rt.request(1, vshard_ghosts::messages::Inspect { node_id: "n".into() }).await.unwrap();
    assert_eq!(g.map(|g| g.refcount), Some(2));
    assert_eq!(rt.request(7, vshard_ghosts::messages::Flush).await, Err(Error::UnknownShard(7)));
    let s = rt.shard_stats(1).await.unwrap();
    assert_eq!((s.state, s.table.shard, s.table.ghosts), (ShardState::Ready, 1, 1));
    assert_eq!(rt.shard_stats(9).await.map(|_| ()), Err(Error::UnknownShard(9)));
}

#[actix::test]
async fn a_shard_down_past_its_restart_intensity_is_revived_with_its_ghosts() {
    let rt = GhostRuntime::builder()
        .shards(0..1)
        .shard_config(shards(0, 1))
        .store(StoreChoice::Memory)
        .start()
        .unwrap();
    rt.insert_ghost(0, InsertGhost { node_id: "n".into(), target: ShardId(1), refcount: 2, epoch: Epoch(1) })
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(rt.request(0, InjectPanic).await, Err(Error::Panicked { shard: 0 }));
    }
    assert_eq!(rt.shard_stats(0).await.unwrap().state, ShardState::Down);
    assert!(matches!(rt.resolve_many(&[(ShardId(0), "n")]).await, Err(Error::ShardDown { .. })));
    assert_eq!(rt.revive_shard(0).await.unwrap(), ShardState::Ready);
    assert_eq!(rt.resolve_many(&[(ShardId(0), "n")]).await.unwrap(), vec![Some(ShardId(1))]);
    // A revived shard has its restart budget back, and reviving a serving shard changes nothing.
    assert_eq!(rt.request(0, InjectPanic).await, Err(Error::Panicked { shard: 0 }));
    assert_eq!(rt.shard_stats(0).await.unwrap().state, ShardState::Ready);
    assert_eq!(rt.revive_shard(0).await.unwrap(), ShardState::Ready);
}

/// A store whose loads of shard 0 find corrupt bytes until `repaired`.
#[derive(Debug, Default)]
struct Corrupt {
    inner: MemoryStore,
    repaired: AtomicBool,
}

impl GhostStore for Corrupt {
    fn load(&self, shard: u16, config: &TableConfig) -> Result<GhostTable> {
        if shard == 0 && !self.repaired.load(Ordering::SeqCst) {
            return Err(DecodeError::Malformed("torn row".into()).into());
        }
        self.inner.load(shard, config)
    }
    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        self.inner.commit(batch)
    }
    fn replace(&self, table: &GhostTable) -> Result<()> {
        self.inner.replace(table)
    }
    fn kind(&self) -> &'static str {
        "corrupt"
    }
}

#[actix::test]
async fn a_shard_that_failed_closed_is_revived_once_the_store_is_repaired() {
    let store = Arc::new(Corrupt::default());
    let seeded = GhostTable::from_records(0, TableConfig::default(), [], None).unwrap();
    store.inner.replace(&seeded).unwrap();
    let rt = GhostRuntime::builder().shards(0..2).store(StoreChoice::Custom(store.clone())).start().unwrap();
    assert!(matches!(rt.shard_stats(0).await.unwrap().state, ShardState::FailedClosed(_)));
    // Not repaired yet: the reload fails closed again, nothing is written.
    assert!(matches!(rt.revive_shard(0).await.unwrap(), ShardState::FailedClosed(_)));
    store.repaired.store(true, Ordering::SeqCst);
    assert_eq!(rt.revive_shard(0).await.unwrap(), ShardState::Ready);
    rt.insert_ghost(0, InsertGhost { node_id: "n".into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) })
        .await
        .unwrap();
    assert_eq!(rt.resolve_many(&[(ShardId(0), "n")]).await.unwrap(), vec![Some(ShardId(1))]);
}
