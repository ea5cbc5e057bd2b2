//! The README's verify figures: verifies per second through the sweeper over
//! gRPC on loopback, batched, beside the in-process `DirectoryVerifier` in the
//! same run, and verifies per RPC.
//!
//! With `--etcd URL`, also the takeover time after SIGKILL: a child process
//! takes shards with the default lease, is killed, and this process takes them
//! over; the time from the kill until its `EtcdOwners` routes them here.
//!
//! `cargo run --release --example cluster_figures --features cluster [-- --etcd http://127.0.0.1:23790]`
//! (without `--etcd` no etcd is needed: the verify routes are static; everything
//! listens on 127.0.0.1 and nothing is written to disk).

use clap::Parser;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vshard_ghosts::cluster::{
    EtcdOwners, GrpcVerifier, GrpcVerifierConfig, NoLocalCounts, OwnersConfig, ShardRoutes, StaticRoutes,
    VerifyServer,
};
use vshard_ghosts::store::{EtcdConfig, EtcdStore, GhostStore, MemoryStore};
use vshard_ghosts::table::GhostTable;
use vshard_ghosts::{
    DirectoryVerifier, Epoch, GhostRuntime, ShardId, StoreChoice, SweeperConfig, TableConfig, Verifier,
};

#[derive(Parser, Debug, Clone)]
#[command(about = "Verifies per second over gRPC (batched) beside in-process")]
struct Args {
    /// Ghosts verified per run, spread over the holding shards.
    #[arg(long, default_value_t = 200_000)]
    ghosts: usize,
    /// Holding shards.
    #[arg(long, default_value_t = 4)]
    shards: u16,
    /// Peers (verify servers), each owning one target shard.
    #[arg(long, default_value_t = 2)]
    peers: u16,
    /// Sweeper page size, and so most ghosts per batch.
    #[arg(long, default_value_t = 256)]
    page: usize,
    /// Ghosts verified one per call, for comparison.
    #[arg(long, default_value_t = 20_000)]
    unbatched: usize,
    /// etcd endpoint for the takeover figure (none: skipped).
    #[arg(long)]
    etcd: Option<String>,
    /// Shards the killed process holds.
    #[arg(long, default_value_t = 8)]
    takeover_shards: u16,
    /// Internal: be the process that takes shards under this prefix and waits to be killed.
    #[arg(long, hide = true)]
    hold: Option<String>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(prefix), Some(etcd)) = (&args.hold, &args.etcd) {
        return hold(etcd, prefix, args.takeover_shards);
    }
    let dir = DirectoryVerifier::new();
    let store = Arc::new(MemoryStore::new());
    seed(&store, &dir, &args)?;
    let servers: Vec<VerifyServer> = (0..args.peers)
        .map(|_| VerifyServer::start("127.0.0.1:0".parse().expect("address"), Arc::new(dir.clone())))
        .collect::<vshard_ghosts::Result<_>>()?;
    let routes = StaticRoutes::new();
    for (i, s) in servers.iter().enumerate() {
        routes.set(ShardId(args.shards + i as u16), &s.url());
    }
    let grpc =
        GrpcVerifier::new(Arc::new(routes.clone()), Arc::new(NoLocalCounts), GrpcVerifierConfig::default())?;

    let (n, local) = sweep(store.clone(), Arc::new(dir.clone()), &args)?;
    println!(
        "in-process DirectoryVerifier: {n} verifies in {local:.2} s = {:.0} verifies/s",
        n as f64 / local
    );
    let (n, remote) = sweep(store, Arc::new(grpc.clone()), &args)?;
    let s = grpc.stats();
    println!(
        "gRPC on loopback, batched:    {n} verifies in {remote:.2} s = {:.0} verifies/s ({} RPCs, {:.1} verifies per RPC, {} failed)",
        n as f64 / remote,
        s.rpcs,
        s.verifies_per_rpc(),
        s.failed_rpcs
    );
    // The same over gRPC one ghost per call, for what batching buys (on fewer ghosts).
    let single = GrpcVerifierConfig { max_batch: 1, ..GrpcVerifierConfig::default() };
    let one = GrpcVerifier::new(Arc::new(routes.clone()), Arc::new(NoLocalCounts), single)?;
    let few = Args { ghosts: args.unbatched, ..args.clone() };
    let small = Arc::new(MemoryStore::new());
    seed(&small, &dir, &few)?;
    let (n, unbatched) = sweep(small, Arc::new(one.clone()), &few)?;
    println!(
        "gRPC on loopback, unbatched:  {n} verifies in {unbatched:.2} s = {:.0} verifies/s ({} RPCs)",
        n as f64 / unbatched,
        one.stats().rpcs
    );
    let served: u64 = servers.iter().map(|s| s.stats().queries).sum();
    println!("servers answered {served} queries; gRPC / in-process = {:.2}", local / remote);
    if let Some(etcd) = &args.etcd {
        takeover(etcd, args.takeover_shards)?;
    }
    Ok(())
}

fn etcd_config(prefix: &str, owner: &str) -> EtcdConfig {
    EtcdConfig {
        prefix: prefix.to_owned(),
        owner_id: owner.to_owned(),
        acquire_timeout: Duration::from_secs(60),
        ..EtcdConfig::default()
    }
}

/// The child: takes `shards` under `prefix` with the default lease, says so, and waits to be killed.
fn hold(etcd: &str, prefix: &str, shards: u16) -> Result<()> {
    let store = EtcdStore::connect([etcd], etcd_config(prefix, "victim"))?;
    store.acquire(&(0..shards).map(ShardId).collect::<Vec<_>>())?;
    println!("HOLDING");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Starts a child that holds shards, SIGKILLs it, takes its shards over, and
/// prints how long each step took.
fn takeover(etcd: &str, shards: u16) -> Result<()> {
    let prefix = format!("vshard-ghosts-figures/{:016x}/", fastrand::u64(..));
    let watch =
        EtcdOwners::start([etcd], OwnersConfig { prefix: prefix.clone(), ..OwnersConfig::default() })?;
    watch.register("victim", "127.0.0.1:1")?;
    watch.register("survivor", "127.0.0.1:2")?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--etcd", etcd, "--hold", &prefix, "--takeover-shards", &shards.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("child stdout")?).read_line(&mut line)?;
    if line.trim() != "HOLDING" {
        return Err(format!("the child did not take its shards: {line:?}").into());
    }
    let survivor = EtcdStore::connect([etcd], etcd_config(&prefix, "survivor"))?;
    let ttl = survivor.config().lease_ttl_secs;
    child.kill()?; // SIGKILL
    let killed = Instant::now();
    child.wait()?;
    survivor.acquire(&(0..shards).map(ShardId).collect::<Vec<_>>())?;
    let acquired = killed.elapsed();
    while (0..shards).any(|s| watch.route(ShardId(s)).as_deref() != Some("http://127.0.0.1:2")) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let routed = killed.elapsed();
    println!(
        "takeover after SIGKILL ({shards} shards, lease TTL {ttl} s): shards taken {:.2} s after the kill, routed to the survivor {:.3} s after the kill ({:.1} ms after taking)",
        acquired.as_secs_f64(),
        routed.as_secs_f64(),
        (routed - acquired).as_secs_f64() * 1e3
    );
    survivor.release_all()?;
    Ok(())
}

/// Ghosts on the holding shards, each pointing at one of the peers' shards
/// (a shard's ghosts alternate between the peers, so a page goes to all of
/// them) and known there, due at once (inserted at time 0).
fn seed(store: &MemoryStore, dir: &DirectoryVerifier, args: &Args) -> Result<()> {
    for shard in 0..args.shards {
        let mut t = GhostTable::new(ShardId(shard), TableConfig::default())?;
        for i in (usize::from(shard)..args.ghosts).step_by(usize::from(args.shards)) {
            let (id, target) = (
                format!("node-{i}"),
                ShardId(args.shards + (i / usize::from(args.shards) % usize::from(args.peers)) as u16),
            );
            t.insert(&id, target, 1, Epoch(1), 0)?;
            dir.record_move(&id, target, Epoch(1));
        }
        store.replace(&t)?;
    }
    Ok(())
}

/// One sweep pass over the seeded shards through `verifier`, on a runtime
/// of its own; every ghost is kept. Returns verifies and seconds.
fn sweep(store: Arc<MemoryStore>, verifier: Arc<dyn Verifier>, args: &Args) -> Result<(u64, f64)> {
    let config = SweeperConfig {
        verifies_per_second: 10_000_000,
        burst: 100_000,
        max_in_flight: args.page * 4,
        page_size: args.page,
        pass_interval: None,
        busy_latency: Duration::from_secs(30),
        ..SweeperConfig::default()
    };
    let shards = args.shards;
    let out = actix::System::new().block_on(async move {
        let rt = GhostRuntime::builder()
            .shards((0..shards).map(ShardId))
            .store(StoreChoice::Custom(store))
            .sweeper(verifier, config)
            .start()?;
        for s in 0..shards {
            rt.shard_stats(ShardId(s)).await?; // loaded before the clock starts
        }
        let t0 = Instant::now();
        let report = rt.run_sweep_pass().await?;
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(report.counts.kept, report.counts.checked, "every ghost is kept: {:?}", report.counts);
        rt.shutdown().await?;
        Ok::<_, vshard_ghosts::Error>((report.counts.checked, secs))
    })?;
    Ok(out)
}
