//! The `GhostStore` contract, as checks any store must pass.

use super::*;
use vshard_ghosts::{EdgeEvents, Epoch, ShardId};

fn unwritten_shard_is_empty(s: &dyn GhostStore) {
    assert_eq!(loaded(s, ShardId(9)), (vec![], None));
    s.commit(&[]).unwrap();
    assert_eq!(loaded(s, ShardId(9)), (vec![], None));
}

fn removals_apply_before_upserts(s: &dyn GhostStore) {
    s.commit(&[changes(1, vec![rec("a", 2, 1), rec("b", 2, 1), rec("c", 2, 1)], &[], None)]).unwrap();
    // "b" removed and inserted again in one window: the upsert is the current state.
    s.commit(&[changes(1, vec![rec("b", 3, 7)], &["a", "b", "missing"], Some(1))]).unwrap();
    assert_eq!(loaded(s, ShardId(1)), (vec![rec("b", 3, 7), rec("c", 2, 1)], Some(1)));
}

fn applied_seq_only_rises(s: &dyn GhostStore) {
    s.commit(&[changes(4, vec![], &[], Some(10))]).unwrap();
    assert_eq!(loaded(s, ShardId(4)).1, Some(10));
    s.commit(&[changes(4, vec![], &[], Some(3))]).unwrap();
    s.commit(&[changes(4, vec![], &[], None)]).unwrap();
    assert_eq!(loaded(s, ShardId(4)).1, Some(10));
    s.commit(&[changes(4, vec![], &[], Some(11))]).unwrap();
    assert_eq!(loaded(s, ShardId(4)).1, Some(11));
}

fn commit_is_idempotent(s: &dyn GhostStore) {
    let batch = [changes(2, vec![rec("x", 1, 2)], &["y"], Some(5))];
    s.commit(&batch).unwrap();
    s.commit(&batch).unwrap();
    assert_eq!(loaded(s, ShardId(2)), (vec![rec("x", 1, 2)], Some(5)));
}

fn many_shards_in_one_commit(s: &dyn GhostStore) {
    let shards = [0, 1, 2, 500, u16::MAX - 1, u16::MAX];
    let batch: Vec<_> = shards
        .iter()
        .map(|&sh| {
            let ups = (0..20).map(|i| rec(&format!("n{sh}-{i}"), sh.wrapping_add(1), i)).collect();
            changes(sh, ups, &[], Some(u64::from(sh)))
        })
        .collect();
    s.commit(&batch).unwrap();
    for (sh, sc) in shards.iter().zip(&batch) {
        let mut want: Vec<StubRecord> = sc.changes.upserts().map(|r| r.to_record()).collect();
        want.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        assert_eq!(loaded(s, ShardId(*sh)), (want, Some(u64::from(*sh))), "shard {sh}");
    }
    assert_eq!(loaded(s, ShardId(3)), (vec![], None));
}

fn replace_touches_only_its_shard(s: &dyn GhostStore) {
    let edge = u16::MAX;
    s.commit(&[
        changes(7, vec![rec("old", 1, 1)], &[], Some(9)),
        changes(8, vec![rec("keep", 1, 1)], &[], Some(4)),
        changes(edge, vec![rec("last", 1, 1)], &[], Some(2)),
    ])
    .unwrap();
    let table = GhostTable::from_records(ShardId(7), cfg(), [rec("new", 2, 5)], Some(3)).unwrap();
    s.replace(&table).unwrap();
    assert_eq!(loaded(s, ShardId(7)), (vec![rec("new", 2, 5)], Some(3)));
    s.replace(&GhostTable::new(ShardId(edge), cfg()).unwrap()).unwrap();
    assert_eq!(loaded(s, ShardId(edge)), (vec![], None));
    assert_eq!(loaded(s, ShardId(8)), (vec![rec("keep", 1, 1)], Some(4)));
}

fn snapshot_round_trip_and_bad_import(s: &dyn GhostStore) {
    s.commit(&[changes(5, vec![rec("p", 1, 1), rec("q", 2, 2)], &[], Some(8))]).unwrap();
    let bytes = s.export_snapshot(ShardId(5), &cfg()).unwrap();
    s.import_snapshot(ShardId(6), &bytes, &cfg()).unwrap();
    // Stored `max_clock_skew` later: the snapshot's times may be on a clock behind this one.
    let skew = cfg().max_clock_skew.as_millis() as u64;
    let (mut want, seq) = loaded(s, ShardId(5));
    for r in &mut want {
        r.created_at_ms += skew;
        if r.hold_until_ms != 0 {
            r.hold_until_ms += skew;
        }
    }
    assert_eq!(loaded(s, ShardId(6)), (want, seq));

    let before = loaded(s, ShardId(6));
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    for junk in [&bad[..], &bytes[..bytes.len() - 1], b"not a snapshot", &[]] {
        assert!(s.import_snapshot(ShardId(6), junk, &cfg()).is_err());
        assert_eq!(loaded(s, ShardId(6)), before);
    }
}

pub(crate) type Check = (&'static str, fn(&dyn GhostStore));
pub(crate) const CHECKS: &[Check] = &[
    ("unwritten_shard_is_empty", unwritten_shard_is_empty),
    ("removals_apply_before_upserts", removals_apply_before_upserts),
    ("applied_seq_only_rises", applied_seq_only_rises),
    ("commit_is_idempotent", commit_is_idempotent),
    ("many_shards_in_one_commit", many_shards_in_one_commit),
    ("replace_touches_only_its_shard", replace_touches_only_its_shard),
    ("snapshot_round_trip_and_bad_import", snapshot_round_trip_and_bad_import),
];

/// What [`commit_cut_between_parts_is_all_or_nothing`] saw of the commits it cut.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CutOutcomes {
    /// Commits that failed.
    pub(crate) failed: usize,
    /// Of those, the ones that left nothing of the commit visible.
    pub(crate) none: usize,
    /// Of those, the ones that a later load saw whole, with the sequence number.
    pub(crate) all: usize,
}

/// The contract for a commit that fails part way (fencing, errors past the
/// retries): a later load sees none of it or all of it with its sequence
/// number, so that both ways a host recovers count every edge event once:
/// replaying the batch's events through a table loaded afresh (with the same
/// sequence number), and retrying the same batch.
///
/// For each `k` in `cuts`, on a shard of its own, `cut(Some(k))` arms the
/// store's fault (for `EtcdStore`: fail after `k` transactions) before the
/// commit of batch 2, and `cut(None)` disarms it right after. A store whose
/// commit is one transaction can map `Some(0)` to "fail, write nothing" and
/// any other `k` to "write, then fail".
pub(crate) fn commit_cut_between_parts_is_all_or_nothing(
    s: &dyn GhostStore,
    cut: &dyn Fn(Option<usize>),
    cuts: &[usize],
) -> CutOutcomes {
    const GHOSTS: usize = 60;
    let ids: Vec<String> = (0..GHOSTS).map(|i| format!("cut-{i:04}")).collect();
    let mut seen = CutOutcomes::default();
    for (round, &k) in cuts.iter().enumerate() {
        let shard = ShardId(200 + round as u16);
        // Batch 1: every ghost gets a second edge.
        let mut t = s.load(shard, &cfg()).unwrap();
        let mut first = EdgeEvents::new();
        for id in &ids {
            t.insert(id, ShardId(1), 1, Epoch(1), 1_000).unwrap();
            first.added(id);
        }
        t.apply_batch(Some(1), &first);
        s.commit(&[ShardChanges { shard, changes: t.take_changes() }]).unwrap();
        let before = contents(&t);
        assert_eq!(loaded(s, shard), before);
        // Batch 2: every ghost loses an edge, the first quarter both (purged:
        // removals as well as upserts).
        let mut second = EdgeEvents::new();
        for (i, id) in ids.iter().enumerate() {
            second.removed(id);
            if i < GHOSTS / 4 {
                second.removed(id);
            }
        }
        t.apply_batch(Some(2), &second);
        let after = contents(&t);
        let batch = [ShardChanges { shard, changes: t.take_changes() }];

        cut(Some(k));
        let result = s.commit(&batch);
        cut(None);
        let now = loaded(s, shard);
        match result {
            Ok(()) => assert_eq!(now, after, "cut after {k}: an acknowledged commit must load whole"),
            Err(_) if now == before => (seen.failed, seen.none) = (seen.failed + 1, seen.none + 1),
            Err(_) if now == after => (seen.failed, seen.all) = (seen.failed + 1, seen.all + 1),
            Err(e) => {
                let kept = now.0.iter().filter(|r| before.0.contains(r)).count();
                panic!(
                    "cut after {k}: the load shows part of a failed commit ({e}): {} rows, {kept} of them \
                     as before it ({} before, {} after), applied_seq {:?}",
                    now.0.len(),
                    before.0.len(),
                    after.0.len(),
                    now.1
                );
            }
        }
        // A new owner's way: load, replay batch 2 (skipped if it is applied).
        let mut replayed = s.load(shard, &cfg()).unwrap();
        replayed.apply_batch(Some(2), &second);
        assert_eq!(contents(&replayed), after, "cut after {k}: replaying batch 2 onto a load");
        // The writer's way: retry the same batch; then a replay changes nothing.
        s.commit(&batch).unwrap();
        let mut retried = s.load(shard, &cfg()).unwrap();
        assert_eq!(contents(&retried), after, "cut after {k}: retried batch");
        retried.apply_batch(Some(2), &second);
        assert_eq!(contents(&retried), after, "cut after {k}: replay after the retried batch");
    }
    seen
}
