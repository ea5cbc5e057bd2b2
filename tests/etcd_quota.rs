//! `EtcdStore` on an etcd whose backend quota runs out: commits fail with
//! `Error::StoreFull`, nothing acknowledged is lost, loads keep working, and
//! writing resumes once the operator compacts, defragments and disarms the alarm.
//!
//! Needs `--features etcd` and `VSHARD_GHOSTS_ETCD_QUOTA=http://host:port`, an
//! etcd of its own started with a small `--quota-backend-bytes` (8 MiB in
//! `.ci/run`): filling it raises its `NOSPACE` alarm, which would fail the
//! other tests' writes. Without the variable it fails.
#![cfg(feature = "etcd")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::time::Duration;
use support::*;
use vshard_ghosts::store::{EtcdConfig, EtcdStore, GhostStore, StubRecord};
use vshard_ghosts::{Error, ShardId};

fn quota_endpoint() -> String {
    std::env::var("VSHARD_GHOSTS_ETCD_QUOTA")
        .expect("set VSHARD_GHOSTS_ETCD_QUOTA to an etcd with a small --quota-backend-bytes (see .ci/run)")
}

/// The test's prefix: one, so that a run cleans up what a failed one left.
const PREFIX: &str = "vshard-ghosts-quota-test/";

/// What an operator does about the `NOSPACE` alarm: compact the history,
/// defragment, disarm (each member's alarm, as `etcdctl alarm disarm` does).
/// With `clear`, first deletes the test's keys (deletes pass the alarm).
fn free_space(ep: &str, clear: bool) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([ep], None).await.unwrap();
        if clear {
            c.delete(PREFIX, Some(etcd_client::DeleteOptions::new().with_prefix())).await.unwrap();
        }
        let revision = c.get("x", None).await.unwrap().header().unwrap().revision();
        match c.compact(revision, None).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("compacted") => {}
            Err(e) => panic!("compact: {e}"),
        }
        c.defragment().await.unwrap();
        use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
        let alarms = c.alarm(AlarmAction::Get, AlarmType::None, None).await.unwrap();
        for a in alarms.alarms() {
            let mut disarm = AlarmOptions::new();
            disarm.with_member(a.member_id());
            c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(disarm)).await.unwrap();
        }
    });
}

/// Ghosts of `round`: 500 of about 230 bytes each, so a commit is ~120 KB.
fn batch(round: u64) -> Vec<StubRecord> {
    (0..500).map(|i| rec(&format!("r{round:04}-{i:04}-{}", "x".repeat(200)), 2, 1)).collect()
}

#[test]
fn a_full_etcd_fails_commits_typed_and_loses_nothing_acknowledged() {
    let ep = quota_endpoint();
    // Whatever an earlier run left: start with room.
    free_space(&ep, true);
    let config = EtcdConfig {
        prefix: PREFIX.into(),
        owner_id: "quota".into(),
        lease_ttl_secs: 10,
        // No compaction by the store: the history fills the quota.
        compact_every_revisions: 0,
        retries: 2,
        retry_delay: Duration::from_millis(10),
        ..EtcdConfig::default()
    };
    let s = EtcdStore::connect([ep.as_str()], config).unwrap();
    let mut acked: Vec<StubRecord> = Vec::new();
    let mut full = None;
    for round in 1..=400 {
        match s.commit(&[changes(1, batch(round), &[], Some(round))]) {
            Ok(()) => acked.extend(batch(round)),
            Err(e) => {
                full = Some((round, e));
                break;
            }
        }
    }
    let (round, e) = full.expect("an 8 MiB quota fills within 400 commits of 120 KB");
    assert!(matches!(&e, Error::StoreFull { .. }), "round {round}: {e:?}");
    assert!(!e.is_retryable(), "the operator must free space first");
    assert!(round > 2, "some commits succeeded first");
    // Reads are served: every acknowledged commit is there, nothing of the refused one.
    acked.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    assert_eq!(loaded(&s, ShardId(1)), (acked.clone(), Some(round - 1)));
    // Still full: a retry is refused the same way, and changes nothing.
    let again = s.commit(&[changes(1, batch(round), &[], Some(round))]);
    assert!(matches!(again, Err(Error::StoreFull { .. })), "{again:?}");
    assert_eq!(loaded(&s, ShardId(1)).1, Some(round - 1));

    free_space(&ep, false);
    s.commit(&[changes(1, batch(round), &[], Some(round))]).unwrap();
    acked.extend(batch(round));
    acked.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    assert_eq!(loaded(&s, ShardId(1)), (acked, Some(round)));
    // Leaves room for the next run, and etcd healthy.
    s.release_all().unwrap();
    free_space(&ep, true);
}
