//! Edge events from the host and the outcomes of the table's mutations.

mod packed;

pub use packed::EdgeEvents;

/// Whether a local edge to a moved node appeared or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// A local edge now points at the node: refcount + 1.
    Added,
    /// A local edge to the node was deleted: refcount − 1, purge at zero.
    Removed,
}

/// One edge event, as carried in batches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeEvent {
    /// The node the edge points at.
    pub node_id: Box<str>,
    /// Added or removed.
    pub kind: EdgeKind,
}

impl EdgeEvent {
    /// An edge to `node_id` was added.
    pub fn added(node_id: impl Into<Box<str>>) -> Self {
        Self { node_id: node_id.into(), kind: EdgeKind::Added }
    }

    /// An edge to `node_id` was removed.
    pub fn removed(node_id: impl Into<Box<str>>) -> Self {
        Self { node_id: node_id.into(), kind: EdgeKind::Removed }
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertOutcome {
    /// A new ghost was created.
    Inserted,
    /// A ghost with an older epoch was replaced.
    Replaced,
    /// A ghost with the same epoch exists: the insert was a replay; nothing changed.
    Duplicate,
    /// A ghost with a newer epoch exists: the insert is stale and was ignored.
    Stale,
}

/// What a single edge event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeOutcome {
    /// The refcount changed to the given value.
    Applied {
        /// The refcount after the event.
        refcount: u32,
    },
    /// The refcount reached zero and the ghost was purged.
    Purged,
    /// The refcount is at `u32::MAX` and stays there (counted, never wraps).
    Saturated,
    /// No ghost for this node: counted as drift or a reordered message.
    UnknownNode,
}

/// What a retarget or reclaim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MoveOutcome {
    /// The ghost follows the node (retarget) or is gone (reclaim).
    Applied,
    /// The move's epoch is not newer than the ghost's: ignored.
    Stale,
    /// No ghost for this node.
    UnknownNode,
}

/// What an edge-event batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The batch's sequence number was at or below the last applied one: nothing changed.
    pub skipped: bool,
    /// Events that changed a refcount (purges included).
    pub applied: u32,
    /// Ghosts purged because their refcount reached zero.
    pub purged: u32,
    /// Events for nodes without a ghost.
    pub unknown: u32,
}

impl BatchOutcome {
    /// Counts one event's outcome.
    pub(crate) fn count(&mut self, outcome: EdgeOutcome) {
        match outcome {
            EdgeOutcome::Applied { .. } => self.applied += 1,
            EdgeOutcome::Purged => {
                self.applied += 1;
                self.purged += 1;
            }
            EdgeOutcome::UnknownNode => self.unknown += 1,
            _ => {}
        }
    }
}
