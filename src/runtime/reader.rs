//! `GhostReader`: resolves ghosts from any thread or task without a message to the shard.

use crate::actors::Shards;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::shard::{CHUNKED_TRIES, READ_CHUNK, ShardCell};
use crate::stub::GhostInfo;
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
/// most 64 lookups at a time, so the shard's writes are never held up for long.
/// Its answers for one shard come from one state of it all the same: the
/// shard counts its writes, and a read that sees the count move between its
/// chunks starts over; after three such tries it takes the read lock once for
/// all of that shard's part of the frontier, holding the shard's writes up
/// for that long, that once. Store
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
    pub fn resolve(&self, shard: ShardId, node_id: &str) -> Result<Option<ShardId>> {
        let cell = self.cell(shard)?;
        let view = cell.read();
        Ok(view.table()?.resolve(node_id))
    }

    /// Resolves a traversal frontier of `(shard, node)` pairs, answers in
    /// input order, each shard's from one state of it (never half a batch),
    /// whatever the frontier's size. Any shard without a table fails the whole
    /// call with its error (the lowest such shard's).
    pub fn resolve_many(&self, frontier: &[(ShardId, &str)]) -> Result<Vec<Option<ShardId>>> {
        let mut out = vec![None; frontier.len()];
        let Some(&(first, _)) = frontier.first() else {
            return Ok(out);
        };
        if frontier.iter().all(|(s, _)| *s == first) {
            // The common case, a frontier on one shard: no grouping needed.
            let cell = self.cell(first)?;
            resolve_whole(cell, frontier.len(), |j| frontier[j].1, |j, a| out[j] = a)?;
            return Ok(out);
        }
        // Grouped by shard, so that each chunk takes one shard's lock once.
        let mut order: Vec<usize> = (0..frontier.len()).collect();
        order.sort_unstable_by_key(|&i| (frontier[i].0, i));
        for group in order.chunk_by(|&a, &b| frontier[a].0 == frontier[b].0) {
            let cell = self.cell(frontier[group[0]].0)?;
            resolve_whole(cell, group.len(), |j| frontier[group[j]].1, |j, a| out[group[j]] = a)?;
        }
        Ok(out)
    }

    /// The ghost of `node_id` on `shard` (target, refcount, epoch, version),
    /// or `None` when the node is no ghost there; the same rules as
    /// [`resolve`](Self::resolve): an error while the shard has no table.
    pub fn ghost(&self, shard: ShardId, node_id: &str) -> Result<Option<GhostInfo>> {
        let cell = self.cell(shard)?;
        let view = cell.read();
        Ok(view.table()?.get(node_id))
    }

    /// `Ok` when `shard` has a table to answer from, else the error a read would get.
    pub(crate) fn serving(&self, shard: ShardId) -> Result<()> {
        let cell = self.cell(shard)?;
        let view = cell.read();
        view.table().map(|_| ())
    }

    /// Every shard id it reads, ascending.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.shards.ids()
    }
}

/// Resolves `len` ids of one shard (the `j`th is `id(j)`, its answer goes to
/// `answer(j, ..)`) from one state of it. Up to [`READ_CHUNK`] ids under one
/// read lock; more chunk by chunk, so that the shard's writes are not held up
/// behind them, and over again if the shard's write count moved in between;
/// after [`CHUNKED_TRIES`] such tries, all of them under one read lock.
fn resolve_whole<'f>(
    cell: &ShardCell,
    len: usize,
    id: impl Fn(usize) -> &'f str,
    mut answer: impl FnMut(usize, Option<ShardId>),
) -> Result<()> {
    let mut chunk = if len <= READ_CHUNK { len } else { READ_CHUNK };
    let mut tries = 0;
    'whole: loop {
        if tries == CHUNKED_TRIES {
            chunk = len;
        }
        tries += 1;
        let mut seen = None;
        for start in (0..len).step_by(chunk.max(1)) {
            let view = cell.read();
            let table = view.table()?;
            if *seen.get_or_insert(view.writes) != view.writes {
                continue 'whole;
            }
            for j in start..len.min(start + chunk) {
                answer(j, table.resolve(id(j)));
            }
        }
        return Ok(());
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
