//! The operator's calls on `GhostRuntime`: the sweeper's controls and lifetime, waiting until swept, paged export, one shard's stats, reviving a shard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vshard_ghosts::messages::{InjectPanic, InsertGhost, ShardState};
use vshard_ghosts::*;
use vshard_ghosts::{store::*, table::*};

#[allow(dead_code)] // each test file uses a different part of it
mod support;

fn shards(grace_ms: u64, max_restarts: u32) -> ShardConfig {
    let table = TableConfig { grace: Duration::from_millis(grace_ms), ..TableConfig::default() };
    ShardConfig {
        table,
        restart: support::fast_restarts(max_restarts),
        fault_injection: true,
        ..ShardConfig::default()
    }
}

#[actix::test]
async fn the_sweeper_pauses_resumes_changes_rate_and_runs_a_pass_on_demand() {
    let dir = DirectoryVerifier::new();
    let sweep = SweeperConfig { pass_interval: None, ..SweeperConfig::default() };
    let rt = GhostRuntime::builder()
        .shards((0..2).map(ShardId))
        .shard_config(shards(0, 5))
        .store(StoreChoice::Memory)
        .sweeper(Arc::new(dir.clone()), sweep)
        .start()
        .unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
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
    let rt = GhostRuntime::builder().shards((0..1).map(ShardId)).store(StoreChoice::Memory).start().unwrap();
    assert_eq!(rt.pause_sweeper().await, Err(Error::NoSweeper));
    assert_eq!(rt.run_sweep_pass().await.map(|_| ()), Err(Error::NoSweeper));
    assert!(!Error::NoSweeper.is_retryable());
}

#[actix::test]
async fn one_shards_stats() {
    let rt = GhostRuntime::builder().shards((0..2).map(ShardId)).store(StoreChoice::Memory).start().unwrap();
    rt.insert_ghost(ShardId(1), support::ghost("n", 0, 2, 1)).await.unwrap();
    // Any host message, with one `Result` to handle.
    let g = rt.request(ShardId(1), vshard_ghosts::messages::Inspect { node_id: "n".into() }).await.unwrap();
    assert_eq!(g.map(|g| g.refcount), Some(2));
    assert_eq!(
        rt.request(ShardId(7), vshard_ghosts::messages::Flush).await,
        Err(Error::UnknownShard(ShardId(7)))
    );
    let s = rt.shard_stats(ShardId(1)).await.unwrap();
    assert_eq!((s.state, s.table.shard, s.table.ghosts), (ShardState::Ready, ShardId(1), 1));
    assert_eq!(rt.shard_stats(ShardId(9)).await.map(|_| ()), Err(Error::UnknownShard(ShardId(9))));
}

#[actix::test]
async fn a_shard_down_past_its_restart_intensity_is_revived_with_its_ghosts() {
    let rt = GhostRuntime::builder()
        .shards((0..1).map(ShardId))
        .shard_config(shards(0, 1))
        .store(StoreChoice::Memory)
        .start()
        .unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 2, 1)).await.unwrap();
    for _ in 0..2 {
        assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
    }
    assert_eq!(rt.shard_stats(ShardId(0)).await.unwrap().state, ShardState::Down);
    assert!(matches!(rt.resolve_many(&[(ShardId(0), "n")]).await, Err(Error::ShardDown { .. })));
    assert_eq!(rt.revive_shard(ShardId(0)).await.unwrap(), ShardState::Ready);
    assert_eq!(rt.resolve_many(&[(ShardId(0), "n")]).await.unwrap(), vec![Some(ShardId(1))]);
    // A revived shard has its restart budget back, and reviving a serving shard changes nothing.
    assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
    assert_eq!(rt.shard_stats(ShardId(0)).await.unwrap().state, ShardState::Ready);
    assert_eq!(rt.revive_shard(ShardId(0)).await.unwrap(), ShardState::Ready);
}

/// A store whose loads of shard 0 find corrupt bytes until `repaired`.
#[derive(Debug, Default)]
struct Corrupt {
    inner: MemoryStore,
    repaired: AtomicBool,
}

impl GhostStore for Corrupt {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        if shard == ShardId(0) && !self.repaired.load(Ordering::SeqCst) {
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
    let seeded = GhostTable::from_records(ShardId(0), TableConfig::default(), [], None).unwrap();
    store.inner.replace(&seeded).unwrap();
    let rt = GhostRuntime::builder()
        .shards((0..2).map(ShardId))
        .store(StoreChoice::Custom(store.clone()))
        .start()
        .unwrap();
    assert!(matches!(rt.shard_stats(ShardId(0)).await.unwrap().state, ShardState::FailedClosed(_)));
    // Not repaired yet: the reload fails closed again, nothing is written.
    assert!(matches!(rt.revive_shard(ShardId(0)).await.unwrap(), ShardState::FailedClosed(_)));
    store.repaired.store(true, Ordering::SeqCst);
    assert_eq!(rt.revive_shard(ShardId(0)).await.unwrap(), ShardState::Ready);
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    assert_eq!(rt.resolve_many(&[(ShardId(0), "n")]).await.unwrap(), vec![Some(ShardId(1))]);
}

#[actix::test]
async fn the_sweeper_starts_after_the_replay_and_stops_with_its_totals() {
    let dir = DirectoryVerifier::new();
    let rt = GhostRuntime::builder()
        .shards((0..2).map(ShardId))
        .shard_config(shards(0, 5))
        .store(StoreChoice::Memory)
        .start()
        .unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    dir.record_move("n", ShardId(1), Epoch(1));
    let sweep = SweeperConfig { pass_interval: None, ..SweeperConfig::default() };
    assert_eq!(rt.stop_sweeper().await.map(|_| ()), Err(Error::NoSweeper));
    rt.start_sweeper(Arc::new(dir.clone()), sweep.clone()).unwrap();
    assert!(
        matches!(rt.start_sweeper(Arc::new(dir.clone()), sweep.clone()), Err(Error::SweeperRunning)),
        "one sweeper at a time"
    );
    assert_eq!(rt.run_sweep_pass().await.unwrap().counts.kept, 1);
    let totals = rt.stop_sweeper().await.unwrap();
    assert_eq!((totals.passes, totals.counts.kept), (1, 1));
    assert_eq!(rt.sweep_totals().await.map(|_| ()), Err(Error::NoSweeper), "stopped");
    // A bad config is refused before anything starts; a good one starts afresh.
    let bad = SweeperConfig { burst: 0, ..sweep.clone() };
    assert!(matches!(rt.start_sweeper(Arc::new(dir.clone()), bad), Err(Error::InvalidConfig(_))));
    rt.start_sweeper(Arc::new(dir), sweep).unwrap();
    assert_eq!(rt.sweep_totals().await.unwrap().passes, 0);
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn wait_until_swept_answers_once_every_due_ghost_is_verified_or_backed_off() {
    let dir = DirectoryVerifier::new();
    // The bucket runs on the manual clock too: big enough for every pass here.
    // A fixed rate: a probe slowed by a loaded machine would cut an adaptive
    // one, and the bucket, left one token, refills only as the manual clock
    // moves, which it does not during a pass (the pass waited forever).
    let sweep = SweeperConfig {
        pass_interval: None,
        verifies_per_second: 10_000,
        burst: 1_000,
        latency_target: None,
        ..SweeperConfig::default()
    };
    let clock = vshard_ghosts::testing::ManualClock::new(1_000);
    let rt = GhostRuntime::builder()
        .shards((0..3).map(ShardId))
        .shard_config(shards(100, 5))
        .store(StoreChoice::Memory)
        .clock(Arc::new(clock.clone()))
        .sweeper(Arc::new(dir.clone()), sweep)
        .start()
        .unwrap();
    // 40 ghosts on shard 0 pointing at shard 1 (verified: Keep), 40 pointing at
    // shard 2, which cannot be reached (backed off).
    for i in 0..80u32 {
        let target = ShardId(1 + (i % 2) as u16);
        let node = format!("n{i}");
        rt.insert_ghost(
            ShardId(0),
            InsertGhost { node_id: node.as_str().into(), target, refcount: 1, epoch: Epoch(1) },
        )
        .await
        .unwrap();
        dir.record_move(&node, target, Epoch(1));
    }
    dir.set_unreachable(ShardId(2), true);
    assert_eq!(rt.wait_until_swept().await.unwrap().checked, 0, "young ghosts are not due");
    clock.advance(100);
    // Two clean passes: the second verifies the kept ghosts again, while the
    // unreachable ones are still in back-off.
    let counts = rt.wait_until_swept().await.unwrap();
    assert_eq!((counts.kept, counts.inconclusive, counts.skipped_busy), (80, 40, 0), "{counts:?}");
    // A verified ghost is due on every pass; a backed-off one only once its
    // back-off (1 s by default) is over.
    let again = rt.wait_until_swept().await.unwrap();
    assert_eq!((again.kept, again.inconclusive), (80, 0), "{again:?}");
    clock.advance(1_000);
    let later = rt.wait_until_swept().await.unwrap();
    assert_eq!((later.kept, later.inconclusive), (80, 40), "{later:?}");
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn a_shard_is_exported_page_by_page_in_id_order() {
    let rt = GhostRuntime::builder()
        .shards((0..2).map(ShardId))
        .shard_config(shards(0, 5))
        .store(StoreChoice::Memory)
        .start()
        .unwrap();
    for i in (0..25u32).rev() {
        let ghost = InsertGhost {
            node_id: format!("n{i:02}").into(),
            target: ShardId(1),
            refcount: 1,
            epoch: Epoch(1),
        };
        rt.insert_ghost(ShardId(0), ghost).await.unwrap();
    }
    let (mut seen, mut after, mut pages) = (Vec::new(), None::<Box<str>>, 0);
    loop {
        let page = rt.export_page(ShardId(0), after.as_deref(), 10).await.unwrap();
        assert!(page.records.len() <= 10);
        pages += 1;
        // The shard serves other requests between pages.
        if pages == 1 {
            rt.edge_removed(ShardId(0), "n24").await.unwrap();
        }
        seen.extend(page.records.into_iter().map(|r| r.node_id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let want: Vec<String> = (0..24).map(|i| format!("n{i:02}")).collect();
    assert_eq!((seen, pages), (want, 3));
    assert_eq!(rt.export_page(ShardId(7), None, 10).await.map(|_| ()), Err(Error::UnknownShard(ShardId(7))));
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn wait_until_swept_covers_a_table_whose_cursor_an_earlier_visit_left_midway() {
    let clock = vshard_ghosts::testing::ManualClock::new(1_000);
    let dir = DirectoryVerifier::new();
    // The bucket runs on the manual clock too: big enough for both passes.
    // A fixed rate: on the manual clock, which stands still during a pass, a
    // rate cut by a probe slowed by a loaded machine leaves the bucket one
    // token that nothing refills (the pass then waits forever).
    let sweep =
        SweeperConfig { pass_interval: None, burst: 100, latency_target: None, ..SweeperConfig::default() };
    let rt = GhostRuntime::builder()
        .shards((0..2).map(ShardId))
        .shard_config(shards(10_000, 5))
        .store(StoreChoice::Memory)
        .clock(Arc::new(clock.clone()))
        .sweeper(Arc::new(dir.clone()), sweep)
        .start()
        .unwrap();
    for i in 0..20u32 {
        let node = format!("n{i:02}");
        rt.insert_ghost(
            ShardId(0),
            InsertGhost { node_id: node.as_str().into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) },
        )
        .await
        .unwrap();
        dir.record_move(&node, ShardId(1), Epoch(1));
    }
    // A plan of 10 leaves shard 0's cursor halfway (nothing is due yet).
    rt.request(ShardId(0), vshard_ghosts::messages::PlanSweep::new(10)).await.unwrap();
    clock.advance(11_000);
    let counts = rt.wait_until_swept().await.unwrap();
    assert!(counts.kept >= 20, "every due ghost verified, the first half too: {counts:?}");
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn hand_made_sweep_messages_need_the_run_time_switch_too() {
    // The cargo feature alone (it merges across a build) must not let a host
    // forge a plan or a verdict.
    let rt = GhostRuntime::builder().shards((0..2).map(ShardId)).store(StoreChoice::Memory).start().unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    let plan = rt.request(ShardId(0), vshard_ghosts::messages::PlanSweep::new(8)).await;
    assert!(matches!(plan, Err(Error::InvalidConfig(_))), "{plan:?}");
    let forged = vshard_ghosts::messages::ApplyVerdicts::new(0, Vec::new());
    assert!(matches!(rt.request(ShardId(0), forged).await, Err(Error::InvalidConfig(_))));
    assert!(matches!(rt.request(ShardId(0), InjectPanic).await, Err(Error::InvalidConfig(_))));
    assert_eq!(rt.resolve(ShardId(0), "n").await.unwrap(), Some(ShardId(1)));
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn after_shutdown_every_call_says_closed_and_the_store_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ghosts.redb");
    let config = RuntimeConfig {
        shards: vec![ShardId(0)],
        arbiters: 0,
        metrics_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let rt = GhostRuntime::builder()
        .config(config.clone())
        .store(StoreChoice::Redb(path.clone()))
        .start()
        .unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    rt.shutdown().await.unwrap();
    assert_eq!(rt.resolve(ShardId(0), "n").await, Err(Error::Closed));
    let sweep = SweeperConfig::default();
    assert_eq!(rt.start_sweeper(Arc::new(DirectoryVerifier::new()), sweep), Err(Error::Closed));
    assert_eq!(rt.shutdown().await, Ok(()), "a second shutdown does nothing");
    // Shards on the calling arbiter too: the file is closed, so it opens again.
    let again = GhostRuntime::builder().config(config).store(StoreChoice::Redb(path)).start().unwrap();
    assert_eq!(again.resolve(ShardId(0), "n").await.unwrap(), Some(ShardId(1)));
    again.shutdown().await.unwrap();
}

#[actix::test]
async fn an_export_page_of_any_size_is_bounded_by_the_table() {
    let rt = GhostRuntime::builder().shards((0..2).map(ShardId)).store(StoreChoice::Memory).start().unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("n", 1, 1, 1)).await.unwrap();
    for limit in [usize::MAX, isize::MAX as usize, 1 << 40, 0] {
        let page = rt.export_page(ShardId(0), None, limit).await.unwrap();
        assert_eq!((page.records.len(), page.next), (1, None), "limit {limit}");
    }
    assert_eq!(rt.shard_stats(ShardId(0)).await.unwrap().restarts, 0, "no panic");
    rt.shutdown().await.unwrap();
}

/// Every operator call dropped part-way (its caller timed out or went away),
/// after 1 to 13 polls: the runtime still answers every call, a second stop
/// waits for the abandoned one (whose sweeper's thread is joined: it let go of
/// its verifier), a new sweeper starts and sweeps, and a shutdown dropped
/// part-way still shuts everything down.
#[actix::test]
async fn operator_calls_dropped_part_way_leave_the_runtime_working() {
    use support::abandon_after;
    for polls in [1, 2, 3, 5, 8, 13] {
        let verifier = Arc::new(DirectoryVerifier::new());
        verifier.record_move("n", ShardId(1), Epoch(1));
        let sweep = SweeperConfig { pass_interval: None, ..SweeperConfig::default() };
        let rt = GhostRuntime::builder()
            .shards((0..2).map(ShardId))
            .shard_config(shards(0, 5))
            .store(StoreChoice::Memory)
            .sweeper(verifier.clone(), sweep.clone())
            .start()
            .unwrap();
        let ghost = support::ghost("n", 1, 1, 1);
        rt.insert_ghost(ShardId(0), ghost).await.unwrap();
        abandon_after(rt.pause_sweeper(), polls).await;
        abandon_after(rt.resume_sweeper(), polls).await;
        abandon_after(rt.set_sweep_rate(50, 5), polls).await;
        abandon_after(rt.run_sweep_pass(), polls).await;
        abandon_after(rt.wait_until_swept(), polls).await;
        abandon_after(rt.sweep_totals(), polls).await;
        abandon_after(rt.export_page(ShardId(0), None, 10), polls).await;
        abandon_after(rt.shard_stats(ShardId(0)), polls).await;
        abandon_after(rt.stats(), polls).await;
        abandon_after(rt.revive_shard(ShardId(0)), polls).await;
        abandon_after(rt.flush(), polls).await;
        abandon_after(rt.export_metrics(), polls).await;
        abandon_after(rt.stop_sweeper(), polls).await;

        let _ = rt.stop_sweeper().await;
        assert_eq!(Arc::strong_count(&verifier), 1, "{polls} polls: the old sweeper is gone");
        assert_eq!(rt.sweep_totals().await.map(|_| ()), Err(Error::NoSweeper));
        rt.start_sweeper(verifier.clone(), sweep.clone()).unwrap();
        rt.pause_sweeper().await.unwrap();
        rt.resume_sweeper().await.unwrap();
        let pass = rt.run_sweep_pass().await.unwrap();
        assert_eq!((pass.complete, pass.counts.kept), (true, 1), "{polls} polls");
        assert_eq!(rt.revive_shard(ShardId(0)).await.unwrap(), ShardState::Ready);
        assert_eq!(rt.export_page(ShardId(0), None, 10).await.unwrap().records.len(), 1);
        rt.flush().await.unwrap();

        abandon_after(rt.shutdown(), polls).await;
        assert_eq!(rt.shutdown().await, Ok(()), "{polls} polls: waits for the abandoned shutdown");
        assert_eq!(rt.reader().resolve(ShardId(0), "n"), Err(Error::Closed));
        assert_eq!(rt.resolve(ShardId(0), "n").await, Err(Error::Closed));
        assert_eq!(Arc::strong_count(&verifier), 1, "{polls} polls: the sweeper is gone");
    }
}

#[actix::test]
async fn ready_says_which_shards_serve_and_which_failed_closed() {
    let store = Arc::new(Corrupt::default());
    let rt = GhostRuntime::builder()
        .shards((0..3).map(ShardId))
        .store(StoreChoice::Custom(store.clone()))
        .start()
        .unwrap();
    let health = rt.ready().await.unwrap();
    assert_eq!(health.ready, vec![ShardId(1), ShardId(2)]);
    assert!(health.loading.is_empty() && health.is_settled() && !health.is_ready());
    assert_eq!(health.failed.len(), 1);
    assert_eq!(health.failed[0].0, ShardId(0));
    assert!(matches!(health.failed[0].1, Error::ShardFailed { shard: ShardId(0), .. }), "{health}");
    assert!(
        health.to_string().starts_with("ready 2/3, loading [], failed [0: shard 0 failed closed"),
        "{health}"
    );
    assert_eq!(rt.health().unwrap(), health);
    store.repaired.store(true, Ordering::SeqCst);
    rt.revive_shard(ShardId(0)).await.unwrap();
    assert!(rt.ready().await.unwrap().is_ready());
    rt.shutdown().await.unwrap();
    assert_eq!(rt.health(), Err(Error::Closed));
}
