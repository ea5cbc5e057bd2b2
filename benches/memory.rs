//! Resident bytes per ghost for 1M ghosts (compare with the seed's `seedmem`).
//!
//! Not a criterion bench: it measures memory, once, the way `seedmem` does
//! (VmRSS before and after filling a table with ids `node-00000000`...).
//! `-- uuid` uses 36-byte ids shaped like UUID strings instead (longer than a
//! slot holds in place, so they live in the table's id arena).

use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{Epoch, ShardId, TableConfig};

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
    let mut t = GhostTable::new(0, TableConfig::default()).unwrap();
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
}
