//! `MemoryStore`: a `GhostStore` in process memory, for tests and ephemeral deployments.

use super::{GhostStore, ShardChanges};
use crate::codec;
use crate::config::TableConfig;
use crate::error::Result;
use crate::table::GhostTable;
use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::sync::Mutex;

/// Keeps every shard's rows as encoded bytes, exactly as a durable store would,
/// so that decoding and corruption behave the same; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    shards: Mutex<HashMap<u16, Shard>>,
}

#[derive(Debug, Default)]
struct Shard {
    /// Hashed, not ordered: nothing reads the rows in order, and a commit of
    /// ~1000 upserts into a million rows costs a third of what a B-tree does.
    rows: HashMap<Box<str>, Vec<u8>, RandomState>,
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
        // A panic while holding the lock cannot leave a half-applied commit:
        // commits are built aside and swapped in, so the data stays usable.
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl GhostStore for MemoryStore {
    fn load(&self, shard: u16, config: &TableConfig) -> Result<GhostTable> {
        // Decoded under the lock: copying every row out first would cost more.
        let (records, applied_seq) = {
            let shards = self.lock();
            let Some(data) = shards.get(&shard) else {
                return GhostTable::new(shard, config.clone());
            };
            let records = data
                .rows
                .values()
                .map(|bytes| codec::decode_stub(bytes, config))
                .collect::<Result<Vec<_>>>()?;
            (records, data.applied_seq)
        };
        GhostTable::from_records(shard, config.clone(), records, applied_seq)
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        // Encode everything before touching the map: a failure leaves it unchanged.
        let mut encoded = Vec::with_capacity(batch.len());
        for sc in batch {
            let rows = sc
                .changes
                .upserts
                .iter()
                .map(|r| Ok((r.node_id.as_str(), codec::encode_stub(r)?)))
                .collect::<Result<Vec<_>>>()?;
            encoded.push(rows);
        }
        let mut shards = self.lock();
        for (sc, rows) in batch.iter().zip(encoded) {
            let shard = shards.entry(sc.shard).or_default();
            for id in &sc.changes.removals {
                shard.rows.remove(id);
            }
            for (id, bytes) in rows {
                // Most upserts change an existing row: no key allocation then.
                match shard.rows.get_mut(id) {
                    Some(row) => *row = bytes,
                    None => {
                        shard.rows.insert(id.into(), bytes);
                    }
                }
            }
            shard.applied_seq = shard.applied_seq.max(sc.changes.applied_seq);
        }
        Ok(())
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        let rows = table
            .records()
            .map(|r| Ok((Box::from(r.node_id.as_str()), codec::encode_stub(&r)?)))
            .collect::<Result<HashMap<_, _, _>>>()?;
        self.lock().insert(table.shard(), Shard { rows, applied_seq: table.applied_seq() });
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
