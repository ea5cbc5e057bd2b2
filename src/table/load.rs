//! Loading a table from a store or snapshot: stream stubs in, replay logged changes.

use super::slab::{STORED_BIRTH, STORED_HOLD, Slot};
use super::tombstones::Tombstone;
use super::{GhostTable, TableMemory, new_slot};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::stub::{StubRecord, StubRef};
use std::sync::mpsc;

/// Stubs at which [`GhostTable::load_distinct`] places them on a helper thread.
pub(crate) const PARALLEL_FROM: usize = 1 << 16;
/// Rows handed to the helper thread at a time.
const CHUNK: usize = 4096;

/// A table being loaded by [`GhostTable::load_distinct`].
pub(crate) struct IndexedLoad<'t> {
    sink: Sink<'t>,
}

enum Sink<'t> {
    /// A small load: each row goes into the table as it comes.
    Here(&'t mut GhostTable),
    /// A large one: rows are copied into chunks for the thread that owns the
    /// table, and the chunks it is done with come back to be filled again.
    Thread { rows: Rows, tx: mpsc::SyncSender<Rows>, back: mpsc::Receiver<Rows> },
}

impl IndexedLoad<'_> {
    /// Adds one stored row; its id must differ from every other pushed.
    pub(crate) fn push(&mut self, row: StubRef<'_>) -> Result<()> {
        match &mut self.sink {
            Sink::Here(table) => table.load_stub(row).map(|_| ()),
            Sink::Thread { rows, tx, back } => {
                rows.push(row);
                if rows.len() == CHUNK {
                    let full = std::mem::replace(rows, back.try_recv().unwrap_or_default());
                    // The thread stops at a bad row; its join reports why.
                    tx.send(full).map_err(|_| Error::store("load stopped"))?;
                }
                Ok(())
            }
        }
    }
}

/// Rows copied out of a store's scan: their ids end to end, and the rest of each.
#[derive(Default)]
struct Rows {
    ids: String,
    rows: Vec<(usize, StubRef<'static>)>,
}

impl Rows {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn push(&mut self, row: StubRef<'_>) {
        self.ids.push_str(row.node_id);
        self.rows.push((self.ids.len(), StubRef { node_id: "", ..row }));
    }

    /// Loads every row into `table`, and empties this.
    fn load_into(&mut self, table: &mut GhostTable) -> Result<()> {
        let mut start = 0;
        for &(end, row) in &self.rows {
            table.load_stub(StubRef { node_id: &self.ids[start..end], ..row })?;
            start = end;
        }
        self.ids.clear();
        self.rows.clear();
        Ok(())
    }
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
    /// becomes a slot (false: a tombstone), in its place by
    /// [`finish_load`](Self::finish_load), which refuses a repeated id.
    pub(crate) fn load_stub(&mut self, row: StubRef<'_>) -> Result<bool> {
        self.check_stored_id(row.node_id)?;
        self.note_row_seq(row);
        if row.tombstone {
            self.load_tombstone(row);
            return Ok(false);
        }
        let slot = self.stored_slot(row);
        self.slab.insert_stored(row.node_id, slot, row.hold_until_ms)?;
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
        let mut next = self.slab.next_occupied(0);
        while let Some(i) = next {
            next = self.slab.next_occupied(i + 1);
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

    /// Ends a load: puts the last stubs in their places (a repeated id is
    /// malformed state) and leaves nothing pending for the store.
    pub(crate) fn finish_load(&mut self, applied_seq: Option<u64>) -> Result<()> {
        self.slab.place_stored()?;
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
    /// [`IndexedLoad`], each into its place in a table sized for `capacity`.
    /// A large load places them on a helper thread while `fill` still reads,
    /// so that placing costs little beyond the read itself.
    pub(crate) fn load_distinct(
        shard: ShardId,
        config: TableConfig,
        capacity: usize,
        applied_seq: Option<u64>,
        memory: TableMemory,
        fill: impl FnOnce(&mut IndexedLoad<'_>) -> Result<()>,
    ) -> Result<Self> {
        let mut table = Self::with_memory(shard, config, capacity, memory)?;
        if capacity < PARALLEL_FROM {
            fill(&mut IndexedLoad { sink: Sink::Here(&mut table) })?;
            table.finish_load(applied_seq)?;
            return Ok(table);
        }
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel::<Rows>(4);
            let (back_tx, back) = mpsc::sync_channel::<Rows>(4);
            let table = &mut table;
            let placer = std::thread::Builder::new()
                .name("ghost-load".into())
                .spawn_scoped(s, move || -> Result<()> {
                    for mut rows in rx {
                        rows.load_into(table)?;
                        let _ = back_tx.try_send(rows);
                    }
                    table.finish_load(applied_seq)
                })
                .map_err(|e| Error::store_from("cannot start load thread", e))?;
            let mut load = IndexedLoad { sink: Sink::Thread { rows: Rows::default(), tx, back } };
            let filled = fill(&mut load);
            if let (Ok(()), Sink::Thread { rows, tx, .. }) = (&filled, load.sink) {
                // The last rows; the send fails only if the thread stopped,
                // and then its join says why. Dropping `tx` (here, or with
                // `load` after a failed fill) ends its loop.
                let _ = tx.send(rows);
            }
            let placed = placer.join().map_err(|_| Error::store("load thread panicked"))?;
            // The thread's error first: a failed send in `fill` follows from it.
            placed.and(filled)
        })?;
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
            self.slab.remove(i);
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
