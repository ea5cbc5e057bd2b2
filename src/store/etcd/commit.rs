//! `EtcdStore`'s commits, all-or-nothing at any size: each shard's changes in one
//! transaction when they fit, else through an intent that a later load finishes.
//!
//! A shard's changes too large for one transaction are committed in four steps:
//!
//! 1. the merged row changes are written as an intent, in as many chunks
//!    (`intent/{shard}/{chunk}`) and transactions as they take; nothing reads
//!    them yet, so a commit cut short here has no visible effect;
//! 2. the commit point: one guarded write of the shard's metadata, naming the
//!    intent (its id, chunk count and the sequence number it ends at);
//! 3. the row changes themselves, in as many transactions as they take;
//! 4. one guarded transaction sets the sequence number, clears the intent
//!    from the metadata and deletes its chunks.
//!
//! Any load, commit or replace of a shard whose metadata names an intent first
//! rolls it forward (steps 3 and 4, from the chunks), so once step 2 is durable
//! the whole commit is, whoever finishes it. Steps 3 and 4 only write the
//! values the intent holds and take the sequence number up, so running them
//! twice (a roll-forward after a cut in step 3) changes nothing more. Chunks
//! of an attempt cut short before step 2 are never read (the metadata names
//! no intent, or another id); the shard's next large commit overwrites or
//! deletes them, as does a replace.
//!
//! Why an intent rather than, say, a new row generation per commit (as
//! `replace` does): a generation copies every row of the shard, an intent
//! writes only the changed ones, twice.

use super::intent::{self, Row};
use super::io::Merged;
use super::keys::{Intent, Meta, prefix_end};
use super::plan::{self, Group, Limits, Op, ShardWrites};
use super::retry::retry;
use super::state::{Inner, State};
use crate::error::{DecodeError, Error, Result};
use std::collections::BTreeMap;

/// One shard's changes too large for a transaction.
struct Large {
    shard: u16,
    /// Its metadata before the commit; once the commit point is written, with the intent.
    meta: Meta,
    rows: Vec<Row>,
    /// The row writes, for step 3.
    ops: Vec<Op>,
    seq: Option<u64>,
}

impl Inner {
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_ops: self.config.max_txn_ops,
            max_bytes: self.config.max_txn_bytes,
            compare_bytes: self.keys.owner(0).len() + 16,
        }
    }

    pub(super) async fn commit(&self, batch: BTreeMap<u16, Merged>) -> Result<()> {
        let mut st = self.state.lock().await;
        #[cfg(feature = "testing")]
        {
            let limit = self.commit_fault.load(std::sync::atomic::Ordering::Relaxed);
            st.budget = (limit != usize::MAX).then_some(limit);
        }
        let shards: Vec<u16> = batch.keys().copied().collect();
        let result = self.commit_locked(&mut st, batch).await;
        if result.is_err() {
            // Which parts landed is unknown: read the metadata again before the next write.
            Inner::forget_meta(&mut st, shards);
        }
        #[cfg(feature = "testing")]
        {
            st.budget = None;
        }
        result
    }

    async fn commit_locked(&self, st: &mut State, batch: BTreeMap<u16, Merged>) -> Result<()> {
        let limits = self.limits();
        // Shards whose changes fit one transaction: one group each, atomic.
        let mut whole = Vec::with_capacity(batch.len());
        let mut large = Vec::new();
        for (shard, m) in batch {
            // Rolls a pending intent forward first: this commit's rows build on it.
            let (_, meta) = self.owned(st, shard).await?;
            let seq = meta.applied_seq.max(m.seq);
            let after = Meta { applied_seq: seq, ..meta };
            let mut group = Group { ops: self.row_ops(shard, meta.generation, &m.rows), meta: Some(after) };
            if seq != meta.applied_seq {
                group.ops.push(self.meta_op(shard, &after));
            }
            if plan::fits(&group, limits) {
                whole.push(ShardWrites { shard, groups: vec![group] });
            } else {
                group.ops.truncate(m.rows.len());
                large.push(Large { shard, meta, rows: m.rows, ops: group.ops, seq });
            }
        }
        if large.is_empty() {
            return self.run_writes(st, whole).await;
        }
        // Step 1: the intents. The commit points join the whole shards' writes.
        let mut chunks = Vec::with_capacity(large.len());
        let mut points = whole;
        for l in &mut large {
            let id = fastrand::u64(..);
            let key_len = self.keys.intent_chunk(l.shard, u32::MAX).len();
            let values = intent::encode(id, &l.rows, plan::value_budget(limits, key_len));
            let count = u32::try_from(values.len()).map_err(|_| Error::CapacityExceeded("intent chunks"))?;
            let groups = (0..count)
                .zip(values)
                .map(|(i, value)| Group::one(Op::Put { key: self.keys.intent_chunk(l.shard, i), value }))
                .collect();
            chunks.push(ShardWrites { shard: l.shard, groups });
            l.meta.intent = Some(Intent { id, chunks: count, seq: l.seq });
            let point = Group { ops: vec![self.meta_op(l.shard, &l.meta)], meta: Some(l.meta) };
            points.push(ShardWrites { shard: l.shard, groups: vec![point] });
        }
        self.run_writes(st, chunks).await?;
        // Step 2: from here on, the commit is.
        self.run_writes(st, points).await?;
        let pending = large.into_iter().map(|l| (l.shard, l.meta, l.ops)).collect();
        self.apply_intents(st, pending).await
    }

    /// Steps 3 and 4 for each `(shard, metadata naming the intent, row writes)`.
    async fn apply_intents(&self, st: &mut State, pending: Vec<(u16, Meta, Vec<Op>)>) -> Result<()> {
        let mut rows = Vec::with_capacity(pending.len());
        let mut finish = Vec::with_capacity(pending.len());
        for (shard, meta, ops) in pending {
            rows.push(ShardWrites { shard, groups: ops.into_iter().map(Group::one).collect() });
            let seq = meta.intent.map_or(meta.applied_seq, |i| i.seq);
            let done = Meta { applied_seq: seq, generation: meta.generation, intent: None };
            let start = self.keys.intent(shard);
            let ops =
                vec![Op::DeleteRange { end: prefix_end(&start), key: start }, self.meta_op(shard, &done)];
            finish.push(ShardWrites { shard, groups: vec![Group { ops, meta: Some(done) }] });
        }
        self.run_writes(st, rows).await?;
        self.run_writes(st, finish).await
    }

    /// Finishes the commit whose intent `meta` names, from its chunks, and
    /// returns the metadata after it; `meta` as it is if it names none.
    pub(super) async fn roll_forward(&self, st: &mut State, shard: u16, meta: Meta) -> Result<Meta> {
        let Some(pending) = meta.intent else { return Ok(meta) };
        tracing::warn!(shard, chunks = pending.chunks, "finishing a commit cut short after its commit point");
        let result = async {
            let mut rows = Vec::new();
            for i in 0..pending.chunks {
                let key = self.keys.intent_chunk(shard, i);
                let resp = retry(&self.config, "read intent", || {
                    let (mut kv, key) = (self.kv.clone(), key.clone());
                    async move { kv.get(key, None).await }
                })
                .await?;
                let kv = resp.kvs().first().ok_or_else(|| {
                    DecodeError::Malformed(format!("intent chunk {i} of {} is missing", pending.chunks))
                })?;
                rows.extend(intent::decode(kv.value(), pending.id, i)?);
            }
            let ops = self.row_ops(shard, meta.generation, &rows);
            self.apply_intents(st, vec![(shard, meta, ops)]).await
        }
        .await;
        if let Err(e) = result {
            Inner::forget_meta(st, [shard]);
            return Err(e);
        }
        Ok(Meta { applied_seq: pending.seq, generation: meta.generation, intent: None })
    }

    fn row_ops(&self, shard: u16, generation: u64, rows: &[Row]) -> Vec<Op> {
        rows.iter()
            .map(|(id, value)| {
                let key = self.keys.row(shard, generation, id);
                match value {
                    Some(value) => Op::Put { key, value: value.clone() },
                    None => Op::Delete { key },
                }
            })
            .collect()
    }

    fn meta_op(&self, shard: u16, meta: &Meta) -> Op {
        Op::Put { key: self.keys.meta(shard), value: meta.encode() }
    }

    /// Runs `writes`, split to fit, in order; each part guarded by its shards' claims.
    async fn run_writes(&self, st: &mut State, writes: Vec<ShardWrites>) -> Result<()> {
        for part in plan::split(writes, self.limits()) {
            self.run_part(st, part).await?;
        }
        Ok(())
    }
}
