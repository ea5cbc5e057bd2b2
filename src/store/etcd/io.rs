//! `EtcdStore`'s loads and replacements (paged reads at one revision, a new row generation),
//! and the guarded transaction that every write runs through. Commits are in `commit.rs`.

use super::keys::{Meta, prefix_end};
use super::plan::{self, Group, Op, Part, ShardWrites};
use super::retry::retry;
use super::state::{Inner, Shard, State};
use crate::codec;
use crate::config::TableConfig;
use crate::error::{DecodeError, Error, Result};
use crate::table::GhostTable;
use crate::table::ShardChanges;
use etcd_client::{Compare, CompareOp, GetOptions, TxnOp, TxnOpResponse};
use std::collections::{BTreeMap, HashMap};

/// One shard's share of a commit: each id's last change (`None`: removed),
/// and the highest sequence number.
#[derive(Debug, Default)]
pub(super) struct Merged {
    pub(super) rows: Vec<(String, Option<Vec<u8>>)>,
    pub(super) seq: Option<u64>,
}

/// Merges a batch into one change per (shard, id), encoded. etcd refuses a
/// transaction that writes a key twice, and the last change is the state
/// (per shard change set: removals, then upserts).
pub(super) fn merge(batch: &[ShardChanges]) -> Result<BTreeMap<u16, Merged>> {
    let mut out: BTreeMap<u16, (Merged, HashMap<String, usize>)> = BTreeMap::new();
    for sc in batch {
        let (m, index) = out.entry(sc.shard).or_default();
        let mut set = |id: &str, value: Option<Vec<u8>>| match index.get(id) {
            Some(&i) => m.rows[i].1 = value,
            None => {
                index.insert(id.to_owned(), m.rows.len());
                m.rows.push((id.to_owned(), value));
            }
        };
        for id in sc.changes.removals() {
            set(id, None);
        }
        for r in sc.changes.upserts() {
            set(r.node_id, Some(codec::encode_stub_ref(r)?));
        }
        m.seq = m.seq.max(sc.changes.applied_seq());
    }
    Ok(out.into_iter().map(|(s, (m, _))| (s, m)).collect())
}

impl Inner {
    pub(super) async fn load(&self, shard: u16, config: &TableConfig) -> Result<GhostTable> {
        let mut st = self.state.lock().await;
        let owned = self.claim_to_load(&mut st, shard).await?;
        let (mut meta, mut revision) = self.read_meta(&mut st, shard, &owned).await?;
        if meta.intent.is_some() {
            // A commit cut short after its commit point: it is part of the state.
            self.roll_forward(&mut st, shard, meta).await?;
            (meta, revision) = self.read_meta(&mut st, shard, &owned).await?;
            if meta.intent.is_some() {
                return Err(Error::store(format!("etcd shard {shard}: an intent is still pending")));
            }
        }
        drop(st);
        let start = self.keys.rows(shard, meta.generation);
        let end = prefix_end(&start);
        let mut from = start.clone();
        let mut table: Option<GhostTable> = None;
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_revision(revision)
                .with_limit(self.config.page_rows as i64);
            let mut resp = retry(&self.config, "read rows", || {
                let (mut kv, from, options) = (self.kv.clone(), from.clone(), options.clone());
                async move { kv.get(from, Some(options)).await }
            })
            .await?;
            if table.is_none() {
                // Sized once from the range's count, bounded so that a bad
                // count cannot over-allocate.
                let capacity = (resp.count().max(0) as usize).min(config.max_stubs);
                table = Some(GhostTable::with_capacity(shard, config.clone(), capacity)?);
            }
            let Some(t) = table.as_mut() else { unreachable!("created above") };
            let more = resp.more();
            let kvs = resp.take_kvs();
            for kv in &kvs {
                let id = kv.key().strip_prefix(start.as_slice()).unwrap_or(kv.key());
                load_row(t, id, kv.value(), config).inspect_err(|e| {
                    let key = String::from_utf8_lossy(kv.key());
                    tracing::error!(shard, %key, error = %e.chain(), "undecodable ghost row");
                })?;
            }
            match kvs.last() {
                Some(last) if more => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let mut table = match table {
            Some(t) => t,
            None => GhostTable::new(shard, config.clone())?,
        };
        table.finish_load(meta.applied_seq)?;
        Ok(table)
    }

    pub(super) async fn replace(
        &self,
        shard: u16,
        rows: Vec<(String, Vec<u8>)>,
        seq: Option<u64>,
    ) -> Result<()> {
        let mut st = self.state.lock().await;
        let (_, meta) = self.owned(&mut st, shard).await?;
        let generation = meta.generation.checked_add(1).ok_or(Error::CapacityExceeded("row generations"))?;
        let new = self.keys.rows(shard, generation);
        let old = self.keys.rows(shard, meta.generation);
        // Leftovers of a replacement cut short: cleared alone, since etcd
        // refuses a put into a range that the same transaction deletes. So are
        // the chunks of a large commit cut short before its commit point
        // (`owned` finished any commit past it).
        let intents = self.keys.intent(shard);
        let clear = vec![
            Op::DeleteRange { end: prefix_end(&new), key: new },
            Op::DeleteRange { end: prefix_end(&intents), key: intents },
        ];
        let mut groups: Vec<Group> = rows
            .into_iter()
            .map(|(id, value)| Group::one(Op::Put { key: self.keys.row(shard, generation, &id), value }))
            .collect();
        // The switch: new metadata and the old rows' removal, in one transaction.
        let meta = Meta { applied_seq: seq, generation, intent: None };
        let switch = vec![
            Op::DeleteRange { end: prefix_end(&old), key: old },
            Op::Put { key: self.keys.meta(shard), value: meta.encode() },
        ];
        groups.push(Group { ops: switch, meta: Some(meta) });
        let limits = self.limits();
        let parts = std::iter::once(Part { shards: vec![shard], ops: clear, metas: Vec::new() })
            .chain(plan::split(vec![ShardWrites { shard, groups }], limits));
        for part in parts {
            self.run_part(&mut st, part).await.inspect_err(|_| Inner::forget_meta(&mut st, [shard]))?;
        }
        Ok(())
    }

    /// Commits one part under the guard of its shards' claims. A failed guard
    /// fences every shard whose claim is gone.
    pub(super) async fn run_part(&self, st: &mut State, part: Part) -> Result<()> {
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
        let ops: Vec<TxnOp> = part.ops.into_iter().map(Op::into_txn_op).collect();
        let txn = etcd_client::Txn::new().when(compares).and_then(ops).or_else(checks);
        let resp = self.txn(txn, "commit").await?;
        if resp.succeeded() {
            for (shard, meta) in part.metas {
                Inner::set_meta(st, shard, meta);
            }
            return Ok(());
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
        Err(first.unwrap_or_else(|| Error::store("etcd commit guard failed, yet every claim holds")))
    }
}

/// Adds one stored row to a table being loaded; the key must name the stub.
fn load_row(table: &mut GhostTable, id: &[u8], value: &[u8], config: &TableConfig) -> Result<()> {
    let r = codec::decode_stub_ref(value, config)?;
    if r.node_id.as_bytes() != id {
        let why = format!("row for {:?} holds a stub for {:?}", String::from_utf8_lossy(id), r.node_id);
        return Err(DecodeError::Malformed(why).into());
    }
    table.load_stub(r).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ChangeSet;

    fn rec(id: &str, refcount: u32) -> crate::store::StubRecord {
        crate::store::StubRecord {
            node_id: id.into(),
            target_shard: 2,
            refcount,
            created_at_ms: 1,
            epoch: 1,
            hold_until_ms: 0,
            tombstone: false,
        }
    }

    #[test]
    fn merge_keeps_each_ids_last_change_and_the_highest_seq() {
        let sc = |shard, upserts: Vec<crate::store::StubRecord>, removals: &[&str], seq| ShardChanges {
            shard,
            changes: ChangeSet::from_parts(upserts.iter().map(Into::into), removals.iter().copied(), seq),
        };
        let batch = [
            sc(1, vec![rec("a", 1), rec("b", 1)], &["a", "c"], Some(4)),
            sc(2, vec![rec("a", 9)], &[], None),
            sc(1, vec![rec("c", 3)], &["b"], Some(2)),
        ];
        let merged = merge(&batch).unwrap();
        let one = &merged[&1];
        let rows: Vec<_> = one.rows.iter().map(|(id, v)| (id.as_str(), v.is_some())).collect();
        assert_eq!(rows, vec![("a", true), ("c", true), ("b", false)]);
        assert_eq!(one.seq, Some(4));
        let c = codec::decode_stub(one.rows[1].1.as_ref().unwrap(), &TableConfig::default()).unwrap();
        assert_eq!(c.refcount, 3);
        assert_eq!(merged[&2].rows.len(), 1);
        assert_eq!(merged[&2].seq, None);
    }
}
