//! Every actor message, grouped by the actor that handles it, each with its reply type.
//!
//! Hosts send the `GhostActor`'s host messages through
//! [`GhostRuntime`](crate::GhostRuntime) or to an `Addr<GhostActor>` from
//! [`GhostRuntime::addr`](crate::GhostRuntime::addr). The sweep's messages and
//! the `SweeperActor`'s are the crate's own: a forged verdict could purge a
//! ghost that edges still need.
//!
//! Which send to use: `addr.send(msg).await` for the host's event flow — it
//! waits while the mailbox is full, which is the backpressure a database wants;
//! `addr.try_send(msg)` to shed load instead (fails at once when full);
//! never `do_send` for volume, since it bypasses the mailbox bound.

use crate::error::Result;
use crate::event::EdgeEvents;
use crate::event::{BatchOutcome, EdgeOutcome, InsertOutcome, MoveOutcome};
use crate::ids::{Epoch, ShardId};
use crate::stub::{GhostInfo, StubRecord};
use crate::sweep::{ApplyReport, CheckedVerdict, PassReport, SweepPage, SweepTotals};
use crate::table::{GhostPage, TableStats};
use actix::Message;

/// The node moved from this shard to `target` at move `epoch`; `refcount` local
/// edges point at it. Acknowledged once durable (group commit).
///
/// `refcount` is the count after every edge event already sent to this shard
/// for the node, so send the insert once every earlier edge event for the node
/// (in a batch or single) is acknowledged, or given up for good: one sent
/// again after the insert would count twice, and a removal counted twice
/// purges early. (Earlier versions did not say so; a host that moved a node
/// while such an event was still to be resent must now wait for it.)
/// An insert sent again after a failure carries the node's newest target and
/// epoch (a [`Retarget`] answered [`MoveOutcome::UnknownNode`] meanwhile found
/// no ghost to move).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<InsertOutcome>")]
pub struct InsertGhost {
    /// The moved node.
    pub node_id: Box<str>,
    /// Its new shard.
    pub target: ShardId,
    /// Local edges pointing at it.
    pub refcount: u32,
    /// The host's move epoch.
    pub epoch: Epoch,
}

/// A local edge to `node_id` was added. Acknowledged once durable.
///
/// Unsequenced events keep no order on the shard: while an add to a node is
/// not acknowledged (in flight, or failed and to be sent again), send no
/// removal of an edge to the same node, or the removal may reach zero first
/// and purge the ghost (an add applied and then lost with a failed flush is
/// undone by the reload, so the removal sent behind it may find it gone).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<EdgeOutcome>")]
pub struct EdgeAdded {
    /// The node the edge points at.
    pub node_id: Box<str>,
}

/// A local edge to `node_id` was removed. Acknowledged at once (a lost removal
/// only leaves a ghost for the sweeper).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<EdgeOutcome>")]
pub struct EdgeRemoved {
    /// The node the edge pointed at.
    pub node_id: Box<str>,
}

/// A batch of edge events, applied once per sequence number. Under group commit,
/// acknowledged once durable if it adds any edge or has a sequence number
/// (see [`ShardConfig::ack_removal_batches_at_once`](crate::ShardConfig::ack_removal_batches_at_once)).
///
/// A sequenced batch that failed for any reason (an error, a panic, a closed
/// mailbox, the shard's process restarting) is sent again before the batches
/// after it. The shard remembers every sequenced batch it refused or lost and
/// answers a later one that arrives first with the retryable
/// [`Error::SeqGap`](crate::error::Error::SeqGap) until it is applied; across
/// a restart of the shard's process it cannot remember, so the host resends
/// its unacknowledged batches in order. A host that gives up on a batch (its
/// graph write rolled back) sends an empty batch with the same sequence
/// number instead, or every later batch waits for it. An unsequenced batch
/// with removals is not sent again after an unclear failure: its removals
/// could count twice (a lost removal only leaves a ghost for the sweeper).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BatchOutcome>")]
pub struct EdgeBatch {
    /// The host's log sequence number; a batch at or below the last applied one is skipped.
    pub seq: Option<u64>,
    /// The events, in order.
    pub events: EdgeEvents,
}

/// The node moved on from its target to `target` at `epoch`. Acknowledged once durable.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<MoveOutcome>")]
pub struct Retarget {
    /// The node.
    pub node_id: Box<str>,
    /// Its new shard.
    pub target: ShardId,
    /// The move epoch.
    pub epoch: Epoch,
}

/// The node moved back to this shard at `epoch`: drop its ghost. Acknowledged
/// once durable, since a lingering ghost would forward a local node away.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<MoveOutcome>")]
pub struct Reclaim {
    /// The node.
    pub node_id: Box<str>,
    /// The move epoch.
    pub epoch: Epoch,
}

/// Many [`InsertGhost`]s on one shard: applied in order, made durable by one
/// commit, acknowledged once it lands, with one outcome per ghost (an invalid
/// one fails alone; the others apply).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Result<InsertOutcome>>>")]
pub struct InsertGhosts {
    /// The ghosts, in the order they apply.
    pub ghosts: Vec<InsertGhost>,
}

/// Many [`Retarget`]s on one shard: one commit, one outcome per move.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Result<MoveOutcome>>>")]
pub struct Retargets {
    /// The moves, in the order they apply.
    pub moves: Vec<Retarget>,
}

/// Many [`Reclaim`]s on one shard: one commit, one outcome per node.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Result<MoveOutcome>>>")]
pub struct Reclaims {
    /// The nodes that came back, in the order they apply.
    pub nodes: Vec<Reclaim>,
}

/// Where to forward a traversal that reached `node_id` (`None`: not a ghost here).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<ShardId>>")]
pub struct Resolve {
    /// The node.
    pub node_id: Box<str>,
}

/// [`Resolve`] for a whole traversal frontier, answered in input order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<Option<ShardId>>>")]
pub struct ResolveMany {
    /// The nodes.
    pub node_ids: Vec<Box<str>>,
}

/// The live view of one ghost.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<GhostInfo>>")]
pub struct Inspect {
    /// The node.
    pub node_id: Box<str>,
}

/// One page of the shard's ghosts in node-id order: those after `after`, at
/// most `limit` ([`GhostTable::export_page`](crate::table::GhostTable::export_page)).
/// Each page is one bounded request, so the shard serves others between pages.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<GhostPage>")]
pub struct ExportPage {
    /// Exclusive start: the previous page's `next` (`None`: from the first ghost).
    pub after: Option<Box<str>>,
    /// Most ghosts in the page.
    pub limit: usize,
}

/// Every ghost of the shard as records (O(table): for checks and handoffs).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<StubRecord>>")]
pub struct ExportRecords;

/// Plan step of a sweep: a bounded page of due ghosts.
///
/// Only the crate's sweeper makes these: a plan moves the pass cursor and
/// purges due zero-count ghosts. With the cargo feature `testing`,
/// `PlanSweep::new` lets tests drive the steps by hand.
///
/// ```compile_fail
/// // A host cannot make a plan (and so cannot move the sweep cursor):
/// let plan = vshard_ghosts::messages::PlanSweep { max_scan: 1, by_hand: false };
/// ```
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<PlanReply>")]
pub struct PlanSweep {
    /// Most stubs to examine.
    pub(crate) max_scan: usize,
    /// Made by hand (`new`), not by the sweeper: refused unless the shard's
    /// `fault_injection` is on, since cargo features merge across a build.
    pub(crate) by_hand: bool,
}

#[cfg(feature = "testing")]
impl PlanSweep {
    /// A plan of at most `max_scan` stubs (cargo feature `testing`); a shard
    /// refuses it unless [`ShardConfig::fault_injection`](crate::ShardConfig::fault_injection) is on.
    pub fn new(max_scan: usize) -> Self {
        Self { max_scan, by_hand: true }
    }
}

/// A planned page, stamped with the shard's incarnation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanReply {
    /// The shard.
    pub shard: ShardId,
    /// Changes on every (re)start; verdicts for another incarnation are stale.
    pub incarnation: u64,
    /// The page.
    pub page: SweepPage,
    /// Acknowledgements waiting for a commit: the shard's write backlog.
    pub pending_acks: usize,
    /// Commits and loads of every shard queued at the store writer, not yet
    /// taken up: the process's write backlog, which one shard's probe sees.
    pub writer_queue: usize,
}

/// Apply step of a sweep: verdicts by compare-and-set.
///
/// Not constructible outside the crate (a forged `Purge` would remove a ghost
/// that edges still need); the sweeper sends them with verdicts from the
/// host's [`Verifier`](crate::Verifier). With the cargo feature `testing`,
/// `ApplyVerdicts::new` lets tests play verdicts by hand.
///
/// ```compile_fail
/// // A host cannot forge a verdict:
/// let forged = vshard_ghosts::messages::ApplyVerdicts { incarnation: 0, verdicts: Vec::new(), by_hand: false };
/// ```
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ApplyReport>")]
pub struct ApplyVerdicts {
    /// The incarnation of the [`PlanReply`] the verdicts answer.
    pub(crate) incarnation: u64,
    /// The verdicts.
    pub(crate) verdicts: Vec<CheckedVerdict>,
    /// Made by hand (`new`): refused unless the shard's `fault_injection` is on.
    pub(crate) by_hand: bool,
}

#[cfg(feature = "testing")]
impl ApplyVerdicts {
    /// Verdicts for the plan of `incarnation` (cargo feature `testing`); a
    /// shard refuses them unless [`ShardConfig::fault_injection`](crate::ShardConfig::fault_injection) is on.
    pub fn new(incarnation: u64, verdicts: Vec<CheckedVerdict>) -> Self {
        Self { incarnation, verdicts, by_hand: true }
    }
}

/// Counters and state of the shard.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ShardStats")]
pub struct GetStats;

/// Whether a shard serves requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShardState {
    /// Loading its state; requests wait.
    #[default]
    Loading,
    /// Serving.
    Ready,
    /// Stored state unreadable, or the shard fenced (its ownership lapsed or
    /// was lost): every request fails with the cause.
    FailedClosed(String),
    /// Restarted too often; stays down.
    Down,
}

/// What [`GetStats`] answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// The shard's state.
    pub state: ShardState,
    /// Table statistics (zeroed unless ready).
    pub table: TableStats,
    /// Restarts so far.
    pub restarts: u64,
    /// Flushes completed.
    pub flushes: u64,
    /// Flushes that failed (the shard then restarts and reloads).
    pub flush_failures: u64,
    /// Acknowledgements waiting for a commit.
    pub pending_acks: usize,
    /// Verdicts dropped because they answered an earlier incarnation.
    pub stale_incarnation_verdicts: u64,
}

/// Operator: brings a shard that failed closed or went down back, by the same
/// fail-closed load as a restart (after the operator repaired the store). A
/// shard that serves is left as it is. Answered once the reload is under way;
/// the shard's next answer comes after it.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<()>")]
pub struct Revive;

/// Resolves once everything applied so far is durable.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<()>")]
pub struct Flush;

/// Chaos hook: panics inside the handler, exercising the catch, stop, restart
/// and reload path exactly as a real bug would. For fault-injection tests and
/// simulations: refused unless [`ShardConfig::fault_injection`](crate::ShardConfig::fault_injection) is on.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<()>")]
pub struct InjectPanic;

/// Chaos hook: takes an edge batch's path with `events` and panics part way,
/// so a test can watch readers while a batch dies half done (they must see
/// the shard as it was, or an error, never the half). The shard reloads from
/// the store as after any panic. Refused unless
/// [`ShardConfig::fault_injection`](crate::ShardConfig::fault_injection) is on.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<()>")]
pub struct InjectBatchPanic {
    /// The batch.
    pub events: crate::EdgeEvents,
    /// Where it panics.
    pub at: BatchPanicAt,
}

/// Where [`InjectBatchPanic`] panics.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPanicAt {
    /// In the read-only first step, while readers share the lock.
    Warm,
    /// Under the write lock, after applying the first `n` events of the batch.
    After(usize),
}

// ---- SweeperActor: the runtime's operator calls (crate-only; see `GhostRuntime`) ----

/// Runs one full pass over every shard now and answers its report when it
/// ends. A request made while a pass runs is served by the next pass, so its
/// report covers every shard. While paused, the pass waits for `Resume`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "PassReport")]
pub(crate) struct RunPass;

/// Stops taking tokens and starting passes; a running pass waits at its next step.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Pause;

/// Undoes [`Pause`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub(crate) struct Resume;

/// Changes the token bucket at run time (the new bucket starts full).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct SetRate {
    /// Verifies per second; at least 1.
    pub(crate) per_second: u32,
    /// Bucket size; at least 1.
    pub(crate) burst: u32,
}

/// The running totals, with the sweeper's state.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "SweepTotals")]
pub(crate) struct GetSweepStats;

/// Stops the sweeper gracefully: no new token is taken, verifies in flight
/// finish or time out (within the verify timeout), the verdicts gathered are
/// applied, then the actor stops. Answers the final totals.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "SweepTotals")]
pub(crate) struct StopSweeper;
