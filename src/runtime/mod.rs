//! `GhostRuntime`: what a server wires in — N supervised shards over K arbiters, one writer, routing, shutdown.

mod builder;
mod operator;
mod reader;
mod sweeper;

pub use builder::{GhostRuntimeBuilder, StoreChoice};
pub use reader::GhostReader;

use crate::actors::{GhostActor, Shards};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::event::EdgeEvents;
use crate::event::{BatchOutcome, EdgeOutcome, InsertOutcome, MoveOutcome};
use crate::ids::{Epoch, ShardId};
use crate::messages::*;
use crate::writer::{StoreWriter, WriterStats};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use sweeper::SweeperSlot;

/// A running set of shards. Build it with [`GhostRuntime::builder`] inside an
/// actix `System`; every call routes by shard id.
pub struct GhostRuntime {
    /// Every shard, with its cell and its actor (shared with the reader and the sweeper).
    shards: Shards,
    reader: GhostReader,
    sweeper: Mutex<SweeperSlot>,
    /// The one clock the shards and the sweeper's bucket read.
    clock: Arc<dyn Clock>,
    /// Set when `shutdown` begins: no sweeper may start.
    closing: AtomicBool,
    /// Set once `shutdown` has flushed: nothing is routed or read any more
    /// (shared with the readers).
    closed: Arc<AtomicBool>,
    /// Whether the shards run on arbiters of their own (so the sweeper gets one too).
    own_threads: bool,
    arbiters: Mutex<Vec<Arbiter>>,
    writer: Mutex<Option<StoreWriter>>,
    extra: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for GhostRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhostRuntime").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl GhostRuntime {
    /// A builder with [`RuntimeConfig::default`](crate::RuntimeConfig::default) and the redb store at `./ghosts.redb`.
    pub fn builder() -> GhostRuntimeBuilder {
        GhostRuntimeBuilder::default()
    }

    /// The address of `shard`'s actor, for hosts that speak actix directly:
    /// it takes the host messages of [`messages`](crate::messages).
    pub fn addr(&self, shard: impl Into<ShardId>) -> Result<&Addr<GhostActor>> {
        self.check_open(false)?;
        Ok(&self.shards.get(shard.into())?.addr)
    }

    /// A reader of every shard's table, for any thread or task: it answers
    /// [`resolve`](Self::resolve) and [`resolve_many`](Self::resolve_many)
    /// without a message to the shard (see [`GhostReader`]).
    pub fn reader(&self) -> GhostReader {
        self.reader.clone()
    }

    /// Every shard id, ascending.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.shards.ids()
    }

    /// Sends `msg` to `shard`, waiting while its mailbox is full; a closed
    /// mailbox is [`Error::MailboxClosed`].
    pub(crate) async fn call<M>(&self, shard: impl Into<ShardId>, msg: M) -> Result<M::Result>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        GhostActor: Handler<M>,
    {
        let shard = shard.into();
        self.addr(shard)?.send(msg).await.map_err(|_| Error::MailboxClosed { shard: shard.get() })
    }

    /// Sends any host message of [`messages`](crate::messages) to `shard`,
    /// waiting while its mailbox is full: one error, whether the shard could
    /// not be reached or the handler failed.
    pub async fn request<M, T>(&self, shard: impl Into<ShardId>, msg: M) -> Result<T>
    where
        M: Message<Result = Result<T>> + Send + 'static,
        T: Send + 'static,
        GhostActor: Handler<M>,
    {
        self.call(shard, msg).await?
    }

    /// Records on `shard` that a node moved away (named fields, so the
    /// holding shard and the target cannot be swapped).
    pub async fn insert_ghost(&self, shard: impl Into<ShardId>, ghost: InsertGhost) -> Result<InsertOutcome> {
        self.request(shard, ghost).await
    }

    /// Applies a batch of edge events on `shard`, once per `seq`.
    pub async fn edge_batch(
        &self,
        shard: impl Into<ShardId>,
        seq: Option<u64>,
        events: impl Into<EdgeEvents>,
    ) -> Result<BatchOutcome> {
        self.request(shard, EdgeBatch { seq, events: events.into() }).await
    }

    /// A local edge to `node_id` was added on `shard`.
    pub async fn edge_added(&self, shard: impl Into<ShardId>, node_id: &str) -> Result<EdgeOutcome> {
        self.request(shard, EdgeAdded { node_id: node_id.into() }).await
    }

    /// A local edge to `node_id` was removed on `shard`.
    pub async fn edge_removed(&self, shard: impl Into<ShardId>, node_id: &str) -> Result<EdgeOutcome> {
        self.request(shard, EdgeRemoved { node_id: node_id.into() }).await
    }

    /// A ghost on `shard` follows its node to a newer shard.
    pub async fn retarget(&self, shard: impl Into<ShardId>, retarget: Retarget) -> Result<MoveOutcome> {
        self.request(shard, retarget).await
    }

    /// `node_id` moved back to `shard` at `epoch`.
    pub async fn reclaim(
        &self,
        shard: impl Into<ShardId>,
        node_id: &str,
        epoch: Epoch,
    ) -> Result<MoveOutcome> {
        self.request(shard, Reclaim { node_id: node_id.into(), epoch }).await
    }

    /// Where `node_id`, if it is a ghost on `shard`, lives now.
    pub async fn resolve(&self, shard: impl Into<ShardId>, node_id: &str) -> Result<Option<ShardId>> {
        self.request(shard, Resolve { node_id: node_id.into() }).await
    }

    /// Resolves a traversal frontier of `(shard, node)` pairs: one request per
    /// shard, all shards concurrently, answers in input order.
    pub async fn resolve_many(&self, frontier: &[(ShardId, &str)]) -> Result<Vec<Option<ShardId>>> {
        let mut by_shard: HashMap<ShardId, (Vec<usize>, Vec<Box<str>>)> = HashMap::new();
        for (i, (shard, node)) in frontier.iter().enumerate() {
            let e = by_shard.entry(*shard).or_default();
            e.0.push(i);
            e.1.push((*node).into());
        }
        let calls = by_shard.into_iter().map(|(shard, (slots, node_ids))| async move {
            let answers = self.request(shard, ResolveMany { node_ids }).await?;
            Ok::<_, Error>((slots, answers))
        });
        let mut out = vec![None; frontier.len()];
        for r in futures::future::join_all(calls).await {
            let (slots, answers) = r?;
            for (i, a) in slots.into_iter().zip(answers) {
                out[i] = a;
            }
        }
        Ok(out)
    }

    /// Statistics of every shard, by ascending shard id.
    pub async fn stats(&self) -> Result<Vec<ShardStats>> {
        let calls = self.shard_ids().into_iter().map(|s| self.call(s, GetStats));
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// Counters of the store writer.
    pub fn writer_stats(&self) -> Option<WriterStats> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(StoreWriter::stats)
    }

    /// Makes everything applied so far on every shard durable.
    pub async fn flush(&self) -> Result<()> {
        let calls = self.shard_ids().into_iter().map(|s| self.call(s, Flush));
        for r in futures::future::join_all(calls).await {
            // A shard that failed closed, or that another process may own
            // now (fenced), has nothing of its own to flush.
            match r? {
                Ok(()) | Err(Error::ShardFailed { .. } | Error::ShardDown { .. } | Error::Fenced { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Publishes every shard's statistics through the `metrics` facade now
    /// (the runtime also does it every `metrics_interval`).
    pub async fn export_metrics(&self) {
        export_metrics(&self.shards).await;
    }

    /// `Error::Closed` once `shutdown` has flushed (routing), or, with
    /// `starting`, once it has begun (nothing new may start then).
    pub(crate) fn check_open(&self, starting: bool) -> Result<()> {
        let shut = if starting { &self.closing } else { &*self.closed };
        if shut.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Registers work to run first at shutdown (stopping a sweeper, a poller).
    pub(crate) fn on_shutdown(&self, stop: Box<dyn FnOnce() + Send>) {
        self.extra.lock().unwrap_or_else(|p| p.into_inner()).push(stop);
    }

    /// Stops the sweeper, drains every mailbox, flushes, stops the arbiters,
    /// ends the writer (which releases and closes the store). Every call made
    /// after it answers [`Error::Closed`]. A second call does nothing.
    pub async fn shutdown(&self) -> Result<()> {
        let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        self.closing.store(true, Ordering::SeqCst);
        // Waits for verifies in flight (bounded by the verify timeout).
        let _ = self.stop_sweeper().await;
        for stop in std::mem::take(&mut *self.extra.lock().unwrap_or_else(|p| p.into_inner())) {
            stop();
        }
        // A `Flush` queues behind everything sent before it: this drains the mailboxes.
        let flushed = self.flush().await;
        // Shards on the calling arbiter (`arbiters = 0`) cannot be stopped with
        // an arbiter: refusing to route is what ends them for the host.
        self.closed.store(true, Ordering::SeqCst);
        let arbiters = std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|p| p.into_inner()));
        for a in &arbiters {
            a.stop();
        }
        // Joining threads blocks: do it off this arbiter.
        tokio::task::spawn_blocking(move || {
            for a in arbiters {
                let _ = a.join();
            }
            writer.shutdown();
        })
        .await
        .map_err(|e| Error::store_from("shutdown", e))?;
        flushed
    }
}

async fn export_metrics(shards: &Shards) {
    let calls = shards.iter().map(|e| async move { (e.id.get(), e.addr.send(GetStats).await) });
    for (shard, stats) in futures::future::join_all(calls).await {
        if let Ok(stats) = stats {
            crate::metrics::export_shard(&stats, shard);
        }
    }
}
