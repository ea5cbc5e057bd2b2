//! `RedbStore`: the embedded default `GhostStore`, one crash-safe redb file for all shards of a process.

use super::redb_fold::{self, SortedRows};
use super::redb_log::{self, LogState, Thresholds};
use super::redb_schema::{COMMIT_LOG, Ctx, GHOSTS, SHARD_META, adopt, check_magic, shard_range};
use super::{GhostStore, ShardChanges};
use crate::codec;
use crate::codec::batch;
use crate::config::TableConfig;
use crate::error::{DecodeError, Error, Result};
use crate::ids::ShardId;
use crate::table::{GhostTable, TableMemory};
use redb::{Builder, Database, DatabaseError, ReadableDatabase, ReadableTableMetadata, StorageError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// A [`GhostStore`] in one redb database file shared by all shards of a process.
///
/// Every commit is one redb write transaction with redb's default durability
/// (fsynced before it returns), so a crash keeps either all or none of a batch.
///
/// # Log-structured commits
///
/// A commit appends ONE record, the whole batch, at the end of `"commit_log"`:
/// appending touches one B-tree leaf, where updating ~1000 random rows in
/// place would copy ~1000 leaves. A load reads the shard's rows, then replays
/// its part of every record in order. Once the log holds more than
/// [`checkpoint_bytes`](Self::with_checkpoint_bytes) of records or more than
/// [`checkpoint_records`](Self::with_checkpoint_records) records, the commit
/// that crossed the threshold folds it, after its own record is durable: one
/// transaction applies every record to `"ghosts"` and `"shard_meta"` (per
/// shard: removals, upserts, sequence number raised) and deletes the records.
/// A fold that fails (an undecodable record) leaves the log as it was, is
/// logged, and is tried again once the log has grown by another threshold;
/// the commit itself has succeeded. [`replace`](GhostStore::replace) folds
/// the log first, in the same transaction, so that no older record replays
/// over the new contents.
///
/// # Schema
///
/// | table | key | value |
/// |---|---|---|
/// | `"vshard_ghosts_meta"` | `&str` | `&[u8]`; `"format"` holds `b"vshard-ghosts/2"`, `"commit_log_next"` the next log sequence number (u64 LE) once a fold emptied the log |
/// | `"ghosts"` | `(u16, &str)`: shard, node id | `&[u8]`: [`codec::encode_stub`] of the stub |
/// | `"shard_meta"` | `u16`: shard | `(Option<u64>, u64)`: applied sequence number, row count |
/// | `"commit_log"` | `u64`: log sequence number, rising | `&[u8]`: the batch, MessagePack in the codec's envelope (kind 3) |
///
/// A shard's state is its rows and `shard_meta` row with every log record
/// applied in key order. A shard without a `shard_meta` row and without log
/// entries has no applied sequence number and no rows. The row count only
/// sizes the table on load (the rows are the truth), so a wrong count costs
/// speed, not correctness. A file without the format marker is only adopted
/// when it holds no table at all; a `vshard-ghosts/1` file (no log) is
/// upgraded in place.
///
/// Costs: a commit is one append and one fsync. A load replays the whole
/// log, so the thresholds bound its extra time (a full default log is ~2.6M
/// stub updates of ~25 bytes, on the order of a second). A fold merges the
/// records in memory (about twice the log's size) into each id's last change.
/// A shard whose changes reach half its rows is then read, merged and written
/// back whole as one sorted run, which redb builds leaf by leaf (a copy of
/// the shard's rows is held meanwhile); any other shard's changed rows are
/// written one by one, in key order. A fold runs on the committing (writer)
/// thread and delays the commits queued behind it for as long (about a second
/// for a full log of random updates to a million-ghost shard).
///
/// A log record whose envelope does not open (checksum, length, kind) fails
/// every load with [`Error::Decode`]; a well-sealed record whose contents do
/// not decode fails the loads of the shards it concerns. Either fails every
/// fold, and so every `replace`. Its bytes stay untouched.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    log: Mutex<LogState>,
    thresholds: Thresholds,
}

impl RedbStore {
    /// Default redb cache, in bytes: 256 MiB. redb holds at most half of it as
    /// the write buffer of a transaction, so a commit of ~1M ghosts stays in
    /// memory until it is flushed, while a long-running process caches less
    /// than redb's own default of 1 GiB.
    pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

    /// Default log size that triggers a checkpoint: 64 MiB of records. A fold
    /// rewrites every row leaf that the log touches, so a longer log makes
    /// folds rarer and cheaper per commit, at the cost of replay time on load
    /// and file space.
    pub const DEFAULT_CHECKPOINT_BYTES: u64 = 64 << 20;

    /// Default number of log records that triggers a checkpoint, whatever
    /// their size: bounds a load's replay when commits are small.
    pub const DEFAULT_CHECKPOINT_RECORDS: u64 = 1 << 16;

    /// Opens the store at `path`, creating it if missing (its directory must
    /// exist), with a cache of [`DEFAULT_CACHE_BYTES`](Self::DEFAULT_CACHE_BYTES).
    ///
    /// Fails with [`Error::NotAStore`] for a file that is not a redb database or
    /// is another application's redb database, and with [`Error::Store`] for I/O
    /// errors or a file already open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_cache(path, Self::DEFAULT_CACHE_BYTES)
    }

    /// [`open`](Self::open) with a redb cache of `cache_bytes`.
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        // Checked before redb sees the file, so that a foreign file is never written to.
        check_magic(&path)?;
        let db = Builder::new().set_cache_size(cache_bytes).create(&path).map_err(|e| match e {
            DatabaseError::Storage(StorageError::Corrupted(m)) => {
                Error::NotAStore(format!("{}: corrupt redb file: {m}", path.display()))
            }
            e => Error::store_from(format!("open {}", path.display()), e),
        })?;
        let mut store = Self {
            db,
            path,
            log: Mutex::new(LogState::default()),
            thresholds: Thresholds {
                bytes: Self::DEFAULT_CHECKPOINT_BYTES,
                records: Self::DEFAULT_CHECKPOINT_RECORDS,
            },
        };
        adopt(&store.db, &store.path)?;
        let txn = store.db.begin_read().ctx("begin read")?;
        let log = LogState::scan(&txn)?;
        drop(txn);
        let pending = log.records > 0;
        *store.log.get_mut().unwrap_or_else(|p| p.into_inner()) = log;
        // Fold once here rather than have every shard's load replay the whole log.
        // A record that cannot be folded stays: the shards it holds fail closed on load.
        if pending && let Err(e) = store.checkpoint() {
            tracing::warn!(path = %store.path.display(), error = %e.chain(), "commit log left unfolded at open");
        }
        Ok(store)
    }

    /// Folds the log once it holds more than `bytes` bytes of records (0: after
    /// every commit). Default: [`DEFAULT_CHECKPOINT_BYTES`](Self::DEFAULT_CHECKPOINT_BYTES).
    pub fn with_checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.thresholds.bytes = bytes;
        self
    }

    /// Folds the log once it holds more than `records` records (0: after every
    /// commit). Default: [`DEFAULT_CHECKPOINT_RECORDS`](Self::DEFAULT_CHECKPOINT_RECORDS).
    pub fn with_checkpoint_records(mut self, records: u64) -> Self {
        self.thresholds.records = records;
        self
    }

    /// Folds the whole log into the rows now, in one transaction. Fails with
    /// [`Error::Decode`] on an undecodable record, leaving the log as it was.
    pub fn checkpoint(&self) -> Result<()> {
        self.fold_locked(&mut self.lock_log())
    }

    /// Folds the log in a transaction of its own; `log` is the held writer lock.
    fn fold_locked(&self, log: &mut LogState) -> Result<()> {
        let start = std::time::Instant::now();
        let txn = self.db.begin_write().ctx("begin write")?;
        let next = redb_fold::fold(&txn, log.next)?;
        txn.commit().ctx("commit checkpoint")?;
        // Seconds for a full log: worth seeing next to the commit latencies it delays.
        tracing::info!(records = log.records, bytes = log.bytes, took = ?start.elapsed(), "checkpoint");
        *log = LogState { next, ..LogState::default() };
        Ok(())
    }

    /// Records in the commit log, not yet folded into the rows.
    pub fn log_records(&self) -> u64 {
        self.lock_log().records
    }

    /// Bytes of the records in the commit log.
    pub fn log_bytes(&self) -> u64 {
        self.lock_log().bytes
    }

    /// Serializes writers, so that the log's extent is known without reading it.
    fn lock_log(&self) -> MutexGuard<'_, LogState> {
        // The state is only updated after a transaction committed; a panic in
        // between leaves it stale by at most that commit, which only shifts
        // when the next checkpoint happens.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the database file in bytes.
    pub fn file_size(&self) -> Result<u64> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| Error::store_from(format!("stat {}", self.path.display()), e))
    }
}

impl GhostStore for RedbStore {
    fn load(&self, id: ShardId, config: &TableConfig) -> Result<GhostTable> {
        self.load_reusing(id, config, TableMemory::default())
    }

    fn load_reusing(&self, id: ShardId, config: &TableConfig, memory: TableMemory) -> Result<GhostTable> {
        let shard = id.get();
        let txn = self.db.begin_read().ctx("begin read")?;
        let (applied_seq, count) = txn
            .open_table(SHARD_META)
            .ctx("open shard_meta")?
            .get(shard)
            .ctx("read shard meta")?
            .map_or((None, 0), |v| v.value());
        let rows = txn.open_table(GHOSTS).ctx("open ghosts")?;
        // Sizing up front saves a third of a large load (no rehashing); the stored
        // count is bounded by what the file holds so a bad one cannot over-allocate.
        let total = rows.len().ctx("count ghosts")?;
        let capacity = count.min(total).min(config.max_stubs as u64) as usize;
        // Rows are keyed by id and each row's id is checked against its key, so
        // no id repeats. Indexed once here; the log then applies to the indexed table.
        let mut table =
            GhostTable::load_distinct(id, config.clone(), capacity, applied_seq, memory, |load| {
                for row in rows.range(shard_range(shard)).ctx("scan ghosts")? {
                    let (key, value) = row.ctx("read ghost row")?;
                    let (_, id) = key.value();
                    let value = value.value();
                    let decoded = codec::decode_stub_ref(value, config).and_then(|r| {
                        if r.node_id == id {
                            Ok(r)
                        } else {
                            let why = format!("row for {id:?} holds a stub for {:?}", r.node_id);
                            Err(DecodeError::Malformed(why).into())
                        }
                    });
                    let r = decoded.inspect_err(|e| {
                        tracing::error!(shard, node_id = id, error = %e.chain(), "undecodable ghost row");
                    })?;
                    load.push(r)?;
                }
                Ok(())
            })?;
        let log = txn.open_table(COMMIT_LOG).ctx("open commit_log")?;
        let applied_seq = redb_log::replay(&log, &mut table, applied_seq, config)?;
        table.finish_restore(applied_seq);
        Ok(table)
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Encoded before the transaction opens, so that it stays short and an
        // encoding failure leaves nothing half-written.
        let record = batch::encode_batch(batch)?;
        let mut log = self.lock_log();
        let txn = self.db.begin_write().ctx("begin write")?;
        let lsn = redb_log::append(&txn, log.next, &record)?;
        txn.commit().ctx("commit")?;
        log.next = lsn + 1;
        log.records += 1;
        log.bytes += record.len() as u64;
        if log.due(self.thresholds) {
            // The batch is durable whatever happens here: a failed fold is
            // reported and retried later, never turned into a failed commit.
            if let Err(e) = self.fold_locked(&mut log) {
                tracing::error!(error = %e.chain(), records = log.records, bytes = log.bytes, "checkpoint failed");
                log.failed_at = Some((log.records, log.bytes));
            }
        }
        Ok(())
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        let shard = table.shard().get();
        let mut sorted: Vec<_> = table.rows().collect();
        sorted.sort_unstable_by(|a, b| a.node_id.cmp(b.node_id));
        let mut encoded = SortedRows::default();
        for r in sorted {
            encoded.push_stub(r);
        }
        let mut log = self.lock_log();
        let txn = self.db.begin_write().ctx("begin write")?;
        // Folded first, so that no older record of this shard replays over the
        // new contents; one transaction keeps the replacement atomic.
        let next = redb_fold::fold(&txn, log.next)?;
        {
            let mut rows = txn.open_table(GHOSTS).ctx("open ghosts")?;
            redb_fold::write_shard(&mut rows, shard, &encoded)?;
            let new = (table.applied_seq(), table.row_count() as u64);
            let mut meta = txn.open_table(SHARD_META).ctx("open shard_meta")?;
            meta.insert(shard, new).ctx("write shard meta")?;
        }
        txn.commit().ctx("commit")?;
        *log = LogState { next, ..LogState::default() };
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redb"
    }
}
