//! The main job: a sharded graph database rebalancing under edge churn, sweeper and crashes, checked by an oracle.
//!
//! `cargo run --release --example rebalance` (defaults: 64 vShards, 200k nodes,
//! 1M edges, redb in a temporary folder). `--help` lists the flags that scale it;
//! `--plot FILE.svg` draws the run wave by wave, `--metrics-addr 127.0.0.1:PORT`
//! serves its metrics to Prometheus while it runs.

mod model;
mod plot;
mod sim;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sim::{SimConfig, SimReport, group};
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
    /// Print the metrics in Prometheus text format at the end, after the verdict.
    #[arg(long)]
    metrics: bool,
    /// Serve the metrics in Prometheus text format over HTTP at this address
    /// (`127.0.0.1:9000`: `GET /metrics`) while the run lasts.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Draw the run wave by wave into this file (`.svg` or `.png`): ghosts held,
    /// inserted, purged by reason, redirected, inconclusive verifies, batch latency.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Log level (overridden by RUST_LOG). Injected faults log at `info`, so the
    /// default keeps the screen for the run's story and for real trouble.
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
    if args.shards < 2 {
        eprintln!("--shards must be at least 2: nodes move between shards");
        return ExitCode::FAILURE;
    }
    if args.nodes == 0 {
        eprintln!("--nodes must be at least 1");
        return ExitCode::FAILURE;
    }
    let (prometheus, _exporter) = if args.metrics || args.metrics_addr.is_some() {
        match install_prometheus(args.metrics_addr) {
            Ok((handle, exporter)) => (Some(handle), exporter),
            Err(e) => {
                eprintln!("metrics: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        (None, None)
    };

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
        "simulating {} vShards, {}, {}, {} of {} edge changes on {} (seed {})",
        cfg.shards,
        count(u64::from(cfg.nodes), "node"),
        count(cfg.edges, "edge"),
        count(u64::from(cfg.waves), "wave"),
        group(u64::from(cfg.churn)),
        args.store,
        cfg.seed
    );
    if let Some(addr) = args.metrics_addr {
        println!("metrics at http://{addr}/metrics while the run lasts");
    }
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
    print_report(&report, &cfg, started.elapsed().as_secs_f64(), store_bytes);
    if let Some(path) = &args.plot {
        match plot::draw(
            path,
            &report.waves,
            &plot::Marks { dark: sim::dark_waves(cfg.waves), reopen_after: Some(report.reopen_wave) },
        ) {
            Ok(()) => println!("plot         {}", path.display()),
            Err(e) => eprintln!("plot {}: {e}", path.display()),
        }
    }
    let ok = report.divergences.is_empty() && report.replay_skipped;
    println!();
    if ok {
        println!(
            "oracle: OK. Checked after the final sweep: every ghost on every shard against the model \
             ({} held, each with the expected target and refcount, none missing, none extra); every wave, \
             that each ghost a local edge needs resolves ({} checks, no miss){}.",
            group(report.final_ghosts as u64),
            group(report.miss_checks),
            if report.replays > 0 { "; the replayed batch applied once" } else { "" }
        );
    } else {
        println!("oracle: FAILED");
        for d in &report.divergences {
            println!("  {d}");
        }
        if !report.replay_skipped {
            println!("  a replayed batch was applied twice");
        }
    }
    if let (true, Some(handle)) = (args.metrics, prometheus) {
        println!("\n{}", handle.render());
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

type Exporter = Option<std::thread::JoinHandle<()>>;

/// The Prometheus recorder, with every metric described and bucketed, and its
/// own HTTP listener at `addr` if asked for (on a thread of its own).
fn install_prometheus(
    addr: Option<std::net::SocketAddr>,
) -> Result<(metrics_exporter_prometheus::PrometheusHandle, Exporter), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let mut builder = PrometheusBuilder::new();
    for m in vshard_ghosts::metrics::ALL.iter().filter(|m| !m.buckets.is_empty()) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)
            .map_err(|e| e.to_string())?;
    }
    let (handle, exporter) = match addr {
        None => (builder.install_recorder().map_err(|e| e.to_string())?, None),
        Some(addr) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let (recorder, serve) = {
                let _in = runtime.enter();
                builder.with_http_listener(addr).build().map_err(|e| e.to_string())?
            };
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            let thread = std::thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || {
                    if let Err(e) = runtime.block_on(serve) {
                        tracing::error!(error = ?e, "metrics listener stopped");
                    }
                })
                .map_err(|e| e.to_string())?;
            (handle, Some(thread))
        }
    };
    vshard_ghosts::metrics::describe();
    Ok((handle, exporter))
}

/// `n` things, grouped for reading: `1 shard`, `64 shards`, `2 replayed batches`.
fn count(n: u64, thing: &str) -> String {
    let s = if n == 1 {
        ""
    } else if thing.ends_with('h') {
        "es"
    } else {
        "s"
    };
    format!("{} {thing}{s}", group(n))
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

fn print_report(r: &SimReport, cfg: &SimConfig, seconds: f64, store_bytes: u64) {
    let mut lat = r.batch_latency_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| sim::percentile(&lat, p);
    let s = &r.sweep;
    let dark = sim::dark_waves(cfg.waves);
    let dark_rows = if dark.is_empty() {
        ["no dark shards (too few waves)".to_owned(), String::new()]
    } else {
        [
            format!(
                "shards {} and {} unreachable, {}",
                sim::DARK_SHARDS[0],
                sim::DARK_SHARDS[1],
                match dark.len() {
                    1 => format!("wave {}", dark.end),
                    _ => format!("waves {}-{}", dark.start + 1, dark.end),
                }
            ),
            format!(
                "{} ghosts pointing there kept through it ({} verifies inconclusive, backed off); {} of them verified after",
                group(r.dark_kept),
                group(r.dark_inconclusive),
                group(r.dark_verified_after)
            ),
        ]
    };
    let rows: [[String; 2]; 5] = [
        [
            format!("{}, one a wave", count(r.panics, "handler panic")),
            format!("{}, each reloaded from the store", count(r.restarts, "shard restart")),
        ],
        match r.reopened_shards {
            0 => ["no stop and reopen (no wave)".to_owned(), String::new()],
            n => [
                format!("a full stop and reopen after wave {}", r.reopen_wave + 1),
                format!("{} reloaded from the store", count(n, "shard")),
            ],
        },
        [
            count(r.lost_decrements, "lost decrement"),
            if s.corrected < r.lost_decrements {
                format!(
                    "{} repaired by the sweeper (the other ghosts went with their last edge)",
                    count(s.corrected, "refcount")
                )
            } else {
                format!("{} repaired by the sweeper", count(s.corrected, "refcount"))
            },
        ],
        dark_rows,
        [
            format!("{} after the reopen", count(r.replays, "replayed batch")),
            match (r.replays, r.replay_skipped) {
                (0, _) => String::new(),
                (_, true) => "skipped: applied once".to_owned(),
                (_, false) => "APPLIED TWICE".to_owned(),
            },
        ],
    ];
    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0).max(17);
    println!("{:width$}  what the crate did", "injected");
    for [left, right] in &rows {
        println!("{}", format!("{left:width$}  {right}").trim_end());
    }
    println!();
    println!(
        "throughput   {} edge events, {}/s while sending; {} moves; {seconds:.1} s in all",
        group(r.events),
        group((r.events as f64 / r.event_seconds.max(1e-9)) as u64),
        group(r.moves)
    );
    println!(
        "latency      edge batch p50 {} µs, p99 {} µs ({} batches)",
        group(pct(0.5)),
        group(pct(0.99)),
        group(lat.len() as u64)
    );
    println!(
        "sweeper      {} verifies; purged {} at refcount zero, {} verified gone; {} redirected, {} reclaimed, {} stale",
        group(s.checked),
        group(s.purged_refcount_zero),
        group(s.purged_verified),
        group(s.redirected),
        group(s.reclaimed),
        group(s.stale)
    );
    let size = match store_bytes {
        0 => String::new(),
        b => format!(", {:.1} MiB", b as f64 / (1 << 20) as f64),
    };
    println!(
        "store        {} commits{size}; {} ghosts inserted, {} at the end",
        group(r.commits),
        group(r.ghosts_inserted),
        group(r.final_ghosts as u64)
    );
}
