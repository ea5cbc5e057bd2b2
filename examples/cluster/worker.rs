//! One process of the cluster: owns its shards, serves verifies for them,
//! streams their logs, takes a dead peer's shards when told, and checks the
//! oracle on everything it holds at the end.

use crate::{Args, Result};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use vshard_ghosts::cluster::{
    EtcdOwners, GrpcVerifier, GrpcVerifierConfig, Location, NoLocalCounts, NodeDirectory, OwnersConfig,
    VerifyServer,
};
use vshard_ghosts::messages::{EdgeBatch, InsertGhost, Inspect, Reclaim, Retarget};
use vshard_ghosts::store::{EtcdConfig, EtcdStore};
use vshard_ghosts::{
    EdgeEvents, Epoch, GhostActor, GhostRuntime, ShardConfig, ShardId, StoreChoice, SweeperConfig,
    TableConfig,
};

/// Every ghost starts with this many edges; no log takes one to zero.
const START: u32 = 1_000_000;

fn ghost(shard: u16, i: u32) -> String {
    format!("g{shard}-{i}")
}

/// Where ghost `g{s}-{i}`'s node first lives: the next shard, since move 1.
fn home(args: &Args, shard: u16) -> ShardId {
    ShardId((shard + 1) % args.shards)
}

/// The batch before which the chained moves happen, and the one before which
/// the moves back do.
fn move_points(args: &Args) -> (u64, u64) {
    ((args.batches / 3).max(1), (2 * args.batches / 3).max(2))
}

/// Where node `g{s}-{i}` lives at the end of the logs, and since which move:
/// a quarter stay, a quarter move on to the shard after (chained), a quarter
/// come back to `s` (the ghost goes), a quarter move on and then back.
fn final_home(args: &Args, shard: u16, i: u32) -> (u16, u64) {
    let next = |k: u16| (shard + k) % args.shards;
    match i % 4 {
        0 => (next(1), 1),
        1 => (next(2), 2),
        2 => (shard, 3),
        _ => (next(1), 3),
    }
}

/// A move the host sends `shard` before batch `seq`: (ghost, new target
/// (`None`: back on this shard), epoch).
fn moves(args: &Args, shard: u16, seq: u64) -> Vec<(String, Option<ShardId>, Epoch)> {
    let (chained, back) = move_points(args);
    let mut out = Vec::new();
    for i in 0..args.ghosts {
        let (id, next2) = (ghost(shard, i), ShardId((shard + 2) % args.shards));
        match i % 4 {
            1 | 3 if seq == chained => out.push((id, Some(next2), Epoch(2))),
            2 if seq == back => out.push((id, None, Epoch(3))),
            3 if seq == back => out.push((id, Some(home(args, shard)), Epoch(3))),
            _ => {}
        }
    }
    out
}

/// Streams `shard`'s log from batch `from`, with up to `--in-flight` batches
/// sent and not yet acknowledged; a batch with moves waits until every batch
/// before it is acknowledged, so that its moves apply between the same
/// batches as in the oracle. Says `ACK shard seq` for each.
async fn stream(rt: &GhostRuntime, args: &Args, shard: u16, from: u64) -> vshard_ghosts::Result<()> {
    let mut pending = std::collections::VecDeque::new();
    for seq in from..=args.batches {
        let moves = moves(args, shard, seq);
        while !pending.is_empty() && (pending.len() >= args.in_flight.max(1) || !moves.is_empty()) {
            let Some((done, fut)) = pending.pop_front() else { break };
            acked(shard, done, fut).await?;
        }
        // One message and one commit per kind, not a round trip per ghost: at
        // scale a shard moves thousands of ghosts at once, and one at a time
        // its log stalled for seconds behind them.
        let (mut retargets, mut reclaims) = (Vec::new(), Vec::new());
        for (id, target, epoch) in moves {
            match target {
                Some(target) => {
                    retargets.push((ShardId(shard), Retarget { node_id: id.into(), target, epoch }))
                }
                None => reclaims.push((ShardId(shard), Reclaim { node_id: id.into(), epoch })),
            }
        }
        if !retargets.is_empty() {
            rt.retargets(retargets).await.into_iter().collect::<vshard_ghosts::Result<Vec<_>>>()?;
        }
        if !reclaims.is_empty() {
            rt.reclaims(reclaims).await.into_iter().collect::<vshard_ghosts::Result<Vec<_>>>()?;
        }
        // Queued in the shard's mailbox now, in order; answered once durable.
        let fut =
            rt.addr(ShardId(shard))?.send(EdgeBatch { seq: Some(seq), events: events(args, shard, seq) });
        pending.push_back((seq, fut));
    }
    while let Some((done, fut)) = pending.pop_front() {
        acked(shard, done, fut).await?;
    }
    Ok(())
}

/// Waits for batch `seq`'s answer and says it is acknowledged.
async fn acked(
    shard: u16,
    seq: u64,
    answer: actix::dev::Request<GhostActor, EdgeBatch>,
) -> vshard_ghosts::Result<()> {
    answer.await.map_err(|_| vshard_ghosts::Error::Unavailable { shard: ShardId(shard) })??;
    say(&format!("ACK {shard} {seq}"));
    Ok(())
}

/// Batch `seq` of `shard`'s log, as (ghost, added?) pairs: the same in every process.
fn batch(args: &Args, shard: u16, seq: u64) -> Vec<(String, bool)> {
    let mut rng = fastrand::Rng::with_seed(args.seed ^ (u64::from(shard) << 40 | seq));
    (0..args.batch_events).map(|_| (ghost(shard, rng.u32(0..args.ghosts)), rng.u32(0..3) < 2)).collect()
}

fn events(args: &Args, shard: u16, seq: u64) -> EdgeEvents {
    let mut e = EdgeEvents::new();
    for (id, add) in batch(args, shard, seq) {
        if add { e.added(&id) } else { e.removed(&id) }
    }
    e
}

/// The oracle's refcount of each ghost of `shard` after its whole log.
fn model(args: &Args, shard: u16) -> Vec<(String, u32)> {
    let mut counts = vec![START; args.ghosts as usize];
    for seq in 1..=args.batches {
        for (id, add) in batch(args, shard, seq) {
            let i: usize = id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            counts[i] = if add { counts[i] + 1 } else { counts[i] - 1 };
        }
    }
    counts.into_iter().enumerate().map(|(i, c)| (ghost(shard, i as u32), c)).collect()
}

/// The nodes that live on the shards this process holds now; any other shard is
/// `Unknown`, so that a stale route never gets a wrong answer.
struct Homes {
    args: Args,
    held: RwLock<HashSet<u16>>,
}

impl NodeDirectory for Homes {
    fn locate(&self, shard: ShardId, node_id: &str, _: Epoch) -> Location {
        if !self.held.read().unwrap_or_else(|e| e.into_inner()).contains(&shard.get()) {
            return Location::Unknown;
        }
        // Answered from the end of the logs, which every process can compute:
        // a ghost that learns of a move early follows it, and the move's own
        // message is then stale; the final state is the same.
        let mut parts = node_id.strip_prefix('g').unwrap_or_default().split('-');
        let origin: Option<u16> = parts.next().and_then(|s| s.parse().ok());
        let index: Option<u32> = parts.next().and_then(|s| s.parse().ok());
        match (origin, index) {
            (Some(s), Some(i)) if s < self.args.shards && i < self.args.ghosts => {
                let (home, epoch) = final_home(&self.args, s, i);
                if home == shard.get() {
                    Location::Here { epoch: Epoch(epoch) }
                } else {
                    Location::Moved { shard: ShardId(home), epoch: Epoch(epoch) }
                }
            }
            _ => Location::Gone,
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) fn run(args: &Args, me: u16, prefix: &str) -> Result<bool> {
    // To the worker's log file (its stderr); `RUST_LOG` raises it for a post-mortem.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).init();
    let own: Vec<u16> = (0..args.shards).filter(|s| s % args.procs == me).collect();
    let own_ids: Vec<ShardId> = own.iter().copied().map(ShardId).collect();
    let owner = format!("proc-{me}");
    let config = EtcdConfig {
        prefix: prefix.to_owned(),
        owner_id: owner.clone(),
        lease_ttl_secs: args.lease_ttl,
        acquire_timeout: Duration::from_secs(u64::from(args.lease_ttl) * 3 + 10),
        acquire_poll: Duration::from_millis(50),
        ..EtcdConfig::default()
    };
    let store = Arc::new(EtcdStore::connect([args.etcd.as_str()], config)?);
    store.acquire(&own_ids)?;
    let homes = Arc::new(Homes { args: args.clone(), held: RwLock::new(own.iter().copied().collect()) });
    // Answers only while this process's claims hold: once it loses a shard, a
    // stale directory never makes a peer purge.
    let server = VerifyServer::start_owned("127.0.0.1:0".parse()?, homes.clone(), store.clone())?;
    let owners = Arc::new(EtcdOwners::start(
        [args.etcd.as_str()],
        OwnersConfig { prefix: prefix.to_owned(), ..OwnersConfig::default() },
    )?);
    owners.register(&owner, &server.url())?;
    let verifier = GrpcVerifier::new(owners.clone(), Arc::new(NoLocalCounts), GrpcVerifierConfig::default())?;

    // Commands from the parent, one a line, on a thread of their own. The
    // parent gone (its end of the pipe closed, however it ended) without a
    // STOP, this process ends too: nothing it started outlives the run.
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(|l| l.ok()) {
            let stop = line == "STOP";
            if tx.send(line).is_err() || stop {
                return;
            }
        }
        eprintln!("the parent is gone; exiting");
        std::process::exit(3);
    });

    let args = args.clone();
    actix::System::new().block_on(async move {
        let sweep = SweeperConfig {
            verifies_per_second: 20_000,
            burst: 1_000,
            max_in_flight: 256,
            pass_interval: Some(Duration::from_millis(300)),
            busy_latency: Duration::from_secs(1),
            ..SweeperConfig::default()
        };
        // Ghosts are due at once, so that every pass verifies across processes.
        let shard = ShardConfig { table: TableConfig { grace: Duration::ZERO, ..TableConfig::default() }, ..ShardConfig::default() };
        let rt = GhostRuntime::builder()
            .shards(own_ids)
            .shard_config(shard.clone())
            .store(StoreChoice::Custom(store.clone()))
            .sweeper(Arc::new(verifier.clone()), sweep)
            .start()?;
        // Every shard at once, 256 inserts in flight each: group commits carry many.
        futures::future::try_join_all(own.iter().map(|&s| {
            let (rt, args) = (&rt, &args);
            async move {
                let ids: Vec<u32> = (0..args.ghosts).collect();
                for chunk in ids.chunks(256) {
                    futures::future::try_join_all(chunk.iter().map(|&i| {
                        let g = InsertGhost { node_id: ghost(s, i).into(), target: home(args, s), refcount: START, epoch: Epoch(1) };
                        rt.insert_ghost(ShardId(s), g)
                    }))
                    .await?;
                }
                Ok::<_, vshard_ghosts::Error>(())
            }
        }))
        .await?;
        say("STREAMING");
        // Its own logs on a task of their own, so that a TAKE is served as soon
        // as it comes: the takeover then waits for the dead owner's lease, not
        // for this process to finish its own logs. The parent sends FINISH
        // only once every log is acknowledged, so they are done by then.
        let rt = Rc::new(rt);
        {
            let (rt, args, own) = (rt.clone(), args.clone(), own.clone());
            actix::spawn(async move {
                let streams = own.iter().map(|&s| stream(&rt, &args, s, 1));
                if let Err(e) = futures::future::try_join_all(streams).await {
                    say(&format!("FAILED own shards {e}"));
                }
            });
        }
        let mut taken: Vec<(u16, Rc<GhostRuntime>)> = Vec::new();
        let mut ok = true;
        while let Some(cmd) = commands.recv().await {
            let mut p = cmd.split(' ');
            match p.next() {
                Some("TAKE") => {
                    let s: u16 = p.next().ok_or("TAKE")?.parse()?;
                    // Waits for the dead owner's lease to lapse: off the arbiter's thread.
                    let st = store.clone();
                    tokio::task::spawn_blocking(move || st.acquire(&[ShardId(s)])).await??;
                    homes.held.write().unwrap_or_else(|e| e.into_inner()).insert(s);
                    let trt = GhostRuntime::builder().shards([ShardId(s)]).shard_config(shard.clone()).store(StoreChoice::Custom(store.clone())).start()?;
                    let applied = trt.shard_stats(ShardId(s)).await?.table.applied_seq.unwrap_or(0);
                    say(&format!("TOOK {s} {applied}"));
                    let trt = Rc::new(trt);
                    taken.push((s, trt.clone()));
                    // The dead owner's log, from where its shard's state says
                    // it stopped, beside the other shards taken over.
                    let args = args.clone();
                    actix::spawn(async move {
                        match stream(&trt, &args, s, applied + 1).await {
                            Ok(()) => say(&format!("RESUMED {s}")),
                            Err(e) => say(&format!("FAILED {s} {e}")),
                        }
                    });
                }
                Some("FINISH") => {
                    let pass = rt.run_sweep_pass().await?;
                    let mut wrong = Vec::new();
                    let mut checked = 0;
                    let all = own.iter().map(|&s| (s, &*rt)).chain(taken.iter().map(|(s, t)| (*s, &**t)));
                    for (s, r) in all {
                        let applied = r.shard_stats(ShardId(s)).await?.table.applied_seq;
                        if applied != Some(args.batches) {
                            wrong.push(format!("shard {s} at {applied:?}"));
                        }
                        for (i, (id, want)) in model(&args, s).into_iter().enumerate() {
                            checked += 1;
                            let (home, epoch) = final_home(&args, s, i as u32);
                            let got = r.request(ShardId(s), Inspect { node_id: id.as_str().into() }).await?;
                            match got {
                                // The node came back: no ghost may forward it away.
                                None if home == s => {}
                                Some(g)
                                    if home != s
                                        && (g.refcount, g.target_shard.get(), g.epoch.get()) == (want, home, epoch) => {}
                                other => wrong.push(format!(
                                    "{id}: {other:?}, want refcount {want} at shard {home} epoch {epoch} (or none if {home} = {s})"
                                )),
                            }
                        }
                    }
                    ok = wrong.is_empty();
                    let c = pass.counts;
                    if ok {
                        say(&format!(
                            "ORACLE ok {checked} ghosts exact on {} shards; last pass kept {} inconclusive {} purged {}",
                            own.len() + taken.len(),
                            c.kept,
                            c.inconclusive,
                            c.purged()
                        ));
                    } else {
                        say(&format!("ORACLE fail {} wrong, first: {}", wrong.len(), wrong[0]));
                    }
                    let v = verifier.stats();
                    say(&format!("RPCS {} {} {}", v.rpcs, v.verifies, v.failed_rpcs));
                    say("DONE");
                }
                Some("STOP") => break,
                _ => {}
            }
        }
        for (_, t) in taken {
            match Rc::try_unwrap(t) {
                Ok(t) => t.shutdown().await?,
                Err(_) => return Err("a taken shard still streams at STOP".into()),
            }
        }
        match Rc::try_unwrap(rt) {
            Ok(rt) => rt.shutdown().await?,
            Err(_) => return Err("its own shards still stream at STOP".into()),
        }
        Ok::<_, Box<dyn std::error::Error>>(ok)
    })
}
