//! Unit tests of the table: the seed's scenarios in this API, then what it adds.

use super::*;
use crate::event::EdgeEvent;
use crate::ids::{Epoch, ShardId};
use crate::sweep::{CheckedVerdict, Verdict};
use std::time::Duration;

fn table() -> GhostTable {
    GhostTable::new(ShardId(0), TableConfig { grace: Duration::ZERO, ..TableConfig::default() }).unwrap()
}

fn verdicts(t: &mut GhostTable, now: u64, f: impl Fn(&str) -> Verdict) -> crate::sweep::ApplyReport {
    let page = t.plan_sweep(now, usize::MAX);
    let v: Vec<_> = page.checks.iter().map(|c| CheckedVerdict::new(c, f(&c.node_id))).collect();
    t.apply_verdicts(&v, now)
}

/// Ids in the slot and in the arena, through growth of the index, removals
/// that move slots and compact the arena, and a rebuild from a snapshot.
#[test]
fn short_and_long_ids_survive_growth_removal_and_compaction() {
    let id = |i: usize| {
        if i.is_multiple_of(3) { format!("long-node-{i:05}-{}", "é".repeat(20)) } else { format!("n{i}") }
    };
    let mut t = table();
    for i in 0..3000 {
        t.insert(&id(i), ShardId(1 + (i % 7) as u16), 1, Epoch(1), 0).unwrap();
    }
    // Purges most long ids: well past the arena's compaction threshold.
    let purged = |i: usize| (i.is_multiple_of(3) || i.is_multiple_of(5)) && !i.is_multiple_of(4);
    for i in (0..3000).filter(|&i| purged(i)) {
        assert_eq!(t.edge_removed(&id(i)), EdgeOutcome::Purged, "{}", id(i));
    }
    let live = |i: &usize| !purged(*i);
    let check = |t: &GhostTable| {
        for i in 0..3000 {
            let want = live(&i).then_some(ShardId(1 + (i % 7) as u16));
            assert_eq!(t.resolve(&id(i)), want, "{}", id(i));
        }
        let mut ids: Vec<String> = t.iter().map(|(s, _)| s.to_owned()).collect();
        ids.sort();
        let mut want: Vec<String> = (0..3000).filter(live).map(id).collect();
        want.sort();
        assert_eq!(ids, want);
    };
    check(&t);
    let bytes = crate::codec::encode_snapshot(&t).unwrap();
    let back = crate::codec::decode_snapshot(&bytes, ShardId(0), &TableConfig::default()).unwrap();
    check(&back);
}

#[test]
fn lifecycle_purges_when_the_last_edge_goes() {
    let mut t = table();
    t.insert("node-42", ShardId(10), 3, Epoch(1), 0).unwrap();
    assert_eq!(t.resolve("node-42"), Some(ShardId(10)));
    assert_eq!(t.resolve("elsewhere"), None);
    assert_eq!(t.edge_removed("node-42"), EdgeOutcome::Applied { refcount: 2 });
    assert_eq!(t.edge_removed("node-42"), EdgeOutcome::Applied { refcount: 1 });
    assert_eq!(t.edge_removed("node-42"), EdgeOutcome::Purged);
    assert!(t.is_empty());
    assert_eq!(t.counters().purged_refcount_zero, 1);
}

#[test]
fn an_added_edge_needs_one_more_removal() {
    let mut t = table();
    t.insert("n1", ShardId(5), 1, Epoch(1), 0).unwrap();
    assert_eq!(t.edge_added("n1"), EdgeOutcome::Applied { refcount: 2 });
    assert_eq!(t.edge_removed("n1"), EdgeOutcome::Applied { refcount: 1 });
    assert_eq!(t.edge_removed("n1"), EdgeOutcome::Purged);
}

#[test]
fn a_sweep_applies_purge_keep_and_inconclusive() {
    let mut t = table();
    t.insert("stale", ShardId(5), 1, Epoch(1), 0).unwrap();
    t.insert("alive", ShardId(6), 2, Epoch(1), 0).unwrap();
    t.insert("unreachable", ShardId(7), 1, Epoch(1), 0).unwrap();
    let r = verdicts(&mut t, 10, |id| match id {
        "stale" => Verdict::Purge,
        "unreachable" => Verdict::Inconclusive,
        _ => Verdict::Keep { local_edges: None },
    });
    assert_eq!((r.purged, r.kept, r.inconclusive, r.stale), (1, 1, 1, 0));
    assert_eq!(t.len(), 2);
    assert!(t.get("stale").is_none());
}

#[test]
fn zero_refcount_ghosts_are_purged_without_a_remote_call() {
    let mut t = table();
    t.insert("zero-ref", ShardId(5), 0, Epoch(1), 0).unwrap();
    let page = t.plan_sweep(10, 100);
    assert!(page.checks.is_empty());
    assert_eq!(page.purged_zero, 1);
    assert!(t.is_empty());
}

#[test]
fn resolve_many_serves_a_traversal_frontier() {
    let mut t = table();
    t.insert("migrated-node", ShardId(42), 5, Epoch(1), 0).unwrap();
    assert_eq!(t.resolve_many(["local", "migrated-node"]), vec![None, Some(ShardId(42))]);
}

#[test]
fn refcount_never_wraps_nor_underflows() {
    let mut t = table();
    t.insert("n", ShardId(1), u32::MAX, Epoch(1), 0).unwrap();
    assert_eq!(t.edge_added("n"), EdgeOutcome::Saturated);
    assert_eq!(t.get("n").unwrap().refcount, u32::MAX);
    assert_eq!(t.counters().saturated, 1);
    t.insert("z", ShardId(1), 0, Epoch(1), 0).unwrap();
    assert_eq!(t.edge_removed("z"), EdgeOutcome::Purged);
}

#[test]
fn events_for_unknown_nodes_are_counted_not_errors() {
    let mut t = table();
    assert_eq!(t.edge_added("nobody"), EdgeOutcome::UnknownNode);
    assert_eq!(t.edge_removed("nobody"), EdgeOutcome::UnknownNode);
    assert_eq!(t.counters().unknown_edge_events, 2);
}

#[test]
fn epochs_order_moves() {
    let mut t = table();
    assert_eq!(t.insert("n", ShardId(1), 1, Epoch(5), 0).unwrap(), InsertOutcome::Inserted);
    assert_eq!(t.insert("n", ShardId(1), 1, Epoch(5), 0).unwrap(), InsertOutcome::Duplicate);
    assert_eq!(t.insert("n", ShardId(2), 1, Epoch(4), 0).unwrap(), InsertOutcome::Stale);
    assert_eq!(t.retarget("n", ShardId(3), Epoch(5)).unwrap(), MoveOutcome::Stale);
    assert_eq!(t.retarget("n", ShardId(3), Epoch(6)).unwrap(), MoveOutcome::Applied);
    assert_eq!(t.resolve("n"), Some(ShardId(3)));
    assert_eq!(t.reclaim("n", Epoch(6), 0), Ok(MoveOutcome::Stale));
    assert_eq!(t.reclaim("n", Epoch(7), 0), Ok(MoveOutcome::Applied));
    assert!(t.is_empty());
    assert_eq!(t.counters().purged_reclaimed, 1);
    assert_eq!(t.insert("m", ShardId(1), 1, Epoch(1), 0).unwrap(), InsertOutcome::Inserted);
    assert_eq!(t.insert("m", ShardId(2), 3, Epoch(2), 50).unwrap(), InsertOutcome::Replaced);
    let g = t.get("m").unwrap();
    assert_eq!((g.target_shard, g.refcount, g.created_at_ms), (ShardId(2), 3, 50));
}

#[test]
fn bad_ids_and_self_targets_are_typed_errors() {
    let mut t = table();
    assert!(matches!(t.insert("", ShardId(1), 1, Epoch(1), 0), Err(Error::InvalidNodeId { .. })));
    let long = "x".repeat(2000);
    assert!(matches!(t.insert(&long, ShardId(1), 1, Epoch(1), 0), Err(Error::InvalidNodeId { .. })));
    assert_eq!(t.insert("n", ShardId(0), 1, Epoch(1), 0), Err(Error::SelfTarget { shard: ShardId(0) }));
    t.insert("n", ShardId(1), 1, Epoch(1), 0).unwrap();
    assert_eq!(t.retarget("n", ShardId(0), Epoch(2)), Err(Error::SelfTarget { shard: ShardId(0) }));
    assert!(t.is_empty() || t.len() == 1);
}

#[test]
fn replayed_batches_are_skipped() {
    let mut t = table();
    t.insert("n", ShardId(1), 1, Epoch(1), 0).unwrap();
    let batch = EdgeEvents::from([EdgeEvent::added("n"), EdgeEvent::added("n"), EdgeEvent::removed("x")]);
    let out = t.apply_batch(Some(10), &batch);
    assert_eq!((out.skipped, out.applied, out.unknown), (false, 2, 1));
    assert!(t.apply_batch(Some(10), &batch).skipped);
    assert!(t.apply_batch(Some(9), &batch).skipped);
    assert_eq!(t.get("n").unwrap().refcount, 3);
    assert_eq!(t.applied_seq(), Some(10));
    assert!(!t.apply_batch(None, &batch).skipped);
    assert_eq!(t.applied_seq(), Some(10));
}

#[test]
fn a_verdict_on_a_changed_stub_is_stale() {
    let mut t = table();
    t.insert("n", ShardId(1), 1, Epoch(1), 0).unwrap();
    let page = t.plan_sweep(10, 10);
    t.edge_added("n");
    let v = [CheckedVerdict::new(&page.checks[0], Verdict::Purge)];
    let r = t.apply_verdicts(&v, 10);
    assert_eq!((r.stale, r.purged), (1, 0));
    assert_eq!(t.get("n").unwrap().refcount, 2);
}

#[test]
fn keep_with_a_count_repairs_the_refcount() {
    let mut t = table();
    t.insert("a", ShardId(1), 5, Epoch(1), 0).unwrap();
    t.insert("b", ShardId(1), 5, Epoch(1), 0).unwrap();
    // Counts lower refcounts only at the log position the shard applied.
    t.apply_batch(Some(4), &crate::EdgeEvents::new());
    let count = |n| Verdict::Keep { local_edges: Some(crate::LocalEdges::at(n, 4)) };
    let r = verdicts(&mut t, 10, |id| count(if id == "a" { 2 } else { 0 }));
    assert_eq!((r.corrected, r.kept, r.purged), (2, 2, 0));
    assert_eq!(t.get("a").unwrap().refcount, 2);
    // Repaired to zero: kept for now (an edge may be in flight), purged by a later plan.
    assert_eq!(t.get("b").unwrap().refcount, 0);
    let mut purged = 0;
    loop {
        let page = t.plan_sweep(20, 10);
        purged += page.purged_zero;
        if page.pass_complete {
            break;
        }
    }
    assert_eq!(purged, 1);
    assert!(t.get("b").is_none());
}

#[test]
fn redirects_follow_chained_moves_and_moves_back() {
    let mut t = table();
    t.insert("c", ShardId(1), 2, Epoch(1), 0).unwrap();
    t.insert("back", ShardId(1), 2, Epoch(1), 0).unwrap();
    t.insert("old", ShardId(1), 2, Epoch(3), 0).unwrap();
    let r = verdicts(&mut t, 10, |id| match id {
        "c" => Verdict::Redirect { shard: ShardId(2), epoch: Epoch(2) },
        "back" => Verdict::Redirect { shard: ShardId(0), epoch: Epoch(2) },
        _ => Verdict::Redirect { shard: ShardId(2), epoch: Epoch(3) },
    });
    assert_eq!((r.redirected, r.reclaimed, r.stale), (1, 1, 1));
    assert_eq!(t.resolve("c"), Some(ShardId(2)));
    assert_eq!(t.resolve("back"), None);
    assert_eq!(t.resolve("old"), Some(ShardId(1)));
}

/// Plans one single-stub page at `now`; returns the check if the stub was due.
fn probe(t: &mut GhostTable, now: u64) -> Option<crate::sweep::PlannedCheck> {
    loop {
        let page = t.plan_sweep(now, 1);
        if page.scanned == 1 {
            return page.checks.into_iter().next();
        }
    }
}

#[test]
fn grace_and_back_off_delay_candidates() {
    let cfg = TableConfig {
        grace: Duration::from_millis(100),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(40),
        ..TableConfig::default()
    };
    let mut t = GhostTable::new(ShardId(0), cfg).unwrap();
    t.insert("n", ShardId(1), 1, Epoch(1), 1_000).unwrap();
    assert!(probe(&mut t, 1_099).is_none(), "inside the grace period");
    let mut now = 1_100;
    let mut delays = Vec::new();
    for _ in 0..6 {
        let check = probe(&mut t, now).expect("due");
        t.apply_verdicts(&[CheckedVerdict::new(&check, Verdict::Inconclusive)], now);
        let start = now;
        now += 1;
        while probe(&mut t, now).is_none() {
            now += 1;
        }
        delays.push(now - start);
    }
    for (k, d) in delays.iter().enumerate() {
        let full = (10u64 << k).min(40);
        assert!((full / 2..=full).contains(d), "retry {k}: delay {d} outside [{}, {full}]", full / 2);
    }
    assert!(t.get("n").is_some(), "inconclusive never purges");
    // A conclusive verdict clears the back-off: the next pass sees it at once.
    let check = probe(&mut t, now).unwrap();
    t.apply_verdicts(&[CheckedVerdict::new(&check, Verdict::Keep { local_edges: None })], now);
    assert!(probe(&mut t, now).is_some());
}

#[test]
fn a_pass_visits_every_stub_despite_removals() {
    let mut t = table();
    for i in 0..100 {
        t.insert(&format!("n{i}"), ShardId(1), 1, Epoch(1), 0).unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    loop {
        let page = t.plan_sweep(10, 7);
        pages += 1;
        for c in &page.checks {
            seen.insert(c.node_id.to_string());
        }
        // Remove a visited and an unvisited stub while the pass runs.
        for c in page.checks.iter().take(1) {
            let n: usize = c.node_id[1..].parse().unwrap();
            t.edge_removed(&format!("n{}", (n * 7 + 3) % 100));
        }
        if page.pass_complete {
            break;
        }
    }
    let survivors: std::collections::HashSet<_> = t.iter().map(|(id, _)| id.to_string()).collect();
    assert!(survivors.is_subset(&seen), "every survivor was visited");
    assert!(pages <= 100 / 7 + 2);
}

#[test]
fn changes_drain_upserts_removals_and_sequence() {
    let mut t = table();
    t.insert("a", ShardId(1), 1, Epoch(1), 0).unwrap();
    t.insert("b", ShardId(1), 1, Epoch(1), 0).unwrap();
    t.apply_batch(Some(3), &[EdgeEvent::removed("a")].into());
    let c = t.take_changes();
    assert_eq!(c.upserts().map(|r| r.node_id).collect::<Vec<_>>(), ["b"]);
    assert_eq!(c.removals().collect::<Vec<_>>(), ["a"]);
    assert_eq!(c.applied_seq(), Some(3));
    assert!(!t.has_changes());
    t.edge_added("b");
    assert_eq!(t.take_changes().upserts().next().unwrap().refcount, 2);
}

#[test]
fn stats_report_age_and_counters() {
    let mut t = table();
    assert_eq!(t.stats(5).oldest_age_ms, None);
    t.insert("a", ShardId(1), 1, Epoch(1), 100).unwrap();
    t.insert("b", ShardId(1), 1, Epoch(1), 300).unwrap();
    t.edge_added("ghostless");
    let s = t.stats(1_000);
    assert_eq!((s.ghosts, s.oldest_age_ms), (2, Some(900)));
    assert_eq!(s.counters.unknown_edge_events, 1);
    assert_eq!(s.counters.inserted, 2);
}

#[test]
fn a_reclaim_refuses_the_stale_insert_that_follows_it() {
    let mut t = table();
    t.insert("n", ShardId(1), 2, Epoch(1), 0).unwrap();
    assert_eq!(t.reclaim("n", Epoch(2), 5), Ok(MoveOutcome::Applied));
    assert_eq!(
        t.insert("n", ShardId(1), 2, Epoch(1), 6).unwrap(),
        InsertOutcome::Stale,
        "a resent insert after A→B→A"
    );
    assert_eq!(
        t.insert("n", ShardId(1), 2, Epoch(2), 6).unwrap(),
        InsertOutcome::Stale,
        "at the reclaim's epoch too"
    );
    assert_eq!(t.resolve("n"), None);
    assert_eq!(
        t.insert("n", ShardId(1), 2, Epoch(3), 7).unwrap(),
        InsertOutcome::Inserted,
        "the next move away"
    );
    assert_eq!(t.tombstone_epoch("n"), None, "the new life's row replaces the tombstone");
}

#[test]
fn a_reclaim_after_a_purge_still_refuses_older_inserts() {
    let mut t = table();
    t.insert("n", ShardId(1), 1, Epoch(1), 0).unwrap();
    assert_eq!(t.edge_removed("n"), EdgeOutcome::Purged);
    assert_eq!(t.reclaim("n", Epoch(2), 5), Ok(MoveOutcome::UnknownNode));
    assert_eq!(t.insert("n", ShardId(1), 1, Epoch(1), 6).unwrap(), InsertOutcome::Stale);
    assert_eq!(t.tombstone_epoch("n"), Some(Epoch(2)));
}

/// Two tables with the same ghosts, `n` of them, refcount 1..=3.
fn twins(n: usize) -> (GhostTable, GhostTable) {
    let mut a = table();
    let mut b = table();
    for i in 0..n {
        for t in [&mut a, &mut b] {
            t.insert(&format!("n{i}"), ShardId(7), (i % 3) as u32 + 1, Epoch(1), 0).unwrap();
        }
    }
    (a, b)
}

fn events(ids: impl IntoIterator<Item = (usize, bool)>) -> crate::event::EdgeEvents {
    let mut e = crate::event::EdgeEvents::default();
    for (i, add) in ids {
        e.push(&format!("n{i}"), if add { EdgeKind::Added } else { EdgeKind::Removed });
    }
    e
}

fn contents(t: &GhostTable) -> Vec<(String, u16, u32)> {
    let mut v: Vec<_> = t.records().map(|r| (r.node_id.to_string(), r.target_shard, r.refcount)).collect();
    v.sort();
    v
}

/// What applying `batch` one event at a time does (each call hashes its own
/// id): the oracle for the batch paths, which hash ahead.
fn one_at_a_time(t: &mut GhostTable, batch: &crate::event::EdgeEvents) -> crate::event::BatchOutcome {
    let mut out = crate::event::BatchOutcome::default();
    for (id, kind) in batch.iter() {
        out.count(match kind {
            EdgeKind::Added => t.edge_added(id),
            EdgeKind::Removed => t.edge_removed(id),
        });
    }
    out
}

#[test]
fn batches_apply_as_their_events_one_at_a_time_do_warmed_or_not() {
    // 2500 events: three warm chunks, with purges (swap removals), ids
    // repeated within the batch, and ids purged earlier in the batch.
    let batches = [
        events((0..2500).map(|k| ((k * 7919) % 900, k % 3 == 0))),
        events((0..1500).map(|k| ((k * 31) % 1000, k % 2 == 0))),
        events((0..1100).map(|k| (k, false))),
    ];
    let (mut oracle, mut plain) = twins(1000);
    let (mut warmed, mut stranger) = twins(1000);
    for (seq, batch) in (1..).zip(&batches) {
        let want = one_at_a_time(&mut oracle, batch);
        assert_eq!(plain.apply_batch(Some(seq), batch), want, "apply_batch, batch {seq}");
        let mut w = warmed.warm_batch(batch);
        assert_eq!(warmed.apply_warmed(Some(seq), &mut w), want, "apply_warmed, batch {seq}");
        for t in [&plain, &warmed] {
            assert_eq!(contents(t), contents(&oracle), "batch {seq}");
        }
        assert!(want.purged > 0 && want.unknown > 0, "batch {seq} purged and missed: {want:?}");
    }
    // Warmed on another table (another hasher): its hashes are not used.
    let batch = events((0..1200).map(|k| ((k * 17) % 1000, k % 2 == 1)));
    stranger.apply_batch(None, &batches[0]);
    let mut w = stranger.warm_batch(&batch);
    let want = one_at_a_time(&mut oracle, &batch);
    assert_eq!(warmed.apply_warmed(None, &mut w), want, "another table's warm");
    assert_eq!(contents(&warmed), contents(&oracle));
    // Warmed, then the table changed before the apply: still right.
    let batch = events((0..1300).map(|k| ((k * 13) % 1000, k % 4 != 0)));
    let mut w = warmed.warm_batch(&batch);
    let between = events((0..400).map(|k| (k * 2, false)));
    one_at_a_time(&mut oracle, &between);
    warmed.apply_batch(None, &between);
    let want = one_at_a_time(&mut oracle, &batch);
    assert_eq!(warmed.apply_warmed(None, &mut w), want, "a warm older than the table");
    assert_eq!(contents(&warmed), contents(&oracle));
}

#[test]
fn a_warmed_replay_is_skipped_and_an_empty_batch_is_nothing() {
    let (mut t, _) = twins(10);
    let batch = events([(1, true)]);
    assert_eq!(t.apply_batch(Some(5), &batch).applied, 1);
    let mut w = t.warm_batch(&batch);
    assert!(t.apply_warmed(Some(5), &mut w).skipped);
    let empty = events([]);
    let mut w = t.warm_batch(&empty);
    assert_eq!(t.apply_warmed(None, &mut w), crate::event::BatchOutcome::default());
}

/// What a store holds after `c` is committed over `rows`, as the stores do
/// it: removals first, then upserts in order (the last one of an id wins).
fn commit_to(rows: &mut std::collections::BTreeMap<String, String>, c: &ChangeSet) {
    for id in c.removals() {
        rows.remove(id);
    }
    for s in c.upserts() {
        // Which batches a row holds is checked apart: here, the state.
        assert!(s.seq <= c.applied_seq().unwrap_or(0), "a row cannot hold a batch its set does not");
        rows.insert(s.node_id.to_owned(), format!("{:?}", StubRef { seq: 0, ..s }));
    }
}

/// The same changes to both tables: fresh inserts, edges on stubs already
/// stored (the dirty list), removals whose holes are filled by moving dirty
/// stubs (which lists a slot twice), and purges of stubs staged already.
fn churn(tables: [&mut GhostTable; 2], round: usize) {
    for t in tables {
        for i in 0..40 {
            t.insert(&format!("r{round}-{i}"), ShardId(3), 1, Epoch(1), 0).unwrap();
        }
        for i in (0..300).step_by(7) {
            t.edge_added(&format!("n{i}"));
        }
        for i in (round..300).step_by(11) {
            t.edge_removed(&format!("n{i}"));
            t.edge_removed(&format!("n{i}"));
        }
        t.edge_removed(&format!("r{round}-3"));
    }
}

#[test]
fn staging_ahead_stages_what_staging_does() {
    let (mut plain, mut ahead) = twins(300);
    let (mut stored_plain, mut stored_ahead) = Default::default();
    commit_to(&mut stored_plain, &plain.take_changes());
    commit_to(&mut stored_ahead, &ahead.take_changes());
    for round in 0..6 {
        churn([&mut plain, &mut ahead], round);
        plain.stage();
        let staged = ahead.stage_ahead();
        let ids: Vec<&str> = staged.changes.upserts().map(|s| s.node_id).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "round {round}: a stub copied twice");
        assert!(ids.len() > 40, "round {round}: {} copied", ids.len());
        if round % 3 == 2 {
            // Changed between the copy and the commit: the copies are stale
            // and must not be what is staged.
            churn([&mut plain, &mut ahead], round + 100);
            plain.stage();
        }
        ahead.commit_staged(staged);
        assert!(!ahead.slab.has_dirty(), "round {round}: everything dirty was staged");
        if round % 2 == 1 {
            commit_to(&mut stored_plain, &plain.take_changes());
            commit_to(&mut stored_ahead, &ahead.take_changes());
            assert_eq!(stored_ahead, stored_plain, "round {round}");
            let rows: std::collections::BTreeMap<_, _> =
                ahead.records().map(|r| (r.node_id.to_string(), r.refcount)).collect();
            assert!(rows.keys().eq(stored_ahead.keys()), "round {round}: the store holds the table's ghosts");
        }
    }
    assert_eq!(contents(&ahead), contents(&plain));
}

#[test]
fn staging_ahead_survives_each_change_between_its_steps() {
    use std::collections::BTreeMap;
    // Between the copy and the commit: 0 nothing; 1 an edge on a stub dirty
    // already (the slab's part of the stamp stays, the version moves); 2 a
    // purge (no version bump); 3 a flush taking the changes; 4 the same with
    // no fresh stub (only the dirty list's length moves). 5: before the copy,
    // a clean stub moved into a listed slot by a purge (the list names a
    // clean slot), purged after the commit.
    for case in 0..6 {
        let (mut t, _) = twins(20);
        let mut stored = BTreeMap::new();
        commit_to(&mut stored, &t.take_changes());
        t.apply_batch(Some(1), &events([]));
        commit_to(&mut stored, &t.take_changes());
        // A zero count at the shard's log position: n5 is held, not purged,
        // and its hold is a persisted field of the copy.
        let zero =
            |id: &str| Verdict::Keep { local_edges: (id == "n5").then(|| crate::LocalEdges::at(0, 1)) };
        verdicts(&mut t, 10, zero);
        assert_eq!(t.get("n5").unwrap().refcount, 0);
        // Nothing removed since the flush: the copies join an empty pending set.
        t.edge_added("n1");
        t.edge_added("n3");
        if case != 4 {
            t.insert("p", ShardId(7), 1, Epoch(1), 0).unwrap();
        }
        if case == 5 {
            commit_to(&mut stored, &t.take_changes());
            t.edge_added("n0");
            while t.get("n0").is_some() {
                t.edge_removed("n0");
            }
        }
        let staged = t.stage_ahead();
        match case {
            1 => drop(t.edge_added("n1")),
            2 => assert_eq!(t.edge_removed("p"), EdgeOutcome::Purged),
            3 | 4 => commit_to(&mut stored, &t.take_changes()),
            _ => {}
        }
        t.commit_staged(staged);
        // Staged ahead, then purged in the same window: the removals win.
        // (In case 5, the purge of n0 moved the last stub, `p`, into its slot.)
        for gone in ["n3", "n19", "p"].into_iter().filter(|id| case == 5 || *id != "p") {
            while t.get(gone).is_some() {
                t.edge_removed(gone);
            }
        }
        commit_to(&mut stored, &t.take_changes());
        let rows: BTreeMap<String, String> =
            t.rows().map(|r| (r.node_id.to_owned(), format!("{r:?}"))).collect();
        assert_eq!(stored, rows, "case {case}");
        assert!(
            rows["n5"].contains("refcount: 0") && !rows["n5"].contains("hold_until_ms: 0"),
            "{}",
            rows["n5"]
        );
    }
}

/// Rows a store landed from a commit whose sequence number did not land:
/// each holds batches up to its `seq`, so replaying those batches skips its
/// events, and a later batch applies them again; rows at or below the applied
/// number change nothing.
#[test]
fn rows_stored_past_the_applied_seq_skip_the_replayed_batches_they_hold() {
    let rows = [row("torn", 1, 3), row("old", 2, 2), row("plain", 2, 0)];
    let mut t = GhostTable::from_records(ShardId(0), TableConfig::default(), rows, Some(2)).unwrap();
    let removes = |ids: &[&str]| ids.iter().map(|&id| EdgeEvent::removed(id)).collect::<EdgeEvents>();
    let out = t.apply_batch(Some(3), &removes(&["torn", "old", "plain"]));
    assert_eq!(out.applied, 2, "batch 3 is in torn's row already");
    assert_eq!(t.counters().replayed_events_skipped, 1);
    assert_eq!(t.get("torn").map(|g| g.refcount), Some(1));
    assert_eq!((t.get("old").map(|g| g.refcount), t.get("plain").map(|g| g.refcount)), (Some(1), Some(1)));
    // Past the row's number, its events count again.
    t.apply_batch(Some(4), &removes(&["torn"]));
    assert_eq!(t.get("torn"), None, "purged at zero");
    // What the table writes says which batches each row holds.
    t.apply_batch(Some(5), &removes(&["old"]));
    assert_eq!(t.get("plain").map(|g| g.refcount), Some(1));
    assert!(t.take_changes().upserts().all(|r| r.seq == 5));
}

/// A row stored ahead (seq 5, the shard at 3) is written again before the
/// resend of batch 5 (a retarget): it still holds batch 5, so the row says
/// so, and the shard reloaded from it does not count batch 5's removal twice.
#[test]
fn a_row_stored_ahead_and_written_again_still_holds_its_batches() {
    let mut t = GhostTable::from_records(
        ShardId(0),
        TableConfig::default(),
        [row("x", 1, 5), row("y", 3, 0)],
        Some(3),
    )
    .unwrap();
    t.apply_batch(Some(4), &[EdgeEvent::added("y")].into_iter().collect::<EdgeEvents>());
    t.retarget("x", ShardId(2), Epoch(2)).unwrap();
    let changes = t.take_changes();
    let stored: Vec<StubRecord> = changes.upserts().map(|r| r.to_record()).collect();
    assert_eq!(stored.iter().find(|r| r.node_id == "x").map(|r| r.seq), Some(5));
    let mut again =
        GhostTable::from_records(ShardId(0), TableConfig::default(), stored, changes.applied_seq()).unwrap();
    again.apply_batch(Some(5), &[EdgeEvent::removed("x")].into_iter().collect::<EdgeEvents>());
    assert_eq!(again.get("x").map(|g| g.refcount), Some(1), "batch 5 is in x's row already");
}

/// A snapshot cannot say which batches a row holds: a table with rows stored
/// ahead of its sequence number refuses to encode one until they are applied.
#[test]
fn a_table_with_rows_ahead_refuses_a_snapshot_until_their_batches_are_resent() {
    let mut t =
        GhostTable::from_records(ShardId(0), TableConfig::default(), [row("x", 1, 5)], Some(3)).unwrap();
    assert!(matches!(crate::codec::encode_snapshot(&t), Err(Error::Encode { .. })));
    t.apply_batch(Some(4), &EdgeEvents::new());
    t.apply_batch(Some(5), &[EdgeEvent::removed("x")].into_iter().collect::<EdgeEvents>());
    assert_eq!(t.get("x").map(|g| g.refcount), Some(1), "batch 5 is in x's row");
    assert!(crate::codec::encode_snapshot(&t).is_ok());
}

/// A stored ghost row of `refcount` edges that holds the batches up to `seq`.
fn row(id: &str, refcount: u32, seq: u64) -> StubRecord {
    StubRecord {
        node_id: id.into(),
        target_shard: 1,
        refcount,
        created_at_ms: 0,
        epoch: 1,
        hold_until_ms: 0,
        tombstone: false,
        seq,
    }
}

/// A table of `n` ghosts named `{prefix}{i}`, every fifth id long (in the
/// arena), some held at zero, some reclaimed (tombstones), flushed.
fn varied(prefix: &str, n: usize) -> GhostTable {
    let id = |i: usize| {
        if i.is_multiple_of(5) { format!("{prefix}{i}-{}", "x".repeat(30)) } else { format!("{prefix}{i}") }
    };
    let mut t = GhostTable::new(ShardId(0), TableConfig::default()).unwrap();
    for i in 0..n {
        t.insert(&id(i), ShardId(1 + (i % 9) as u16), 1 + (i % 3) as u32, Epoch(1), 10).unwrap();
    }
    for i in (0..n).filter(|i| i.is_multiple_of(7)) {
        t.reclaim(&id(i), Epoch(2), 20).unwrap();
    }
    // Down to zero: purged, or held for the grace period.
    for i in (0..n).filter(|i| i % 11 == 1) {
        for _ in 0..3 {
            t.edge_removed(&id(i));
        }
    }
    t.take_changes();
    t
}

fn sorted_rows(t: &GhostTable) -> Vec<StubRecord> {
    let mut rows: Vec<StubRecord> = t.rows().map(|r| r.to_record()).collect();
    rows.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    rows
}

/// A table decoded into a dropped table's memory, larger or smaller, holds
/// exactly what one decoded afresh holds, and nothing of the dropped one;
/// then both answer the same operations alike.
#[test]
fn a_table_built_in_a_dropped_tables_memory_holds_only_its_own_rows() {
    for (old_n, new_n) in [(5000, 300), (300, 5000), (2000, 2000), (0, 100)] {
        let bytes = crate::codec::encode_snapshot(&varied("new-", new_n)).unwrap();
        let config = TableConfig::default();
        let mut fresh = crate::codec::decode_snapshot(&bytes, ShardId(0), &config).unwrap();
        let memory = varied("old-", old_n).into_memory();
        let mut reused = crate::codec::decode_snapshot_reusing(&bytes, ShardId(0), &config, memory).unwrap();
        assert_eq!(sorted_rows(&reused), sorted_rows(&fresh), "{old_n} -> {new_n}");
        assert_eq!(reused.len(), fresh.len());
        for i in 0..old_n.max(new_n) {
            for id in [format!("old-{i}"), format!("new-{i}")] {
                assert_eq!(reused.resolve(&id), fresh.resolve(&id), "{id}");
                assert_eq!(reused.tombstone_epoch(&id), fresh.tombstone_epoch(&id), "{id}");
            }
        }
        for i in 0..new_n + 50 {
            let id = format!("new-{i}");
            assert_eq!(reused.edge_added(&id), fresh.edge_added(&id), "{id}");
            let more = format!("more-{i}");
            assert_eq!(
                reused.insert(&more, ShardId(4), 1, Epoch(3), 30).unwrap(),
                fresh.insert(&more, ShardId(4), 1, Epoch(3), 30).unwrap()
            );
        }
        let (a, b) = (reused.take_changes(), fresh.take_changes());
        assert_eq!((a.upserts().len(), a.removals().len()), (b.upserts().len(), b.removals().len()));
        assert_eq!(sorted_rows(&reused), sorted_rows(&fresh));
    }
}

/// An empty table in a dropped table's memory of its own size finds none of
/// the dropped table's ids, and grows past that memory as a fresh one does.
#[test]
fn a_table_started_in_dropped_memory_grows_past_it() {
    let memory = varied("old-", 5000).into_memory();
    let mut t = GhostTable::with_memory(ShardId(0), TableConfig::default(), 5000, memory).unwrap();
    for i in 0..10 {
        t.insert(&format!("n{i}"), ShardId(2), 1, Epoch(1), 0).unwrap();
    }
    assert!((0..5000).all(|i| t.resolve(&format!("old-{i}")).is_none()));
    assert!((0..10).all(|i| t.resolve(&format!("n{i}")) == Some(ShardId(2))));

    let memory = varied("old-", 1000).into_memory();
    let mut t = GhostTable::with_memory(ShardId(0), TableConfig::default(), 10, memory).unwrap();
    assert!(t.is_empty());
    assert_eq!(t.resolve("old-1"), None);
    for i in 0..5000 {
        t.insert(&format!("n{i}"), ShardId(2), 1, Epoch(1), 0).unwrap();
    }
    assert_eq!(t.len(), 5000);
    assert!((0..5000).all(|i| t.resolve(&format!("n{i}")) == Some(ShardId(2))));
    assert!((0..1000).all(|i| t.resolve(&format!("old-{i}")).is_none()));
}

/// A large load in the memory of a larger table with other ids, long and
/// short: only its own ids are found.
#[test]
fn a_large_load_in_dropped_memory_finds_only_its_own_ids() {
    let new = |i: usize| {
        if i.is_multiple_of(5) { format!("new-{i}-{}", "x".repeat(30)) } else { format!("new-{i}") }
    };
    let old = |i: usize| {
        if i.is_multiple_of(3) { format!("old-{i}-{}", "y".repeat(30)) } else { format!("old-{i}") }
    };
    let mut source = GhostTable::new(ShardId(0), TableConfig::default()).unwrap();
    let mut dropped = GhostTable::new(ShardId(0), TableConfig::default()).unwrap();
    for i in 0..100_000 {
        if i < 70_000 {
            source.insert(&new(i), ShardId(1), 1, Epoch(1), 0).unwrap();
        }
        dropped.insert(&old(i), ShardId(2), 1, Epoch(1), 0).unwrap();
    }
    let rows: Vec<StubRecord> = source.records().collect();
    let (n, memory) = (rows.len(), dropped.into_memory());
    let loaded = GhostTable::load_distinct(ShardId(0), TableConfig::default(), n, None, memory, |load| {
        rows.iter().try_for_each(|r| load.push(r.into()))
    })
    .unwrap();
    assert_eq!(loaded.len(), 70_000);
    for i in 0..100_000 {
        assert_eq!(loaded.resolve(&new(i)), (i < 70_000).then_some(ShardId(1)), "{}", new(i));
        assert_eq!(loaded.resolve(&old(i)), None, "{}", old(i));
    }
}

/// Memory short of room grows to what the new table needs, as a fresh
/// table would, not to twice what it had.
#[test]
fn dropped_memory_short_of_room_grows_to_the_room_asked() {
    let memory = varied("old-", 1000).into_memory();
    assert!(memory.capacity() >= 1000);
    let asked = memory.capacity() + 200;
    let t = GhostTable::with_memory(ShardId(0), TableConfig::default(), asked, memory).unwrap();
    // The room asked, to a bucket (twelve positions), not twice what it had.
    let room = t.into_memory().capacity();
    assert!((asked..asked + 12).contains(&room), "room for {room}, asked {asked}");
}

/// A load places its stubs a chunk at a time: a repeated id is refused
/// whether it repeats within a chunk or across chunks, short or long, and
/// the load's own ids are all found, in a table sized too small or right.
#[test]
fn a_load_refuses_a_repeated_id_within_a_chunk_or_across_and_finds_every_other() {
    let id =
        |i: usize| if i.is_multiple_of(4) { format!("long-{i}-{}", "z".repeat(24)) } else { format!("n{i}") };
    let record = |i: usize| StubRecord {
        node_id: id(i),
        target_shard: 1 + (i % 7) as u16,
        refcount: 1 + (i % 5) as u32,
        created_at_ms: i as u64,
        epoch: 1,
        hold_until_ms: 0,
        tombstone: false,
        seq: 0,
    };
    let load = |rows: &[StubRecord], capacity: usize| {
        GhostTable::load_distinct(
            ShardId(0),
            TableConfig::default(),
            capacity,
            None,
            TableMemory::default(),
            |l| rows.iter().try_for_each(|r| l.push(r.into())),
        )
    };
    let rows: Vec<StubRecord> = (0..3000).map(record).collect();
    for capacity in [0, 3000] {
        let t = load(&rows, capacity).unwrap();
        assert_eq!(t.len(), 3000);
        assert!(!t.has_changes(), "a load owes the store nothing");
        for r in &rows {
            let g = t.get(&r.node_id).unwrap();
            assert_eq!(
                (g.target_shard.get(), g.refcount, g.created_at_ms),
                (r.target_shard, r.refcount, r.created_at_ms)
            );
        }
        assert_eq!(t.get("n3001"), None);
    }
    // (first, repeat): within the first chunk, across chunks, in the last
    // partial chunk; a short id and a long one each.
    for (first, again) in [(1, 7), (4, 100), (5, 2000), (8, 1300), (2999, 2998)] {
        let mut rows = rows.clone();
        rows[again] = StubRecord { node_id: id(first), ..rows[again].clone() };
        let e = load(&rows, rows.len()).unwrap_err();
        assert!(matches!(e, Error::Decode(crate::error::DecodeError::Malformed(_))), "{first}/{again}: {e}");
    }
}

/// A load large enough to place its stubs on a helper thread: every stub
/// found, a repeated id refused (the thread's error, not the scan's), and a
/// scan that fails part way fails the load with its own error.
#[test]
fn a_large_load_places_on_its_thread_refuses_a_repeat_and_reports_a_failed_scan() {
    let n = super::load::PARALLEL_FROM + 5000;
    let id =
        |i: usize| if i.is_multiple_of(3) { format!("long-{i}-{}", "q".repeat(20)) } else { format!("s{i}") };
    let rows: Vec<StubRecord> =
        (0..n).map(|i| StubRecord { refcount: 1 + (i % 4) as u32, ..row(&id(i), 1, 0) }).collect();
    let load = |rows: &[StubRecord], fail_at: Option<usize>| {
        GhostTable::load_distinct(
            ShardId(0),
            TableConfig::default(),
            rows.len(),
            Some(9),
            TableMemory::default(),
            |l| {
                for (i, r) in rows.iter().enumerate() {
                    if Some(i) == fail_at {
                        return Err(Error::store("scan failed"));
                    }
                    l.push(r.into())?;
                }
                Ok(())
            },
        )
    };
    let t = load(&rows, None).unwrap();
    assert_eq!((t.len(), t.applied_seq()), (n, Some(9)));
    assert!(!t.has_changes());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(t.get(&r.node_id).map(|g| g.refcount), Some(1 + (i % 4) as u32), "{}", r.node_id);
    }
    let mut repeated = rows.clone();
    repeated[n - 10].node_id = id(3);
    let e = load(&repeated, None).unwrap_err();
    assert!(matches!(e, Error::Decode(crate::error::DecodeError::Malformed(_))), "{e}");
    let e = load(&rows, Some(n / 2)).unwrap_err();
    assert!(e.to_string().contains("scan failed"), "{e}");
}

/// Inserts and purges churning a table just under a growth, small (two
/// buckets) and larger: no bucket with room keeps a count (before removals
/// moved keys back, the counts spread until a lookup of an absent id never
/// ended), every live ghost is found with its own count and hold, and a
/// sweep pass taken across the churn visits every ghost that lived through it.
#[test]
fn churn_keeps_lookups_short_and_every_ghost_found_and_swept() {
    let mut rng = fastrand::Rng::with_seed(7);
    for (rounds, low, high, ops) in [(40, 12, 22, 1500), (2, 9_000, 10_400, 40_000)] {
        for round in 0..rounds {
            let mut t = table();
            let mut live: Vec<(String, u32)> = Vec::new();
            let mut next = 0u64;
            // A pass begun now: the ghosts alive from here to its end must all be visited.
            let mut seen = std::collections::HashSet::new();
            let mut through: Option<std::collections::HashSet<String>> = None;
            let mut passes_checked = 0;
            for op in 0..ops {
                if live.len() < low || (live.len() < high && rng.bool()) {
                    let id = format!("r{round}-n{next}");
                    next += 1;
                    let count = 1 + (next % 3) as u32;
                    t.insert(&id, ShardId(1), count, Epoch(1), 0).unwrap();
                    live.push((id, count));
                } else {
                    let (id, count) = live.swap_remove(rng.usize(..live.len()));
                    for _ in 1..count {
                        t.edge_removed(&id);
                    }
                    assert_eq!(t.edge_removed(&id), EdgeOutcome::Purged, "{id}");
                    if let Some(through) = &mut through {
                        through.remove(&id);
                    }
                }
                if op == ops / 2 {
                    through = Some(live.iter().map(|(id, _)| id.clone()).collect());
                }
                if through.is_some() && op % 7 == 0 {
                    let page = t.plan_sweep(0, 5);
                    seen.extend(page.checks.iter().map(|c| c.node_id.to_string()));
                    if page.pass_complete {
                        let missed: Vec<_> = through.take().unwrap().difference(&seen).cloned().collect();
                        assert!(missed.is_empty(), "round {round}: the pass skipped {missed:?}");
                        passes_checked += 1;
                    }
                }
                assert_eq!(t.slab.passed_with_room(), 0, "round {round}, op {op}");
            }
            assert_eq!(passes_checked, 1, "round {round}: the pass across the churn never ended");
            assert_eq!(t.resolve("absent-id"), None);
            for (id, count) in &live {
                let g = t.get(id).unwrap_or_else(|| panic!("{id} lost"));
                assert_eq!(g.refcount, *count, "{id}");
            }
            assert_eq!(t.len(), live.len());
        }
    }
}

/// Edge events and purges between flushes of a table kept nearly full, so
/// that purges move ghosts whose changes are not yet flushed (and new ones,
/// and ones moved before): after every flush, a store that applies the
/// changes (removals, then upserts) holds exactly what the table does.
#[test]
fn every_change_reaches_the_store_while_removals_move_changed_ghosts() {
    use std::collections::HashMap;
    let flush = |t: &mut GhostTable, store: &mut HashMap<String, (u16, u32)>| {
        let changes = t.take_changes();
        for id in changes.removals() {
            store.remove(id);
        }
        for u in changes.upserts() {
            assert!(!u.tombstone);
            store.insert(u.node_id.to_owned(), (u.target_shard, u.refcount));
        }
        let held: HashMap<String, (u16, u32)> =
            t.records().map(|r| (r.node_id.clone(), (r.target_shard, r.refcount))).collect();
        assert_eq!(*store, held);
    };
    for seed in 0..40u64 {
        let config = TableConfig { grace: Duration::ZERO, hash_seed: Some(seed), ..TableConfig::default() };
        let mut t = GhostTable::new(ShardId(0), config).unwrap();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut store = HashMap::new();
        let mut live: Vec<String> = Vec::new();
        let mut next = 0;
        for round in 0..60 {
            // Back to 180 ghosts: sixteen buckets as full as they get before a growth.
            while live.len() < 180 {
                let id = format!("s{seed}-{next}");
                next += 1;
                t.insert(&id, ShardId(1 + (next % 7) as u16), 2, Epoch(1), 0).unwrap();
                live.push(id);
            }
            if round % 3 == 0 {
                flush(&mut t, &mut store);
            }
            for _ in 0..40 {
                let k = rng.usize(..live.len());
                if rng.u8(..4) == 0 {
                    t.edge_added(&live[k]);
                } else if t.edge_removed(&live[k]) == EdgeOutcome::Purged {
                    live.swap_remove(k);
                }
            }
            flush(&mut t, &mut store);
        }
    }
}
