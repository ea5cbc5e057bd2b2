//! `RedbStore`: the embedded default `GhostStore`, one crash-safe redb file for all shards of a process.

use super::{GhostStore, ShardChanges};
use crate::codec;
use crate::config::TableConfig;
use crate::error::{DecodeError, Error, Result};
use crate::table::GhostTable;
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageError,
    TableDefinition, TableError,
};
use std::io::Read;
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// Marks a redb file as a ghost store: table name, key, and the value written at creation.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("vshard_ghosts_meta");
const FORMAT_KEY: &str = "format";
const FORMAT: &[u8] = b"vshard-ghosts/1";
/// One row per stub: `(shard, node id)` → `codec::encode_stub` bytes.
const GHOSTS: TableDefinition<(u16, &str), &[u8]> = TableDefinition::new("ghosts");
/// One row per shard: shard → (applied sequence number, number of its rows in `GHOSTS`).
const SHARD_META: TableDefinition<u16, (Option<u64>, u64)> = TableDefinition::new("shard_meta");

/// The first bytes of every redb file (redb's `docs/design.md`, "Database header").
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// A [`GhostStore`] in one redb database file shared by all shards of a process.
///
/// Every commit is one redb write transaction with redb's default durability
/// (fsynced before it returns), so a crash keeps either all or none of a batch.
///
/// # Schema
///
/// | table | key | value |
/// |---|---|---|
/// | `"vshard_ghosts_meta"` | `&str` | `&[u8]`; key `"format"` holds `b"vshard-ghosts/1"` |
/// | `"ghosts"` | `(u16, &str)`: shard, node id | `&[u8]`: [`codec::encode_stub`] of the stub |
/// | `"shard_meta"` | `u16`: shard | `(Option<u64>, u64)`: applied sequence number, row count |
///
/// A shard without a `shard_meta` row has no applied sequence number and no
/// rows. The row count only sizes the table on load (the rows are the truth),
/// so a wrong count costs speed, not correctness. A file without the format
/// marker is only adopted when it holds no table at all.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Default redb cache, in bytes: 256 MiB. redb holds at most half of it as
    /// the write buffer of a transaction, so a commit of ~1M ghosts stays in
    /// memory until it is flushed, while a long-running process caches less
    /// than redb's own default of 1 GiB.
    pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

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
            e => Error::Store(format!("open {}: {e}", path.display())),
        })?;
        let store = Self { db, path };
        store.adopt()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the database file in bytes.
    pub fn file_size(&self) -> Result<u64> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| Error::Store(format!("stat {}: {e}", self.path.display())))
    }

    /// Checks the format marker, or writes it (and the empty tables) into a new file.
    fn adopt(&self) -> Result<()> {
        let not_ours = |why: &str| Error::NotAStore(format!("{}: {why}", self.path.display()));
        let txn = self.db.begin_read().ctx("begin read")?;
        match txn.open_table(META) {
            Ok(meta) => {
                return match meta.get(FORMAT_KEY).ctx("read format marker")? {
                    Some(v) if v.value() == FORMAT => Ok(()),
                    Some(v) => Err(not_ours(&format!(
                        "unsupported format marker {:?}",
                        String::from_utf8_lossy(v.value())
                    ))),
                    None => Err(not_ours("no format marker")),
                };
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(TableError::TableTypeMismatch { .. } | TableError::TableIsMultimap(_)) => {
                return Err(not_ours("foreign meta table"));
            }
            Err(e) => return Err(store_err("open meta table", e)),
        }
        let tables = txn.list_tables().ctx("list tables")?.count();
        let multimaps = txn.list_multimap_tables().ctx("list tables")?.count();
        if tables + multimaps > 0 {
            return Err(not_ours("redb database of another application"));
        }
        drop(txn);
        let txn = self.db.begin_write().ctx("begin write")?;
        txn.open_table(META)
            .ctx("create meta table")?
            .insert(FORMAT_KEY, FORMAT)
            .ctx("write format marker")?;
        // Created now so that loads never meet a missing table.
        txn.open_table(GHOSTS).ctx("create ghosts table")?;
        txn.open_table(SHARD_META).ctx("create shard_meta table")?;
        txn.commit().ctx("commit format marker")
    }
}

impl GhostStore for RedbStore {
    fn load(&self, shard: u16, config: &TableConfig) -> Result<GhostTable> {
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
        let mut table = GhostTable::with_capacity(shard, config.clone(), capacity)?;
        for row in rows.range(shard_range(shard)).ctx("scan ghosts")? {
            let (key, value) = row.ctx("read ghost row")?;
            let (_, id) = key.value();
            let decoded = codec::decode_stub(value.value(), config).and_then(|r| {
                if r.node_id == id {
                    Ok(r)
                } else {
                    let why = format!("row for {id:?} holds a stub for {:?}", r.node_id);
                    Err(DecodeError::Malformed(why).into())
                }
            });
            let r = decoded.inspect_err(|e| {
                tracing::error!(shard, node_id = id, error = %e, "undecodable ghost row");
            })?;
            table.load_stub(id, r.target_shard, r.refcount, r.created_at_ms, r.epoch)?;
        }
        table.finish_load(applied_seq)?;
        Ok(table)
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Encoded before the transaction opens, so that it stays short and an
        // encoding failure leaves nothing half-written.
        let encoded = batch
            .iter()
            .map(|sc| sc.changes.upserts.iter().map(codec::encode_stub).collect())
            .collect::<Result<Vec<Vec<_>>>>()?;
        let txn = self.db.begin_write().ctx("begin write")?;
        {
            let mut rows = txn.open_table(GHOSTS).ctx("open ghosts")?;
            let mut meta = txn.open_table(SHARD_META).ctx("open shard_meta")?;
            for (sc, values) in batch.iter().zip(&encoded) {
                let old = meta.get(sc.shard).ctx("read shard meta")?.map(|v| v.value());
                let (seq, mut count) = old.unwrap_or((None, 0));
                for id in &sc.changes.removals {
                    if rows.remove((sc.shard, &**id)).ctx("remove ghost")?.is_some() {
                        count = count.saturating_sub(1);
                    }
                }
                for (r, v) in sc.changes.upserts.iter().zip(values) {
                    let key = (sc.shard, r.node_id.as_str());
                    if rows.insert(key, v.as_slice()).ctx("write ghost")?.is_none() {
                        count += 1;
                    }
                }
                // Only raise (`None` < `Some`): a replayed batch must not rewind the shard.
                let new = (seq.max(sc.changes.applied_seq), count);
                if old != Some(new) {
                    meta.insert(sc.shard, new).ctx("write shard meta")?;
                }
            }
        }
        txn.commit().ctx("commit")
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        let shard = table.shard();
        let encoded =
            table.records().map(|r| Ok((codec::encode_stub(&r)?, r.node_id))).collect::<Result<Vec<_>>>()?;
        let txn = self.db.begin_write().ctx("begin write")?;
        {
            let mut rows = txn.open_table(GHOSTS).ctx("open ghosts")?;
            rows.retain_in(shard_range(shard), |_, _| false).ctx("clear shard")?;
            for (v, id) in &encoded {
                rows.insert((shard, id.as_str()), v.as_slice()).ctx("write ghost")?;
            }
            let new = (table.applied_seq(), encoded.len() as u64);
            let mut meta = txn.open_table(SHARD_META).ctx("open shard_meta")?;
            meta.insert(shard, new).ctx("write shard meta")?;
        }
        txn.commit().ctx("commit")
    }

    fn kind(&self) -> &'static str {
        "redb"
    }
}

type KeyBounds = (Bound<(u16, &'static str)>, Bound<(u16, &'static str)>);

/// All keys of `shard` in the ghosts table.
fn shard_range(shard: u16) -> KeyBounds {
    let end = match shard.checked_add(1) {
        Some(next) => Bound::Excluded((next, "")),
        None => Bound::Unbounded,
    };
    (Bound::Included((shard, "")), end)
}

/// Rejects an existing, non-empty file that does not start with redb's magic.
fn check_magic(path: &Path) -> Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Store(format!("open {}: {e}", path.display()))),
    };
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    file.take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::Store(format!("read {}: {e}", path.display())))?;
    if head.is_empty() || head == REDB_MAGIC {
        return Ok(());
    }
    Err(Error::NotAStore(format!("{}: not a redb database (starts with {:02x?})", path.display(), head)))
}

fn store_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("redb {what}: {e}"))
}

/// Adds context to a redb error and turns it into [`Error::Store`].
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| store_err(what, e))
    }
}
