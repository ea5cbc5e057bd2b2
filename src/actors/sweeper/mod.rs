//! `SweeperActor`: rate-limited, lowest-priority anti-entropy over every shard, from its own arbiter.

mod bucket;
mod control;
mod pass;
mod priority;
mod record;
mod verify;

use crate::actors::Shards;
use crate::clock::Clock;
use crate::config::SweeperConfig;
use crate::error::Result;
use crate::messages::{GetSweepStats, Pause, Resume, RunPass, SetRate, StopSweeper};
use crate::sweep::Verifier;
use crate::sweep::{PassReport, Rate, SweepTotals};
use actix::prelude::*;
use control::Control;
use pass::PassEnv;
use priority::Lowered;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

/// The anti-entropy sweeper: plans pages on each shard, verifies them through
/// the host's [`Verifier`] under a governor token bucket, and applies the
/// verdicts by compare-and-set on the stub versions.
///
/// Lowest priority: start it on its own arbiter ([`start_in`](Self::start_in)),
/// never a shard's; a shard whose write backlog or mailbox delay is above the
/// configured thresholds is deferred to later in the pass; the bucket bounds
/// the load on target shards. Periodic passes start
/// [`pass_interval`](SweeperConfig::pass_interval) apart unless paused;
/// [`RunPass`] runs one on demand.
///
/// Nothing to do costs nothing: between passes and while paused the actor
/// holds at most one timer, for the next pass's start, and no ticking one;
/// verifies take their tokens one waiter at a time, so a refill wakes one task.
pub(crate) struct SweeperActor {
    env: Arc<PassEnv>,
    control: watch::Sender<Control>,
    rate: Rate,
    pass_interval: Option<std::time::Duration>,
    running: bool,
    /// The timer of the next periodic pass, if one is due.
    next_pass: Option<SpawnHandle>,
    /// When the last pass started: the next starts `pass_interval` after it.
    last_start: Option<Instant>,
    /// Whether the actor has a thread of its own, to lower the priority of.
    own_thread: bool,
    /// How far its thread's priority went down (`None`: not its own thread).
    lowered: Option<Lowered>,
    /// Requests the running pass answers.
    serving: Vec<oneshot::Sender<PassReport>>,
    /// Requests the next pass answers.
    waiting: Vec<oneshot::Sender<PassReport>>,
    stopping: Vec<oneshot::Sender<SweepTotals>>,
    totals: SweepTotals,
    passes: u64,
}

impl SweeperActor {
    /// A sweeper over `shards`, its bucket on `clock`.
    pub(crate) fn new(
        shards: Shards,
        verifier: Arc<dyn Verifier>,
        config: SweeperConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        let rate = config.rate()?;
        let pass_interval = config.pass_interval;
        Ok(Self {
            env: Arc::new(PassEnv::new(shards, verifier, config, clock)?),
            control: watch::Sender::new(Control::Run),
            rate,
            pass_interval,
            running: false,
            next_pass: None,
            last_start: None,
            own_thread: false,
            lowered: None,
            serving: Vec::new(),
            waiting: Vec::new(),
            stopping: Vec::new(),
            totals: SweepTotals::default(),
            passes: 0,
        })
    }

    /// Marks the arbiter it will start on as its own: once started, it lowers
    /// that thread's OS priority to the lowest there is
    /// ([`SweepTotals::lowest_priority`] says whether the OS allowed it).
    pub(crate) fn own_thread(mut self) -> Self {
        self.own_thread = true;
        self
    }

    /// Starts the sweeper on `arbiter`: give it one of its own, so that its
    /// work never runs on a shard's thread.
    pub(crate) fn start_in(self, arbiter: &ArbiterHandle) -> Addr<Self> {
        Self::start_in_arbiter(arbiter, move |_| self)
    }

    fn control(&self) -> Control {
        *self.control.borrow()
    }

    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        self.cancel_next_pass(ctx);
        self.last_start = Some(Instant::now());
        self.running = true;
        self.serving = std::mem::take(&mut self.waiting);
        self.passes += 1;
        let pass = self.passes;
        let span = tracing::info_span!("sweep_pass", pass, shards = self.env.shards.len());
        let fut = pass::run_pass(self.env.clone(), self.control.subscribe(), pass).instrument(span);
        ctx.spawn(fut.into_actor(self).map(|report, act, ctx| act.pass_ended(report, ctx)));
    }

    fn pass_ended(&mut self, report: PassReport, ctx: &mut Context<Self>) {
        self.running = false;
        self.totals.absorb(&report);
        record::record_pass(&report);
        for tx in self.serving.drain(..) {
            let _ = tx.send(report);
        }
        if self.control() == Control::Stop {
            self.finish_stop(ctx);
        } else if !self.waiting.is_empty() {
            self.start_pass(ctx);
        } else {
            self.schedule_next_pass(ctx);
        }
    }

    /// Sets the one timer for the next periodic pass: `pass_interval` after
    /// the last one started, or at once if that is past. None while a pass
    /// runs (its end sets it) or while paused (a resume does).
    fn schedule_next_pass(&mut self, ctx: &mut Context<Self>) {
        self.cancel_next_pass(ctx);
        let Some(every) = self.pass_interval else { return };
        if self.running || self.control() != Control::Run {
            return;
        }
        let wait = self.last_start.map_or(every, |t| every.saturating_sub(t.elapsed()));
        self.next_pass = Some(ctx.run_later(wait, |act, ctx| {
            act.next_pass = None;
            if !act.running && act.control() == Control::Run {
                act.start_pass(ctx);
            }
        }));
    }

    fn cancel_next_pass(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.next_pass.take() {
            ctx.cancel_future(timer);
        }
    }

    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        // Requests never served learn it from an incomplete, empty report.
        self.waiting.clear();
        let totals = self.stats();
        for tx in self.stopping.drain(..) {
            let _ = tx.send(totals);
        }
        ctx.stop();
    }

    fn stats(&self) -> SweepTotals {
        SweepTotals {
            paused: self.control() == Control::Pause,
            pass_running: self.running,
            verifies_per_second: self.rate.per_second.get(),
            burst: self.rate.burst.get(),
            effective_verifies_per_second: self.env.effective_rate(),
            lowest_priority: matches!(self.lowered, Some(Lowered::Idle | Lowered::Lowest)),
            ..self.totals
        }
    }

    fn set_control(&mut self, to: Control) {
        if self.control() != Control::Stop {
            self.control.send_replace(to);
            metrics::gauge!(crate::metrics::SWEEP_PAUSED).set(if to == Control::Pause { 1.0 } else { 0.0 });
        }
    }
}

impl Actor for SweeperActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!(crate::metrics::SWEEP_RATE).set(f64::from(self.rate.per_second.get()));
        if self.own_thread {
            // Running on its own arbiter's thread now: lower that one, never
            // the thread of an arbiter it shares.
            let lowered = priority::lower_this_thread();
            self.lowered = Some(lowered);
            let on = if lowered == Lowered::Refused { 0.0 } else { 1.0 };
            metrics::gauge!(crate::metrics::SWEEP_THREAD_LOWERED).set(on);
        }
        self.schedule_next_pass(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Stopped without `StopSweeper` (every address dropped): end any pass.
        self.control.send_replace(Control::Stop);
    }
}

impl Handler<RunPass> for SweeperActor {
    type Result = ResponseFuture<PassReport>;
    fn handle(&mut self, _: RunPass, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.control() != Control::Stop {
            self.waiting.push(tx);
            if !self.running {
                self.start_pass(ctx);
            }
        }
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

impl Handler<Pause> for SweeperActor {
    type Result = ();
    fn handle(&mut self, _: Pause, ctx: &mut Context<Self>) {
        self.set_control(Control::Pause);
        self.cancel_next_pass(ctx);
    }
}

impl Handler<Resume> for SweeperActor {
    type Result = ();
    fn handle(&mut self, _: Resume, ctx: &mut Context<Self>) {
        self.set_control(Control::Run);
        self.schedule_next_pass(ctx);
    }
}

impl Handler<SetRate> for SweeperActor {
    type Result = Result<()>;
    fn handle(&mut self, m: SetRate, _: &mut Context<Self>) -> Result<()> {
        let rate = Rate::new(m.per_second, m.burst)?;
        self.env.set_rate(rate);
        self.rate = rate;
        metrics::gauge!(crate::metrics::SWEEP_RATE).set(f64::from(m.per_second));
        Ok(())
    }
}

impl Handler<GetSweepStats> for SweeperActor {
    type Result = MessageResult<GetSweepStats>;
    fn handle(&mut self, _: GetSweepStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats())
    }
}

impl Handler<StopSweeper> for SweeperActor {
    type Result = ResponseFuture<SweepTotals>;
    fn handle(&mut self, _: StopSweeper, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.control.send_replace(Control::Stop);
        self.cancel_next_pass(ctx);
        self.stopping.push(tx);
        if !self.running {
            self.finish_stop(ctx);
        }
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}
