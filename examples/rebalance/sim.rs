//! The rebalancing simulation: waves of moves and edge churn through a `GhostRuntime`, then the oracle.

use crate::model::{Model, Op, node_id};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vshard_ghosts::messages::{InjectPanic, InsertGhost, Retarget};
use vshard_ghosts::store::MemoryStore;
use vshard_ghosts::testing::*;
use vshard_ghosts::*;

/// Sizes and fault rates of a run.
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    pub(crate) shards: u16,
    pub(crate) nodes: u32,
    pub(crate) edges: u64,
    pub(crate) waves: u32,
    /// Fraction of nodes moved per wave.
    pub(crate) move_fraction: f64,
    /// Edge additions and removals per wave.
    pub(crate) churn: u32,
    /// Fraction of decrements the host "loses" (the sweeper must repair them).
    pub(crate) lost_decrements: f64,
    pub(crate) seed: u64,
    pub(crate) arbiters: usize,
    /// The shards' and the sweeper's settings (`--config`; shards and arbiters
    /// come from the fields above).
    pub(crate) ghost: GhostConfig,
}

/// The settings the simulation runs with unless `--config` says otherwise; the same
/// as `examples/rebalance/ghosts.toml`.
pub(crate) fn sim_settings() -> GhostConfig {
    let mut c = GhostConfig::default();
    c.runtime.shard.table = TableConfig {
        grace: Duration::ZERO,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(1_000),
        jitter_seed: 1,
        ..TableConfig::default()
    };
    c.runtime.shard.mailbox_capacity = 4_096;
    c.runtime.shard.fault_injection = true;
    c.sweeper = SweeperConfig {
        verifies_per_second: 50_000,
        burst: 1_000,
        max_in_flight: 64,
        page_size: 512,
        pass_interval: Some(Duration::from_millis(500)),
        ..SweeperConfig::default()
    };
    c
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            shards: 64,
            nodes: 200_000,
            edges: 1_000_000,
            waves: 20,
            move_fraction: 0.02,
            churn: 50_000,
            lost_decrements: 0.002,
            seed: 42,
            arbiters: std::thread::available_parallelism().map_or(2, |n| n.get()),
            ghost: sim_settings(),
        }
    }
}

/// What a run did and whether the oracle agreed.
#[derive(Debug, Default)]
pub(crate) struct SimReport {
    pub(crate) events: u64,
    pub(crate) event_seconds: f64,
    pub(crate) batch_latency_us: Vec<u64>,
    pub(crate) moves: u64,
    pub(crate) ghosts_inserted: u64,
    pub(crate) lost_decrements: u64,
    pub(crate) sweep: vshard_ghosts::sweep::SweepCounts,
    pub(crate) restarts: u64,
    pub(crate) commits: u64,
    pub(crate) replay_skipped: bool,
    pub(crate) miss_checks: u64,
    pub(crate) final_ghosts: usize,
    pub(crate) divergences: Vec<String>,
}

/// Progress callback: (waves done, waves total, phase).
pub(crate) type Progress<'a> = &'a (dyn Fn(u32, u32, &str) + Sync);

fn build(
    cfg: &SimConfig,
    store: &StoreChoice,
    verifier: &Arc<DirectoryVerifier>,
    clock: &ManualClock,
) -> Result<GhostRuntime> {
    // The simulation panics shards on purpose, whatever the file says.
    let shard = ShardConfig { fault_injection: true, ..cfg.ghost.runtime.shard.clone() };
    GhostRuntime::builder()
        .shards(0..cfg.shards)
        .arbiters(cfg.arbiters)
        .shard_config(shard)
        .store(store.clone())
        .clock(Arc::new(clock.clone()))
        .sweeper(verifier.clone(), cfg.ghost.sweeper.clone())
        .start()
}

/// Runs the whole simulation on `store`.
pub(crate) async fn run(cfg: &SimConfig, store: StoreChoice, progress: Progress<'_>) -> Result<SimReport> {
    // The store must outlive the first runtime: a fresh in-memory one would forget everything.
    let store = match store {
        StoreChoice::Memory => StoreChoice::Custom(Arc::new(MemoryStore::new())),
        other => other,
    };
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let mut model = Model::generate(cfg.nodes, cfg.edges, cfg.shards, &mut rng);
    let verifier = Arc::new(DirectoryVerifier::new());
    for n in 0..cfg.nodes {
        verifier.record_move(&node_id(n), ShardId(model.home[n as usize]), Epoch(0));
    }
    for s in 0..cfg.shards {
        verifier.set_latency(ShardId(s), Duration::from_micros(200));
    }
    let clock = ManualClock::new(1_000_000);
    let mut rt = build(cfg, &store, &verifier, &clock)?;
    let mut report = SimReport::default();
    let mut seqs = vec![0u64; cfg.shards as usize];
    let mut last_batch: Option<(u16, u64, EdgeEvents)> = None;
    let started = Instant::now();
    for wave in 0..cfg.waves {
        progress(wave, cfg.waves, "moving");
        // A stretch of the run with two targets unreachable: verifies back off.
        let dark = wave >= cfg.waves / 4 && wave < cfg.waves / 2;
        verifier.set_unreachable(ShardId(1), dark);
        verifier.set_unreachable(ShardId(2), dark);

        let mut ops: Vec<Vec<Op>> = vec![Vec::new(); cfg.shards as usize];
        let moves = (f64::from(cfg.nodes) * cfg.move_fraction) as u32;
        let mut moved = std::collections::HashSet::new();
        for _ in 0..moves {
            let node = rng.u32(0..cfg.nodes);
            if !moved.insert(node) {
                continue;
            }
            let from = model.home[node as usize];
            // A third of the moves go back to a shard the node left (moves back).
            let back = model.left.get(&node).and_then(|l| l.iter().copied().find(|&s| s != from));
            let to = match back {
                Some(s) if rng.u8(0..3) == 0 => s,
                _ => (from + rng.u16(1..cfg.shards)) % cfg.shards,
            };
            model.move_node(node, to, rng.bool(), &mut ops);
            verifier.record_move(&node_id(node), ShardId(to), Epoch(model.epoch[node as usize]));
            report.moves += 1;
        }
        for _ in 0..cfg.churn {
            let s = rng.u32(0..cfg.nodes);
            if rng.bool() {
                let d = rng.u32(0..cfg.nodes);
                if d != s {
                    model.churn(s, d, true, false, &mut ops);
                }
            } else if let Some(&d) = model.out[s as usize].first() {
                let lose = rng.f64() < cfg.lost_decrements;
                model.churn(s, d, false, lose, &mut ops);
            }
        }
        let t = Instant::now();
        let (events, latencies, last) = send_wave(&rt, ops, &mut seqs).await?;
        report.event_seconds += t.elapsed().as_secs_f64();
        report.events += events;
        report.batch_latency_us.extend(latencies);
        if last.is_some() {
            last_batch = last;
        }
        clock.advance(1_000);

        progress(wave, cfg.waves, "checking");
        report.miss_checks += check_no_miss(&rt, &model, &mut report.divergences).await?;
        // One sweep pass per wave besides the periodic ones, so that every stretch
        // of the run (dark targets included) is swept while edges keep changing.
        rt.run_sweep_pass().await?;
        // Chaos at a quiet point: everything is flushed, so the model stays exact.
        rt.flush().await?;
        let victim = rng.u16(0..cfg.shards);
        let _ = rt.request(victim, InjectPanic).await;

        if wave == cfg.waves / 2 {
            progress(wave, cfg.waves, "restarting");
            collect(&rt, &mut report).await?;
            rt.shutdown().await?;
            rt = build(cfg, &store, &verifier, &clock)?;
            // A host replaying its log after the restart: the batch is skipped.
            if let Some((shard, seq, events)) = last_batch.take() {
                report.replay_skipped = rt.edge_batch(shard, Some(seq), events).await?.skipped;
            }
        }
    }
    let _ = started;

    progress(cfg.waves, cfg.waves, "final sweep");
    // The host's truth for every ghost the tables may hold, then passes until one is clean.
    verifier.set_unreachable(ShardId(1), false);
    verifier.set_unreachable(ShardId(2), false);
    // A shard that reloaded lowers no refcount until its next sequenced batch
    // (unsequenced events before a crash are in no log), so the host marks its
    // log's position on every shard with an empty batch. Each count is then at
    // that position, which every shard has applied.
    for (shard, seq) in seqs.iter_mut().enumerate() {
        *seq += 1;
        rt.edge_batch(shard as u16, Some(*seq), EdgeEvents::new()).await?;
    }
    for &(s, n) in model.ghosts.keys() {
        let count = model.true_count(s, n);
        verifier.set_local_edges(ShardId(s), &node_id(n), Some(LocalEdges::at(count, seqs[s as usize])));
    }
    clock.advance(10_000);
    // Until a pass finds nothing to do: counts repaired to zero are purged by
    // the pass after the one that repaired them.
    for _ in 0..6 {
        let c = rt.run_sweep_pass().await?.counts;
        clock.advance(10_000);
        if c.corrected + c.purged() + c.inconclusive + c.skipped_busy + c.stale + c.redirected == 0 {
            break;
        }
    }
    collect(&rt, &mut report).await?;
    oracle(&rt, &model, &mut report).await?;
    report.ghosts_inserted = model.inserted;
    report.lost_decrements = model.lost_decrements;
    // The poller publishes every few seconds; publish the final state too.
    rt.export_metrics().await;
    rt.shutdown().await?;
    Ok(report)
}

type WaveResult = (u64, Vec<u64>, Option<(u16, u64, EdgeEvents)>);

/// Sends every shard its ops in order, all shards at once; edge events go in
/// batches with a sequence number.
async fn send_wave(rt: &GhostRuntime, ops: Vec<Vec<Op>>, seqs: &mut [u64]) -> Result<WaveResult> {
    let calls = ops.into_iter().enumerate().map(|(shard, ops)| {
        let shard = shard as u16;
        let mut seq = seqs[shard as usize];
        async move {
            let (mut events, mut latencies, mut batch, mut last) =
                (0u64, Vec::new(), EdgeEvents::new(), None);
            for op in ops.into_iter().chain(std::iter::once(Op::Reclaim { node: u32::MAX, epoch: 0 })) {
                let flush_batch = !matches!(op, Op::Added(_) | Op::Removed(_)) || batch.len() >= 256;
                if flush_batch && !batch.is_empty() {
                    seq += 1;
                    let b = std::mem::take(&mut batch);
                    events += b.len() as u64;
                    let t = Instant::now();
                    rt.edge_batch(shard, Some(seq), b.clone()).await?;
                    latencies.push(t.elapsed().as_micros() as u64);
                    last = Some((shard, seq, b));
                }
                match op {
                    Op::Added(d) => batch.added(&node_id(d)),
                    Op::Removed(d) => batch.removed(&node_id(d)),
                    Op::Insert { node, target, refcount, epoch } => {
                        rt.insert_ghost(
                            shard,
                            InsertGhost {
                                node_id: node_id(node).into(),
                                target: ShardId(target),
                                refcount,
                                epoch: Epoch(epoch),
                            },
                        )
                        .await?;
                    }
                    Op::Retarget { node, target, epoch } => {
                        rt.retarget(
                            shard,
                            Retarget {
                                node_id: node_id(node).into(),
                                target: ShardId(target),
                                epoch: Epoch(epoch),
                            },
                        )
                        .await?;
                    }
                    Op::Reclaim { node: u32::MAX, .. } => {}
                    Op::Reclaim { node, epoch } => {
                        rt.reclaim(shard, &node_id(node), Epoch(epoch)).await?;
                    }
                }
            }
            Ok::<_, Error>((shard, seq, events, latencies, last))
        }
    });
    let mut out = (0, Vec::new(), None);
    for r in futures::future::join_all(calls).await {
        let (shard, seq, events, latencies, last) = r?;
        seqs[shard as usize] = seq;
        out.0 += events;
        out.1.extend(latencies);
        if last.is_some() {
            out.2 = last;
        }
    }
    Ok(out)
}

/// Every ghost the model holds must resolve on its shard: a `None` would send
/// a traversal nowhere while a local edge still needs the node.
async fn check_no_miss(rt: &GhostRuntime, model: &Model, divergences: &mut Vec<String>) -> Result<u64> {
    let ids: Vec<(u16, String)> = model.ghosts.keys().map(|&(s, n)| (s, node_id(n))).collect();
    let frontier: Vec<(ShardId, &str)> = ids.iter().map(|(s, id)| (ShardId(*s), id.as_str())).collect();
    let answers = rt.resolve_many(&frontier).await?;
    for ((s, id), a) in ids.iter().zip(&answers) {
        if a.is_none() && divergences.len() < 20 {
            divergences.push(format!("miss: shard {s} has a local edge to {id} but no ghost"));
        }
    }
    Ok(answers.len() as u64)
}

async fn collect(rt: &GhostRuntime, report: &mut SimReport) -> Result<()> {
    for s in rt.stats().await? {
        report.restarts += s.restarts;
    }
    report.commits += rt.writer_stats().map_or(0, |w| w.commits);
    match rt.sweep_totals().await {
        Ok(totals) => report.sweep.merge(&totals.counts),
        Err(Error::NoSweeper) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// After the final sweep the shards hold exactly the expected ghosts.
async fn oracle(rt: &GhostRuntime, model: &Model, report: &mut SimReport) -> Result<()> {
    let expected = model.expected_after_sweep();
    let mut seen = 0;
    for shard in rt.shard_ids() {
        for r in rt.request(shard, vshard_ghosts::messages::ExportRecords).await? {
            let node: u32 = r.node_id[1..].parse().unwrap_or(u32::MAX);
            seen += 1;
            match expected.get(&(shard.get(), node)) {
                Some(&(target, refcount)) if target == r.target_shard && refcount == r.refcount => {}
                want => report.divergences.push(format!(
                    "shard {shard} ghost {}: has (target {}, refcount {}), expected {want:?}",
                    r.node_id, r.target_shard, r.refcount
                )),
            }
        }
    }
    if seen != expected.len() {
        report.divergences.push(format!("{seen} ghosts held, {} expected", expected.len()));
    }
    report.final_ghosts = seen;
    Ok(())
}
