//! Loading a table from a store or snapshot: stream stubs in, index once, replay logged changes.

use super::slab::Slot;
use super::{GhostTable, new_slot};
use crate::config::TableConfig;
use crate::error::Result;
use crate::stub::StubRecord;

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
