//! `EtcdStore` commits that do not fit one transaction, cut short between their
//! transactions: a later load and a replay see none of the commit, and a retry all of it.
//!
//! Needs `--features etcd` and `VSHARD_GHOSTS_ETCD=http://host:port`; without
//! the variable they fail. `.ci/run` starts an etcd for them.
#![cfg(feature = "etcd")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::time::Duration;
use support::*;
use vshard_ghosts::store::{EtcdConfig, EtcdStore, GhostStore, ShardChanges};
use vshard_ghosts::{EdgeEvents, Epoch, Error, ShardId};

/// Three operations per transaction and 4 KiB per request: a few hundred rows
/// are a group of several log entries, one transaction each.
fn tiny(prefix: &str, owner: &str) -> EtcdConfig {
    EtcdConfig {
        prefix: prefix.to_owned(),
        owner_id: owner.to_owned(),
        lease_ttl_secs: 2,
        acquire_timeout: Duration::from_secs(10),
        max_txn_ops: 3,
        max_txn_bytes: 4_096,
        ..EtcdConfig::default()
    }
}

#[test]
fn etcd_commits_cut_between_parts_are_all_or_nothing() {
    let ep = etcd_endpoint();
    let s = EtcdStore::connect([ep.as_str()], tiny(&fresh_prefix(), "cut")).unwrap();
    let cuts = [0, 1, 2, 3, 4, 5, 8, 13, 21, 34];
    let seen = commit_cut_between_parts_is_all_or_nothing(&s, &|k| s.fail_commits_after_parts(k), &cuts);
    // A group of entries counts once its last one is written, the last transaction:
    // a cut commit is never visible.
    assert!(seen.none > 0 && seen.all == 0, "{seen:?}");
    s.release_all().unwrap();
}

/// Revokes the lease that holds `shard` under `prefix`, as its expiry would.
fn revoke_owner_lease(ep: &str, prefix: &str, shard: u16) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
        let owner = c.get(format!("{prefix}owner/{shard:05}"), None).await.unwrap();
        c.lease_revoke(owner.kvs()[0].lease()).await.unwrap();
    });
}

#[test]
fn an_owner_fenced_mid_commit_leaves_the_next_owner_exactly_once_refcounts() {
    const GHOSTS: usize = 300;
    let ep = etcd_endpoint();
    let ids: Vec<String> = (0..GHOSTS).map(|i| format!("node-{i:05}")).collect();
    // Cut before its first and before its second (last) log entry: the next owner loads
    // batch 1's state, never part of batch 2.
    let mut loaded_seqs = Vec::new();
    for cut in [0, 1] {
        let prefix = fresh_prefix();
        let a = EtcdStore::connect([ep.as_str()], tiny(&prefix, "a")).unwrap();
        // Batch 1: every ghost at two edges.
        let mut t = a.load(ShardId(1), &cfg()).unwrap();
        let mut first = EdgeEvents::new();
        for id in &ids {
            t.insert(id, ShardId(2), 1, Epoch(1), 1_000).unwrap();
            first.added(id);
        }
        t.apply_batch(Some(1), &first);
        a.commit(&[ShardChanges { shard: ShardId(1), changes: t.take_changes() }]).unwrap();
        // Batch 2: every ghost loses one edge; its commit is cut, then a's lease is gone.
        let mut second = EdgeEvents::new();
        ids.iter().for_each(|id| second.removed(id));
        t.apply_batch(Some(2), &second);
        let batch = [ShardChanges { shard: ShardId(1), changes: t.take_changes() }];
        a.fail_commits_after_parts(Some(cut));
        assert!(matches!(a.commit(&batch), Err(Error::Store { .. })), "cut after {cut}");
        a.fail_commits_after_parts(None);
        revoke_owner_lease(&ep, &prefix, 1);
        let err = a.commit(&batch);
        assert!(matches!(err, Err(Error::Fenced { shard: ShardId(1), .. })), "cut after {cut}: {err:?}");

        // The new owner loads and replays batch 2, which a never acknowledged.
        let b = EtcdStore::connect([ep.as_str()], tiny(&prefix, "b")).unwrap();
        let mut table = b.load(ShardId(1), &cfg()).unwrap();
        loaded_seqs.push(table.applied_seq());
        table.apply_batch(Some(2), &second);
        assert_eq!(table.applied_seq(), Some(2), "cut after {cut}");
        for id in &ids {
            let g = table.get(id);
            let g = g.unwrap_or_else(|| panic!("cut after {cut}: {id} purged while it still has an edge"));
            assert_eq!(g.refcount, 1, "cut after {cut}: {id}");
        }
        b.release_all().unwrap();
    }
    assert_eq!(loaded_seqs, [Some(1); 2], "a cut commit is not visible");
}

/// How many keys `prefix` holds under `log/`.
fn log_keys(ep: &str, prefix: &str) -> i64 {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
        let options = etcd_client::GetOptions::new().with_prefix().with_count_only();
        c.get(format!("{prefix}log/"), Some(options)).await.unwrap().count()
    })
}

#[test]
fn a_cut_commits_entries_are_never_read_and_a_checkpoint_deletes_them() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let s = EtcdStore::connect([ep.as_str()], tiny(&prefix, "clean")).unwrap();
    let ups: Vec<_> = (0..300).map(|i| rec(&format!("n{i:03}"), 2, 1)).collect();
    s.commit(&[changes(1, ups.clone(), &[], Some(1))]).unwrap();
    let whole = log_keys(&ep, &prefix);
    assert!(whole > 1, "a group of entries");
    // Cut after its first transaction: one entry of the group written.
    s.fail_commits_after_parts(Some(1));
    let more: Vec<_> = (0..300).map(|i| rec(&format!("m{i:03}"), 2, 1)).collect();
    assert!(s.commit(&[changes(1, more.clone(), &[], Some(2))]).is_err());
    s.fail_commits_after_parts(None);
    assert_eq!(log_keys(&ep, &prefix), whole + 1);
    assert_eq!(loaded(&s, ShardId(1)), (ups.clone(), Some(1)), "nothing of the cut commit is visible");
    // The retry goes after the cut entries, and counts whole.
    s.commit(&[changes(1, more.clone(), &[], Some(2))]).unwrap();
    let mut all = [ups.clone(), more].concat();
    all.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    assert_eq!(loaded(&s, ShardId(1)), (all, Some(2)));
    let table =
        vshard_ghosts::table::GhostTable::from_records(ShardId(1), cfg(), ups[..10].to_vec(), Some(5))
            .unwrap();
    s.replace(&table).unwrap();
    assert_eq!(log_keys(&ep, &prefix), 0, "a replace folds the whole log, cut entries too");
    assert_eq!(loaded(&s, ShardId(1)), (ups[..10].to_vec(), Some(5)));
    s.release_all().unwrap();
}
