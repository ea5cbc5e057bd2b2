//! What the shard core asks its host to do: the outputs of a step, drained
//! like raft-rs's `ready()`.

use crate::error::{Error, Result};
use crate::table::ShardChanges;
use std::time::Duration;

/// Names a request whose answer waits for a commit. The core hands one out
/// per waiting request; the host keeps whatever answers it (a channel) under
/// the token, and the core says when and how to answer it.
pub(crate) type Token = u64;

/// One thing the host must carry out for the core, in the order given.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Commit these changes on the store, then tell the core what the store
    /// answered ([`ShardCore::commit_done`](super::ShardCore::commit_done)).
    /// At most one is outstanding at a time: commits stay in order.
    Commit(ShardChanges),
    /// Answer the request `token` waited for.
    Ack {
        /// The request.
        token: Token,
        /// Its answer.
        result: Result<()>,
    },
    /// Call [`ShardCore::flush_due`](super::ShardCore::flush_due) after this
    /// long (interval durability).
    FlushAfter(Duration),
    /// Load the table from the store once the clock reads `at_ms` or later,
    /// then hand the result to [`ShardCore::loaded`](super::ShardCore::loaded).
    Load {
        /// The earliest time to load at: the restart back-off.
        at_ms: u64,
    },
    /// Stop the shard so that it restarts; then call
    /// [`ShardCore::restarting`](super::ShardCore::restarting).
    Restart(Restart),
    /// The shard fenced itself: it answers and writes nothing more.
    Fenced(String),
    /// The stored state could not be read: the shard fails closed.
    FailedClosed(Box<Error>),
    /// The restart budget is spent: the shard stays down.
    Down,
}

/// Why the core asks for a restart.
#[derive(Debug)]
pub(crate) enum Restart {
    /// A commit failed: the table is ahead of the store.
    FlushFailed(Error),
    /// The load failed in a way that may pass.
    LoadFailed(Error),
    /// A step panicked (`injected`: the fault injection's own panic).
    Panicked {
        /// A drill's panic, not a bug.
        injected: bool,
    },
    /// An operator revives the shard.
    Revive,
}
