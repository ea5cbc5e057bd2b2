//! Fills one shard's table through its actor on the embedded redb store, restarts, reloads, prints stats.
//!
//! `cargo run --release --example quickstart [-- GHOSTS]` (default 100 000).

use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vshard_ghosts::messages::{EdgeBatch, Flush, GetStats, InsertGhost};
use vshard_ghosts::{EdgeEvent, GhostActor, RedbStore, ShardConfig, StoreWriter, TokioClock};

fn main() -> vshard_ghosts::Result<()> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().map_err(|e| vshard_ghosts::Error::Store(e.to_string()))?;
    let path = dir.path().join("ghosts.redb");

    let started = Instant::now();
    System::new().block_on(fill(&path, n))?;
    println!("filled {n} ghosts in {:.2?}", started.elapsed());

    // A new system over the same file: the shard reloads what was acknowledged.
    let started = Instant::now();
    let stats = System::new().block_on(async {
        let (addr, writer) = open(&path)?;
        let stats = addr.send(GetStats).await.map_err(|_| vshard_ghosts::Error::Unavailable { shard: 0 })?;
        drop(addr);
        Ok::<_, vshard_ghosts::Error>((stats, writer))
    })?;
    println!("reloaded in {:.2?}: {:#?}", started.elapsed(), stats.0.table);
    stats.1.shutdown();
    Ok(())
}

fn open(path: &std::path::Path) -> vshard_ghosts::Result<(Addr<GhostActor>, StoreWriter)> {
    let store = Arc::new(RedbStore::open(path)?);
    let writer = StoreWriter::spawn(store, 3, Duration::from_millis(10))?;
    let actor =
        GhostActor::new(0, Arc::new(ShardConfig::default()), writer.clone(), Arc::new(TokioClock::new()));
    Ok((actor.start_supervised(), writer))
}

async fn fill(path: &std::path::Path, n: usize) -> vshard_ghosts::Result<()> {
    let (addr, writer) = open(path)?;
    let gone = |_| vshard_ghosts::Error::Unavailable { shard: 0 };
    let ids: Vec<String> = (0..n).map(|i| format!("node-{i:08}")).collect();
    for chunk in ids.chunks(1024) {
        let sends = chunk.iter().enumerate().map(|(i, id)| {
            addr.send(InsertGhost {
                node_id: id.as_str().into(),
                target: (i % 63 + 1) as u16,
                refcount: 1,
                epoch: 1,
            })
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(gone)??;
        }
    }
    let events = ids.iter().take(1024).map(|id| EdgeEvent::added(id.as_str())).collect();
    addr.send(EdgeBatch { seq: Some(1), events }).await.map_err(gone)??;
    addr.send(Flush).await.map_err(gone)??;
    let w = writer.stats();
    println!("{} acknowledged writes took {} commits", n + 1, w.commits);
    drop(addr);
    writer.shutdown();
    Ok(())
}
