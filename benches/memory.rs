//! Resident bytes per ghost for 1M ghosts (compare with the seed's `seedmem`),
//! and per tombstone for as many reclaims (what `TableConfig::max_tombstones` costs).
//!
//! Not a criterion bench: it measures memory, once, the way `seedmem` does
//! (VmRSS before and after filling a table with ids `node-00000000`...).
//! `-- uuid` uses 36-byte ids shaped like UUID strings instead (longer than a
//! slot holds in place, so they live in the table's id arena).

use std::time::Instant;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{Epoch, ShardId, TableConfig, codec};

fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    // `cargo bench` passes `--bench`; a number argument overrides the size.
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let uuid = std::env::args().any(|a| a == "uuid");
    let ids: Vec<String> = if uuid {
        (0..n).map(|i| format!("{i:08x}-7e57-4000-8000-{:012x}", i * 7919)).collect()
    } else {
        (0..n).map(|i| format!("node-{i:08}")).collect()
    };
    let Some(before) = rss_kb() else {
        println!("memory: /proc/self/status unavailable; skipped");
        return;
    };
    // Grown one insert at a time, as the seed's table is, not pre-sized.
    let mut t = GhostTable::new(ShardId(0), TableConfig::default()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        t.insert(id, ShardId((i % 1024) as u16 + 1), 1, Epoch(1), 0).unwrap();
    }
    let after = rss_kb().unwrap_or(before);
    println!(
        "memory: n={n} id_len={} len={} bytes_per_ghost={:.1}",
        ids[0].len(),
        t.len(),
        (after - before) as f64 * 1024.0 / n as f64
    );
    drop(t);
    tombstones(&ids);
}

/// Bytes and time per tombstone: reclaims of nodes with no ghost left, each of
/// which leaves one, under a bound that holds them all.
fn tombstones(ids: &[String]) {
    let n = ids.len();
    let config = TableConfig { max_tombstones: n, ..TableConfig::default() };
    let mut t = GhostTable::new(ShardId(0), config).unwrap();
    let before = rss_kb().unwrap_or(0);
    let start = Instant::now();
    for id in ids {
        t.reclaim(id, Epoch(2), 0).unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    // The rows for the store, drained as a flush would.
    drop(t.take_changes());
    let after = rss_kb().unwrap_or(before);
    let snapshot = codec::encode_snapshot(&t).map_or(0, |b| b.len());
    println!(
        "memory: n={n} tombstones={} bytes_per_tombstone={:.1} snapshot_bytes_per_tombstone={:.1} ns_per_reclaim={ns:.0}",
        t.stats(0).tombstones,
        after.saturating_sub(before) as f64 * 1024.0 / n as f64,
        snapshot as f64 / n as f64,
    );
}
