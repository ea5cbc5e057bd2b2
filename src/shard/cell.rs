//! `ShardCell`: one shard's core (its table, or why it has none, and its
//! promise state) in a cell that its `GhostActor` alone writes and every
//! `GhostReader` reads.
//!
//! # Why a per-shard reader-writer lock
//!
//! Readers must never be wrong and the table must not be copied (at most 10%
//! more memory per ghost). That rules out the copy-based schemes (left-right,
//! copy-on-write behind an atomic pointer: two tables), and `unsafe` rules out a
//! seqlock over the table. What is left is a lock around the one table: the
//! actor holds it for writing while it applies a message (or drains a
//! flush), so that a batch is applied whole before any reader can look;
//! readers take it for reading for one lookup or one chunk of [`READ_CHUNK`]
//! lookups, so a writer never waits long behind them. A frontier of several
//! chunks is one state all the same: the cell counts its writes, and a read
//! that sees the count move between its chunks starts over (after
//! [`CHUNKED_TRIES`] such tries, it holds one read lock for the whole
//! frontier). The store commit runs outside the lock, so readers never wait
//! for a flush.
//!
//! # What the write lock covers, and what it does not
//!
//! Of an edge batch's work on a large table, most only reads: hashing the
//! ids and paying the cache misses of the lookups (`GhostTable::warm_batch`),
//! and copying the stubs it dirtied for the store (`GhostTable::stage_ahead`).
//! The actor does those under an upgradable read lock, which readers share,
//! and holds the write lock only to apply the batch to warm lines and to mark
//! the copies staged; the upgrade and downgrade let no other writer in, so
//! what was read is still what is written. For 1024 random events on 1M
//! ghosts that moved about half of the locked time out of it
//! (`cargo bench --bench reader -- reader`, the same bench on this version
//! and on the one before: a resolve while batches stream in went from
//! 3.8–4.2× the raw table's, six runs, to 2.0–2.3×, four runs).
//!
//! A reader that finds the write lock held yields and tries again for about
//! a write's length before it parks: a parked reader has to be woken by the
//! actor as it unlocks, a system call per reader on the shard's thread. With
//! four readers on the other core that cost the actor a fifth of its batch
//! rate (0.81 of its rate alone, one run); yielding first, 0.96–0.98 (four
//! runs, `-- split`).
//!
//! `parking_lot::RwLock` rather than `std::sync::RwLock`, chosen by
//! `cargo bench --bench reader -- lock` (the same 1M-ghost table behind each
//! lock, a writer thread applying batches of 1024 events, four reader threads
//! taking the read lock per lookup; 2 cores, in two of the three runs shared
//! with other engineers' builds; README, "Reads without a message"). An
//! uncontended read costs about the same under either (std 453, 919, 360 ns
//! per random lookup; parking_lot 491, 776, 487 ns). What differs is the
//! writer, the shard's actor: with four readers flat out, std's kept 0.17,
//! 0.47 and 0.32 of its rate alone, parking_lot's 0.63, 0.54 and 0.67. It also
//! has upgradable reads, and no poisoning: a handler panic is caught under
//! the guard and turns the state into `Loading` before the guard drops, so a
//! poison flag would add nothing.

use super::core::ShardCore;
use super::state::State;
use crate::error::{Error, Result};
use crate::store::ClaimWatch;
use crate::table::GhostTable;
use std::sync::Arc;

/// The lock every shard cell uses (see the module documentation for why).
pub(crate) type Lock<T> = parking_lot::RwLock<T>;

/// Turns the actor's write of a cell back into an upgradable read, which
/// readers share, with no other writer in between.
pub(crate) fn downgrade<T>(
    guard: parking_lot::RwLockWriteGuard<'_, T>,
) -> parking_lot::RwLockUpgradableReadGuard<'_, T> {
    parking_lot::RwLockWriteGuard::downgrade_to_upgradable(guard)
}

/// Turns the actor's upgradable read of a cell into its write, with no other
/// writer in between; counted as a write (see [`ShardView::writes`]).
pub(crate) fn upgrade(
    guard: parking_lot::RwLockUpgradableReadGuard<'_, ShardView>,
) -> parking_lot::RwLockWriteGuard<'_, ShardView> {
    let mut guard = parking_lot::RwLockUpgradableReadGuard::upgrade(guard);
    guard.writes += 1;
    guard
}

/// Lookups a reader makes under one read lock in `resolve_many`: long enough
/// to amortise the lock, short enough (some microseconds on a 1M-ghost
/// table) that a writer is not held up behind a long frontier.
pub(crate) const READ_CHUNK: usize = 64;

/// Reads of a long frontier chunk by chunk that a write may cut short (and
/// start over) before the reader takes one read lock for all of it.
pub(crate) const CHUNKED_TRIES: u32 = 3;

/// What the cell holds: the core, and the claim its table was loaded under.
pub(crate) struct ShardView {
    pub(crate) core: ShardCore,
    /// The claim the table was loaded under; `None`: the store has none to lose.
    pub(crate) claim: Option<ClaimWatch>,
    /// How many times the cell was taken for writing. A reader that reads
    /// under several read locks compares it across them: the same count is
    /// the same state of the shard. Only [`ShardCell::write`] and [`upgrade`]
    /// hand out the write lock, and both count it.
    pub(crate) writes: u64,
}

impl ShardView {
    /// The table, or the error every request gets while there is none. A
    /// ready table whose claim no longer holds is [`Error::Fenced`] already:
    /// the actor fences it on its next message, and a reader must not
    /// answer from it meanwhile.
    pub(crate) fn table(&self) -> Result<&GhostTable> {
        let table = self.core.table()?;
        match &self.claim {
            Some(claim) if !claim.is_valid() => {
                Err(Error::Fenced { shard: self.core.shard(), cause: lapse(claim) })
            }
            _ => Ok(table),
        }
    }

    /// Why the claim of a ready shard no longer holds; `None` while it does
    /// (or the shard has no table to lose).
    pub(crate) fn lapsed(&self) -> Option<String> {
        match &self.claim {
            Some(claim) if !claim.is_valid() && self.core.is_ready() => Some(lapse(claim)),
            _ => None,
        }
    }
}

/// The cause a lapsed claim is fenced with.
pub(crate) fn lapse(claim: &ClaimWatch) -> String {
    let cause = claim.lapse_cause().unwrap_or("the claim lapsed");
    format!("{cause}; another process may own the shard")
}

/// One shard's core, shared by its actor (the only writer) and the readers.
pub(crate) struct ShardCell {
    // Private: every write goes through `write` or `upgrade`, which count it.
    view: Lock<ShardView>,
}

/// Tries for the read lock this many times, yielding in between, before
/// parking on it: about as long as the actor holds the write lock for a batch.
const READ_TRIES: u32 = 256;

impl ShardCell {
    /// The read lock, for a reader. While the actor holds the write lock the
    /// reader yields and tries again rather than park at once: a parked
    /// reader must be woken by the actor as it unlocks (a system call per
    /// reader, on the shard's thread), and wakes up late. Only after about a
    /// write's length does it park.
    pub(crate) fn read(&self) -> parking_lot::RwLockReadGuard<'_, ShardView> {
        for _ in 0..READ_TRIES {
            if let Some(guard) = self.view.try_read() {
                return guard;
            }
            std::thread::yield_now();
        }
        self.view.read()
    }

    /// A cell for `core`, with no claim yet.
    pub(crate) fn new(core: ShardCore) -> Arc<Self> {
        Arc::new(Self { view: Lock::new(ShardView { core, claim: None, writes: 0 }) })
    }

    /// The write lock, for the actor, counted (see [`ShardView::writes`]).
    pub(crate) fn write(&self) -> parking_lot::RwLockWriteGuard<'_, ShardView> {
        let mut guard = self.view.write();
        guard.writes += 1;
        guard
    }

    /// The upgradable read lock, for the actor alone: readers share it, and
    /// [`upgrade`] turns it into the (counted) write.
    pub(crate) fn upgradable(&self) -> parking_lot::RwLockUpgradableReadGuard<'_, ShardView> {
        self.view.upgradable_read()
    }

    /// Replaces the state, dropping the old one (possibly a whole table)
    /// after the lock is released, so that readers do not wait for the free.
    pub(crate) fn set_state(&self, state: State) {
        let retired = {
            let mut view = self.write();
            view.core.set_state(state);
            view.core.take_retired()
        };
        drop(retired);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShardConfig;
    use crate::ids::ShardId;

    /// Every write lock the cell hands out is counted (a chunked read that
    /// sees the count move starts over), and a state set through the cell is
    /// the core's (a stopped actor's `Closed` is what readers then answer).
    #[test]
    fn writes_are_counted_and_states_set_through_the_cell_hold() {
        let cell = ShardCell::new(ShardCore::new(ShardId(0), &ShardConfig::default(), 1));
        let before = cell.read().writes;
        drop(cell.write());
        drop(cell.write());
        assert_eq!(cell.read().writes, before + 2);
        cell.set_state(State::Closed);
        assert!(matches!(cell.read().core.state(), State::Closed));
        assert_eq!(cell.read().writes, before + 3, "setting the state is a write");
    }
}
