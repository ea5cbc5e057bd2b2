//! [`VerifyServer`]: the verify service a process serves, answering batches of
//! queries about its shards from the host's [`NodeDirectory`], and only while
//! its claim on each shard holds.

use super::directory::{Location, NodeDirectory};
use super::proto::{self, Answer, GhostVerify, GhostVerifyServer};
use crate::error::{Error, Result};
use crate::ids::{Epoch, ShardId};
use crate::store::{ClaimWatch, GhostStore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::{Request, Response, Status};

/// Most queries one request may carry: a bound on the work one call makes
/// the server do (a client sends at most its `max_batch` per call).
pub const MAX_QUERIES_PER_CALL: usize = 65_536;

/// A fault the server plays instead of answering (cargo feature `testing`).
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerFault {
    /// Answers truly.
    #[default]
    None,
    /// Never answers.
    Hang,
    /// Answers one answer too few, each `Gone`.
    ShortAnswer,
    /// Answers with no answer set in any entry (a message of another version).
    EmptyAnswers,
    /// Fails the call with an internal error.
    Fail,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    queries: AtomicU64,
    refused: AtomicU64,
    #[cfg(feature = "testing")]
    fault: std::sync::Mutex<ServerFault>,
}

/// What a [`VerifyServer`] has answered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Calls received.
    pub calls: u64,
    /// Queries answered, over all calls.
    pub queries: u64,
    /// Shards asked about in a call while this process held no claim on
    /// them (their queries were answered `Unknown`), counted once per call.
    pub not_owned: u64,
}

struct Service {
    directory: Arc<dyn NodeDirectory>,
    counters: Arc<Counters>,
    /// Whose claims gate the answers; `None`: every shard is answered.
    claims: Option<Claims>,
}

/// The store whose claims say which shards this process owns, and the
/// watches it gave, so that a call asks the store only about a shard whose
/// last watch lapsed (or that it never asked about).
struct Claims {
    store: Arc<dyn GhostStore>,
    watches: std::sync::Mutex<HashMap<u16, ClaimWatch>>,
}

impl Claims {
    /// True while this process's claim on `shard` holds (always, for a store
    /// that grants no ownership). Asks the store, off this runtime's thread,
    /// only when no watch at hand is valid.
    async fn holds(&self, shard: u16) -> bool {
        let lock = || self.watches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if lock().get(&shard).is_some_and(ClaimWatch::is_valid) {
            return true;
        }
        let store = self.store.clone();
        let Ok(watch) = tokio::task::spawn_blocking(move || store.claim(ShardId(shard))).await else {
            return false;
        };
        match watch {
            None => true,
            Some(w) if w.is_valid() => {
                lock().insert(shard, w);
                true
            }
            Some(_) => false,
        }
    }
}

#[tonic::async_trait]
impl GhostVerify for Service {
    async fn verify_batch(
        &self,
        request: Request<proto::VerifyBatchRequest>,
    ) -> std::result::Result<Response<proto::VerifyBatchResponse>, Status> {
        let queries = request.into_inner().queries;
        if queries.len() > MAX_QUERIES_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} queries in one call; at most {MAX_QUERIES_PER_CALL}",
                queries.len()
            )));
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "testing")]
        if let Some(faulty) = self.fault(&queries).await {
            return faulty;
        }
        self.counters.queries.fetch_add(queries.len() as u64, Ordering::Relaxed);
        let owned = self.owned(&queries).await;
        let answers = queries
            .iter()
            .map(|q| {
                let ours =
                    u16::try_from(q.target_shard).is_ok_and(|s| owned.get(&s).copied().unwrap_or(true));
                answer(if ours { self.locate(q) } else { Location::Unknown })
            })
            .collect();
        Ok(Response::new(proto::VerifyBatchResponse { answers }))
    }
}

impl Service {
    /// For each shard the queries ask about, whether this process's claim on
    /// it holds now; empty when the server is not gated by claims. Asked once
    /// per call, before answering: a claim's watch lapses before the lease
    /// does, so no other process can have taken a shard answered for.
    async fn owned(&self, queries: &[proto::NodeQuery]) -> HashMap<u16, bool> {
        let mut owned = HashMap::new();
        let Some(claims) = &self.claims else { return owned };
        for q in queries {
            let Ok(shard) = u16::try_from(q.target_shard) else { continue };
            if let std::collections::hash_map::Entry::Vacant(entry) = owned.entry(shard) {
                let holds = claims.holds(shard).await;
                if !holds {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                }
                entry.insert(holds);
            }
        }
        owned
    }

    fn locate(&self, q: &proto::NodeQuery) -> Location {
        // A shard id out of range is no shard of ours.
        match u16::try_from(q.target_shard) {
            Ok(shard) => self.directory.locate(ShardId(shard), &q.node_id, Epoch(q.epoch)),
            Err(_) => Location::Unknown,
        }
    }

    #[cfg(feature = "testing")]
    async fn fault(
        &self,
        queries: &[proto::NodeQuery],
    ) -> Option<std::result::Result<Response<proto::VerifyBatchResponse>, Status>> {
        let fault = *self.counters.fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let answers = match fault {
            ServerFault::None => return None,
            ServerFault::Hang => futures::future::pending().await,
            ServerFault::Fail => return Some(Err(Status::internal("injected failure"))),
            ServerFault::ShortAnswer => (1..queries.len()).map(|_| answer(Location::Gone)).collect(),
            ServerFault::EmptyAnswers => queries.iter().map(|_| proto::NodeAnswer { answer: None }).collect(),
        };
        Some(Ok(Response::new(proto::VerifyBatchResponse { answers })))
    }
}

fn answer(location: Location) -> proto::NodeAnswer {
    let answer = match location {
        Location::Here { epoch } => Answer::Here(proto::Here { epoch: epoch.get() }),
        Location::Moved { shard, epoch } => {
            Answer::Moved(proto::Moved { shard: u32::from(shard.get()), epoch: epoch.get() })
        }
        Location::Gone => Answer::Gone(proto::Gone {}),
        Location::Unknown => Answer::Unknown(proto::Unknown {}),
    };
    proto::NodeAnswer { answer: Some(answer) }
}

/// The verify service of one process, on its own one-thread runtime (never a
/// shard's arbiter), until [`shutdown`](Self::shutdown) or drop.
pub struct VerifyServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for VerifyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl VerifyServer {
    /// Binds `addr` (port 0: any free port, see [`local_addr`](Self::local_addr))
    /// and serves `directory` on it for every shard asked about: for a
    /// directory that knows which shards this process holds, or tests. A
    /// process that holds shards through a store's claims (an
    /// [`EtcdStore`](crate::store::EtcdStore)) serves with
    /// [`start_owned`](Self::start_owned). Fails at once if the address cannot be bound.
    pub fn start(addr: SocketAddr, directory: Arc<dyn NodeDirectory>) -> Result<Self> {
        Self::serve(addr, directory, None)
    }

    /// As [`start`](Self::start), but answers about a shard only while
    /// `store`'s claim on it holds ([`GhostStore::claim`]); about any other
    /// shard, every query is `Unknown` (the asking sweeper's verdict is
    /// `Inconclusive`). So a process that lost a shard to a takeover, and
    /// whose directory still says what it knew, never makes another process
    /// purge.
    pub fn start_owned(
        addr: SocketAddr,
        directory: Arc<dyn NodeDirectory>,
        store: Arc<dyn GhostStore>,
    ) -> Result<Self> {
        Self::serve(addr, directory, Some(Claims { store, watches: Default::default() }))
    }

    fn serve(addr: SocketAddr, directory: Arc<dyn NodeDirectory>, claims: Option<Claims>) -> Result<Self> {
        let cluster = |what: String| {
            move |e: std::io::Error| Error::Cluster { what, source: Some(crate::Cause::new(e)) }
        };
        let listener =
            std::net::TcpListener::bind(addr).map_err(cluster(format!("bind verify service on {addr}")))?;
        let addr = listener.local_addr().map_err(cluster("verify service address".into()))?;
        listener.set_nonblocking(true).map_err(cluster("verify service socket".into()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ghost-verify-server")
            .enable_all()
            .build()
            .map_err(cluster("verify service runtime".into()))?;
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(cluster("verify service socket".into()))?
        };
        let counters = Arc::new(Counters::default());
        let service = GhostVerifyServer::new(Service { directory, counters: counters.clone(), claims })
            .max_decoding_message_size(64 << 20);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        runtime.spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(%addr, error = %e, "verify service stopped");
            }
        });
        tracing::info!(%addr, "verify service listening");
        Ok(Self { addr, counters, stop: Some(stop), runtime: Some(runtime) })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{local_addr}`, as routes name it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls and queries answered so far.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            calls: self.counters.calls.load(Ordering::Relaxed),
            queries: self.counters.queries.load(Ordering::Relaxed),
            not_owned: self.counters.refused.load(Ordering::Relaxed),
        }
    }

    /// Plays `fault` on every call from now on (cargo feature `testing`).
    #[cfg(feature = "testing")]
    pub fn set_fault(&self, fault: ServerFault) {
        *self.counters.fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    /// Stops accepting calls; calls under way are cut off.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Not blocking: this may run on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for VerifyServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}
