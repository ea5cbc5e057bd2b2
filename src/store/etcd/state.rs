//! The state of an `EtcdStore` on its runtime, in one home: the client, the key layout, the
//! lease, what the store knows of each shard, and its counters. The operations over it live
//! beside it: the lease in `lease.rs`, ownership in `fence.rs`, reads and guarded writes in
//! `io.rs`, commits in `commit.rs`, checkpoints in `checkpoint.rs`.

use super::EtcdConfig;
use super::keys::{self, Keys, Meta};
use super::retry::retry;
use crate::error::{Error, Result};
use crate::store::ClaimWatch;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

/// Largest response a load page may be: ids up to the table's limit.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The store's state, on its runtime.
pub(super) struct Inner {
    pub(super) client: Client,
    pub(super) kv: KvClient,
    pub(super) keys: Keys,
    pub(super) config: EtcdConfig,
    /// One operation at a time: taking a shard, then writing under that
    /// claim, must not interleave with a release or another acquisition.
    pub(super) state: tokio::sync::Mutex<State>,
    /// What the store did, for [`EtcdStats`](super::EtcdStats).
    pub(super) counters: Counters,
    /// Transactions each commit may run before it fails (`usize::MAX`: no
    /// limit); see `EtcdStore::fail_commits_after_parts`.
    #[cfg(feature = "testing")]
    pub(super) commit_fault: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) lease: Option<Lease>,
    pub(super) shards: HashMap<u16, Shard>,
    /// The revision this store last compacted etcd's history at.
    pub(super) compacted: i64,
    /// Transactions the commit under way may still run (fault injection).
    #[cfg(feature = "testing")]
    pub(super) budget: Option<usize>,
}

pub(super) enum Shard {
    Owned(Owned),
    Lost(String),
    /// Handed over by this store. Kept, not forgotten: a write through the old
    /// claim (a late flush of the actor that served it) must be fenced, not
    /// take the shard again over the next owner's state.
    Released,
}

#[derive(Debug, Clone)]
pub(super) struct Owned {
    /// The owner key's `create_revision`: every write compares it.
    pub(super) revision: i64,
    pub(super) lease: i64,
    /// `None` after a write whose outcome is unknown: read again before the next.
    pub(super) cursor: Option<Cursor>,
    /// This claim's watch: revoked when the claim ends here, expired with the lease.
    pub(super) watch: ClaimWatch,
}

/// Where a shard's stored state stands, as this store's own reads and writes left it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) meta: Meta,
    /// The index the next log entry takes.
    pub(super) next: u64,
    /// Bytes of the log entries at or past `meta.log_from`.
    pub(super) log_bytes: u64,
}

/// What the store did since it connected.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    pub(super) commit_txns: AtomicU64,
    pub(super) log_entries: AtomicU64,
    pub(super) checkpoints: AtomicU64,
    pub(super) checkpoint_failures: AtomicU64,
    pub(super) compactions: AtomicU64,
}

impl State {
    /// Sets what this store knows of `shard`, revoking the watch of a claim that ends.
    pub(super) fn put(&mut self, shard: u16, new: Shard) {
        let same_claim = |old: &Owned| matches!(&new, Shard::Owned(o) if o.revision == old.revision);
        if let Some(Shard::Owned(old)) = self.shards.get(&shard)
            && !same_claim(old)
        {
            old.watch.revoke();
        }
        self.shards.insert(shard, new);
    }
}

/// The store's one lease; every owner key it creates is attached to it.
pub(super) struct Lease {
    pub(super) id: i64,
    /// Set by the keep-alive task once the lease is gone, or may be.
    pub(super) lost: Arc<AtomicBool>,
    pub(super) keeper: tokio::task::JoinHandle<()>,
    /// Until when the lease surely holds; each claim watches a derived copy.
    pub(super) watch: ClaimWatch,
}

impl Inner {
    pub(super) async fn connect(endpoints: Vec<String>, config: EtcdConfig) -> Result<Self> {
        let options =
            ConnectOptions::new().with_connect_timeout(config.op_timeout).with_timeout(config.op_timeout);
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| Error::store_from(format!("etcd connect {endpoints:?}"), e))?;
        let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        let inner = Self {
            client,
            kv,
            keys: Keys::new(&config.prefix),
            config,
            state: Default::default(),
            counters: Counters::default(),
            #[cfg(feature = "testing")]
            commit_fault: std::sync::atomic::AtomicUsize::new(usize::MAX),
        };
        inner.adopt().await?;
        Ok(inner)
    }

    /// Writes the prefix's format marker unless present; refuses another one.
    async fn adopt(&self) -> Result<()> {
        let key = self.keys.format();
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), keys::FORMAT, None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn, "write format marker").await?;
        let found = first_kv(&resp).map(|kv| kv.value().to_vec());
        keys::check_format(found.as_deref(), &self.config.prefix)
    }

    pub(super) async fn txn(&self, txn: Txn, what: &str) -> Result<etcd_client::TxnResponse> {
        retry(&self.config, what, || {
            let (mut kv, txn) = (self.kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Marks where `shards` stand unknown, after a write whose outcome is.
    pub(super) fn forget(st: &mut State, shards: impl IntoIterator<Item = u16>) {
        for shard in shards {
            if let Some(Shard::Owned(o)) = st.shards.get_mut(&shard) {
                o.cursor = None;
            }
        }
    }

    /// Records where a committed write left `shard`.
    pub(super) fn set_cursor(st: &mut State, shard: u16, cursor: Cursor) {
        if let Some(Shard::Owned(o)) = st.shards.get_mut(&shard) {
            o.cursor = Some(cursor);
        }
    }
}

/// The first key-value read by a transaction's first get (either branch).
pub(super) fn first_kv(resp: &TxnResponse) -> Option<KeyValue> {
    match resp.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(mut get)) => get.take_kvs().into_iter().next(),
        _ => None,
    }
}
