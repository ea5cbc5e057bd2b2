//! `EtcdStore`'s checkpoints: a shard's whole table as a snapshot, in chunks under a new
//! generation, switched to in one guarded transaction that also deletes the old
//! checkpoint and the log entries it folds; then, now and then, a compaction of etcd's
//! history so that what the switch deleted stops taking space.

use super::keys::{Meta, prefix_end};
use super::plan::{self, Group, Op, Part, ShardWrites};
use super::state::{Cursor, Inner, State};
use crate::error::{Error, Result};
use std::sync::atomic::Ordering;

impl Inner {
    /// True once `cursor`'s log outgrew the bound: a share of the checkpoint's
    /// size, and at least the configured floor.
    pub(super) fn fold_due(&self, cursor: &Cursor) -> bool {
        let share = cursor.meta.bytes.saturating_mul(u64::from(self.config.checkpoint_log_percent)) / 100;
        cursor.log_bytes > share.max(self.config.checkpoint_min_bytes)
    }

    /// Writes `snapshot` as `shard`'s checkpoint, folding every log entry, if
    /// the shard still stands at `expected` (else another write came between
    /// the read that `snapshot` was made from and this one: nothing is
    /// written, and `Ok(false)`). `None`: whatever the log holds (a replace).
    pub(super) async fn write_checkpoint(
        &self,
        shard: u16,
        expected: Option<Cursor>,
        snapshot: Vec<u8>,
    ) -> Result<bool> {
        let mut st = self.state.lock().await;
        let (_, cursor) = self.owned(&mut st, shard).await?;
        if expected.is_some_and(|e| e != cursor) {
            return Ok(false);
        }
        let result = self.switch(&mut st, shard, cursor, snapshot).await;
        if result.is_err() {
            Inner::forget(&mut st, [shard]);
        }
        let revision = result?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.maybe_compact(&mut st, revision).await;
        Ok(true)
    }

    async fn switch(&self, st: &mut State, shard: u16, cursor: Cursor, snapshot: Vec<u8>) -> Result<i64> {
        let old = cursor.meta;
        let generation =
            old.generation.checked_add(1).ok_or(Error::CapacityExceeded("checkpoint generations"))?;
        let prefix = self.keys.checkpoint(shard, generation);
        // Leftovers of a checkpoint cut short: cleared alone, since etcd refuses
        // a put into a range that the same transaction deletes.
        let clear = Part {
            shards: vec![shard],
            ops: vec![Op::DeleteRange { end: prefix_end(&prefix), key: prefix }],
            after: Vec::new(),
        };
        self.run_part(st, clear).await?;
        let limits = self.limits();
        let budget =
            plan::value_budget(limits, self.keys.checkpoint_chunk(shard, generation, 0).len()).max(1);
        let pieces: Vec<&[u8]> = snapshot.chunks(budget).collect();
        let chunks = u32::try_from(pieces.len()).map_err(|_| Error::CapacityExceeded("checkpoint chunks"))?;
        let mut groups: Vec<Group> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let key = self.keys.checkpoint_chunk(shard, generation, i as u32);
                Group::one(Op::Put { key, value: piece.to_vec() })
            })
            .collect();
        // The switch: the new metadata, the old checkpoint's and the folded
        // entries' removal, in one transaction.
        let upto = cursor.next;
        let meta = Meta { generation, chunks, bytes: snapshot.len() as u64, log_from: upto };
        let old_prefix = self.keys.checkpoint(shard, old.generation);
        let switch = vec![
            Op::DeleteRange { end: prefix_end(&old_prefix), key: old_prefix },
            Op::DeleteRange { key: self.keys.log(shard), end: self.keys.log_entry(shard, upto) },
            Op::Put { key: self.keys.meta(shard), value: meta.encode() },
        ];
        let after = Cursor { meta, next: upto, log_bytes: 0 };
        groups.push(Group { ops: switch, after: Some(after) });
        let mut revision = 0;
        for part in plan::split(vec![ShardWrites { shard, groups }], limits) {
            revision = self.run_part(st, part).await?;
        }
        Ok(revision)
    }

    /// Compacts etcd's history up to `revision` once it moved on by the
    /// configured step since this store last did: what checkpoints deleted
    /// or replaced then stops taking space. A failure is only logged (the
    /// next checkpoint tries again).
    async fn maybe_compact(&self, st: &mut State, revision: i64) {
        let every = self.config.compact_every_revisions;
        if every == 0 || revision - st.compacted < every as i64 {
            return;
        }
        let mut kv = self.kv.clone();
        match tokio::time::timeout(self.config.op_timeout, kv.compact(revision, None)).await {
            Ok(Ok(_)) => {
                st.compacted = revision;
                self.counters.compactions.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(revision, "compacted etcd's history");
            }
            // Another client compacted past it already: as good.
            Ok(Err(e)) if e.to_string().contains("required revision has been compacted") => {
                st.compacted = revision;
            }
            Ok(Err(e)) => tracing::warn!(revision, error = %e, "etcd compaction failed"),
            Err(_) => tracing::warn!(revision, "etcd compaction: no answer in time"),
        }
    }
}
