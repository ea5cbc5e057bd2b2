//! A cluster on loopback: N processes against one etcd, each owning a share of
//! the vShards, verifying each other's ghosts over gRPC; one is SIGKILLed
//! midway, the survivors take its shards once its lease lapses, replay its
//! logs from the persisted applied sequence numbers and finish them; at the end
//! the oracle runs over every process.
//!
//! `cargo run --release --example cluster --features cluster -- --etcd http://127.0.0.1:23790`
//!
//! `--preset scale`: 3 processes, 48 shards, 500 016 ghosts (10 417 a shard),
//! 1024-event batches, 4 in flight per shard, the victim killed a third of the
//! way in; a long run, for a figure, not CI.
//!
//! However the run ends (success, failure, timeout after `--timeout`, Ctrl-C
//! or SIGTERM), the parent stops every worker it started: a worker whose
//! parent is gone (its stdin closed) exits on its own, and the parent kills
//! and reaps its workers on every way out.
//!
//! Each shard's log is deterministic from the seed (batch `seq` of shard `s` is
//! the same in every process), so any process can regenerate and resume it.
//! The workload is edge batches on ghosts whose nodes live on the next shard,
//! owned by another process (so that every sweep pass verifies across
//! processes), chained moves (a quarter of the nodes move on once more), moves
//! back (a quarter return to the ghost's shard) and moves on and back. Processes write only to etcd (under a fresh prefix) and their logs
//! to a temporary folder, removed at the end.

mod ledger;
mod worker;

use clap::Parser;
use ledger::Ledger;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Settings shared by the parent and its workers.
#[derive(Parser, Debug, Clone)]
#[command(about = "N processes on loopback against one etcd; one is killed midway")]
pub(crate) struct Args {
    /// etcd endpoint.
    #[arg(long, default_value = "http://127.0.0.1:23790")]
    pub(crate) etcd: String,
    /// Processes.
    #[arg(long, default_value_t = 3)]
    pub(crate) procs: u16,
    /// vShards, dealt round-robin over the processes.
    #[arg(long, default_value_t = 12)]
    pub(crate) shards: u16,
    /// Ghosts per shard.
    #[arg(long, default_value_t = 64)]
    pub(crate) ghosts: u32,
    /// Batches in each shard's log.
    #[arg(long, default_value_t = 400)]
    pub(crate) batches: u64,
    /// Edge events per batch.
    #[arg(long, default_value_t = 16)]
    pub(crate) batch_events: u32,
    /// The victim is killed once each of its shards has acknowledged this many batches.
    #[arg(long, default_value_t = 150)]
    pub(crate) kill_after: u64,
    /// Lease time-to-live in seconds (how long the victim's shards stay taken).
    #[arg(long, default_value_t = 10)]
    pub(crate) lease_ttl: u32,
    /// Seed of every shard's log.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Edge batches per shard sent and not yet acknowledged.
    #[arg(long, default_value_t = 4)]
    pub(crate) in_flight: usize,
    /// The whole run fails (and stops every worker) after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout: u64,
    /// `scale`: the documented large run (sets shards, ghosts, batches, batch
    /// events, kill point and in-flight batches; other flags still apply).
    #[arg(long)]
    pub(crate) preset: Option<String>,
    /// Internal: run as worker N under this key prefix.
    #[arg(long, hide = true)]
    pub(crate) worker: Option<u16>,
    /// Internal: the run's key prefix.
    #[arg(long, hide = true)]
    pub(crate) prefix: Option<String>,
}

impl Args {
    /// The settings with `--preset` applied.
    fn resolved(mut self) -> std::result::Result<Self, String> {
        match self.preset.as_deref() {
            None => {}
            Some("scale") => {
                self.procs = 3;
                self.shards = 48;
                self.ghosts = 10_417;
                self.batch_events = 1_024;
                self.batches = 30;
                self.kill_after = 10;
                self.in_flight = 4;
            }
            Some(other) => return Err(format!("unknown preset {other:?} (known: scale)")),
        }
        Ok(self)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse().resolved() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match (args.worker, args.prefix.clone()) {
        (Some(me), Some(prefix)) => worker::run(&args, me, &prefix),
        _ => parent(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A line from a worker, with the worker's index.
type Line = (u16, String);

struct Proc {
    child: Child,
    stdin: ChildStdin,
}

/// The workers, killed and reaped however the parent leaves (an error, a
/// timeout, a panic): none outlives the run.
struct Procs(Vec<Proc>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            if matches!(p.child.try_wait(), Ok(None)) {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

/// Turns Ctrl-C and SIGTERM into a line on `tx`, so that the parent leaves
/// through its usual way out (which stops the workers); should it not within
/// five seconds, the process exits, and the workers, their stdin closed, follow.
fn on_signal(tx: mpsc::Sender<Line>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _ = tx.send((u16::MAX, "SIGNAL".into()));
            tokio::time::sleep(Duration::from_secs(5)).await;
            std::process::exit(130);
        });
    })?;
    Ok(())
}

fn send(p: &mut Proc, line: &str) -> Result<()> {
    writeln!(p.stdin, "{line}")?;
    Ok(p.stdin.flush()?)
}

fn parent(args: &Args) -> Result<bool> {
    if args.procs == 0 || args.shards < args.procs.max(3) || args.kill_after >= args.batches {
        return Err("need procs ≥ 1, shards ≥ procs and ≥ 3, and kill_after < batches".into());
    }
    if args.kill_after > 0 && args.procs < 2 {
        return Err("a kill needs a survivor: procs ≥ 2 (or --kill-after 0)".into());
    }
    // Fail clearly, and at once, if etcd is not there.
    let probe = vshard_ghosts::cluster::OwnersConfig {
        prefix: "vshard-ghosts-cluster-probe/".into(),
        op_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    if let Err(e) = vshard_ghosts::cluster::EtcdOwners::start([args.etcd.as_str()], probe) {
        return Err(format!(
            "etcd not reachable at {} ({}); start one, e.g. as .ci/run does",
            args.etcd,
            e.chain()
        )
        .into());
    }
    let logs = tempfile::Builder::new().prefix("vshard-ghosts-cluster-").tempdir()?;
    let outcome = run_parent(args, logs.path());
    if !matches!(outcome, Ok(true)) {
        // Kept for a post-mortem; a passing run leaves nothing behind.
        eprintln!("worker logs kept in {}", logs.keep().display());
    }
    outcome
}

fn run_parent(args: &Args, logs: &std::path::Path) -> Result<bool> {
    let prefix = format!("vshard-ghosts-cluster/{:016x}/", fastrand::u64(..));
    let (tx, rx) = mpsc::channel::<Line>();
    on_signal(tx.clone())?;
    let mut procs = Procs(Vec::new());
    for me in 0..args.procs {
        let log = std::fs::File::create(logs.join(format!("proc-{me}.log")))?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(std::env::args().skip(1))
            .args(["--worker", &me.to_string(), "--prefix", &prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let (stdin, stdout) = (child.stdin.take().ok_or("stdin")?, child.stdout.take().ok_or("stdout")?);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send((me, line)).is_err() {
                    break;
                }
            }
            let _ = tx.send((me, "EXIT".into()));
        });
        procs.0.push(Proc { child, stdin });
    }
    drop(tx);
    let procs = &mut procs.0;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // `--kill-after 0`: nobody is killed (the same run, for comparison).
    let victim = if args.kill_after > 0 { args.procs - 1 } else { u16::MAX };
    let t_start = Instant::now();
    let mut ledger = Ledger::new(args.shards);
    let wait = |what: &str| format!("timed out waiting for {what}; worker logs in {}", logs.display());
    let recv = |rx: &mpsc::Receiver<Line>, what: &str| -> Result<Line> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left.min(Duration::from_secs(120))).map_err(|_| wait(what))?;
        if line.0 == u16::MAX {
            return Err("interrupted: stopping every worker".into());
        }
        Ok(line)
    };
    let victims: Vec<u16> = (0..args.shards).filter(|s| s % args.procs == victim).collect();

    let survivors: Vec<u16> = (0..args.procs).filter(|&p| p != victim).collect();
    let mut killed = Instant::now();
    let mut acks_at_kill = 0;
    if victims.is_empty() {
        // No kill: once every log is done, the final passes.
        while !ledger.all_durable(args.batches) {
            let (who, line) = recv(&rx, "the batches")?;
            handle(&line, who, &mut ledger)?;
        }
        let secs = t_start.elapsed().as_secs_f64();
        let streamed = ledger.acks() * u64::from(args.batch_events);
        println!("streaming: {streamed} edge events in {secs:.2} s = {:.0} events/s", streamed as f64 / secs);
        for &q in &survivors {
            send(&mut procs[usize::from(q)], "FINISH")?;
        }
    } else {
        // Until the victim's shards are past `kill_after`.
        while victims.iter().any(|&s| ledger.durable(s) < args.kill_after) {
            let (who, line) = recv(&rx, "the victim's batches")?;
            handle(&line, who, &mut ledger)?;
        }
        procs[usize::from(victim)].child.kill()?; // SIGKILL
        killed = Instant::now();
        acks_at_kill = ledger.acks();
        procs[usize::from(victim)].child.wait()?;
        let secs = t_start.elapsed().as_secs_f64();
        let streamed = ledger.acks() * u64::from(args.batch_events);
        println!(
            "streaming until the kill: {streamed} edge events in {secs:.2} s = {:.0} events/s",
            streamed as f64 / secs
        );
        println!("killed process {victim} (SIGKILL) at {secs:.2} s; its shards {victims:?}");
        // The survivors take its shards, dealt over them.
        for (i, &s) in victims.iter().enumerate() {
            let p = survivors[i % survivors.len()];
            send(&mut procs[usize::from(p)], &format!("TAKE {s}"))?;
        }
    }
    let mut took = 0;
    let mut takeover = Duration::ZERO;
    let mut done = 0;
    let mut failed = false;
    let mut rpcs = (0u64, 0u64, 0u64);
    let mut finishing = victims.is_empty();
    while done < survivors.len() {
        let (who, line) = recv(&rx, "the survivors")?;
        if who == victim {
            // Lines the victim printed before it died: its acknowledgements count.
            if line != "EXIT" {
                handle(&line, who, &mut ledger)?;
            }
            continue;
        }
        let mut p = line.split(' ');
        match p.next() {
            Some("TOOK") => {
                let (s, applied): (u16, u64) =
                    (p.next().ok_or("TOOK")?.parse()?, p.next().ok_or("TOOK")?.parse()?);
                // The batches the survivor found durable count as done, acknowledged or not.
                if let Err(lost) = ledger.took(s, applied) {
                    println!(
                        "LOST: shard {s} acknowledged batch {} but resumed at {}",
                        lost.acknowledged, lost.applied
                    );
                    failed = true;
                }
                took += 1;
                if took == victims.len() {
                    takeover = killed.elapsed();
                    println!(
                        "takeover: the victim's {took} shards serve again {:.2} s after the kill",
                        takeover.as_secs_f64()
                    );
                }
            }
            Some("FAILED") => {
                return Err(format!("process {who}: {}", p.collect::<Vec<_>>().join(" ")).into());
            }
            Some("ORACLE") => {
                let verdict = p.next().unwrap_or("?");
                println!("process {who}: oracle {verdict} {}", p.collect::<Vec<_>>().join(" "));
                failed |= verdict != "ok";
            }
            Some("RPCS") => {
                let n: Vec<u64> = p.filter_map(|x| x.parse().ok()).collect();
                if let [calls, verifies, failures] = n[..] {
                    rpcs = (rpcs.0 + calls, rpcs.1 + verifies, rpcs.2 + failures);
                }
            }
            Some("DONE") => done += 1,
            Some("EXIT") => {
                return Err(format!("process {who} died; logs in {}", logs.display()).into());
            }
            _ => handle(&line, who, &mut ledger)?,
        }
        if !finishing && took == victims.len() && ledger.all_durable(args.batches) {
            // Every log is done, the victim's too: the final passes.
            finishing = true;
            let secs = killed.elapsed().as_secs_f64();
            let streamed = (ledger.acks() - acks_at_kill) * u64::from(args.batch_events);
            println!(
                "streaming after the kill: {streamed} edge events in {secs:.2} s = {:.0} events/s (takeover wait included)",
                streamed as f64 / secs
            );
            for &q in &survivors {
                send(&mut procs[usize::from(q)], "FINISH")?;
            }
        }
    }
    let elapsed = t_start.elapsed().as_secs_f64();
    for p in procs.iter_mut() {
        let _ = send(p, "STOP");
    }
    for (i, p) in procs.iter_mut().enumerate() {
        if i != usize::from(victim) {
            p.child.wait()?;
        }
    }
    match etcd_size(&args.etcd, &prefix) {
        Ok((keys, bytes, db)) => {
            let ghosts = u64::from(args.shards) * u64::from(args.ghosts);
            println!(
                "etcd: {keys} keys, {bytes} bytes of keys and values under the run's prefix = {:.1} B per ghost; backend {db} bytes",
                bytes as f64 / ghosts as f64
            );
        }
        Err(e) => println!("etcd size unknown: {e}"),
    }
    let total = u64::from(args.shards) * args.batches * u64::from(args.batch_events);
    println!(
        "{} processes, {} shards, {total} edge events in {elapsed:.1} s ({:.0} events/s including the takeover wait)",
        args.procs,
        args.shards,
        total as f64 / elapsed
    );
    let per = if rpcs.0 == 0 { 0.0 } else { rpcs.1 as f64 / rpcs.0 as f64 };
    println!(
        "verify RPCs: {} calls, {} verifies, {per:.1} verifies per RPC, {} failed calls",
        rpcs.0, rpcs.1, rpcs.2
    );
    if !victims.is_empty() {
        println!("takeover time: {:.2} s (lease TTL {} s)", takeover.as_secs_f64(), args.lease_ttl);
    }
    println!("{}", if failed { "FAILED" } else { "oracle: ok over every process" });
    Ok(!failed)
}

/// An `ACK shard seq` line: the batch is acknowledged. `EXIT` and `FAILED` end the run.
fn handle(line: &str, who: u16, ledger: &mut Ledger) -> Result<()> {
    let mut p = line.split(' ');
    let first = p.next();
    if first == Some("EXIT") {
        return Err(format!("process {who} ended early (see its log)").into());
    }
    if first == Some("FAILED") {
        return Err(format!("process {who}: {}", p.collect::<Vec<_>>().join(" ")).into());
    }
    if first == Some("ACK") {
        let (s, seq): (u16, u64) = (p.next().ok_or("ACK")?.parse()?, p.next().ok_or("ACK")?.parse()?);
        ledger.ack(s, seq);
    }
    Ok(())
}

/// Keys and their bytes under `prefix`, and etcd's backend size.
fn etcd_size(etcd: &str, prefix: &str) -> Result<(i64, u64, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut c = etcd_client::Client::connect([etcd], None).await?;
        // In pages of a few keys, each answer up to 64 MiB: at scale the
        // prefix holds far more than the client's default 4 MiB answer, and
        // a checkpoint chunk is up to 1 MiB.
        let mut kv = c.kv_client().max_decoding_message_size(64 << 20);
        let end = prefix_end(prefix.as_bytes());
        let (mut from, mut keys, mut bytes) = (prefix.as_bytes().to_vec(), 0i64, 0u64);
        loop {
            let options = etcd_client::GetOptions::new().with_range(end.clone()).with_limit(32);
            let resp = kv.get(from.clone(), Some(options)).await?;
            for kv in resp.kvs() {
                keys += 1;
                bytes += (kv.key().len() + kv.value().len()) as u64;
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let db = c.status().await?.db_size();
        Ok((keys, bytes, db))
    })
}

/// The first key past every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
