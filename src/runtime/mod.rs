//! `GhostRuntime`: what a server wires in — N supervised shards over K arbiters, one writer, routing, shutdown.

mod builder;
mod health;
mod operator;
mod reader;
mod release;
mod sweeper;

pub use builder::{GhostRuntimeBuilder, StoreChoice};
pub use health::Health;
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
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use sweeper::SweeperSlot;
use tokio::sync::oneshot;

/// The end of a shutdown, which every call of it waits for.
type ShutdownDone = Shared<BoxFuture<'static, Result<()>>>;

/// Work registered to run first at shutdown (stopping a sweeper, a poller).
pub(crate) type OnShutdown = Box<dyn FnOnce() + Send>;

/// A running set of shards. Build it with [`GhostRuntime::builder`] inside an
/// actix `System`; every call routes by shard id.
///
/// Cheap to clone (a few reference counts): hand a clone to each task that
/// sends work; every clone drives the same shards.
///
/// # Shutting down, or dropping it
///
/// [`shutdown`](Self::shutdown) is the way out: it drains every mailbox and
/// makes everything applied durable. Dropping the last clone without it
/// releases what a drop can without waiting on the shards: readers answer
/// [`Error::Closed`], the sweeper's and the shards' arbiters are told to stop,
/// and the store writer finishes the commits already queued and closes the
/// store (so a redb file can be opened again at once, by a new runtime in
/// the same process). What was acknowledged is durable; what was applied but
/// not yet acknowledged as durable (edge removals, sweep purges, everything
/// under `Durability::Interval`) may be lost, as in a crash, and the sweeper
/// repairs it. Shards on the calling arbiter (`arbiters = 0`) are not
/// stopped by a drop: their requests fail once the writer is closed.
/// The drop waits for the writer's thread, so drop the last clone outside a
/// latency-sensitive task.
#[derive(Clone)]
pub struct GhostRuntime {
    /// Every shard, with its cell and its actor (shared with the reader and the sweeper).
    shards: Shards,
    reader: GhostReader,
    /// Shared with the task that stops a sweeper, which frees it when done.
    sweeper: Arc<Mutex<SweeperSlot>>,
    /// The one clock the shards and the sweeper's bucket read.
    clock: Arc<dyn Clock>,
    /// Set when `shutdown` begins: no sweeper may start.
    closing: Arc<AtomicBool>,
    /// Set once `shutdown` has flushed: nothing is routed or read any more
    /// (shared with the readers).
    closed: Arc<AtomicBool>,
    /// Whether the shards run on arbiters of their own (so the sweeper gets one too).
    own_threads: bool,
    arbiters: Arc<Mutex<Vec<Arbiter>>>,
    writer: Arc<Mutex<Option<StoreWriter>>>,
    extra: Arc<Mutex<Vec<OnShutdown>>>,
    /// The shutdown under way or done, once one was asked for (by any clone).
    shutdown: Arc<Mutex<Option<ShutdownDone>>>,
    /// Dropped with the last clone: releases what `shutdown` was not called for.
    _release: Arc<release::OnLastDrop>,
}

impl std::fmt::Debug for GhostRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhostRuntime").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl GhostRuntime {
    /// A builder with [`RuntimeConfig::default`](crate::RuntimeConfig::default)
    /// and no store: [`store`](GhostRuntimeBuilder::store) must name one.
    pub fn builder() -> GhostRuntimeBuilder {
        GhostRuntimeBuilder::default()
    }

    /// The address of `shard`'s actor, for hosts that speak actix directly:
    /// it takes the host messages of [`messages`](crate::messages).
    pub fn addr(&self, shard: ShardId) -> Result<&Addr<GhostActor>> {
        self.check_open(false)?;
        Ok(&self.shards.get(shard)?.addr)
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
    pub(crate) async fn call<M>(&self, shard: ShardId, msg: M) -> Result<M::Result>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        GhostActor: Handler<M>,
    {
        self.addr(shard)?.send(msg).await.map_err(|_| Error::MailboxClosed { shard })
    }

    /// Sends any host message of [`messages`](crate::messages) to `shard`,
    /// waiting while its mailbox is full: one error, whether the shard could
    /// not be reached or the handler failed.
    pub async fn request<M, T>(&self, shard: ShardId, msg: M) -> Result<T>
    where
        M: Message<Result = Result<T>> + Send + 'static,
        T: Send + 'static,
        GhostActor: Handler<M>,
    {
        self.call(shard, msg).await?
    }

    /// Records on `shard` that a node moved away (named fields, so the
    /// holding shard and the target cannot be swapped).
    ///
    /// The shard is a [`ShardId`]:
    ///
    /// ```
    /// # use vshard_ghosts::{GhostRuntime, ShardId, messages::InsertGhost};
    /// # async fn moved(rt: &GhostRuntime, ghost: InsertGhost) -> vshard_ghosts::Result<()> {
    /// rt.insert_ghost(ShardId(3), ghost).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// a bare number is refused:
    ///
    /// ```compile_fail
    /// # use vshard_ghosts::{GhostRuntime, ShardId, messages::InsertGhost};
    /// # async fn moved(rt: &GhostRuntime, ghost: InsertGhost) -> vshard_ghosts::Result<()> {
    /// rt.insert_ghost(3, ghost).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn insert_ghost(&self, shard: ShardId, ghost: InsertGhost) -> Result<InsertOutcome> {
        self.request(shard, ghost).await
    }

    /// Applies a batch of edge events on `shard`, once per `seq`.
    pub async fn edge_batch(
        &self,
        shard: ShardId,
        seq: Option<u64>,
        events: impl Into<EdgeEvents>,
    ) -> Result<BatchOutcome> {
        self.request(shard, EdgeBatch { seq, events: events.into() }).await
    }

    /// A local edge to `node_id` was added on `shard`.
    pub async fn edge_added(&self, shard: ShardId, node_id: &str) -> Result<EdgeOutcome> {
        self.request(shard, EdgeAdded { node_id: node_id.into() }).await
    }

    /// A local edge to `node_id` was removed on `shard`.
    pub async fn edge_removed(&self, shard: ShardId, node_id: &str) -> Result<EdgeOutcome> {
        self.request(shard, EdgeRemoved { node_id: node_id.into() }).await
    }

    /// A ghost on `shard` follows its node to a newer shard.
    pub async fn retarget(&self, shard: ShardId, retarget: Retarget) -> Result<MoveOutcome> {
        self.request(shard, retarget).await
    }

    /// `node_id` moved back to `shard` at `epoch`.
    pub async fn reclaim(&self, shard: ShardId, node_id: &str, epoch: Epoch) -> Result<MoveOutcome> {
        self.request(shard, Reclaim { node_id: node_id.into(), epoch }).await
    }

    /// Records many moves at once, each `(holding shard, ghost)`: one message
    /// and one commit per shard, all shards concurrently. Answers one outcome
    /// per ghost, in input order: an invalid ghost fails alone, and a shard
    /// that fails (unknown, loading, its commit) fails each of its ghosts
    /// with that error (retry those).
    pub async fn insert_ghosts(
        &self,
        ghosts: impl IntoIterator<Item = (ShardId, InsertGhost)>,
    ) -> Vec<Result<InsertOutcome>> {
        self.per_shard(ghosts, |ghosts| InsertGhosts { ghosts }).await
    }

    /// Many retargets at once, each `(holding shard, move)`, as
    /// [`insert_ghosts`](Self::insert_ghosts) does inserts.
    pub async fn retargets(
        &self,
        moves: impl IntoIterator<Item = (ShardId, Retarget)>,
    ) -> Vec<Result<MoveOutcome>> {
        self.per_shard(moves, |moves| Retargets { moves }).await
    }

    /// Many reclaims at once, each `(shard the node came back to, reclaim)`,
    /// as [`insert_ghosts`](Self::insert_ghosts) does inserts.
    pub async fn reclaims(
        &self,
        nodes: impl IntoIterator<Item = (ShardId, Reclaim)>,
    ) -> Vec<Result<MoveOutcome>> {
        self.per_shard(nodes, |nodes| Reclaims { nodes }).await
    }

    /// Groups `items` by shard, sends each group as one message, and puts the
    /// per-item answers back in input order.
    async fn per_shard<I, M, T>(
        &self,
        items: impl IntoIterator<Item = (ShardId, I)>,
        msg: impl Fn(Vec<I>) -> M,
    ) -> Vec<Result<T>>
    where
        M: Message<Result = Result<Vec<Result<T>>>> + Send + 'static,
        T: Send + 'static,
        GhostActor: Handler<M>,
    {
        let mut by_shard: HashMap<ShardId, (Vec<usize>, Vec<I>)> = HashMap::new();
        let mut len = 0;
        for (i, (shard, item)) in items.into_iter().enumerate() {
            let e = by_shard.entry(shard).or_default();
            e.0.push(i);
            e.1.push(item);
            len = i + 1;
        }
        let calls = by_shard.into_iter().map(|(shard, (slots, items))| {
            let call = self.request(shard, msg(items));
            async move { (slots, call.await) }
        });
        let mut out: Vec<Option<Result<T>>> = (0..len).map(|_| None).collect();
        for (slots, answers) in futures::future::join_all(calls).await {
            match answers {
                Ok(answers) => {
                    for (i, a) in slots.into_iter().zip(answers) {
                        out[i] = Some(a);
                    }
                }
                Err(e) => {
                    for i in slots {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        out.into_iter().map(|a| a.unwrap_or(Err(Error::Closed))).collect()
    }

    /// Where `node_id`, if it is a ghost on `shard`, lives now.
    pub async fn resolve(&self, shard: ShardId, node_id: &str) -> Result<Option<ShardId>> {
        self.request(shard, Resolve { node_id: node_id.into() }).await
    }

    /// Resolves a traversal frontier of `(shard, node)` pairs: one request per
    /// shard, all shards concurrently, answers in input order. Takes any
    /// iterator of pairs, owned or borrowed: `&[(ShardId, &str)]`,
    /// `Vec<(ShardId, String)>`, a map's iterator.
    pub async fn resolve_many<I>(&self, frontier: I) -> Result<Vec<Option<ShardId>>>
    where
        I: IntoIterator,
        I::Item: FrontierEntry,
    {
        let mut by_shard: HashMap<ShardId, (Vec<usize>, Vec<Box<str>>)> = HashMap::new();
        let mut len = 0;
        for (i, entry) in frontier.into_iter().enumerate() {
            let e = by_shard.entry(entry.shard()).or_default();
            e.0.push(i);
            e.1.push(entry.node_id().into());
            len = i + 1;
        }
        let calls = by_shard.into_iter().map(|(shard, (slots, node_ids))| async move {
            let answers = self.request(shard, ResolveMany { node_ids }).await?;
            Ok::<_, Error>((slots, answers))
        });
        let mut out = vec![None; len];
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
        self.check_open(false)?;
        flush_shards(self.shards.clone()).await
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
    /// after it answers [`Error::Closed`].
    ///
    /// Cancel-safe: the shutdown runs in a task of its own, so a caller that
    /// times out or is dropped leaves it to finish; every later call (and one
    /// made while it is under way) waits for that one and answers as it did.
    pub async fn shutdown(&self) -> Result<()> {
        let done = {
            let mut job = self.shutdown.lock().unwrap_or_else(|p| p.into_inner());
            match &*job {
                Some(done) => done.clone(),
                None => {
                    let done = self.begin_shutdown();
                    *job = Some(done.clone());
                    done
                }
            }
        };
        done.await
    }

    /// Takes everything the shutdown ends and spawns it on the calling arbiter.
    fn begin_shutdown(&self) -> ShutdownDone {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.closing.store(true, Ordering::SeqCst);
        let sweeper = sweeper::begin_stop(&self.sweeper).ok();
        let extra = std::mem::take(&mut *self.extra.lock().unwrap_or_else(|p| p.into_inner()));
        let arbiters = std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|p| p.into_inner()));
        let (shards, closed) = (self.shards.clone(), self.closed.clone());
        let (tx, rx) = oneshot::channel();
        actix::spawn(async move {
            // Waits for verifies in flight (bounded by the verify timeout).
            if let Some(stopped) = sweeper {
                let _ = stopped.await;
            }
            for stop in extra {
                stop();
            }
            // A `Flush` queues behind everything sent before it: this drains the mailboxes.
            let flushed = flush_shards(shards).await;
            // Shards on the calling arbiter (`arbiters = 0`) cannot be stopped with
            // an arbiter: refusing to route is what ends them for the host.
            closed.store(true, Ordering::SeqCst);
            for a in &arbiters {
                a.stop();
            }
            // Joining threads blocks: do it off this arbiter.
            let joined = tokio::task::spawn_blocking(move || {
                for a in arbiters {
                    let _ = a.join();
                }
                if let Some(writer) = writer {
                    writer.shutdown();
                }
            })
            .await
            .map_err(|e| Error::store_from("shutdown", e));
            let _ = tx.send(joined.and(flushed));
        });
        rx.map(|r| r.map_err(|e| Error::store_from("shutdown", e))?).boxed().shared()
    }
}

/// Flushes every shard of `shards` at once; shards with nothing of their own
/// to flush are skipped.
async fn flush_shards(shards: Shards) -> Result<()> {
    let calls = shards
        .iter()
        .map(|e| async move { e.addr.send(Flush).await.map_err(|_| Error::MailboxClosed { shard: e.id }) });
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

async fn export_metrics(shards: &Shards) {
    let calls = shards.iter().map(|e| async move { (e.id, e.addr.send(GetStats).await) });
    for (shard, stats) in futures::future::join_all(calls).await {
        if let Ok(stats) = stats {
            crate::metrics::export_shard(&stats, shard);
        }
    }
}

/// One `(shard, node)` pair of a traversal frontier, owned or borrowed: what
/// [`GhostRuntime::resolve_many`] takes.
pub trait FrontierEntry {
    /// The shard that may hold a ghost of the node.
    fn shard(&self) -> ShardId;
    /// The node.
    fn node_id(&self) -> &str;
}

impl<S: AsRef<str>> FrontierEntry for (ShardId, S) {
    fn shard(&self) -> ShardId {
        self.0
    }

    fn node_id(&self) -> &str {
        self.1.as_ref()
    }
}

impl<S: AsRef<str>> FrontierEntry for &(ShardId, S) {
    fn shard(&self) -> ShardId {
        self.0
    }

    fn node_id(&self) -> &str {
        self.1.as_ref()
    }
}
