//! `GhostReader`: resolves ghosts from any thread or task without a message to the shard.

use crate::actors::Shards;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::shard::{READ_CHUNK, ShardCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Resolves ghosts from any thread or task without sending the shard's actor
/// a message: it reads the table the actor keeps, which stays its only writer.
///
/// Get one from [`GhostRuntime::reader`](crate::GhostRuntime::reader); clones
/// are cheap (two reference counts) and share everything.
///
/// # What a reader answers
///
/// * The same as [`GhostRuntime::resolve`](crate::GhostRuntime::resolve) would
///   at that moment, or an error: a shard that is loading (or reloading after
///   a restart) is [`Error::ShardLoading`]; one that failed closed
///   [`Error::ShardFailed`]; down after too many restarts [`Error::ShardDown`];
///   whose ownership lapsed or was lost [`Error::Fenced`] (at once, before the
///   actor has noticed); whose actor is gone for good, as its address would
///   say, [`Error::MailboxClosed`]; any shard once the runtime is shut down,
///   [`Error::Closed`]; and one the runtime does not serve
///   [`Error::UnknownShard`]. Never `None` for want of a table.
/// * Every write acknowledged before a resolve starts, on any thread.
/// * Each message (a whole batch, say) applied entirely or not at all: the
///   actor holds the shard's lock for writing over all of its changes.
///
/// A resolve holds the shard's read lock for one lookup; `resolve_many` for at
/// most 64 lookups at a time, so the shard's writes are never held up for long,
/// and answers within one such chunk come from one state of the shard. Store
/// commits happen outside the lock: a reader never waits for a flush. While a
/// batch is being applied (about 0.1 ms for 1024 events on a large table) a
/// resolve yields its thread and tries again, and parks only after about that
/// long: from an async task it blocks its worker thread no longer than a
/// write takes.
#[derive(Clone)]
pub struct GhostReader {
    /// The runtime's shards.
    shards: Shards,
    /// The runtime's: set once it is shut down (its actors may outlive that
    /// on the calling arbiter, `arbiters = 0`).
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for GhostReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhostReader").field("shards", &self.shards.len()).finish()
    }
}

impl GhostReader {
    pub(crate) fn new(shards: Shards, closed: Arc<AtomicBool>) -> Self {
        Self { shards, closed }
    }

    fn cell(&self, shard: ShardId) -> Result<&ShardCell> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(&self.shards.get(shard)?.cell)
    }

    /// Where `node_id`, if it is a ghost on `shard`, lives now; an error while
    /// the shard has no table to answer from.
    pub fn resolve(&self, shard: impl Into<ShardId>, node_id: &str) -> Result<Option<ShardId>> {
        let cell = self.cell(shard.into())?;
        let view = cell.read();
        Ok(view.table()?.resolve(node_id).map(ShardId))
    }

    /// Resolves a traversal frontier of `(shard, node)` pairs, answers in
    /// input order. Any shard without a table fails the whole call with its
    /// error (the lowest such shard's).
    pub fn resolve_many(&self, frontier: &[(ShardId, &str)]) -> Result<Vec<Option<ShardId>>> {
        let mut out = vec![None; frontier.len()];
        let Some(&(first, _)) = frontier.first() else {
            return Ok(out);
        };
        if frontier.iter().all(|(s, _)| *s == first) {
            // The common case, a frontier on one shard: no grouping needed.
            let cell = self.cell(first)?;
            for (chunk, answers) in frontier.chunks(READ_CHUNK).zip(out.chunks_mut(READ_CHUNK)) {
                let view = cell.read();
                let table = view.table()?;
                for ((_, node), a) in chunk.iter().zip(answers) {
                    *a = table.resolve(node).map(ShardId);
                }
            }
            return Ok(out);
        }
        // Grouped by shard, so that each chunk takes one shard's lock once.
        let mut order: Vec<usize> = (0..frontier.len()).collect();
        order.sort_unstable_by_key(|&i| (frontier[i].0, i));
        for group in order.chunk_by(|&a, &b| frontier[a].0 == frontier[b].0) {
            let cell = self.cell(frontier[group[0]].0)?;
            for chunk in group.chunks(READ_CHUNK) {
                let view = cell.read();
                let table = view.table()?;
                for &i in chunk {
                    out[i] = table.resolve(frontier[i].1).map(ShardId);
                }
            }
        }
        Ok(out)
    }

    /// Every shard id it reads, ascending.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.shards.ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_and_cheap_to_clone() {
        fn send_sync<T: Send + Sync + Clone + 'static>() {}
        send_sync::<GhostReader>();
        // The shards (a pointer and a length) and the runtime's closed flag:
        // a clone is two reference counts.
        assert_eq!(std::mem::size_of::<GhostReader>(), 3 * std::mem::size_of::<usize>());
    }
}
