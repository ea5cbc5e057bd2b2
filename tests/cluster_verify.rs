//! Verify over gRPC on loopback: answers from a served `NodeDirectory`, local
//! edge counts that stay local, one call per destination, and peers that
//! hang, fail, answer garbage or close mid-call: `Inconclusive`, never a purge.
//!
//! Needs `--features cluster` (no etcd: routes here are static).
#![cfg(feature = "cluster")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vshard_ghosts::cluster::*;
use vshard_ghosts::store::{GhostStore, MemoryStore};
use vshard_ghosts::sweep::PassReport;
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::testing::ManualClock;
use vshard_ghosts::*;

const DEADLINE: Duration = Duration::from_millis(300);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn client(routes: &StaticRoutes, local: Arc<dyn LocalEdgeCounts>) -> GrpcVerifier {
    let config = GrpcVerifierConfig { deadline: DEADLINE, ..GrpcVerifierConfig::default() };
    GrpcVerifier::new(Arc::new(routes.clone()), local, config).unwrap()
}

fn req(node: &str, target: u16, epoch: u64) -> VerifyRequest {
    VerifyRequest {
        shard: ShardId(0),
        node_id: node.into(),
        target_shard: ShardId(target),
        epoch: Epoch(epoch),
    }
}

#[actix::test]
async fn answers_follow_the_served_directory_and_counts_stay_local() {
    let remote = DirectoryVerifier::new();
    remote.record_move("kept", ShardId(1), Epoch(2));
    remote.record_move("moved", ShardId(4), Epoch(3));
    remote.record_move("ahead", ShardId(1), Epoch(1));
    // The remote side's own count is never sent: the holder's is authoritative.
    remote.set_local_edges(ShardId(0), "kept", Some(LocalEdges::at(99, 99)));
    let server = VerifyServer::start(any_port(), Arc::new(remote)).unwrap();
    let local = DirectoryVerifier::new();
    local.set_local_edges(ShardId(0), "kept", Some(LocalEdges::at(3, 7)));
    let routes = StaticRoutes::new();
    routes.set(ShardId(1), &server.local_addr().to_string());
    let v = client(&routes, Arc::new(local));

    let answers = v
        .verify_batch(vec![
            req("kept", 1, 2),
            req("moved", 1, 2),
            req("gone", 1, 2),
            req("ahead", 1, 2),
            req("x", 9, 1),
        ])
        .await;
    assert_eq!(answers[0], Ok(Verdict::Keep { local_edges: Some(LocalEdges::at(3, 7)) }));
    assert_eq!(answers[1], Ok(Verdict::Redirect { shard: ShardId(4), epoch: Epoch(3) }));
    assert_eq!(answers[2], Ok(Verdict::Purge));
    assert_eq!(answers[3], Ok(Verdict::Inconclusive), "the owner is behind the ghost");
    assert_eq!(answers[4], Err(Error::TargetUnreachable { shard: ShardId(9) }), "no owner known");
    assert_eq!(v.verify(req("kept", 1, 2)).await, answers[0]);
    let s = v.stats();
    assert_eq!((s.rpcs, s.verifies, s.unroutable, s.failed_rpcs, s.channels), (2, 5, 1, 0, 1));
    assert_eq!(server.stats(), ServerStats { calls: 2, queries: 5, not_owned: 0 });
}

#[actix::test]
async fn a_batch_is_one_call_per_destination_over_reused_connections() {
    let dir = DirectoryVerifier::new();
    let a = VerifyServer::start(any_port(), Arc::new(dir.clone())).unwrap();
    let b = VerifyServer::start(any_port(), Arc::new(dir.clone())).unwrap();
    let routes = StaticRoutes::new();
    routes.set(ShardId(1), &a.url());
    routes.set(ShardId(2), &b.url());
    routes.set(ShardId(3), &a.url());
    let requests: Vec<_> = (0..300)
        .map(|i| {
            let (node, target) = (format!("n{i}"), 1 + (i % 3) as u16);
            dir.record_move(&node, ShardId(target), Epoch(1));
            req(&node, target, 1)
        })
        .collect();
    let v = client(&routes, Arc::new(NoLocalCounts));
    for round in 1..=3 {
        let answers = v.verify_batch(requests.clone()).await;
        assert!(answers.iter().all(|a| *a == Ok(Verdict::Keep { local_edges: None })));
        let s = v.stats();
        assert_eq!((s.rpcs, s.verifies, s.channels), (2 * round, 300 * round, 2), "one call per peer");
    }
    assert_eq!(a.stats(), ServerStats { calls: 3, queries: 600, not_owned: 0 });
    assert_eq!(b.stats(), ServerStats { calls: 3, queries: 300, not_owned: 0 });
    assert_eq!(v.stats().verifies_per_rpc(), 150.0);

    // Past max_batch, one destination takes several calls.
    let config = GrpcVerifierConfig { max_batch: 64, deadline: DEADLINE, ..GrpcVerifierConfig::default() };
    let small = GrpcVerifier::new(Arc::new(routes.clone()), Arc::new(NoLocalCounts), config).unwrap();
    let to_b: Vec<_> = requests.iter().filter(|r| r.target_shard == ShardId(2)).cloned().collect();
    assert_eq!(small.verify_batch(to_b).await.len(), 100);
    assert_eq!(small.stats().rpcs, 2);
}

/// A runtime with `n` ghosts on shard 0, all pointing at shard 1 and due,
/// swept once through `verifier`.
async fn sweep_once(verifier: Arc<dyn Verifier>, n: usize) -> (PassReport, u64) {
    let store = Arc::new(MemoryStore::new());
    let mut t =
        GhostTable::new(ShardId(0), TableConfig { grace: Duration::ZERO, ..TableConfig::default() }).unwrap();
    for i in 0..n {
        t.insert(&format!("n{i}"), ShardId(1), 1, Epoch(1), 0).unwrap();
    }
    store.replace(&t).unwrap();
    let shard = ShardConfig {
        table: TableConfig { grace: Duration::ZERO, ..TableConfig::default() },
        ..ShardConfig::default()
    };
    let rt = support::local_runtime(store, [ShardId(0)], shard, &ManualClock::new(1_000), 0).start().unwrap();
    let sweep = SweeperConfig {
        verifies_per_second: 100_000,
        burst: 1_000,
        max_in_flight: 256,
        verify_timeout: Duration::from_secs(5),
        pass_interval: None,
        busy_latency: Duration::from_secs(30),
        // A fixed rate, as `support::fast_sweeper`: on the manual clock, a rate
        // cut by a probe slowed by a loaded machine leaves the bucket one token
        // that nothing refills, and the pass waits forever.
        latency_target: None,
        ..SweeperConfig::default()
    };
    rt.start_sweeper(verifier, sweep).unwrap();
    let report = rt.run_sweep_pass().await.unwrap();
    let left = rt.shard_stats(ShardId(0)).await.unwrap().table.ghosts;
    rt.shutdown().await.unwrap();
    (report, left)
}

/// Sweeping through a peer at `url` that misbehaves: every ghost is
/// inconclusive and stays, though a truthful answer would purge them all.
async fn inconclusive_through(url: &str, what: &str) {
    inconclusive_through_calls(url, what, true).await;
}

/// As `inconclusive_through`; `whole` says whether the call fails as a whole
/// (else only its answers are unusable).
async fn inconclusive_through_calls(url: &str, what: &str, whole: bool) {
    let routes = StaticRoutes::new();
    routes.set(ShardId(1), url);
    let v = client(&routes, Arc::new(NoLocalCounts));
    let t0 = Instant::now();
    let (report, left) = sweep_once(Arc::new(v.clone()), 200).await;
    let c = report.counts;
    assert_eq!((c.checked, c.inconclusive, c.verify_failures, c.purged()), (200, 200, 200, 0), "{what}");
    assert_eq!(left, 200, "{what}: nothing purged");
    assert!(t0.elapsed() < DEADLINE * 5, "{what}: bounded by the deadline ({:?})", t0.elapsed());
    let s = v.stats();
    assert!(s.rpcs <= 2 && (s.failed_rpcs >= 1) == whole, "{what}: {s:?}");
}

#[actix::test]
async fn a_truthful_peer_purges_the_ghosts_of_deleted_nodes() {
    // The control for the fault tests below: the same ghosts, answered truly, go.
    let server = VerifyServer::start(any_port(), Arc::new(DirectoryVerifier::new())).unwrap();
    let routes = StaticRoutes::new();
    routes.set(ShardId(1), &server.url());
    let v = client(&routes, Arc::new(NoLocalCounts));
    let (report, left) = sweep_once(Arc::new(v.clone()), 200).await;
    assert_eq!((report.counts.purged(), left), (200, 0));
    assert_eq!(v.stats().rpcs, 1, "a page of 200 is one call");
}

#[actix::test]
async fn a_peer_that_hangs_fails_or_answers_garbage_is_inconclusive() {
    let server = VerifyServer::start(any_port(), Arc::new(DirectoryVerifier::new())).unwrap();
    for fault in [ServerFault::Hang, ServerFault::ShortAnswer, ServerFault::EmptyAnswers, ServerFault::Fail] {
        server.set_fault(fault);
        let whole = fault != ServerFault::EmptyAnswers;
        inconclusive_through_calls(&server.url(), &format!("{fault:?}"), whole).await;
    }
}

/// A TCP peer on loopback that plays `serve` on every connection, on a thread
/// of its own, for as long as the test runs.
fn raw_peer(serve: fn(std::net::TcpStream)) -> String {
    let listener = TcpListener::bind(any_port()).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    format!("http://{addr}")
}

/// Reads what the client sends for a moment (its preface and the call).
fn read_some(stream: &mut std::net::TcpStream) {
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

#[actix::test]
async fn a_peer_that_closes_mid_call_is_inconclusive() {
    let url = raw_peer(|mut s| {
        read_some(&mut s);
        drop(s);
    });
    inconclusive_through(&url, "closed mid-call").await;
}

#[actix::test]
async fn a_peer_that_sends_junk_bytes_is_inconclusive() {
    let url = raw_peer(|mut s| {
        read_some(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\x00\xff\xfe garbage");
        read_some(&mut s);
    });
    inconclusive_through(&url, "junk bytes").await;
}

#[actix::test]
async fn a_peer_that_accepts_and_never_speaks_is_inconclusive() {
    let url = raw_peer(|mut s| {
        // Holds the connection open, silent, well past the deadline.
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 4096];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    inconclusive_through(&url, "silent").await;
}

#[actix::test]
async fn a_peer_that_is_down_or_unknown_is_inconclusive() {
    // A port just freed: nothing listens there.
    let closed = TcpListener::bind(any_port()).unwrap().local_addr().unwrap();
    inconclusive_through(&format!("http://{closed}"), "refused").await;

    let v = client(&StaticRoutes::new(), Arc::new(NoLocalCounts));
    let (report, left) = sweep_once(Arc::new(v.clone()), 50).await;
    assert_eq!((report.counts.inconclusive, report.counts.purged(), left), (50, 0, 50));
    assert_eq!((v.stats().rpcs, v.stats().unroutable), (0, 50), "no owner known: nothing sent");
}

#[actix::test]
async fn a_peer_that_recovers_is_asked_again_over_the_same_channel() {
    let server = VerifyServer::start(any_port(), Arc::new(DirectoryVerifier::new())).unwrap();
    let routes = StaticRoutes::new();
    routes.set(ShardId(1), &server.url());
    let v = client(&routes, Arc::new(NoLocalCounts));
    server.set_fault(ServerFault::Hang);
    assert!(v.verify(req("n", 1, 1)).await.is_err());
    server.set_fault(ServerFault::None);
    assert_eq!(v.verify(req("n", 1, 1)).await, Ok(Verdict::Purge));
    assert_eq!((v.stats().channels, v.stats().failed_rpcs), (1, 1));
}
