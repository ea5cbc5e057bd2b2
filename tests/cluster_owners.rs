//! `EtcdOwners` against a live etcd: shard owners from the owner keys that
//! fencing writes, followed by a watch; a takeover is seen within a second;
//! routes go to the owner's registered verify address.
//!
//! Needs `--features cluster` and `VSHARD_GHOSTS_ETCD=http://host:port`.
#![cfg(feature = "cluster")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use vshard_ghosts::cluster::*;
use vshard_ghosts::store::{EtcdConfig, EtcdStore};
use vshard_ghosts::{Error, ShardId};

fn store(prefix: &str, owner: &str, ttl: u32) -> EtcdStore {
    let config = EtcdConfig {
        prefix: prefix.to_owned(),
        owner_id: owner.to_owned(),
        lease_ttl_secs: ttl,
        acquire_poll: Duration::from_millis(20),
        ..EtcdConfig::default()
    };
    EtcdStore::connect([etcd_endpoint()], config).unwrap()
}

fn owners(prefix: &str) -> EtcdOwners {
    let config = OwnersConfig { prefix: prefix.to_owned(), ..OwnersConfig::default() };
    EtcdOwners::start([etcd_endpoint()], config).unwrap()
}

/// How long until `owners` routes `shard` to `want`, polled every 5 ms for
/// at most 5 s (the watch, not this loop, brings the change).
fn until_routed(owners: &EtcdOwners, shard: u16, want: Option<&str>) -> Duration {
    let t0 = Instant::now();
    while owners.route(ShardId(shard)).as_deref() != want {
        assert!(t0.elapsed() < Duration::from_secs(5), "shard {shard} never routed to {want:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

#[test]
fn owners_follow_acquire_release_and_a_takeover_within_a_second() {
    let prefix = fresh_prefix();
    let (a, b) = (store(&prefix, "proc-a", 2), store(&prefix, "proc-b", 2));
    let watch = owners(&prefix);
    watch.register("proc-a", "127.0.0.1:7001").unwrap();
    watch.register("proc-b", "http://127.0.0.1:7002").unwrap();
    assert_eq!(watch.route(ShardId(3)), None, "no owner yet");

    a.acquire(&[ShardId(3), ShardId(4)]).unwrap();
    assert!(until_routed(&watch, 3, Some("http://127.0.0.1:7001")) < Duration::from_secs(1));
    until_routed(&watch, 4, Some("http://127.0.0.1:7001"));
    assert_eq!(watch.owner(ShardId(3)).as_deref(), Some("proc-a"));

    a.release(ShardId(4)).unwrap();
    assert!(until_routed(&watch, 4, None) < Duration::from_secs(1), "a release is seen");

    // A dies without a word (its keep-alive stops); B takes shard 3 once the lease lapses.
    a.stop_keep_alive().unwrap();
    let t0 = Instant::now();
    b.acquire(&[ShardId(3)]).unwrap();
    let waited = t0.elapsed();
    let seen = until_routed(&watch, 3, Some("http://127.0.0.1:7002"));
    assert!(seen < Duration::from_secs(1), "the new owner is seen {seen:?} after the takeover");
    assert!(waited >= Duration::from_millis(500), "B waited for A's lease: {waited:?}");
    assert_eq!(watch.owner(ShardId(3)).as_deref(), Some("proc-b"));
    let (changes, resyncs) = watch.watch_counts();
    assert!(changes >= 4 && resyncs == 1, "followed by the watch, listed once: {changes} {resyncs}");

    // A watcher started now lists the current owners.
    let late = owners(&prefix);
    assert_eq!(late.route(ShardId(3)).as_deref(), Some("http://127.0.0.1:7002"));
    assert_eq!(late.owners().len(), 1);
    b.release_all().unwrap();
    until_routed(&watch, 3, None);
}

#[test]
fn an_owner_without_an_address_routes_nowhere_until_it_registers() {
    let prefix = fresh_prefix();
    let a = store(&prefix, "proc-a", 5);
    let watch = owners(&prefix);
    a.acquire(&[ShardId(1)]).unwrap();
    let t0 = Instant::now();
    while watch.owner(ShardId(1)).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(watch.route(ShardId(1)), None, "owned, but no address known");
    watch.register("proc-a", "127.0.0.1:7009").unwrap();
    until_routed(&watch, 1, Some("http://127.0.0.1:7009"));
    a.release_all().unwrap();
}

#[test]
fn an_unreachable_etcd_is_a_clear_error() {
    // A loopback port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = OwnersConfig { op_timeout: Duration::from_millis(500), ..OwnersConfig::default() };
    let t0 = Instant::now();
    let err = EtcdOwners::start([format!("http://{closed}")], config).unwrap_err();
    assert!(matches!(err, Error::Cluster { .. }), "{err:?}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_grpc_verifier_routes_by_the_owners_it_watches() {
    let prefix = fresh_prefix();
    let a = store(&prefix, "proc-a", 5);
    let dir = vshard_ghosts::DirectoryVerifier::new();
    dir.record_move("n", ShardId(2), vshard_ghosts::Epoch(1));
    let server = VerifyServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(dir)).unwrap();
    let watch = Arc::new(owners(&prefix));
    watch.register("proc-a", &server.url()).unwrap();
    a.acquire(&[ShardId(2)]).unwrap();
    until_routed(&watch, 2, Some(server.url().as_str()));
    let v = GrpcVerifier::new(watch.clone(), Arc::new(NoLocalCounts), GrpcVerifierConfig::default()).unwrap();
    let r = vshard_ghosts::VerifyRequest {
        shard: ShardId(0),
        node_id: "n".into(),
        target_shard: ShardId(2),
        epoch: vshard_ghosts::Epoch(1),
    };
    use vshard_ghosts::Verifier;
    let answer = futures::executor::block_on(v.verify(r.clone()));
    assert_eq!(answer, Ok(vshard_ghosts::Verdict::Keep { local_edges: None }));
    a.release_all().unwrap();
    until_routed(&watch, 2, None);
    assert!(futures::executor::block_on(v.verify(r)).is_err(), "no owner: not asked");
    assert_eq!(v.stats().unroutable, 1);
}

#[test]
fn a_second_claimant_and_a_restart_under_the_old_identity_are_refused() {
    let prefix = fresh_prefix();
    let a = store(&prefix, "proc-a", 5);
    let watch = owners(&prefix);
    watch.register("proc-a", "127.0.0.1:7001").unwrap();
    watch.register("proc-b", "127.0.0.1:7002").unwrap();
    a.acquire(&[ShardId(6)]).unwrap();
    until_routed(&watch, 6, Some("http://127.0.0.1:7001"));
    let impatient = |owner: &str| {
        let config = EtcdConfig {
            prefix: prefix.clone(),
            owner_id: owner.to_owned(),
            acquire_timeout: Duration::from_millis(300),
            acquire_poll: Duration::from_millis(20),
            ..EtcdConfig::default()
        };
        EtcdStore::connect([etcd_endpoint()], config).unwrap().acquire(&[ShardId(6)])
    };
    // Another process, and this process restarted with its old id (a new lease):
    // both are fenced while the first claim's lease lives, not a split brain.
    for owner in ["proc-b", "proc-a"] {
        let refused = impatient(owner);
        assert!(matches!(refused, Err(Error::Fenced { shard: ShardId(6), .. })), "{owner}: {refused:?}");
    }
    assert_eq!(watch.route(ShardId(6)).as_deref(), Some("http://127.0.0.1:7001"), "routes unmoved");
    a.release_all().unwrap();
}
