//! Raw cost of the pure table and codec on 1M ghosts (compare with the seed's `seedbench`).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{Epoch, ShardId, TableConfig, codec};

const N: usize = 1_000_000;

fn ids() -> Vec<String> {
    (0..N).map(|i| format!("node-{i:08}")).collect()
}

fn filled(ids: &[String]) -> GhostTable {
    let mut t = GhostTable::with_capacity(0, TableConfig::default(), ids.len()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        // A high refcount keeps removals from purging during the run.
        t.insert(id, ShardId((i % 1024) as u16 + 1), 1 << 30, Epoch(1), 0).unwrap();
    }
    t.take_changes();
    t
}

fn ops(c: &mut Criterion) {
    let ids = ids();
    let mut t = filled(&ids);
    let mut g = c.benchmark_group("table_1m");
    let mut i = 0usize;
    g.bench_function("edge_added", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(t.edge_added(&ids[i]))
        })
    });
    g.bench_function("edge_removed", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(t.edge_removed(&ids[i]))
        })
    });
    g.bench_function("resolve", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(t.resolve(&ids[i]))
        })
    });
    // Drain what the loops above marked dirty, as a store flush would.
    g.bench_function("take_changes_after_1k_events", |b| {
        b.iter(|| {
            for _ in 0..1024 {
                i = (i + 1) % N;
                t.edge_added(&ids[i]);
            }
            black_box(t.take_changes())
        })
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let ids = ids();
    let t = filled(&ids);
    let bytes = codec::encode_snapshot(&t).unwrap();
    let mut g = c.benchmark_group("snapshot_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("encode", |b| b.iter(|| black_box(codec::encode_snapshot(&t).unwrap())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(codec::decode_snapshot(&bytes, 0, &TableConfig::default()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, ops, snapshot);
criterion_main!(benches);
