//! `MemoryStore`: a `GhostStore` in process memory, for tests and ephemeral deployments.

use super::{GhostStore, ShardChanges};
use crate::config::TableConfig;
use crate::error::Result;
use crate::ids::ShardId;
use crate::stub::StubRef;
use crate::table::{GhostTable, TableMemory};
use compact_str::CompactString;
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::collections::HashMap;
use std::hash::BuildHasher;
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
    /// Kept so that a commit landed in part (as `FaultyStore`-style tests
    /// make one) loads as a store that tears commits would.
    seq: u64,
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
            seq: r.seq,
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
            seq: self.seq,
        }
    }
}

/// A row and its id, on a cache line of its own.
///
/// Id and row fill 64 bytes, but the map aligns its buckets only as their
/// type asks, so rows straddled two lines: a commit's write then missed on
/// the second line even after the warming passes had read the first. Aligned,
/// a row is one line besides its control group, which the warming passes do
/// fetch (a 1024-row commit on 1M rows: 101–130 -> 47–75 µs of CPU,
/// `cargo bench --bench actor -- store_commit_memory`, interleaved).
#[derive(Debug)]
#[repr(align(64))]
struct Entry(CompactString, Row);

// One line, not two: a row grown past 64 bytes would double the map's size.
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

#[derive(Debug, Default)]
struct Shard {
    /// Hashed, not ordered: nothing reads the rows in order, and a commit of
    /// ~1000 upserts into a million rows costs a third of what a B-tree does.
    /// Keys of up to 24 bytes live inline in the map's buckets, so a lookup does
    /// not chase a pointer to compare them: one cache miss fewer per row. A
    /// raw table rather than a map, so that a commit can hash its rows once
    /// and warm their buckets before writing them (see [`Shard::commit`]).
    rows: HashTable<Entry>,
    hasher: RandomState,
    applied_seq: Option<u64>,
}

impl Shard {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Applies one shard's changes: removals, then upserts in order.
    ///
    /// A commit's rows are spread over the whole map, so each is a chain of
    /// two cache misses (group word, then bucket). Looked up one after the
    /// other, a thousand rows pay those end to end; so every id is hashed
    /// first and its group and bucket read in two passes over the whole
    /// commit, whose misses overlap, and only then is anything written. The
    /// passes only read, so the commit is the same with or without them.
    fn commit(&mut self, changes: &crate::table::ChangeSet, hashes: &mut Vec<u64>) {
        hashes.clear();
        hashes.extend(changes.removals().map(|id| self.hash(id)));
        hashes.extend(changes.upserts().map(|r| self.hash(r.node_id)));
        let mut touched = 0u64;
        for &h in hashes.iter() {
            touched ^= u64::from(self.rows.find(h, |_| false).is_some());
        }
        for &h in hashes.iter() {
            touched ^= self.rows.find(h, |_| true).map_or(0, |Entry(_, r)| r.epoch);
        }
        std::hint::black_box(touched);
        let (removed, upserted) = hashes.split_at(changes.removals().len());
        for (id, &h) in changes.removals().zip(removed) {
            if let Ok(e) = self.rows.find_entry(h, |Entry(k, _)| k.as_str() == id) {
                e.remove();
            }
        }
        for (r, &h) in changes.upserts().zip(upserted) {
            self.upsert(h, r);
        }
        self.applied_seq = self.applied_seq.max(changes.applied_seq());
    }

    /// Writes row `r`, whose id hashes to `h`.
    fn upsert(&mut self, h: u64, r: StubRef<'_>) {
        // Most upserts change an existing row: no key allocation then.
        match self.rows.find_mut(h, |Entry(k, _)| k.as_str() == r.node_id) {
            Some(Entry(_, row)) => *row = Row::from(r),
            None => {
                let hasher = &self.hasher;
                self.rows.insert_unique(
                    h,
                    Entry(CompactString::from(r.node_id), Row::from(r)),
                    |Entry(k, _)| hasher.hash_one(k.as_str()),
                );
            }
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stub rows stored for `shard`.
    pub fn rows(&self, shard: ShardId) -> usize {
        self.lock().get(&shard.get()).map_or(0, |s| s.rows.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Shard>> {
        // A commit is all-or-nothing because nothing in its loop can panic
        // (map updates of plain values; an allocation failure aborts). A panic
        // elsewhere under the lock leaves whole commits only.
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl GhostStore for MemoryStore {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        self.load_reusing(shard, config, TableMemory::default())
    }

    fn load_reusing(&self, shard: ShardId, config: &TableConfig, memory: TableMemory) -> Result<GhostTable> {
        let shards = self.lock();
        let Some(data) = shards.get(&shard.get()) else {
            return GhostTable::new(shard, config.clone());
        };
        // Map keys: no id repeats.
        GhostTable::load_distinct(shard, config.clone(), data.rows.len(), data.applied_seq, memory, |load| {
            data.rows.iter().try_for_each(|Entry(id, r)| load.push(r.stub(id)))
        })
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        let mut shards = self.lock();
        let mut hashes = Vec::new();
        for sc in batch {
            shards.entry(sc.shard.get()).or_default().commit(&sc.changes, &mut hashes);
        }
        Ok(())
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        let mut shard = Shard { rows: HashTable::with_capacity(table.row_count()), ..Shard::default() };
        for r in table.rows() {
            // Ids are distinct among a table's rows; were one repeated, the
            // later row would win, as it does in a commit.
            shard.upsert(shard.hash(r.node_id), r);
        }
        shard.applied_seq = table.applied_seq();
        self.lock().insert(table.shard().get(), shard);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
