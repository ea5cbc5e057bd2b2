//! `MemoryStore`: a `GhostStore` in process memory, for tests and ephemeral deployments.

use super::{GhostStore, ShardChanges};
use crate::config::TableConfig;
use crate::error::Result;
use crate::stub::StubRef;
use crate::table::GhostTable;
use compact_str::CompactString;
use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::sync::Mutex;

/// Keeps every shard's stubs as plain rows; lost when the process ends.
///
/// Rows are not encoded: this store exists to be fast and simple (the codec
/// and corrupt bytes are exercised through [`RedbStore`](crate::store::RedbStore)).
/// Loading still goes through the table's checks, so a row the shard's
/// [`TableConfig`] cannot hold fails the load, as it would from disk.
#[derive(Debug, Default)]
pub struct MemoryStore {
    shards: Mutex<HashMap<u16, Shard>>,
}

/// The persisted fields of a stub, its id being the row's key.
#[derive(Debug, Clone, Copy)]
struct Row {
    target: u16,
    refcount: u32,
    created_at_ms: u64,
    epoch: u64,
    hold_until_ms: u64,
    tombstone: bool,
}

impl From<StubRef<'_>> for Row {
    fn from(r: StubRef<'_>) -> Self {
        Self {
            target: r.target_shard,
            refcount: r.refcount,
            created_at_ms: r.created_at_ms,
            epoch: r.epoch,
            hold_until_ms: r.hold_until_ms,
            tombstone: r.tombstone,
        }
    }
}

impl Row {
    fn stub<'a>(&self, node_id: &'a str) -> StubRef<'a> {
        StubRef {
            node_id,
            target_shard: self.target,
            refcount: self.refcount,
            created_at_ms: self.created_at_ms,
            epoch: self.epoch,
            hold_until_ms: self.hold_until_ms,
            tombstone: self.tombstone,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Hashed, not ordered: nothing reads the rows in order, and a commit of
    /// ~1000 upserts into a million rows costs a third of what a B-tree does.
    /// Keys of up to 24 bytes live inline in the map's buckets, so a lookup does
    /// not chase a pointer to compare them: one cache miss fewer per row.
    rows: HashMap<CompactString, Row, RandomState>,
    applied_seq: Option<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stub rows stored for `shard`.
    pub fn rows(&self, shard: u16) -> usize {
        self.lock().get(&shard).map_or(0, |s| s.rows.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Shard>> {
        // A commit is all-or-nothing because nothing in its loop can panic
        // (map updates of plain values; an allocation failure aborts). A panic
        // elsewhere under the lock leaves whole commits only.
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl GhostStore for MemoryStore {
    fn load(&self, shard: u16, config: &TableConfig) -> Result<GhostTable> {
        let shards = self.lock();
        let Some(data) = shards.get(&shard) else {
            return GhostTable::new(shard, config.clone());
        };
        // Map keys: no id repeats.
        GhostTable::load_distinct(shard, config.clone(), data.rows.len(), data.applied_seq, |load| {
            data.rows.iter().try_for_each(|(id, r)| load.push(r.stub(id)))
        })
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        let mut shards = self.lock();
        for sc in batch {
            let shard = shards.entry(sc.shard).or_default();
            for id in sc.changes.removals() {
                shard.rows.remove(id);
            }
            for r in sc.changes.upserts() {
                // Most upserts change an existing row: no key allocation then.
                match shard.rows.get_mut(r.node_id) {
                    Some(row) => *row = Row::from(r),
                    None => {
                        shard.rows.insert(CompactString::from(r.node_id), Row::from(r));
                    }
                }
            }
            shard.applied_seq = shard.applied_seq.max(sc.changes.applied_seq());
        }
        Ok(())
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        let rows = table.rows().map(|r| (CompactString::from(r.node_id), Row::from(r))).collect();
        self.lock().insert(table.shard(), Shard { rows, applied_seq: table.applied_seq() });
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
