//! Planned checks, verdicts, and what applying them reports.

use crate::ids::{Epoch, ShardId};

/// One ghost to verify, with the version it had when planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCheck {
    /// The moved node.
    pub node_id: Box<str>,
    /// Where the ghost says it lives.
    pub target_shard: ShardId,
    /// The ghost's move epoch.
    pub epoch: Epoch,
    /// The stub's version at plan time; the verdict is applied only if it still matches.
    pub version: u64,
}

/// A bounded page of sweep work: the plan step's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepPage {
    /// Due ghosts to verify remotely.
    pub checks: Vec<PlannedCheck>,
    /// Refcount-zero ghosts purged during planning, without a remote call.
    pub purged_zero: u32,
    /// Stubs examined (due or not); never more than the page size asked for.
    pub scanned: u32,
    /// This page ended a full pass over the table; the next page starts a new one.
    pub pass_complete: bool,
}

/// The holding shard's local edges to a node, counted by the host, and the
/// position of the shard's edge log at which they were counted.
///
/// *Whose count:* the edges of the shard that holds the ghost (the shard the
/// node moved away from) that point at the node, not the target's edges.
///
/// *When it applies:* a count above the ghost's refcount always applies
/// (a ghost that lingers is safe). A count below it applies only if the shard
/// has applied exactly `at_seq` of the host's edge log for that shard, and no
/// unsequenced edge event since: a removal still on its way to the shard is in
/// the count already and would otherwise be counted twice. Otherwise the
/// verdict is a stale count ([`ApplyReport::stale_counts`]) and the ghost is
/// verified again on a later pass.
///
/// *How a host takes it:* read the count and the sequence number of the last
/// batch it has sent to that shard in one step (under the lock that orders its
/// log), so that no edge event falls between the two. A host that sends edge
/// events without sequence numbers has no position to give: its counts are
/// [`unsequenced`](Self::unsequenced) and only ever raise refcounts; a
/// refcount that drifted upwards then lingers until a count with a position
/// repairs it, which costs memory, never a traversal. The same holds for a host
/// that sends a shard *any* unsequenced edge event (`EdgeAdded`, `EdgeRemoved`,
/// a batch without a sequence number): such an event still on its way when the
/// host counts is in no log position, and the shard cannot see it coming, so
/// count that shard's edges with [`unsequenced`](Self::unsequenced) too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalEdges {
    /// The holding shard's local edges to the node.
    pub count: u32,
    /// The sequence number of the last edge batch sent to the holding shard
    /// when the count was taken (`None`: no position, see the type's docs).
    pub at_seq: Option<u64>,
}

impl LocalEdges {
    /// `count` edges, counted right after the host sent batch `seq` to the shard.
    pub fn at(count: u32, seq: u64) -> Self {
        Self { count, at_seq: Some(seq) }
    }

    /// `count` edges at no log position: it can raise a refcount, never lower it.
    pub fn unsequenced(count: u32) -> Self {
        Self { count, at_seq: None }
    }
}

/// What verification of one ghost found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target holds the node. `local_edges`, when known, repairs a drifted
    /// refcount under the rules of [`LocalEdges`]. A count of zero that applies
    /// holds the ghost for a grace period from the moment it applies (an edge
    /// the host adds after counting may still be on its way); the hold is
    /// persisted and survives retargets, restarts and reloads. A plan purges the
    /// ghost after it.
    Keep {
        /// The holding shard's authoritative local edge count, if the verifier knows it.
        local_edges: Option<LocalEdges>,
    },
    /// No local edge needs the node and the target does not hold it.
    Purge,
    /// The node moved on: the ghost follows it, it is never purged for this.
    Redirect {
        /// The shard that now holds the node.
        shard: ShardId,
        /// The epoch of that move.
        epoch: Epoch,
    },
    /// The target could not be asked: retry later with back-off.
    Inconclusive,
}

/// A verdict addressed to the stub version it was planned on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedVerdict {
    /// The node verified.
    pub node_id: Box<str>,
    /// The version from the [`PlannedCheck`].
    pub version: u64,
    /// What verification found.
    pub verdict: Verdict,
}

impl CheckedVerdict {
    /// Addresses `verdict` to the stub version of `check`.
    pub fn new(check: &PlannedCheck, verdict: Verdict) -> Self {
        Self { node_id: check.node_id.clone(), version: check.version, verdict }
    }
}

/// The apply step's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// `Keep` verdicts applied (corrections included).
    pub kept: u32,
    /// Refcounts repaired from an authoritative count.
    pub corrected: u32,
    /// Ghosts purged on a `Purge` verdict. A count repaired to zero is a
    /// correction; the ghost goes at a later plan, after the grace period.
    pub purged: u32,
    /// Ghosts retargeted to follow a node that moved on.
    pub redirected: u32,
    /// Ghosts dropped because the node is back on this shard.
    pub reclaimed: u32,
    /// Ghosts put into back-off.
    pub inconclusive: u32,
    /// Verdicts dropped because their stub changed or left since planning.
    pub stale: u32,
    /// `Keep` counts below the refcount not applied because the shard was not
    /// at the count's log position ([`LocalEdges`]); the ghost is kept as it is.
    pub stale_counts: u32,
}
