//! Raw cost of the pure table and codec on 1M ghosts, beside the seed's `seedbench`
//! run in the same rounds.
//!
//! `cargo bench --bench table [-- ROUNDS]`. Each round runs the seed's
//! `seedbench 1000000 rand` (if built at `target/seed-baseline/release/seedbench`,
//! or `$SEEDBENCH`) and then this crate's table on the same ids in the same
//! shuffled order; ratios are taken within the round, and the medians and
//! ranges over the rounds are printed last. Random order (the way edge events
//! arrive) is the headline; insertion order, which lets the hardware
//! prefetcher follow the table and flatters every hash table, is printed
//! beside it and labelled `seq`. Each round also reloads the table from redb
//! and decodes a snapshot, each afresh and into the memory of the table it
//! replaces (`GhostTable::into_memory`), in the process whose heap the seed's
//! table just went through (with `VSHARD_SEED_GHOST_RS`, see the README).

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{EdgeEvents, EdgeKind, Epoch, ShardId, TableConfig, codec};

const N: usize = 1_000_000;
const BATCH: usize = 1024;

/// The seed's shuffle (xorshift64*, Fisher–Yates, seed 7), so that both visit
/// the ids in exactly the same order.
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 7;
    for i in (1..n).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        order.swap(i, (r % (i as u64 + 1)) as usize);
    }
    order
}

fn filled(ids: &[String]) -> GhostTable {
    let mut t = GhostTable::with_capacity(ShardId(0), TableConfig::default(), ids.len()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        // A high refcount keeps removals from purging during the run.
        t.insert(id, ShardId((i % 1024) as u16 + 1), 1 << 30, Epoch(1), 0).unwrap();
    }
    t.take_changes();
    t
}

/// ns per visit of `f` over `order`.
fn per_op(order: &[usize], mut f: impl FnMut(usize)) -> f64 {
    let s = Instant::now();
    for &i in order {
        f(i);
    }
    s.elapsed().as_nanos() as f64 / order.len() as f64
}

/// One round of this crate's figures, in ns per op (codec: ms).
#[derive(Default, Clone, Copy)]
struct Ours {
    added: f64,
    removed: f64,
    resolve: f64,
    batch_event: f64,
    encode_ms: f64,
    decode_ms: f64,
    /// A decode into the memory of the table the fresh decode built
    /// (`into_memory`, `decode_snapshot_reusing`), as a shard that reloads does.
    decode_reuse_ms: f64,
}

fn ours(
    t: &mut GhostTable,
    ids: &[String],
    order: &[usize],
    batches: &[EdgeEvents],
    codec_buf: Option<&mut Vec<u8>>,
) -> Ours {
    let added = per_op(order, |i| {
        black_box(t.edge_added(&ids[i]));
    });
    t.take_changes();
    let resolve = per_op(order, |i| {
        black_box(t.resolve(&ids[i]));
    });
    let removed = per_op(order, |i| {
        black_box(t.edge_removed(&ids[i]));
    });
    t.take_changes();
    // Batches as a shard applies them: each followed by the drain a flush does.
    let s = Instant::now();
    for b in batches {
        black_box(t.apply_batch(None, b));
        black_box(t.take_changes());
    }
    let batch_event = s.elapsed().as_nanos() as f64 / (batches.len() * BATCH) as f64;
    let (mut encode_ms, mut decode_ms, mut decode_reuse_ms) = (0.0, 0.0, 0.0);
    if let Some(bytes) = codec_buf {
        // Into the buffer of the round before, as a host snapshotting a
        // shard again would (`encode_snapshot_into`).
        let s = Instant::now();
        codec::encode_snapshot_into(t, bytes).unwrap();
        black_box(&bytes);
        encode_ms = s.elapsed().as_secs_f64() * 1e3;
        // Each decoded table is dropped outside the timing, as a reload's
        // old table is dropped apart from building the new one.
        let s = Instant::now();
        let fresh = black_box(codec::decode_snapshot(bytes, ShardId(0), &TableConfig::default()).unwrap());
        decode_ms = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let memory = fresh.into_memory();
        let again =
            codec::decode_snapshot_reusing(bytes, ShardId(0), &TableConfig::default(), memory).unwrap();
        black_box(&again);
        decode_reuse_ms = s.elapsed().as_secs_f64() * 1e3;
        assert_eq!(again.len(), t.len());
    }
    Ours { added, removed, resolve, batch_event, encode_ms, decode_ms, decode_reuse_ms }
}

/// ms of a reload of the whole shard from `store`, afresh and then into the
/// memory of the table it replaces (as a shard restarting after a panic
/// does); each table is dropped outside the timing.
fn reload(store: &vshard_ghosts::store::RedbStore) -> (f64, f64) {
    use vshard_ghosts::store::GhostStore;
    let s = Instant::now();
    let fresh = black_box(store.load(ShardId(0), &TableConfig::default()).unwrap());
    let fresh_ms = s.elapsed().as_secs_f64() * 1e3;
    let s = Instant::now();
    let memory = fresh.into_memory();
    let again = store.load_reusing(ShardId(0), &TableConfig::default(), memory).unwrap();
    black_box(&again);
    (fresh_ms, s.elapsed().as_secs_f64() * 1e3)
}

/// The seed's `rand` figures: increment, resolve, decrement (ns), to_bytes, from_bytes (ms).
fn seed() -> Option<[f64; 5]> {
    let bin = std::env::var("SEEDBENCH").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/seed-baseline/release/seedbench").to_string()
    });
    let out = Command::new(bin).args([N.to_string(), "rand".into()]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |key: &str| -> Option<f64> {
        let at = text.find(key)? + key.len();
        text[at..].split_whitespace().next()?.parse().ok()
    };
    Some([num("increment ")?, num("resolve ")?, num("decrement ")?, num("to_bytes ")?, num("from_bytes ")?])
}

/// The seed's `GhostTable`, compiled in when `VSHARD_SEED_GHOST_RS` names its
/// source at build time (see build.rs): its codec is then timed in this
/// process, after it has built, encoded, decoded and dropped a million-stub
/// table, as a shard restarted inside a long-running process finds its heap.
#[cfg(seed_in_process)]
#[allow(dead_code, unused_imports, unreachable_pub, missing_docs, clippy::all)]
mod seed {
    include!(env!("VSHARD_SEED_GHOST_RS"));
}

/// The seed's `to_bytes` and `from_bytes` in this process, in ms, on a table
/// of `ids` built the way `seedbench` builds it; everything is dropped after.
#[cfg(seed_in_process)]
fn seed_codec_here(ids: &[String]) -> Option<(f64, f64)> {
    let mut t = seed::GhostTable::new();
    for (i, id) in ids.iter().enumerate() {
        t.insert(seed::GhostStub::new(id.clone(), (i % 1024) as u16, 2));
    }
    let s = Instant::now();
    let bytes = black_box(t.to_bytes());
    let enc = s.elapsed().as_secs_f64() * 1e3;
    let s = Instant::now();
    let back = black_box(seed::GhostTable::from_bytes(&bytes))?;
    let dec = s.elapsed().as_secs_f64() * 1e3;
    drop((t, back, bytes));
    Some((enc, dec))
}

#[cfg(not(seed_in_process))]
fn seed_codec_here(_: &[String]) -> Option<(f64, f64)> {
    None
}

/// ns per dependent load at random over 64 MiB (a pointer chase round one
/// random cycle): what one cache-and-TLB miss costs on this machine now. A
/// lookup on the table is a chain of such misses (index group, bucket, slot,
/// id), which bounds what a single operation can cost.
fn miss_ns() -> f64 {
    let n = 1usize << 24;
    let mut next: Vec<u32> = (0..n as u32).collect();
    let mut rng = fastrand::Rng::with_seed(3);
    for i in (1..n).rev() {
        next.swap(i, rng.usize(0..i)); // Sattolo: one cycle through every entry
    }
    let hops = 1_000_000;
    let (mut at, s) = (0u32, Instant::now());
    for _ in 0..hops {
        at = next[at as usize];
    }
    black_box(at);
    s.elapsed().as_nanos() as f64 / hops as f64
}

/// ns per load at random over 64 MiB when 1024 loads are independent (their
/// misses overlap): the throughput bound of a batch whose events each need a
/// few such lines.
fn parallel_miss_ns() -> f64 {
    let n = 1usize << 24;
    let table: Vec<u32> = (0..n as u32).collect();
    let mut rng = fastrand::Rng::with_seed(5);
    let at: Vec<usize> = (0..1 << 20).map(|_| rng.usize(0..n)).collect();
    let (mut sum, s) = (0u32, Instant::now());
    for chunk in at.chunks(1024) {
        for &i in chunk {
            sum = sum.wrapping_add(table[i]);
        }
    }
    black_box(sum);
    s.elapsed().as_nanos() as f64 / at.len() as f64
}

fn median_range(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.3} (range {:.3}–{:.3})", v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; a number argument sets the rounds.
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let ids: Vec<String> = (0..N).map(|i| format!("node-{i:08}")).collect();
    let rand = shuffled(N);
    let seq: Vec<usize> = (0..N).collect();
    // 1024-event batches, half adds and half removals, on ids drawn at random.
    let mut rng = fastrand::Rng::with_seed(11);
    let batches: Vec<EdgeEvents> = (0..512)
        .map(|_| {
            let mut e = EdgeEvents::with_capacity(BATCH, BATCH * 16);
            for j in 0..BATCH {
                let kind = if j % 2 == 0 { EdgeKind::Added } else { EdgeKind::Removed };
                e.push(&ids[rng.usize(0..N)], kind);
            }
            e
        })
        .collect();
    let mut t = filled(&ids);
    // Warm the table's pages and the caches once before the first round.
    ours(&mut t, &ids, &rand, &batches[..16], None);
    let mut codec_buf = Vec::new();
    let mut r: Vec<[f64; 9]> = Vec::new();
    let mut busy: Vec<[f64; 5]> = Vec::new();
    // The table on redb, for the reload figures: written once.
    let dir = tempfile::tempdir().unwrap();
    let store = vshard_ghosts::store::RedbStore::open(dir.path().join("reload.redb")).unwrap();
    vshard_ghosts::store::GhostStore::replace(&store, &t).unwrap();
    for round in 0..rounds {
        let s = seed();
        let here = seed_codec_here(&ids);
        let o = ours(&mut t, &ids, &rand, &batches, Some(&mut codec_buf));
        let q = ours(&mut t, &ids, &seq, &batches[..0], None);
        let (miss, pmiss) = (miss_ns(), parallel_miss_ns());
        print!(
            "round {round}: one random miss {miss:.0} ns, overlapped {pmiss:.1} ns | rand added {:.0} ns, removed {:.0} ns, resolve {:.0} ns, apply_batch {:.1} ns/event, \
             encode {:.1} ms, decode {:.1} ms | seq added {:.0}, removed {:.0}, resolve {:.0} ns",
            o.added,
            o.removed,
            o.resolve,
            o.batch_event,
            o.encode_ms,
            o.decode_ms,
            q.added,
            q.removed,
            q.resolve
        );
        let (reload_ms, reload_reuse_ms) = reload(&store);
        println!(
            "  reload from redb in this process: {reload_ms:.1} ms, into the memory of the table it replaces {reload_reuse_ms:.1} ms"
        );
        if let Some((enc, dec)) = here {
            println!(
                "  in this process, after the seed's table was built, encoded, decoded and dropped: \
                 seed to_bytes {enc:.1} ms, from_bytes {dec:.1} ms; ours encode {:.1} ms, decode {:.1} ms, \
                 decode into a dropped table's memory {:.1} ms",
                o.encode_ms, o.decode_ms, o.decode_reuse_ms
            );
            busy.push([
                enc / o.encode_ms,
                dec / o.decode_ms,
                dec / o.decode_reuse_ms,
                reload_ms / dec,
                reload_reuse_ms / dec,
            ]);
        }
        match s {
            Some([inc, res, dec, enc, decd]) => {
                println!(
                    " | seed rand increment {inc:.0}, resolve {res:.0}, decrement {dec:.0} ns, \
                     to_bytes {enc:.1} ms, from_bytes {decd:.1} ms"
                );
                r.push([
                    o.added / inc,
                    o.removed / dec,
                    o.resolve / res,
                    o.batch_event / inc,
                    enc / o.encode_ms,
                    decd / o.decode_ms,
                    q.added / inc,
                    o.added / miss,
                    o.batch_event / pmiss,
                ]);
            }
            None => println!(" | seed: not found (build ../shared/baseline, see README)"),
        }
    }
    if busy.is_empty() {
        println!(
            "seed not compiled in (build with VSHARD_SEED_GHOST_RS=<seed ghost.rs>): no same-process codec figures"
        );
    } else {
        let col = |k: usize| busy.iter().map(|x| x[k]).collect::<Vec<_>>();
        println!("same process, after the seed's table ran (busy heap), {} rounds:", busy.len());
        println!("  encode: seed to_bytes ÷ ours (× faster):    {}", median_range(col(0)));
        println!("  decode: seed from_bytes ÷ ours (× faster):  {}", median_range(col(1)));
        println!(
            "  decode into a dropped table's memory: seed from_bytes ÷ ours (× faster): {}",
            median_range(col(2))
        );
        println!("  reload from redb ÷ seed from_bytes:                         {}", median_range(col(3)));
        println!(
            "  reload from redb into the replaced table's memory ÷ seed from_bytes: {}",
            median_range(col(4))
        );
    }
    if r.is_empty() {
        return;
    }
    let col = |k: usize| r.iter().map(|x| x[k]).collect::<Vec<_>>();
    println!("medians over {} rounds, ratio to the seed's rand figure in the same round:", r.len());
    println!("  edge_added (rand)         ÷ seed increment: {}", median_range(col(0)));
    println!("  edge_removed (rand)       ÷ seed decrement: {}", median_range(col(1)));
    println!("  resolve (rand)            ÷ seed resolve:   {}", median_range(col(2)));
    println!("  apply_batch/event (rand)  ÷ seed increment: {}", median_range(col(3)));
    println!("  edge_added (seq, flattering) ÷ seed rand increment: {}", median_range(col(6)));
    println!("  edge_added (rand) in random misses (pointer chase): {}", median_range(col(7)));
    println!("  apply_batch/event in overlapped misses:         {}", median_range(col(8)));
    println!("  encode: seedbench to_bytes (own process) ÷ ours: {}", median_range(col(4)));
    println!("  decode: seedbench from_bytes (own process) ÷ ours: {}", median_range(col(5)));
}
