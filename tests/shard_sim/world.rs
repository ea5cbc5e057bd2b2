//! The simulated world: one shard's core, the store model, the mailbox, the
//! host model, and the oracle checked after every step.

use crate::host::{Host, NODES, Req, SHARD, Status, id};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;
use vshard_ghosts::store::{GhostStore, MemoryStore, ShardChanges};
use vshard_ghosts::sweep::{CheckedVerdict, PlannedCheck};
use vshard_ghosts::table::ChangeSet;
use vshard_ghosts::testing::{CoreDriver, CoreEffect};
use vshard_ghosts::*;

/// What the simulation allows and checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    /// A failed commit may land some of its rows without the sequence number.
    pub torn_commits: bool,
    /// The host sends unsequenced edge events too (its counts then only raise).
    pub unsequenced: bool,
    /// Every acknowledged sequenced batch must be durable, removal-only ones too.
    pub strict_acks: bool,
}

/// One step of the world; picks are taken modulo what there is to pick from.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// The host logs a batch of edge events (node, add) and sends it.
    Batch(Vec<(u32, bool, usize)>),
    /// An unsequenced `EdgeAdded` / `EdgeRemoved`.
    Unsequenced(u32, bool, usize),
    /// Node moves: away (insert), on (retarget) or back (reclaim).
    Move(u32, u16, bool),
    /// The shard handles its next message.
    Deliver,
    /// The shard panics handling its next message.
    DeliverPanics,
    /// The commit in flight lands (0), fails (1), lands but its reply is lost
    /// (2), or lands its first `k` rows without the sequence number (3 + k).
    Commit(usize),
    /// The pending load succeeds (0), fails (1), or finds the shard owned elsewhere (2).
    Load(u8),
    Tick(u64),
    Flush,
    Plan(usize),
    Answer(usize, bool),
    Apply(usize),
    Fence,
    Revive,
    /// The host sends a failed request again.
    Resend(usize),
    /// The host restarts: it forgets what is in flight and sends every
    /// unacknowledged request again, and the last `k` acknowledged batches.
    HostRestart(usize),
    /// The shard's process restarts: a fresh core on the same store.
    ProcessRestart,
}

type Id = u64;

/// What a request answered besides success.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Batch(BatchOutcome),
    Move(MoveOutcome),
}

pub(crate) struct World {
    pub mode: Mode,
    pub now: u64,
    config: ShardConfig,
    core: CoreDriver,
    store: MemoryStore,
    mailbox: VecDeque<(Id, Req)>,
    load_at: Option<u64>,
    commit: Option<(ShardChanges, Vec<u64>)>,
    timer: Option<u64>,
    tokens: HashMap<u64, (Id, Req, Option<Outcome>)>,
    /// Requests whose answer the host still waits for (a host restart forgets them).
    live: BTreeSet<Id>,
    next_id: Id,
    pub host: Host,
    checks: Vec<(u64, PlannedCheck, Option<Verdict>)>,
    /// Sequenced batches applied to the table since the last commit was taken.
    applied: Vec<u64>,
    /// Sequenced batches whose effects the store holds.
    durable: BTreeSet<u64>,
    incarnations: u64,
    restarts: u64,
    /// What happened, for a failure's report.
    pub trace: Vec<String>,
}

pub(crate) type Check = Result<(), String>;

impl World {
    pub(crate) fn new(mode: Mode) -> Self {
        let table = TableConfig {
            grace: Duration::from_millis(100),
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(40),
            stage_after_changes: 2,
            // Storage order follows the hash: fixed, a seed replays the same run.
            hash_seed: Some(1),
            ..TableConfig::default()
        };
        let restart = RestartPolicy {
            max_restarts: 4,
            window: Duration::from_millis(5_000),
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(80),
        };
        let config = ShardConfig { table, restart, ..ShardConfig::default() };
        let mut w = World {
            mode,
            now: 1_000,
            core: CoreDriver::new(ShardId(SHARD), &config, 1),
            config,
            store: MemoryStore::new(),
            mailbox: VecDeque::new(),
            load_at: None,
            commit: None,
            timer: None,
            tokens: HashMap::new(),
            live: BTreeSet::new(),
            next_id: 0,
            host: Host::new(mode.unsequenced),
            checks: Vec::new(),
            applied: Vec::new(),
            durable: BTreeSet::new(),
            incarnations: 1,
            restarts: 0,
            trace: Vec::new(),
        };
        w.core.start(w.now);
        w.drain().expect("a start answers nothing");
        w
    }

    fn send(&mut self, mut req: Req) {
        // An insert sent again places the ghost where its node is now, as a
        // host that moved the node since would.
        if let Req::Insert { node, target, epoch, life, .. } = &mut req {
            let n = &self.host.nodes[*node as usize];
            if n.life == *life && !n.home {
                (*target, *epoch) = (n.target, n.epoch);
            }
        }
        self.next_id += 1;
        self.live.insert(self.next_id);
        self.mailbox.push_back((self.next_id, req));
    }

    fn send_batch(&mut self, seq: u64) {
        self.host.log.get_mut(&seq).expect("logged").status = Status::InFlight;
        self.send(Req::Batch { seq });
    }

    pub(crate) fn step(&mut self, a: &Action) -> Check {
        self.trace.push(format!("t={} {a:?}", self.now));
        match a {
            Action::Batch(evs) => {
                let mut events = Vec::new();
                for &(n, add, pick) in evs {
                    let n = n % NODES;
                    if self.host.flows(n)
                        && let Some(e) = self.host.event(n, add, pick, self.mode.unsequenced)
                    {
                        events.push(e);
                    }
                }
                if !events.is_empty() {
                    let seq = self.host.new_batch(events);
                    self.send(Req::Batch { seq });
                }
            }
            &Action::Unsequenced(n, add, pick) => {
                let n = n % NODES;
                if self.mode.unsequenced
                    && self.host.flows(n)
                    && let Some(e) = self.host.event(n, add, pick, true)
                {
                    self.send(if add { Req::Added(e) } else { Req::Removed(e) });
                }
            }
            &Action::Move(n, hop, back) => self.move_node(n % NODES, hop, back),
            Action::Deliver => self.deliver(false)?,
            Action::DeliverPanics => self.deliver(true)?,
            &Action::Commit(fate) => self.commit(fate)?,
            &Action::Load(fate) => self.load(fate)?,
            &Action::Tick(ms) => {
                self.now += ms;
                if self.timer.is_some_and(|t| t <= self.now) {
                    self.timer = None;
                    self.core.flush_due();
                    self.drain()?;
                }
            }
            Action::Flush => self.send(Req::Flush),
            &Action::Plan(max_scan) => self.send(Req::Plan { max_scan }),
            &Action::Answer(pick, inconclusive) => {
                let open: Vec<usize> =
                    (0..self.checks.len()).filter(|&i| self.checks[i].2.is_none()).collect();
                if let Some(&i) = open.get(pick % open.len().max(1)) {
                    self.checks[i].2 = Some(self.host.answer(&self.checks[i].1, inconclusive));
                }
            }
            &Action::Apply(pick) => {
                let done: Vec<usize> =
                    (0..self.checks.len()).filter(|&i| self.checks[i].2.is_some()).collect();
                if let Some(&i) = done.get(pick % done.len().max(1)) {
                    let (incarnation, check, verdict) = self.checks.swap_remove(i);
                    let verdict = verdict.expect("answered");
                    self.send(Req::Apply { incarnation, check, verdict });
                }
            }
            Action::Fence => {
                if self.core.table().is_ok() {
                    self.core.fence("the claim lapsed");
                    self.drain()?;
                }
            }
            Action::Revive => {
                self.core.revive();
                self.drain()?;
            }
            &Action::Resend(pick) => self.resend(pick),
            &Action::HostRestart(k) => self.host_restart(k),
            Action::ProcessRestart => self.process_restart()?,
        }
        self.check()
    }

    fn move_node(&mut self, n: u32, hop: u16, back: bool) {
        let node = &self.host.nodes[n as usize];
        if node.home {
            // The new life's count is the host's truth after every event it
            // sent for the node: a batch of an earlier life still to be
            // resent would count its events a second time, so the host moves
            // the node once they are acknowledged (the insert's documented rule).
            if self
                .host
                .log
                .values()
                .any(|b| b.status != Status::Acked && b.events.iter().any(|e| e.node == n))
            {
                return;
            }
            let target = 1 + hop % 3;
            self.host.next_life += 1;
            let life = self.host.next_life;
            let node = &mut self.host.nodes[n as usize];
            node.home = false;
            node.reclaimed = false;
            node.target = target;
            node.epoch += 1;
            node.life = life;
            node.life_acked = false;
            node.life_over = node.edges.is_empty();
            node.acked_epoch = 0;
            node.edges.values_mut().for_each(|a| *a = None);
            let edges: Vec<u64> = node.edges.keys().copied().collect();
            let (refcount, epoch) = (edges.len() as u32, node.epoch);
            self.send(Req::Insert { node: n, target, refcount, epoch, life, edges });
        } else if back {
            let node = &mut self.host.nodes[n as usize];
            node.home = true;
            node.epoch += 1;
            let epoch = node.epoch;
            self.send(Req::Reclaim { node: n, epoch });
        } else {
            let node = &mut self.host.nodes[n as usize];
            let target = 1 + (node.target + hop % 2) % 3;
            node.target = target;
            node.epoch += 1;
            let (epoch, life) = (node.epoch, node.life);
            self.send(Req::Retarget { node: n, target, epoch, life });
        }
    }

    fn deliver(&mut self, panics: bool) -> Check {
        if self.load_at.is_some() {
            return Ok(()); // The mailbox waits for the load.
        }
        let Some((rid, req)) = self.mailbox.pop_front() else { return Ok(()) };
        self.trace.push(format!("  delivered {req:?}"));
        if panics {
            self.core.panicked(match &req {
                Req::Batch { seq } => Some(*seq),
                _ => None,
            });
            self.reply(rid, &req, Err(Error::Panicked { shard: ShardId(SHARD) }), None)?;
            return self.drain();
        }
        let now = self.now;
        let (out, outcome): (Result<Option<u64>>, Option<Outcome>) = match &req {
            Req::Batch { seq } => {
                let events = self.host.log[seq].packed();
                match self.core.edge_batch(Some(*seq), &events) {
                    Ok((o, t)) => {
                        if !o.skipped {
                            self.applied.push(*seq);
                        }
                        (Ok(t), Some(Outcome::Batch(o)))
                    }
                    Err(e) => (Err(e), None),
                }
            }
            Req::Added(e) => (self.core.edge_added(&id(e.node)).map(|(_, t)| t), None),
            Req::Removed(e) => (self.core.edge_removed(&id(e.node)).map(|(_, t)| t), None),
            Req::Insert { node, target, refcount, epoch, .. } => {
                let r = self.core.insert(&id(*node), ShardId(*target), *refcount, Epoch(*epoch), now);
                (r.map(|(o, t)| o.map(|_| t).expect("valid insert")), None)
            }
            Req::Retarget { node, target, epoch, .. } => {
                match self.core.retarget(&id(*node), ShardId(*target), Epoch(*epoch)) {
                    Ok((o, t)) => (Ok(t), Some(Outcome::Move(o.expect("valid retarget")))),
                    Err(e) => (Err(e), None),
                }
            }
            Req::Reclaim { node, epoch } => {
                (self.core.reclaim(&id(*node), Epoch(*epoch), now).map(|(_, t)| t), None)
            }
            Req::Flush => (self.core.flush().map(|(_, t)| t), None),
            Req::Plan { max_scan } => match self.core.plan_sweep(*max_scan, now) {
                Ok((plan, t)) => {
                    for c in plan.page.checks {
                        self.checks.push((plan.incarnation, c, None));
                    }
                    (Ok(t), None)
                }
                Err(e) => (Err(e), None),
            },
            Req::Apply { incarnation, check, verdict } => {
                let v = [CheckedVerdict::new(check, *verdict)];
                (self.core.apply_verdicts(*incarnation, &v, now).map(|(_, t)| t), None)
            }
        };
        match out {
            Ok(Some(token)) => {
                self.tokens.insert(token, (rid, req, outcome));
            }
            Ok(None) => self.reply(rid, &req, Ok(()), outcome)?,
            Err(e) => self.reply(rid, &req, Err(e), None)?,
        }
        self.drain()
    }

    /// The host gets the answer to request `rid`.
    fn reply(&mut self, rid: Id, req: &Req, result: Result<()>, outcome: Option<Outcome>) -> Check {
        if !self.live.remove(&rid) {
            return Ok(()); // The host restarted since: nobody listens.
        }
        self.trace.push(format!("  reply {req:?}: {result:?} {outcome:?}"));
        match (req, result) {
            (Req::Batch { seq }, Ok(())) => {
                let batch = self.host.log.get_mut(seq).expect("logged");
                if (batch.adds() || self.mode.strict_acks) && !self.durable.contains(seq) {
                    let how = if matches!(outcome, Some(Outcome::Batch(o)) if o.skipped) {
                        "answered skipped"
                    } else {
                        "acknowledged"
                    };
                    return Err(format!("batch {seq} {how} but its effects are not durable"));
                }
                batch.status = Status::Acked;
                let events = batch.events.clone();
                events.iter().filter(|e| e.add).for_each(|e| self.host.ack_add(e));
            }
            (Req::Batch { seq }, Err(e)) => {
                let gap = matches!(e, Error::SeqGap { .. });
                self.host.log.get_mut(seq).expect("logged").status = Status::Failed;
                if gap {
                    // As the docs ask: the unacknowledged batches again, in order.
                    let again: Vec<u64> = self
                        .host
                        .log
                        .iter()
                        .filter(|(_, b)| b.status == Status::Failed)
                        .map(|(&s, _)| s)
                        .collect();
                    again.into_iter().for_each(|s| self.send_batch(s));
                }
            }
            (Req::Added(e), Ok(())) => self.host.ack_add(e),
            (Req::Insert { node, epoch, life, edges, .. }, Ok(())) => {
                let n = &mut self.host.nodes[*node as usize];
                if n.life == *life {
                    n.life_acked = true;
                    n.acked_epoch = n.acked_epoch.max(*epoch);
                    for e in edges {
                        if let Some(a) = n.edges.get_mut(e) {
                            *a = Some(*life);
                        }
                    }
                }
            }
            (r @ Req::Retarget { node, epoch, life, .. }, Ok(())) => {
                let n = &mut self.host.nodes[*node as usize];
                match outcome {
                    // The life's insert failed and is not sent again yet: its
                    // resend carries the newest placement, and the retarget
                    // follows it.
                    Some(Outcome::Move(MoveOutcome::UnknownNode))
                        if n.life == *life && !n.life_acked && !n.home =>
                    {
                        self.host.failed.push(r.clone());
                    }
                    Some(Outcome::Move(MoveOutcome::UnknownNode)) => {}
                    _ if n.life == *life => n.acked_epoch = n.acked_epoch.max(*epoch),
                    _ => {}
                }
            }
            (Req::Reclaim { node, epoch }, Ok(())) => {
                let n = &mut self.host.nodes[*node as usize];
                if n.home && n.epoch == *epoch {
                    n.reclaimed = true;
                }
            }
            // A failed add is sent again: the edge is there all the same.
            (r @ Req::Added(_), Err(_)) => self.host.failed.push(r.clone()),
            (Req::Flush | Req::Plan { .. } | Req::Apply { .. } | Req::Removed(_), _) => {}
            (r @ (Req::Insert { .. } | Req::Retarget { .. } | Req::Reclaim { .. }), Err(_)) => {
                self.host.failed.push(r.clone());
            }
        }
        Ok(())
    }

    /// Carries out the core's effects until it has none.
    fn drain(&mut self) -> Check {
        loop {
            let effects = self.core.ready();
            if effects.is_empty() {
                return Ok(());
            }
            for effect in effects {
                match effect {
                    CoreEffect::Commit(changes) => {
                        if self.commit.is_some() {
                            return Err("a second commit while one is in flight".into());
                        }
                        self.commit = Some((changes, std::mem::take(&mut self.applied)));
                    }
                    CoreEffect::Ack { token, result } => {
                        if let Some((rid, req, outcome)) = self.tokens.remove(&token) {
                            self.reply(rid, &req, result, outcome)?;
                        }
                    }
                    CoreEffect::FlushAfter(d) => self.timer = Some(self.now + d.as_millis() as u64),
                    CoreEffect::Load { at_ms } => self.load_at = Some(at_ms),
                    CoreEffect::Restart { .. } => {
                        // The writer runs the commit it was given before the reload.
                        self.writer_finishes();
                        self.core.restarting(self.now);
                        self.core.start(self.now);
                    }
                    CoreEffect::Fenced(_) | CoreEffect::FailedClosed(_) | CoreEffect::Down => {}
                    other => return Err(format!("unexpected effect {other:?}")),
                }
            }
        }
    }

    /// The shard restarts: the writer still runs the commit it was given
    /// (before the reload: its jobs run in order), which lands every other
    /// time; what was applied since the last commit is lost.
    fn writer_finishes(&mut self) {
        self.restarts += 1;
        if let Some((changes, seqs)) = self.commit.take()
            && self.restarts.is_multiple_of(2)
        {
            self.store.commit(std::slice::from_ref(&changes)).expect("memory");
            self.durable.extend(seqs);
        }
        self.applied.clear();
    }

    fn commit(&mut self, fate: usize) -> Check {
        let Some((changes, seqs)) = self.commit.take() else { return Ok(()) };
        let result = match fate {
            0 | 2 => {
                self.store.commit(std::slice::from_ref(&changes)).expect("memory");
                self.durable.extend(seqs);
                if fate == 0 { Ok(()) } else { Err(Error::store("reply lost")) }
            }
            k if k >= 3 && self.mode.torn_commits => {
                self.store.commit(&[torn(&changes, k - 3)]).expect("memory");
                Err(Error::store("torn commit"))
            }
            _ => Err(Error::store("commit failed")),
        };
        self.core.commit_done(result);
        self.drain()
    }

    fn load(&mut self, fate: u8) -> Check {
        match self.load_at {
            Some(at) if at <= self.now => {}
            _ => return Ok(()),
        }
        self.load_at = None;
        let result = match fate {
            0 => self.store.load(ShardId(SHARD), &self.config.table),
            1 => Err(Error::store("load failed")),
            _ => Err(Error::Fenced { shard: ShardId(SHARD), cause: "owned elsewhere".into() }),
        };
        self.core.loaded(result);
        self.drain()
    }

    fn resend(&mut self, pick: usize) {
        let failed: Vec<u64> =
            self.host.log.iter().filter(|(_, b)| b.status == Status::Failed).map(|(&s, _)| s).collect();
        let others = self.host.failed.len();
        let n = failed.len() + others;
        if n == 0 {
            return;
        }
        let i = pick % n;
        if i < failed.len() {
            self.send_batch(failed[i]);
        } else {
            let r = self.host.failed.swap_remove(i - failed.len());
            self.send(r);
        }
    }

    fn host_restart(&mut self, k: usize) {
        self.live.clear();
        let unacked: Vec<u64> =
            self.host.log.iter().filter(|(_, b)| b.status != Status::Acked).map(|(&s, _)| s).collect();
        let acked: Vec<u64> =
            self.host.log.iter().filter(|(_, b)| b.status == Status::Acked).map(|(&s, _)| s).collect();
        let replay = acked[acked.len().saturating_sub(k % 4)..].to_vec();
        let mut again: Vec<u64> = replay.into_iter().chain(unacked).collect();
        again.sort_unstable();
        again.into_iter().for_each(|s| self.send_batch(s));
        for r in std::mem::take(&mut self.host.failed) {
            self.send(r);
        }
    }

    fn process_restart(&mut self) -> Check {
        self.writer_finishes();
        self.tokens.clear();
        self.load_at = None;
        self.timer = None;
        self.incarnations += 1;
        self.core = CoreDriver::new(ShardId(SHARD), &self.config, self.incarnations << 32);
        self.core.start(self.now);
        // Everything in flight fails (the mailbox is gone); the host sends
        // it again in order.
        let lost: Vec<(Id, Req)> = self.mailbox.drain(..).collect();
        for (rid, req) in lost {
            self.reply(rid, &req, Err(Error::MailboxClosed { shard: ShardId(SHARD) }), None)?;
        }
        self.host_restart(0);
        self.drain()
    }

    /// The promise, against the host's own bookkeeping.
    fn check(&self) -> Check {
        let Ok(table) = self.core.table() else { return Ok(()) };
        for n in 0..NODES {
            let node = &self.host.nodes[n as usize];
            let ghost = table.get(&id(n));
            if node.needs_ghost() {
                let Some(g) = ghost else {
                    return Err(format!(
                        "premature purge: n{n}'s ghost is gone with {} acknowledged edges",
                        node.acked_live()
                    ));
                };
                if g.refcount < node.acked_live() {
                    return Err(format!(
                        "n{n}: refcount {} below its {} acknowledged edges",
                        g.refcount,
                        node.acked_live()
                    ));
                }
                if g.epoch.get() < node.acked_epoch {
                    return Err(format!(
                        "n{n}: epoch {} behind the acknowledged {}",
                        g.epoch, node.acked_epoch
                    ));
                }
            }
            if node.reclaimed && ghost.is_some() {
                return Err(format!("n{n} was reclaimed (acknowledged) but its ghost forwards it away"));
            }
        }
        Ok(())
    }
}

/// The first `k` rows of `changes` (removals, then upserts), without the sequence number.
fn torn(changes: &ShardChanges, k: usize) -> ShardChanges {
    let c = &changes.changes;
    let removals: Vec<&str> = c.removals().take(k).collect();
    let upserts = c.upserts().take(k.saturating_sub(removals.len()));
    ShardChanges { shard: changes.shard, changes: ChangeSet::from_parts(upserts, removals, None) }
}
