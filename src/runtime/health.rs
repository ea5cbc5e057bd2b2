//! Readiness and a health summary: which shards serve, which still load, which failed and why.

use super::GhostRuntime;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::messages::GetStats;
use std::time::Duration;

/// Every shard's condition at one moment, from [`GhostRuntime::health`] or
/// [`GhostRuntime::ready`]; each list ascends by shard id.
///
/// A host serves it as its health check: [`is_ready`](Self::is_ready) for a
/// readiness probe, the failed shards and their causes for an operator
/// (repair, then [`GhostRuntime::revive_shard`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Shards that serve.
    pub ready: Vec<ShardId>,
    /// Shards loading their state (at start, or reloading after a restart).
    pub loading: Vec<ShardId>,
    /// Shards that serve nothing until an operator acts, with the error their
    /// requests get: failed closed, down after too many restarts, or fenced.
    pub failed: Vec<(ShardId, Error)>,
}

impl Health {
    /// Every shard serves.
    pub fn is_ready(&self) -> bool {
        self.loading.is_empty() && self.failed.is_empty()
    }

    /// No shard is loading: each serves or has failed.
    pub fn is_settled(&self) -> bool {
        self.loading.is_empty()
    }
}

impl std::fmt::Display for Health {
    /// One line for a health endpoint or a log: `ready 14/16, loading [], failed [3: shard 3 failed closed: ..]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.ready.len() + self.loading.len() + self.failed.len();
        write!(f, "ready {}/{total}, loading {:?}, failed [", self.ready.len(), self.loading)?;
        for (i, (shard, e)) in self.failed.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{shard}: {}", e.chain())?;
        }
        f.write_str("]")
    }
}

impl GhostRuntime {
    /// Every shard's condition now, without a message to any of them (read
    /// from the same cells [`GhostReader`](crate::GhostReader) reads).
    /// [`Error::Closed`] after [`shutdown`](Self::shutdown).
    pub fn health(&self) -> Result<Health> {
        self.check_open(false)?;
        let mut health = Health::default();
        for shard in self.shard_ids() {
            match self.reader.serving(shard) {
                Ok(()) => health.ready.push(shard),
                Err(Error::ShardLoading { .. }) => health.loading.push(shard),
                Err(Error::Closed) => return Err(Error::Closed),
                Err(e) => health.failed.push((shard, e)),
            }
        }
        Ok(health)
    }

    /// Waits until every shard has loaded or failed, and says which: call it
    /// after [`start`](crate::GhostRuntimeBuilder::start) before serving
    /// traffic. Requests sent earlier are not lost (they wait in the
    /// mailboxes), but a host that wants to report readiness, or to know
    /// which shards failed closed at start, asks this.
    pub async fn ready(&self) -> Result<Health> {
        loop {
            // A shard handles no message while it loads, so these are
            // answered once each has loaded or failed.
            let calls = self.shard_ids().into_iter().map(|s| self.call(s, GetStats));
            for r in futures::future::join_all(calls).await {
                r?;
            }
            let health = self.health()?;
            if health.is_settled() {
                return Ok(health);
            }
            // A shard between restarts waits out its back-off with its
            // mailbox open: ask again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
