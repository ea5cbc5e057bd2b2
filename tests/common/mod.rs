//! The `GhostStore` contract, as checks any store must pass, and the helpers they use.
//! Shared by the store test files (`mod common;`); each uses the parts it needs.

use vshard_ghosts::{ChangeSet, GhostStore, GhostTable, ShardChanges, StubRecord, TableConfig};

pub(crate) fn cfg() -> TableConfig {
    TableConfig::default()
}

pub(crate) fn rec(id: &str, target: u16, refcount: u32) -> StubRecord {
    StubRecord {
        node_id: id.to_owned(),
        target_shard: target,
        refcount,
        created_at_ms: 1_000 + u64::from(refcount),
        epoch: 3,
        hold_until_ms: 0,
        tombstone: false,
    }
}

pub(crate) fn changes(
    shard: u16,
    upserts: Vec<StubRecord>,
    removals: &[&str],
    seq: Option<u64>,
) -> ShardChanges {
    ShardChanges {
        shard,
        changes: ChangeSet::from_parts(upserts.iter().map(Into::into), removals.iter().copied(), seq),
    }
}

/// A table's stubs sorted by id, and its applied sequence number.
pub(crate) fn contents(t: &GhostTable) -> (Vec<StubRecord>, Option<u64>) {
    let mut v: Vec<_> = t.records().collect();
    v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    (v, t.applied_seq())
}

pub(crate) fn loaded(s: &dyn GhostStore, shard: u16) -> (Vec<StubRecord>, Option<u64>) {
    contents(&s.load(shard, &cfg()).unwrap())
}

fn unwritten_shard_is_empty(s: &dyn GhostStore) {
    assert_eq!(loaded(s, 9), (vec![], None));
    s.commit(&[]).unwrap();
    assert_eq!(loaded(s, 9), (vec![], None));
}

fn removals_apply_before_upserts(s: &dyn GhostStore) {
    s.commit(&[changes(1, vec![rec("a", 2, 1), rec("b", 2, 1), rec("c", 2, 1)], &[], None)]).unwrap();
    // "b" removed and inserted again in one window: the upsert is the current state.
    s.commit(&[changes(1, vec![rec("b", 3, 7)], &["a", "b", "missing"], Some(1))]).unwrap();
    assert_eq!(loaded(s, 1), (vec![rec("b", 3, 7), rec("c", 2, 1)], Some(1)));
}

fn applied_seq_only_rises(s: &dyn GhostStore) {
    s.commit(&[changes(4, vec![], &[], Some(10))]).unwrap();
    assert_eq!(loaded(s, 4).1, Some(10));
    s.commit(&[changes(4, vec![], &[], Some(3))]).unwrap();
    s.commit(&[changes(4, vec![], &[], None)]).unwrap();
    assert_eq!(loaded(s, 4).1, Some(10));
    s.commit(&[changes(4, vec![], &[], Some(11))]).unwrap();
    assert_eq!(loaded(s, 4).1, Some(11));
}

fn commit_is_idempotent(s: &dyn GhostStore) {
    let batch = [changes(2, vec![rec("x", 1, 2)], &["y"], Some(5))];
    s.commit(&batch).unwrap();
    s.commit(&batch).unwrap();
    assert_eq!(loaded(s, 2), (vec![rec("x", 1, 2)], Some(5)));
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
        assert_eq!(loaded(s, *sh), (want, Some(u64::from(*sh))), "shard {sh}");
    }
    assert_eq!(loaded(s, 3), (vec![], None));
}

fn replace_touches_only_its_shard(s: &dyn GhostStore) {
    let edge = u16::MAX;
    s.commit(&[
        changes(7, vec![rec("old", 1, 1)], &[], Some(9)),
        changes(8, vec![rec("keep", 1, 1)], &[], Some(4)),
        changes(edge, vec![rec("last", 1, 1)], &[], Some(2)),
    ])
    .unwrap();
    let table = GhostTable::from_records(7, cfg(), [rec("new", 2, 5)], Some(3)).unwrap();
    s.replace(&table).unwrap();
    assert_eq!(loaded(s, 7), (vec![rec("new", 2, 5)], Some(3)));
    s.replace(&GhostTable::new(edge, cfg()).unwrap()).unwrap();
    assert_eq!(loaded(s, edge), (vec![], None));
    assert_eq!(loaded(s, 8), (vec![rec("keep", 1, 1)], Some(4)));
}

fn snapshot_round_trip_and_bad_import(s: &dyn GhostStore) {
    s.commit(&[changes(5, vec![rec("p", 1, 1), rec("q", 2, 2)], &[], Some(8))]).unwrap();
    let bytes = s.export_snapshot(5, &cfg()).unwrap();
    s.import_snapshot(6, &bytes, &cfg()).unwrap();
    assert_eq!(loaded(s, 6), loaded(s, 5));

    let before = loaded(s, 6);
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    for junk in [&bad[..], &bytes[..bytes.len() - 1], b"not a snapshot", &[]] {
        assert!(s.import_snapshot(6, junk, &cfg()).is_err());
        assert_eq!(loaded(s, 6), before);
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

/// The etcd that the etcd tests use. They build only with `--features etcd`, which
/// asks for them, so without an etcd they fail instead of passing unrun.
pub(crate) fn etcd_endpoint() -> String {
    std::env::var("VSHARD_GHOSTS_ETCD")
        .ok()
        .filter(|e| !e.is_empty())
        .expect("set VSHARD_GHOSTS_ETCD=http://127.0.0.1:23790 (see README, \"etcd\")")
}

/// A key prefix no other test or run shares.
pub(crate) fn fresh_prefix() -> String {
    format!("vshard-ghosts-test/{:016x}/", fastrand::u64(..))
}

/// Runs the ignored test `child` of this test binary in a new process with
/// `env_key=env_value`, expects it to die by `abort()`, and returns the
/// `(shard, node id)` pairs it printed as `ACK <shard> <id>` lines before dying.
pub(crate) fn acks_of_aborted_child(child: &str, env_key: &str, env_value: &str) -> Vec<(u16, String)> {
    use std::io::BufRead;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env_key, env_value)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must die by abort");
    out.stdout
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| {
            // libtest may print its own "test <child> ... " before the first line.
            let mut p = l.split("ACK ").nth(1)?.split(' ');
            Some((p.next()?.parse().ok()?, p.next()?.to_owned()))
        })
        .collect()
}
