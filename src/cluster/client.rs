//! [`GrpcVerifier`]: the crate's [`Verifier`] over gRPC, routing each ghost to
//! the process that owns its target shard, one call per destination and batch.

use super::directory::{LocalEdgeCounts, Location, verdict};
use super::proto::{self, Answer, GhostVerifyClient};
use super::routes::ShardRoutes;
use crate::error::{Cause, Error, Result};
use crate::ids::{Epoch, ShardId};
use crate::sweep::{Verdict, Verifier, VerifyRequest};
use futures::future::{BoxFuture, FutureExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Settings of a [`GrpcVerifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcVerifierConfig {
    /// Bound on one call, connecting included; past it every ghost of the
    /// call is `Inconclusive`. Keep it below the sweeper's `verify_timeout`,
    /// which bounds the whole batch. Default 1 s.
    pub deadline: Duration,
    /// Bound on opening a connection to a peer. Default 500 ms.
    pub connect_timeout: Duration,
    /// Most ghosts the sweeper passes to one `verify_batch`, and so most
    /// queries per call. Default 1 024.
    pub max_batch: usize,
}

impl Default for GrpcVerifierConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            max_batch: 1_024,
        }
    }
}

impl GrpcVerifierConfig {
    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<()> {
        if self.deadline.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "cluster: deadline and connect_timeout must be non-zero".into(),
            ));
        }
        if self.max_batch == 0 || self.max_batch > super::MAX_QUERIES_PER_CALL {
            return Err(Error::InvalidConfig(format!(
                "cluster: max_batch must be in 1..={}",
                super::MAX_QUERIES_PER_CALL
            )));
        }
        Ok(())
    }
}

/// What a [`GrpcVerifier`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls made.
    pub rpcs: u64,
    /// Calls that failed as a whole (unreachable, timed out, garbage).
    pub failed_rpcs: u64,
    /// Ghosts sent in calls.
    pub verifies: u64,
    /// Ghosts not sent: no owner of their target shard was known.
    pub unroutable: u64,
    /// Peers connected to (one channel each, reused for every call).
    pub channels: u64,
}

impl ClientStats {
    /// Ghosts per call, on average.
    pub fn verifies_per_rpc(&self) -> f64 {
        if self.rpcs == 0 { 0.0 } else { self.verifies as f64 / self.rpcs as f64 }
    }
}

#[derive(Default)]
struct Counters {
    rpcs: AtomicU64,
    failed_rpcs: AtomicU64,
    verifies: AtomicU64,
    unroutable: AtomicU64,
}

struct Inner {
    routes: Arc<dyn ShardRoutes>,
    local: Arc<dyn LocalEdgeCounts>,
    config: GrpcVerifierConfig,
    /// One channel per peer address: it multiplexes every call over one
    /// HTTP/2 connection and reconnects by itself after a failure.
    channels: Mutex<HashMap<Arc<str>, Channel>>,
    counters: Counters,
}

/// The runtime the calls run on, shut down without blocking when the last
/// clone of the verifier goes (that may happen on an async thread).
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A [`Verifier`] whose answers come from the processes that own the ghosts'
/// target shards, over gRPC.
///
/// Each ghost goes to the owner of its target shard, as `routes` names it;
/// the ghosts of one [`verify_batch`](Verifier::verify_batch) that share an
/// owner go in one call (several, past
/// [`max_batch`](GrpcVerifierConfig::max_batch)), the calls to different
/// owners at once. Every call is bounded by the
/// [`deadline`](GrpcVerifierConfig::deadline). A ghost whose shard has no
/// known owner, or whose call failed (unreachable, timed out, closed, an
/// answer that does not decode or does not match the request), gets an
/// error, which the sweeper counts as `Inconclusive`: a failure never purges.
///
/// The local edge count of a `Keep` comes from `local`, in this process: the
/// remote side says only where the node lives.
///
/// The sweeper hands it at most `max_in_flight` ghosts per batch (every ghost
/// of a batch counts as in flight), so give the sweeper a
/// [`max_in_flight`](crate::SweeperConfig::max_in_flight) of at least its
/// page size for one call per page and owner.
///
/// Calls run on the verifier's own one-thread runtime, not on the caller's
/// (the sweeper's arbiter). Clones share it, the connections and the counts.
#[derive(Clone)]
pub struct GrpcVerifier {
    inner: Arc<Inner>,
    runtime: Arc<OwnedRuntime>,
}

impl std::fmt::Debug for GrpcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcVerifier").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl GrpcVerifier {
    /// A verifier that routes by `routes` and takes local edge counts from `local`.
    pub fn new(
        routes: Arc<dyn ShardRoutes>,
        local: Arc<dyn LocalEdgeCounts>,
        config: GrpcVerifierConfig,
    ) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ghost-verify-client")
            .enable_all()
            .build()
            .map_err(|e| Error::Cluster {
                what: "verify client runtime".into(),
                source: Some(Cause::new(e)),
            })?;
        let inner =
            Inner { routes, local, config, channels: Mutex::default(), counters: Counters::default() };
        Ok(Self { inner: Arc::new(inner), runtime: Arc::new(OwnedRuntime(Some(runtime))) })
    }

    /// Calls made, ghosts sent, failures, peers.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            rpcs: c.rpcs.load(Ordering::Relaxed),
            failed_rpcs: c.failed_rpcs.load(Ordering::Relaxed),
            verifies: c.verifies.load(Ordering::Relaxed),
            unroutable: c.unroutable.load(Ordering::Relaxed),
            channels: self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner).len() as u64,
        }
    }
}

impl Verifier for GrpcVerifier {
    fn verify(&self, request: VerifyRequest) -> BoxFuture<'static, Result<Verdict>> {
        let shard = request.target_shard;
        self.verify_batch(vec![request])
            .map(move |mut v| v.pop().unwrap_or(Err(Error::TargetUnreachable { shard })))
            .boxed()
    }

    fn verify_batch(&self, requests: Vec<VerifyRequest>) -> BoxFuture<'static, Vec<Result<Verdict>>> {
        let n = requests.len();
        let closed = || Error::Cluster { what: "verify client stopped".into(), source: None };
        let Some(runtime) = &self.runtime.0 else {
            return futures::future::ready((0..n).map(|_| Err(closed())).collect()).boxed();
        };
        let inner = self.inner.clone();
        let task = runtime.spawn(async move { inner.batch(requests).await });
        async move { task.await.unwrap_or_else(|_| (0..n).map(|_| Err(closed())).collect()) }.boxed()
    }

    fn max_batch(&self) -> usize {
        self.inner.config.max_batch
    }
}

impl Inner {
    async fn batch(&self, requests: Vec<VerifyRequest>) -> Vec<Result<Verdict>> {
        let mut out: Vec<Option<Result<Verdict>>> = vec![None; requests.len()];
        let mut by_peer: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            match self.routes.route(r.target_shard) {
                Some(peer) => by_peer.entry(peer).or_default().push(i),
                None => {
                    self.counters.unroutable.fetch_add(1, Ordering::Relaxed);
                    out[i] = Some(Err(Error::TargetUnreachable { shard: r.target_shard }));
                }
            }
        }
        let mut calls = Vec::new();
        for (peer, indexes) in by_peer {
            for chunk in indexes.chunks(self.config.max_batch) {
                calls.push(self.call(peer.clone(), chunk.to_vec(), &requests));
            }
        }
        for (indexes, answered) in futures::future::join_all(calls).await {
            match answered {
                Ok(locations) => {
                    for (i, location) in indexes.into_iter().zip(locations) {
                        let r = &requests[i];
                        out[i] = Some(location.map(|l| verdict(r, l, &*self.local)));
                    }
                }
                Err(e) => {
                    for i in indexes {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let lost = || Error::Cluster { what: "verify answer missing".into(), source: None };
        out.into_iter().map(|o| o.unwrap_or_else(|| Err(lost()))).collect()
    }

    /// One call to `peer` for `requests[indexes]`: where each node lives, or
    /// why the whole call failed.
    async fn call(
        &self,
        peer: Arc<str>,
        indexes: Vec<usize>,
        requests: &[VerifyRequest],
    ) -> (Vec<usize>, Result<Vec<Result<Location>>>) {
        self.counters.rpcs.fetch_add(1, Ordering::Relaxed);
        self.counters.verifies.fetch_add(indexes.len() as u64, Ordering::Relaxed);
        let answered = self.ask(&peer, &indexes, requests).await;
        if answered.is_err() {
            self.counters.failed_rpcs.fetch_add(1, Ordering::Relaxed);
        }
        (indexes, answered)
    }

    async fn ask(
        &self,
        peer: &Arc<str>,
        indexes: &[usize],
        requests: &[VerifyRequest],
    ) -> Result<Vec<Result<Location>>> {
        let failed = |what: String, source: Option<Cause>| Error::Cluster {
            what: format!("verify call to {peer}: {what}"),
            source,
        };
        let mut client = GhostVerifyClient::new(self.channel(peer)?).max_decoding_message_size(64 << 20);
        let queries = indexes
            .iter()
            .map(|&i| {
                let r = &requests[i];
                proto::NodeQuery {
                    node_id: r.node_id.to_string(),
                    target_shard: u32::from(r.target_shard.get()),
                    epoch: r.epoch.get(),
                }
            })
            .collect();
        let mut request = tonic::Request::new(proto::VerifyBatchRequest { queries });
        // Sent as grpc-timeout, so that the peer gives up too.
        request.set_timeout(self.config.deadline);
        let deadline = self.config.deadline;
        let response = match tokio::time::timeout(deadline, client.verify_batch(request)).await {
            Err(_) => return Err(failed(format!("no answer within {deadline:?}"), None)),
            Ok(Err(status)) => return Err(failed("failed".into(), Some(Cause::new(status)))),
            Ok(Ok(response)) => response.into_inner(),
        };
        if response.answers.len() != indexes.len() {
            // Answers cannot be matched to queries: none is trusted.
            let why = format!("{} answers to {} queries", response.answers.len(), indexes.len());
            return Err(failed(why, None));
        }
        Ok(response.answers.into_iter().map(|a| decode(a).map_err(|why| failed(why, None))).collect())
    }

    /// The channel to `peer`, made on first use (it connects lazily, on this runtime).
    fn channel(&self, peer: &Arc<str>) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(peer) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(peer.to_string())
            .map_err(|e| Error::Cluster {
                what: format!("peer address {peer:?}"),
                source: Some(Cause::new(e)),
            })?
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.deadline)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(peer.clone(), channel.clone());
        Ok(channel)
    }
}

/// One answer, or why it is not one.
fn decode(answer: proto::NodeAnswer) -> std::result::Result<Location, String> {
    Ok(match answer.answer {
        Some(Answer::Here(h)) => Location::Here { epoch: Epoch(h.epoch) },
        Some(Answer::Moved(m)) => {
            let shard = u16::try_from(m.shard).map_err(|_| format!("answer names shard {}", m.shard))?;
            Location::Moved { shard: ShardId(shard), epoch: Epoch(m.epoch) }
        }
        Some(Answer::Gone(_)) => Location::Gone,
        Some(Answer::Unknown(_)) => Location::Unknown,
        None => return Err("an answer with no location".into()),
    })
}
