//! [`EtcdOwners`]: who owns which shard, from the owner keys that
//! [`EtcdStore`](crate::store::EtcdStore)'s fencing writes, kept current by an
//! etcd watch; and each process's verify address, registered beside them.

use super::routes::{ShardRoutes, normalize};
use crate::error::{Cause, Error, Result};
use crate::ids::ShardId;
use crate::store::etcd::{self, owner_prefix, owner_shard, prefix_end, runtime};
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// `{prefix}peers/`: each process's verify address, under its owner id.
fn peer_prefix(prefix: &str) -> String {
    format!("{prefix}peers/")
}

/// What the watch knows, as of `revision`.
#[derive(Debug, Default)]
struct Known {
    /// Shard → owner id (the owner key's value).
    owners: HashMap<u16, String>,
    /// Owner id → verify address.
    peers: HashMap<String, Arc<str>>,
    revision: i64,
}

struct Shared {
    known: RwLock<Known>,
    /// Owner-key changes seen by the watch (puts and deletes).
    changes: AtomicU64,
    /// Times the listing was read again (start, lost watch, compaction).
    resyncs: AtomicU64,
}

/// Settings of [`EtcdOwners`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnersConfig {
    /// The store's key prefix ([`EtcdConfig::prefix`](crate::store::EtcdConfig::prefix)).
    pub prefix: String,
    /// Bound on connecting and on each etcd call. Default 2 s.
    pub op_timeout: Duration,
    /// Wait before watching again after the watch broke. Default 200 ms.
    pub retry_delay: Duration,
}

impl Default for OwnersConfig {
    fn default() -> Self {
        Self {
            prefix: "vshard-ghosts/".into(),
            op_timeout: Duration::from_secs(2),
            retry_delay: Duration::from_millis(200),
        }
    }
}

/// Who owns which shard and where its verify service listens, read from etcd.
///
/// The owner key `{prefix}owner/{shard:05}` holds its owner's id (what
/// [`EtcdConfig::owner_id`](crate::store::EtcdConfig::owner_id) names), attached
/// to the owner's lease, so it goes when the owner releases the shard or its
/// lease lapses. A process registers its verify address under its id
/// ([`register`](Self::register)), at `{prefix}peers/{owner id}`. Both are
/// read once and then followed by one etcd watch (no polling): a takeover
/// shows within a round trip of etcd's. A broken watch, or one cut by a
/// compaction, reads everything again and watches from there.
///
/// As [`ShardRoutes`], a shard routes to its owner's address; a shard with
/// no owner, or whose owner registered no address, routes nowhere (its
/// verifies are `Inconclusive`). The watch runs on its own one-thread runtime.
pub struct EtcdOwners {
    shared: Arc<Shared>,
    client: Client,
    config: OwnersConfig,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for EtcdOwners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOwners").field("prefix", &self.config.prefix).finish_non_exhaustive()
    }
}

fn cluster_err(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Error {
    let what = what.into();
    move |e| Error::Cluster { what, source: Some(Cause::new(e)) }
}

impl EtcdOwners {
    /// Connects to etcd at `endpoints` (`http://host:port` or `etcd://host:port`),
    /// reads the owners and addresses, and starts following them. Fails with
    /// [`Error::Cluster`] if etcd cannot be reached within the `op_timeout`.
    pub fn start<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        config: OwnersConfig,
    ) -> Result<Self> {
        let endpoints = etcd::endpoints(endpoints);
        if endpoints.is_empty() || config.op_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "cluster: an etcd endpoint and a non-zero op_timeout are needed".into(),
            ));
        }
        let runtime = runtime("ghost-owners").map_err(|e| Error::Cluster {
            what: "owner watch runtime".into(),
            source: Some(Cause::new(e)),
        })?;
        let shared = Arc::new(Shared {
            known: RwLock::default(),
            changes: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
        });
        let timeout = config.op_timeout;
        let what = format!("etcd at {endpoints:?} unreachable within {timeout:?}");
        let client = futures::executor::block_on(runtime.spawn({
            let what = what.clone();
            async move {
                // Keep-alive pings, so that a dead etcd breaks the watch instead of stalling it.
                let options = ConnectOptions::new()
                    .with_connect_timeout(timeout)
                    .with_keep_alive(timeout, timeout)
                    .with_keep_alive_while_idle(true);
                let client = tokio::time::timeout(timeout, Client::connect(&endpoints, Some(options)))
                    .await
                    .map_err(|_| Error::Cluster { what: what.clone(), source: None })?
                    .map_err(cluster_err(what))?;
                Ok::<_, Error>(client)
            }
        }))
        .map_err(|e| Error::Cluster { what: "owner watch task".into(), source: Some(Cause::new(e)) })??;
        // The first listing before returning: routes are right from the start.
        let (ready, first) = tokio::sync::oneshot::channel();
        runtime.spawn(follow(client.clone(), config.clone(), shared.clone(), Some(ready)));
        let first = futures::executor::block_on(
            runtime.spawn(async move { tokio::time::timeout(timeout, first).await }),
        );
        match first {
            Ok(Ok(Ok(Ok(())))) => {}
            Ok(Ok(Ok(Err(e)))) => return Err(Error::Cluster { what, source: Some(Cause::new(e)) }),
            _ => return Err(Error::Cluster { what, source: None }),
        }
        Ok(Self { shared, client, config, runtime: Some(runtime) })
    }

    /// Registers `address` (`http://host:port` or `host:port`) as the verify
    /// address of the process whose owner id is `owner_id`. It outlives the
    /// process; a stale one is harmless: a shard routes to it only while that
    /// owner id holds the shard's owner key.
    pub fn register(&self, owner_id: &str, address: &str) -> Result<()> {
        let key = format!("{}{owner_id}", peer_prefix(&self.config.prefix));
        let value = normalize(address).to_string();
        let (mut kv, timeout) = (self.client.kv_client(), self.config.op_timeout);
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Cluster { what: "owners closed".into(), source: None })?;
        let put = runtime.spawn(async move {
            match tokio::time::timeout(timeout, kv.put(key, value, None)).await {
                Ok(r) => r.map(drop).map_err(cluster_err("register verify address")),
                Err(_) => Err(Error::Cluster {
                    what: format!("register verify address: no answer within {timeout:?}"),
                    source: None,
                }),
            }
        });
        futures::executor::block_on(put)
            .map_err(|e| Error::Cluster { what: "register task".into(), source: Some(Cause::new(e)) })?
    }

    /// The owner id that holds `shard` now, as far as the watch has seen.
    pub fn owner(&self, shard: ShardId) -> Option<String> {
        self.read().owners.get(&shard.get()).cloned()
    }

    /// Every shard with an owner, and the owner's id.
    pub fn owners(&self) -> HashMap<ShardId, String> {
        self.read().owners.iter().map(|(&s, o)| (ShardId(s), o.clone())).collect()
    }

    /// The verify address registered by `owner_id`.
    pub fn address_of(&self, owner_id: &str) -> Option<Arc<str>> {
        self.read().peers.get(owner_id).cloned()
    }

    /// The etcd revision the known state is at.
    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    /// Owner-key changes the watch has applied, and times it read everything again.
    pub fn watch_counts(&self) -> (u64, u64) {
        (self.shared.changes.load(Ordering::Relaxed), self.shared.resyncs.load(Ordering::Relaxed))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.shared.known.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ShardRoutes for EtcdOwners {
    fn route(&self, shard: ShardId) -> Option<Arc<str>> {
        let known = self.read();
        known.owners.get(&shard.get()).and_then(|owner| known.peers.get(owner)).cloned()
    }
}

impl Drop for EtcdOwners {
    fn drop(&mut self) {
        // Not blocking: a drop may happen on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lists, then watches, for as long as the runtime lives; `ready` hears how
/// the first listing went.
async fn follow(
    client: Client,
    config: OwnersConfig,
    shared: Arc<Shared>,
    mut ready: Option<tokio::sync::oneshot::Sender<Result<()>>>,
) {
    loop {
        let ended = list_and_watch(&client, &config, &shared, &mut ready).await;
        if let Some(tx) = ready.take() {
            // Never listed: `start` fails with this.
            let _ = tx.send(ended);
            return;
        }
        match ended {
            Err(e) => tracing::warn!(error = %e.chain(), "owner watch broke; reading the owners again"),
            Ok(()) => tracing::warn!("owner watch ended; reading the owners again"),
        }
        tokio::time::sleep(config.retry_delay).await;
    }
}

async fn list_and_watch(
    client: &Client,
    config: &OwnersConfig,
    shared: &Shared,
    ready: &mut Option<tokio::sync::oneshot::Sender<Result<()>>>,
) -> Result<()> {
    let (owners_key, peers_key) = (owner_prefix(&config.prefix), peer_prefix(&config.prefix));
    let range = |key: &str| {
        let opts = GetOptions::new().with_range(prefix_end(key.as_bytes()));
        TxnOp::get(key.as_bytes().to_vec(), Some(opts))
    };
    // Both ranges at one revision, so that the watch misses nothing between them.
    let txn = Txn::new().and_then([range(&owners_key), range(&peers_key)]);
    let mut kv = client.kv_client();
    let resp = tokio::time::timeout(config.op_timeout, kv.txn(txn))
        .await
        .map_err(|_| Error::Cluster { what: "list owners: no answer from etcd".into(), source: None })?
        .map_err(cluster_err("list owners"))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut known = Known { revision, ..Known::default() };
    for (i, op) in resp.op_responses().into_iter().enumerate() {
        let TxnOpResponse::Get(get) = op else { continue };
        for kv in get.kvs() {
            if i == 0 {
                if let Some(shard) = owner_shard(&config.prefix, kv.key()) {
                    known.owners.insert(shard, String::from_utf8_lossy(kv.value()).into_owned());
                }
            } else if let Some(id) = kv.key().strip_prefix(peers_key.as_bytes()) {
                let id = String::from_utf8_lossy(id).into_owned();
                known.peers.insert(id, String::from_utf8_lossy(kv.value()).into());
            }
        }
    }
    *shared.known.write().unwrap_or_else(PoisonError::into_inner) = known;
    shared.resyncs.fetch_add(1, Ordering::Relaxed);
    if let Some(tx) = ready.take() {
        let _ = tx.send(Ok(()));
    }

    let from = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut watch_client = client.watch_client();
    let mut stream =
        tokio::time::timeout(config.op_timeout, watch_client.watch(owners_key.clone(), Some(from.clone())))
            .await
            .map_err(|_| Error::Cluster { what: "watch owners: no answer from etcd".into(), source: None })?
            .map_err(cluster_err("watch owners"))?;
    stream.watch(peers_key.clone(), Some(from)).await.map_err(cluster_err("watch peers"))?;
    while let Some(resp) = stream.message().await.map_err(cluster_err("owner watch"))? {
        if resp.canceled() {
            let why = format!(
                "owner watch cancelled (compacted at {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            );
            return Err(Error::Cluster { what: why, source: None });
        }
        let mut known = shared.known.write().unwrap_or_else(PoisonError::into_inner);
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let put = event.event_type() == EventType::Put;
            known.revision = known.revision.max(kv.mod_revision());
            if let Some(shard) = owner_shard(&config.prefix, kv.key()) {
                shared.changes.fetch_add(1, Ordering::Relaxed);
                if put {
                    known.owners.insert(shard, String::from_utf8_lossy(kv.value()).into_owned());
                } else {
                    known.owners.remove(&shard);
                }
            } else if let Some(id) = kv.key().strip_prefix(peers_key.as_bytes()) {
                let id = String::from_utf8_lossy(id).into_owned();
                if put {
                    known.peers.insert(id, String::from_utf8_lossy(kv.value()).into());
                } else {
                    known.peers.remove(&id);
                }
            }
        }
        if let Some(h) = resp.header() {
            known.revision = known.revision.max(h.revision());
        }
    }
    Ok(())
}
