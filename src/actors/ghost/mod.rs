//! `GhostActor`: owns one vShard's table, turns messages into table calls, group-commits changes.

use crate::clock::Clock;
use crate::config::{Durability, ShardConfig};
use crate::error::{Error, Result};
use crate::messages::ShardStats;
use crate::table::GhostTable;
use crate::table::ShardChanges;
use crate::writer::StoreWriter;
use actix::prelude::*;
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use view::State;
pub(crate) use view::{CHUNKED_TRIES, READ_CHUNK, ShardCell};

/// The payload of the panic `InjectPanic` raises.
pub(super) const INJECTED_PANIC: &str = "injected panic";

/// The message a handler handles: its kind (a bounded label) and, for edge
/// batches, the host's sequence number.
#[derive(Debug, Clone, Copy)]
pub(super) struct Msg {
    kind: &'static str,
    seq: Option<u64>,
}

impl Msg {
    pub(super) const fn kind(kind: &'static str) -> Self {
        Self { kind, seq: None }
    }

    pub(super) const fn batch(seq: Option<u64>) -> Self {
        Self { kind: "edge_batch", seq }
    }
}

/// One vShard's ghost table as a supervised actor.
///
/// On every (re)start it clears its table and reloads it through the
/// store writer before handling any queued message. A handler that panics
/// fails its request with [`Error::Panicked`] and stops the actor, so the
/// supervisor restarts it; restarts beyond the [`RestartPolicy`](crate::RestartPolicy)
/// leave the shard down. Unreadable stored state fails closed: every request
/// gets [`Error::ShardFailed`], and nothing is written over the stored bytes.
///
/// With a store that grants ownership ([`GhostStore::claim`](crate::store::GhostStore::claim)),
/// every request first checks the claim the table was loaded under. Once it
/// no longer holds (the lease was not renewed in time, in real time whatever
/// the actor's [`Clock`]; or the claim was lost), the shard is fenced: its
/// table is dropped, every request gets [`Error::Fenced`], and it writes
/// nothing more. A shard refused by the store at load is fenced the same way.
pub struct GhostActor {
    shard: u16,
    config: Arc<ShardConfig>,
    writer: StoreWriter,
    clock: Arc<dyn Clock>,
    /// The state and table, shared with the shard's readers: written only here.
    cell: Arc<ShardCell>,
    incarnation: u64,
    /// Replies that wait for the next flush to commit.
    waiters: Vec<oneshot::Sender<Result<()>>>,
    flushing: bool,
    interval_armed: bool,
    restart_times: VecDeque<u64>,
    /// The next restart is an operator's revive: not a failure, so not counted.
    pub(super) reviving: bool,
    /// Highest sequence number of a batch awaiting its (durable) acknowledgement.
    pub(super) unacked_seq: Option<u64>,
    /// After a restart, the highest unacknowledged batch that died with the
    /// table: later batches are refused until the host has sent it again, so
    /// that a pipelined batch cannot overtake a retry and make it look applied.
    pub(super) lost_upto: Option<u64>,
    stats: ShardStats,
}

impl GhostActor {
    /// A shard actor; the runtime starts it supervised on an arbiter.
    pub(crate) fn new(
        shard: u16,
        config: Arc<ShardConfig>,
        writer: StoreWriter,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            shard,
            config,
            writer,
            clock,
            cell: ShardCell::new(shard),
            incarnation: fastrand::u64(..),
            waiters: Vec::new(),
            flushing: false,
            interval_armed: false,
            restart_times: VecDeque::new(),
            reviving: false,
            unacked_seq: None,
            lost_upto: None,
            stats: ShardStats::default(),
        }
    }

    /// The cell the actor keeps its state in, for the shard's readers.
    pub(crate) fn cell(&self) -> Arc<ShardCell> {
        self.cell.clone()
    }

    /// Starts the actor under a [`Supervisor`] on `arbiter`.
    pub(crate) fn start_supervised_in(self, arbiter: &ArbiterHandle) -> Addr<Self> {
        Supervisor::start_in_arbiter(arbiter, move |_| self)
    }

    /// Runs `f` on the table, catching a panic: the request fails and the actor
    /// stops so that its supervisor restarts it from the store. `msg` names the
    /// message for its span and its latency metric.
    fn with_table<R>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        f: impl FnOnce(&mut GhostTable, u64) -> R,
    ) -> Result<R> {
        self.with_table_warmed(ctx, msg, |_| (), |t, (), now| f(t, now))
    }

    /// [`with_table`](Self::with_table) after `warm`, a read-only first step
    /// (a batch's hashing and cache misses, say) whose result `f` takes.
    ///
    /// `warm` runs under an upgradable read lock, so the shard's readers go
    /// on meanwhile; the lock is then upgraded (no write can come in between)
    /// and held for writing over all of `f`: readers see the state before the
    /// message or after it, never a half-applied batch, and wait only for the
    /// write part. A panic in either step leaves the state `Loading` before
    /// the lock is released, so no reader ever sees what it left half done.
    fn with_table_warmed<W, R>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        warm: impl FnOnce(&GhostTable) -> W,
        f: impl FnOnce(&mut GhostTable, W, u64) -> R,
    ) -> Result<R> {
        let shard = self.shard;
        self.check_claim();
        let view = self.cell.view.upgradable_read();
        let State::Ready(table) = &view.state else {
            return Err(view::unavailable(&view.state, shard));
        };
        let now = self.clock.now_ms();
        let _span = tracing::debug_span!("ghost_message", kind = msg.kind, shard, seq = msg.seq).entered();
        let started = std::time::Instant::now();
        let warmed = catch_unwind(AssertUnwindSafe(|| warm(table)));
        let mut view = view::upgrade(view);
        // Still ready: the actor is the cell's only writer, and the upgrade
        // lets no other write in.
        let mut result = match (warmed, &mut view.state) {
            (Ok(w), State::Ready(table)) => catch_unwind(AssertUnwindSafe(|| f(table, w, now))),
            (Ok(_), other) => return Err(view::unavailable(other, shard)),
            (Err(payload), _) => Err(payload),
        };
        if result.is_ok() && matches!(&view.state, State::Ready(t) if t.stage_due()) {
            // Staging copies the dirty stubs for the store: under the read
            // lock again (the state is whole, the batch applied), and only
            // the short commit under the write lock. A panic in the copy
            // restarts the shard as any other does: readers may have seen
            // the batch, which was not acknowledged (the request fails) and
            // is gone after the reload, as after a failed flush.
            let shared = view::downgrade(view);
            let staged = match &shared.state {
                State::Ready(t) => Some(catch_unwind(AssertUnwindSafe(|| t.stage_ahead()))),
                _ => None,
            };
            view = view::upgrade(shared);
            let committed = match (staged, &mut view.state) {
                (Some(Ok(staged)), State::Ready(t)) => {
                    catch_unwind(AssertUnwindSafe(|| t.commit_staged(staged)))
                }
                (Some(Err(payload)), _) => Err(payload),
                _ => Ok(()),
            };
            if let Err(payload) = committed {
                result = Err(payload);
            }
        }
        // What a panic left half done is replaced before the lock is released
        // (nothing else runs in between, not even the metric).
        let result = result.map_err(|payload| (payload, std::mem::replace(&mut view.state, State::Loading)));
        drop(view);
        metrics::histogram!(crate::metrics::HANDLER_SECONDS, "kind" => msg.kind)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => Ok(r),
            Err((payload, broken)) => {
                drop(broken);
                // A drill's panic (`InjectPanic`) is expected: not an error to page anyone for.
                if payload.downcast_ref::<&str>().is_some_and(|m| *m == INJECTED_PANIC) {
                    tracing::info!(shard, "injected panic (fault injection, expected); restarting the shard");
                } else {
                    tracing::error!(shard, "handler panicked; restarting the shard");
                }
                ctx.stop();
                Err(Error::Panicked { shard })
            }
        }
    }

    /// [`with_table`](Self::with_table) for calls that only read: under the
    /// read lock, so the shard's readers go on meanwhile (an export may be
    /// long). A panic still restarts the shard, as in any handler.
    fn read_table<R>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        f: impl FnOnce(&GhostTable, u64) -> R,
    ) -> Result<R> {
        let shard = self.shard;
        self.check_claim();
        let view = self.cell.view.read();
        let table = view.table(shard)?;
        let now = self.clock.now_ms();
        let _span = tracing::debug_span!("ghost_message", kind = msg.kind, shard).entered();
        let started = std::time::Instant::now();
        let out = catch_unwind(AssertUnwindSafe(|| f(table, now)));
        metrics::histogram!(crate::metrics::HANDLER_SECONDS, "kind" => msg.kind)
            .record(started.elapsed().as_secs_f64());
        drop(view);
        out.map_err(|_| {
            tracing::error!(shard, "handler panicked; restarting the shard");
            self.cell.set_state(State::Loading);
            ctx.stop();
            Error::Panicked { shard }
        })
    }

    /// Fences a ready shard whose claim no longer holds.
    fn check_claim(&mut self) {
        let lapsed = {
            let view = self.cell.view.read();
            match &view.claim {
                Some(claim) if !claim.is_valid() && matches!(view.state, State::Ready(_)) => {
                    Some(view::lapse(claim))
                }
                _ => None,
            }
        };
        if let Some(cause) = lapsed {
            self.fence(cause);
        }
    }

    /// Drops the table and answers [`Error::Fenced`] from now on, to the
    /// requests waiting for the next flush too: it will not happen.
    fn fence(&mut self, cause: String) {
        let shard = self.shard;
        tracing::error!(shard, cause, "shard fenced: no longer answering nor writing");
        metrics::counter!(crate::metrics::FAILED_CLOSED, "shard" => shard.to_string()).increment(1);
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(Error::Fenced { shard, cause: cause.clone() }));
        }
        self.cell.set_state(State::Fenced(cause));
    }

    /// Applies `f` and answers at once; its changes ride the next flush.
    fn lazy<R>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        f: impl FnOnce(&mut GhostTable, u64) -> R,
    ) -> Result<R> {
        self.lazy_warmed(ctx, msg, |_| (), |t, (), now| f(t, now))
    }

    /// [`lazy`](Self::lazy) with a read-only first step (see [`with_table_warmed`](Self::with_table_warmed)).
    pub(super) fn lazy_warmed<W, R>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        warm: impl FnOnce(&GhostTable) -> W,
        f: impl FnOnce(&mut GhostTable, W, u64) -> R,
    ) -> Result<R> {
        let out = self.with_table_warmed(ctx, msg, warm, f)?;
        if self.has_changes() {
            self.schedule_flush(ctx);
        }
        Ok(out)
    }

    /// Applies `f`, then answers once the change is durable (under group
    /// commit) or at once (interval durability).
    fn durable<R: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        f: impl FnOnce(&mut GhostTable, u64) -> R,
    ) -> BoxFuture<'static, Result<R>> {
        self.durable_warmed(ctx, msg, |_| (), |t, (), now| f(t, now))
    }

    /// [`durable`](Self::durable) with a read-only first step (see [`with_table_warmed`](Self::with_table_warmed)).
    pub(super) fn durable_warmed<W, R: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        warm: impl FnOnce(&GhostTable) -> W,
        f: impl FnOnce(&mut GhostTable, W, u64) -> R,
    ) -> BoxFuture<'static, Result<R>> {
        let out = match self.with_table_warmed(ctx, msg, warm, f) {
            Ok(out) => out,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if !matches!(self.config.durability, Durability::GroupCommit) {
            self.schedule_flush(ctx);
            return Box::pin(async move { Ok(out) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.schedule_flush(ctx);
        let shard = self.shard;
        Box::pin(async move {
            rx.await.map_err(|_| Error::Unavailable { shard })??;
            Ok(out)
        })
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return; // Joins the next flush, started when this one completes.
        }
        if let Durability::Interval { interval } = self.config.durability
            && self.waiters.is_empty()
        {
            if !self.interval_armed {
                self.interval_armed = true;
                ctx.run_later(interval, |act, ctx| {
                    act.interval_armed = false;
                    act.start_flush(ctx);
                });
            }
            return;
        }
        self.start_flush(ctx);
    }

    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        // One flush in flight per shard keeps commits in order; the interval
        // timer can fire during one, and its completion reschedules anyway.
        if self.flushing {
            return;
        }
        // Write-locked only to drain the changes; the commit runs unlocked.
        let mut view = self.cell.write();
        let State::Ready(table) = &mut view.state else {
            return;
        };
        let waiters = std::mem::take(&mut self.waiters);
        if !table.has_changes() {
            drop(view);
            // Nothing applied is still in flight: everything is durable already.
            waiters.into_iter().for_each(|w| drop(w.send(Ok(()))));
            return;
        }
        let changes = ShardChanges { shard: self.shard, changes: table.take_changes() };
        drop(view);
        self.flushing = true;
        let writer = self.writer.clone();
        let started = std::time::Instant::now();
        let fut = async move { writer.commit(changes).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            metrics::histogram!(crate::metrics::SHARD_FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
            act.flushing = false;
            let failed = result.is_err();
            for w in waiters {
                let _ = w.send(result.clone());
            }
            if let Err(e) = result {
                if matches!(act.cell.view.read().state, State::Fenced(_)) {
                    return; // Stays fenced: a reload could take the shard again.
                }
                // The table is now ahead of the store; only a reload makes them agree.
                act.stats.flush_failures += 1;
                tracing::error!(shard = act.shard, error = %e.chain(), "flush failed; restarting the shard");
                act.cell.set_state(State::Loading);
                ctx.stop();
            } else {
                act.stats.flushes += 1;
                if act.waiters.is_empty() {
                    // Every batch applied so far is acknowledged.
                    act.unacked_seq = None;
                }
            }
            if !failed && (!act.waiters.is_empty() || act.has_changes()) {
                act.schedule_flush(ctx);
            }
        }));
    }

    fn has_changes(&self) -> bool {
        matches!(&self.cell.view.read().state, State::Ready(t) if t.has_changes())
    }

    /// Records a restart; false when the policy's intensity is exceeded.
    fn note_restart(&mut self) -> bool {
        let now = self.clock.now_ms();
        let window = crate::config::millis(self.config.restart.window);
        while self.restart_times.front().is_some_and(|&t| now.saturating_sub(t) > window) {
            self.restart_times.pop_front();
        }
        self.restart_times.push_back(now);
        self.stats.restarts += 1;
        self.restart_times.len() as u32 <= self.config.restart.max_restarts
    }

    fn reload_delay(&self) -> Duration {
        let n = self.restart_times.len() as u32;
        if n == 0 {
            return Duration::ZERO;
        }
        let r = &self.config.restart;
        let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
        r.backoff_base.saturating_mul(factor).min(r.backoff_cap)
    }
}

impl Actor for GhostActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        if matches!(self.cell.view.read().state, State::Down { .. }) {
            return;
        }
        self.cell.set_state(State::Loading);
        let (writer, shard, table_config) = (self.writer.clone(), self.shard, self.config.table.clone());
        let delay = self.reload_delay();
        let load = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            writer.load_claimed(shard, table_config).await
        };
        // `wait` holds the mailbox until the table is back: no queued message
        // ever sees an empty or half-loaded table.
        ctx.wait(load.into_actor(self).map(|result, act, ctx| match result {
            Ok((table, claim)) => {
                tracing::info!(shard = act.shard, ghosts = table.len(), "shard loaded");
                // State and claim in one acquisition: no reader sees the
                // table without the claim it must be checked against.
                let mut view = act.cell.write();
                view.state = State::Ready(Box::new(table));
                view.claim = claim;
            }
            Err(Error::Fenced { cause, .. }) => act.fence(cause),
            Err(e @ (Error::Decode(_) | Error::InvalidNodeId { .. } | Error::NotAStore(_))) => {
                tracing::error!(shard = act.shard, error = %e.chain(), "stored state unreadable; failing closed");
                metrics::counter!(crate::metrics::FAILED_CLOSED, "shard" => act.shard.to_string())
                    .increment(1);
                act.cell.set_state(State::Failed(Box::new(e)));
            }
            Err(e) => {
                tracing::warn!(shard = act.shard, error = %e.chain(), "load failed; restarting");
                ctx.stop();
            }
        }));
    }
}

impl Supervised for GhostActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Unflushed changes die with the table; their waiters learn it now,
        // and the host will send their batches again.
        self.waiters.clear();
        self.lost_upto = self.lost_upto.max(self.unacked_seq.take());
        self.flushing = false;
        self.interval_armed = false;
        self.incarnation = self.incarnation.wrapping_add(1);
        if std::mem::take(&mut self.reviving) {
            self.cell.set_state(State::Loading);
            return;
        }
        metrics::counter!(crate::metrics::RESTARTS, "shard" => self.shard.to_string()).increment(1);
        let state = if self.note_restart() {
            State::Loading
        } else {
            tracing::error!(shard = self.shard, "restart intensity exceeded; shard stays down");
            State::Down { restarts: self.restart_times.len() as u32 }
        };
        self.cell.set_state(state);
    }
}

impl Drop for GhostActor {
    /// The actor is gone for good (its supervisor is dropped with the
    /// runtime's arbiter): readers answer [`Error::MailboxClosed`], as its
    /// address does, and the table's memory is freed now.
    fn drop(&mut self) {
        self.cell.set_state(State::Closed);
    }
}

mod handlers;
mod view;
