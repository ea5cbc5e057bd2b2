//! `EtcdStore` against a live etcd: the `GhostStore` contract (as in `store_redb.rs`),
//! one transaction per group commit, checkpoints and compaction, the format marker and
//! the first layout's refusal, corrupt state, and ownership fencing between two stores.
//!
//! Needs `--features etcd` and `VSHARD_GHOSTS_ETCD=http://host:port`; without
//! the variable they fail. `.ci/run` starts an etcd for them.
#![cfg(feature = "etcd")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::time::{Duration, Instant};
use support::*;
use vshard_ghosts::store::etcd::Ownership;
use vshard_ghosts::store::{EtcdConfig, EtcdStore, GhostStore};
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{Error, ShardId};

fn config(prefix: &str, owner: &str) -> EtcdConfig {
    EtcdConfig {
        prefix: prefix.to_owned(),
        owner_id: owner.to_owned(),
        lease_ttl_secs: 2,
        acquire_timeout: Duration::from_secs(10),
        ..EtcdConfig::default()
    }
}

fn store(ep: &str, config: EtcdConfig) -> EtcdStore {
    EtcdStore::connect([ep], config).unwrap()
}

#[test]
fn etcd_store_meets_the_contract() {
    let ep = etcd_endpoint();
    for (name, check) in CHECKS {
        eprintln!("etcd: {name}");
        let s = store(&ep, config(&fresh_prefix(), "contract"));
        assert_eq!(s.kind(), "etcd");
        check(&s);
        s.release_all().unwrap();
    }
}

#[test]
fn etcd_store_meets_the_contract_in_tiny_transactions() {
    let ep = etcd_endpoint();
    for (name, check) in CHECKS {
        eprintln!("etcd, 3 ops per transaction: {name}");
        let c = EtcdConfig {
            max_txn_ops: 3,
            max_txn_bytes: 4_096,
            checkpoint_min_bytes: 2_048,
            compact_every_revisions: 50,
            ..config(&fresh_prefix(), "tiny")
        };
        let s = store(&ep, c);
        check(&s);
        s.release_all().unwrap();
    }
}

#[test]
fn large_commits_and_replacements_split_and_reload_whole() {
    let ep = etcd_endpoint();
    let s = store(&ep, config(&fresh_prefix(), "large"));
    // 3 000 rows: one log entry of ~90 KB, one transaction.
    let ups: Vec<_> = (0..3_000).map(|i| rec(&format!("node-{i:05}"), 2, i % 7 + 1)).collect();
    s.commit(&[changes(1, ups.clone(), &[], Some(42))]).unwrap();
    assert_eq!(loaded(&s, ShardId(1)), (ups.clone(), Some(42)));
    // Ids of 1 000 bytes: 2 MB, past the request limit: a group of entries.
    let long: Vec<_> = (0..2_000).map(|i| rec(&format!("{i:05}{}", "x".repeat(995)), 3, 1)).collect();
    s.commit(&[changes(2, long.clone(), &[], Some(1))]).unwrap();
    assert_eq!(loaded(&s, ShardId(2)), (long, Some(1)));
    let table = GhostTable::from_records(ShardId(1), cfg(), ups[..1_500].to_vec(), Some(7)).unwrap();
    s.replace(&table).unwrap();
    assert_eq!(loaded(&s, ShardId(1)), (ups[..1_500].to_vec(), Some(7)));
    // Another owner sees the same after a handover.
    s.release_all().unwrap();
    let t = Instant::now();
    let other = store(&ep, config(s.config().prefix.as_str(), "other"));
    assert_eq!(loaded(&other, ShardId(1)), (ups[..1_500].to_vec(), Some(7)));
    assert!(t.elapsed() < Duration::from_secs(2), "released shards are free at once");
    other.release_all().unwrap();
}

/// A raw etcd client, to damage what the store wrote.
fn raw_put(ep: &str, key: String, value: Vec<u8>) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
        c.put(key, value, None).await.unwrap();
    });
}

/// The keys under `prefix` and their total bytes (keys and values).
fn live(ep: &str, prefix: &str) -> (i64, u64) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
        let resp = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
        let bytes = resp.kvs().iter().map(|kv| (kv.key().len() + kv.value().len()) as u64).sum();
        (resp.count(), bytes)
    })
}

#[test]
fn corrupt_state_and_foreign_prefixes_are_refused() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let s = store(&ep, config(&prefix, "corrupt"));
    s.commit(&[changes(1, vec![rec("a", 2, 1)], &[], Some(1)), changes(2, vec![rec("ok", 1, 1)], &[], None)])
        .unwrap();
    // Log entries live under `log/{shard:05}/{index:016x}`, from index 0.
    raw_put(&ep, format!("{prefix}log/00001/0000000000000000"), b"garbage".to_vec());
    assert!(matches!(s.load(ShardId(1), &cfg()), Err(Error::Decode(_))));
    assert_eq!(loaded(&s, ShardId(2)).0, vec![rec("ok", 1, 1)]);
    // A checkpoint's chunk: generation 1 after the first checkpoint.
    s.checkpoint(ShardId(2)).unwrap();
    assert_eq!(loaded(&s, ShardId(2)).0, vec![rec("ok", 1, 1)], "checkpointed");
    raw_put(&ep, format!("{prefix}ckpt/00002/0000000000000001/00000000"), b"VSG".to_vec());
    assert!(matches!(s.load(ShardId(2), &cfg()), Err(Error::Decode(_))));
    raw_put(&ep, format!("{prefix}meta/00002"), b"VSGM?".to_vec());
    assert!(matches!(s.load(ShardId(2), &cfg()), Err(Error::Decode(_))));
    s.release_all().unwrap();

    let foreign = fresh_prefix();
    raw_put(&ep, format!("{foreign}format"), b"someone-else/3".to_vec());
    assert!(matches!(EtcdStore::connect([ep.as_str()], config(&foreign, "x")), Err(Error::NotAStore(_))));
    // The first layout, a key per stub: refused, and the error names the upgrade.
    let old = fresh_prefix();
    raw_put(&ep, format!("{old}format"), b"vshard-ghosts-etcd/1".to_vec());
    raw_put(&ep, format!("{old}rows/00001/0/a"), vshard_ghosts::codec::encode_stub(&rec("a", 2, 1)).unwrap());
    match EtcdStore::connect([ep.as_str()], config(&old, "x")) {
        Err(Error::NotAStore(why)) => {
            assert!(why.contains("export_snapshot") && why.contains("import_snapshot"), "{why}")
        }
        other => panic!("the first layout was adopted: {other:?}"),
    }
}

#[test]
fn a_group_commit_is_one_transaction_until_etcds_limits_split_it() {
    let ep = etcd_endpoint();
    let s = store(&ep, config(&fresh_prefix(), "group"));
    let batch = |shards: u16, seq: u64| -> Vec<_> {
        (0..shards)
            .map(|shard| {
                let ups = (0..20).map(|i| rec(&format!("s{shard}-{seq}-{i}"), shard + 1, 1)).collect();
                changes(shard, ups, &[], Some(seq))
            })
            .collect()
    };
    // Taken, and each shard's log position known, by a first commit.
    s.commit(&batch(100, 1)).unwrap();
    for (shards, want) in [(1, 1), (48, 1), (64, 1), (65, 2), (100, 2)] {
        let before = s.stats();
        s.commit(&batch(shards, 2)).unwrap();
        let after = s.stats();
        assert_eq!(after.write_txns - before.write_txns, want, "{shards} shards");
        assert_eq!(after.log_entries - before.log_entries, u64::from(shards), "one entry per shard");
    }
    assert_eq!(loaded(&s, ShardId(47)).1, Some(2));
    s.release_all().unwrap();
}

#[test]
fn checkpoints_bound_the_log_and_compaction_ends_the_old_history() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let config =
        EtcdConfig { checkpoint_min_bytes: 4_096, compact_every_revisions: 1, ..config(&prefix, "fold") };
    let s = store(&ep, config);
    let first = s.commit(&[changes(1, vec![rec("first", 2, 1)], &[], Some(0))]);
    first.unwrap();
    let start = revision(&ep);
    let mut model = std::collections::BTreeMap::new();
    for seq in 1..=200u64 {
        let ups: Vec<_> =
            (0..20).map(|i| rec(&format!("n{:03}", (seq * 7 + i) % 300), 2, (seq % 5) as u32 + 1)).collect();
        let gone = format!("n{:03}", (seq * 13) % 300);
        for u in &ups {
            model.insert(u.node_id.clone(), u.clone());
        }
        model.remove(&gone);
        // Removals come before upserts in a change set.
        let ups: Vec<_> = ups.into_iter().filter(|u| u.node_id != gone).collect();
        s.commit(&[changes(1, ups, &[gone.as_str()], Some(seq))]).unwrap();
    }
    model.insert("first".into(), rec("first", 2, 1));
    let stats = s.stats();
    assert!(stats.checkpoints >= 3 && stats.compactions >= 1, "{stats:?}");
    assert_eq!(stats.checkpoint_failures, 0);
    assert_eq!(loaded(&s, ShardId(1)), (model.into_values().collect(), Some(200)));
    // What is left: the owner, the format, the metadata, a checkpoint and a
    // log of at most a few kilobytes; not 200 entries.
    let (keys, bytes) = live(&ep, &prefix);
    assert!(keys < 40, "{keys} keys");
    assert!(bytes < 4 * 4_096 + 16_000, "{bytes} bytes");
    // The revisions the checkpoints made obsolete are compacted away.
    let old = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await.unwrap();
        c.get(format!("{prefix}meta/00001"), Some(etcd_client::GetOptions::new().with_revision(start))).await
    });
    assert!(old.is_err_and(|e| e.to_string().contains("compacted")), "history before {start} kept");
    s.release_all().unwrap();
}

/// etcd's current revision.
fn revision(ep: &str) -> i64 {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
        c.get("x", None).await.unwrap().header().unwrap().revision()
    })
}

#[test]
fn a_log_entry_written_late_below_the_checkpoint_is_ignored() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let s = store(&ep, config(&prefix, "late"));
    s.commit(&[changes(1, vec![rec("x", 2, 5)], &[], Some(1))]).unwrap();
    let entry = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await.unwrap();
        c.get(format!("{prefix}log/00001/0000000000000000"), None).await.unwrap().kvs()[0].value().to_vec()
    });
    s.commit(&[changes(1, vec![], &["x"], Some(2))]).unwrap();
    s.checkpoint(ShardId(1)).unwrap();
    // A request retried after its answer was lost lands after the fold that
    // deleted its entry: below the checkpoint's first index, it is not replayed.
    raw_put(&ep, format!("{prefix}log/00001/0000000000000000"), entry);
    assert_eq!(loaded(&s, ShardId(1)), (vec![], Some(2)));
    s.release_all().unwrap();
}

#[test]
fn a_second_owner_waits_and_the_first_is_fenced() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let a = store(&ep, config(&prefix, "a"));
    a.commit(&[changes(1, vec![rec("x", 2, 1)], &[], Some(1))]).unwrap();
    assert!(matches!(a.ownership(ShardId(1)).unwrap(), Ownership::Owned { .. }));

    let impatient = EtcdConfig { acquire_timeout: Duration::from_millis(300), ..config(&prefix, "b") };
    let b = store(&ep, impatient);
    match b.load(ShardId(1), &cfg()) {
        Err(Error::Fenced { shard: ShardId(1), cause }) => assert!(cause.contains("\"a\""), "{cause}"),
        other => panic!("b took a held shard: {other:?}"),
    }
    // A release hands it over at once; a's claim is then void.
    a.release(ShardId(1)).unwrap();
    assert_eq!(a.ownership(ShardId(1)).unwrap(), Ownership::Released);
    b.acquire(&[ShardId(1)]).unwrap();
    assert_eq!(loaded(&b, ShardId(1)), (vec![rec("x", 2, 1)], Some(1)));
    // `a` released its claim, so its next write is fenced (it never takes the shard back).
    let err = a.commit(&[changes(1, vec![rec("y", 2, 1)], &[], Some(2))]);
    assert!(matches!(err, Err(Error::Fenced { shard: ShardId(1), .. })), "{err:?}");

    // A frozen owner: b stops renewing; a takes the shard once the lease lapses,
    // and b's next write fails on the guard rather than overwrite a's.
    b.stop_keep_alive().unwrap();
    let t = Instant::now();
    let a2 = store(&ep, config(&prefix, "a2"));
    assert_eq!(loaded(&a2, ShardId(1)), (vec![rec("x", 2, 1)], Some(1)));
    assert!(t.elapsed() > Duration::from_millis(500), "waited for the lease: {:?}", t.elapsed());
    let err = b.commit(&[changes(1, vec![rec("z", 2, 1)], &[], Some(3))]);
    assert!(matches!(err, Err(Error::Fenced { shard: ShardId(1), .. })), "{err:?}");
    assert!(matches!(b.ownership(ShardId(1)).unwrap(), Ownership::Fenced { .. }));
    assert!(matches!(b.load(ShardId(1), &cfg()), Err(Error::Fenced { .. })), "a fenced shard stays fenced");
    assert_eq!(loaded(&a2, ShardId(1)), (vec![rec("x", 2, 1)], Some(1)), "nothing of b's landed");
    a2.release_all().unwrap();
    a.release_all().unwrap();
}

#[test]
fn a_lease_lost_behind_the_owners_back_fences_every_shard_it_held() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    // The lease is revoked by hand below: a TTL longer than the other tests'
    // keeps a loaded machine's slow keep-alive from losing it first.
    let s = store(&ep, EtcdConfig { lease_ttl_secs: 9, ..config(&prefix, "a") });
    s.commit(&[changes(1, vec![rec("x", 2, 1)], &[], None), changes(2, vec![rec("y", 1, 1)], &[], None)])
        .unwrap();
    // What an expiry does, at once: etcd drops the lease and the owner keys with it.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await.unwrap();
        let owner = c.get(format!("{prefix}owner/00001"), None).await.unwrap();
        c.lease_revoke(owner.kvs()[0].lease()).await.unwrap();
    });
    // The keep-alive learns it within a third of the TTL.
    let deadline = Instant::now() + Duration::from_secs(9);
    while !matches!(s.ownership(ShardId(2)).unwrap(), Ownership::Fenced { .. }) {
        assert!(Instant::now() < deadline, "the lost lease went unnoticed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = s.commit(&[changes(1, vec![rec("z", 2, 1)], &[], None)]);
    assert!(matches!(err, Err(Error::Fenced { shard: ShardId(1), .. })), "{err:?}");
    // Taken back on purpose, under a new lease, with everything committed before.
    s.acquire(&[ShardId(1), ShardId(2)]).unwrap();
    assert_eq!(loaded(&s, ShardId(1)).0, vec![rec("x", 2, 1)]);
    s.commit(&[changes(2, vec![rec("w", 1, 1)], &[], None)]).unwrap();
    assert_eq!(loaded(&s, ShardId(2)).0, vec![rec("w", 1, 1), rec("y", 1, 1)]);
    s.release_all().unwrap();
}

#[test]
fn a_released_owner_cannot_take_its_shard_back_by_writing() {
    let ep = etcd_endpoint();
    // Both ways to let go: `release` of one shard, and `release_shards` of all a
    // store holds (which revokes its lease).
    for release_all in [false, true] {
        let prefix = fresh_prefix();
        let a = store(&ep, config(&prefix, "a"));
        a.load(ShardId(1), &cfg()).unwrap();
        a.load(ShardId(2), &cfg()).unwrap();
        if release_all {
            a.release_shards(&[ShardId(1), ShardId(2)]).unwrap();
        } else {
            a.release(ShardId(1)).unwrap();
        }
        let b = store(&ep, config(&prefix, "b"));
        b.load(ShardId(1), &cfg()).unwrap();
        b.commit(&[changes(1, vec![rec("x", 2, 5)], &[], Some(7))]).unwrap();
        b.release(ShardId(1)).unwrap();
        // A late lazy flush of a's still-running actor: stale changes that delete x.
        let err = a.commit(&[changes(1, vec![rec("z", 2, 1)], &["x"], Some(3))]);
        assert!(
            matches!(err, Err(Error::Fenced { shard: ShardId(1), .. })),
            "release_all {release_all}: a released owner's late commit: {err:?}"
        );
        let c = store(&ep, config(&prefix, "c"));
        assert_eq!(
            loaded(&c, ShardId(1)),
            (vec![rec("x", 2, 5)], Some(7)),
            "release_all {release_all}: next owner"
        );
        // Loading again is a new claim: a may write the shard once it has.
        c.release_all().unwrap();
        assert_eq!(loaded(&a, ShardId(1)), (vec![rec("x", 2, 5)], Some(7)));
        a.commit(&[changes(1, vec![rec("y", 2, 1)], &[], Some(8))]).unwrap();
        a.release_all().unwrap();
        b.release_all().unwrap();
    }
}

#[test]
fn releasing_a_lease_that_already_lapsed_succeeds() {
    let ep = etcd_endpoint();
    let prefix = fresh_prefix();
    let s = store(&ep, EtcdConfig { lease_ttl_secs: 9, ..config(&prefix, "a") });
    s.commit(&[changes(1, vec![rec("x", 2, 1)], &[], None)]).unwrap();
    // The lease is gone behind the owner's back, so revoking it again reports
    // it unknown: that is a release already done, not a failure.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep.as_str()], None).await.unwrap();
        let owner = c.get(format!("{prefix}owner/00001"), None).await.unwrap();
        c.lease_revoke(owner.kvs()[0].lease()).await.unwrap();
    });
    s.release_all().unwrap();
}
