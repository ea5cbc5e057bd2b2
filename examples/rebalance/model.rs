//! The simulation's ground truth: the graph, where each node lives, and the ghosts the shards must hold.
//!
//! The model mirrors the ghost semantics exactly for the messages the host
//! actually sends (including decrements it deliberately drops), so the oracle
//! can demand equality, not just plausibility.

use std::collections::{HashMap, HashSet};

/// What the host sends a shard, in the order it must arrive.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Insert { node: u32, target: u16, refcount: u32, epoch: u64 },
    Retarget { node: u32, target: u16, epoch: u64 },
    Reclaim { node: u32, epoch: u64 },
    Added(u32),
    Removed(u32),
}

/// A ghost as the table should hold it, before the final sweep repairs drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModelGhost {
    pub(crate) refcount: u32,
}

pub(crate) struct Model {
    pub(crate) home: Vec<u16>,
    pub(crate) epoch: Vec<u64>,
    pub(crate) out: Vec<Vec<u32>>,
    pub(crate) inn: Vec<Vec<u32>>,
    /// Ghosts the tables hold: (shard, node) → refcount as the table counts it.
    pub(crate) ghosts: HashMap<(u16, u32), ModelGhost>,
    /// Shards each node ever moved away from (where a ghost may exist).
    pub(crate) left: HashMap<u32, HashSet<u16>>,
    pub(crate) inserted: u64,
    pub(crate) lost_decrements: u64,
}

pub(crate) fn node_id(n: u32) -> String {
    format!("v{n:07}")
}

impl Model {
    /// A graph whose edges are mostly shard-local, as a partitioned database's are.
    pub(crate) fn generate(nodes: u32, edges: u64, shards: u16, rng: &mut fastrand::Rng) -> Self {
        let home: Vec<u16> = (0..nodes).map(|n| (n % u32::from(shards)) as u16).collect();
        let mut out = vec![Vec::new(); nodes as usize];
        let mut inn = vec![Vec::new(); nodes as usize];
        let per_shard = nodes / u32::from(shards);
        for _ in 0..edges {
            let s = rng.u32(0..nodes);
            let d = if rng.f32() < 0.8 && per_shard > 1 {
                // Same initial shard: s mod shards == d mod shards.
                (rng.u32(0..per_shard) * u32::from(shards) + s % u32::from(shards)).min(nodes - 1)
            } else {
                rng.u32(0..nodes)
            };
            if s != d {
                out[s as usize].push(d);
                inn[d as usize].push(s);
            }
        }
        Self {
            home,
            epoch: vec![0; nodes as usize],
            out,
            inn,
            ghosts: HashMap::new(),
            left: HashMap::new(),
            inserted: 0,
            lost_decrements: 0,
        }
    }

    /// Local edges of `shard` pointing at `node`: the truth a ghost's refcount tracks.
    pub(crate) fn true_count(&self, shard: u16, node: u32) -> u32 {
        self.inn[node as usize].iter().filter(|&&s| self.home[s as usize] == shard).count() as u32
    }

    /// Moves `node` to `to`, appending each shard's messages to `ops` in order.
    /// `host_retargets` decides whether the host tells older ghosts itself or
    /// leaves them to the sweeper's `Redirect`.
    pub(crate) fn move_node(&mut self, node: u32, to: u16, host_retargets: bool, ops: &mut [Vec<Op>]) {
        let from = self.home[node as usize];
        debug_assert_ne!(from, to);
        let epoch = self.epoch[node as usize] + 1;
        self.epoch[node as usize] = epoch;
        // Back on a shard that forwards it: that ghost goes at once.
        if self.ghosts.remove(&(to, node)).is_some() {
            ops[to as usize].push(Op::Reclaim { node, epoch });
        }
        // Its out-edges leave `from` with it and arrive on `to`.
        for i in 0..self.out[node as usize].len() {
            let d = self.out[node as usize][i];
            self.edge_event(from, d, false, false, ops);
            self.edge_event(to, d, true, false, ops);
        }
        self.home[node as usize] = to;
        let refcount = self.true_count(from, node);
        if refcount > 0 {
            self.ghosts.insert((from, node), ModelGhost { refcount });
            ops[from as usize].push(Op::Insert { node, target: to, refcount, epoch });
            self.inserted += 1;
        }
        self.left.entry(node).or_default().insert(from);
        if host_retargets {
            let older: Vec<u16> =
                self.left[&node].iter().copied().filter(|&s| s != from && s != to).collect();
            for s in older {
                if self.ghosts.contains_key(&(s, node)) {
                    ops[s as usize].push(Op::Retarget { node, target: to, epoch });
                }
            }
        }
    }

    /// Adds (or removes) the edge `s → d` to the graph and the messages it causes.
    pub(crate) fn churn(&mut self, s: u32, d: u32, add: bool, drop_decrement: bool, ops: &mut [Vec<Op>]) {
        let shard = self.home[s as usize];
        if add {
            self.out[s as usize].push(d);
            self.inn[d as usize].push(s);
        } else {
            let Some(i) = self.out[s as usize].iter().position(|&x| x == d) else { return };
            self.out[s as usize].swap_remove(i);
            let j = self.inn[d as usize].iter().position(|&x| x == s).expect("edge lists agree");
            self.inn[d as usize].swap_remove(j);
        }
        self.edge_event(shard, d, add, drop_decrement, ops);
    }

    /// The event `shard` gets when one of its local edges to `d` appears or
    /// goes. Only edges to remote nodes are sent: a local node has no ghost.
    fn edge_event(&mut self, shard: u16, d: u32, add: bool, drop: bool, ops: &mut [Vec<Op>]) {
        if self.home[d as usize] == shard {
            return;
        }
        let key = (shard, d);
        if add {
            if let Some(g) = self.ghosts.get_mut(&key) {
                g.refcount += 1;
            }
            ops[shard as usize].push(Op::Added(d));
        } else if drop && self.ghosts.contains_key(&key) {
            // Deliberately lost: the table keeps counting an edge that is gone.
            self.lost_decrements += 1;
        } else {
            if let Some(g) = self.ghosts.get_mut(&key) {
                g.refcount -= 1;
                if g.refcount == 0 {
                    self.ghosts.remove(&key);
                }
            }
            ops[shard as usize].push(Op::Removed(d));
        }
    }

    /// What the shards must hold once a sweep with authoritative counts ran:
    /// every tracked ghost whose true count is positive, at that count, pointing home.
    pub(crate) fn expected_after_sweep(&self) -> HashMap<(u16, u32), (u16, u32)> {
        self.ghosts
            .keys()
            .filter_map(|&(s, n)| {
                let c = self.true_count(s, n);
                (c > 0).then(|| ((s, n), (self.home[n as usize], c)))
            })
            .collect()
    }
}
