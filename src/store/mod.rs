//! `GhostStore`: the catalog seam that persists each shard's stubs and applied sequence number.
//!
//! Calls block. The crate only calls a store from its writer thread or a
//! blocking pool, never from a shard's arbiter thread.

mod claim;
#[cfg(feature = "testing")]
pub(crate) mod faulty;
mod memory;
mod redb;
mod redb_fold;
mod redb_key;
mod redb_log;
mod redb_schema;

#[cfg(feature = "etcd")]
pub mod etcd;

pub use crate::stub::{StubRecord, StubRef};
pub use crate::table::changes::ShardChanges;
pub use claim::ClaimWatch;
pub use memory::MemoryStore;
pub use redb::RedbStore;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdStore};

use crate::codec;
use crate::config::TableConfig;
use crate::error::Result;
use crate::ids::ShardId;
use crate::table::{GhostTable, TableMemory};

/// Durable storage of ghost state, shared by all shards of a process.
///
/// Contract, so that a networked, replicated catalog fits as well as a local file:
/// - `commit` may fail with [`Error::Store`](crate::Error::Store) and be called
///   again with the same batch; applying a batch twice has the effect of once
///   (upserts and removals are idempotent, sequence numbers only rise).
/// - A commit is all-or-nothing as a later load and a replay see it, however
///   the store splits it across transactions: a failed commit leaves each of
///   its shards either without any of the batch's changes to it or with all
///   of them and its sequence number, never part of them. Replaying the
///   batch's edge events onto a load (with the same sequence number) then
///   counts each event once, as does retrying the batch.
/// - A store that cannot promise that (a host's own storage that writes row
///   by row) keeps each row's [`StubRef::seq`] and gives it back on load
///   (through [`GhostTable::from_records`]): a row that landed without its
///   commit's sequence number then holds the batches up to its `seq`, and a
///   retry of those batches skips that row's events instead of counting them
///   twice. The table stamps every row it writes, a row written again after
///   it landed ahead included (it keeps the higher number), so such a store
///   must keep `seq` on every row; a sequence number that lands before all of
///   its rows is never safe: nothing can tell the missing rows apart. A
///   snapshot ([`export_snapshot`](GhostStore::export_snapshot)) does not
///   carry `seq`, so a table with rows stored ahead of its sequence number
///   refuses to encode one ([`Error::Encode`](crate::Error::Encode)) until
///   the host has resent the batches they hold.
/// - `commit` returns only when the batch is durable.
/// - `load` of a shard never written returns an empty table; unreadable or
///   corrupt state is an error, never an empty table.
pub trait GhostStore: Send + Sync + 'static {
    /// Loads `shard`'s stubs and applied sequence number into a fresh table.
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable>;

    /// [`load`](Self::load) into `memory`: the allocations of the shard's
    /// table this process just dropped ([`GhostTable::into_memory`]), which a
    /// shard that reloads (after a panic or a failed flush) hands its store.
    /// A large table built in them is not mapped and faulted in afresh. The
    /// default ignores `memory` and calls `load`; the crate's stores use it.
    fn load_reusing(&self, shard: ShardId, config: &TableConfig, memory: TableMemory) -> Result<GhostTable> {
        // Freed before the load: the new table is built beside nothing.
        drop(memory);
        self.load(shard, config)
    }

    /// Durably applies the changes of one or more shards.
    fn commit(&self, batch: &[ShardChanges]) -> Result<()>;

    /// Atomically replaces everything stored for the table's shard by its
    /// contents, times as the table holds them (see
    /// [`import_snapshot`](Self::import_snapshot) for a table from another clock).
    fn replace(&self, table: &GhostTable) -> Result<()>;

    /// A short name for logs and metrics (`"redb"`, `"memory"`).
    fn kind(&self) -> &'static str;

    /// Exports `shard` as snapshot bytes (the codec's envelope), to hand it to
    /// another node's catalog.
    fn export_snapshot(&self, shard: ShardId, config: &TableConfig) -> Result<Vec<u8>> {
        codec::encode_snapshot(&self.load(shard, config)?)
    }

    /// Replaces `shard`'s state by a snapshot made by [`export_snapshot`](Self::export_snapshot)
    /// (or the seed's bytes). The bytes are fully decoded and checked first:
    /// bad bytes change nothing.
    ///
    /// The snapshot's times (grace periods, holds, tombstones) are on the
    /// exporting process's clock, which may be behind this one: they are
    /// stored `TableConfig::max_clock_skew` later than they say, so that no
    /// store, with claims or without, can shorten them.
    fn import_snapshot(&self, shard: ShardId, bytes: &[u8], config: &TableConfig) -> Result<()> {
        let mut table = codec::decode_snapshot(bytes, shard, config)?;
        table.settle_stored_times();
        self.replace(&table)
    }

    /// This process stops serving `shards`: a store that grants ownership of
    /// shards to one process at a time hands them over now, rather than when
    /// its lease lapses. The writer thread calls it once, after its last job,
    /// with the shards it loaded. Default: nothing to do.
    fn release_shards(&self, shards: &[ShardId]) -> Result<()> {
        let _ = shards;
        Ok(())
    }

    /// How to tell whether this process's claim on `shard`, under which it was
    /// just loaded, still holds: for a store that grants ownership of shards
    /// to one process at a time and can lose it behind the process's back
    /// (a lease that lapses). The writer asks right after each load, and the
    /// shard's actor checks the watch before every request: once it is
    /// invalid, the shard answers [`Error::Fenced`](crate::Error::Fenced) and
    /// writes nothing more. A store must make it invalid before another
    /// process can take the shard. Default: `None`, the claim always holds.
    ///
    /// `None` also says that the shard never moves between processes, so its
    /// loads run on the clock that wrote it: they read stored times as written,
    /// without `TableConfig::max_clock_skew`.
    fn claim(&self, shard: ShardId) -> Option<ClaimWatch> {
        let _ = shard;
        None
    }
}

impl<S: GhostStore + ?Sized> GhostStore for std::sync::Arc<S> {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        (**self).load(shard, config)
    }
    fn load_reusing(&self, shard: ShardId, config: &TableConfig, memory: TableMemory) -> Result<GhostTable> {
        (**self).load_reusing(shard, config, memory)
    }
    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        (**self).commit(batch)
    }
    fn replace(&self, table: &GhostTable) -> Result<()> {
        (**self).replace(table)
    }
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn release_shards(&self, shards: &[ShardId]) -> Result<()> {
        (**self).release_shards(shards)
    }
    fn claim(&self, shard: ShardId) -> Option<ClaimWatch> {
        (**self).claim(shard)
    }
}
