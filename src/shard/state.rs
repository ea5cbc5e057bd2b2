//! Where a shard is in its life, and the error a request gets while it has no table.

use crate::error::Error;
use crate::ids::ShardId;
use crate::table::GhostTable;

/// Where a shard is in its life.
pub(crate) enum State {
    Loading,
    // Boxed: the table is large and the other states are tiny.
    Ready(Box<GhostTable>),
    Failed(Box<Error>),
    /// The store's claim on the shard lapsed or was lost: another process may
    /// own it, so the table is gone and nothing more is written.
    Fenced(String),
    /// Restarted more often than the policy allows, `restarts` times in its window.
    Down {
        restarts: u32,
    },
    /// The actor is gone for good (its runtime shut down).
    Closed,
}

/// The error for a shard without a table.
pub(crate) fn unavailable(state: &State, shard: ShardId) -> Error {
    match state {
        State::Failed(cause) => Error::ShardFailed { shard, cause: cause.clone() },
        State::Fenced(cause) => Error::Fenced { shard, cause: cause.clone() },
        State::Down { restarts } => Error::ShardDown { shard, restarts: *restarts },
        State::Loading | State::Ready(_) => Error::ShardLoading { shard },
        State::Closed => Error::MailboxClosed { shard },
    }
}
