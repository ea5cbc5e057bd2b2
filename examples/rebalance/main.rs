//! The main job: a sharded graph database rebalancing under edge churn, sweeper and crashes, checked by an oracle.
//!
//! `cargo run --release --example rebalance` (defaults: 64 vShards, 200k nodes,
//! 1M edges, redb in a temporary folder). `--help` lists the flags that scale it.

mod model;
mod sim;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sim::{SimConfig, SimReport};
use std::path::PathBuf;
use std::process::ExitCode;
use vshard_ghosts::StoreChoice;

#[derive(Parser, Debug)]
#[command(about = "Rebalancing simulation with an oracle check")]
struct Args {
    /// vShards.
    #[arg(long, default_value_t = 64)]
    shards: u16,
    /// Graph nodes.
    #[arg(long, default_value_t = 200_000)]
    nodes: u32,
    /// Graph edges.
    #[arg(long, default_value_t = 1_000_000)]
    edges: u64,
    /// Rebalancing waves.
    #[arg(long, default_value_t = 20)]
    waves: u32,
    /// Edge additions and removals per wave.
    #[arg(long, default_value_t = 50_000)]
    churn: u32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Folder for the redb file (default: a temporary folder, removed at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Store: `redb` (embedded default), `memory`, or `etcd://host:port` (built
    /// with `--features etcd`; a fresh key prefix per run).
    #[arg(long, default_value = "redb")]
    store: String,
    /// Shard and sweeper settings from a TOML file (see `examples/rebalance/ghosts.toml`);
    /// `--shards` still sets the shards.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the metrics in Prometheus text format at the end.
    #[arg(long)]
    metrics: bool,
    /// Log level (overridden by RUST_LOG).
    #[arg(long, default_value = "warn")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    // Injected panics are part of the run: log them in one line, not a backtrace each.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>().is_some_and(|m| m.contains("injected panic")) {
            tracing::debug!("injected panic in a shard handler");
        } else {
            default_hook(info);
        }
    }));
    let prometheus = args.metrics.then(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("one recorder")
    });

    let tmp = tempfile::tempdir().expect("temporary folder");
    let dir = args.data_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let store = match args.store.as_str() {
        "memory" => StoreChoice::Memory,
        "redb" => {
            std::fs::create_dir_all(&dir).expect("data folder");
            StoreChoice::Redb(dir.join("ghosts.redb"))
        }
        url if url.starts_with("etcd://") => match etcd_store(url) {
            Ok(store) => store,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        other => {
            eprintln!("unknown store {other:?}: use redb, memory or etcd://host:port");
            return ExitCode::FAILURE;
        }
    };
    let ghost = match &args.config {
        Some(path) => match vshard_ghosts::GhostConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => sim::sim_settings(),
    };
    let cfg = SimConfig {
        ghost,
        shards: args.shards,
        nodes: args.nodes,
        edges: args.edges,
        waves: args.waves,
        churn: args.churn,
        seed: args.seed,
        ..SimConfig::default()
    };
    println!(
        "simulating {} vShards, {} nodes, {} edges, {} waves on {}",
        cfg.shards, cfg.nodes, cfg.edges, cfg.waves, args.store
    );
    let bar = ProgressBar::new(u64::from(cfg.waves));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] wave {pos}/{len} {msg}")
            .expect("template"),
    );
    let progress = |done: u32, _total: u32, phase: &str| {
        bar.set_position(u64::from(done));
        bar.set_message(phase.to_owned());
    };
    let started = std::time::Instant::now();
    let result = actix::System::new().block_on(sim::run(&cfg, store.clone(), &progress));
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("simulation failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store_bytes = match &store {
        StoreChoice::Redb(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
        _ => 0,
    };
    print_report(&report, started.elapsed().as_secs_f64(), store_bytes);
    if let Some(handle) = prometheus {
        println!("\n{}", handle.render());
    }
    if report.divergences.is_empty() && report.replay_skipped {
        println!(
            "oracle: OK ({} ghosts exactly as expected; {} resolve checks, no miss)",
            report.final_ghosts, report.miss_checks
        );
        ExitCode::SUCCESS
    } else {
        println!("oracle: FAILED");
        for d in &report.divergences {
            println!("  {d}");
        }
        if !report.replay_skipped {
            println!("  a replayed batch was applied twice");
        }
        ExitCode::FAILURE
    }
}

/// Ghost state in etcd, under a prefix of its own so that runs never meet.
#[cfg(feature = "etcd")]
fn etcd_store(url: &str) -> Result<StoreChoice, String> {
    let prefix = format!("vshard-ghosts-rebalance/{:016x}/", fastrand::u64(..));
    println!("etcd {url}, key prefix {prefix}");
    let config = vshard_ghosts::store::EtcdConfig { prefix, ..Default::default() };
    let store =
        vshard_ghosts::store::EtcdStore::connect([url], config).map_err(|e| format!("etcd {url}: {e}"))?;
    Ok(StoreChoice::Custom(std::sync::Arc::new(store)))
}

#[cfg(not(feature = "etcd"))]
fn etcd_store(url: &str) -> Result<StoreChoice, String> {
    Err(format!("{url}: this build has no etcd store; rebuild with `--features etcd`"))
}

fn print_report(r: &SimReport, seconds: f64, store_bytes: u64) {
    let mut lat = r.batch_latency_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0);
    let s = &r.sweep;
    println!("run time              {seconds:.1} s");
    println!(
        "edge events           {} ({:.0}/s while sending)",
        r.events,
        r.events as f64 / r.event_seconds.max(1e-9)
    );
    println!("event batch latency   p50 {} µs, p99 {} µs ({} batches)", pct(0.5), pct(0.99), lat.len());
    println!("moves                 {}", r.moves);
    println!("ghosts inserted       {}", r.ghosts_inserted);
    println!("decrements lost (injected) {}", r.lost_decrements);
    println!(
        "sweeper               checked {}, purged {} (refcount zero {}, verified {}), reclaimed {}",
        s.checked,
        s.purged(),
        s.purged_refcount_zero,
        s.purged_verified,
        s.reclaimed
    );
    println!(
        "                      redirected {}, corrected {}, stale {}, inconclusive {}, deferred busy {}",
        s.redirected, s.corrected, s.stale, s.inconclusive, s.deferred_busy
    );
    println!("shard restarts        {}", r.restarts);
    println!("store commits         {}", r.commits);
    println!("store size            {:.1} MiB", store_bytes as f64 / (1 << 20) as f64);
    println!("ghosts at the end     {}", r.final_ghosts);
}
