//! `EtcdStore`'s group commits: each shard's changes as one record appended to its log, all
//! the batch's shards in one guarded transaction unless etcd's limits split it.
//!
//! A record goes into one log entry when it fits one transaction, else into a group of
//! entries in as many transactions as they take, which a load counts only once all are
//! present (`log.rs`): each shard's changes are all-or-nothing either way. Every entry is
//! created under a compare that its key is new, beside the compares of its shards' claims.

use super::log;
use super::plan::{self, Group, Limits, Op, ShardWrites};
use super::state::{Cursor, Inner, State};
use crate::codec::batch;
use crate::error::Result;
use crate::table::ShardChanges;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Encodes a batch as one log record per shard (its changes in batch order).
pub(super) fn records(batch: &[ShardChanges]) -> Result<Vec<(u16, Vec<u8>)>> {
    let mut by_shard: BTreeMap<u16, Vec<&ShardChanges>> = BTreeMap::new();
    for sc in batch {
        by_shard.entry(sc.shard.get()).or_default().push(sc);
    }
    by_shard
        .into_iter()
        .map(|(shard, parts)| {
            let record = match parts.as_slice() {
                [one] => batch::encode_batch(std::slice::from_ref(*one))?,
                many => batch::encode_batch(&many.iter().map(|sc| (*sc).clone()).collect::<Vec<_>>())?,
            };
            Ok((shard, record))
        })
        .collect()
}

impl Inner {
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_ops: self.config.max_txn_ops,
            max_bytes: self.config.max_txn_bytes,
            compare_bytes: self.keys.owner(0).len() + 16,
        }
    }

    /// Appends each shard's record to its log; returns the shards whose log
    /// is now due for a checkpoint, with where they stand.
    pub(super) async fn commit(&self, records: Vec<(u16, Vec<u8>)>) -> Result<Vec<(u16, Cursor)>> {
        let mut st = self.state.lock().await;
        #[cfg(feature = "testing")]
        {
            let limit = self.commit_fault.load(Ordering::Relaxed);
            st.budget = (limit != usize::MAX).then_some(limit);
        }
        let shards: Vec<u16> = records.iter().map(|(s, _)| *s).collect();
        let result = self.append(&mut st, records).await;
        if result.is_err() {
            // Which parts landed is unknown: read where the shards stand before the next write.
            Inner::forget(&mut st, shards);
        }
        #[cfg(feature = "testing")]
        {
            st.budget = None;
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn append(&self, st: &mut State, records: Vec<(u16, Vec<u8>)>) -> Result<Vec<(u16, Cursor)>> {
        let limits = self.limits();
        let mut writes = Vec::with_capacity(records.len());
        let mut afters = Vec::with_capacity(records.len());
        for (shard, record) in records {
            let (_, cursor) = self.owned(st, shard).await?;
            let key_len = self.keys.log_entry(shard, 0).len();
            let entries = log::encode(cursor.next, &record, plan::value_budget(limits, key_len));
            let bytes: u64 = entries.iter().map(|e| e.len() as u64).sum();
            let after = Cursor {
                next: cursor.next + entries.len() as u64,
                log_bytes: cursor.log_bytes + bytes,
                ..cursor
            };
            self.counters.log_entries.fetch_add(entries.len() as u64, Ordering::Relaxed);
            let mut groups: Vec<Group> = (cursor.next..)
                .zip(entries)
                .map(|(index, value)| {
                    Group::one(Op::Create { key: self.keys.log_entry(shard, index), value })
                })
                .collect();
            if let Some(last) = groups.last_mut() {
                last.after = Some(after);
            }
            writes.push(ShardWrites { shard, groups });
            afters.push((shard, after));
        }
        for part in plan::split(writes, limits) {
            self.run_part(st, part).await?;
        }
        Ok(afters.into_iter().filter(|(_, c)| self.fold_due(c)).collect())
    }
}
