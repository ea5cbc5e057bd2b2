//! The host model: where each node lives, its edges, the edge log with its
//! sequence numbers, and what the shard acknowledged. Its own bookkeeping
//! only: it never reads the core or the store.

use std::collections::BTreeMap;
use vshard_ghosts::sweep::PlannedCheck;
use vshard_ghosts::{EdgeEvents, Verdict};

/// The shard under test; nodes move between it and the others.
pub(crate) const SHARD: u16 = 0;
/// Nodes in play.
pub(crate) const NODES: u32 = 6;

pub(crate) fn id(n: u32) -> String {
    format!("n{n}")
}

/// One local edge event of a batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ev {
    pub node: u32,
    pub add: bool,
    pub edge: u64,
    /// The node's life the event was made in.
    pub life: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum Req {
    Batch { seq: u64 },
    Added(Ev),
    Removed(Ev),
    Insert { node: u32, target: u16, refcount: u32, epoch: u64, life: u64, edges: Vec<u64> },
    Retarget { node: u32, target: u16, epoch: u64, life: u64 },
    Reclaim { node: u32, epoch: u64 },
    Flush,
    Plan { max_scan: usize },
    Apply { incarnation: u64, check: PlannedCheck, verdict: Verdict },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// In the mailbox or awaiting its answer.
    InFlight,
    Acked,
    /// Answered with an error: to be sent again.
    Failed,
}

#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub events: Vec<Ev>,
    pub status: Status,
}

impl Batch {
    pub(crate) fn adds(&self) -> bool {
        self.events.iter().any(|e| e.add)
    }

    pub(crate) fn packed(&self) -> EdgeEvents {
        let mut out = EdgeEvents::new();
        for e in &self.events {
            if e.add { out.added(&id(e.node)) } else { out.removed(&id(e.node)) }
        }
        out
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub home: bool,
    pub target: u16,
    pub epoch: u64,
    /// The current life away from the shard (0: none yet).
    pub life: u64,
    /// The life's insert was acknowledged; edge events flow from then on.
    pub life_acked: bool,
    /// The life ended: its count went to zero (a removal or an add at zero).
    pub life_over: bool,
    /// Highest move epoch of this life acknowledged (insert or retarget).
    pub acked_epoch: u64,
    /// A reclaim was acknowledged and no insert was sent since.
    pub reclaimed: bool,
    /// Each edge and the life whose acknowledgement it has.
    pub edges: BTreeMap<u64, Option<u64>>,
}

impl Node {
    /// Edges whose add (or the insert that counted them) was acknowledged in this life.
    pub(crate) fn acked_live(&self) -> u32 {
        self.edges.values().filter(|a| **a == Some(self.life)).count() as u32
    }

    /// Whether the shard must hold this node's ghost now.
    pub(crate) fn needs_ghost(&self) -> bool {
        !self.home && self.life_acked && !self.life_over && self.acked_live() > 0
    }
}

#[derive(Debug, Default)]
pub(crate) struct Host {
    pub nodes: Vec<Node>,
    pub seq: u64,
    pub log: BTreeMap<u64, Batch>,
    pub next_edge: u64,
    pub next_life: u64,
    /// Requests other than batches that failed, to send again.
    pub failed: Vec<Req>,
    /// Every count is `LocalEdges::unsequenced`: the host sends unsequenced events.
    pub unsequenced: bool,
}

impl Host {
    pub(crate) fn new(unsequenced: bool) -> Self {
        let mut h = Host { unsequenced, ..Host::default() };
        for _ in 0..NODES {
            h.nodes.push(Node { home: true, ..Node::default() });
        }
        // Some local edges to start with, counted by the first inserts.
        for n in 0..NODES {
            for _ in 0..(n % 3 + 1) {
                let e = h.edge_id();
                h.nodes[n as usize].edges.insert(e, None);
            }
        }
        h
    }

    pub(crate) fn edge_id(&mut self) -> u64 {
        self.next_edge += 1;
        self.next_edge
    }

    /// Whether edge events for `n` go to the shard now: it is away and its
    /// insert is acknowledged (a host holds a moved node's edges until then).
    pub(crate) fn flows(&self, n: u32) -> bool {
        let node = &self.nodes[n as usize];
        !node.home && node.life_acked
    }

    /// Makes an edge event for `n` (add, or removal of `pick`'s edge) and
    /// changes the truth; `None` when there is nothing to remove.
    pub(crate) fn event(&mut self, n: u32, add: bool, pick: usize, only_acked: bool) -> Option<Ev> {
        let life = self.nodes[n as usize].life;
        if add {
            let edge = self.edge_id();
            let node = &mut self.nodes[n as usize];
            if node.edges.is_empty() {
                // An add through a zero count: no longer protected.
                node.life_over = true;
            }
            node.edges.insert(edge, None);
            return Some(Ev { node: n, add, edge, life });
        }
        let node = &mut self.nodes[n as usize];
        // Unsequenced events keep no order on the shard, so the host keeps it
        // per node: no removal while an add to the node is unacknowledged
        // (the removal could reach zero before the add and purge the ghost).
        if only_acked && node.edges.values().any(|a| *a != Some(life)) {
            return None;
        }
        let ids: Vec<u64> =
            node.edges.iter().filter(|(_, a)| !only_acked || **a == Some(life)).map(|(&e, _)| e).collect();
        let &edge = ids.get(pick % ids.len().max(1))?;
        node.edges.remove(&edge);
        if node.edges.is_empty() {
            node.life_over = true;
        }
        Some(Ev { node: n, add, edge, life })
    }

    /// An add was acknowledged.
    pub(crate) fn ack_add(&mut self, e: &Ev) {
        let node = &mut self.nodes[e.node as usize];
        if node.life == e.life
            && let Some(a) = node.edges.get_mut(&e.edge)
        {
            *a = Some(e.life);
        }
    }

    pub(crate) fn new_batch(&mut self, events: Vec<Ev>) -> u64 {
        self.seq += 1;
        self.log.insert(self.seq, Batch { events, status: Status::InFlight });
        self.seq
    }

    /// The verdict the host's truth gives for `check` now.
    pub(crate) fn answer(&self, check: &PlannedCheck, inconclusive: bool) -> Verdict {
        use vshard_ghosts::{Epoch, LocalEdges, ShardId};
        if inconclusive {
            return Verdict::Inconclusive;
        }
        let n: u32 = check.node_id[1..].parse().expect("n<number>");
        let node = &self.nodes[n as usize];
        if node.epoch > check.epoch.get() {
            let at = if node.home { SHARD } else { node.target };
            return Verdict::Redirect { shard: ShardId(at), epoch: Epoch(node.epoch) };
        }
        let count = node.edges.len() as u32;
        let edges = if self.unsequenced || self.seq == 0 {
            LocalEdges::unsequenced(count)
        } else {
            LocalEdges::at(count, self.seq)
        };
        Verdict::Keep { local_edges: Some(edges) }
    }
}
