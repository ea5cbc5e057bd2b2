//! The README's etcd figures: edge events per second through one shard on redb and on etcd
//! (and etcd transactions per group commit), reloads of a large shard, and what that shard
//! takes in etcd per ghost against its snapshot's bytes per ghost.
//!
//! `cargo run --release --example etcd_figures --features etcd -- --etcd http://127.0.0.1:23790`
//! (an etcd must listen there; `.ci/run` shows how to start one).

use clap::Parser;
use std::sync::Arc;
use std::time::Instant;
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::store::{EtcdConfig, EtcdStore, GhostStore, RedbStore, ShardChanges, StubRecord};
use vshard_ghosts::table::ChangeSet;
use vshard_ghosts::{Epoch, GhostRuntime, ShardId, StoreChoice, TableConfig};

#[derive(Parser, Debug)]
#[command(about = "Throughput and reload figures, redb beside etcd")]
struct Args {
    /// etcd endpoint.
    #[arg(long, default_value = "http://127.0.0.1:23790")]
    etcd: String,
    /// Edge events sent to the shard, per store.
    #[arg(long, default_value_t = 100_000)]
    events: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    in_flight: u32,
    /// Ghosts the events go to.
    #[arg(long, default_value_t = 1_000)]
    ghosts: u32,
    /// Ghosts in the shard that is reloaded.
    #[arg(long, default_value_t = 100_000)]
    reload: u32,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let redb: Arc<dyn GhostStore> = Arc::new(RedbStore::open(dir.path().join("figures.redb"))?);
    let prefix = format!("vshard-ghosts-figures/{:016x}/", fastrand::u64(..));
    let etcd =
        Arc::new(EtcdStore::connect([args.etcd.as_str()], EtcdConfig { prefix, ..Default::default() })?);
    let stores = [("redb", redb), ("etcd", etcd.clone() as Arc<dyn GhostStore>)];
    println!(
        "one shard, {} edge events ({} in flight, each acknowledged once durable) over {} ghosts",
        args.events, args.in_flight, args.ghosts
    );
    println!("| store | events/s | events per commit | mean commit |");
    println!("|---|---|---|---|");
    let etcd_before = etcd.stats();
    for (name, store) in &stores {
        let (rate, per_commit, commit_us) =
            actix::System::new().block_on(throughput(store.clone(), &args))?;
        println!("| {name} | {rate:.0} | {per_commit:.1} | {commit_us:.0} µs |");
    }
    let etcd_after = etcd.stats();
    let (commits, txns) =
        (etcd_after.commits - etcd_before.commits, etcd_after.write_txns - etcd_before.write_txns);
    println!(
        "\netcd: {commits} group commits in {txns} write transactions ({} checkpoints among them)",
        etcd_after.checkpoints - etcd_before.checkpoints
    );
    println!("\nreload of one shard of {} ghosts", args.reload);
    println!("| store | write (commits of 10 000) | load |");
    println!("|---|---|---|");
    for (name, store) in &stores {
        let t = Instant::now();
        let mut batch = Vec::new();
        for i in 0..args.reload {
            batch.push(StubRecord {
                node_id: format!("user:{i:08}"),
                target_shard: (i % 63 + 2) as u16,
                refcount: i % 5 + 1,
                created_at_ms: 1_000,
                epoch: 1,
                hold_until_ms: 0,
                tombstone: false,
                seq: 0,
            });
            if batch.len() == 10_000 || i + 1 == args.reload {
                let changes = ChangeSet::from_parts(batch.iter().map(Into::into), [], None);
                batch.clear();
                store.commit(&[ShardChanges { shard: ShardId(1), changes }])?;
            }
        }
        let write = t.elapsed();
        let t = Instant::now();
        let table = store.load(ShardId(1), &TableConfig::default())?;
        let load = t.elapsed();
        assert_eq!(table.len(), args.reload as usize);
        println!("| {name} | {:.2} s | {:.0} ms |", write.as_secs_f64(), load.as_secs_f64() * 1e3);
    }
    let snapshot =
        vshard_ghosts::codec::encode_snapshot(&etcd.load(ShardId(1), &TableConfig::default())?)?.len();
    let (keys, bytes) = live_bytes(&args.etcd, &etcd.config().prefix)?;
    let ghosts = f64::from(args.reload);
    println!(
        "\netcd holds the shard in {keys} keys, {bytes} bytes of keys and values = {:.1} B per ghost; \
         its snapshot: {:.1} B per ghost ({:.2}x)",
        bytes as f64 / ghosts,
        snapshot as f64 / ghosts,
        bytes as f64 / snapshot as f64
    );
    etcd.release_all()?;
    Ok(())
}

/// The keys under `prefix` and their bytes, keys and values (the history a
/// compaction removes not counted).
fn live_bytes(endpoint: &str, prefix: &str) -> Result<(i64, u64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        let resp = c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?;
        let bytes = resp.kvs().iter().map(|kv| (kv.key().len() + kv.value().len()) as u64).sum();
        Ok((resp.count(), bytes))
    })
}

/// Runs the events through a one-shard runtime; returns events/s, events per
/// store commit and the mean commit time in µs.
async fn throughput(store: Arc<dyn GhostStore>, args: &Args) -> Result<(f64, f64, f64)> {
    let rt = Arc::new(
        GhostRuntime::builder().shards([ShardId(0)]).arbiters(1).store(StoreChoice::Custom(store)).start()?,
    );
    let ids: Arc<Vec<String>> = Arc::new((0..args.ghosts).map(|i| format!("node:{i}")).collect());
    for chunk in ids.chunks(args.in_flight as usize) {
        let inserts = chunk.iter().map(|id| {
            rt.insert_ghost(
                ShardId(0),
                InsertGhost { node_id: id.as_str().into(), target: ShardId(1), refcount: 1, epoch: Epoch(1) },
            )
        });
        for r in futures::future::join_all(inserts).await {
            r?;
        }
    }
    let before = rt.writer_stats().unwrap_or_default();
    let started = Instant::now();
    let per_task = args.events / args.in_flight;
    let tasks: Vec<_> = (0..args.in_flight)
        .map(|_| {
            let (rt, ids) = (rt.clone(), ids.clone());
            actix::spawn(async move {
                let mut rng = fastrand::Rng::new();
                for _ in 0..per_task {
                    rt.edge_added(ShardId(0), &ids[rng.usize(..ids.len())]).await?;
                }
                Ok::<_, vshard_ghosts::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = rt.writer_stats().unwrap_or_default();
    rt.shutdown().await?;
    let events = f64::from(per_task * args.in_flight);
    let commits = (after.commits - before.commits).max(1) as f64;
    let micros = (after.commit_micros - before.commit_micros) as f64;
    Ok((events / seconds, events / commits, micros / commits))
}
