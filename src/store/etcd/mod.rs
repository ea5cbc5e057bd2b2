//! `EtcdStore`: ghost state in etcd v3, shared by many processes, each shard written by one owner at a time.
//!
//! # Layout
//!
//! Under a configurable prefix `P` (default `"vshard-ghosts/"`):
//!
//! | key | value |
//! |---|---|
//! | `P format` | `b"vshard-ghosts-etcd/1"`, written once; a prefix holding another value is refused ([`Error::NotAStore`]) |
//! | `P owner/{shard:05}` | the owner's id, attached to the owner's lease |
//! | `P meta/{shard:05}` | applied sequence number, live row generation, format version (30 bytes, checksummed); while a large commit is pending, also its intent (version 2, 51 bytes) |
//! | `P rows/{shard:05}/{generation}/{node id}` | [`codec::encode_stub`](crate::codec::encode_stub) of the stub |
//! | `P intent/{shard:05}/{chunk:05}` | a pending large commit's row changes, in chunks (checksummed); gone once it is applied |
//!
//! # Ownership and fencing
//!
//! A store takes a shard when it first loads or writes it, or at
//! [`EtcdStore::acquire`]: it creates the shard's owner key, attached to the
//! store's one lease, which a task on the store's runtime keeps alive. Taking
//! a shard that another live owner holds waits until that owner releases it
//! or its lease lapses, up to [`EtcdConfig::acquire_timeout`], and then fails
//! with [`Error::Fenced`]. Every write is one etcd transaction whose guard
//! compares each of its shards' owner key's `create_revision` with the one
//! this store created: a revision that no other acquisition can produce, so a
//! store whose lease lapsed, even if it took the shard again since, cannot
//! write through an old claim. A failed guard marks the shard fenced: every
//! later load or write of it fails with [`Error::Fenced`] (the shard's actor
//! fails closed) until [`acquire`](EtcdStore::acquire) is called again.
//! [`release`](EtcdStore::release) and [`release_all`](EtcdStore::release_all)
//! hand shards over at once (the runtime's writer releases the shards it
//! served when it stops after a graceful shutdown); a crashed owner's shards
//! are free once its lease lapses, [`EtcdConfig::lease_ttl_secs`] after its
//! last keep-alive.
//!
//! Ownership belongs to one load: a write to a shard this store released is
//! [`Error::Fenced`] too, until a load or [`acquire`](EtcdStore::acquire)
//! takes the shard again under a new claim. Otherwise a late flush of the
//! actor that served it would take the shard back and write its stale
//! changes over the next owner's. (A shard this store never touched is still
//! taken by its first write.)
//!
//! Each claim is also watched locally ([`GhostStore::claim`]): the lease's
//! keep-alive records, in real time, until when the lease surely holds (the
//! send time of the last answered keep-alive plus the time-to-live etcd
//! granted, less a margin). Past that, or once the claim is released or
//! lost, the watch is invalid and the shard's actor stops answering with
//! [`Error::Fenced`], before another owner can have taken the shard.
//!
//! # Transactions and etcd's limits
//!
//! etcd's defaults allow 128 operations per transaction (`--max-txn-ops`) and
//! 1.5 MiB per request (`--max-request-bytes`), which
//! [`EtcdConfig::max_txn_ops`] and [`EtcdConfig::max_txn_bytes`] (1 MiB,
//! leaving a margin) mirror: raise them only together with the server's.
//!
//! A commit is all-or-nothing for each of its shards, as a later load and a
//! replay see it, at any size: a load shows either none of a shard's changes
//! in it or all of them with the shard's sequence number. A shard's changes
//! that fit one transaction are written in one (several such shards share
//! transactions as they fit). Larger ones go through an *intent*: the merged
//! row changes are written first, in chunks under `P intent/`, then one
//! guarded write of the shard's metadata names the intent (the commit
//! point), then the rows are written in as many transactions as they take,
//! and a last transaction sets the sequence number and deletes the intent.
//! Any load, commit or replace that finds an intent named in the metadata
//! finishes it first, so once the commit point is durable the whole commit
//! is, whoever owns the shard next; before it, nothing of the commit is
//! visible. Such a commit writes its changes twice, the price of a commit
//! point for a write that etcd cannot take in one transaction.
//!
//! A [`replace`](crate::store::GhostStore::replace) writes a new row generation in
//! as many transactions as it takes, then switches the metadata to it and
//! deletes the old rows in one, so it is atomic at any size. Network errors,
//! timeouts and a lost leader are retried with back-off
//! ([`EtcdConfig::retries`]); past that, the call fails with [`Error::Store`].
//!
//! # Threads
//!
//! The store owns a one-worker tokio runtime: the etcd client, the lease's
//! keep-alive and every call run there. The [`GhostStore`] calls block the
//! calling thread until their work on that runtime is done; they may be made
//! from any thread, but from async code run them in `spawn_blocking`.

mod commit;
mod config;
mod connect;
mod fence;
mod intent;
mod io;
mod keys;
mod lease;
mod plan;
mod retry;
mod state;

use super::{ClaimWatch, GhostStore, ShardChanges};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::table::GhostTable;
pub use config::EtcdConfig;
#[cfg(feature = "cluster")]
pub(crate) use connect::{endpoints, runtime};
#[cfg(feature = "cluster")]
pub(crate) use keys::{owner_prefix, owner_shard, prefix_end};
use state::Inner;
use std::future::Future;
use std::sync::Arc;

/// Whether this store may write a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Never taken by this store: the next load or write takes it.
    Free,
    /// Taken: this store's owner key, created at this etcd revision.
    Owned {
        /// The owner key's `create_revision`, which every write compares.
        revision: i64,
    },
    /// Lost or refused; writes fail with [`Error::Fenced`] until
    /// [`EtcdStore::acquire`].
    Fenced {
        /// Why.
        cause: String,
    },
    /// Handed over by [`EtcdStore::release`] or [`EtcdStore::release_all`]:
    /// writes fail with [`Error::Fenced`] until the next load or
    /// [`EtcdStore::acquire`] takes the shard again, under a new claim.
    Released,
}

/// A [`GhostStore`] in etcd v3, with per-shard ownership; see the
/// [module docs](self) for the layout, fencing and limits.
pub struct EtcdStore {
    inner: Arc<Inner>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.inner.config.prefix)
            .field("owner_id", &self.inner.config.owner_id)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`,
    /// `etcd://host:port` or `host:port`) and checks or writes the prefix's
    /// format marker. Takes no shard yet. Fails with [`Error::NotAStore`] if the
    /// prefix holds another format, with [`Error::Store`] if etcd cannot be
    /// reached within the retries.
    pub fn connect<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        config: EtcdConfig,
    ) -> Result<Self> {
        config.validate()?;
        let endpoints = connect::endpoints(endpoints);
        if endpoints.is_empty() {
            return Err(Error::InvalidConfig("etcd: no endpoint".into()));
        }
        let runtime = connect::runtime("ghost-etcd").map_err(|e| Error::store_from("etcd runtime", e))?;
        let inner = futures::executor::block_on(runtime.spawn(Inner::connect(endpoints, config)))
            .map_err(|e| Error::store_from("etcd connect", e))??;
        Ok(Self { inner: Arc::new(inner), runtime: Some(runtime) })
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(|| Error::store("etcd store closed"))?;
        let task = runtime.spawn(f(self.inner.clone()));
        futures::executor::block_on(task).map_err(|e| Error::store_from("etcd task failed", e))?
    }

    /// Takes `shards` now, waiting for other owners to release them or for
    /// their leases to lapse (up to [`EtcdConfig::acquire_timeout`] each). Also
    /// takes back a shard fenced earlier. Call it before starting a runtime
    /// to wait here rather than on the runtime's writer thread.
    pub fn acquire(&self, shards: &[u16]) -> Result<()> {
        let shards = shards.to_vec();
        self.run(move |inner| async move { inner.acquire_all(&shards).await })
    }

    /// Hands `shard` over: deletes its owner key, if this store still holds
    /// it, so that another owner can take it at once.
    pub fn release(&self, shard: u16) -> Result<()> {
        self.run(move |inner| async move { inner.release(shard).await })
    }

    /// Hands every shard over at once by revoking the store's lease.
    pub fn release_all(&self) -> Result<()> {
        self.run(|inner| async move { inner.release_all().await })
    }

    /// Stops renewing the lease, as a frozen or partitioned process would:
    /// the shards lapse after the lease's time-to-live and this store's
    /// writes are fenced from then on. For failure tests and drills.
    pub fn stop_keep_alive(&self) -> Result<()> {
        self.run(|inner| async move {
            inner.stop_keep_alive().await;
            Ok(())
        })
    }

    /// Fault injection: while `Some(n)`, every commit runs at most `n` etcd
    /// transactions and then fails with [`Error::Store`], as fencing or lost
    /// connectivity between the parts of a split commit would. `None` turns it off.
    #[cfg(feature = "testing")]
    pub fn fail_commits_after_parts(&self, parts: Option<usize>) {
        let limit = parts.unwrap_or(usize::MAX);
        self.inner.commit_fault.store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where this store stands with `shard`.
    pub fn ownership(&self, shard: u16) -> Result<Ownership> {
        self.run(move |inner| async move { Ok(inner.ownership(shard).await) })
    }

    /// The settings.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }
}

impl GhostStore for EtcdStore {
    fn load(&self, shard: u16, config: &TableConfig) -> Result<GhostTable> {
        let config = config.clone();
        self.run(move |inner| async move { inner.load(shard, &config).await })
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Encoded on the calling thread: the store's one worker only waits on etcd.
        let merged = io::merge(batch)?;
        self.run(move |inner| async move { inner.commit(merged).await })
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        let (shard, seq) = (table.shard(), table.applied_seq());
        let rows = table
            .rows()
            .map(|r| Ok((r.node_id.to_owned(), crate::codec::encode_stub_ref(r)?)))
            .collect::<Result<Vec<_>>>()?;
        self.run(move |inner| async move { inner.replace(shard, rows, seq).await })
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn release_shards(&self, shards: &[u16]) -> Result<()> {
        let shards = shards.to_vec();
        self.run(move |inner| async move { inner.release_shards(&shards).await })
    }

    /// Always a watch: that of this store's claim on `shard`, or an invalid
    /// one if it holds none (or cannot tell: the store is closed).
    fn claim(&self, shard: u16) -> Option<ClaimWatch> {
        let watch = self.run(move |inner| async move { Ok(inner.watch(shard).await) });
        Some(watch.unwrap_or_else(|_| ClaimWatch::until(std::time::Instant::now())))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Not blocking: a drop may happen on an async thread. The lease is not
        // revoked (call `release_all` first for that); its keep-alive ends with
        // the runtime, so the shards lapse after the lease's time-to-live.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
