//! The redb file of a `RedbStore`: its tables, its format marker, and the checks that adopt a file.

use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use std::io::Read;
use std::ops::Bound;
use std::path::Path;

/// Marks a redb file as a ghost store: table name, key, and the value written at creation.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("vshard_ghosts_meta");
const FORMAT_KEY: &str = "format";
/// Files with a commit log. Older builds know only [`FORMAT_V1`] and refuse
/// this one, rather than load the rows without the log (stale state).
const FORMAT: &[u8] = b"vshard-ghosts/2";
/// Files without a commit log; adopted and upgraded to [`FORMAT`] at open.
const FORMAT_V1: &[u8] = b"vshard-ghosts/1";
/// Meta key: the sequence number the next log record takes (u64, LE), kept
/// once the log is emptied so numbers are never reused.
pub(super) const LOG_NEXT_KEY: &str = "commit_log_next";
/// One row per stub: `(shard, node id)` → `codec::encode_stub` bytes.
pub(super) const GHOSTS: TableDefinition<(u16, &str), &[u8]> = TableDefinition::new("ghosts");
/// One row per shard: shard → (applied sequence number, number of its rows in `GHOSTS`).
pub(super) const SHARD_META: TableDefinition<u16, (Option<u64>, u64)> = TableDefinition::new("shard_meta");
/// A range of `GHOSTS` keys.
pub(super) type KeyBounds = (Bound<(u16, &'static str)>, Bound<(u16, &'static str)>);

/// All keys of `shard` in `GHOSTS`.
pub(super) fn shard_range(shard: u16) -> KeyBounds {
    let end = match shard.checked_add(1) {
        Some(next) => Bound::Excluded((next, "")),
        None => Bound::Unbounded,
    };
    (Bound::Included((shard, "")), end)
}

/// One record per commit not yet folded into `GHOSTS`: log sequence number → batch.
pub(super) const COMMIT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("commit_log");

/// The first bytes of every redb file (redb's `docs/design.md`, "Database header").
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Checks the format marker, or writes it (and the empty tables) into a new file.
pub(super) fn adopt(db: &Database, path: &Path) -> Result<()> {
    let not_ours = |why: &str| Error::NotAStore(format!("{}: {why}", path.display()));
    let txn = db.begin_read().ctx("begin read")?;
    match txn.open_table(META) {
        Ok(meta) => {
            return match meta.get(FORMAT_KEY).ctx("read format marker")? {
                Some(v) if v.value() == FORMAT => Ok(()),
                Some(v) if v.value() == FORMAT_V1 => {
                    drop((v, meta, txn));
                    write_schema(db, "upgrade to the commit log")
                }
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
    write_schema(db, "create the tables")
}

/// Creates the missing tables and writes the format marker, in one transaction.
fn write_schema(db: &Database, what: &str) -> Result<()> {
    let txn = db.begin_write().ctx("begin write")?;
    txn.open_table(META).ctx(what)?.insert(FORMAT_KEY, FORMAT).ctx(what)?;
    // Created now so that loads never meet a missing table.
    txn.open_table(GHOSTS).ctx(what)?;
    txn.open_table(SHARD_META).ctx(what)?;
    txn.open_table(COMMIT_LOG).ctx(what)?;
    txn.commit().ctx(what)
}

/// Rejects an existing, non-empty file that does not start with redb's magic.
pub(super) fn check_magic(path: &Path) -> Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::store_from(format!("open {}", path.display()), e)),
    };
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    file.take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::store_from(format!("read {}", path.display()), e))?;
    if head.is_empty() || head == REDB_MAGIC {
        return Ok(());
    }
    Err(Error::NotAStore(format!("{}: not a redb database (starts with {:02x?})", path.display(), head)))
}

pub(super) fn store_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::store_from(format!("redb {what}"), e)
}

/// Adds context to a redb error and turns it into [`Error::Store`].
pub(super) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| store_err(what, e))
    }
}
