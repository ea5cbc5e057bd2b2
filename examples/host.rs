//! A host to copy: settings from a file, its own verifier over its own placement map,
//! Prometheus metrics over HTTP, readiness, work fanned out over clones of the runtime,
//! sequenced edge batches with a retry loop, a crash mid-stream and a restart that
//! finds everything acknowledged.
//!
//! `cargo run --example host [-- --metrics-addr 127.0.0.1:22500]`

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use vshard_ghosts::messages::InsertGhost;
use vshard_ghosts::{
    BoxFuture, EdgeEvents, Epoch, Error, GhostConfig, GhostRuntime, Result, RetryHint, ShardId, StoreChoice,
    Verdict, Verifier, VerifyRequest,
};

/// The host's placement map: where each node lives and at which move epoch.
type Placement = Arc<RwLock<HashMap<String, (ShardId, Epoch)>>>;

/// The host's verifier: answers from its placement map (in a cluster, a call to
/// the target shard's process).
struct PlacementVerifier(Placement);

impl Verifier for PlacementVerifier {
    fn verify(&self, request: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        let home = self.0.read().unwrap_or_else(|p| p.into_inner()).get(&*request.node_id).copied();
        Box::pin(async move {
            Ok(match home {
                None => Verdict::Purge,
                Some((shard, _)) if shard == request.target_shard => Verdict::Keep { local_edges: None },
                Some((shard, epoch)) if epoch > request.epoch => Verdict::Redirect { shard, epoch },
                Some(_) => Verdict::Inconclusive,
            })
        })
    }
}

const SETTINGS: &str = r#"
[runtime]
shards = "0..16"
arbiters = 2

[runtime.shard.table]
grace = "0s"

[sweeper]
verifies_per_second = 1000
burst = 100
pass_interval = "off"
"#;

const NODES: u32 = 2_000;

fn start(path: &Path, placement: &Placement) -> Result<GhostRuntime> {
    let settings = GhostConfig::load(path.with_file_name("ghosts.toml"))?;
    GhostRuntime::builder()
        .config(settings.runtime)
        .store(StoreChoice::Redb(path.to_owned()))
        .sweeper(Arc::new(PlacementVerifier(placement.clone())), settings.sweeper)
        .start()
}

/// Node `i` moved from shard `i % 16` to the next one, at epoch 1.
fn moved(i: u32) -> (ShardId, InsertGhost) {
    let from = (i % 16) as u16;
    let ghost = InsertGhost {
        node_id: format!("node-{i}").into(),
        target: ShardId((from + 1) % 16),
        refcount: 1,
        epoch: Epoch(1),
    };
    (ShardId(from), ghost)
}

/// Sends batch `seq` of a shard's log, resending what a restart lost first.
async fn send(rt: &GhostRuntime, shard: ShardId, log: &BTreeMap<u64, EdgeEvents>, seq: u64) -> Result<()> {
    let mut next = seq;
    while next <= seq {
        match rt.edge_batch(shard, Some(next), log[&next].clone()).await {
            Ok(_) => next += 1,
            Err(e) => match e.retry_hint() {
                RetryHint::RetryAsIs => tokio::time::sleep(Duration::from_millis(20)).await,
                RetryHint::ResendFrom(from) => next = from.max(1).min(seq),
                RetryHint::GiveUp => return Err(e),
            },
        }
    }
    Ok(())
}

/// The child: inserts ghosts from 16 tasks, prints each acknowledgement, and dies
/// mid-stream without a shutdown.
fn child(path: &Path) -> Result<()> {
    let placement = Placement::default();
    actix::System::new().block_on(async {
        let rt = start(path, &placement)?;
        println!("{}", rt.ready().await?);
        let acks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let tasks: Vec<_> = (0..16u32)
            .map(|t| {
                let (rt, acks) = (rt.clone(), acks.clone());
                actix::spawn(async move {
                    for i in (t..NODES).step_by(16) {
                        let (shard, ghost) = moved(i);
                        rt.insert_ghost(shard, ghost).await?;
                        println!("acked {i}");
                        // Half way, with inserts of the other tasks in flight: a crash.
                        if acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == NODES / 2 {
                            std::process::abort();
                        }
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| Error::store_from("insert task", e))??;
        }
        unreachable!("the child aborts half way")
    })
}

fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    Ok(body)
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    if let (Some(flag), Some(path)) = (args.next(), args.next())
        && flag == "--child"
    {
        return Ok(child(Path::new(&path))?);
    }
    let metrics_addr: SocketAddr = match std::env::args().skip_while(|a| a != "--metrics-addr").nth(1) {
        Some(addr) => addr.parse()?,
        None => ([127, 0, 0, 1], 22_500).into(),
    };
    let dir = tempfile::tempdir()?;
    let path: PathBuf = dir.path().join("ghosts.redb");
    std::fs::write(path.with_file_name("ghosts.toml"), SETTINGS)?;

    // 1. A crash: a child process inserts and aborts mid-stream.
    let out = std::process::Command::new(std::env::current_exe()?).arg("--child").arg(&path).output()?;
    let mut acked = Vec::new();
    for line in BufReader::new(&out.stdout[..]).lines() {
        let line = line?;
        match line.strip_prefix("acked ") {
            Some(i) => acked.push(i.parse::<u32>()?),
            None => println!("child: {line}"),
        }
    }
    println!("child aborted ({}) after {} acknowledged inserts", out.status, acked.len());

    // 2. Metrics over HTTP: installed before the actix System, so the listener has a
    // thread of its own.
    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(metrics_addr).install()?;
    vshard_ghosts::metrics::describe();

    // 3. The restart: every acknowledged insert is there.
    let placement = Placement::default();
    actix::System::new().block_on(async {
        let rt = start(&path, &placement)?;
        let health = rt.ready().await?;
        println!("restarted: {health}");
        let reader = rt.reader();
        for &i in &acked {
            let (shard, ghost) = moved(i);
            let info = reader.ghost(shard, &ghost.node_id)?.expect("an acknowledged ghost survives a crash");
            assert_eq!((info.target_shard, info.refcount), (ghost.target, 1));
        }
        println!("all {} acknowledged ghosts found", acked.len());

        // Sequenced edge batches from shard 0's log: each node of shard 0 loses its edge.
        let mut log = BTreeMap::new();
        for (seq, i) in acked.iter().filter(|&&i| i % 16 == 0).enumerate() {
            let mut events = EdgeEvents::new();
            events.removed(&format!("node-{i}"));
            log.insert(seq as u64 + 1, events);
            send(&rt, ShardId(0), &log, seq as u64 + 1).await?;
        }
        println!(
            "shard 0 applied {} batches; ghosts left there: {}",
            log.len(),
            rt.shard_stats(ShardId(0)).await?.table.ghosts
        );

        // The rest live where the ghosts say: a sweep keeps them.
        for &i in &acked {
            let (_, ghost) = moved(i);
            placement
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ghost.node_id.into(), (ghost.target, Epoch(1)));
        }
        let pass = rt.run_sweep_pass().await?;
        println!(
            "sweep pass: {} verified, {} kept, {} purged",
            pass.counts.checked,
            pass.counts.kept,
            pass.counts.purged()
        );
        rt.export_metrics().await;
        let scraped = tokio::task::spawn_blocking(move || scrape(metrics_addr))
            .await
            .map_err(|e| Error::store_from("scrape", e))?;
        let ghosts_lines =
            scraped.map_or(0, |body| body.lines().filter(|l| l.starts_with("vshard_ghosts_ghosts{")).count());
        println!("scraped http://{metrics_addr}/metrics: {ghosts_lines} per-shard ghost gauges");
        rt.shutdown().await
    })?;
    Ok(())
}
