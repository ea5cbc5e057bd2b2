//! `EtcdStore`: ghost state in etcd v3, shared by many processes, each shard written by one owner at a time.
//!
//! # Layout
//!
//! Under a configurable prefix `P` (default `"vshard-ghosts/"`), per shard a
//! checkpoint and a log, as [`RedbStore`](crate::store::RedbStore)'s log and
//! checkpoints but per shard, so that a shard's owner writes and reads only its own:
//!
//! | key | value |
//! |---|---|
//! | `P format` | `b"vshard-ghosts-etcd/2"`, written once; a prefix holding another value is refused ([`Error::NotAStore`]) |
//! | `P owner/{shard:05}` | the owner's id, attached to the owner's lease |
//! | `P meta/{shard:05}` | the live checkpoint's generation, chunk count and size, and the first log index it does not hold (41 bytes, checksummed); absent until the first checkpoint |
//! | `P ckpt/{shard:05}/{generation:016x}/{chunk:08x}` | the shard's table as a [snapshot](crate::codec::encode_snapshot), cut into values that fit a transaction |
//! | `P log/{shard:05}/{index:016x}` | one group commit's changes to the shard: the codec's commit-log record in one entry, or in a group of entries when larger than a transaction (checksummed, `log.rs`) |
//!
//! A shard's state is its checkpoint with every complete log record from the
//! metadata's first index applied in order. A load reads the metadata, the
//! log and the checkpoint in one transaction, at one revision, and decodes
//! them on the calling thread.
//!
//! A group commit appends one log entry per shard it carries, all in **one
//! guarded transaction**, split only past etcd's limits (a record larger than a
//! transaction goes into a group of entries, which counts only once complete,
//! so each shard's changes stay all-or-nothing). Once a shard's log passes
//! [`EtcdConfig::checkpoint_log_percent`] of its checkpoint's size (and
//! [`EtcdConfig::checkpoint_min_bytes`]), the commit that crossed the bound,
//! after its own entries are durable, folds it: the shard is read back, a new
//! checkpoint generation is written in chunks, and one guarded transaction
//! switches the metadata to it and deletes the old generation and the folded
//! entries. A failed fold is logged and tried at a later commit; the commit
//! has succeeded. [`replace`](GhostStore::replace) writes a checkpoint the same
//! way, folding the whole log away. Every
//! [`EtcdConfig::compact_every_revisions`] revisions, a checkpoint also
//! compacts etcd's history at its revision, so that what it deleted stops
//! taking space (`0` leaves that to etcd's `--auto-compaction-retention`).
//!
//! The first layout (`vshard-ghosts-etcd/1`, a key per stub) is refused at
//! [`connect`](EtcdStore::connect) with [`Error::NotAStore`] naming the
//! upgrade: export each shard with the build that wrote it
//! ([`GhostStore::export_snapshot`]) and import it under a new prefix
//! ([`GhostStore::import_snapshot`]).
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
//! etcd's defaults allow 128 operations per transaction (`--max-txn-ops`,
//! counted for compares and for writes separately) and 1.5 MiB per request
//! (`--max-request-bytes`), which [`EtcdConfig::max_txn_ops`] and
//! [`EtcdConfig::max_txn_bytes`] (1 MiB, leaving a margin) mirror: raise them
//! only together with the server's. A log entry takes a write and two
//! compares (its shard's claim, and that its key is new, so that a request
//! retried after its answer was lost cannot land twice), so one transaction
//! carries up to 64 shards at etcd's defaults. Network errors, timeouts and a
//! lost leader are retried with back-off ([`EtcdConfig::retries`]); past
//! that, the call fails with [`Error::Store`].
//!
//! # Space
//!
//! etcd turns read-only for writes once its backend reaches
//! `--quota-backend-bytes` (2 GiB by default), raising its `NOSPACE` alarm.
//! Then a commit, a checkpoint and taking a shard (its lease and owner key)
//! fail at once with [`Error::StoreFull`], not retried: nothing of the commit
//! is acknowledged, and the shard's actor restarts and reloads, as after any
//! failed flush. Loads of shards this store holds keep working (reads are
//! not refused), and so does the lease's keep-alive. Writing resumes once
//! the operator has compacted, defragmented and disarmed the alarm
//! (`etcdctl compact`, `etcdctl defrag`, `etcdctl alarm disarm`).
//!
//! # Threads
//!
//! The store owns a one-worker tokio runtime: the etcd client, the lease's
//! keep-alive and every call run there. The [`GhostStore`] calls block the
//! calling thread until their work on that runtime is done; they may be made
//! from any thread, but from async code run them in `spawn_blocking`.

mod checkpoint;
mod commit;
mod config;
mod connect;
mod fence;
mod io;
mod keys;
mod lease;
mod log;
mod plan;
mod replay;
mod retry;
mod state;

use super::{ClaimWatch, GhostStore, ShardChanges};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::table::{GhostTable, TableMemory};
pub use config::EtcdConfig;
#[cfg(feature = "cluster")]
pub(crate) use connect::{endpoints, runtime};
#[cfg(feature = "cluster")]
pub(crate) use keys::{owner_prefix, owner_shard, prefix_end};
use state::Inner;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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

/// What an [`EtcdStore`] did since it connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdStats {
    /// Commits ([`GhostStore::commit`] calls that reached etcd), failed ones included.
    pub commits: u64,
    /// Guarded write transactions: those of commits, checkpoints and replacements.
    pub write_txns: u64,
    /// Log entries appended.
    pub log_entries: u64,
    /// Checkpoints written (folds and replacements).
    pub checkpoints: u64,
    /// Folds that failed (each retried at a later commit).
    pub checkpoint_failures: u64,
    /// Compactions of etcd's history.
    pub compactions: u64,
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
    /// to wait here rather than on the runtime's writer thread. While it
    /// waits for another owner, the shards this store already holds keep
    /// loading and committing (a first load or write of a held shard, by
    /// contrast, waits with every other call of the store).
    pub fn acquire(&self, shards: &[ShardId]) -> Result<()> {
        let shards: Vec<u16> = shards.iter().map(|s| s.get()).collect();
        self.run(move |inner| async move { inner.acquire_all(&shards).await })
    }

    /// Hands `shard` over: deletes its owner key, if this store still holds
    /// it, so that another owner can take it at once.
    pub fn release(&self, shard: ShardId) -> Result<()> {
        let shard = shard.get();
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

    /// Folds `shard`'s log into a new checkpoint now (as a commit does once
    /// the log passes its bound), taking the shard if need be.
    pub fn checkpoint(&self, shard: ShardId) -> Result<()> {
        self.fold(shard.get(), None).map(drop)
    }

    /// Reads `shard`, builds its table on this thread and writes it as the
    /// checkpoint, unless the shard moved on from `expected` meanwhile.
    fn fold(&self, shard: u16, expected: Option<state::Cursor>) -> Result<bool> {
        let data = self.run(move |inner| async move { inner.read_for_load(shard).await })?;
        let cursor = data.cursor();
        if expected.is_some_and(|e| e != cursor) {
            return Ok(false);
        }
        let table = replay::build(shard, &data, &replay::checkpoint_config(), TableMemory::default())?;
        let snapshot = crate::codec::encode_snapshot(&table)?;
        self.run(move |inner| async move { inner.write_checkpoint(shard, Some(cursor), snapshot).await })
    }

    /// What this store did since it connected.
    pub fn stats(&self) -> EtcdStats {
        let c = &self.inner.counters;
        EtcdStats {
            commits: c.commits.load(Ordering::Relaxed),
            write_txns: c.commit_txns.load(Ordering::Relaxed),
            log_entries: c.log_entries.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            checkpoint_failures: c.checkpoint_failures.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
        }
    }

    /// Where this store stands with `shard`.
    pub fn ownership(&self, shard: ShardId) -> Result<Ownership> {
        let shard = shard.get();
        self.run(move |inner| async move { Ok(inner.ownership(shard).await) })
    }

    /// The settings.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }
}

impl GhostStore for EtcdStore {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        self.load_reusing(shard, config, TableMemory::default())
    }

    fn load_reusing(&self, shard: ShardId, config: &TableConfig, memory: TableMemory) -> Result<GhostTable> {
        let shard = shard.get();
        let data = self.run(move |inner| async move { inner.read_for_load(shard).await })?;
        // Decoded on the calling thread: the store's one worker only waits on etcd.
        replay::build(shard, &data, config, memory).inspect_err(|e| {
            tracing::error!(shard, error = %e.chain(), "undecodable etcd shard state");
        })
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // Encoded on the calling thread, as the folds are.
        let records = commit::records(batch)?;
        let due = self.run(move |inner| async move { inner.commit(records).await })?;
        for (shard, cursor) in due {
            // The batch is durable whatever happens here: a failed fold is
            // reported and tried again at a later commit.
            if let Err(e) = self.fold(shard, Some(cursor)) {
                self.inner.counters.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(shard, error = %e.chain(), "etcd checkpoint failed");
            }
        }
        Ok(())
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        let shard = table.shard().get();
        let snapshot = crate::codec::encode_snapshot(table)?;
        self.run(move |inner| async move { inner.write_checkpoint(shard, None, snapshot).await }).map(drop)
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn release_shards(&self, shards: &[ShardId]) -> Result<()> {
        let shards: Vec<u16> = shards.iter().map(|s| s.get()).collect();
        self.run(move |inner| async move { inner.release_shards(&shards).await })
    }

    /// Always a watch: that of this store's claim on `shard`, or an invalid
    /// one if it holds none (or cannot tell: the store is closed).
    fn claim(&self, shard: ShardId) -> Option<ClaimWatch> {
        let shard = shard.get();
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
