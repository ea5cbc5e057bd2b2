//! The public shapes of a ghost stub: its persisted record and its live view.

use crate::ids::{Epoch, ShardId};

/// A ghost stub as persisted: everything needed to rebuild it after a restart.
///
/// Versions and back-off state are not persisted: they only order in-flight
/// sweeps, and a restarted shard starts a new incarnation. A zero-count hold is
/// persisted (`hold_until_ms`), since losing it would let a plan purge a ghost
/// that an edge still in flight needs.
///
/// A row may also be a *tombstone* (`tombstone: true`): the memory of a ghost
/// that was reclaimed or purged, kept until `hold_until_ms` so that a stale
/// insert carrying an epoch at or below `epoch` cannot make the ghost again.
/// Tombstones are rows of the store like ghosts, but never ghosts of the table:
/// [`GhostTable::records`](crate::table::GhostTable::records) leaves them out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StubRecord {
    /// The moved node.
    pub node_id: String,
    /// The shard that now holds the node.
    pub target_shard: u16,
    /// Local edges that still point at the node.
    pub refcount: u32,
    /// When the ghost was created, in ms on the host's clock.
    pub created_at_ms: u64,
    /// The host's move epoch of the move that made or last retargeted the ghost
    /// (for a tombstone: the epoch at which the ghost was removed).
    pub epoch: u64,
    /// A refcount-zero ghost is not purged before this time, in ms on the host's
    /// clock (0: no hold); a tombstone is forgotten at this time.
    pub hold_until_ms: u64,
    /// This row remembers a removed ghost; see the type's docs.
    pub tombstone: bool,
    /// The shard's applied batch sequence number when the row was written:
    /// the row holds the effect of every sequenced batch up to it (0: not
    /// known). A store whose commit can land in part keeps it with the row;
    /// a load then skips, for this row, the events of the batches a retry
    /// sends again up to it. A store whose commits are all-or-nothing may
    /// leave it 0.
    pub seq: u64,
}

/// A ghost stub as persisted, borrowing its id: what a [`ChangeSet`](crate::table::ChangeSet) yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StubRef<'a> {
    /// The moved node.
    pub node_id: &'a str,
    /// The shard that now holds the node.
    pub target_shard: u16,
    /// Local edges that still point at the node.
    pub refcount: u32,
    /// When the ghost was created, in ms on the host's clock.
    pub created_at_ms: u64,
    /// The host's move epoch of the move that made or last retargeted the ghost
    /// (for a tombstone: the epoch at which the ghost was removed).
    pub epoch: u64,
    /// A refcount-zero ghost is not purged before this time, in ms (0: no hold);
    /// a tombstone is forgotten at this time.
    pub hold_until_ms: u64,
    /// This row remembers a removed ghost; see [`StubRecord`].
    pub tombstone: bool,
    /// The applied batch sequence number the row holds; see [`StubRecord::seq`].
    pub seq: u64,
}

impl StubRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> StubRecord {
        StubRecord {
            node_id: self.node_id.to_owned(),
            target_shard: self.target_shard,
            refcount: self.refcount,
            created_at_ms: self.created_at_ms,
            epoch: self.epoch,
            hold_until_ms: self.hold_until_ms,
            tombstone: self.tombstone,
            seq: self.seq,
        }
    }
}

impl<'a> From<&'a StubRecord> for StubRef<'a> {
    fn from(r: &'a StubRecord) -> Self {
        Self {
            node_id: &r.node_id,
            target_shard: r.target_shard,
            refcount: r.refcount,
            created_at_ms: r.created_at_ms,
            epoch: r.epoch,
            hold_until_ms: r.hold_until_ms,
            tombstone: r.tombstone,
            seq: r.seq,
        }
    }
}

/// A live stub as seen in the table, with its compare-and-set version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GhostInfo {
    /// The shard that now holds the node.
    pub target_shard: ShardId,
    /// Local edges that still point at the node.
    pub refcount: u32,
    /// When the ghost was created, in ms.
    pub created_at_ms: u64,
    /// The move epoch the ghost reflects.
    pub epoch: Epoch,
    /// Changes on every mutation of this stub; verdicts carry it for compare-and-set.
    pub version: u64,
    /// The sweeper leaves the ghost alone until then, in ms: a zero-count hold
    /// or an `Inconclusive` back-off (0: due as soon as its grace period ends).
    pub not_before_ms: u64,
}

/// Why a ghost left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub(crate) enum PurgeReason {
    /// Its refcount reached zero (edge removed, or a repaired count of zero).
    RefcountZero,
    /// The sweeper verified that the target no longer holds the node.
    Verified,
    /// The node moved back to this shard.
    Reclaimed,
}
