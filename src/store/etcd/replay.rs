//! A shard's table from what `EtcdStore` read of it: the checkpoint's chunks put together
//! and decoded as a snapshot, then every complete log record applied in order. Pure: no
//! I/O, so it runs on the caller's thread, not on the store's runtime.

use super::io::ShardData;
use super::log;
use crate::codec::{self, batch};
use crate::config::TableConfig;
use crate::error::{DecodeError, Result};
use crate::ids::ShardId;
use crate::table::{GhostTable, TableMemory};

/// The table `data` holds for `shard`, checked against `config`.
pub(super) fn build(
    shard: u16,
    data: &ShardData,
    config: &TableConfig,
    memory: TableMemory,
) -> Result<GhostTable> {
    let mut table = if data.meta.chunks == 0 {
        GhostTable::load_distinct(ShardId(shard), config.clone(), 0, None, memory, |_| Ok(()))?
    } else {
        codec::decode_snapshot_reusing(&checkpoint_bytes(data)?, ShardId(shard), config, memory)?
    };
    let mut applied_seq = table.applied_seq();
    // A record's count is not the table's size: ids still meet the table's
    // limits, and the bytes present bound every count.
    let wide = TableConfig { max_stubs: u32::MAX as usize, ..config.clone() };
    let entries = data.log.iter().map(|(i, v)| (*i, v.as_slice()));
    for (index, record) in log::records(entries)? {
        let logged = |e: &crate::Error| {
            tracing::error!(shard, index, error = %e.chain(), "undecodable etcd log record");
        };
        for (s, bytes) in batch::open_batch(&record).inspect_err(logged)? {
            if s != shard {
                continue;
            }
            let section = batch::decode_section(bytes, &wide).inspect_err(logged)?;
            for id in section.removals {
                table.restore_removal(id);
            }
            for u in section.upserts {
                table.restore_upsert(u)?;
            }
            applied_seq = applied_seq.max(section.applied_seq);
        }
    }
    if table.len() > config.max_stubs {
        let (value, limit) = (table.len() as u64, config.max_stubs as u64);
        return Err(DecodeError::LimitExceeded { what: "stub count", value, limit }.into());
    }
    table.finish_restore(applied_seq);
    Ok(table)
}

/// The checkpoint's chunks, put together: exactly chunks `0..meta.chunks`.
fn checkpoint_bytes(data: &ShardData) -> Result<Vec<u8>> {
    let want = data.meta.chunks as usize;
    let present: Vec<u32> = data.chunks.iter().map(|(i, _)| *i).collect();
    if present.len() != want || present.iter().enumerate().any(|(i, c)| *c as usize != i) {
        let why = format!("checkpoint {} of {want} chunks has chunks {present:?}", data.meta.generation);
        return Err(DecodeError::Malformed(why).into());
    }
    Ok(data.chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect())
}

/// Limits for building a table to checkpoint, where no table's config is at
/// hand: as wide as any table can be, since commit accepted these ids. The
/// loading table's own limits still apply at load.
pub(super) fn checkpoint_config() -> TableConfig {
    // Every live tombstone too: a fold under a lower bound than the shard's
    // own would drop the earliest-lapsing ones, and let in the stale inserts
    // they refuse.
    TableConfig {
        max_node_id_len: u16::MAX as usize,
        max_stubs: u32::MAX as usize,
        max_tombstones: usize::MAX,
        ..TableConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ShardChanges, StubRecord};
    use crate::table::ChangeSet;

    fn rec(id: &str, refcount: u32) -> StubRecord {
        StubRecord {
            node_id: id.into(),
            target_shard: 2,
            refcount,
            created_at_ms: 1,
            epoch: 1,
            hold_until_ms: 0,
            tombstone: false,
            seq: 0,
        }
    }

    fn record(shard: u16, ups: &[StubRecord], removals: &[&str], seq: Option<u64>) -> Vec<u8> {
        let changes = ChangeSet::from_parts(ups.iter().map(Into::into), removals.iter().copied(), seq);
        batch::encode_batch(&[ShardChanges { shard: ShardId(shard), changes }]).unwrap()
    }

    fn sorted(t: &GhostTable) -> Vec<StubRecord> {
        let mut v: Vec<_> = t.records().collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }

    #[test]
    fn a_checkpoint_in_chunks_then_the_log_in_order() {
        let base = GhostTable::from_records(
            ShardId(1),
            TableConfig::default(),
            vec![rec("a", 1), rec("b", 2)],
            Some(3),
        )
        .unwrap();
        let snapshot = codec::encode_snapshot(&base).unwrap();
        let chunks: Vec<(u32, Vec<u8>)> =
            snapshot.chunks(7).enumerate().map(|(i, c)| (i as u32, c.to_vec())).collect();
        let meta =
            super::super::keys::Meta { generation: 4, chunks: chunks.len() as u32, bytes: 0, log_from: 10 };
        let mut log = Vec::new();
        for (i, r) in [
            record(1, &[rec("c", 1)], &["a"], Some(4)),
            record(1, &[rec("c", 5)], &[], None),
            record(2, &[rec("x", 1)], &[], Some(99)),
        ]
        .iter()
        .enumerate()
        {
            let index = 10 + i as u64;
            log.extend(log::encode(index, r, 1 << 20).into_iter().map(|e| (index, e)));
        }
        let data = ShardData { meta, chunks, log, last: Some(12) };
        let t = build(1, &data, &TableConfig::default(), TableMemory::default()).unwrap();
        assert_eq!(sorted(&t), vec![rec("b", 2), rec("c", 5)]);
        assert_eq!(t.applied_seq(), Some(4), "another shard's section is not this one's");
        assert!(!t.has_changes());
        // A missing chunk fails the load rather than load less.
        let mut short = data;
        short.chunks.remove(1);
        assert!(matches!(
            build(1, &short, &TableConfig::default(), TableMemory::default()),
            Err(crate::Error::Decode(_))
        ));
    }

    #[test]
    fn an_empty_shard_loads_empty() {
        let t = build(3, &ShardData::default(), &TableConfig::default(), TableMemory::default()).unwrap();
        assert!(t.is_empty() && t.applied_seq().is_none());
    }

    /// A fold rebuilds the checkpoint with no table's config at hand: it keeps
    /// every live tombstone, whatever bound the shard itself has.
    #[test]
    fn a_fold_keeps_every_live_tombstone_of_a_shard_with_a_higher_bound() {
        let n = 100_001u64;
        let config = TableConfig { max_tombstones: 200_000, ..TableConfig::default() };
        let rows = (0..n).map(|i| StubRecord {
            node_id: format!("t{i}"),
            target_shard: 2,
            refcount: 0,
            created_at_ms: 1,
            epoch: 2,
            hold_until_ms: u64::MAX / 2,
            tombstone: true,
            seq: 0,
        });
        let base = GhostTable::from_records(crate::ids::ShardId(1), config, rows, Some(1)).unwrap();
        let snapshot = codec::encode_snapshot(&base).unwrap();
        let meta = super::super::keys::Meta { generation: 1, chunks: 1, bytes: 0, log_from: 0 };
        let data = ShardData { meta, chunks: vec![(0, snapshot)], log: vec![], last: None };
        let folded = build(1, &data, &checkpoint_config(), TableMemory::default()).unwrap();
        assert_eq!(folded.row_count() as u64, n, "the fold dropped live tombstones");
    }
}
