//! `RedbStore`'s commit log: append one record per commit, replay it on load, fold it into the rows.

use super::redb_schema::{COMMIT_LOG, Ctx, GHOSTS, LOG_NEXT_KEY, META, SHARD_META};
use crate::codec::batch;
use crate::config::TableConfig;
use crate::error::Result;
use crate::stub::StubRef;
use crate::table::GhostTable;
use foldhash::fast::RandomState;
use redb::{ReadOnlyTable, ReadableTable, WriteTransaction};
use std::collections::{BTreeMap, HashMap};

/// What the log holds, as seen by the one writer.
#[derive(Debug, Default)]
pub(super) struct LogState {
    /// Lowest sequence number the next record may take: above every folded one,
    /// so numbers are never reused even once the log is empty.
    pub(super) next: u64,
    pub(super) records: u64,
    pub(super) bytes: u64,
    /// Log size at the last failed checkpoint; the next try waits for the log
    /// to grow by another threshold rather than fail on every commit.
    pub(super) failed_at: Option<(u64, u64)>,
}

/// When the log is folded into the rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Thresholds {
    pub(super) bytes: u64,
    pub(super) records: u64,
}

impl LogState {
    /// Reads the log's extent, at open.
    pub(super) fn scan(txn: &redb::ReadTransaction) -> Result<Self> {
        let meta = txn.open_table(META).ctx("open meta table")?;
        let mut next = match meta.get(LOG_NEXT_KEY).ctx("read log position")? {
            Some(v) => decode_lsn(v.value())?,
            None => 0,
        };
        let log = txn.open_table(COMMIT_LOG).ctx("open commit_log")?;
        let (mut records, mut bytes) = (0, 0);
        for entry in log.iter().ctx("scan commit_log")? {
            let (k, v) = entry.ctx("read commit_log")?;
            next = next.max(k.value().saturating_add(1));
            records += 1;
            bytes += v.value().len() as u64;
        }
        Ok(Self { next, records, bytes, failed_at: None })
    }

    /// True once the log outgrew a threshold (counted from the last failed fold).
    pub(super) fn due(&self, t: Thresholds) -> bool {
        let (records, bytes) = self.failed_at.unwrap_or((0, 0));
        self.bytes > bytes.saturating_add(t.bytes) || self.records > records.saturating_add(t.records)
    }
}

/// Appends `record` as the next log entry; returns its sequence number.
/// Read from the table too, so that a commit whose outcome was unknown to the
/// caller (an error after the data reached the file) is never overwritten.
pub(super) fn append(txn: &WriteTransaction, next: u64, record: &[u8]) -> Result<u64> {
    let mut log = txn.open_table(COMMIT_LOG).ctx("open commit_log")?;
    let last = log.last().ctx("read commit_log")?.map(|(k, _)| k.value());
    let lsn = last.map_or(next, |k| next.max(k.saturating_add(1)));
    log.insert(lsn, record).ctx("append commit_log")?;
    Ok(lsn)
}

/// Applies every log record to the rows and `shard_meta`, then empties the
/// log; all within `txn`. A record that does not decode fails the fold and
/// leaves `txn` to be dropped, so the log stays as it was. Returns the
/// sequence number the next record takes.
///
/// The records are first merged in memory into each id's last change (the
/// same end state as applying them in order: per record and shard, removals
/// then upserts), and written in key order: a log of random updates touches
/// each row once and each leaf in one run, instead of once per update.
pub(super) fn fold(txn: &WriteTransaction, next: u64) -> Result<u64> {
    let config = fold_config();
    let mut log = txn.open_table(COMMIT_LOG).ctx("open commit_log")?;
    let last = {
        let mut records = Vec::new();
        for entry in log.iter().ctx("scan commit_log")? {
            let (k, v) = entry.ctx("read commit_log")?;
            records.push((k.value(), v));
        }
        let Some(&(last, _)) = records.last() else { return Ok(next) };
        let mut shards = BTreeMap::new();
        let mut changes = HashMap::with_hasher(RandomState::default());
        for (lsn, v) in &records {
            merge(v.value(), &config, &mut shards, &mut changes).inspect_err(|e| {
                tracing::error!(lsn, error = %e.chain(), "undecodable commit log record; not folded");
            })?;
        }
        let mut changes: Vec<_> = changes.into_iter().collect();
        changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        write_rows(txn, &shards, &changes)?;
        last
    };
    log.retain_in(..=last, |_, _| false).ctx("trim commit_log")?;
    let next = next.max(last.saturating_add(1));
    let mut meta = txn.open_table(META).ctx("open meta table")?;
    meta.insert(LOG_NEXT_KEY, &next.to_le_bytes()[..]).ctx("write log position")?;
    Ok(next)
}

/// An id's last change in the log: `None` for a removal.
type Change<'a> = Option<StubRef<'a>>;

/// Merges one record into each shard's highest sequence number and each id's last change.
fn merge<'a>(
    record: &'a [u8],
    config: &TableConfig,
    shards: &mut BTreeMap<u16, Option<u64>>,
    changes: &mut HashMap<(u16, &'a str), Change<'a>, RandomState>,
) -> Result<()> {
    for (shard, bytes) in batch::open_batch(record)? {
        let section = batch::decode_section(bytes, config)?;
        let seq = shards.entry(shard).or_insert(None);
        *seq = (*seq).max(section.applied_seq);
        for id in section.removals {
            changes.insert((shard, id), None);
        }
        for u in section.upserts {
            changes.insert((shard, u.node_id), Some(u));
        }
    }
    Ok(())
}

/// Writes merged changes, sorted by key, and raises each shard's sequence number.
fn write_rows(
    txn: &WriteTransaction,
    shards: &BTreeMap<u16, Option<u64>>,
    changes: &[((u16, &str), Change<'_>)],
) -> Result<()> {
    let mut rows = txn.open_table(GHOSTS).ctx("open ghosts")?;
    let mut meta = txn.open_table(SHARD_META).ctx("open shard_meta")?;
    let mut delta: BTreeMap<u16, i64> = BTreeMap::new();
    for &(key, change) in changes {
        let d = delta.entry(key.0).or_default();
        match change {
            None => {
                if rows.remove(key).ctx("remove ghost")?.is_some() {
                    *d -= 1;
                }
            }
            Some(u) => {
                let value = crate::codec::encode_stub_ref(u)?;
                if rows.insert(key, value.as_slice()).ctx("write ghost")?.is_none() {
                    *d += 1;
                }
            }
        }
    }
    for (&shard, &seq) in shards {
        let old = meta.get(shard).ctx("read shard meta")?.map(|v| v.value());
        let (old_seq, count) = old.unwrap_or((None, 0));
        let count = count.saturating_add_signed(delta.get(&shard).copied().unwrap_or(0));
        // `None` < `Some`: a replayed batch must not rewind the shard.
        let new = (old_seq.max(seq), count);
        if old != Some(new) {
            meta.insert(shard, new).ctx("write shard meta")?;
        }
    }
    Ok(())
}

/// Applies `shard`'s part of every log record, in order, to a freshly loaded
/// table; returns the applied sequence number raised by them.
pub(super) fn replay(
    log: &ReadOnlyTable<u64, &'static [u8]>,
    table: &mut GhostTable,
    mut applied_seq: Option<u64>,
    config: &TableConfig,
) -> Result<Option<u64>> {
    let shard = table.shard().get();
    // A section's count is not the table's size: a stub changed by several
    // staged batches appears once per batch. Ids still meet the table's limits;
    // the bytes present still bound every count.
    let config = &TableConfig { max_stubs: u32::MAX as usize, ..config.clone() };
    for entry in log.iter().ctx("scan commit_log")? {
        let (k, v) = entry.ctx("read commit_log")?;
        let lsn = k.value();
        let logged = |e: &crate::Error| {
            tracing::error!(shard, lsn, error = %e.chain(), "undecodable commit log record");
        };
        for (s, bytes) in batch::open_batch(v.value()).inspect_err(logged)? {
            if s != shard {
                continue;
            }
            let section = batch::decode_section(bytes, config).inspect_err(logged)?;
            for id in section.removals {
                table.restore_removal(id);
            }
            for u in section.upserts {
                table.restore_upsert(u)?;
            }
            applied_seq = applied_seq.max(section.applied_seq);
        }
    }
    Ok(applied_seq)
}

/// Limits for decoding a record during a fold, where no table's config is at
/// hand: as wide as any table can be, since commit accepted these ids. The
/// loading table's own limits still apply at load.
fn fold_config() -> TableConfig {
    TableConfig { max_node_id_len: u16::MAX as usize, max_stubs: u32::MAX as usize, ..TableConfig::default() }
}

fn decode_lsn(bytes: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| crate::DecodeError::Malformed(format!("log position of {} bytes", bytes.len())))?;
    Ok(u64::from_le_bytes(raw))
}
