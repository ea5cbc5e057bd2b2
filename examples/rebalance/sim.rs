//! The rebalancing simulation: waves of moves and edge churn through a `GhostRuntime`, then the oracle.

use crate::model::{Model, Op, node_id};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
        // One process and one clock, even on etcd: no other clock to allow for.
        max_clock_skew: Duration::ZERO,
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

/// The shards made unreachable for verifies during the dark stretch.
pub(crate) const DARK_SHARDS: [u16; 2] = [1, 2];

/// The waves during which [`DARK_SHARDS`] are unreachable.
pub(crate) fn dark_waves(waves: u32) -> std::ops::Range<u32> {
    waves / 4..waves / 2
}

/// One wave as the shards saw it (table counters summed over shards, this wave only).
#[derive(Debug, Clone, Default)]
pub(crate) struct WaveSample {
    pub(crate) wave: u32,
    /// Ghosts held at the end of the wave.
    pub(crate) ghosts: u64,
    pub(crate) inserted: u64,
    pub(crate) purged_refcount_zero: u64,
    pub(crate) purged_verified: u64,
    pub(crate) purged_reclaimed: u64,
    pub(crate) redirected: u64,
    pub(crate) inconclusive: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
}

/// What the run did to the ghosts pointing at the dark shards.
#[derive(Debug, Default)]
pub(crate) struct DarkTally {
    /// 0 before the dark stretch, 1 during it, 2 after.
    phase: AtomicU8,
    /// Verifies against a dark shard that could not reach it.
    pub(crate) inconclusive: AtomicU64,
    /// Ghosts (shard, node) pointing at a dark shard verified conclusively after it.
    verified_after: Mutex<HashSet<(u16, Box<str>)>>,
}

impl DarkTally {
    /// How many of `kept` were verified conclusively after the dark stretch.
    fn verified_after(&self, kept: &HashSet<(u16, Box<str>)>) -> u64 {
        self.verified_after.lock().unwrap().intersection(kept).count() as u64
    }
}

/// The host's verifier, counting what happens to verifies against the dark shards.
struct Watched {
    inner: Arc<DirectoryVerifier>,
    tally: Arc<DarkTally>,
}

impl Verifier for Watched {
    fn verify(&self, request: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        let dark = DARK_SHARDS.contains(&request.target_shard.get());
        let key = (request.shard.get(), request.node_id.clone());
        let tally = self.tally.clone();
        let answer = self.inner.verify(request);
        Box::pin(async move {
            let verdict = answer.await;
            let conclusive = !matches!(verdict, Err(_) | Ok(Verdict::Inconclusive));
            match tally.phase.load(Ordering::Relaxed) {
                1 if dark && !conclusive => drop(tally.inconclusive.fetch_add(1, Ordering::Relaxed)),
                2 if dark && conclusive => drop(tally.verified_after.lock().unwrap().insert(key)),
                _ => {}
            }
            verdict
        })
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
    /// The replayed batch was skipped (true when there was none to replay).
    pub(crate) replay_skipped: bool,
    pub(crate) miss_checks: u64,
    pub(crate) final_ghosts: usize,
    pub(crate) divergences: Vec<String>,
    /// Panics injected into shard handlers (one a wave).
    pub(crate) panics: u64,
    /// Shards reloaded by the full stop and reopen.
    pub(crate) reopened_shards: u64,
    /// The wave after which the runtime was stopped and reopened.
    pub(crate) reopen_wave: u32,
    /// Batches the host replayed after the reopen.
    pub(crate) replays: u64,
    /// Ghosts pointing at a dark shard at the end of the dark stretch.
    pub(crate) dark_kept: u64,
    /// Verifies against dark shards that came back inconclusive.
    pub(crate) dark_inconclusive: u64,
    /// Of the ghosts pointing at a dark shard, those verified conclusively after.
    pub(crate) dark_verified_after: u64,
    /// Edge batches the shards skipped as already applied.
    pub(crate) skipped_batches: u64,
    /// Wave by wave.
    pub(crate) waves: Vec<WaveSample>,
}

/// Progress callback: (waves done, waves total, phase).
pub(crate) type Progress<'a> = &'a (dyn Fn(u32, u32, &str) + Sync);

fn build(
    cfg: &SimConfig,
    store: &StoreChoice,
    verifier: &Arc<Watched>,
    clock: &ManualClock,
) -> Result<GhostRuntime> {
    // The simulation panics shards on purpose, whatever the file says.
    let shard = ShardConfig { fault_injection: true, ..cfg.ghost.runtime.shard.clone() };
    GhostRuntime::builder()
        .shards((0..cfg.shards).map(ShardId))
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
    // The clock also moves with real time, a millisecond at a time: the
    // sweeper's token bucket runs on it, and would never refill between the
    // jumps the run makes to age ghosts past their grace and back-off.
    let ticker = actix::spawn({
        let clock = clock.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tick.tick().await;
                clock.advance(1);
            }
        }
    });
    let tally = Arc::new(DarkTally::default());
    let watched = Arc::new(Watched { inner: verifier.clone(), tally: tally.clone() });
    let mut rt = build(cfg, &store, &watched, &clock)?;
    let mut report = SimReport { replay_skipped: true, ..SimReport::default() };
    let mut seqs = vec![0u64; cfg.shards as usize];
    let mut last_batch: Option<(u16, u64, EdgeEvents)> = None;
    let mut counted = Counted::default();
    let mut dark_kept = HashSet::new();
    let dark_waves = dark_waves(cfg.waves);
    for wave in 0..cfg.waves {
        progress(wave, cfg.waves, "moving");
        // A stretch of the run with two targets unreachable: verifies back off.
        let dark = dark_waves.contains(&wave);
        if dark && tally.phase.load(Ordering::Relaxed) == 0 {
            tracing::info!(wave, shards = ?DARK_SHARDS, "injecting: shards unreachable for verifies (expected)");
            tally.phase.store(1, Ordering::Relaxed);
        } else if !dark && tally.phase.load(Ordering::Relaxed) == 1 {
            tracing::info!(wave, shards = ?DARK_SHARDS, "the dark shards are reachable again");
            tally.phase.store(2, Ordering::Relaxed);
        }
        for s in DARK_SHARDS {
            verifier.set_unreachable(ShardId(s), dark);
        }

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
        let (events, mut latencies, last) = send_wave(&rt, ops, &mut seqs).await?;
        report.event_seconds += t.elapsed().as_secs_f64();
        report.events += events;
        report.batch_latency_us.extend(&latencies);
        if last.is_some() {
            last_batch = last;
        }
        clock.advance(1_000);

        progress(wave, cfg.waves, "checking");
        report.miss_checks += check_no_miss(&rt, &model, &mut report.divergences).await?;
        // One sweep pass per wave besides the periodic ones, so that every stretch
        // of the run (dark targets included) is swept while edges keep changing.
        rt.run_sweep_pass().await?;
        let mut sample = counted.sample(&rt, wave).await?;
        latencies.sort_unstable();
        (sample.p50_us, sample.p99_us) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        report.waves.push(sample);
        if wave + 1 == dark_waves.end {
            dark_kept = pointing_at(&rt, &DARK_SHARDS).await?;
            report.dark_kept = dark_kept.len() as u64;
        }
        // Chaos at a quiet point: everything is flushed, so the model stays exact.
        rt.flush().await?;
        let victim = rng.u16(0..cfg.shards);
        tracing::info!(wave, shard = victim, "injecting: a panic in a shard handler (expected)");
        let _ = rt.request(ShardId(victim), InjectPanic).await;
        report.panics += 1;

        if wave == cfg.waves / 2 {
            progress(wave, cfg.waves, "restarting");
            tracing::info!(wave, "injecting: a full stop and reopen of the runtime (expected)");
            collect(&rt, &mut report).await?;
            rt.shutdown().await?;
            rt = build(cfg, &store, &watched, &clock)?;
            counted = Counted::default();
            report.reopened_shards = rt.shard_ids().len() as u64;
            report.reopen_wave = wave;
            // A host replaying its log after the restart: the batch is skipped.
            if let Some((shard, seq, events)) = last_batch.take() {
                tracing::info!(shard, seq, "injecting: the host replays its last batch (expected)");
                report.replays += 1;
                report.replay_skipped = rt.edge_batch(ShardId(shard), Some(seq), events).await?.skipped;
            }
        }
    }

    progress(cfg.waves, cfg.waves, "final sweep");
    // The host's truth for every ghost the tables may hold, then passes until one is clean.
    for s in DARK_SHARDS {
        verifier.set_unreachable(ShardId(s), false);
    }
    if tally.phase.load(Ordering::Relaxed) == 1 {
        tally.phase.store(2, Ordering::Relaxed);
    }
    // A shard that reloaded lowers no refcount until its next sequenced batch
    // (unsequenced events before a crash are in no log), so the host marks its
    // log's position on every shard with an empty batch. Each count is then at
    // that position, which every shard has applied.
    for (shard, seq) in seqs.iter_mut().enumerate() {
        *seq += 1;
        rt.edge_batch(ShardId(shard as u16), Some(*seq), EdgeEvents::new()).await?;
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
    report.dark_inconclusive = tally.inconclusive.load(Ordering::Relaxed);
    report.dark_verified_after = tally.verified_after(&dark_kept);
    // The poller publishes every few seconds; publish the final state too.
    rt.export_metrics().await;
    rt.shutdown().await?;
    ticker.abort();
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
                    rt.edge_batch(ShardId(shard), Some(seq), b.clone()).await?;
                    latencies.push(t.elapsed().as_micros() as u64);
                    last = Some((shard, seq, b));
                }
                match op {
                    Op::Added(d) => batch.added(&node_id(d)),
                    Op::Removed(d) => batch.removed(&node_id(d)),
                    Op::Insert { node, target, refcount, epoch } => {
                        rt.insert_ghost(
                            ShardId(shard),
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
                            ShardId(shard),
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
                        rt.reclaim(ShardId(shard), &node_id(node), Epoch(epoch)).await?;
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

/// `1234567` as `1 234 567`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `v[p × (len − 1)]` of sorted `v`; 0 when empty.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted.get(((sorted.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0)
}

/// Per-shard table counters at the last sample, to turn totals into a wave's share.
#[derive(Default)]
struct Counted {
    last: HashMap<u16, (u64, [u64; 6])>,
}

impl Counted {
    /// Reads every shard's statistics (and publishes them as metrics).
    async fn sample(&mut self, rt: &GhostRuntime, wave: u32) -> Result<WaveSample> {
        let mut w = WaveSample { wave, ..WaveSample::default() };
        for (shard, s) in rt.shard_ids().into_iter().zip(rt.stats().await?) {
            vshard_ghosts::metrics::export_shard(&s, shard);
            let shard = shard.get();
            let c = &s.table.counters;
            let now = [
                c.inserted,
                c.purged_refcount_zero,
                c.purged_verified,
                c.purged_reclaimed,
                c.redirected,
                c.inconclusive,
            ];
            // A shard that restarted since counts from zero again.
            let before = match self.last.insert(shard, (s.restarts, now)) {
                Some((restarts, before)) if restarts == s.restarts => before,
                _ => [0; 6],
            };
            let d: Vec<u64> = now.iter().zip(before).map(|(n, b)| n.saturating_sub(b)).collect();
            w.ghosts += s.table.ghosts;
            w.inserted += d[0];
            w.purged_refcount_zero += d[1];
            w.purged_verified += d[2];
            w.purged_reclaimed += d[3];
            w.redirected += d[4];
            w.inconclusive += d[5];
        }
        Ok(w)
    }
}

/// The ghosts (shard, node) on any shard whose target is one of `targets`.
async fn pointing_at(rt: &GhostRuntime, targets: &[u16]) -> Result<HashSet<(u16, Box<str>)>> {
    let mut out = HashSet::new();
    for shard in rt.shard_ids() {
        let records = rt.request(shard, vshard_ghosts::messages::ExportRecords).await?;
        let there = records.into_iter().filter(|r| targets.contains(&r.target_shard));
        out.extend(there.map(|r| (shard.get(), r.node_id.as_str().into())));
    }
    Ok(out)
}

async fn collect(rt: &GhostRuntime, report: &mut SimReport) -> Result<()> {
    for s in rt.stats().await? {
        report.restarts += s.restarts;
        report.skipped_batches += s.table.counters.skipped_batches;
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
