//! The actor system against an asynchronous host, checked after every step.
//!
//! The host keeps the truth (where each node lives, its move epoch, the edges)
//! and a FIFO queue of events per shard: edge batches with sequence numbers,
//! inserts, retargets and reclaims, delivered at random later steps (but each
//! within `DELAY` ms of being sent). Verifies are planned, answered from the
//! host's truth at a later moment (with the shard's log position of that
//! moment), and applied later still. Time advances; the grace period is not
//! zero. Shards panic between the parts of an operation (lazily acknowledged
//! changes are lost then), the runtime restarts, old inserts and batches are
//! sent again.
//!
//! Checked after every step, on every shard not down:
//! - a ghost the host still needs is there: the host's insert was delivered,
//!   a local edge points at the node, and the ghost's life did not end (the
//!   count went to zero by a removal, a reclaim was sent, or a zero count's
//!   protection ran out: the host then adds no edge through it);
//! - a ghost's refcount is at least what the host's truth is at the shard's
//!   position of the log (the truth less the adds still queued, plus the
//!   removals still queued);
//! - no shard holds a ghost of a node that lives on it, unless the reclaim is
//!   on its way;
//! - a shard is down exactly when the restart intensity says so.
//!
//! After quiescence and full sweeps, every ghost is exact: target, epoch and
//! refcount equal the truth.
//!
//! On etcd (`--features etcd`, a live etcd in `VSHARD_GHOSTS_ETCD`), with
//! three operations per transaction so that flushes split, the host also cuts
//! commits between their parts (as fencing or a lost connection would) and
//! retries what was not acknowledged.
//!
//! `PROPTEST_CASES=2000 cargo test --release --test system_model` runs it
//! longer; failing cases land in `tests/system_model.proptest-regressions`.

#[cfg(feature = "etcd")]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use vshard_ghosts::messages::{
    ApplyVerdicts, ExportRecords, InjectPanic, InsertGhost, Inspect, PlanSweep, Retarget,
};
use vshard_ghosts::testing::ManualClock;
use vshard_ghosts::*;
use vshard_ghosts::{store::*, sweep::*};

const SHARDS: u16 = 3;
const NODES: u32 = 6;
/// The tables' grace period, in ms.
const GRACE: u64 = 100;
/// Every event reaches its shard within this many ms of being sent.
const DELAY: u64 = 40;
/// The restart intensity of the shards under test (on etcd, where cut commits
/// restart shards too, the host does not predict it).
const MAX_RESTARTS: u32 = 5;
const WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone)]
enum Action {
    Move {
        node: u32,
        hop: u16,
        host_retargets: bool,
    },
    Edge {
        src: u32,
        dsts: Vec<u32>,
    },
    /// An edge goes but its removal never reaches the shard (a lost message):
    /// the ghost's count drifts up until a sweep repairs it.
    LoseRemoval {
        pick: usize,
    },
    /// A traversal adds an edge through a ghost whose count is zero, while the
    /// host may (a grace period or a hold covers its arrival).
    AddThroughGhost {
        pick: usize,
        src: u32,
    },
    Deliver {
        shard: u16,
    },
    Tick {
        ms: u64,
    },
    Plan {
        shard: u16,
        max_scan: usize,
    },
    Answer {
        pick: usize,
        unreachable: bool,
    },
    Apply {
        pick: usize,
    },
    Panic {
        shard: u16,
    },
    Restart,
    ResendInsert {
        pick: usize,
    },
    ResendBatch {
        pick: usize,
    },
    /// The next delivery's commit fails after this many transactions (etcd only).
    CutCommit {
        parts: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..NODES, 1..SHARDS, any::<bool>())
            .prop_map(|(node, hop, host_retargets)| Action::Move { node, hop, host_retargets }),
        6 => (0..NODES, prop::collection::vec(0..NODES, 1..6)).prop_map(|(src, dsts)| Action::Edge { src, dsts }),
        2 => any::<usize>().prop_map(|pick| Action::LoseRemoval { pick }),
        3 => (any::<usize>(), 0..NODES).prop_map(|(pick, src)| Action::AddThroughGhost { pick, src }),
        5 => (0..SHARDS).prop_map(|shard| Action::Deliver { shard }),
        3 => prop_oneof![0u64..10, 30u64..70, 90u64..130].prop_map(|ms| Action::Tick { ms }),
        3 => (0..SHARDS, 1usize..8).prop_map(|(shard, max_scan)| Action::Plan { shard, max_scan }),
        3 => (any::<usize>(), prop::bool::weighted(0.15))
            .prop_map(|(pick, unreachable)| Action::Answer { pick, unreachable }),
        3 => any::<usize>().prop_map(|pick| Action::Apply { pick }),
        1 => (0..SHARDS).prop_map(|shard| Action::Panic { shard }),
        1 => Just(Action::Restart),
        1 => any::<usize>().prop_map(|pick| Action::ResendInsert { pick }),
        1 => any::<usize>().prop_map(|pick| Action::ResendBatch { pick }),
        3 => (0usize..4).prop_map(|parts| Action::CutCommit { parts }),
    ]
}

fn id(n: u32) -> String {
    format!("n{n}")
}

fn node_of(id: &str) -> u32 {
    id[1..].parse().expect("model ids are n<number>")
}

#[derive(Debug, Clone)]
enum Event {
    Batch { seq: u64, events: Vec<(u32, bool)> },
    Insert { node: u32, target: u16, refcount: u32, epoch: u64 },
    Retarget { node: u32, target: u16, epoch: u64 },
    Reclaim { node: u32, epoch: u64 },
}

#[derive(Debug, Clone)]
struct Sent {
    at: u64,
    event: Event,
    /// Sent again: it changes nothing in the truth (and should change nothing in the shard).
    resent: bool,
}

/// One life of a ghost as the host sees it.
#[derive(Debug, Clone, Copy)]
struct Life {
    /// The move epoch of the insert that began it.
    epoch: u64,
    /// The insert was delivered (acknowledged): from then on the ghost must be there.
    delivered: bool,
    /// Until when the host may add an edge through the ghost while its count is
    /// zero: the arrival of such an edge is then covered by a grace period or
    /// a zero count's hold.
    zero_ok_until: u64,
}

/// A verify planned on a shard, maybe answered.
#[derive(Debug, Clone)]
struct Check {
    shard: u16,
    incarnation: u64,
    planned: PlannedCheck,
    verdict: Option<Verdict>,
}

struct Host {
    now: u64,
    home: Vec<u16>,
    epoch: Vec<u64>,
    edges: HashSet<(u32, u32)>,
    queue: Vec<VecDeque<Sent>>,
    seq: Vec<u64>,
    /// Shards the host inserted a ghost on and has not reclaimed since.
    inserted: HashSet<(u16, u32)>,
    lives: HashMap<(u16, u32), Life>,
    checks: Vec<Check>,
    sent_inserts: Vec<(u16, Event)>,
    sent_batches: Vec<(u16, Event)>,
    restarts: Vec<Vec<u64>>,
    down: Vec<bool>,
    /// Restarts allowed in the window; `None`: not predicted (cut commits restart too).
    max_restarts: Option<u32>,
    /// Cuts the commits of the store under test after that many transactions.
    cut: Option<Cut>,
    cut_next: Option<usize>,
}

type Cut = Box<dyn Fn(Option<usize>)>;

impl Host {
    fn new(now: u64, max_restarts: Option<u32>, cut: Option<Cut>) -> Self {
        let edges = (0..NODES)
            .flat_map(|s| (0..NODES).map(move |d| (s, d)))
            .filter(|&(s, d)| s != d && (s + 2 * d) % 3 != 0)
            .collect();
        Self {
            now,
            home: (0..NODES).map(|n| (n % u32::from(SHARDS)) as u16).collect(),
            epoch: vec![0; NODES as usize],
            edges,
            queue: vec![VecDeque::new(); SHARDS as usize],
            seq: vec![0; SHARDS as usize],
            inserted: HashSet::new(),
            lives: HashMap::new(),
            checks: Vec::new(),
            sent_inserts: Vec::new(),
            sent_batches: Vec::new(),
            restarts: vec![Vec::new(); SHARDS as usize],
            down: vec![false; SHARDS as usize],
            max_restarts,
            cut,
            cut_next: None,
        }
    }

    /// Local edges of `shard` pointing at `node`.
    fn truth(&self, shard: u16, node: u32) -> u32 {
        self.edges.iter().filter(|&&(s, d)| d == node && self.home[s as usize] == shard).count() as u32
    }

    fn needed(&self, shard: u16, node: u32) -> bool {
        self.home[node as usize] != shard
            && self.lives.get(&(shard, node)).is_some_and(|l| l.delivered)
            && self.truth(shard, node) > 0
    }

    fn send(&mut self, shard: u16, event: Event) {
        self.queue[shard as usize].push_back(Sent { at: self.now, event, resent: false });
    }

    /// The edge event `shard` gets for a local edge to `d` appearing or going;
    /// called before the truth changes.
    fn edge_event(&mut self, shard: u16, d: u32, add: bool, out: &mut Vec<(u32, bool)>) {
        if self.home[d as usize] == shard {
            return;
        }
        let key = (shard, d);
        let before = self.truth(shard, d);
        if add && before == 0 {
            // An edge through a ghost whose count is zero: only while its arrival
            // is covered; otherwise the ghost may be gone, and this is a new
            // remote edge that needs none.
            let covered = self.lives.get(&key).is_some_and(|l| self.now <= l.zero_ok_until);
            if !covered {
                self.lives.remove(&key);
            }
        }
        if !add && before == 1 {
            // The shard purges the ghost when this arrives: its life ends here.
            self.lives.remove(&key);
        }
        out.push((d, add));
    }

    fn batch(&mut self, shard: u16, events: Vec<(u32, bool)>) {
        if events.is_empty() {
            return;
        }
        self.seq[shard as usize] += 1;
        let e = Event::Batch { seq: self.seq[shard as usize], events };
        self.sent_batches.push((shard, e.clone()));
        self.send(shard, e);
    }

    /// Adds and removals of `node` still queued to `shard` (resent events excluded).
    fn queued(&self, shard: u16, node: u32) -> (u32, u32) {
        let (mut adds, mut removals) = (0, 0);
        for s in self.queue[shard as usize].iter().filter(|s| !s.resent) {
            if let Event::Batch { events, .. } = &s.event {
                for &(_, add) in events.iter().filter(|e| e.0 == node) {
                    if add { adds += 1 } else { removals += 1 }
                }
            }
        }
        (adds, removals)
    }

    fn reclaim_queued(&self, shard: u16, node: u32) -> bool {
        self.queue[shard as usize]
            .iter()
            .any(|s| matches!(s.event, Event::Reclaim { node: n, .. } if n == node))
    }

    fn position(&self, shard: u16) -> Option<u64> {
        Some(self.seq[shard as usize]).filter(|&s| s > 0)
    }

    /// The truthful answer for `check`, now.
    fn answer(&self, c: &Check) -> Verdict {
        let n = node_of(&c.planned.node_id);
        if self.epoch[n as usize] > c.planned.epoch.get() {
            return Verdict::Redirect {
                shard: ShardId(self.home[n as usize]),
                epoch: Epoch(self.epoch[n as usize]),
            };
        }
        let count = self.truth(c.shard, n);
        Verdict::Keep { local_edges: Some(LocalEdges { count, at_seq: self.position(c.shard) }) }
    }

    fn note_restart(&mut self, shard: u16) {
        let now = self.now;
        let times = &mut self.restarts[shard as usize];
        times.retain(|&t| now.saturating_sub(t) <= WINDOW_MS);
        times.push(now);
        if self.max_restarts.is_some_and(|max| times.len() as u32 > max) {
            self.down[shard as usize] = true;
        }
    }
}

fn build(store: &StoreChoice, clock: &ManualClock, max_restarts: u32) -> GhostRuntime {
    let table = TableConfig {
        grace: Duration::from_millis(GRACE),
        // On the model's time scale, as the default is on the default grace's:
        // a shard reloaded from etcd keeps stored times this much longer.
        max_clock_skew: Duration::from_millis(GRACE),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(40),
        // Batches stage their changes ahead of the flush from two changed stubs on.
        stage_after_changes: 2,
        hash_seed: Some(3),
        ..TableConfig::default()
    };
    let restart = RestartPolicy {
        max_restarts,
        window: Duration::from_millis(WINDOW_MS),
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(2),
    };
    GhostRuntime::builder()
        .shards((0..SHARDS).map(ShardId))
        .arbiters(1)
        .shard_config(ShardConfig { table, restart, fault_injection: true, ..ShardConfig::default() })
        .store(store.clone())
        .clock(Arc::new(clock.clone()))
        .start()
        .unwrap()
}

/// Delivers the head of `shard`'s queue.
async fn deliver_one(rt: &GhostRuntime, h: &mut Host, shard: u16) {
    if h.down[shard as usize] {
        // A down shard answers nothing but errors: the host keeps its events
        // until an operator brings the shard back.
        return;
    }
    let Some(sent) = h.queue[shard as usize].pop_front() else { return };
    // A cut commit fails the delivery; the host retries what was not acknowledged.
    // It waits for a batch that adds and removes edges: acknowledged only once
    // durable, and a double application of its removals is what a partly
    // visible commit would cause.
    let mixed = matches!(&sent.event, Event::Batch { events, .. }
        if events.iter().any(|e| e.1) && events.iter().any(|e| !e.1));
    let cut = if mixed && !sent.resent { h.cut_next.take().filter(|_| h.cut.is_some()) } else { None };
    if let (Some(parts), Some(f)) = (cut, &h.cut) {
        f(Some(parts));
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let out = deliver_once(rt, h, shard, &sent, tries > 1).await;
        if tries == 1
            && let Some(f) = &h.cut
        {
            f(None);
        }
        match out {
            Ok(()) => break,
            Err(e) if cut.is_some() && tries < 20 => {
                if std::env::var_os("MODEL_TRACE").is_some() {
                    eprintln!("t={} CUT delivery to {shard} failed ({e}); retrying {:?}", h.now, sent.event);
                }
            }
            Err(e) => panic!("delivery to shard {shard}: {e}"),
        }
    }
}

async fn deliver_once(rt: &GhostRuntime, h: &mut Host, shard: u16, sent: &Sent, retried: bool) -> Result<()> {
    let name = |n: u32| id(n);
    if std::env::var_os("MODEL_TRACE").is_some() {
        eprintln!("t={} deliver to {shard}: {:?} resent={}", h.now, sent.event, sent.resent);
    }
    match sent.event.clone() {
        Event::Batch { seq, events } => {
            let events: Vec<EdgeEvent> = events
                .iter()
                .map(|&(n, add)| if add { EdgeEvent::added(name(n)) } else { EdgeEvent::removed(name(n)) })
                .collect();
            let out = rt.edge_batch(ShardId(shard), Some(seq), events).await?;
            if retried && std::env::var_os("MODEL_TRACE").is_some() {
                eprintln!(
                    "t={} RETRY of batch {seq} on {shard}: skipped={} applied={} purged={}",
                    h.now, out.skipped, out.applied, out.purged
                );
            }
            // A retry may find the first try committed after all.
            assert!(sent.resent || retried || !out.skipped, "shard {shard} skipped fresh batch {seq}");
        }
        Event::Insert { node, target, refcount, epoch } => {
            let out = rt
                .insert_ghost(
                    ShardId(shard),
                    InsertGhost {
                        node_id: name(node).into(),
                        target: ShardId(target),
                        refcount,
                        epoch: Epoch(epoch),
                    },
                )
                .await?;
            if !sent.resent
                && let Some(life) = h.lives.get_mut(&(shard, node)).filter(|l| l.epoch == epoch)
            {
                life.delivered = true;
                life.zero_ok_until = h.now + GRACE - DELAY;
                if out != InsertOutcome::Inserted && out != InsertOutcome::Replaced {
                    // A `Redirect` verdict reached this epoch, or passed it, first:
                    // the ghost must be there all the same (a tombstone must not
                    // have refused a live move).
                    let g = rt.request(ShardId(shard), Inspect { node_id: name(node).into() }).await?;
                    assert!(g.is_some(), "shard {shard} refused the insert of n{node} at {epoch}: {out:?}");
                }
            }
        }
        Event::Retarget { node, target, epoch } => {
            rt.retarget(
                ShardId(shard),
                Retarget { node_id: name(node).into(), target: ShardId(target), epoch: Epoch(epoch) },
            )
            .await?;
        }
        Event::Reclaim { node, epoch } => {
            rt.reclaim(ShardId(shard), &name(node), Epoch(epoch)).await?;
        }
    }
    Ok(())
}

/// Moves time on by `ms`, first delivering everything that would otherwise arrive late.
async fn advance(rt: &GhostRuntime, h: &mut Host, clock: &ManualClock, ms: u64) {
    let then = h.now + ms;
    for shard in 0..SHARDS {
        if h.down[shard as usize] {
            continue;
        }
        while h.queue[shard as usize].iter().any(|s| s.at + DELAY <= then) {
            deliver_one(rt, h, shard).await;
        }
    }
    h.now = then;
    clock.set(then);
}

async fn step(rt: &mut GhostRuntime, h: &mut Host, store: &StoreChoice, clock: &ManualClock, a: Action) {
    let max_restarts = h.max_restarts.unwrap_or(u32::MAX);
    if std::env::var_os("MODEL_TRACE").is_some() {
        eprintln!("t={} step {a:?}", h.now);
    }
    match a {
        Action::Move { node, hop, host_retargets } => {
            let from = h.home[node as usize];
            let to = (from + hop) % SHARDS;
            h.epoch[node as usize] += 1;
            let epoch = h.epoch[node as usize];
            if h.inserted.remove(&(to, node)) {
                h.lives.remove(&(to, node));
                h.send(to, Event::Reclaim { node, epoch });
            }
            let (mut on_from, mut on_to) = (Vec::new(), Vec::new());
            let outs: Vec<u32> = h.edges.iter().filter(|e| e.0 == node).map(|e| e.1).collect();
            for &d in &outs {
                h.edge_event(from, d, false, &mut on_from);
            }
            let mut moving = outs.clone();
            moving.sort_unstable();
            // The truth changes as the events are made: one edge at a time.
            for d in moving {
                h.edges.remove(&(node, d));
            }
            h.home[node as usize] = to;
            for &d in &outs {
                h.edge_event(to, d, true, &mut on_to);
                h.edges.insert((node, d));
            }
            h.batch(from, on_from);
            h.batch(to, on_to);
            let refcount = h.truth(from, node);
            let insert = Event::Insert { node, target: to, refcount, epoch };
            h.sent_inserts.push((from, insert.clone()));
            h.inserted.insert((from, node));
            let window = h.now + GRACE - DELAY;
            h.lives.insert((from, node), Life { epoch, delivered: false, zero_ok_until: window });
            h.send(from, insert);
            if host_retargets {
                for s in 0..SHARDS {
                    if s != from && s != to && h.inserted.contains(&(s, node)) {
                        h.send(s, Event::Retarget { node, target: to, epoch });
                    }
                }
            }
        }
        Action::Edge { src, dsts } => {
            // One host transaction: each edge from `src` to `dsts` toggles, in one batch.
            let shard = h.home[src as usize];
            let mut events = Vec::new();
            let mut done = HashSet::new();
            for dst in dsts {
                if src == dst || !done.insert(dst) {
                    continue;
                }
                let add = !h.edges.contains(&(src, dst));
                h.edge_event(shard, dst, add, &mut events);
                if add {
                    h.edges.insert((src, dst));
                } else {
                    h.edges.remove(&(src, dst));
                }
            }
            h.batch(shard, events);
        }
        Action::LoseRemoval { pick } => {
            // Among the edges a delivered ghost counts: that is where a loss matters.
            let counted = |&&(src, dst): &&(u32, u32)| {
                h.lives.get(&(h.home[src as usize], dst)).is_some_and(|l| l.delivered)
            };
            let mut edges: Vec<(u32, u32)> = h.edges.iter().filter(counted).copied().collect();
            edges.sort_unstable();
            let Some(&(src, dst)) = edges.get(pick % edges.len().max(1)) else { return };
            let shard = h.home[src as usize];
            let mut lost = Vec::new();
            h.edge_event(shard, dst, false, &mut lost);
            h.edges.remove(&(src, dst));
        }
        Action::AddThroughGhost { pick, src } => {
            let mut open: Vec<(u16, u32)> = h
                .lives
                .iter()
                .filter(|&(&(s, n), l)| {
                    h.now <= l.zero_ok_until && h.truth(s, n) == 0 && h.home[n as usize] != s
                })
                .map(|(&k, _)| k)
                .collect();
            open.sort_unstable();
            let Some(&(shard, dst)) = open.get(pick % open.len().max(1)) else { return };
            // Any node living on the shard, not the ghost's own.
            let local: Vec<u32> = (0..NODES).filter(|&n| h.home[n as usize] == shard && n != dst).collect();
            let Some(&src) = local.get(src as usize % local.len().max(1)) else { return };
            if h.edges.contains(&(src, dst)) {
                return;
            }
            let mut events = Vec::new();
            h.edge_event(shard, dst, true, &mut events);
            h.edges.insert((src, dst));
            h.batch(shard, events);
        }
        Action::Deliver { shard } => deliver_one(rt, h, shard).await,
        Action::Tick { ms } => advance(rt, h, clock, ms).await,
        Action::Plan { shard, max_scan } => {
            match rt.request(ShardId(shard), PlanSweep::new(max_scan)).await {
                Ok(plan) => {
                    for planned in plan.page.checks {
                        let c = Check { shard, incarnation: plan.incarnation, planned, verdict: None };
                        h.checks.push(c);
                    }
                }
                Err(Error::ShardDown { .. }) if h.down[shard as usize] => {}
                Err(e) => panic!("plan on shard {shard}: {e}"),
            }
        }
        Action::Answer { pick, unreachable } => {
            let open: Vec<usize> = (0..h.checks.len()).filter(|&i| h.checks[i].verdict.is_none()).collect();
            if let Some(&i) = open.get(pick % open.len().max(1)) {
                let v = if unreachable { Verdict::Inconclusive } else { h.answer(&h.checks[i]) };
                h.checks[i].verdict = Some(v);
            }
        }
        Action::Apply { pick } => {
            let answered: Vec<usize> =
                (0..h.checks.len()).filter(|&i| h.checks[i].verdict.is_some()).collect();
            let Some(&i) = answered.get(pick % answered.len().max(1)) else { return };
            let c = h.checks.swap_remove(i);
            apply(rt, h, c).await;
        }
        Action::Panic { shard } => {
            // No flush first: what was acknowledged lazily may be lost, as in a real crash.
            let got = rt.request(ShardId(shard), InjectPanic).await;
            if h.down[shard as usize] {
                assert!(matches!(got, Err(Error::ShardDown { .. })), "{got:?}");
            } else {
                assert_eq!(got, Err(Error::Panicked { shard: ShardId(shard) }));
                h.note_restart(shard);
            }
        }
        Action::Restart => {
            rt.shutdown().await.unwrap();
            *rt = build(store, clock, max_restarts);
            h.restarts.iter_mut().for_each(Vec::clear);
            // Shards that were down are back: what the host kept for them goes
            // first, before anything else reaches them.
            for shard in 0..SHARDS {
                if std::mem::take(&mut h.down[shard as usize]) {
                    while !h.queue[shard as usize].is_empty() {
                        deliver_one(rt, h, shard).await;
                    }
                }
            }
        }
        Action::ResendInsert { pick } => {
            if let Some((shard, e)) = h.sent_inserts.get(pick % h.sent_inserts.len().max(1)).cloned() {
                h.queue[shard as usize].push_back(Sent { at: h.now, event: e, resent: true });
            }
        }
        Action::CutCommit { parts } => h.cut_next = Some(parts),
        Action::ResendBatch { pick } => {
            if let Some((shard, e)) = h.sent_batches.get(pick % h.sent_batches.len().max(1)).cloned() {
                h.queue[shard as usize].push_back(Sent { at: h.now, event: e, resent: true });
            }
        }
    }
}

/// Applies one answered check, and notes a zero count's hold if one began.
async fn apply(rt: &GhostRuntime, h: &mut Host, c: Check) {
    let verdict = c.verdict.expect("answered");
    let v = CheckedVerdict::new(&c.planned, verdict);
    let msg = ApplyVerdicts::new(c.incarnation, vec![v]);
    match rt.request(ShardId(c.shard), msg).await {
        Ok(_) => {}
        Err(Error::ShardDown { .. }) if h.down[c.shard as usize] => return,
        Err(e) => panic!("apply on shard {}: {e}", c.shard),
    }
    let zero = matches!(verdict, Verdict::Keep { local_edges: Some(LocalEdges { count: 0, .. }) });
    if !zero {
        return;
    }
    let node = node_of(&c.planned.node_id);
    let g = rt.request(ShardId(c.shard), Inspect { node_id: c.planned.node_id.clone() }).await.unwrap();
    if let Some(g) = g
        && g.refcount == 0
        && g.not_before_ms > h.now
        && h.queued(c.shard, node).1 == 0
        // Not a life the host has ended (a reclaim is on its way) or moved past.
        && !h.reclaim_queued(c.shard, node)
        && h.lives.get(&(c.shard, node)).is_none_or(|l| l.epoch <= g.epoch.get())
    {
        // A hold began now: an edge the host adds while its arrival is covered
        // must find the ghost. (Not with a removal on its way: the host took its
        // count to zero itself, and at zero the ghost goes.)
        let until = h.now + GRACE - DELAY;
        h.lives.insert((c.shard, node), Life { epoch: g.epoch.get(), delivered: true, zero_ok_until: until });
    }
}

/// The ghosts each shard holds (`None`: the shard is down, as the model says).
async fn held(rt: &GhostRuntime, h: &Host, shard: u16) -> Option<HashMap<u32, StubRecord>> {
    match rt.request(ShardId(shard), ExportRecords).await {
        Ok(records) => {
            assert!(!h.down[shard as usize], "shard {shard} serves past its restart intensity");
            Some(records.into_iter().map(|r| (node_of(&r.node_id), r)).collect())
        }
        Err(Error::ShardDown { .. }) => {
            assert!(h.down[shard as usize], "shard {shard} down before its restart intensity");
            None
        }
        Err(e) => panic!("export of shard {shard}: {e}"),
    }
}

async fn check(rt: &GhostRuntime, h: &Host) {
    for shard in 0..SHARDS {
        let Some(held) = held(rt, h, shard).await else { continue };
        for n in 0..NODES {
            if h.needed(shard, n) {
                assert!(
                    held.contains_key(&n),
                    "shard {shard} lost the ghost of n{n}, which a local edge needs"
                );
            }
        }
        for (&n, g) in &held {
            if h.home[n as usize] == shard {
                assert!(h.reclaim_queued(shard, n), "shard {shard} forwards its own node n{n} away");
                continue;
            }
            if h.lives.get(&(shard, n)).is_some_and(|l| l.delivered) {
                let (adds, removals) = h.queued(shard, n);
                let floor = (h.truth(shard, n) + removals).saturating_sub(adds);
                assert!(g.refcount >= floor, "shard {shard} n{n}: refcount {} below {floor}", g.refcount);
            }
        }
    }
}

/// Delivers everything, then sweeps every shard until the tables equal the truth.
async fn quiesce(rt: &GhostRuntime, h: &mut Host, clock: &ManualClock) {
    for shard in 0..SHARDS {
        if h.down[shard as usize] {
            continue;
        }
        while !h.queue[shard as usize].is_empty() {
            deliver_one(rt, h, shard).await;
        }
        // Marks the log's position on a shard that reloaded (see `LocalEdges`),
        // durably: a flush that a cut commit failed may still restart the shard.
        while !h.down[shard as usize] {
            h.seq[shard as usize] += 1;
            rt.edge_batch(ShardId(shard), Some(h.seq[shard as usize]), EdgeEvents::new()).await.unwrap();
            if rt.request(ShardId(shard), vshard_ghosts::messages::Flush).await.is_ok() {
                break;
            }
        }
    }
    h.checks.clear();
    if std::env::var_os("MODEL_TRACE").is_some() {
        eprintln!("t=0 === quiesce");
    }
    for _ in 0..4 {
        advance(rt, h, clock, 3 * GRACE).await;
        for shard in 0..SHARDS {
            if h.down[shard as usize] {
                continue;
            }
            loop {
                let plan = rt.request(ShardId(shard), PlanSweep::new(16)).await.unwrap();
                for planned in plan.page.checks {
                    let mut c = Check { shard, incarnation: plan.incarnation, planned, verdict: None };
                    c.verdict = Some(h.answer(&c));
                    if std::env::var_os("MODEL_TRACE").is_some() {
                        let st = rt.shard_stats(ShardId(shard)).await.unwrap();
                        eprintln!(
                            "t={} sweep {shard}: {:?} {:?} applied {:?} state {:?}",
                            h.now, c.planned, c.verdict, st.table.applied_seq, st.state
                        );
                    }
                    apply(rt, h, c).await;
                }
                if plan.page.pass_complete {
                    break;
                }
            }
        }
        check(rt, h).await;
    }
    for shard in 0..SHARDS {
        let Some(held) = held(rt, h, shard).await else { continue };
        for (n, g) in held {
            let want = (h.home[n as usize], h.epoch[n as usize], h.truth(shard, n));
            let got = (g.target_shard, g.epoch, g.refcount);
            assert_eq!(got, want, "shard {shard} n{n} after quiescence: (target, epoch, refcount)");
            assert!(g.refcount > 0);
        }
    }
}

async fn run(actions: Vec<Action>, store: StoreChoice, cut: Option<Cut>) {
    let clock = ManualClock::new(1_000);
    let max_restarts = if cut.is_some() { None } else { Some(MAX_RESTARTS) };
    let mut rt = build(&store, &clock, max_restarts.unwrap_or(u32::MAX));
    let mut h = Host::new(1_000, max_restarts, cut);
    if std::env::var_os("MODEL_TRACE").is_some() {
        eprintln!("t=0 === case");
    }
    for a in actions {
        step(&mut rt, &mut h, &store, &clock, a).await;
        check(&rt, &h).await;
    }
    quiesce(&rt, &mut h, &clock).await;
    rt.shutdown().await.unwrap();
}

/// Cases from `PROPTEST_CASES` if set, else `default`; failures persist in the committed file.
fn config(default: u32) -> ProptestConfig {
    let mut c = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/system_model.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default;
    }
    c
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn the_system_keeps_its_promise_in_memory(actions in prop::collection::vec(action(), 1..120)) {
        let store = StoreChoice::Custom(Arc::new(MemoryStore::new()));
        actix::System::new().block_on(run(actions, store, None));
    }

    #[test]
    fn the_system_keeps_its_promise_on_redb(actions in prop::collection::vec(action(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreChoice::Redb(dir.path().join("model.redb"));
        actix::System::new().block_on(run(actions, store, None));
    }
}

#[cfg(feature = "etcd")]
proptest! {
    #![proptest_config(config(16))]

    #[test]
    fn the_system_keeps_its_promise_on_etcd_with_cut_commits(
        actions in prop::collection::vec(action(), 1..80),
    ) {
        let config = EtcdConfig {
            prefix: support::fresh_prefix(),
            // Flushes of two rows or more take several transactions.
            max_txn_ops: 2,
            ..EtcdConfig::default()
        };
        let store = Arc::new(EtcdStore::connect([support::etcd_endpoint()], config).unwrap());
        let hook = store.clone();
        let cut: Cut = Box::new(move |parts| hook.fail_commits_after_parts(parts));
        actix::System::new().block_on(run(actions, StoreChoice::Custom(store), Some(cut)));
    }
}
