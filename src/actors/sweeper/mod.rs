//! `SweeperActor`: rate-limited, lowest-priority anti-entropy over every shard, from its own arbiter.

mod pass;

use crate::actors::Shards;
use crate::clock::Clock;
use crate::config::SweeperConfig;
use crate::error::{Error, Result};
use crate::messages::{GetSweepStats, Pause, Resume, RunPass, SetRate, StopSweeper};
use crate::sweep::Verifier;
use crate::sweep::{PassReport, SweepTotals};
use actix::prelude::*;
use pass::{Control, PassEnv};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

/// The anti-entropy sweeper: plans pages on each shard, verifies them through
/// the host's [`Verifier`] under a governor token bucket, and applies the
/// verdicts by compare-and-set on the stub versions.
///
/// Lowest priority: start it on its own arbiter ([`start_in`](Self::start_in)),
/// never a shard's; a shard whose write backlog or mailbox delay is above the
/// configured thresholds is deferred to later in the pass; the bucket bounds
/// the load on target shards. Periodic passes run every
/// [`pass_interval`](SweeperConfig::pass_interval) unless paused; [`RunPass`]
/// runs one on demand.
pub(crate) struct SweeperActor {
    env: Arc<PassEnv>,
    control: watch::Sender<Control>,
    rate: (u32, u32),
    pass_interval: Option<std::time::Duration>,
    running: bool,
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
        let rate = (config.verifies_per_second, config.burst);
        let pass_interval = config.pass_interval;
        Ok(Self {
            env: Arc::new(PassEnv::new(shards, verifier, config, clock)),
            control: watch::Sender::new(Control::Run),
            rate,
            pass_interval,
            running: false,
            serving: Vec::new(),
            waiting: Vec::new(),
            stopping: Vec::new(),
            totals: SweepTotals::default(),
            passes: 0,
        })
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
        pass::record_metrics(&report);
        for tx in self.serving.drain(..) {
            let _ = tx.send(report);
        }
        if self.control() == Control::Stop {
            self.finish_stop(ctx);
        } else if !self.waiting.is_empty() {
            self.start_pass(ctx);
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
            verifies_per_second: self.rate.0,
            burst: self.rate.1,
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
        metrics::gauge!(crate::metrics::SWEEP_RATE).set(f64::from(self.rate.0));
        if let Some(every) = self.pass_interval {
            ctx.run_interval(every, |act, ctx| {
                if !act.running && act.control() == Control::Run {
                    act.start_pass(ctx);
                }
            });
        }
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
    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        self.set_control(Control::Pause);
    }
}

impl Handler<Resume> for SweeperActor {
    type Result = ();
    fn handle(&mut self, _: Resume, _: &mut Context<Self>) {
        self.set_control(Control::Run);
    }
}

impl Handler<SetRate> for SweeperActor {
    type Result = Result<()>;
    fn handle(&mut self, m: SetRate, _: &mut Context<Self>) -> Result<()> {
        if m.per_second == 0 || m.burst == 0 {
            return Err(Error::InvalidConfig("sweeper: per_second and burst must be at least 1".into()));
        }
        self.env.set_rate(m.per_second, m.burst);
        self.rate = (m.per_second, m.burst);
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
        self.stopping.push(tx);
        if !self.running {
            self.finish_stop(ctx);
        }
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}
