//! `RedbStore`'s commit log: append one record per commit, replay it on load
//! (folding it into the rows is `redb_fold.rs`).

use super::redb_schema::{COMMIT_LOG, Ctx, LOG_NEXT_KEY, META};
use crate::codec::batch;
use crate::config::TableConfig;
use crate::error::Result;
use crate::table::GhostTable;
use redb::{ReadOnlyTable, ReadableTable, WriteTransaction};

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

pub(super) fn decode_lsn(bytes: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| crate::DecodeError::Malformed(format!("log position of {} bytes", bytes.len())))?;
    Ok(u64::from_le_bytes(raw))
}
