//! `GhostReader`: never wrong, only sometimes unavailable. Reader threads
//! resolve while the shard applies batches, retargets, reclaims, reloads after
//! panics and fails closed; acknowledged writes are seen across threads; a
//! shard without a table is an error, never `None`.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vshard_ghosts::messages::*;
use vshard_ghosts::store::*;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::testing::ManualClock;
use vshard_ghosts::*;

#[allow(dead_code)] // each test file uses a different part of it
mod support;

/// A memory store whose loads find corrupt bytes once `corrupt` is set, that
/// can hold loads until opened, and can grant a claim.
#[derive(Debug, Default)]
struct TestStore {
    inner: MemoryStore,
    corrupt: AtomicBool,
    /// While set, loads wait for a message on it (one per load).
    gate: Mutex<Option<mpsc::Receiver<()>>>,
    claim: Mutex<Option<ClaimWatch>>,
}

impl GhostStore for TestStore {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        if let Some(gate) = &*self.gate.lock().unwrap() {
            gate.recv().unwrap();
        }
        if self.corrupt.load(Ordering::SeqCst) {
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
        "test"
    }
    fn claim(&self, _: ShardId) -> Option<ClaimWatch> {
        self.claim.lock().unwrap().clone()
    }
}

fn shard_config() -> ShardConfig {
    ShardConfig {
        fault_injection: true,
        // Reloads at once and as often as the test panics the shard.
        restart: RestartPolicy {
            max_restarts: 100_000,
            backoff_base: Duration::from_millis(1),
            backoff_cap: Duration::from_millis(1),
            ..RestartPolicy::default()
        },
        ..ShardConfig::default()
    }
}

/// Shards 0 and 1 on an arbiter of their own (so the readers, the driver and
/// the actors run on different threads), over `store`.
fn runtime(store: Arc<TestStore>, config: ShardConfig) -> GhostRuntime {
    support::local_runtime(store, [ShardId(0), ShardId(1)], config, &ManualClock::new(0), 0)
        .arbiters(1)
        .start()
        .unwrap()
}

const ROUNDS: u32 = 240;
const READERS: usize = 3;
/// The moving ghost's first target; round `r` retargets it to `FIRST_TARGET + 1 + r`.
const FIRST_TARGET: u32 = 100;

/// What the driver has had acknowledged so far, published for the readers
/// after each acknowledgement (Release), read before each resolve (Acquire).
#[derive(Default)]
struct Acked {
    /// Ghosts `p0..p{n}` are inserted, never removed.
    permanent: AtomicU32,
    /// The lowest target the moving ghost `m` may have.
    moved_to: AtomicU32,
    /// Ghosts `r0..r{n}` were reclaimed: never a ghost again.
    reclaimed: AtomicU32,
    /// The store went corrupt: from now on the shard may fail closed.
    failing: AtomicBool,
    /// The shard answered that it failed closed.
    failed: AtomicBool,
    finished: AtomicBool,
}

/// What one reader saw, for the assertions that runs made progress.
#[derive(Debug, Default)]
struct Seen {
    answers: u64,
    loading: u64,
    failed: u64,
}

fn check_err(e: &Error, acked: &Acked, seen: &mut Seen, what: &str) {
    match e {
        Error::ShardLoading { shard: ShardId(0) } => seen.loading += 1,
        // Checked after the resolve: the corruption was set before any such answer.
        Error::ShardFailed { shard: ShardId(0), cause } if acked.failing.load(Ordering::Acquire) => {
            assert!(matches!(**cause, Error::Decode(_)), "{what}: {e}");
            seen.failed += 1;
        }
        e => panic!("{what}: unexpected {e:?}"),
    }
}

/// One pass of every check a reader makes, each against what was
/// acknowledged before it started.
fn check_once(reader: &GhostReader, acked: &Acked, rng: &mut fastrand::Rng, seen: &mut Seen) {
    let failed = acked.failed.load(Ordering::Acquire);
    let mut answer = |id: &str, ok: &dyn Fn(Option<ShardId>) -> bool| match reader.resolve(ShardId(0), id) {
        Ok(a) => {
            assert!(!failed, "{id}: answered {a:?} after the shard failed closed");
            assert!(ok(a), "{id}: wrong answer {a:?}");
            seen.answers += 1;
        }
        Err(e) => check_err(&e, acked, seen, id),
    };
    // An acknowledged ghost that is never removed always resolves, to its target.
    let n = acked.permanent.load(Ordering::Acquire);
    if n > 0 {
        for i in [n - 1, rng.u32(0..n)] {
            answer(&format!("p{i}"), &|a| a == Some(ShardId(1)));
        }
    }
    // A node never inserted never resolves.
    answer(&format!("never{}", rng.u32(0..ROUNDS)), &|a| a.is_none());
    // An acknowledged reclaim is never undone.
    let n = acked.reclaimed.load(Ordering::Acquire);
    if n > 0 {
        answer(&format!("r{}", rng.u32(0..n)), &|a| a.is_none());
    }
    // The moving ghost is always there, at its last acknowledged target or a later one.
    let at_least = acked.moved_to.load(Ordering::Acquire);
    if at_least > 0 {
        answer("m", &|a| a.is_some_and(|t| u32::from(t.get()) >= at_least));
    }
    // `b{i}` is inserted after `a{i}` is acknowledged, and one batch removes
    // both (`a` first): seeing `b` without `a` is a half-applied batch.
    let i = rng.u32(0..ROUNDS);
    let (a, b) = (format!("a{i}"), format!("b{i}"));
    match reader.resolve_many(&[(ShardId(0), &a), (ShardId(0), &b)]) {
        Ok(pair) => {
            assert!(!failed, "{a}: answered after the shard failed closed");
            assert!(!matches!(pair[..], [None, Some(_)]), "pair {i} half removed: {pair:?}");
            assert!(pair.iter().all(|t| t.is_none() || *t == Some(ShardId(2))), "pair {i}: {pair:?}");
            seen.answers += 1;
        }
        Err(e) => check_err(&e, acked, seen, &a),
    }
    // The other shard is never disturbed.
    assert_eq!(reader.resolve(ShardId(1), "other"), Ok(Some(ShardId(0))));
}

/// A barrier that a failed party breaks instead of leaving the others
/// waiting for ever: a reader that panics fails the test, never hangs it.
#[derive(Default)]
struct Rendezvous {
    arrived: AtomicUsize,
    broken: AtomicBool,
}

impl Rendezvous {
    /// Waits until `parties` have arrived `round` times each (counting from 1).
    fn wait(&self, parties: usize, round: usize) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        while self.arrived.load(Ordering::Acquire) < parties * round {
            assert!(!self.broken.load(Ordering::Acquire), "another party failed");
            std::thread::yield_now();
        }
    }
}

/// Breaks the rendezvous and ends the run if its thread panics.
struct BreakOnPanic(Arc<Acked>, Arc<Rendezvous>);

impl Drop for BreakOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.broken.store(true, Ordering::Release);
            self.0.finished.store(true, Ordering::Release);
        }
    }
}

/// Waits at `verify` off the actix thread.
async fn meet(verify: &Arc<Rendezvous>, round: usize) {
    let verify = verify.clone();
    tokio::task::spawn_blocking(move || verify.wait(READERS + 1, round)).await.unwrap();
}

#[actix::test]
async fn readers_never_see_a_wrong_or_half_applied_state() {
    let store = Arc::new(TestStore::default());
    let rt = runtime(store.clone(), shard_config());
    rt.insert_ghost(ShardId(1), support::ghost("other", 0, 1, 1)).await.unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("m", FIRST_TARGET as u16, 1, 1)).await.unwrap();
    let acked = Arc::new(Acked::default());
    acked.moved_to.store(FIRST_TARGET, Ordering::Release);
    // The readers check everything once more, all together, before the corruption.
    let verify = Arc::new(Rendezvous::default());
    let _driver = BreakOnPanic(acked.clone(), verify.clone());
    let readers: Vec<_> = (0..READERS)
        .map(|k| {
            let (reader, acked, verify) = (rt.reader(), acked.clone(), verify.clone());
            std::thread::spawn(move || {
                let _failed = BreakOnPanic(acked.clone(), verify.clone());
                let mut rng = fastrand::Rng::with_seed(k as u64);
                let mut seen = Seen::default();
                let mut verified = false;
                while !acked.finished.load(Ordering::Acquire) {
                    if !verified && acked.permanent.load(Ordering::Acquire) == ROUNDS {
                        verify.wait(READERS + 1, 1); // the shard is ready and stays so until the next wait
                        for i in 0..ROUNDS {
                            assert_eq!(reader.resolve(ShardId(0), &format!("p{i}")), Ok(Some(ShardId(1))));
                            assert_eq!(reader.resolve(ShardId(0), &format!("r{i}")), Ok(None));
                            assert_eq!(reader.resolve(ShardId(0), &format!("never{i}")), Ok(None));
                        }
                        let last = Some(ShardId((FIRST_TARGET + ROUNDS) as u16));
                        assert_eq!(reader.resolve(ShardId(0), "m"), Ok(last));
                        verify.wait(READERS + 1, 2);
                        verified = true;
                    }
                    check_once(&reader, &acked, &mut rng, &mut seen);
                }
                // Failed closed for good: an error for every id, never `None`.
                for id in ["p0", "never0", "m", "a0"] {
                    let e = reader.resolve(ShardId(0), id).unwrap_err();
                    assert!(matches!(e, Error::ShardFailed { shard: ShardId(0), .. }), "{e}");
                }
                assert!(verified);
                seen
            })
        })
        .collect();

    for r in 0..ROUNDS {
        let p = format!("p{r}");
        rt.insert_ghost(ShardId(0), support::ghost(&p, 1, 1_000, 1)).await.unwrap();
        acked.permanent.store(r + 1, Ordering::Release);
        let (a, b) = (format!("a{r}"), format!("b{r}"));
        rt.insert_ghost(ShardId(0), support::ghost(&a, 2, 1, 1)).await.unwrap();
        rt.insert_ghost(ShardId(0), support::ghost(&b, 2, 1, 1)).await.unwrap();
        // The pair's last edges go in one batch; every other one also adds an
        // edge, so that it is applied on the durable path as well as the lazy one.
        let mut events = EdgeEvents::new();
        events.removed(&a);
        events.removed(&b);
        if r % 2 == 1 {
            events.added(&p);
        }
        let out = rt.edge_batch(ShardId(0), None, events).await.unwrap();
        assert_eq!(out.purged, 2, "round {r}");
        let to = FIRST_TARGET + 1 + r;
        let moved = rt.retarget(
            ShardId(0),
            Retarget { node_id: "m".into(), target: ShardId(to as u16), epoch: Epoch(u64::from(r) + 2) },
        );
        assert_eq!(moved.await.unwrap(), MoveOutcome::Applied);
        acked.moved_to.store(to, Ordering::Release);
        let rid = format!("r{r}");
        rt.insert_ghost(ShardId(0), support::ghost(&rid, 3, 1, 1)).await.unwrap();
        assert_eq!(rt.reclaim(ShardId(0), &rid, Epoch(2)).await.unwrap(), MoveOutcome::Applied);
        acked.reclaimed.store(r + 1, Ordering::Release);
        if r % 8 == 7 {
            // The shard restarts and reloads what is durable.
            assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
        }
    }
    rt.flush().await.unwrap(); // queued behind any reload: the shard is ready
    meet(&verify, 1).await;
    meet(&verify, 2).await;

    store.corrupt.store(true, Ordering::SeqCst);
    acked.failing.store(true, Ordering::Release);
    assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
    assert!(matches!(rt.shard_stats(ShardId(0)).await.unwrap().state, ShardState::FailedClosed(_)));
    acked.failed.store(true, Ordering::Release);
    acked.finished.store(true, Ordering::Release);
    for r in readers {
        let seen = r.join().unwrap();
        assert!(seen.answers > 0, "{seen:?}");
    }
    rt.shutdown().await.unwrap();
}

/// Ghosts of the batch that dies half done: more than one warm chunk (1024),
/// so that its second part is warmed under the write lock.
const WIDE: usize = 1500;

/// What a reader may see of the wide batch: every ghost present, every ghost
/// gone (only once the whole batch may have been acknowledged), or an error
/// while the shard reloads; never some gone and some present.
fn check_wide(reader: &GhostReader, sample: &[(ShardId, &str)], acked_gone: &AtomicBool) -> bool {
    match reader.resolve_many(sample) {
        Ok(answers) if answers.iter().all(|a| *a == Some(ShardId(1))) => true,
        Ok(answers) if answers.iter().all(Option::is_none) => {
            // Loaded after the resolve: the flag is set before the batch is sent.
            let gone_allowed = acked_gone.load(Ordering::Acquire);
            assert!(gone_allowed, "the wide batch's removals were seen before it was ever applied whole");
            true
        }
        Ok(answers) => panic!("a half-applied batch: {answers:?}"),
        Err(Error::ShardLoading { shard: ShardId(0) }) => false,
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[actix::test]
async fn a_batch_that_panics_half_applied_is_never_seen_half() {
    let rt = runtime(Arc::new(TestStore::default()), shard_config());
    let ids: Vec<String> = (0..WIDE).map(|i| format!("w{i}")).collect();
    for chunk in ids.chunks(100) {
        let inserts = chunk.iter().map(|id| rt.insert_ghost(ShardId(0), support::ghost(id, 1, 1, 1)));
        for r in futures::future::join_all(inserts).await {
            assert_eq!(r.unwrap(), InsertOutcome::Inserted);
        }
    }
    // One edge removal per ghost, each its last edge: the batch purges all.
    let mut removals = EdgeEvents::new();
    ids.iter().for_each(|id| removals.removed(id));
    let (finished, gone) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (reader, ids, finished, gone) = (rt.reader(), ids.clone(), finished.clone(), gone.clone());
            std::thread::spawn(move || {
                // The first and last of each part of the batch, in one chunk
                // of a read lock: one state of the shard.
                let sample: Vec<(ShardId, &str)> = [0, 1, 699, 700, 1023, 1024, 1200, WIDE - 1]
                    .iter()
                    .map(|&i| (ShardId(0), &*ids[i]))
                    .collect();
                let (mut answers, mut loading) = (0u64, 0u64);
                while !finished.load(Ordering::Acquire) {
                    if check_wide(&reader, &sample, &gone) { answers += 1 } else { loading += 1 }
                }
                (answers, loading)
            })
        })
        .collect();
    for round in 0..40 {
        let at =
            [BatchPanicAt::Warm, BatchPanicAt::After(1), BatchPanicAt::After(700), BatchPanicAt::After(1200)]
                [round % 4];
        let died = rt.request(ShardId(0), InjectBatchPanic { events: removals.clone(), at }).await;
        assert_eq!(died, Err(Error::Panicked { shard: ShardId(0) }), "round {round}, {at:?}");
        // Queued behind the reload: every ghost is back, as the store has it.
        assert_eq!(rt.resolve(ShardId(0), &ids[WIDE - 1]).await, Ok(Some(ShardId(1))), "round {round}");
        let back = rt.reader().resolve_many(&ids.iter().map(|id| (ShardId(0), &**id)).collect::<Vec<_>>());
        assert!(back.unwrap().iter().all(|a| *a == Some(ShardId(1))), "round {round}");
    }
    // And applied for real: whole, in one step, on both sides of the chunk.
    gone.store(true, Ordering::Release);
    let out = rt.edge_batch(ShardId(0), None, removals).await.unwrap();
    assert_eq!((out.applied, out.purged, out.unknown), (WIDE as u32, WIDE as u32, 0));
    assert!(ids.iter().all(|id| rt.reader().resolve(ShardId(0), id) == Ok(None)));
    finished.store(true, Ordering::Release);
    for r in readers {
        let (answers, loading) = r.join().unwrap();
        assert!(answers > 0, "a reader saw the shard ready ({loading} loading)");
    }
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn a_write_acknowledged_on_one_thread_is_seen_by_a_resolve_started_after_on_another() {
    enum Step {
        Inserted(u32),
        Removed(u32),
        Retargeted(u32),
    }
    let rt = runtime(Arc::new(TestStore::default()), shard_config());
    // Each reader answers every step before the driver writes again: a later
    // write would make the earlier one's check meaningless.
    let (done_tx, done) = mpsc::channel::<()>();
    let (txs, threads): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<Step>();
            let (reader, done) = (rt.reader(), done_tx.clone());
            let t = std::thread::spawn(move || {
                for step in rx {
                    match step {
                        Step::Inserted(i) => {
                            assert_eq!(reader.resolve(ShardId(0), &format!("w{i}")), Ok(Some(ShardId(1))))
                        }
                        Step::Removed(i) => {
                            assert_eq!(reader.resolve(ShardId(0), &format!("w{i}")), Ok(None))
                        }
                        Step::Retargeted(t) => assert_eq!(
                            reader.resolve_many(&[(ShardId(0), "m"), (ShardId(1), "x")]),
                            Ok(vec![Some(ShardId(t as u16)), None])
                        ),
                    }
                    done.send(()).unwrap();
                }
            });
            (tx, t)
        })
        .unzip();
    // Blocks the test's thread briefly; the shard and the store writer run on others.
    let tell = |step: &dyn Fn() -> Step| {
        txs.iter().for_each(|tx| tx.send(step()).unwrap());
        txs.iter().for_each(|_| done.recv().unwrap());
    };
    rt.insert_ghost(ShardId(0), support::ghost("m", 2, 1, 1)).await.unwrap();
    for i in 0..400u32 {
        let id = format!("w{i}");
        rt.insert_ghost(ShardId(0), support::ghost(&id, 1, 1, 1)).await.unwrap();
        tell(&|| Step::Inserted(i));
        // Acknowledged at once (the removal rides the next flush): still seen.
        assert_eq!(rt.edge_removed(ShardId(0), &id).await.unwrap(), EdgeOutcome::Purged);
        tell(&|| Step::Removed(i));
        let to = 3 + (i % 100);
        let m = Retarget { node_id: "m".into(), target: ShardId(to as u16), epoch: Epoch(u64::from(i) + 2) };
        assert_eq!(rt.retarget(ShardId(0), m).await.unwrap(), MoveOutcome::Applied);
        tell(&|| Step::Retargeted(to));
    }
    drop(txs);
    for t in threads {
        t.join().unwrap();
    }
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn a_loading_shard_is_an_error_not_none() {
    let store = Arc::new(TestStore::default());
    let (open, gate) = mpsc::channel();
    *store.gate.lock().unwrap() = Some(gate);
    let rt = runtime(store.clone(), shard_config());
    let reader = rt.reader();
    // Neither shard can have loaded: their loads wait for the gate.
    assert_eq!(reader.resolve(ShardId(0), "a"), Err(Error::ShardLoading { shard: ShardId(0) }));
    assert_eq!(reader.resolve_many(&[(ShardId(1), "a")]), Err(Error::ShardLoading { shard: ShardId(1) }));
    assert_eq!(
        reader.resolve_many(&[(ShardId(0), "a"), (ShardId(1), "b")]),
        Err(Error::ShardLoading { shard: ShardId(0) })
    );
    open.send(()).unwrap();
    open.send(()).unwrap();
    rt.insert_ghost(ShardId(0), support::ghost("a", 1, 1, 1)).await.unwrap();
    assert_eq!(reader.resolve(ShardId(0), "a"), Ok(Some(ShardId(1))));
    // A reload after a panic: loading again until the gate lets it through.
    assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
    assert_eq!(reader.resolve(ShardId(0), "a"), Err(Error::ShardLoading { shard: ShardId(0) }));
    assert_eq!(reader.resolve(ShardId(1), "a"), Ok(None), "the other shard serves meanwhile");
    open.send(()).unwrap();
    rt.flush().await.unwrap();
    assert_eq!(reader.resolve(ShardId(0), "a"), Ok(Some(ShardId(1))));
    *store.gate.lock().unwrap() = None;
    rt.shutdown().await.unwrap();
    // The runtime is shut down: no reader answers from it again.
    assert_eq!(reader.resolve(ShardId(0), "a"), Err(Error::Closed));
    assert_eq!(reader.resolve_many(&[(ShardId(1), "a")]), Err(Error::Closed));
}

#[actix::test]
async fn failed_closed_down_fenced_and_unknown_shards_are_errors() {
    let store = Arc::new(TestStore::default());
    store.inner.replace(&GhostTable::new(ShardId(0), TableConfig::default()).unwrap()).unwrap();
    store.corrupt.store(true, Ordering::SeqCst);
    let rt = runtime(store.clone(), shard_config());
    let reader = rt.reader();
    assert!(matches!(rt.shard_stats(ShardId(0)).await.unwrap().state, ShardState::FailedClosed(_)));
    let e = reader.resolve(ShardId(0), "a").unwrap_err();
    assert!(
        matches!(&e, Error::ShardFailed { shard: ShardId(0), cause } if matches!(**cause, Error::Decode(_))),
        "{e}"
    );
    let e = reader.resolve_many(&[(ShardId(1), "a"), (ShardId(0), "a")]).unwrap_err();
    assert!(matches!(e, Error::ShardFailed { shard: ShardId(0), .. }), "{e}");
    assert_eq!(reader.resolve(ShardId(7), "a"), Err(Error::UnknownShard(ShardId(7))));
    assert_eq!(reader.resolve_many(&[(ShardId(0), "a"), (ShardId(7), "a")]).unwrap_err(), e);
    rt.shutdown().await.unwrap();

    // Down: restarted more often than the policy allows.
    store.corrupt.store(false, Ordering::SeqCst);
    let config = ShardConfig {
        restart: RestartPolicy { max_restarts: 0, ..RestartPolicy::default() },
        ..shard_config()
    };
    let rt = runtime(store.clone(), config);
    let reader = rt.reader();
    rt.insert_ghost(ShardId(0), support::ghost("a", 1, 1, 1)).await.unwrap();
    assert_eq!(rt.request(ShardId(0), InjectPanic).await, Err(Error::Panicked { shard: ShardId(0) }));
    assert_eq!(rt.shard_stats(ShardId(0)).await.unwrap().state, ShardState::Down);
    assert_eq!(reader.resolve(ShardId(0), "a"), Err(Error::ShardDown { shard: ShardId(0), restarts: 1 }));
    rt.shutdown().await.unwrap();

    // Fenced: the claim lapses behind the shard's back. The reader refuses at
    // once, before the actor has had a message to notice it.
    let watch = ClaimWatch::until(Instant::now() + Duration::from_secs(3_600));
    *store.claim.lock().unwrap() = Some(watch.clone());
    let rt = runtime(store.clone(), shard_config());
    let reader = rt.reader();
    rt.flush().await.unwrap();
    assert_eq!(reader.resolve(ShardId(0), "a"), Ok(Some(ShardId(1))));
    watch.revoke();
    assert!(matches!(reader.resolve(ShardId(0), "a"), Err(Error::Fenced { shard: ShardId(0), .. })));
    assert!(matches!(rt.resolve(ShardId(0), "a").await, Err(Error::Fenced { shard: ShardId(0), .. })));
    assert!(matches!(
        reader.resolve_many(&[(ShardId(0), "a")]),
        Err(Error::Fenced { shard: ShardId(0), .. })
    ));
    rt.shutdown().await.unwrap();
}
