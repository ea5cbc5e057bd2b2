//! The verify step's seam: the host's [`Verifier`], and [`DirectoryVerifier`] for single-process use.

use crate::error::{Error, Result};
use crate::ids::{Epoch, ShardId};
use crate::sweep::{LocalEdges, Verdict};
use foldhash::fast::RandomState;
use futures::future::{BoxFuture, FutureExt};
use hashbrown::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// One ghost to verify against its target shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifyRequest {
    /// The shard that holds the ghost (whose local edges point at the node).
    pub shard: ShardId,
    /// The moved node.
    pub node_id: Box<str>,
    /// Where the ghost says the node lives.
    pub target_shard: ShardId,
    /// The ghost's move epoch.
    pub epoch: Epoch,
}

/// Answers whether a ghost is still right; implemented by the host.
///
/// In a cluster this is an RPC to `target_shard`. The sweeper bounds each call
/// by its timeout, and treats an error or a timeout as [`Verdict::Inconclusive`]:
/// the ghost backs off and is retried, never purged. Answer
/// [`Verdict::Purge`] only when the node is known to be gone, and
/// [`Verdict::Redirect`] when it lives elsewhere under a newer epoch (the
/// ghost's own shard included: the node came back).
///
/// # Batches
///
/// A verifier whose answers cost a round trip can take a page's checks in
/// batches: it returns more than 1 from [`max_batch`](Self::max_batch) and
/// implements [`verify_batch`](Self::verify_batch). The sweeper then still
/// takes one token of its bucket per ghost, counts every ghost of a batch
/// against [`max_in_flight`](crate::SweeperConfig::max_in_flight) (so a batch
/// holds at most that many; raise it to the page size for one call per page),
/// and bounds the whole call by
/// [`verify_timeout`](crate::SweeperConfig::verify_timeout): a batch that
/// times out, panics, or answers with the wrong number of results is
/// `Inconclusive` for each of its ghosts.
pub trait Verifier: Send + Sync + 'static {
    /// Verifies one ghost. The future must not borrow `self` (it may outlive the call).
    fn verify(&self, request: VerifyRequest) -> BoxFuture<'static, Result<Verdict>>;

    /// Verifies several ghosts, answering in the order asked: one result per
    /// request, an error for each one that could not be asked (it counts as
    /// `Inconclusive`). The default runs [`verify`](Self::verify) on each, all
    /// at once.
    fn verify_batch(&self, requests: Vec<VerifyRequest>) -> BoxFuture<'static, Vec<Result<Verdict>>> {
        let calls: Vec<_> = requests.into_iter().map(|r| self.verify(r)).collect();
        futures::future::join_all(calls).boxed()
    }

    /// Most ghosts the sweeper should pass to one
    /// [`verify_batch`](Self::verify_batch). The default, 1, has it call
    /// [`verify`](Self::verify) for each ghost, with a timeout each.
    fn max_batch(&self) -> usize {
        1
    }
}

impl<V: Verifier + ?Sized> Verifier for Arc<V> {
    fn verify(&self, request: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        (**self).verify(request)
    }

    fn verify_batch(&self, requests: Vec<VerifyRequest>) -> BoxFuture<'static, Vec<Result<Verdict>>> {
        (**self).verify_batch(requests)
    }

    fn max_batch(&self) -> usize {
        (**self).max_batch()
    }
}

type Map<K, V> = HashMap<K, V, RandomState>;

#[derive(Debug, Default)]
struct Directory {
    /// Node → (home shard, move epoch).
    homes: RwLock<Map<Box<str>, (ShardId, Epoch)>>,
    /// Ghost shard → node → authoritative local edge count and its log position.
    local_edges: RwLock<Map<ShardId, Map<Box<str>, LocalEdges>>>,
    unreachable: RwLock<Map<ShardId, bool>>,
    latency: RwLock<Map<ShardId, Duration>>,
    calls: AtomicU64,
}

/// A [`Verifier`] for single-process deployments and tests: answers from a
/// node directory that the host updates on every move.
///
/// The directory is the truth: a node it does not know is taken as deleted
/// and its ghosts are purged. So record every move (and only forget a node on
/// deletion). Clones share the directory.
///
/// Answers, for a ghost of node `n` on shard `s` that points at `t` with epoch `e`:
/// - `n` lives at `t` with epoch `e`: `Keep`, with the local edge count of
///   `(s, n)` if the host set one ([`set_local_edges`](Self::set_local_edges));
/// - `n` lives at any shard with a newer epoch: `Redirect` there (`s` itself
///   when the node came back);
/// - `n` unknown: `Purge`;
/// - anything else (the directory is behind the ghost): `Inconclusive`;
/// - `t` made unreachable: an error, after the latency set for `t`, if any.
#[derive(Debug, Clone, Default)]
pub struct DirectoryVerifier {
    dir: Arc<Directory>,
}

impl DirectoryVerifier {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `node_id` now lives on `shard` since move `epoch`. An older
    /// epoch than the one recorded is ignored, so replays are harmless.
    pub fn record_move(&self, node_id: &str, shard: ShardId, epoch: Epoch) {
        let mut homes = write(&self.dir.homes);
        match homes.get_mut(node_id) {
            Some(home) if home.1 >= epoch => {}
            Some(home) => *home = (shard, epoch),
            None => {
                homes.insert(node_id.into(), (shard, epoch));
            }
        }
    }

    /// Records that `node_id` was deleted: its ghosts will be purged.
    pub fn record_delete(&self, node_id: &str) {
        write(&self.dir.homes).remove(node_id);
    }

    /// Where `node_id` lives and since which epoch, if known.
    pub fn home(&self, node_id: &str) -> Option<(ShardId, Epoch)> {
        read(&self.dir.homes).get(node_id).copied()
    }

    /// Sets the authoritative count of `shard`'s local edges to `node_id`, and
    /// the position of `shard`'s edge log it was taken at, returned with `Keep`
    /// to repair drifted refcounts (`None`: unknown). See [`LocalEdges`] for how
    /// to take it: a count set here is answered until it is set again, so set
    /// it together with each batch the host sends to `shard`.
    pub fn set_local_edges(&self, shard: ShardId, node_id: &str, count: Option<LocalEdges>) {
        let mut edges = write(&self.dir.local_edges);
        let per_shard = edges.entry(shard).or_default();
        match count {
            Some(n) => {
                per_shard.insert(node_id.into(), n);
            }
            None => {
                per_shard.remove(node_id);
            }
        }
    }

    /// The local edge count of `node_id` on `shard` that
    /// [`set_local_edges`](Self::set_local_edges) set, if any.
    pub fn local_edges(&self, shard: ShardId, node_id: &str) -> Option<LocalEdges> {
        read(&self.dir.local_edges).get(&shard).and_then(|m| m.get(node_id)).copied()
    }

    /// Fault hook: verifies against `shard` fail (as an unreachable RPC would).
    /// Cargo feature `testing`.
    #[cfg(feature = "testing")]
    pub fn set_unreachable(&self, shard: ShardId, unreachable: bool) {
        write(&self.dir.unreachable).insert(shard, unreachable);
    }

    /// Fault hook: verifies against `shard` take `latency` (a tokio sleep, so
    /// paused test time applies). Zero removes it. Cargo feature `testing`.
    #[cfg(feature = "testing")]
    pub fn set_latency(&self, shard: ShardId, latency: Duration) {
        write(&self.dir.latency).insert(shard, latency);
    }

    /// Verifies answered or failed so far.
    pub fn calls(&self) -> u64 {
        self.dir.calls.load(Ordering::Relaxed)
    }

    fn answer(&self, r: &VerifyRequest) -> Result<Verdict> {
        if read(&self.dir.unreachable).get(&r.target_shard).copied().unwrap_or(false) {
            return Err(Error::TargetUnreachable { shard: r.target_shard });
        }
        let Some((home, epoch)) = self.home(&r.node_id) else {
            return Ok(Verdict::Purge);
        };
        Ok(if epoch > r.epoch {
            Verdict::Redirect { shard: home, epoch }
        } else if epoch == r.epoch && home == r.target_shard {
            let edges = read(&self.dir.local_edges);
            Verdict::Keep { local_edges: edges.get(&r.shard).and_then(|m| m.get(&*r.node_id)).copied() }
        } else {
            Verdict::Inconclusive
        })
    }
}

impl Verifier for DirectoryVerifier {
    fn verify(&self, request: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        let latency = read(&self.dir.latency).get(&request.target_shard).copied().unwrap_or_default();
        if latency.is_zero() {
            self.dir.calls.fetch_add(1, Ordering::Relaxed);
            return futures::future::ready(self.answer(&request)).boxed();
        }
        let this = self.clone();
        async move {
            tokio::time::sleep(latency).await;
            // Answered after the delay, so that moves made meanwhile are seen, as
            // a remote shard would see them.
            this.dir.calls.fetch_add(1, Ordering::Relaxed);
            this.answer(&request)
        }
        .boxed()
    }
}

// A writer that panicked cannot leave a map half-updated (each update is one
// map call), so a poisoned lock is still safe to use.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(shard: u16, target: u16, epoch: u64) -> VerifyRequest {
        VerifyRequest {
            shard: ShardId(shard),
            node_id: "n".into(),
            target_shard: ShardId(target),
            epoch: Epoch(epoch),
        }
    }

    fn answer(d: &DirectoryVerifier, r: VerifyRequest) -> Result<Verdict> {
        futures::executor::block_on(d.verify(r))
    }

    #[test]
    fn answers_follow_the_directory() {
        let d = DirectoryVerifier::new();
        assert_eq!(answer(&d, req(0, 1, 1)), Ok(Verdict::Purge), "unknown node = deleted");
        d.record_move("n", ShardId(1), Epoch(1));
        assert_eq!(answer(&d, req(0, 1, 1)), Ok(Verdict::Keep { local_edges: None }));
        d.set_local_edges(ShardId(0), "n", Some(LocalEdges::at(3, 7)));
        assert_eq!(answer(&d, req(0, 1, 1)), Ok(Verdict::Keep { local_edges: Some(LocalEdges::at(3, 7)) }));
        d.record_move("n", ShardId(2), Epoch(2));
        assert_eq!(answer(&d, req(0, 1, 1)), Ok(Verdict::Redirect { shard: ShardId(2), epoch: Epoch(2) }));
        d.record_move("n", ShardId(0), Epoch(3));
        assert_eq!(answer(&d, req(0, 1, 1)), Ok(Verdict::Redirect { shard: ShardId(0), epoch: Epoch(3) }));
        d.record_move("n", ShardId(5), Epoch(1));
        assert_eq!(d.home("n"), Some((ShardId(0), Epoch(3))), "an older move is ignored");
        assert_eq!(answer(&d, req(0, 1, 9)), Ok(Verdict::Inconclusive), "directory behind the ghost");
        d.record_delete("n");
        assert_eq!(answer(&d, req(0, 1, 1)), Ok(Verdict::Purge));
        assert_eq!(d.calls(), 7);
    }

    #[cfg(feature = "testing")]
    #[test]
    fn an_unreachable_target_fails() {
        let d = DirectoryVerifier::new();
        d.record_move("n", ShardId(1), Epoch(1));
        d.set_unreachable(ShardId(1), true);
        assert_eq!(answer(&d, req(0, 1, 1)), Err(Error::TargetUnreachable { shard: ShardId(1) }));
        d.set_unreachable(ShardId(1), false);
        assert_eq!(answer(&d, req(0, 1, 1)), Ok(Verdict::Keep { local_edges: None }));
    }
}
