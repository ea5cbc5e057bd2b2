//! `RedbStore`'s checkpoint: the commit log folded into the rows, and the
//! whole-shard rewrite that a fold and a `replace` share.

use super::redb_key::FoldKey;
use super::redb_schema::{COMMIT_LOG, Ctx, GHOSTS, LOG_NEXT_KEY, META, SHARD_META, shard_range};
use crate::codec;
use crate::codec::batch;
use crate::config::TableConfig;
use crate::error::Result;
use crate::stub::StubRef;
use foldhash::fast::RandomState;
use redb::{ReadableTable, Table, WriteTransaction};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// The ghosts table, open for writing.
pub(super) type Rows<'txn> = Table<'txn, (u16, &'static str), &'static [u8]>;

/// A shard is rewritten whole once its changes reach this share of its rows
/// (1/`REWRITE_SHARE`). A row changed in place costs one descent of the tree
/// and an edit of its leaf, about 1 µs at a million rows; a rewrite costs
/// about 0.55 µs per row of the shard (read, merge, and a run of inserts that
/// builds leaves whole), whether the row changed or not.
const REWRITE_SHARE: u64 = 2;

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
        // Keyed for the sort and the merge with the rows by a copy of the id's
        // first bytes: a comparison that follows an id into the records
        // misses the cache. (Keying the map itself so measured 10 % slower:
        // larger entries.)
        let mut changes: Vec<Keyed<'_>> = changes
            .into_iter()
            .map(|((shard, id), change)| Keyed { key: FoldKey::new(shard, id), change })
            .collect();
        changes.sort_unstable_by(|a, b| a.key.cmp(&b.key));
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

/// A merged change and its key.
struct Keyed<'a> {
    key: FoldKey<'a>,
    change: Change<'a>,
}

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

/// Writes merged changes, sorted by key, shard by shard, and raises each
/// shard's sequence number.
fn write_rows(
    txn: &WriteTransaction,
    shards: &BTreeMap<u16, Option<u64>>,
    changes: &[Keyed<'_>],
) -> Result<()> {
    let mut rows = txn.open_table(GHOSTS).ctx("open ghosts")?;
    let mut meta = txn.open_table(SHARD_META).ctx("open shard_meta")?;
    let mut counts = BTreeMap::new();
    for run in changes.chunk_by(|a, b| a.key.shard() == b.key.shard()) {
        let shard = run[0].key.shard();
        let count = meta.get(shard).ctx("read shard meta")?.map_or(0, |v| v.value().1);
        // The stored count may be stale (it only sizes loads); either path is
        // right whatever it says, only one of them is faster.
        let count = if run.len() as u64 * REWRITE_SHARE >= count {
            merge_shard(&mut rows, shard, run)?
        } else {
            update_rows(&mut rows, run, count)?
        };
        counts.insert(shard, count);
    }
    for (&shard, &seq) in shards {
        let old = meta.get(shard).ctx("read shard meta")?.map(|v| v.value());
        let (old_seq, count) = old.unwrap_or((None, 0));
        let count = counts.get(&shard).copied().unwrap_or(count);
        // `None` < `Some`: a replayed batch must not rewind the shard.
        let new = (old_seq.max(seq), count);
        if old != Some(new) {
            meta.insert(shard, new).ctx("write shard meta")?;
        }
    }
    Ok(())
}

/// Applies one shard's changes row by row; returns its new row count.
fn update_rows(rows: &mut Rows<'_>, run: &[Keyed<'_>], count: u64) -> Result<u64> {
    let mut count = count;
    for &Keyed { key, change } in run {
        let key = key.pair();
        match change {
            None => {
                if rows.remove(key).ctx("remove ghost")?.is_some() {
                    count = count.saturating_sub(1);
                }
            }
            Some(u) => {
                let value = codec::encode_stub_ref(u)?;
                if rows.insert(key, value.as_slice()).ctx("write ghost")?.is_none() {
                    count = count.saturating_add(1);
                }
            }
        }
    }
    Ok(count)
}

/// Rows gathered in key order into two buffers, to be written back as one run.
#[derive(Default)]
pub(super) struct SortedRows {
    ids: String,
    values: Vec<u8>,
    /// Where each row's id and value end in the buffers.
    ends: Vec<(usize, usize)>,
}

impl SortedRows {
    /// Adds a row whose value is already encoded; ids must come in ascending order.
    fn push_encoded(&mut self, id: &str, value: &[u8]) {
        self.ids.push_str(id);
        self.values.extend_from_slice(value);
        self.ends.push((self.ids.len(), self.values.len()));
    }

    /// Adds a stub, encoding it as a row; ids must come in ascending order.
    pub(super) fn push_stub(&mut self, stub: StubRef<'_>) {
        self.push_stub_as(stub.node_id, stub);
    }

    /// [`push_stub`](Self::push_stub) with the id read from `id`, equal to the stub's.
    fn push_stub_as(&mut self, id: &str, stub: StubRef<'_>) {
        self.ids.push_str(id);
        codec::append_stub_as(&mut self.values, id, stub);
        self.ends.push((self.ids.len(), self.values.len()));
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let starts = std::iter::once((0, 0)).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|((i0, v0), &(i1, v1))| (&self.ids[i0..i1], &self.values[v0..v1]))
    }
}

/// Applies one shard's changes by reading its rows, merging the changes in,
/// and writing the result back whole; returns its new row count.
fn merge_shard(rows: &mut Rows<'_>, shard: u16, run: &[Keyed<'_>]) -> Result<u64> {
    let mut merged = SortedRows::default();
    merged.ends.reserve(run.len());
    let mut pending = run.iter().peekable();
    for row in rows.range(shard_range(shard)).ctx("scan ghosts")? {
        let (key, value) = row.ctx("read ghost row")?;
        let (_, id) = key.value();
        let row = FoldKey::new(shard, id);
        let order = |c: &&Keyed<'_>| c.key.cmp(&row);
        // Changes to ids this shard does not hold come first (a removal of
        // one is a no-op).
        while let Some(c) = pending.next_if(|c| order(c).is_lt()) {
            if let Some(u) = c.change {
                merged.push_stub(u);
            }
        }
        match pending.next_if(|c| order(c).is_eq()) {
            Some(Keyed { change: Some(u), .. }) => merged.push_stub_as(id, *u),
            Some(Keyed { change: None, .. }) => {}
            None => merged.push_encoded(id, value.value()),
        }
    }
    for c in pending {
        if let Some(u) = c.change {
            merged.push_stub(u);
        }
    }
    write_shard(rows, shard, &merged)?;
    Ok(merged.ends.len() as u64)
}

/// Replaces every row of `shard` by `sorted`: one deletion of the shard's
/// range, then one run of inserts into the gap it leaves, which redb buffers
/// and splices in as whole leaves instead of descending the tree once a row.
pub(super) fn write_shard(rows: &mut Rows<'_>, shard: u16, sorted: &SortedRows) -> Result<()> {
    rows.retain_in(shard_range(shard), |_, _| false).ctx("clear shard")?;
    let mut gap = rows.lower_bound_mut(Bound::Included((shard, ""))).ctx("seek shard")?;
    for (id, value) in sorted.iter() {
        // Refused (`UnorderedKey`) if the ids were not strictly ascending.
        gap.insert_before((shard, id), value).ctx("write ghost")?;
    }
    gap.close().ctx("write ghosts")
}

/// Limits for decoding a record during a fold, where no table's config is at
/// hand: as wide as any table can be, since commit accepted these ids. The
/// loading table's own limits still apply at load.
fn fold_config() -> TableConfig {
    TableConfig { max_node_id_len: u16::MAX as usize, max_stubs: u32::MAX as usize, ..TableConfig::default() }
}
