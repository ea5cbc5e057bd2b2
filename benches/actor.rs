//! Events through one GhostActor on a 1M-ghost table, beside the raw table in the same run; reload from redb.

use actix::prelude::*;
use criterion::{Criterion, Throughput, criterion_group};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vshard_ghosts::messages::{EdgeAdded, EdgeBatch, EdgeRemoved, Flush};
use vshard_ghosts::store::*;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::*;

const N: usize = 1_000_000;
const BATCH: usize = 1024;
/// Batches in flight at once when pipelined, as a host replaying its log would.
const WINDOW: usize = 8;

fn ids() -> Vec<Box<str>> {
    (0..N).map(|i| format!("node-{i:08}").into()).collect()
}

fn filled(ids: &[Box<str>]) -> GhostTable {
    let mut t = GhostTable::with_capacity(ShardId(0), TableConfig::default(), N).unwrap();
    for (i, id) in ids.iter().enumerate() {
        t.insert(id, ShardId((i % 1024) as u16 + 1), 1 << 20, Epoch(1), 0).unwrap();
    }
    t
}

/// A batch of 512 edges added and 512 removed on ghosts drawn at random from the
/// whole table: no stride a prefetcher could follow, as with a real host's log.
fn batch(ids: &[Box<str>], rng: &mut fastrand::Rng) -> EdgeEvents {
    let mut events = EdgeEvents::with_capacity(BATCH, BATCH * 16);
    for j in 0..BATCH {
        let kind = if j % 2 == 0 { EdgeKind::Added } else { EdgeKind::Removed };
        events.push(&ids[rng.usize(0..N)], kind);
    }
    events
}

/// Shard 0 alone, on the calling arbiter, over `store`; its address and runtime.
fn shard_on(store: Arc<dyn GhostStore>) -> (Addr<GhostActor>, GhostRuntime) {
    let config = RuntimeConfig {
        shards: vec![ShardId(0)],
        arbiters: 0,
        commit_retry_delay: Duration::from_millis(10),
        metrics_interval: Duration::ZERO,
        ..RuntimeConfig::default()
    };
    let rt = GhostRuntime::builder().config(config).store(StoreChoice::Custom(store)).start().unwrap();
    (rt.addr(ShardId(0)).unwrap().clone(), rt)
}

async fn pipelined(addr: &Addr<GhostActor>, batches: &[EdgeEvents], iters: u64, window: usize) -> Duration {
    let start = Instant::now();
    let mut inflight = futures::stream::FuturesOrdered::new();
    for k in 0..iters as usize {
        inflight.push_back(addr.send(EdgeBatch { seq: None, events: batches[k % batches.len()].clone() }));
        if inflight.len() >= window {
            futures::StreamExt::next(&mut inflight).await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(r) = futures::StreamExt::next(&mut inflight).await {
        r.unwrap().unwrap();
    }
    start.elapsed()
}

fn events(c: &mut Criterion) {
    let ids = ids();
    let mut rng = fastrand::Rng::with_seed(7);
    let batches: Vec<_> = (0..256).map(|_| batch(&ids, &mut rng)).collect();
    let mut g = c.benchmark_group("events_1m");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(6));

    let mut raw = filled(&ids);
    let mut k = 0;
    g.bench_function("raw_table_batch_1024", |b| {
        b.iter(|| {
            k += 1;
            black_box(raw.apply_batch(None, &batches[k % batches.len()]));
            // A store drains changes in real use; include its cost here too.
            black_box(raw.take_changes());
        })
    });
    drop(raw);

    let dir = tempfile::tempdir().unwrap();
    let stores: [(&str, Arc<dyn GhostStore>); 2] = [
        ("memory", Arc::new(MemoryStore::new())),
        ("redb", Arc::new(RedbStore::open(dir.path().join("bench.redb")).unwrap())),
    ];
    for (name, store) in stores {
        store.replace(&filled(&ids)).unwrap();
        let sys = System::new();
        let (addr, writer) = sys.block_on(async { shard_on(store) });
        sys.block_on(async { addr.send(Flush).await.unwrap().unwrap() });
        // Awaited one at a time (each reply waits for the commit covering it),
        // and pipelined as a host replaying its log would.
        for window in [1, WINDOW] {
            g.bench_function(format!("actor_{name}_batch_1024_window_{window}"), |b| {
                b.iter_custom(|iters| sys.block_on(pipelined(&addr, &batches, iters, window)))
            });
        }
        if name == "memory" {
            g.throughput(Throughput::Elements(1));
            // Random ids by default; the insertion-order twin is labelled.
            let mut rng = fastrand::Rng::with_seed(13);
            let mut i = 0;
            for (label, random) in [("", true), ("_insertion_order", false)] {
                g.bench_function(format!("actor_memory_send_awaited{label}"), |b| {
                    b.iter_custom(|iters| {
                        sys.block_on(async {
                            let start = Instant::now();
                            for _ in 0..iters {
                                i = if random { rng.usize(0..N) } else { (i + 1) % N };
                                addr.send(EdgeAdded { node_id: ids[i].clone() }).await.unwrap().unwrap();
                            }
                            start.elapsed()
                        })
                    })
                });
            }
            g.bench_function("actor_memory_do_send", |b| {
                b.iter_custom(|iters| {
                    sys.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            addr.do_send(EdgeRemoved { node_id: ids[rng.usize(0..N)].clone() });
                        }
                        // Counted only once the actor has handled them all.
                        addr.send(Flush).await.unwrap().unwrap();
                        start.elapsed()
                    })
                })
            });
            g.throughput(Throughput::Elements(BATCH as u64));
        }
        drop(addr);
        drop(writer);
        drop(sys);
    }
    g.finish();
}

fn reload(c: &mut Criterion) {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("reload.redb")).unwrap();
    store.replace(&filled(&ids)).unwrap();
    let mut g = c.benchmark_group("reload_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("redb_load", |b| {
        b.iter(|| black_box(store.load(ShardId(0), &TableConfig::default()).unwrap()))
    });
    g.finish();
}

/// Rounds of the side-by-side comparison, and the length of each phase.
const ROUNDS: usize = 7;
const PHASE: Duration = Duration::from_secs(2);

/// Batches of 1024 consecutive ids (the order they were inserted in): the
/// flattering figure, which lets the prefetcher follow the table.
fn sequential_batches(ids: &[Box<str>]) -> Vec<EdgeEvents> {
    (0..256)
        .map(|b| {
            let mut events = EdgeEvents::with_capacity(BATCH, BATCH * 16);
            for j in 0..BATCH {
                let kind = if j % 2 == 0 { EdgeKind::Added } else { EdgeKind::Removed };
                events.push(&ids[(b * BATCH + j) % N], kind);
            }
            events
        })
        .collect()
}

/// Events/s of the raw table over `batches` for one phase (each batch followed
/// by the drain a store flush does).
fn raw_rate(raw: &mut GhostTable, batches: &[EdgeEvents]) -> f64 {
    let (mut n, start, mut k) = (0u64, Instant::now(), 0);
    while start.elapsed() < PHASE {
        k += 1;
        black_box(raw.apply_batch(None, &batches[k % batches.len()]));
        black_box(raw.take_changes());
        n += BATCH as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// CPU time this thread has run, in µs (Linux; 0 elsewhere): unlike the wall
/// clock, it does not count the time another process held the core, so it
/// compares commits across a loaded sitting.
fn thread_cpu_us() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e3)
}

/// Median µs of a 4 KiB write plus `sync_data` in `dir`: the floor under every
/// awaited redb commit (one fsync each) on this disk, now.
fn fsync_us(dir: &std::path::Path) -> f64 {
    use std::io::Write as _;
    let mut f = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let mut t: Vec<f64> = (0..20)
        .map(|_| {
            let s = Instant::now();
            f.write_all(&[7u8; 4096]).unwrap();
            f.sync_data().unwrap();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn median_range(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.2} (range {:.2}–{:.2})", v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The raw table and the actors measured in turns, round after round, with the
/// ratio taken within each round. On a shared machine the raw rate drifts by up
/// to a factor of two between minutes, so only measurements taken side by side
/// make a ratio worth quoting. Runs after the criterion benches, or alone with
/// the filter `paired`.
///
/// Each actor phase is also split, per batch, into the raw table's time (from
/// the same round), the store's commit time (the writer's own clock) and the
/// rest: the actor, its messages and the reply's trip back.
fn paired() {
    let ids = ids();
    let mut rng = fastrand::Rng::with_seed(11);
    let batches: Vec<_> = (0..256).map(|_| batch(&ids, &mut rng)).collect();
    let seq_batches = sequential_batches(&ids);
    let mut raw = filled(&ids);
    let dir = tempfile::tempdir().unwrap();
    let memory: Arc<dyn GhostStore> = Arc::new(MemoryStore::new());
    let redb: Arc<dyn GhostStore> = Arc::new(RedbStore::open(dir.path().join("paired.redb")).unwrap());
    let sys = System::new();
    let mut shards = Vec::new();
    for (name, store) in [("memory", memory), ("redb", redb)] {
        store.replace(&filled(&ids)).unwrap();
        let (addr, writer) = sys.block_on(async { shard_on(store) });
        sys.block_on(async { addr.send(Flush).await.unwrap().unwrap() });
        shards.push((name, addr, writer));
    }
    let phases = ["memory awaited", "memory 8 pipelined", "redb awaited", "redb 8 pipelined"];
    println!(
        "paired: random ids; events/s per phase ({} s each), ÷ the raw table's in the same round, \
         and per batch: raw table µs + store commit µs + rest (actor) µs",
        PHASE.as_secs()
    );
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); phases.len()];
    let mut split: Vec<Vec<[f64; 3]>> = vec![Vec::new(); phases.len()];
    let mut seq_raw = Vec::new();
    let mut fsyncs = Vec::new();
    for round in 0..ROUNDS {
        let raw_rate_now = raw_rate(&mut raw, &batches);
        let raw_batch_us = BATCH as f64 / raw_rate_now * 1e6;
        let mut line = format!("round {round}: raw {:.2} M/s", raw_rate_now / 1e6);
        let mut p = 0;
        for (_, addr, writer) in &shards {
            for window in [1, WINDOW] {
                let before = writer.writer_stats().unwrap();
                let (mut n, mut took) = (0u64, Duration::ZERO);
                while took < PHASE {
                    took += sys.block_on(pipelined(addr, &batches, 64, window));
                    n += 64;
                }
                let after = writer.writer_stats().unwrap();
                let rate = (n * BATCH as u64) as f64 / took.as_secs_f64();
                let batch_us = took.as_secs_f64() * 1e6 / n as f64;
                let store_us = (after.commit_micros - before.commit_micros) as f64 / n as f64;
                let rest = batch_us - raw_batch_us - store_us;
                ratios[p].push(rate / raw_rate_now);
                split[p].push([raw_batch_us, store_us, rest]);
                line += &format!(
                    " | {} {:.2} M/s ({:.2}; {:.0}+{:.0}+{:.0} µs)",
                    phases[p],
                    rate / 1e6,
                    rate / raw_rate_now,
                    raw_batch_us,
                    store_us,
                    rest
                );
                p += 1;
            }
        }
        let seq = raw_rate(&mut raw, &seq_batches);
        seq_raw.push(seq / raw_rate_now);
        let sync = fsync_us(dir.path());
        fsyncs.push(sync);
        println!("{line} | raw, insertion order (flattering) {:.2} M/s | fsync {sync:.0} µs", seq / 1e6);
    }
    for (p, r) in ratios.into_iter().enumerate() {
        let col = |k: usize| median_range(split[p].iter().map(|x| x[k]).collect());
        println!(
            "paired median ratio, {}: {} | per batch µs: raw table {}, store commit {}, rest {}",
            phases[p],
            median_range(r),
            col(0),
            col(1),
            col(2)
        );
    }
    println!("raw table, insertion order ÷ random order (flattering): {}", median_range(seq_raw));
    println!("4 KiB write + fsync in the store's directory, µs: {}", median_range(fsyncs));
    drop(sys);
    drop(shards);
}

/// Opens a store in the given directory.
type OpenStore = fn(&std::path::Path) -> Arc<dyn GhostStore>;

/// A store's commit alone, without actor or table: each of 256 change sets
/// (what the table hands the store after a batch of 1024 random events) is
/// committed in turn, one shard per commit, as the writer does for an awaited
/// batch. Per store: median µs per commit over `ROUNDS` phases, and for redb the
/// fsync probe beside it (the floor of a durable commit). Alone with the filter
/// `store_commit`, or `store_commit_memory` / `store_commit_redb` for one store
/// (a process to profile).
fn store_commit(filters: &[String]) {
    let ids = ids();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut table = filled(&ids);
    // The fill's own million upserts are not a batch's.
    drop(table.take_changes());
    let changes: Vec<_> = (0..256)
        .map(|_| {
            table.apply_batch(None, &batch(&ids, &mut rng));
            [ShardChanges { shard: ShardId(0), changes: table.take_changes() }]
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let wanted = |name: &str| {
        filters.is_empty()
            || filters.iter().any(|f| f == "store_commit" || f == &format!("store_commit_{name}"))
    };
    let stores: [(&str, OpenStore); 2] = [
        ("memory", |_| Arc::new(MemoryStore::new())),
        ("redb", |dir| Arc::new(RedbStore::open(dir.join("commit.redb")).unwrap())),
    ];
    for (name, open) in stores {
        if !wanted(name) {
            continue;
        }
        let store = open(dir.path());
        store.replace(&table).unwrap();
        let (mut per_commit, mut cpu_per_commit, mut fsyncs) = (Vec::new(), Vec::new(), Vec::new());
        let mut k = 0;
        for _ in 0..ROUNDS {
            let (start, cpu_start, mut n) = (Instant::now(), thread_cpu_us(), 0u32);
            while start.elapsed() < PHASE {
                store.commit(&changes[k % changes.len()]).unwrap();
                k += 1;
                n += 1;
            }
            per_commit.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
            cpu_per_commit.push((thread_cpu_us() - cpu_start) / f64::from(n));
            if name == "redb" {
                fsyncs.push(fsync_us(dir.path()));
            }
        }
        print!(
            "store_commit {name}: µs per commit of one 1024-event batch's changes {}, of it on this thread's CPU {}",
            median_range(per_commit),
            median_range(cpu_per_commit)
        );
        if !fsyncs.is_empty() {
            print!(" | 4 KiB write + fsync µs {}", median_range(fsyncs));
        }
        println!();
    }
    if wanted("redb") {
        // The checkpoint alone, which the commits above pay for now and then
        // (every ~2 400 of these commits by default): a log of `RECORDS`
        // commits folded into the rows, timed apart from the commits. First
        // `RECORDS` distinct batches, as a host's log holds them (together
        // they touch most of the table); then the 256 above over and over
        // (a quarter of the table, kind to the fold), labelled.
        const RECORDS: usize = 2048;
        let distinct: Vec<_> = (0..RECORDS)
            .map(|_| {
                table.apply_batch(None, &batch(&ids, &mut rng));
                [ShardChanges { shard: ShardId(0), changes: table.take_changes() }]
            })
            .collect();
        for (label, log) in [("distinct batches", &distinct), ("256 batches repeated (kind)", &changes)] {
            let store = RedbStore::open(dir.path().join("fold.redb"))
                .unwrap()
                .with_checkpoint_bytes(u64::MAX)
                .with_checkpoint_records(u64::MAX);
            store.replace(&table).unwrap();
            let mut folds = Vec::new();
            let mut fold_cpus = Vec::new();
            for round in 0..3 {
                for k in 0..RECORDS {
                    store.commit(&log[(round * RECORDS + k) % log.len()]).unwrap();
                }
                let (start, cpu_start) = (Instant::now(), thread_cpu_us());
                store.checkpoint().unwrap();
                folds.push(start.elapsed().as_secs_f64() * 1e3);
                fold_cpus.push((thread_cpu_us() - cpu_start) / 1e3);
            }
            let per_commit: Vec<f64> = folds.iter().map(|ms| ms * 1e3 / RECORDS as f64).collect();
            println!(
                "store_commit redb checkpoint of {RECORDS} commits, {label}: ms {}, of it on this thread's CPU {} | \
                 µs per commit {}",
                median_range(folds),
                median_range(fold_cpus),
                median_range(per_commit)
            );
            drop(store);
            std::fs::remove_file(dir.path().join("fold.redb")).unwrap();
        }
    }
}

criterion_group! {
    name = benches;
    // Without plots: criterion draws them with system fonts, which a server
    // may not have (it panics after measuring), and the figures are printed.
    config = Criterion::default().without_plots();
    targets = events, reload
}

fn main() {
    benches();
    Criterion::default().without_plots().configure_from_args().final_summary();
    // Criterion's own flags (`--bench`, `--profile-time`, ...) start with a dash;
    // any other argument is a filter.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if filters.is_empty() || filters.iter().any(|f| f.contains("paired")) {
        paired();
    }
    if filters.is_empty() || filters.iter().any(|f| f.starts_with("store_commit")) {
        store_commit(&filters);
    }
}
