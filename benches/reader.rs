//! `GhostReader` figures on a 1M-ghost shard, beside the raw table in the same
//! run: resolve idle and with the actor applying batches flat out, the actor's
//! batch throughput with and without four readers, frontiers of 1024 ids; and
//! (section `lock`) the lock comparison that chose the mechanism.
//!
//! `cargo bench --bench reader` runs everything; `-- lock`, `-- reader` or
//! `-- split` one section. Each figure is the median of its rounds, with the lowest and highest.

use actix::prelude::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use vshard_ghosts::messages::{EdgeBatch, Flush};
use vshard_ghosts::store::*;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::*;

const N: usize = 1_000_000;
const BATCH: usize = 1024;
/// Batches in flight at once, as a host replaying its log would pipeline them.
const WINDOW: usize = 8;
const ROUNDS: usize = 11;
/// Lookups per round of a resolve figure.
const LOOKUPS: usize = 200_000;
/// Batches per round of a throughput figure.
const BATCHES: usize = 200;
const READERS: usize = 4;
const FRONTIER: usize = 1024;

fn ids() -> Vec<Box<str>> {
    (0..N).map(|i| format!("node-{i:08}").into()).collect()
}

fn filled(ids: &[Box<str>]) -> GhostTable {
    let mut t = GhostTable::with_capacity(ShardId(0), TableConfig::default(), N).unwrap();
    for (i, id) in ids.iter().enumerate() {
        t.insert(id, ShardId((i % 1024) as u16 + 1), 1 << 20, Epoch(1), 0).unwrap();
    }
    let _ = t.take_changes();
    t
}

/// 512 edges added and 512 removed on ghosts drawn at random (as in benches/actor.rs).
fn batch(ids: &[Box<str>], rng: &mut fastrand::Rng) -> EdgeEvents {
    let mut events = EdgeEvents::with_capacity(BATCH, BATCH * 16);
    for j in 0..BATCH {
        let kind = if j % 2 == 0 { EdgeKind::Added } else { EdgeKind::Removed };
        events.push(&ids[rng.usize(0..N)], kind);
    }
    events
}

/// Random lookups: indices into `ids`, no stride a prefetcher could follow.
fn picks(seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..LOOKUPS).map(|_| rng.usize(0..N)).collect()
}

/// Median, lowest and highest of `v`.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn report(name: &str, unit: &str, v: Vec<f64>) -> f64 {
    let (med, lo, hi) = spread(v);
    // Ratios (no unit) with two decimals, times and rates with one.
    let p = if unit.is_empty() { 2 } else { 1 };
    println!("{name:<58} {med:>10.p$} {unit}  (min {lo:.p$}, max {hi:.p$}, {ROUNDS} rounds)");
    med
}

/// ns per lookup of `f` over one round of random picks.
fn ns_per_lookup(ids: &[Box<str>], picks: &[usize], mut f: impl FnMut(&str) -> bool) -> f64 {
    let start = Instant::now();
    let mut hits = 0usize;
    for &i in picks {
        hits += usize::from(f(&ids[i]));
    }
    assert_eq!(hits, picks.len(), "every id is a ghost");
    start.elapsed().as_nanos() as f64 / picks.len() as f64
}

/// Threads that run `f` flat out until dropped; `f` counts its operations.
struct Background {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start<F>(n: usize, f: impl Fn(usize) -> F) -> Self
    where
        F: FnMut() + Send + 'static,
    {
        Self::start_on(n, None, f)
    }

    /// [`start`](Self::start) with every thread confined to `core`, if given.
    fn start_on<F>(n: usize, core: Option<core_affinity::CoreId>, f: impl Fn(usize) -> F) -> Self
    where
        F: FnMut() + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(Barrier::new(n + 1));
        let threads = (0..n)
            .map(|k| {
                let (stop, ops, ready, mut op) = (stop.clone(), ops.clone(), ready.clone(), f(k));
                std::thread::spawn(move || {
                    if let Some(core) = core {
                        assert!(core_affinity::set_for_current(core), "confining a thread to {core:?}");
                    }
                    ready.wait();
                    let mut done = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        op();
                        done += 1;
                    }
                    ops.fetch_add(done, Ordering::Relaxed);
                })
            })
            .collect();
        ready.wait();
        Self { stop, ops, threads }
    }

    /// Stops the threads; the operations they made.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.ops.load(Ordering::Relaxed)
    }
}

/// `READERS` threads burning CPU without touching the shard: the control that
/// tells what the cores' sharing alone costs a writer, with no lock involved.
fn spinners(core: Option<core_affinity::CoreId>) -> Background {
    Background::start_on(READERS, core, |_| {
        let mut x = 1u64;
        move || {
            for _ in 0..256 {
                x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    })
}

/// The lock comparison that chose the mechanism (src/actors/ghost/view.rs):
/// the same table behind each lock, a writer thread applying batches
/// directly, readers taking the read lock for each lookup.
mod lock {
    use super::*;

    pub(super) trait Cell: Send + Sync + 'static {
        const NAME: &'static str;
        fn new(t: GhostTable) -> Self;
        fn read<R>(&self, f: impl FnOnce(&GhostTable) -> R) -> R;
        fn write<R>(&self, f: impl FnOnce(&mut GhostTable) -> R) -> R;
    }

    pub(super) struct Std(std::sync::RwLock<GhostTable>);
    impl Cell for Std {
        const NAME: &'static str = "std::sync::RwLock";
        fn new(t: GhostTable) -> Self {
            Self(std::sync::RwLock::new(t))
        }
        fn read<R>(&self, f: impl FnOnce(&GhostTable) -> R) -> R {
            f(&self.0.read().unwrap())
        }
        fn write<R>(&self, f: impl FnOnce(&mut GhostTable) -> R) -> R {
            f(&mut self.0.write().unwrap())
        }
    }

    pub(super) struct Pl(parking_lot::RwLock<GhostTable>);
    impl Cell for Pl {
        const NAME: &'static str = "parking_lot::RwLock";
        fn new(t: GhostTable) -> Self {
            Self(parking_lot::RwLock::new(t))
        }
        fn read<R>(&self, f: impl FnOnce(&GhostTable) -> R) -> R {
            f(&self.0.read())
        }
        fn write<R>(&self, f: impl FnOnce(&mut GhostTable) -> R) -> R {
            f(&mut self.0.write())
        }
    }

    /// The writer applies one batch under the write lock (the lock choice
    /// alone; the shard's actor also warms the batch under an upgradable read
    /// first, which the `reader` section measures).
    fn apply(cell: &impl Cell, batches: &[EdgeEvents], k: usize) {
        let events = &batches[k % batches.len()];
        cell.write(|t| {
            black_box(t.apply_batch(None, events));
            black_box(t.take_changes());
        });
    }

    /// Batches per second of a writer applying `BATCHES` batches.
    fn writer_rate(cell: &impl Cell, batches: &[EdgeEvents]) -> f64 {
        let start = Instant::now();
        for k in 0..BATCHES {
            apply(cell, batches, k);
        }
        BATCHES as f64 / start.elapsed().as_secs_f64()
    }

    fn readers<C: Cell>(cell: &Arc<C>, ids: &Arc<Vec<Box<str>>>) -> Background {
        Background::start(READERS, |k| {
            let (cell, ids) = (cell.clone(), ids.clone());
            let mut rng = fastrand::Rng::with_seed(k as u64);
            move || {
                let id = &ids[rng.usize(0..N)];
                black_box(cell.read(|t| t.resolve(id)));
            }
        })
    }

    pub(super) fn compare<C: Cell>(ids: &Arc<Vec<Box<str>>>, batches: &Arc<Vec<EdgeEvents>>) {
        let cell = Arc::new(C::new(filled(ids)));
        let picks = picks(1);
        let name = C::NAME;
        report(
            &format!("{name}: read-locked resolve, idle"),
            "ns/op",
            (0..ROUNDS)
                .map(|_| ns_per_lookup(ids, &picks, |id| cell.read(|t| t.resolve(id)).is_some()))
                .collect(),
        );
        let writer = {
            let (cell, batches) = (cell.clone(), batches.clone());
            Background::start(1, move |_| {
                let (cell, batches) = (cell.clone(), batches.clone());
                let mut k = 0;
                move || {
                    k += 1;
                    apply(&*cell, &batches, k);
                }
            })
        };
        report(
            &format!("{name}: read-locked resolve, writer flat out"),
            "ns/op",
            (0..ROUNDS)
                .map(|_| ns_per_lookup(ids, &picks, |id| cell.read(|t| t.resolve(id)).is_some()))
                .collect(),
        );
        writer.stop();
        let alone = report(
            &format!("{name}: writer, no reader"),
            "batches/s",
            (0..ROUNDS).map(|_| writer_rate(&*cell, batches)).collect(),
        );
        let r = readers(&cell, ids);
        let with = report(
            &format!("{name}: writer, {READERS} readers flat out"),
            "batches/s",
            (0..ROUNDS).map(|_| writer_rate(&*cell, batches)).collect(),
        );
        let ops = r.stop();
        let spin = spinners(None);
        let spun = report(
            &format!("{name}: writer, {READERS} CPU spinners (control)"),
            "batches/s",
            (0..ROUNDS).map(|_| writer_rate(&*cell, batches)).collect(),
        );
        spin.stop();
        println!(
            "{name}: writer with readers / alone: {:.2}; with spinners / alone: {:.2} (readers made {ops} lookups)",
            with / alone,
            spun / alone
        );
    }
}

/// Sends `count` batches to the shard pipelined `WINDOW` deep, awaiting every answer.
async fn drive(addr: &Addr<GhostActor>, batches: &[EdgeEvents], from: usize, count: usize) {
    let mut inflight = futures::stream::FuturesOrdered::new();
    for k in from..from + count {
        inflight.push_back(addr.send(EdgeBatch { seq: None, events: batches[k % batches.len()].clone() }));
        if inflight.len() >= WINDOW {
            futures::StreamExt::next(&mut inflight).await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(r) = futures::StreamExt::next(&mut inflight).await {
        r.unwrap().unwrap();
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Batches per second through the actor, `BATCHES` pipelined.
fn actor_rate(addr: &Addr<GhostActor>, batches: &[EdgeEvents], rt: &tokio::runtime::Runtime) -> f64 {
    let start = Instant::now();
    rt.block_on(drive(addr, batches, 0, BATCHES));
    BATCHES as f64 / start.elapsed().as_secs_f64()
}

/// Shard 0 on an arbiter of its own, over a memory store holding `raw`'s 1M
/// ghosts, loaded: its runtime, the shard's address and a reader.
fn start_shard(raw: &GhostTable) -> (SystemRunner, GhostRuntime, Addr<GhostActor>, GhostReader) {
    let store = Arc::new(MemoryStore::new());
    store.replace(raw).unwrap();
    let config = RuntimeConfig {
        shards: vec![ShardId(0)],
        arbiters: 1,
        commit_retry_delay: Duration::from_millis(10),
        metrics_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let sys = System::new();
    let rt = sys.block_on(async {
        GhostRuntime::builder().config(config).store(StoreChoice::Custom(store)).start().unwrap()
    });
    let addr = rt.addr(ShardId(0)).unwrap().clone();
    sys.block_on(async { addr.send(Flush).await.unwrap().unwrap() });
    let reader = rt.reader();
    (sys, rt, addr, reader)
}

/// Four threads resolving flat out on `core` (any, if `None`).
fn readers_on(
    reader: &GhostReader,
    ids: &Arc<Vec<Box<str>>>,
    core: Option<core_affinity::CoreId>,
) -> Background {
    Background::start_on(READERS, core, |k| {
        let (reader, ids) = (reader.clone(), ids.clone());
        let mut rng = fastrand::Rng::with_seed(10 + k as u64);
        move || {
            black_box(reader.resolve(ShardId(0), &ids[rng.usize(0..N)]).unwrap());
        }
    })
}

/// The third way to share two cores: the shard's side (its arbiter, the
/// store writer, the host's driver) on the first core, the readers (or the
/// spinners) on the other, so that what the readers cost the actor is their
/// reads, not its share of the cores. Threads inherit the core of the thread
/// that starts them, so this pins the calling thread: run it last.
fn split_cores_figures(ids: &Arc<Vec<Box<str>>>, batches: &Arc<Vec<EdgeEvents>>) {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let [shard_core, reader_core, ..] = cores[..] else {
        println!("split cores: fewer than two cores, skipped");
        return;
    };
    assert!(core_affinity::set_for_current(shard_core), "confining the shard's side to {shard_core:?}");
    let (sys, rt, addr, reader) = start_shard(&filled(ids));
    let tokio = current_thread();
    let mut f: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        f[0].push(actor_rate(&addr, batches, &tokio));
        let readers = readers_on(&reader, ids, Some(reader_core));
        f[1].push(actor_rate(&addr, batches, &tokio));
        readers.stop();
        let spin = spinners(Some(reader_core));
        f[2].push(actor_rate(&addr, batches, &tokio));
        spin.stop();
    }
    let ratio = |a: usize| f[a].iter().zip(&f[0]).map(|(x, y)| x / y).collect::<Vec<_>>();
    let (with, spun) = (ratio(1), ratio(2));
    let [f0, f1, f2] = f;
    println!();
    println!(
        "split cores: the shard's arbiter, store writer and driver on {shard_core:?}, the others on {reader_core:?}"
    );
    report("actor batches of 1024, window 8, no reader", "batches/s", f0);
    report(&format!("actor batches of 1024, window 8, {READERS} readers on the other core"), "batches/s", f1);
    report(
        &format!("actor batches of 1024, window 8, {READERS} spinners on the other core"),
        "batches/s",
        f2,
    );
    report(&format!("  actor with {READERS} readers / alone (target >= 0.8)"), "", with);
    report(&format!("  actor with {READERS} spinners / alone (the cores' share)"), "", spun);
    sys.block_on(rt.shutdown()).unwrap();
}

fn reader_figures(ids: &Arc<Vec<Box<str>>>, batches: &Arc<Vec<EdgeEvents>>) {
    let picks = picks(2);
    let raw = filled(ids);
    let (sys, rt, addr, reader) = start_shard(&raw);

    // Paired rounds: each ratio is taken within one round, so that the load
    // other work puts on the machine, which drifts over minutes, cancels out.
    let tokio = current_thread();
    let mut f: [Vec<f64>; 8] = Default::default();
    // The second arrangement of the cores: readers (and spinners) confined to
    // the last core, the shard's arbiter, driver and store writer free to use
    // both, as a host that keeps traversal workers off its shards' cores would.
    let last_core = core_affinity::get_core_ids().and_then(|c| c.last().copied());
    for _ in 0..ROUNDS {
        f[0].push(ns_per_lookup(ids, &picks, |id| raw.resolve(id).is_some()));
        f[1].push(ns_per_lookup(ids, &picks, |id| reader.resolve(ShardId(0), id).unwrap().is_some()));
        // The actor applying batches at full speed meanwhile, driven from a thread of its own.
        let driver = {
            let (addr, batches) = (addr.clone(), batches.clone());
            Background::start(1, move |_| {
                let (addr, batches, tokio) = (addr.clone(), batches.clone(), current_thread());
                let mut k = 0;
                // 64 batches per call: the pipeline drains only once every 64.
                move || {
                    tokio.block_on(drive(&addr, &batches, k, 64));
                    k += 64;
                }
            })
        };
        f[2].push(ns_per_lookup(ids, &picks, |id| reader.resolve(ShardId(0), id).unwrap().is_some()));
        assert!(driver.stop() > 0, "the actor applied batches meanwhile");
        f[3].push(actor_rate(&addr, batches, &tokio));
        let readers = readers_on(&reader, ids, None);
        f[4].push(actor_rate(&addr, batches, &tokio));
        readers.stop();
        let spin = spinners(None);
        f[5].push(actor_rate(&addr, batches, &tokio));
        spin.stop();
        let readers = readers_on(&reader, ids, last_core);
        f[6].push(actor_rate(&addr, batches, &tokio));
        readers.stop();
        let spin = spinners(last_core);
        f[7].push(actor_rate(&addr, batches, &tokio));
        spin.stop();
    }
    let ratio = |a: usize, b: usize| f[a].iter().zip(&f[b]).map(|(x, y)| x / y).collect::<Vec<_>>();
    let ratios = [ratio(1, 0), ratio(2, 0), ratio(4, 3), ratio(5, 3), ratio(6, 3), ratio(7, 3)];
    let [f0, f1, f2, f3, f4, f5, f6, f7] = f;
    let raw_ns = report("raw GhostTable::resolve", "ns/op", f0);
    report("GhostReader::resolve, actor idle", "ns/op", f1);
    report("GhostReader::resolve, actor applying batches flat out", "ns/op", f2);
    report("actor batches of 1024, window 8, no reader", "batches/s", f3);
    report(&format!("actor batches of 1024, window 8, {READERS} readers flat out"), "batches/s", f4);
    report(&format!("actor batches of 1024, window 8, {READERS} CPU spinners (control)"), "batches/s", f5);
    report(&format!("actor batches of 1024, window 8, {READERS} readers on one core"), "batches/s", f6);
    report(&format!("actor batches of 1024, window 8, {READERS} spinners on one core"), "batches/s", f7);
    let [idle, busy, with, spun, with_one, spun_one] = ratios;

    // Frontiers of 1024 ids on the shard, per id.
    let frontiers: Vec<Vec<(ShardId, &str)>> = picks
        .chunks(FRONTIER)
        .filter(|c| c.len() == FRONTIER)
        .map(|c| c.iter().map(|&i| (ShardId(0), &*ids[i])).collect())
        .collect();
    let per_id = |d: Duration| d.as_nanos() as f64 / (frontiers.len() * FRONTIER) as f64;
    let raw_many = report(
        "raw GhostTable::resolve_many, frontier 1024",
        "ns/id",
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for f in &frontiers {
                    black_box(raw.resolve_many(f.iter().map(|(_, id)| *id)));
                }
                per_id(start.elapsed())
            })
            .collect(),
    );
    let reader_many = report(
        "GhostReader::resolve_many, frontier 1024",
        "ns/id",
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for f in &frontiers {
                    black_box(reader.resolve_many(f).unwrap());
                }
                per_id(start.elapsed())
            })
            .collect(),
    );
    let actor_many = report(
        "GhostRuntime::resolve_many (actor message), frontier 1024",
        "ns/id",
        (0..ROUNDS)
            .map(|_| {
                sys.block_on(async {
                    let start = Instant::now();
                    for f in &frontiers {
                        black_box(rt.resolve_many(f).await.unwrap());
                    }
                    per_id(start.elapsed())
                })
            })
            .collect(),
    );

    println!();
    println!("per-round ratios:");
    report("  reader / raw, idle (target <= 2)", "", idle);
    report("  reader / raw, actor writing (target <= 3)", "", busy);
    report(&format!("  actor with {READERS} readers / alone (target >= 0.8)"), "", with);
    report(&format!("  actor with {READERS} spinners / alone (the cores' share)"), "", spun);
    report(&format!("  actor with {READERS} readers on one core / alone (target >= 0.8)"), "", with_one);
    report(&format!("  actor with {READERS} spinners on one core / alone (the cores' share)"), "", spun_one);
    println!(
        "frontier 1024 per id: raw {raw_many:.1} ns, reader {reader_many:.1} ns, actor {actor_many:.1} ns; raw resolve {raw_ns:.1} ns"
    );
    sys.block_on(rt.shutdown()).unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; a bare word picks a section.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    let ids = Arc::new(ids());
    let mut rng = fastrand::Rng::with_seed(7);
    let batches: Arc<Vec<EdgeEvents>> = Arc::new((0..256).map(|_| batch(&ids, &mut rng)).collect());
    println!("{} ghosts, {} cores available", N, std::thread::available_parallelism().map_or(0, |n| n.get()));
    if run("lock") {
        lock::compare::<lock::Std>(&ids, &batches);
        lock::compare::<lock::Pl>(&ids, &batches);
    }
    if run("reader") {
        reader_figures(&ids, &batches);
    }
    // Last: it confines this thread to one core.
    if run("split") {
        split_cores_figures(&ids, &batches);
    }
}
