//! Loading a table from a store or snapshot: stream stubs in, index once, replay logged changes.

use super::slab::Slot;
use super::{GhostTable, new_slot};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::stub::StubRecord;
use hashbrown::HashTable;
use std::sync::mpsc;

/// Stubs at which [`GhostTable::load_distinct`] indexes on a helper thread.
const PARALLEL_INDEX_FROM: usize = 1 << 16;
/// Hashes handed to the index thread at a time.
const CHUNK: usize = 4096;

/// A table being loaded by [`GhostTable::load_distinct`].
pub(crate) struct IndexedLoad<'t> {
    table: &'t mut GhostTable,
    /// Hashes not yet sent, and the index thread's queue (none for small loads).
    feed: Option<(Vec<u64>, mpsc::SyncSender<Vec<u64>>)>,
}

impl IndexedLoad<'_> {
    /// Appends one stub; its id must differ from every other pushed.
    pub(crate) fn push(
        &mut self,
        id: &str,
        target: u16,
        refcount: u32,
        created_at_ms: u64,
        epoch: u64,
    ) -> Result<()> {
        self.table.load_stub(id, target, refcount, created_at_ms, epoch)?;
        if let Some((chunk, tx)) = &mut self.feed {
            chunk.push(self.table.slab.hash_id(id));
            if chunk.len() == CHUNK {
                // A send fails only if the index thread is gone; its join reports why.
                let _ = tx.send(std::mem::replace(chunk, Vec::with_capacity(CHUNK)));
            }
        }
        Ok(())
    }
}

/// Indexes slot numbers 0, 1, ... by the hashes received, in order. Keeps
/// every hash so that growing past `capacity` can rehash without the ids.
fn index_hashes(rx: mpsc::Receiver<Vec<u64>>, capacity: usize) -> HashTable<u32> {
    let mut hashes: Vec<u64> = Vec::with_capacity(capacity);
    let mut index = HashTable::with_capacity(capacity);
    for chunk in rx {
        for h in chunk {
            let i = hashes.len() as u32;
            hashes.push(h);
            index.insert_unique(h, i, |&j| hashes[j as usize]);
        }
    }
    index
}

impl GhostTable {
    /// Rebuilds a table from persisted records, with nothing pending for the store.
    pub fn from_records(
        shard: u16,
        config: TableConfig,
        records: impl IntoIterator<Item = StubRecord>,
        applied_seq: Option<u64>,
    ) -> Result<Self> {
        let records = records.into_iter();
        let mut table = Self::with_capacity(shard, config, records.size_hint().0)?;
        for r in records {
            table.load_stub(&r.node_id, r.target_shard, r.refcount, r.created_at_ms, r.epoch)?;
        }
        table.finish_load(applied_seq)?;
        Ok(table)
    }

    /// Adds one persisted stub during a load of a fresh table. The index is
    /// built once at [`finish_load`](Self::finish_load): appending first and
    /// hashing after keeps the append pass a pure stream, which is what makes a
    /// million-stub reload fast.
    pub(crate) fn load_stub(
        &mut self,
        id: &str,
        target: u16,
        refcount: u32,
        created_at_ms: u64,
        epoch: u64,
    ) -> Result<()> {
        self.check_id(id)?;
        let version = self.bump();
        self.slab.push_unindexed(id, new_slot(target, refcount, created_at_ms, epoch, version))
    }

    /// Ends a load: indexes the stubs (a repeated id is malformed state) and
    /// leaves nothing pending for the store.
    pub(crate) fn finish_load(&mut self, applied_seq: Option<u64>) -> Result<()> {
        if let Err(i) = self.slab.rebuild_index() {
            let id = self.slab.id(i);
            return Err(crate::DecodeError::Malformed(format!("duplicate node id {id:?}")).into());
        }
        self.slab.clear_dirty();
        self.applied_seq = applied_seq;
        self.seq_dirty = false;
        Ok(())
    }

    /// Loads a table from stubs whose ids are known to be distinct, such as
    /// the rows of a store keyed by id: `fill` pushes them into the
    /// [`IndexedLoad`]. A large load indexes on a helper thread while `fill`
    /// still reads, so the index costs little beyond the read itself.
    pub(crate) fn load_distinct(
        shard: u16,
        config: TableConfig,
        capacity: usize,
        applied_seq: Option<u64>,
        fill: impl FnOnce(&mut IndexedLoad<'_>) -> Result<()>,
    ) -> Result<Self> {
        let mut table = Self::with_capacity(shard, config, capacity)?;
        if capacity < PARALLEL_INDEX_FROM {
            fill(&mut IndexedLoad { table: &mut table, feed: None })?;
            table.finish_load(applied_seq)?;
            return Ok(table);
        }
        // The helper builds the index; the one sized for `capacity` would sit unused.
        table.slab.install_index(HashTable::new());
        let index = std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel::<Vec<u64>>(16);
            let builder = std::thread::Builder::new()
                .name("ghost-index".into())
                .spawn_scoped(s, move || index_hashes(rx, capacity))
                .map_err(|e| Error::Store(format!("cannot start index thread: {e}")))?;
            let mut load = IndexedLoad { table: &mut table, feed: Some((Vec::with_capacity(CHUNK), tx)) };
            let filled = fill(&mut load);
            if let Some((chunk, tx)) = load.feed.take() {
                let _ = tx.send(chunk);
            }
            let index = builder.join().map_err(|_| Error::Store("index thread panicked".into()))?;
            filled.map(|()| index)
        })?;
        table.slab.install_index(index);
        table.slab.clear_dirty();
        table.applied_seq = applied_seq;
        table.seq_dirty = false;
        Ok(table)
    }

    /// Replays a persisted upsert onto a loaded (indexed) table: inserts the
    /// stub or overwrites its persisted fields. Not recorded as a change: the
    /// store already holds it. [`finish_restore`](Self::finish_restore) must follow.
    pub(crate) fn restore_upsert(
        &mut self,
        id: &str,
        target: u16,
        refcount: u32,
        created_at_ms: u64,
        epoch: u64,
    ) -> Result<()> {
        self.check_id(id)?;
        let version = self.bump();
        let fresh = new_slot(target, refcount, created_at_ms, epoch, version);
        if let Err(i) = self.slab.insert(id, fresh)? {
            let s = self.slab.slot_mut_clean(i);
            *s = Slot { id_off: s.id_off, id_len: s.id_len, flags: s.flags, ..fresh };
        }
        Ok(())
    }

    /// Replays a persisted removal onto a loaded table; an absent id is not an
    /// error (removals are idempotent). Not recorded as a change.
    pub(crate) fn restore_removal(&mut self, id: &str) {
        if let Some(i) = self.slab.find(id) {
            self.slab.remove(i, &mut self.cursor);
        }
    }

    /// Ends a replay: leaves nothing pending for the store, without indexing
    /// again as [`finish_load`](Self::finish_load) would.
    pub(crate) fn finish_restore(&mut self, applied_seq: Option<u64>) {
        self.slab.clear_dirty();
        self.pending.clear();
        self.applied_seq = applied_seq;
        self.seq_dirty = false;
    }
}
