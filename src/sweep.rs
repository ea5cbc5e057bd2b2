//! The data of a sweep: planned checks, verdicts, and the reports of each step.

/// One ghost to verify, with the version it had when planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCheck {
    /// The moved node.
    pub node_id: Box<str>,
    /// Where the ghost says it lives.
    pub target_shard: u16,
    /// The ghost's move epoch.
    pub epoch: u64,
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

/// What verification of one ghost found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target holds the node. `local_edges`, when known, is the authoritative
    /// count of local edges to the node and repairs a drifted refcount; a count of
    /// zero holds the ghost for the grace period (an edge may be in flight), after
    /// which a plan purges it.
    Keep {
        /// Authoritative local edge count, if the verifier knows it.
        local_edges: Option<u32>,
    },
    /// No local edge needs the node and the target does not hold it.
    Purge,
    /// The node moved on: the ghost follows it, it is never purged for this.
    Redirect {
        /// The shard that now holds the node.
        shard: u16,
        /// The epoch of that move.
        epoch: u64,
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
}
