//! Which process serves a shard's verifies: the [`ShardRoutes`] seam and a fixed map.

use crate::ids::ShardId;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Where the verify service of the process that owns a shard listens.
///
/// [`EtcdOwners`](super::EtcdOwners) answers from the owner keys in etcd, kept
/// current by a watch; [`StaticRoutes`] from a map the host sets.
pub trait ShardRoutes: Send + Sync + 'static {
    /// The gRPC address (`http://host:port`) of `shard`'s owner, if known. A
    /// shard with no known owner is not asked: its verifies are `Inconclusive`.
    fn route(&self, shard: ShardId) -> Option<Arc<str>>;
}

impl<R: ShardRoutes + ?Sized> ShardRoutes for Arc<R> {
    fn route(&self, shard: ShardId) -> Option<Arc<str>> {
        (**self).route(shard)
    }
}

/// Routes the host sets: shard → address. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct StaticRoutes {
    map: Arc<RwLock<HashMap<ShardId, Arc<str>>>>,
}

impl StaticRoutes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `shard` to `address` (`http://host:port`, or `host:port`).
    pub fn set(&self, shard: ShardId, address: &str) {
        let address = normalize(address);
        self.map.write().unwrap_or_else(PoisonError::into_inner).insert(shard, address);
    }

    /// Forgets `shard`'s route: its verifies are `Inconclusive` until set again.
    pub fn remove(&self, shard: ShardId) {
        self.map.write().unwrap_or_else(PoisonError::into_inner).remove(&shard);
    }
}

impl ShardRoutes for StaticRoutes {
    fn route(&self, shard: ShardId) -> Option<Arc<str>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).get(&shard).cloned()
    }
}

/// `host:port` as a URI tonic connects to.
pub(crate) fn normalize(address: &str) -> Arc<str> {
    if address.contains("://") { address.into() } else { format!("http://{address}").into() }
}
