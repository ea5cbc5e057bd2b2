//! Loading a table from a store or snapshot: stream stubs in, index once, replay logged changes.

use super::index::Index;
use super::slab::{STORED_BIRTH, STORED_HOLD, Slot};
use super::tombstones::Tombstone;
use super::{GhostTable, TableMemory, new_slot};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::stub::{StubRecord, StubRef};
use std::sync::mpsc;

/// Stubs at which [`GhostTable::load_distinct`] indexes on a helper thread.
pub(crate) const PARALLEL_INDEX_FROM: usize = 1 << 16;
/// Hashes handed to the index thread at a time.
const CHUNK: usize = 4096;

/// A table being loaded by [`GhostTable::load_distinct`].
pub(crate) struct IndexedLoad<'t> {
    table: &'t mut GhostTable,
    /// Hashes not yet sent, and the index thread's queue (none for small loads).
    feed: Option<(Vec<u64>, mpsc::SyncSender<Vec<u64>>)>,
}

impl IndexedLoad<'_> {
    /// Appends one stored row; its id must differ from every other pushed.
    pub(crate) fn push(&mut self, row: StubRef<'_>) -> Result<()> {
        if !self.table.load_stub(row)? {
            return Ok(()); // A tombstone: not a slot, so not indexed.
        }
        if let Some((chunk, tx)) = &mut self.feed {
            chunk.push(self.table.slab.hash_id(row.node_id));
            if chunk.len() == CHUNK {
                // A send fails only if the index thread is gone; its join reports why.
                let _ = tx.send(std::mem::replace(chunk, Vec::with_capacity(CHUNK)));
            }
        }
        Ok(())
    }
}

/// Indexes slot numbers 0, 1, ... by the hashes received, in order, once
/// the last arrives (grouped by bucket, `Index::rebuild` is a fraction of a
/// load; the hashing overlaps the scan). The ids are distinct, so no two
/// slots are compared.
fn index_hashes(rx: mpsc::Receiver<Vec<u64>>, capacity: usize, mut index: Index) -> Index {
    let mut hashes: Vec<u64> = Vec::with_capacity(capacity);
    for chunk in rx {
        hashes.extend(chunk);
    }
    let _ = index.rebuild(&hashes, hashes.len(), |_, _| false);
    index
}

impl GhostTable {
    /// Rebuilds a table from persisted records, with nothing pending for the store.
    pub fn from_records(
        shard: ShardId,
        config: TableConfig,
        records: impl IntoIterator<Item = StubRecord>,
        applied_seq: Option<u64>,
    ) -> Result<Self> {
        let records = records.into_iter();
        let mut table = Self::with_capacity(shard, config, records.size_hint().0)?;
        for r in records {
            table.load_stub((&r).into())?;
        }
        table.finish_load(applied_seq)?;
        Ok(table)
    }

    /// Adds one persisted row during a load of a fresh table; true if it
    /// became a slot (false: a tombstone). The index is built once at
    /// [`finish_load`](Self::finish_load): appending first and hashing after
    /// keeps the append pass a pure stream, which is what makes a million-stub
    /// reload fast.
    pub(crate) fn load_stub(&mut self, row: StubRef<'_>) -> Result<bool> {
        self.check_stored_id(row.node_id)?;
        self.note_row_seq(row);
        if row.tombstone {
            self.load_tombstone(row);
            return Ok(false);
        }
        let slot = self.stored_slot(row);
        self.slab.push_unindexed(row.node_id, slot, row.hold_until_ms)?;
        Ok(true)
    }

    /// Remembers the sequence number a stored row holds; [`loaded`](Self::loaded)
    /// keeps those past the shard's applied one (a commit that landed in part).
    fn note_row_seq(&mut self, row: StubRef<'_>) {
        if row.seq > 0 {
            self.ahead.insert(row.node_id.into(), row.seq);
        }
    }

    /// The slot of a stored ghost row, with a fresh version; its hold
    /// (`row.hold_until_ms`) becomes the slot's retry time.
    fn stored_slot(&mut self, row: StubRef<'_>) -> Slot {
        let version = self.bump();
        new_slot(row.target_shard, row.refcount, row.created_at_ms, row.epoch, version)
    }

    /// Remembers a stored tombstone; nothing is pending for the store.
    fn load_tombstone(&mut self, row: StubRef<'_>) {
        let t = Tombstone {
            epoch: row.epoch,
            target: row.target_shard,
            removed_at_ms: row.created_at_ms,
            expires_at_ms: row.hold_until_ms,
            // On the writer's clock, which may be behind ours.
            lapses_at_ms: row.hold_until_ms.saturating_add(self.config.max_clock_skew_ms()),
        };
        // The bound applies to what is stored too; what it evicts here is
        // dropped from the store by the next flush that removes a tombstone.
        let mut evicted = Vec::new();
        self.tombstones.insert(row.node_id, t, self.config.max_tombstones, &mut evicted);
        for id in &evicted {
            self.pending.push_removal(id);
        }
    }

    /// Reads the times this table loaded from the store as written, without
    /// `TableConfig::max_clock_skew`: for a store whose shards never move
    /// between processes, so that its writer and its loader share a clock.
    pub(crate) fn trust_stored_times(&mut self) {
        self.config.max_clock_skew = std::time::Duration::ZERO;
        self.tombstones.trust_stored_times();
    }

    /// Writes the allowance for another clock into the times themselves:
    /// each time read from the store moves `TableConfig::max_clock_skew`
    /// later (a ghost's birth and hold, a tombstone's lapse), and reads as
    /// this process's from then on. For an import: its rows become those of
    /// a store that may trust its times at every later load, so the allowance
    /// must be in them, once.
    pub(crate) fn settle_stored_times(&mut self) {
        let skew = self.config.max_clock_skew_ms();
        for i in 0..self.slab.len() {
            let s = self.slab.slot_mut_clean(i);
            if s.flags & STORED_BIRTH != 0 {
                s.created_at_ms = s.created_at_ms.saturating_add(skew);
                s.flags &= !STORED_BIRTH;
            }
            if s.flags & STORED_HOLD != 0 {
                let hold = self.slab.retry_at(i).saturating_add(skew);
                self.slab.set_retry_at(i, hold);
            }
        }
        self.tombstones.settle_lapses();
    }

    /// Ends a load: indexes the stubs (a repeated id is malformed state) and
    /// leaves nothing pending for the store.
    pub(crate) fn finish_load(&mut self, applied_seq: Option<u64>) -> Result<()> {
        if let Err(i) = self.slab.rebuild_index() {
            let id = self.slab.id(i);
            return Err(crate::DecodeError::Malformed(format!("duplicate node id {id:?}")).into());
        }
        self.loaded(applied_seq);
        Ok(())
    }

    /// The state of a table just loaded: nothing pending but evictions of
    /// tombstones over the bound, and an unknown position relative to
    /// unsequenced events (the store does not record them).
    fn loaded(&mut self, applied_seq: Option<u64>) {
        self.slab.clear_dirty();
        self.applied_seq = applied_seq;
        self.seq_dirty = false;
        // A row that holds batches past the applied sequence number landed
        // from a commit whose sequence number did not: the host sends those
        // batches again, and this row must not count their events twice.
        self.ahead.retain(|_, held| Some(*held) > applied_seq);

        // A tombstone beside a live ghost of the same id (only malformed
        // snapshots hold both): the ghost is the state, the tombstone goes.
        let shadowed: Vec<Box<str>> = self
            .tombstones
            .iter()
            .filter(|(id, _)| self.slab.find(id).is_some())
            .map(|(id, _)| id.into())
            .collect();
        for id in &shadowed {
            self.tombstones.remove(id);
        }
        // Unsequenced events applied before the restart are not in the host's
        // log: until the next sequenced batch, a count's position says nothing.
        self.unsequenced = self.slab.len() > 0;
    }

    /// Loads a table from stubs whose ids are known to be distinct, such as
    /// the rows of a store keyed by id: `fill` pushes them into the
    /// [`IndexedLoad`]. A large load indexes on a helper thread while `fill`
    /// still reads, so the index costs little beyond the read itself.
    pub(crate) fn load_distinct(
        shard: ShardId,
        config: TableConfig,
        capacity: usize,
        applied_seq: Option<u64>,
        memory: TableMemory,
        fill: impl FnOnce(&mut IndexedLoad<'_>) -> Result<()>,
    ) -> Result<Self> {
        let mut table = Self::with_memory(shard, config, capacity, memory)?;
        if capacity < PARALLEL_INDEX_FROM {
            fill(&mut IndexedLoad { table: &mut table, feed: None })?;
            table.finish_load(applied_seq)?;
            return Ok(table);
        }
        // The helper builds the index, in the memory of the one sized for `capacity`.
        let index = table.slab.take_index();
        let index = std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel::<Vec<u64>>(16);
            let builder = std::thread::Builder::new()
                .name("ghost-index".into())
                .spawn_scoped(s, move || index_hashes(rx, capacity, index))
                .map_err(|e| Error::store_from("cannot start index thread", e))?;
            let mut load = IndexedLoad { table: &mut table, feed: Some((Vec::with_capacity(CHUNK), tx)) };
            let filled = fill(&mut load);
            if let Some((chunk, tx)) = load.feed.take() {
                let _ = tx.send(chunk);
            }
            let index = builder.join().map_err(|_| Error::store("index thread panicked"))?;
            filled.map(|()| index)
        })?;
        table.slab.install_index(index);
        table.loaded(applied_seq);
        Ok(table)
    }

    /// Replays a persisted upsert onto a loaded (indexed) table: inserts the
    /// stub or overwrites its persisted fields. Not recorded as a change: the
    /// store already holds it. [`finish_restore`](Self::finish_restore) must follow.
    pub(crate) fn restore_upsert(&mut self, row: StubRef<'_>) -> Result<()> {
        self.check_stored_id(row.node_id)?;
        self.note_row_seq(row);
        let id = row.node_id;
        if row.tombstone {
            self.restore_removal(id);
            self.load_tombstone(row);
            return Ok(());
        }
        self.tombstones.remove(id);
        let fresh = self.stored_slot(row);
        let i = match self.slab.insert(id, fresh)? {
            Ok(i) => i,
            Err(i) => {
                let s = self.slab.slot_mut_clean(i);
                *s = Slot { key: s.key, flags: s.flags, ..fresh };
                i
            }
        };
        self.slab.slot_mut_clean(i).flags |= STORED_BIRTH;
        self.slab.set_stored_retry_at(i, row.hold_until_ms);
        Ok(())
    }

    /// Replays a persisted removal onto a loaded table; an absent id is not an
    /// error (removals are idempotent). Not recorded as a change.
    pub(crate) fn restore_removal(&mut self, id: &str) {
        if let Some(i) = self.slab.find(id) {
            self.slab.remove(i, &mut self.cursor);
        } else {
            self.tombstones.remove(id);
        }
    }

    /// Ends a replay: leaves nothing pending for the store, without indexing
    /// again as [`finish_load`](Self::finish_load) would.
    pub(crate) fn finish_restore(&mut self, applied_seq: Option<u64>) {
        self.pending.clear();
        self.loaded(applied_seq);
    }
}
