//! `EtcdStore`'s reads (a shard's metadata, checkpoint and log, in one guarded transaction
//! at one revision) and the guarded transaction that every write runs through.

use super::keys::{Meta, prefix_end};
use super::plan::{Op, Part};
use super::state::{Cursor, Inner, Shard, State};
use crate::error::{Error, Result};
use etcd_client::{Compare, CompareOp, GetOptions, TxnOp, TxnOpResponse};

/// A shard's stored state as read at one revision.
#[derive(Debug, Default)]
pub(crate) struct ShardData {
    pub(super) meta: Meta,
    /// The live checkpoint's chunks `(chunk number, bytes)`, in order; empty
    /// unless asked for.
    pub(super) chunks: Vec<(u32, Vec<u8>)>,
    /// Log entries at or past `meta.log_from`: `(index, value)`, rising.
    pub(super) log: Vec<(u64, Vec<u8>)>,
    /// The highest log index present, below `log_from` or not.
    pub(super) last: Option<u64>,
}

impl ShardData {
    /// Where the shard stands: the next entry goes past every one present
    /// and past the checkpoint, so that no index is ever written twice.
    pub(super) fn cursor(&self) -> Cursor {
        let next = self.last.map_or(0, |l| l.saturating_add(1)).max(self.meta.log_from);
        let log_bytes = self.log.iter().map(|(_, v)| v.len() as u64).sum();
        Cursor { meta: self.meta, next, log_bytes }
    }
}

impl Inner {
    /// Reads `shard`'s metadata, log and (with `checkpoint`) live checkpoint in
    /// one transaction guarded by the claim, and records where it stands.
    pub(super) async fn read_shard(
        &self,
        st: &mut State,
        shard: u16,
        owned: &super::state::Owned,
        checkpoint: bool,
    ) -> Result<ShardData> {
        let owner = self.keys.owner(shard);
        let range = |prefix: Vec<u8>| {
            let options = GetOptions::new().with_range(prefix_end(&prefix));
            TxnOp::get(prefix, Some(options))
        };
        let mut gets = vec![TxnOp::get(self.keys.meta(shard), None), range(self.keys.log(shard))];
        if checkpoint {
            gets.push(range(self.keys.checkpoints(shard)));
        }
        let txn = etcd_client::Txn::new()
            .when([Compare::create_revision(owner.clone(), CompareOp::Equal, owned.revision)])
            .and_then(gets)
            .or_else([TxnOp::get(owner, None)]);
        let resp = self.txn(txn, "read shard").await?;
        if !resp.succeeded() {
            let holder = super::state::first_kv(&resp);
            return Err(self.fence(st, shard, holder.as_ref()));
        }
        let mut data = ShardData::default();
        let mut answers = resp.op_responses().into_iter();
        let mut next_get = || match answers.next() {
            Some(TxnOpResponse::Get(mut get)) => Ok(get.take_kvs()),
            _ => Err(Error::store("etcd read shard: an answer is missing")),
        };
        if let Some(kv) = next_get()?.first() {
            data.meta = Meta::decode(kv.value())?;
        }
        for kv in next_get()? {
            let index = self.keys.log_index(shard, kv.key()).ok_or_else(|| {
                crate::DecodeError::Malformed(format!("foreign key {:?}", String::from_utf8_lossy(kv.key())))
            })?;
            data.last = data.last.max(Some(index));
            if index >= data.meta.log_from {
                let (_, value) = kv.into_key_value();
                data.log.push((index, value));
            }
        }
        if checkpoint {
            let generation = data.meta.generation;
            for kv in next_get()? {
                if let Some(chunk) = self.keys.chunk_index(shard, generation, kv.key()) {
                    let (_, value) = kv.into_key_value();
                    data.chunks.push((chunk, value));
                }
            }
        }
        st.put(shard, Shard::Owned(super::state::Owned { cursor: Some(data.cursor()), ..owned.clone() }));
        Ok(data)
    }

    /// What a load of `shard` reads: taking the shard if need be.
    pub(super) async fn read_for_load(&self, shard: u16) -> Result<ShardData> {
        let mut st = self.state.lock().await;
        let owned = self.claim_to_load(&mut st, shard).await?;
        self.read_shard(&mut st, shard, &owned, true).await
    }

    /// Commits one part under the guard of its shards' claims, and returns the
    /// revision it committed at. A failed guard fences every shard whose claim
    /// is gone.
    pub(super) async fn run_part(&self, st: &mut State, part: Part) -> Result<i64> {
        #[cfg(feature = "testing")]
        if let Some(left) = st.budget.as_mut() {
            if *left == 0 {
                return Err(Error::store("etcd commit: injected failure between transactions"));
            }
            *left -= 1;
        }
        let mut compares = Vec::with_capacity(part.shards.len());
        let mut checks = Vec::with_capacity(part.shards.len());
        for &shard in &part.shards {
            let owned = self.claim(st, shard).await?;
            let key = self.keys.owner(shard);
            compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, owned.revision));
            checks.push(TxnOp::get(key, None));
        }
        compares.extend(part.ops.iter().filter_map(Op::guard));
        let ops: Vec<TxnOp> = part.ops.into_iter().map(Op::into_txn_op).collect();
        let txn = etcd_client::Txn::new().when(compares).and_then(ops).or_else(checks);
        let resp = self.txn(txn, "commit").await?;
        self.counters.commit_txns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if resp.succeeded() {
            for (shard, cursor) in part.after {
                Inner::set_cursor(st, shard, cursor);
            }
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        let mut first = None;
        for (&shard, r) in part.shards.iter().zip(resp.op_responses()) {
            let TxnOpResponse::Get(get) = r else { continue };
            let holder = get.kvs().first();
            let ours = match st.shards.get(&shard) {
                Some(Shard::Owned(o)) => holder.is_some_and(|kv| kv.create_revision() == o.revision),
                _ => false,
            };
            if !ours {
                let e = self.fence(st, shard, holder);
                first.get_or_insert(e);
            }
        }
        // Every claim holds: a log entry this write creates exists already (a
        // request retried after its answer was lost landed first). Nothing of
        // this part is written; the caller reads where the shard stands again.
        Err(first.unwrap_or_else(|| Error::store("etcd commit: a log entry it creates exists already")))
    }
}
