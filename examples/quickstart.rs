//! A server's first hour with the crate: start a runtime on the embedded redb store,
//! record moves and edges, resolve a frontier, sweep, shut down, start again and find
//! everything acknowledged.
//!
//! `cargo run --release --example quickstart [-- GHOSTS]` (default 100 000).

use std::sync::Arc;
use std::time::Instant;
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::{
    DirectoryVerifier, EdgeEvents, Epoch, GhostRuntime, Result, ShardId, StoreChoice, SweeperConfig,
};

const SHARDS: u16 = 8;

fn runtime(path: &std::path::Path, verifier: &Arc<DirectoryVerifier>) -> Result<GhostRuntime> {
    // Passes only on demand here; a server keeps the default (one a minute).
    let sweeper = SweeperConfig { pass_interval: None, ..SweeperConfig::default() };
    GhostRuntime::builder()
        .shards((0..SHARDS).map(ShardId))
        .store(StoreChoice::Redb(path.to_owned()))
        .sweeper(verifier.clone(), sweeper)
        .start()
}

fn main() -> Result<()> {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().map_err(|e| vshard_ghosts::Error::store_from("temporary folder", e))?;
    let path = dir.path().join("ghosts.redb");
    // In a cluster, the verifier is an RPC to the target shard; in one process, a directory.
    let verifier = Arc::new(DirectoryVerifier::new());

    actix::System::new().block_on(async {
        let rt = runtime(&path, &verifier)?;
        println!("{}", rt.ready().await?);
        let started = Instant::now();
        // Rebalancing moved node i from shard i % 8 to the next shard at epoch 1;
        // one local edge points at each. In bulk: one message and one commit per
        // shard, one outcome per ghost, answered once durable.
        let moves = (0..n).map(|i| {
            let (from, to) = ((i % u32::from(SHARDS)) as u16, ((i + 1) % u32::from(SHARDS)) as u16);
            let id = format!("node-{i:08}");
            verifier.record_move(&id, ShardId(to), Epoch(1));
            (
                ShardId(from),
                InsertGhost { node_id: id.into(), target: ShardId(to), refcount: 1, epoch: Epoch(1) },
            )
        });
        for r in rt.insert_ghosts(moves).await {
            r?;
        }
        println!("{n} ghosts inserted, durable, in {:.2?}", started.elapsed());

        // Shard 0's edge log, batch 1: a second edge to node 0. Applied once per sequence
        // number, so the host can replay its log after a crash.
        let mut events = EdgeEvents::new();
        events.added("node-00000000");
        rt.edge_batch(ShardId(0), Some(1), events.clone()).await?;
        assert!(rt.edge_batch(ShardId(0), Some(1), events).await?.skipped, "a replay changes nothing");

        // A traversal frontier: where to forward each (shard, node).
        let hops = rt.resolve_many(&[(ShardId(0), "node-00000000"), (ShardId(0), "local-node")]).await?;
        println!("frontier forwards to {hops:?}");

        // Nothing is due yet: a new ghost waits out its grace period (60 s by default)
        // before the sweeper verifies it.
        let pass = rt.run_sweep_pass().await?;
        println!(
            "sweep pass: {} verified, {} kept, {} purged",
            pass.counts.checked,
            pass.counts.kept,
            pass.counts.purged()
        );
        rt.shutdown().await
    })?;

    // A new process over the same file: every acknowledged ghost is back.
    actix::System::new().block_on(async {
        let started = Instant::now();
        let rt = runtime(&path, &verifier)?;
        assert!(rt.ready().await?.is_ready());
        let stats = rt.stats().await?;
        let ghosts: u64 = stats.iter().map(|s| s.table.ghosts).sum();
        println!("reloaded {ghosts} ghosts over {SHARDS} shards in {:.2?}", started.elapsed());
        assert_eq!(ghosts, u64::from(n));
        assert_eq!(rt.shard_stats(ShardId(0)).await?.table.applied_seq, Some(1));
        rt.shutdown().await
    })
}
