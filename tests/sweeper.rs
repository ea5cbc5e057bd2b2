//! SweeperActor through its public API: compare-and-set, moves, back-off, rate, busy shards, control.

use actix::prelude::*;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use vshard_ghosts::clock::{Clock, TokioClock};
use vshard_ghosts::messages::*;
use vshard_ghosts::store::*;
use vshard_ghosts::table::*;
use vshard_ghosts::testing::ManualClock;
use vshard_ghosts::*;

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use support::Shards;

const BACKOFF_BASE_MS: u64 = 1_000;
const BACKOFF_CAP_MS: u64 = 8_000;

fn shard_config() -> ShardConfig {
    let table = TableConfig {
        grace: Duration::ZERO,
        backoff_base: Duration::from_millis(BACKOFF_BASE_MS),
        backoff_cap: Duration::from_millis(BACKOFF_CAP_MS),
        ..TableConfig::default()
    };
    ShardConfig { table, mailbox_capacity: 4_096, fault_injection: true, ..ShardConfig::default() }
}

/// Shards on the current arbiter, all on `clock` (the tables' time and the
/// sweeper's bucket), with no sweeper yet.
fn start_shards(ids: &[u16], store: Arc<dyn GhostStore>, clock: &ManualClock) -> (Rc<GhostRuntime>, Shards) {
    start_shards_on(ids, store, Arc::new(clock.clone()))
}

fn start_shards_on(
    ids: &[u16],
    store: Arc<dyn GhostStore>,
    clock: Arc<dyn Clock>,
) -> (Rc<GhostRuntime>, Shards) {
    support::local_shards(ids, store, shard_config(), clock)
}

fn fast() -> SweeperConfig {
    support::fast_sweeper()
}

async fn insert(addr: &Addr<GhostActor>, id: &str, target: u16, refcount: u32, epoch: u64) {
    let m = InsertGhost { node_id: id.into(), target: ShardId(target), refcount, epoch: Epoch(epoch) };
    addr.send(m).await.unwrap().unwrap();
}

async fn inspect(addr: &Addr<GhostActor>, id: &str) -> Option<GhostInfo> {
    addr.send(Inspect { node_id: id.into() }).await.unwrap().unwrap()
}

/// Holds every verify until the test releases it, announcing each one.
struct Gated {
    inner: DirectoryVerifier,
    started: mpsc::UnboundedSender<Box<str>>,
    release: Arc<Semaphore>,
}

impl Verifier for Gated {
    fn verify(&self, r: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        let (inner, started, release) = (self.inner.clone(), self.started.clone(), self.release.clone());
        Box::pin(async move {
            let _ = started.send(r.node_id.clone());
            release.acquire().await.unwrap().forget();
            inner.verify(r).await
        })
    }
}

#[actix::test]
async fn an_edge_added_during_a_verify_keeps_the_ghost_despite_purge() {
    let (rt, shards) = start_shards(&[0], Arc::new(MemoryStore::new()), &ManualClock::new(1_000));
    let a = &shards[0].1;
    insert(a, "n", 1, 1, 1).await;
    // The directory does not know "n": it answers Purge.
    let (started, mut announced) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let verifier = Gated { inner: DirectoryVerifier::new(), started, release: release.clone() };
    rt.start_sweeper(Arc::new(verifier), fast()).unwrap();
    let pass = actix::spawn({
        let rt = rt.clone();
        async move { rt.run_sweep_pass().await }
    });
    assert_eq!(announced.recv().await.as_deref(), Some("n"), "the verify is in flight");
    let added = a.send(EdgeAdded { node_id: "n".into() }).await.unwrap();
    assert_eq!(added, Ok(EdgeOutcome::Applied { refcount: 2 }));
    release.add_permits(1);
    let report = pass.await.unwrap().unwrap();
    assert_eq!((report.counts.checked, report.counts.stale, report.counts.purged()), (1, 1, 0));
    assert_eq!(inspect(a, "n").await.map(|g| g.refcount), Some(2), "the ghost stays");
}

#[actix::test]
async fn a_node_that_moves_on_is_followed_and_kept_while_edges_point_at_it() {
    let (rt, shards) = start_shards(&[0, 1], Arc::new(MemoryStore::new()), &ManualClock::new(1_000));
    let (a, b) = (&shards[0].1, &shards[1].1);
    let dir = DirectoryVerifier::new();
    // n: A(0) → B(1) at epoch 1, then B → C(2) at epoch 2. A missed the retarget.
    insert(a, "n", 1, 2, 1).await;
    insert(b, "n", 2, 1, 2).await;
    dir.record_move("n", ShardId(1), Epoch(1));
    dir.record_move("n", ShardId(2), Epoch(2));
    dir.set_local_edges(ShardId(0), "n", Some(LocalEdges::unsequenced(2)));
    dir.set_local_edges(ShardId(1), "n", Some(LocalEdges::unsequenced(1)));
    rt.start_sweeper(Arc::new(dir.clone()), fast()).unwrap();

    let first = rt.run_sweep_pass().await.unwrap();
    assert_eq!((first.counts.redirected, first.counts.kept, first.counts.purged()), (1, 1, 0));
    let ghost = inspect(a, "n").await.unwrap();
    assert_eq!(
        (ghost.target_shard, ghost.epoch, ghost.refcount),
        (ShardId(2), Epoch(2), 2),
        "A's ghost points at C"
    );
    assert_eq!(a.send(Resolve { node_id: "n".into() }).await.unwrap(), Ok(Some(ShardId(2))));

    let second = rt.run_sweep_pass().await.unwrap();
    assert_eq!((second.counts.kept, second.counts.purged()), (2, 0), "verified at C, kept");
    // Only once A has no edge left does the ghost go: counted at the position
    // of A's edge log that A has applied (batch 1), so no removal is in flight.
    a.send(EdgeBatch { seq: Some(1), events: EdgeEvents::new() }).await.unwrap().unwrap();
    dir.set_local_edges(ShardId(0), "n", Some(LocalEdges::at(0, 1)));
    let third = rt.run_sweep_pass().await.unwrap();
    assert_eq!((third.counts.corrected, third.counts.purged()), (1, 0), "repaired to zero, not purged yet");
    assert_eq!(inspect(a, "n").await.map(|g| g.refcount), Some(0));
    // The next pass, past the grace period, purges it without a remote call.
    let fourth = rt.run_sweep_pass().await.unwrap();
    assert_eq!(fourth.counts.purged_refcount_zero, 1);
    assert_eq!(inspect(a, "n").await, None);
    assert!(inspect(b, "n").await.is_some());
}

#[actix::test]
async fn a_node_that_comes_back_is_reclaimed_and_nothing_purges_it() {
    let (rt, shards) = start_shards(&[0, 1], Arc::new(MemoryStore::new()), &ManualClock::new(1_000));
    let (a, b) = (&shards[0].1, &shards[1].1);
    let dir = DirectoryVerifier::new();
    // n: A(0) → B(1) at epoch 1, then back B → A at epoch 2; A never got the Reclaim.
    insert(a, "n", 1, 1, 1).await;
    insert(b, "n", 0, 1, 2).await;
    dir.record_move("n", ShardId(1), Epoch(1));
    dir.record_move("n", ShardId(0), Epoch(2));
    rt.start_sweeper(Arc::new(dir.clone()), fast()).unwrap();

    let first = rt.run_sweep_pass().await.unwrap();
    assert_eq!((first.counts.reclaimed, first.counts.kept, first.counts.purged()), (1, 1, 0));
    assert_eq!(inspect(a, "n").await, None, "A's ghost is gone");
    assert_eq!(a.send(Resolve { node_id: "n".into() }).await.unwrap(), Ok(None), "n is local to A");
    for _ in 0..2 {
        let again = rt.run_sweep_pass().await.unwrap();
        assert_eq!((again.counts.checked, again.counts.purged(), again.counts.reclaimed), (1, 0, 0));
    }
    assert_eq!(dir.home("n"), Some((ShardId(0), Epoch(2))), "n still lives at A");
    assert_eq!(inspect(b, "n").await.map(|g| g.target_shard), Some(ShardId(0)), "B still forwards to A");
}

/// Records which nodes were verified.
#[derive(Clone, Default)]
struct Recording {
    inner: DirectoryVerifier,
    seen: Arc<Mutex<Vec<Box<str>>>>,
}

impl Verifier for Recording {
    fn verify(&self, r: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        self.seen.lock().unwrap().push(r.node_id.clone());
        self.inner.verify(r)
    }
}

impl Recording {
    fn take(&self) -> Vec<Box<str>> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Steps the table clock by `step_ms`, sweeping at each step, until every
/// ghost was retried `n` times; answers each ghost's observed retry delays in
/// order (each up to one step late). Every verify must be inconclusive.
async fn retry_delays(
    rt: &GhostRuntime,
    rec: &Recording,
    clock: &ManualClock,
    ids: &[String],
    n: usize,
    step_ms: u64,
) -> HashMap<Box<str>, Vec<u64>> {
    let mut last: HashMap<Box<str>, u64> =
        ids.iter().map(|id| (id.as_str().into(), clock.now_ms())).collect();
    let mut delays: HashMap<Box<str>, Vec<u64>> = HashMap::new();
    while delays.len() < ids.len() || delays.values().any(|d| d.len() < n) {
        clock.advance(step_ms);
        let report = rt.run_sweep_pass().await.unwrap();
        assert_eq!(report.counts.inconclusive, report.counts.checked, "never anything but inconclusive");
        assert_eq!(report.counts.purged(), 0);
        let now = clock.now_ms();
        for id in rec.take() {
            let prev = last.insert(id.clone(), now).unwrap();
            delays.entry(id).or_default().push(now - prev);
        }
    }
    delays
}

#[actix::test]
async fn an_unreachable_target_backs_off_capped_with_jitter_then_is_verified() {
    let clock = ManualClock::new(1_000);
    let (rt, shards) = start_shards(&[0], Arc::new(MemoryStore::new()), &clock);
    let rec = Recording::default();
    let ids: Vec<String> = (0..32).map(|i| format!("n{i}")).collect();
    for id in &ids {
        insert(&shards[0].1, id, 1, 1, 1).await;
        rec.inner.record_move(id, ShardId(1), Epoch(1));
    }
    rec.inner.set_unreachable(ShardId(1), true);
    rt.start_sweeper(Arc::new(rec.clone()), fast()).unwrap();

    let first = rt.run_sweep_pass().await.unwrap();
    assert_eq!((first.counts.inconclusive, first.counts.verify_failures), (32, 32));
    rec.take();
    let step = 50;
    let delays = retry_delays(&rt, &rec, &clock, &ids, 6, step).await;
    for attempt in 0..6 {
        // Equal jitter: uniform in [d/2, d], d doubling from the base up to the cap.
        let d = (BACKOFF_BASE_MS << attempt).min(BACKOFF_CAP_MS);
        let observed: Vec<u64> = delays.values().map(|v| v[attempt]).collect();
        for &o in &observed {
            assert!(o >= d / 2 && o < d + step, "retry {attempt}: delay {o} ms outside [{}, {d}]", d / 2);
        }
        let distinct: std::collections::HashSet<_> = observed.iter().collect();
        assert!(distinct.len() > 1, "retry {attempt}: no jitter: {observed:?}");
    }
    for id in &ids {
        assert!(inspect(&shards[0].1, id).await.is_some(), "kept while unreachable");
    }

    rec.inner.set_unreachable(ShardId(1), false);
    clock.advance(BACKOFF_CAP_MS);
    let back = rt.run_sweep_pass().await.unwrap();
    assert_eq!((back.counts.kept, back.counts.inconclusive, back.counts.purged()), (32, 0, 0));
    // Keep reset the back-off: a new failure starts again from the base delay.
    rec.inner.set_unreachable(ShardId(1), true);
    rec.take();
    assert_eq!(rt.run_sweep_pass().await.unwrap().counts.inconclusive, 32);
    rec.take();
    for v in retry_delays(&rt, &rec, &clock, &ids, 1, step).await.values() {
        assert!(v[0] < BACKOFF_BASE_MS + step, "back-off was not reset: {v:?}");
    }
}

/// `n` ghosts spread over `shards` shards, straight into the store, each known to `dir`.
fn seeded(store: &MemoryStore, dir: &DirectoryVerifier, shards: u16, n: usize) {
    for shard in 0..shards {
        let mut t = GhostTable::new(ShardId(shard), shard_config().table).unwrap();
        for i in (shard as usize..n).step_by(shards as usize) {
            let id = format!("node-{i}");
            t.insert(&id, ShardId(shards), 1, Epoch(1), 0).unwrap();
            dir.record_move(&id, ShardId(shards), Epoch(1));
        }
        store.replace(&t).unwrap();
    }
}

#[actix::test]
async fn the_achieved_rate_is_within_five_percent_of_the_quota() {
    tokio::time::pause();
    let store = Arc::new(MemoryStore::new());
    let dir = DirectoryVerifier::new();
    seeded(&store, &dir, 4, 10_000);
    // Paused tokio time paces the bucket through the runtime's default clock.
    let (rt, shards) = start_shards_on(&[0, 1, 2, 3], store, Arc::new(TokioClock::new()));
    let config = SweeperConfig { verifies_per_second: 1_000, burst: 10, page_size: 512, ..fast() };
    // On this arbiter, so that the test's paused clock is the sweeper's.
    rt.start_sweeper(Arc::new(dir), config).unwrap();
    for (_, shard) in &shards {
        shard.send(GetStats).await.unwrap(); // loaded before the clock matters
    }
    for (quota, burst) in [(1_000.0, 10), (500.0, 5)] {
        rt.set_sweep_rate(quota as u32, burst).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let report = rt.run_sweep_pass().await.unwrap();
        let elapsed = t0.elapsed().as_secs_f64();
        assert_eq!((report.counts.checked, report.counts.kept), (10_000, 10_000));
        let achieved = 10_000.0 / elapsed;
        assert!((achieved / quota - 1.0).abs() < 0.05, "quota {quota}/s, achieved {achieved:.1}/s");
        assert!((report.duration.as_secs_f64() - elapsed).abs() < 0.01);
    }
    let totals = rt.sweep_totals().await.unwrap();
    assert_eq!((totals.passes, totals.counts.checked, totals.verifies_per_second), (2, 20_000, 500));
    assert!(rt.set_sweep_rate(0, 1).await.is_err());
}

/// A store whose commits wait while the gate is closed: a shard then builds a write backlog.
#[derive(Default)]
struct GatedStore {
    inner: MemoryStore,
    closed: Mutex<bool>,
    opened: Condvar,
    /// Commits that reached the store (waiting at the gate or done).
    entered: std::sync::atomic::AtomicUsize,
}

impl GatedStore {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
}

impl GhostStore for GatedStore {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        self.inner.load(shard, config)
    }
    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        self.entered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _open = self.opened.wait_while(self.closed.lock().unwrap(), |closed| *closed).unwrap();
        self.inner.commit(batch)
    }
    fn replace(&self, table: &GhostTable) -> Result<()> {
        self.inner.replace(table)
    }
    fn kind(&self) -> &'static str {
        "gated"
    }
}

/// Runs a hook, once, before verifying `node`.
struct Hooked {
    inner: DirectoryVerifier,
    node: &'static str,
    hook: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl Verifier for Hooked {
    fn verify(&self, r: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        let hook = if &*r.node_id == self.node { self.hook.lock().unwrap().take() } else { None };
        let inner = self.inner.verify(r);
        Box::pin(async move {
            if let Some(hook) = hook {
                hook.await;
            }
            inner.await
        })
    }
}

/// Queues `n` durable edge additions behind a commit held by the closed gate.
async fn make_busy(addr: &Addr<GhostActor>, n: usize) -> Vec<Request<GhostActor, EdgeAdded>> {
    let adds = (0..n).map(|_| addr.send(EdgeAdded { node_id: "a".into() })).collect();
    // Mailboxes are FIFO: once this answers, every add above is waiting for a commit.
    addr.send(Resolve { node_id: "a".into() }).await.unwrap().unwrap();
    adds
}

#[actix::test]
async fn a_busy_shard_is_deferred_and_swept_once_quiet() {
    let store = Arc::new(GatedStore::default());
    let (rt, shards) = start_shards(&[0, 1], store.clone(), &ManualClock::new(1_000));
    let (busy, quiet) = (shards[0].1.clone(), shards[1].1.clone());
    insert(&busy, "a", 2, 1, 1).await;
    insert(&quiet, "b", 2, 1, 1).await;
    let dir = DirectoryVerifier::new();
    dir.record_move("a", ShardId(2), Epoch(1));
    dir.record_move("b", ShardId(2), Epoch(1));
    // While "b" is verified, the backlog of shard 0 drains: it is quiet when revisited.
    let (gate, drained) = (store.clone(), busy.clone());
    let hook: BoxFuture<'static, ()> = Box::pin(async move {
        gate.set_closed(false);
        drained.send(Flush).await.unwrap().unwrap();
    });
    let verifier = Hooked { inner: dir, node: "b", hook: Mutex::new(Some(hook)) };
    let config = SweeperConfig {
        busy_pending_acks: 4,
        max_deferrals: 2,
        busy_retry: Duration::from_millis(5),
        ..fast()
    };
    rt.start_sweeper(Arc::new(verifier), config).unwrap();

    store.set_closed(true);
    let adds = make_busy(&busy, 8).await;
    assert!(busy.send(GetStats).await.unwrap().pending_acks > 4);
    let report = rt.run_sweep_pass().await.unwrap();
    let c = report.counts;
    assert_eq!((c.deferred_busy, c.skipped_busy, c.shards_swept, c.kept), (1, 0, 2, 2), "{c:?}");
    futures::future::join_all(adds).await;

    // A shard that stays busy is left to the next pass.
    store.set_closed(true);
    let adds = make_busy(&busy, 8).await;
    let report = rt.run_sweep_pass().await.unwrap();
    let c = report.counts;
    assert_eq!((c.deferred_busy, c.skipped_busy, c.shards_swept, c.checked), (3, 1, 1, 1), "{c:?}");
    assert!(report.complete);
    store.set_closed(false);
    futures::future::join_all(adds).await;
    busy.send(Flush).await.unwrap().unwrap();
    let c = rt.run_sweep_pass().await.unwrap().counts;
    assert_eq!((c.deferred_busy, c.shards_swept, c.kept), (0, 2, 2), "{c:?}");
    assert_eq!(inspect(&busy, "a").await.map(|g| g.refcount), Some(17));
}

#[actix::test]
async fn a_shard_slow_to_answer_is_deferred_by_round_trip_time() {
    tokio::time::pause();
    let (rt, shards) = start_shards(&[0, 1], Arc::new(MemoryStore::new()), &ManualClock::new(1_000));
    let dir = DirectoryVerifier::new();
    for (shard, addr) in &shards {
        insert(addr, &format!("n{shard}"), 2, 1, 1).await;
        dir.record_move(&format!("n{shard}"), ShardId(2), Epoch(1));
    }
    let config = SweeperConfig { busy_latency: Duration::from_millis(10), ..fast() };
    // On this arbiter, so that the round trips are measured on the test's paused clock.
    rt.start_sweeper(Arc::new(dir), config).unwrap();
    // A restart holds shard 0's mailbox for its reload delay (50 ms by default).
    let crashed = shards[0].1.send(InjectPanic).await.unwrap();
    assert_eq!(crashed, Err(Error::Panicked { shard: ShardId(0) }));
    let c = rt.run_sweep_pass().await.unwrap().counts;
    assert_eq!((c.deferred_busy, c.skipped_busy, c.shards_swept, c.kept), (1, 0, 2, 2), "{c:?}");
}

#[actix::test]
async fn every_outcome_is_counted_and_totals_add_up() {
    let (rt, shards) = start_shards(&[0], Arc::new(MemoryStore::new()), &ManualClock::new(1_000));
    let a = &shards[0].1;
    let dir = DirectoryVerifier::new();
    for (id, refcount) in [("zero", 0), ("gone", 1), ("drift", 5), ("fine", 1), ("moved", 1), ("home", 1)] {
        insert(a, id, 1, refcount, 1).await;
    }
    for id in ["zero", "drift", "fine"] {
        dir.record_move(id, ShardId(1), Epoch(1));
    }
    dir.record_move("moved", ShardId(2), Epoch(2));
    dir.record_move("home", ShardId(0), Epoch(2));
    a.send(EdgeBatch { seq: Some(7), events: EdgeEvents::new() }).await.unwrap().unwrap();
    dir.set_local_edges(ShardId(0), "drift", Some(LocalEdges::at(3, 7)));
    rt.start_sweeper(Arc::new(dir), fast()).unwrap();
    let c = rt.run_sweep_pass().await.unwrap().counts;
    assert_eq!(c.checked, 5, "the zero-refcount ghost needs no remote call");
    assert_eq!((c.purged_refcount_zero, c.purged_verified), (1, 1));
    assert_eq!((c.kept, c.corrected, c.redirected, c.reclaimed), (2, 1, 1, 1));
    assert_eq!(inspect(a, "drift").await.map(|g| g.refcount), Some(3));
    let c2 = rt.run_sweep_pass().await.unwrap().counts;
    let totals = rt.sweep_totals().await.unwrap();
    assert_eq!(totals.passes, 2);
    assert_eq!(totals.counts.checked, c.checked + c2.checked);
    assert_eq!(totals.counts.kept, c.kept + c2.kept);
}

#[actix::test]
async fn pause_holds_verifies_and_stop_waits_for_those_in_flight() {
    tokio::time::pause();
    let store = Arc::new(MemoryStore::new());
    let dir = DirectoryVerifier::new();
    seeded(&store, &dir, 2, 1_000);
    let (rt, _) = start_shards_on(&[0, 1], store, Arc::new(TokioClock::new()));
    dir.set_latency(ShardId(2), Duration::from_millis(500));
    let config = SweeperConfig { verifies_per_second: 100, burst: 1, max_in_flight: 8, ..fast() };
    rt.start_sweeper(Arc::new(dir.clone()), config).unwrap();

    rt.pause_sweeper().await.unwrap();
    let pass = actix::spawn({
        let rt = rt.clone();
        async move { rt.run_sweep_pass().await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = rt.sweep_totals().await.unwrap();
    assert!(stats.paused && stats.pass_running);
    assert_eq!(dir.calls(), 0, "no verify while paused");
    rt.resume_sweeper().await.unwrap();
    let report = pass.await.unwrap().unwrap();
    assert!(report.complete && report.counts.checked == 1_000);

    let pass = actix::spawn({
        let rt = rt.clone();
        async move { rt.run_sweep_pass().await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answered_before_stop = dir.calls() - 1_000;
    let t0 = tokio::time::Instant::now();
    let totals = rt.stop_sweeper().await.unwrap();
    assert!(t0.elapsed() <= SweeperConfig::default().verify_timeout, "stop is bounded by the timeout");
    let report = pass.await.unwrap().unwrap();
    assert!(!report.complete);
    let c = report.counts.checked;
    assert!(c > answered_before_stop && c < 1_000, "verifies in flight at the stop were awaited: {report:?}");
    assert_eq!(dir.calls() - 1_000, report.counts.checked, "every verify in flight was answered and applied");
    assert_eq!((totals.passes, totals.incomplete_passes), (2, 1));
    assert!(rt.sweep_totals().await.is_err(), "stopped");
}

#[actix::test]
async fn the_bucket_runs_on_the_runtimes_clock_not_on_tokio_time() {
    tokio::time::pause();
    let clock = ManualClock::new(1_000);
    let (rt, shards) = start_shards(&[0], Arc::new(MemoryStore::new()), &clock);
    let dir = DirectoryVerifier::new();
    for i in 0..5 {
        insert(&shards[0].1, &format!("n{i}"), 1, 1, 1).await;
        dir.record_move(&format!("n{i}"), ShardId(1), Epoch(1));
    }
    let config = SweeperConfig { verifies_per_second: 10, burst: 2, ..fast() };
    rt.start_sweeper(Arc::new(dir.clone()), config).unwrap();
    let pass = actix::spawn({
        let rt = rt.clone();
        async move { rt.run_sweep_pass().await }
    });
    // Ten seconds of tokio time would refill a tokio-timed bucket many times;
    // the manual clock has not moved, so only the burst is spent.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(dir.calls(), 2, "the burst, and no refill without the clock");
    // Each 100 ms of the clock refills one token (the bucket holds two).
    for _ in 0..3 {
        clock.advance(100);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let report = pass.await.unwrap().unwrap();
    assert_eq!((report.counts.kept, dir.calls()), (5, 5));
}

#[actix::test]
async fn periodic_passes_start_an_interval_apart_none_while_paused_and_one_on_an_overdue_resume() {
    let (rt, _shards) = start_shards(&[0, 1], Arc::new(MemoryStore::new()), &ManualClock::new(1_000));
    // Loaded first: a load waits on the writer's thread, and paused time would
    // jump ahead meanwhile.
    for shard in [0, 1] {
        rt.shard_stats(ShardId(shard)).await.unwrap();
    }
    tokio::time::pause();
    let config = SweeperConfig { pass_interval: Some(Duration::from_secs(10)), ..fast() };
    rt.start_sweeper(Arc::new(DirectoryVerifier::new()), config).unwrap();
    let passes = || async { rt.sweep_totals().await.unwrap().passes };
    tokio::time::sleep(Duration::from_millis(9_900)).await;
    assert_eq!(passes().await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(passes().await, 1);
    rt.pause_sweeper().await.unwrap();
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(passes().await, 1, "no pass while paused");
    // The next pass was due 90 s ago: it starts at the resume, not at a later tick.
    rt.resume_sweeper().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(passes().await, 2);
    tokio::time::sleep(Duration::from_millis(9_800)).await;
    assert_eq!(passes().await, 2, "the next one is an interval after the last start");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(passes().await, 3);
    rt.stop_sweeper().await.unwrap();
}

/// Polls `until` (bounded: the writer thread is real), a millisecond apart.
async fn eventually(what: &str, mut until: impl AsyncFnMut() -> bool) {
    for _ in 0..10_000 {
        if until().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("not within 10 s: {what}");
}

/// Shards 1..=6 each with one durable edge waiting for a commit: the first
/// commit holds the writer at the closed gate, the other five wait in its queue.
async fn queue_at_the_writer(shards: &Shards, store: &GatedStore) -> Vec<Request<GhostActor, EdgeAdded>> {
    for (_, addr) in &shards[1..] {
        insert(addr, "w", 9, 1, 1).await;
    }
    store.set_closed(true);
    let entered = store.entered.load(std::sync::atomic::Ordering::SeqCst);
    let mut adds = vec![shards[1].1.send(EdgeAdded { node_id: "w".into() })];
    eventually("the first commit at the gate", async || {
        store.entered.load(std::sync::atomic::Ordering::SeqCst) > entered
    })
    .await;
    adds.extend(shards[2..].iter().map(|(_, addr)| addr.send(EdgeAdded { node_id: "w".into() })));
    adds
}

#[actix::test]
async fn the_writer_queue_of_every_shard_slows_the_sweeper_whichever_shard_it_probes() {
    let store = Arc::new(GatedStore::default());
    // On real time: once the rate moves, the bucket refills only as the clock does.
    let (rt, shards) = start_shards_on(&[0, 1, 2, 3, 4, 5, 6], store.clone(), Arc::new(TokioClock::new()));
    insert(&shards[0].1, "a", 2, 1, 1).await;
    let dir = DirectoryVerifier::new();
    dir.record_move("a", ShardId(2), Epoch(1));
    // Kept as they are: a verdict that changes nothing needs no commit.
    dir.record_move("w", ShardId(9), Epoch(1));
    let config = SweeperConfig {
        busy_pending_acks: 4,
        verifies_per_second: 400,
        burst: 400,
        latency_target: Some(Duration::from_secs(30)),
        ..fast()
    };
    rt.start_sweeper(Arc::new(dir), config).unwrap();

    // Quiet: the rate stays where it was set.
    rt.run_sweep_pass().await.unwrap();
    assert_eq!(rt.sweep_totals().await.unwrap().effective_verifies_per_second, 400);

    let adds = queue_at_the_writer(&shards, &store).await;
    // Shard 0 waits for nothing itself; what it reports is the writer's queue.
    let probe = async || shards[0].1.send(PlanSweep::new(0)).await.unwrap().unwrap();
    eventually("five commits queued at the writer", async || probe().await.writer_queue == 5).await;
    assert_eq!(probe().await.pending_acks, 0);
    let c = rt.run_sweep_pass().await.unwrap().counts;
    let rate = rt.sweep_totals().await.unwrap().effective_verifies_per_second;
    store.set_closed(false);
    for r in futures::future::join_all(adds).await {
        r.unwrap().unwrap();
    }
    assert_eq!(c.kept, 7, "{c:?}");
    assert_eq!(rate, 200, "5 writes queued, over the 4 allowed: halved");
}
