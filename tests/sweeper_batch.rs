//! The sweeper with a batching `Verifier`: batch sizes and concurrency under
//! `max_in_flight`, one token per ghost, and a batch that hangs, panics, fails
//! or answers garbage is `Inconclusive` for each of its ghosts, never a purge.

use futures::FutureExt;
use futures::future::BoxFuture;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vshard_ghosts::clock::TokioClock;
use vshard_ghosts::messages::*;
use vshard_ghosts::store::*;
use vshard_ghosts::sweep::PassReport;
use vshard_ghosts::table::*;
use vshard_ghosts::*;

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use support::Shards;

fn shard_config() -> ShardConfig {
    let table = TableConfig { grace: Duration::ZERO, ..TableConfig::default() };
    ShardConfig { table, mailbox_capacity: 4_096, ..ShardConfig::default() }
}

/// Shards on the calling arbiter whose tables and sweeper's bucket run on
/// tokio's (paused) time, which the tests move by sleeping.
fn start_shards(ids: &[u16], store: Arc<dyn GhostStore>) -> (Rc<GhostRuntime>, Shards) {
    support::local_shards(ids, store, shard_config(), Arc::new(TokioClock::new()))
}

fn fast() -> SweeperConfig {
    support::fast_sweeper()
}

/// `n` ghosts spread over `shards` shards, each pointing at shard `shards`
/// and known to `dir` there, straight into the store.
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

/// How the test verifier's `verify_batch` behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers from the directory.
    Answer,
    /// Never answers.
    Hang,
    /// Answers one result too few, all `Purge`.
    Short,
    /// Panics.
    Panic,
    /// Fails every other request (an unreachable peer among several).
    FailOdd,
    /// Answers through the trait's default `verify_batch` (one `verify` each).
    Default,
}

/// A batching verifier over a directory that records what it was asked.
#[derive(Clone)]
struct Batching {
    dir: DirectoryVerifier,
    max_batch: usize,
    mode: Mode,
    /// Sizes of the batches asked, in order.
    batches: Arc<Mutex<Vec<usize>>>,
    /// Ghosts in flight now, and the most at once.
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    singles: Arc<AtomicUsize>,
}

impl Batching {
    fn new(dir: DirectoryVerifier, max_batch: usize, mode: Mode) -> Self {
        Self {
            dir,
            max_batch,
            mode,
            batches: Default::default(),
            in_flight: Default::default(),
            peak: Default::default(),
            singles: Default::default(),
        }
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

impl Verifier for Batching {
    fn verify(&self, r: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        self.singles.fetch_add(1, Ordering::Relaxed);
        self.dir.verify(r)
    }

    fn verify_batch(&self, requests: Vec<VerifyRequest>) -> BoxFuture<'static, Vec<Result<Verdict>>> {
        let n = requests.len();
        self.batches.lock().unwrap().push(n);
        let now = self.in_flight.fetch_add(n, Ordering::SeqCst) + n;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let this = self.clone();
        async move {
            // A yield, so that concurrent batches overlap and the peak is real.
            tokio::task::yield_now().await;
            let answers = match this.mode {
                Mode::Answer => {
                    futures::future::join_all(requests.into_iter().map(|r| this.dir.verify(r))).await
                }
                Mode::Hang => futures::future::pending().await,
                Mode::Short => (1..n).map(|_| Ok(Verdict::Purge)).collect(),
                Mode::Panic => panic!("verifier bug"),
                Mode::FailOdd => {
                    let mut out = Vec::with_capacity(n);
                    for (i, r) in requests.into_iter().enumerate() {
                        out.push(if i % 2 == 1 {
                            Err(Error::TargetUnreachable { shard: r.target_shard })
                        } else {
                            this.dir.verify(r).await
                        });
                    }
                    out
                }
                Mode::Default => {
                    let plain = Plain(this.dir.clone());
                    plain.verify_batch(requests).await
                }
            };
            this.in_flight.fetch_sub(n, Ordering::SeqCst);
            answers
        }
        .boxed()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

/// A verifier with only the single form: its `verify_batch` is the trait's default.
struct Plain(DirectoryVerifier);

impl Verifier for Plain {
    fn verify(&self, r: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        self.0.verify(r)
    }
}

async fn loaded(shards: &Shards) {
    for (_, shard) in shards {
        shard.send(GetStats).await.unwrap();
    }
}

#[actix::test]
async fn a_page_goes_out_in_batches_bounded_by_max_in_flight() {
    let store = Arc::new(MemoryStore::new());
    let dir = DirectoryVerifier::new();
    seeded(&store, &dir, 1, 1_000);
    let (rt, shards) = start_shards(&[0], store);
    loaded(&shards).await;
    let v = Batching::new(dir, 64, Mode::Answer);
    let config = SweeperConfig { max_in_flight: 128, page_size: 256, ..fast() };
    rt.start_sweeper(Arc::new(v.clone()), config).unwrap();
    let report = rt.run_sweep_pass().await.unwrap();
    assert_eq!((report.counts.checked, report.counts.kept, report.counts.verify_failures), (1_000, 1_000, 0));
    // Pages of 256: four batches of 64 each, the last page's 232 as 64+64+64+40.
    let batches = v.batches();
    assert_eq!(batches.iter().sum::<usize>(), 1_000);
    assert_eq!(batches.len(), 16, "{batches:?}");
    assert!(batches.iter().all(|&b| b <= 64), "{batches:?}");
    let peak = v.peak.load(Ordering::SeqCst);
    assert!(
        peak <= 128 && peak > 64,
        "max_in_flight bounds the ghosts in flight, and two batches ran: {peak}"
    );
    assert_eq!(v.singles.load(Ordering::Relaxed), 0, "no single verify while batching");
}

#[actix::test]
async fn a_batch_never_exceeds_max_in_flight() {
    let store = Arc::new(MemoryStore::new());
    let dir = DirectoryVerifier::new();
    seeded(&store, &dir, 2, 300);
    let (rt, shards) = start_shards(&[0, 1], store);
    loaded(&shards).await;
    let v = Batching::new(dir, 10_000, Mode::Answer);
    rt.start_sweeper(Arc::new(v.clone()), SweeperConfig { max_in_flight: 16, ..fast() }).unwrap();
    assert_eq!(rt.run_sweep_pass().await.unwrap().counts.kept, 300);
    assert!(v.batches().iter().all(|&b| b <= 16));
    assert!(v.peak.load(Ordering::SeqCst) <= 16);
}

#[actix::test]
async fn batches_take_one_token_per_ghost() {
    tokio::time::pause();
    let store = Arc::new(MemoryStore::new());
    let dir = DirectoryVerifier::new();
    seeded(&store, &dir, 4, 10_000);
    let (rt, shards) = start_shards(&[0, 1, 2, 3], store);
    loaded(&shards).await;
    let v = Batching::new(dir, 100, Mode::Answer);
    let config =
        SweeperConfig { verifies_per_second: 1_000, burst: 10, max_in_flight: 200, page_size: 512, ..fast() };
    rt.start_sweeper(Arc::new(v.clone()), config).unwrap();
    let t0 = tokio::time::Instant::now();
    let report = rt.run_sweep_pass().await.unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    assert_eq!(report.counts.kept, 10_000);
    let achieved = 10_000.0 / elapsed;
    assert!((achieved / 1_000.0 - 1.0).abs() < 0.05, "quota 1000/s, achieved {achieved:.1}/s");
    let batches = v.batches();
    assert!(batches.len() <= 10_000 / 100 + 4 * 20, "batched: {} calls", batches.len());
}

/// Sweeps `n` ghosts through a verifier in `mode`; returns the pass report.
async fn sweep_in(mode: Mode, n: usize) -> (PassReport, Shards, Batching) {
    tokio::time::pause();
    let store = Arc::new(MemoryStore::new());
    let dir = DirectoryVerifier::new();
    seeded(&store, &dir, 1, n);
    let (rt, shards) = start_shards(&[0], store);
    loaded(&shards).await;
    let v = Batching::new(dir, 32, mode);
    let config = SweeperConfig { max_in_flight: 64, verify_timeout: Duration::from_secs(2), ..fast() };
    rt.start_sweeper(Arc::new(v.clone()), config).unwrap();
    let report = rt.run_sweep_pass().await.unwrap();
    (report, shards, v)
}

async fn ghosts(shards: &Shards) -> usize {
    shards[0].1.send(GetStats).await.unwrap().table.ghosts as usize
}

#[actix::test]
async fn a_batch_that_hangs_times_out_inconclusive_for_each_ghost() {
    let t0 = tokio::time::Instant::now();
    let (report, shards, v) = sweep_in(Mode::Hang, 100).await;
    let c = report.counts;
    assert_eq!((c.checked, c.inconclusive, c.verify_failures, c.purged()), (100, 100, 100, 0));
    assert_eq!(ghosts(&shards).await, 100, "nothing purged");
    // Two batches of 32 at once, then the rest: two rounds of the 2 s timeout.
    assert_eq!(v.batches(), vec![32, 32, 32, 4]);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(5), "{waited:?}");
}

#[actix::test]
async fn a_batch_answering_the_wrong_number_of_results_is_inconclusive() {
    let (report, shards, _) = sweep_in(Mode::Short, 100).await;
    let c = report.counts;
    assert_eq!((c.inconclusive, c.verify_failures, c.purged()), (100, 100, 0));
    assert_eq!(ghosts(&shards).await, 100, "its `Purge`s were not applied");
}

#[actix::test]
async fn a_batch_that_panics_is_inconclusive() {
    let (report, shards, _) = sweep_in(Mode::Panic, 50).await;
    assert_eq!((report.counts.inconclusive, report.counts.purged()), (50, 0));
    assert_eq!(ghosts(&shards).await, 50);
}

#[actix::test]
async fn failed_requests_of_a_batch_are_inconclusive_and_the_others_count() {
    let (report, shards, _) = sweep_in(Mode::FailOdd, 64).await;
    let c = report.counts;
    assert_eq!((c.kept, c.inconclusive, c.verify_failures, c.purged()), (32, 32, 32, 0));
    assert_eq!(ghosts(&shards).await, 64);
}

#[actix::test]
async fn the_default_batch_form_answers_through_verify() {
    let (report, _, v) = sweep_in(Mode::Default, 100).await;
    assert_eq!((report.counts.kept, report.counts.verify_failures), (100, 0));
    assert_eq!(v.batches().len(), 4);
}

#[actix::test]
async fn a_verifier_without_batches_is_called_once_per_ghost() {
    let store = Arc::new(MemoryStore::new());
    let dir = DirectoryVerifier::new();
    seeded(&store, &dir, 1, 40);
    let (rt, shards) = start_shards(&[0], store);
    loaded(&shards).await;
    let v = Batching::new(dir.clone(), 1, Mode::Hang);
    rt.start_sweeper(Arc::new(v.clone()), fast()).unwrap();
    assert_eq!(rt.run_sweep_pass().await.unwrap().counts.kept, 40);
    assert!(v.batches().is_empty());
    assert_eq!(v.singles.load(Ordering::Relaxed), 40);
    assert_eq!(Plain(dir).max_batch(), 1, "the trait's default is the single form");
}
