//! Times read from the store are on the writer's clock: a loader whose clock
//! runs ahead by up to `TableConfig::max_clock_skew` must not shorten them.

use super::*;
use crate::codec::{decode_snapshot, encode_snapshot};
use crate::sweep::{CheckedVerdict, LocalEdges, Verdict};
use std::time::Duration;

const GRACE: u64 = 100;
const SKEW: u64 = 50;
const TTL: u64 = 1_000;

fn config() -> TableConfig {
    TableConfig {
        grace: Duration::from_millis(GRACE),
        max_clock_skew: Duration::from_millis(SKEW),
        tombstone_ttl: Duration::from_millis(TTL),
        ..TableConfig::default()
    }
}

/// The table as another process loads it from what this one stored.
fn reloaded(t: &GhostTable) -> GhostTable {
    decode_snapshot(&encode_snapshot(t).unwrap(), ShardId(0), &config()).unwrap()
}

/// As a writer left it: a zero-count ghost `z` in its grace period until
/// 1 100, and `n` reclaimed, its tombstone lapsing at 1 005.
fn a_ghost_and_a_tombstone() -> GhostTable {
    let mut t = GhostTable::new(ShardId(0), config()).unwrap();
    t.insert("z", ShardId(1), 0, Epoch(1), 1_000).unwrap();
    t.insert("n", ShardId(1), 2, Epoch(1), 0).unwrap();
    t.reclaim("n", Epoch(2), 5).unwrap();
    t
}

/// Zero-count ghosts one full pass at `now` purged.
fn purged_at(t: &mut GhostTable, now: u64) -> u32 {
    let page = t.plan_sweep(now, usize::MAX);
    assert!(page.checks.is_empty(), "only zero-count ghosts here");
    page.purged_zero
}

#[test]
fn a_stored_grace_period_lasts_the_skew_longer_and_one_started_here_does_not() {
    let mut t = GhostTable::new(ShardId(0), config()).unwrap();
    t.insert("stored", ShardId(1), 0, Epoch(1), 1_000).unwrap();
    let mut t = reloaded(&t);
    t.insert("here", ShardId(1), 0, Epoch(1), 1_000).unwrap();
    // Ours ends at 1 100; the stored one's may end at 1 100 on a clock 50 ms behind ours.
    assert_eq!(purged_at(&mut t, 1_099), 0);
    assert_eq!(purged_at(&mut t, 1_100), 1);
    assert!(t.get("here").is_none() && t.get("stored").is_some());
    assert_eq!(purged_at(&mut t, 1_149), 0);
    assert_eq!(purged_at(&mut t, 1_150), 1);
    assert!(t.get("stored").is_none());
}

#[test]
fn a_new_life_of_a_stored_ghost_is_timed_on_our_clock() {
    let mut t = GhostTable::new(ShardId(0), config()).unwrap();
    t.insert("n", ShardId(1), 0, Epoch(1), 1_000).unwrap();
    let mut t = reloaded(&t);
    assert_eq!(t.insert("n", ShardId(2), 0, Epoch(2), 2_000).unwrap(), InsertOutcome::Replaced);
    assert_eq!(purged_at(&mut t, 2_099), 0);
    assert_eq!(purged_at(&mut t, 2_100), 1, "no skew on a time this process set");
}

#[test]
fn a_stored_hold_lasts_the_skew_longer_and_stays_as_stored_across_reloads() {
    let mut t = GhostTable::new(ShardId(0), config()).unwrap();
    t.insert("b", ShardId(1), 3, Epoch(1), 0).unwrap();
    t.apply_batch(Some(4), &crate::EdgeEvents::new());
    // Counted to zero at 500: held until 600 (one grace), an edge may be in flight.
    let page = t.plan_sweep(500, usize::MAX);
    let v: Vec<_> = page
        .checks
        .iter()
        .map(|c| CheckedVerdict::new(c, Verdict::Keep { local_edges: Some(LocalEdges::at(0, 4)) }))
        .collect();
    t.apply_verdicts(&v, 500);
    assert_eq!(t.get("b").unwrap().refcount, 0);
    let hold = |t: &GhostTable| t.records().find(|r| r.node_id == "b").unwrap().hold_until_ms;
    assert_eq!(hold(&t), 600);
    // Reloaded twice: the stored hold is what was written, not 600 + 2 × 50.
    let mut t = reloaded(&reloaded(&t));
    assert_eq!(hold(&t), 600);
    assert_eq!(purged_at(&mut t, 649), 0);
    assert_eq!(purged_at(&mut t, 650), 1);
}

#[test]
fn a_stored_tombstone_lapses_the_skew_later_and_stays_as_stored_across_reloads() {
    let mut t = GhostTable::new(ShardId(0), config()).unwrap();
    t.insert("n", ShardId(1), 2, Epoch(1), 0).unwrap();
    assert_eq!(t.reclaim("n", Epoch(2), 5), Ok(MoveOutcome::Applied));
    let mut twice = reloaded(&reloaded(&t));
    // Stored to lapse at 1 005 on the writer's clock: kept until 1 055 on ours.
    twice.plan_sweep(1_054, usize::MAX);
    assert_eq!(twice.tombstone_epoch("n"), Some(Epoch(2)), "forgotten early on a clock 50 ms ahead");
    assert_eq!(twice.insert("n", ShardId(1), 2, Epoch(1), 1_054).unwrap(), InsertOutcome::Stale);
    twice.plan_sweep(1_055, usize::MAX);
    assert_eq!(twice.tombstone_epoch("n"), None);
    // One made here lapses when it says.
    t.plan_sweep(1_005, usize::MAX);
    assert_eq!(t.tombstone_epoch("n"), None);
}

#[test]
fn a_full_tombstone_set_reports_the_lapse_on_our_clock() {
    let config = TableConfig { max_tombstones: 1, ..config() };
    let mut t = GhostTable::new(ShardId(0), config.clone()).unwrap();
    for id in ["a", "b"] {
        t.insert(id, ShardId(1), 1, Epoch(1), 0).unwrap();
    }
    t.reclaim("a", Epoch(2), 0).unwrap();
    let mut t = decode_snapshot(&encode_snapshot(&t).unwrap(), ShardId(0), &config).unwrap();
    match t.reclaim("b", Epoch(2), 1_000) {
        Err(Error::TombstonesFull { lapses_in_ms, .. }) => assert_eq!(lapses_in_ms, SKEW),
        other => panic!("expected TombstonesFull, got {other:?}"),
    }
    assert_eq!(t.reclaim("b", Epoch(2), 1_050), Ok(MoveOutcome::Applied));
}

#[test]
fn a_table_loaded_on_the_clock_that_wrote_it_reads_its_times_as_written() {
    let t = a_ghost_and_a_tombstone();
    let mut t = reloaded(&t);
    t.trust_stored_times();
    assert_eq!(purged_at(&mut t, 1_004), 0);
    assert_eq!(t.tombstone_epoch("n"), Some(Epoch(2)));
    assert_eq!(purged_at(&mut t, 1_005), 0);
    assert_eq!(t.tombstone_epoch("n"), None);
    assert_eq!(purged_at(&mut t, 1_099), 0);
    assert_eq!(purged_at(&mut t, 1_100), 1);
}

/// A snapshot from a machine whose clock is behind, imported into a store
/// without claims (which trusts its times at every load): the allowance is
/// written into the imported rows, once.
#[test]
fn an_import_writes_the_allowance_into_the_times_it_stores() {
    use crate::store::{GhostStore, MemoryStore};
    let t = a_ghost_and_a_tombstone();
    let (exporter, importer) = (MemoryStore::new(), MemoryStore::new());
    exporter.replace(&t).unwrap();
    let bytes = exporter.export_snapshot(ShardId(0), &config()).unwrap();
    importer.import_snapshot(ShardId(0), &bytes, &config()).unwrap();
    for _ in 0..2 {
        // As the store writer loads a store without claims.
        let mut t = importer.load(ShardId(0), &config()).unwrap();
        t.trust_stored_times();
        assert_eq!(purged_at(&mut t, 1_054), 0);
        assert_eq!(t.tombstone_epoch("n"), Some(Epoch(2)), "forgotten early on a clock 50 ms ahead");
        assert_eq!(purged_at(&mut t, 1_149), 0, "purged early on a clock 50 ms ahead");
        assert_eq!(purged_at(&mut t, 1_150), 1);
        assert_eq!(t.tombstone_epoch("n"), None);
    }
}

/// The two flags live in the slot's flag byte: a slot stays 52 bytes.
#[test]
fn the_allowance_costs_a_slot_no_byte() {
    assert_eq!(std::mem::size_of::<super::slab::Slot>(), 52);
}
