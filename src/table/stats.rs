//! Cumulative counters and the point-in-time statistics of one table.

use crate::ids::ShardId;
use crate::stub::PurgeReason;

/// Counters that only grow over a table's life (reset when a shard reloads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounters {
    /// Ghosts inserted (replacements included).
    pub inserted: u64,
    /// Purges because a refcount reached zero.
    pub purged_refcount_zero: u64,
    /// Purges after the sweeper verified the target no longer holds the node.
    pub purged_verified: u64,
    /// Ghosts dropped because their node moved back here.
    pub purged_reclaimed: u64,
    /// Refcounts repaired from an authoritative count.
    pub refcount_corrections: u64,
    /// Verdicts dropped because their stub changed since planning.
    pub stale_verdicts: u64,
    /// `Keep` verdicts applied.
    pub kept: u64,
    /// Ghosts retargeted (by a move or a `Redirect` verdict).
    pub redirected: u64,
    /// `Inconclusive` verdicts (each schedules a back-off).
    pub inconclusive: u64,
    /// Edge events handled (unknown nodes and replays within a batch included).
    pub edge_events: u64,
    /// Edge events for nodes with no ghost: drift or reordering upstream.
    pub unknown_edge_events: u64,
    /// Inserts, retargets and reclaims ignored for an old epoch, and replayed inserts.
    pub stale_moves: u64,
    /// Edge-added events that found the refcount at `u32::MAX`.
    pub saturated: u64,
    /// Edge-event batches skipped as already applied.
    pub skipped_batches: u64,
    /// Events of a replayed batch skipped because their ghost's stored row
    /// already held that batch (a store landed part of a commit).
    pub replayed_events_skipped: u64,
    /// Lower `Keep` counts not applied because the shard was not at their log position.
    pub stale_counts: u64,
    /// Inserts refused because a tombstone remembers a removal at that epoch or later.
    pub tombstoned_inserts: u64,
}

impl TableCounters {
    pub(crate) fn count_purge(&mut self, reason: PurgeReason) {
        match reason {
            PurgeReason::RefcountZero => self.purged_refcount_zero += 1,
            PurgeReason::Verified => self.purged_verified += 1,
            PurgeReason::Reclaimed => self.purged_reclaimed += 1,
        }
    }

    /// All purges, whatever the reason.
    pub fn purged_total(&self) -> u64 {
        self.purged_refcount_zero + self.purged_verified + self.purged_reclaimed
    }
}

/// A point-in-time view of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// The shard the table belongs to.
    pub shard: ShardId,
    /// Ghosts held now.
    pub ghosts: u64,
    /// Age of the oldest ghost, in ms (`None` when empty).
    pub oldest_age_ms: Option<u64>,
    /// Removed ghosts remembered to refuse stale inserts.
    pub tombstones: u64,
    /// Sequence number of the last applied edge-event batch.
    pub applied_seq: Option<u64>,
    /// Cumulative counters.
    pub counters: TableCounters,
}
