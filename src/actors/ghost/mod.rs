//! `GhostActor`: drives one vShard's [`ShardCore`]: its mailbox, the cell's
//! lock, catching panics, the commits and loads on the store writer, and the
//! effects the core asks for.

use crate::clock::Clock;
use crate::config::ShardConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::shard::{Answer, Effect, Ready, Restart, ShardCell, ShardCore, State, Token, downgrade, upgrade};
use crate::table::{GhostTable, TableMemory};
use crate::writer::StoreWriter;
use actix::prelude::*;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use tokio::sync::oneshot;

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
    shard: ShardId,
    config: Arc<ShardConfig>,
    writer: StoreWriter,
    clock: Arc<dyn Clock>,
    /// The core, shared with the shard's readers: written only here.
    cell: Arc<ShardCell>,
    /// Who waits for each of the core's tokens.
    acks: HashMap<Token, oneshot::Sender<Result<()>>>,
    /// The allocations of the table a restart retired, for the reload to
    /// build in (`GhostStore::load_reusing`): a reload inside a process that
    /// has run a while then does not map and fault in a fresh table.
    spare: Option<TableMemory>,
}

impl GhostActor {
    /// A shard actor; the runtime starts it supervised on an arbiter.
    pub(crate) fn new(
        shard: ShardId,
        config: Arc<ShardConfig>,
        writer: StoreWriter,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let core = ShardCore::new(shard, &config, fastrand::u64(..));
        Self { shard, config, writer, clock, cell: ShardCell::new(core), acks: HashMap::new(), spare: None }
    }

    /// The cell the actor keeps its core in, for the shard's readers.
    pub(crate) fn cell(&self) -> Arc<ShardCell> {
        self.cell.clone()
    }

    /// Starts the actor under a [`Supervisor`] on `arbiter`.
    pub(crate) fn start_supervised_in(self, arbiter: &ArbiterHandle) -> Addr<Self> {
        Supervisor::start_in_arbiter(arbiter, move |_| self)
    }

    /// Runs a request on the core: `warm`, a read-only first step (a batch's
    /// hashing and cache misses, say), then `apply`, then settles it; a panic
    /// in either fails the request and restarts the shard from the store.
    /// Answers the outcome, and the receiver of its acknowledgement when it
    /// waits for a commit.
    ///
    /// `warm` runs under an upgradable read lock, so the shard's readers go
    /// on meanwhile; the lock is then upgraded (no write can come in between)
    /// and held for writing over all of `apply`: readers see the state before
    /// the message or after it, never a half-applied batch, and wait only for
    /// the write part. A panic in either step leaves the state `Loading`
    /// before the lock is released, so no reader ever sees what it left half
    /// done. `msg` names the message for its span and its latency metric.
    fn step<W, R>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        warm: impl FnOnce(&ShardCore) -> Result<W>,
        apply: impl FnOnce(&mut ShardCore, W, u64) -> Result<(R, Answer)>,
    ) -> Result<(R, Option<AckRx>)> {
        let shard = self.shard;
        self.check_claim(ctx);
        let view = self.cell.upgradable();
        let now = self.clock.now_ms();
        let _span =
            tracing::debug_span!("ghost_message", kind = msg.kind, shard = shard.get(), seq = msg.seq)
                .entered();
        let started = std::time::Instant::now();
        let warmed = catch_unwind(AssertUnwindSafe(|| warm(&view.core)));
        let mut view = upgrade(view);
        let mut result = match warmed {
            Ok(Ok(w)) => catch_unwind(AssertUnwindSafe(|| apply(&mut view.core, w, now))),
            Ok(Err(e)) => Ok(Err(e)),
            Err(payload) => Err(payload),
        };
        if matches!(result, Ok(Ok(_))) && view.core.stage_due() {
            // Staging copies the dirty stubs for the store: under the read
            // lock again (the state is whole, the batch applied), and only
            // the short commit under the write lock. A panic in the copy
            // restarts the shard as any other does: readers may have seen
            // the batch, which was not acknowledged (the request fails) and
            // is gone after the reload, as after a failed flush.
            let shared = downgrade(view);
            let staged = catch_unwind(AssertUnwindSafe(|| shared.core.stage_ahead()));
            view = upgrade(shared);
            let committed = match staged {
                Ok(Some(staged)) => catch_unwind(AssertUnwindSafe(|| view.core.commit_staged(staged))),
                Ok(None) => Ok(()),
                Err(payload) => Err(payload),
            };
            if let Err(payload) = committed {
                result = Err(payload);
            }
        }
        // What a panic left half done is replaced before the lock is released
        // (nothing else runs in between, not even the metric).
        let out = match result {
            Ok(Ok((r, answer))) => Ok(Ok((r, view.core.settle(answer)))),
            Ok(Err(e)) => Ok(Err(e)),
            Err(payload) => {
                let injected = payload.downcast_ref::<&str>().is_some_and(|m| *m == INJECTED_PANIC);
                view.core.panicked(injected);
                Err(Error::Panicked { shard })
            }
        };
        if !matches!(out, Ok(Ok(_))) {
            view.core.batch_refused(msg.seq);
        }
        let ready = view.core.ready();
        drop(view);
        metrics::histogram!(crate::metrics::HANDLER_SECONDS, "kind" => msg.kind)
            .record(started.elapsed().as_secs_f64());
        // Who waits is registered before the effects that may answer it run.
        let out = match out {
            Ok(Ok((r, token))) => Ok((r, token.map(|t| self.wait_for(t)))),
            Ok(Err(e)) | Err(e) => Err(e),
        };
        self.deliver(ctx, ready);
        out
    }

    /// Runs `f` on the table for a call that only reads: under the read
    /// lock, so the shard's readers go on meanwhile (an export may be long).
    /// A panic still restarts the shard, as in any handler.
    fn read_step<R>(
        &mut self,
        ctx: &mut Context<Self>,
        msg: Msg,
        f: impl FnOnce(&GhostTable, u64) -> R,
    ) -> Result<R> {
        let shard = self.shard;
        self.check_claim(ctx);
        let view = self.cell.read();
        let table = view.table()?;
        let now = self.clock.now_ms();
        let _span = tracing::debug_span!("ghost_message", kind = msg.kind, shard = shard.get()).entered();
        let started = std::time::Instant::now();
        let out = catch_unwind(AssertUnwindSafe(|| f(table, now)));
        metrics::histogram!(crate::metrics::HANDLER_SECONDS, "kind" => msg.kind)
            .record(started.elapsed().as_secs_f64());
        drop(view);
        out.map_err(|_| {
            self.with_core(ctx, |core| core.panicked(false));
            Error::Panicked { shard }
        })
    }

    /// Runs `f` on the core under the write lock, then carries out its effects.
    fn with_core<R>(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut ShardCore) -> R) -> R {
        let (out, ready) = {
            let mut view = self.cell.write();
            let out = f(&mut view.core);
            (out, view.core.ready())
        };
        self.deliver(ctx, ready);
        out
    }

    /// Registers who waits for `token`.
    fn wait_for(&mut self, token: Token) -> AckRx {
        let (tx, rx) = oneshot::channel();
        self.acks.insert(token, tx);
        rx
    }

    /// Fences a ready shard whose claim no longer holds.
    fn check_claim(&mut self, ctx: &mut Context<Self>) {
        let lapsed = self.cell.read().lapsed();
        if let Some(cause) = lapsed {
            self.with_core(ctx, |core| core.fence(cause));
        }
    }

    /// Carries out the core's effects, in order; then drops the states it
    /// retired (the lock is released by now).
    fn deliver(&mut self, ctx: &mut Context<Self>, ready: Ready) {
        // The number, for the logs' structured field.
        let shard = self.shard.get();
        // A retired table's memory is kept only for a reload to come; a
        // fenced, failed or downed shard frees it.
        let reloading = ready.effects.iter().any(|e| matches!(e, Effect::Restart(_)));
        for effect in ready.effects {
            match effect {
                Effect::Ack { token, result } => {
                    if let Some(tx) = self.acks.remove(&token) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Commit(changes) => {
                    let writer = self.writer.clone();
                    let started = std::time::Instant::now();
                    let fut = async move { writer.commit(changes).await };
                    ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                        metrics::histogram!(crate::metrics::SHARD_FLUSH_SECONDS)
                            .record(started.elapsed().as_secs_f64());
                        act.with_core(ctx, |core| core.commit_done(result));
                    }));
                }
                Effect::FlushAfter(interval) => {
                    ctx.run_later(interval, |act, ctx| act.with_core(ctx, ShardCore::flush_due));
                }
                Effect::Load { at_ms } => self.load(ctx, at_ms),
                Effect::Restart(why) => {
                    match why {
                        Restart::FlushFailed(e) => {
                            tracing::error!(shard, error = %e.chain(), "flush failed; restarting the shard");
                        }
                        Restart::LoadFailed(e) => {
                            tracing::warn!(shard, error = %e.chain(), "load failed; restarting");
                        }
                        // A drill's panic (`InjectPanic`) is expected: not an error to page anyone for.
                        Restart::Panicked { injected: true } => {
                            tracing::info!(
                                shard,
                                "injected panic (fault injection, expected); restarting the shard"
                            );
                        }
                        Restart::Panicked { injected: false } => {
                            tracing::error!(shard, "handler panicked; restarting the shard");
                        }
                        Restart::Revive => tracing::info!(shard, "operator revives the shard; reloading"),
                    }
                    ctx.stop();
                }
                Effect::Fenced(cause) => {
                    tracing::error!(shard, cause, "shard fenced: no longer answering nor writing");
                    metrics::counter!(crate::metrics::FAILED_CLOSED, "shard" => shard.to_string())
                        .increment(1);
                }
                Effect::FailedClosed(e) => {
                    tracing::error!(shard, error = %e.chain(), "stored state unreadable; failing closed");
                    metrics::counter!(crate::metrics::FAILED_CLOSED, "shard" => shard.to_string())
                        .increment(1);
                }
                Effect::Down => {
                    // A downed shard loads again only if an operator revives it.
                    self.spare = None;
                    tracing::error!(shard, "restart intensity exceeded; shard stays down");
                }
            }
        }
        for state in ready.retired {
            if let State::Ready(table) = state
                && reloading
            {
                self.spare = Some(table.into_memory());
            }
        }
    }

    /// Loads the table once the clock reads `at_ms` (the restart back-off,
    /// waited on tokio's timer).
    /// `wait` holds the mailbox until the table is back: no queued message
    /// ever sees an empty or half-loaded table.
    fn load(&mut self, ctx: &mut Context<Self>, at_ms: u64) {
        let (writer, shard, table_config) = (self.writer.clone(), self.shard, self.config.table.clone());
        let memory = self.spare.take().unwrap_or_default();
        let delay = std::time::Duration::from_millis(at_ms.saturating_sub(self.clock.now_ms()));
        let load = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            writer.load_claimed(shard, table_config, memory).await
        };
        ctx.wait(load.into_actor(self).map(|result, act, ctx| {
            let ready = {
                // State and claim in one acquisition: no reader sees the
                // table without the claim it must be checked against.
                let mut view = act.cell.write();
                match result {
                    Ok((table, claim)) => {
                        tracing::info!(shard = act.shard.get(), ghosts = table.len(), "shard loaded");
                        view.claim = claim;
                        view.core.loaded(Ok(table));
                    }
                    Err(e) => view.core.loaded(Err(e)),
                }
                view.core.ready()
            };
            act.deliver(ctx, ready);
        }));
    }
}

/// Where a request waits for its acknowledgement.
type AckRx = oneshot::Receiver<Result<()>>;

/// The answer of a request that may wait for its acknowledgement.
fn reply<R: Send + 'static>(
    shard: ShardId,
    out: Result<(R, Option<AckRx>)>,
) -> BoxFuture<'static, Result<R>> {
    Box::pin(async move {
        let (r, rx) = out?;
        if let Some(rx) = rx {
            rx.await.map_err(|_| Error::Unavailable { shard })??;
        }
        Ok(r)
    })
}

impl Actor for GhostActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        let now = self.clock.now_ms();
        self.with_core(ctx, |core| core.start(now));
    }
}

impl Supervised for GhostActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now_ms();
        if self.with_core(ctx, |core| core.restarting(now)) {
            metrics::counter!(crate::metrics::RESTARTS, "shard" => self.shard.to_string()).increment(1);
        }
        // Every waiter was answered; none can be left to a dead incarnation.
        self.acks.clear();
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
