//! Shard ownership for `EtcdStore`: taking and releasing shards, fencing. The lease is in `lease.rs`.

use super::Ownership;
use super::state::{Cursor, Inner, Owned, Shard, State, first_kv};
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::store::ClaimWatch;
use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp};
use std::time::Instant;

/// Why a released shard's write is refused.
const RELEASED: &str = "released by this store; load or acquire the shard to take it again";

impl Inner {
    /// The claim on `shard` for a write, taking the shard if this store never
    /// touched it; fails if the claim was lost or released.
    pub(super) async fn claim(&self, st: &mut State, shard: u16) -> Result<Owned> {
        self.check_lease(st);
        match st.shards.get(&shard) {
            Some(Shard::Owned(o)) => Ok(o.clone()),
            Some(Shard::Lost(cause)) => Err(Error::Fenced { shard: ShardId(shard), cause: cause.clone() }),
            Some(Shard::Released) => Err(Error::Fenced { shard: ShardId(shard), cause: RELEASED.into() }),
            None => self.take(st, shard).await,
        }
    }

    /// The claim on `shard` for a load: a shard this store released is taken
    /// again, since the load reads whatever the owners since then wrote. A
    /// lost claim stays fenced until [`acquire_all`](Self::acquire_all).
    pub(super) async fn claim_to_load(&self, st: &mut State, shard: u16) -> Result<Owned> {
        if matches!(st.shards.get(&shard), Some(Shard::Released)) {
            st.shards.remove(&shard);
        }
        self.claim(st, shard).await
    }

    /// The claim on `shard` and where its stored state stands, read under the
    /// claim's guard unless known from this store's own writes.
    pub(super) async fn owned(&self, st: &mut State, shard: u16) -> Result<(Owned, Cursor)> {
        let owned = self.claim(st, shard).await?;
        let cursor = match owned.cursor {
            Some(cursor) => cursor,
            None => self.read_shard(st, shard, &owned, false).await?.cursor(),
        };
        Ok((owned, cursor))
    }

    /// Creates the owner key, waiting while another live owner holds it.
    async fn take(&self, st: &mut State, shard: u16) -> Result<Owned> {
        let deadline = Instant::now() + self.config.acquire_timeout;
        let key = self.keys.owner(shard);
        let mut waiting = false;
        loop {
            let (lease, watch) = self.lease(st).await?;
            let put = PutOptions::new().with_lease(lease);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), self.config.owner_id.clone(), Some(put))])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = self.txn(txn, "take shard").await?;
            let holder = first_kv(&resp);
            let revision = match (resp.succeeded(), &holder) {
                (true, _) => resp.header().map(|h| h.revision()),
                // Ours already: an earlier attempt committed but its answer was lost.
                (false, Some(kv)) if kv.lease() == lease => Some(kv.create_revision()),
                _ => None,
            };
            if let Some(revision) = revision {
                tracing::info!(shard, revision, lease, "took shard ownership");
                let owned = Owned { revision, lease, cursor: None, watch: watch.derive() };
                st.put(shard, Shard::Owned(owned.clone()));
                return Ok(owned);
            }
            let cause = holder_cause(holder.as_ref());
            let now = Instant::now();
            if now >= deadline {
                let cause = format!("{cause}; not released within {:?}", self.config.acquire_timeout);
                return Err(Error::Fenced { shard: ShardId(shard), cause });
            }
            if !waiting {
                tracing::info!(shard, cause, "shard held by another owner; waiting for it");
                waiting = true;
            }
            tokio::time::sleep(self.config.acquire_poll.min(deadline - now)).await;
        }
    }

    /// Marks `shard` lost to `holder` and returns the error that says so.
    pub(super) fn fence(&self, st: &mut State, shard: u16, holder: Option<&KeyValue>) -> Error {
        let cause = holder_cause(holder);
        tracing::error!(shard, cause, "shard ownership lost; writes are fenced");
        st.put(shard, Shard::Lost(cause.clone()));
        Error::Fenced { shard: ShardId(shard), cause }
    }

    pub(super) async fn acquire_all(&self, shards: &[u16]) -> Result<()> {
        // Another owner's lease may take its whole TTL to lapse. That wait is
        // done here, without the store's state: under it, every commit of the
        // shards this store already holds would wait too (a survivor taking a
        // dead peer's shards stopped serving its own for up to the TTL).
        for &shard in shards {
            self.wait_until_free(shard).await?;
        }
        let mut st = self.state.lock().await;
        for &shard in shards {
            if matches!(st.shards.get(&shard), Some(Shard::Lost(_) | Shard::Released)) {
                st.shards.remove(&shard);
            }
            self.owned(&mut st, shard).await?;
        }
        Ok(())
    }

    /// Waits, up to [`EtcdConfig::acquire_timeout`](super::EtcdConfig::acquire_timeout),
    /// until no other owner holds `shard` (no owner key, or one under this
    /// store's lease), without holding the store's state. Only a hint: the
    /// take that follows, under the state, decides (and waits itself should
    /// another owner have come first). Fails with [`Error::Fenced`] past the timeout.
    async fn wait_until_free(&self, shard: u16) -> Result<()> {
        let deadline = Instant::now() + self.config.acquire_timeout;
        let key = self.keys.owner(shard);
        let mut waiting = false;
        loop {
            let ours = self.state.lock().await.lease.as_ref().map(|l| l.id);
            let resp = super::retry::retry(&self.config, "read shard owner", || {
                let (mut kv, key) = (self.kv.clone(), key.clone());
                async move { kv.get(key, None).await }
            })
            .await?;
            let holder = resp.kvs().first();
            if holder.is_none_or(|kv| Some(kv.lease()) == ours) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                let cause = holder_cause(holder);
                let cause = format!("{cause}; not released within {:?}", self.config.acquire_timeout);
                return Err(Error::Fenced { shard: ShardId(shard), cause });
            }
            if !waiting {
                tracing::info!(
                    shard,
                    cause = holder_cause(holder),
                    "shard held by another owner; waiting for it"
                );
                waiting = true;
            }
            tokio::time::sleep(self.config.acquire_poll.min(deadline - now)).await;
        }
    }

    pub(super) async fn release(&self, shard: u16) -> Result<()> {
        let mut st = self.state.lock().await;
        self.release_one(&mut st, shard).await
    }

    async fn release_one(&self, st: &mut State, shard: u16) -> Result<()> {
        if let Some(Shard::Owned(o)) = st.shards.get(&shard) {
            // Guarded: a claim that lapsed must not delete the next owner's key.
            let key = self.keys.owner(shard);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, o.revision)])
                .and_then([TxnOp::delete(key, None)]);
            self.txn(txn, "release shard").await?;
            tracing::info!(shard, "released shard ownership");
        }
        st.put(shard, Shard::Released);
        Ok(())
    }

    /// Releases `shards`: by revoking the lease when they are all this store holds.
    pub(super) async fn release_shards(&self, shards: &[u16]) -> Result<()> {
        let all = {
            let st = self.state.lock().await;
            st.shards.iter().all(|(s, o)| !matches!(o, Shard::Owned(_)) || shards.contains(s))
        };
        if all {
            return self.release_all().await;
        }
        let mut st = self.state.lock().await;
        for &shard in shards {
            self.release_one(&mut st, shard).await?;
        }
        Ok(())
    }

    /// The watch of this store's claim on `shard`: an invalid one unless it holds a claim.
    pub(super) async fn watch(&self, shard: u16) -> ClaimWatch {
        let mut st = self.state.lock().await;
        self.check_lease(&mut st);
        match st.shards.get(&shard) {
            Some(Shard::Owned(o)) => o.watch.clone(),
            _ => ClaimWatch::until(Instant::now()),
        }
    }

    pub(super) async fn ownership(&self, shard: u16) -> Ownership {
        let mut st = self.state.lock().await;
        self.check_lease(&mut st);
        match st.shards.get(&shard) {
            None => Ownership::Free,
            Some(Shard::Owned(o)) => Ownership::Owned { revision: o.revision },
            Some(Shard::Lost(cause)) => Ownership::Fenced { cause: cause.clone() },
            Some(Shard::Released) => Ownership::Released,
        }
    }
}

fn holder_cause(holder: Option<&KeyValue>) -> String {
    match holder {
        Some(kv) => format!(
            "owned by {:?} (lease {:x}, since revision {})",
            String::from_utf8_lossy(kv.value()),
            kv.lease(),
            kv.create_revision()
        ),
        None => "ownership lapsed (lease expired or shard released)".into(),
    }
}
