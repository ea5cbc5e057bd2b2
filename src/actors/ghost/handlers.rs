//! Message handlers of `GhostActor`: each one a step of the shard's core.

use super::{GhostActor, Msg, reply};
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::messages::*;
use crate::sweep::ApplyReport;
use actix::prelude::*;

type Durable<T> = ResponseFuture<Result<T>>;

/// A read-only first step for requests that have none: only that the table is there.
fn ready(core: &crate::shard::ShardCore) -> Result<()> {
    core.table().map(drop)
}

impl Handler<InsertGhost> for GhostActor {
    type Result = Durable<crate::InsertOutcome>;
    fn handle(&mut self, m: InsertGhost, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.step(ctx, Msg::kind("insert"), ready, |c, (), now| {
            c.insert(&m.node_id, m.target, m.refcount, m.epoch, now)
        });
        let fut = reply(self.shard, out);
        Box::pin(async move { fut.await? })
    }
}

// Bulk moves: each item applies alone (its own outcome), all share one commit.
impl Handler<InsertGhosts> for GhostActor {
    type Result = Durable<Vec<Result<crate::InsertOutcome>>>;
    fn handle(&mut self, m: InsertGhosts, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.step(ctx, Msg::kind("insert_many"), ready, |c, (), now| {
            let mut outs = Vec::with_capacity(m.ghosts.len());
            for g in &m.ghosts {
                outs.push(c.insert(&g.node_id, g.target, g.refcount, g.epoch, now)?.0);
            }
            Ok((outs, crate::shard::Answer::Durable))
        });
        reply(self.shard, out)
    }
}

impl Handler<Retargets> for GhostActor {
    type Result = Durable<Vec<Result<crate::MoveOutcome>>>;
    fn handle(&mut self, m: Retargets, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.step(ctx, Msg::kind("retarget_many"), ready, |c, (), _| {
            let mut outs = Vec::with_capacity(m.moves.len());
            for r in &m.moves {
                outs.push(c.retarget(&r.node_id, r.target, r.epoch)?.0);
            }
            Ok((outs, crate::shard::Answer::Durable))
        });
        reply(self.shard, out)
    }
}

impl Handler<Reclaims> for GhostActor {
    type Result = Durable<Vec<Result<crate::MoveOutcome>>>;
    fn handle(&mut self, m: Reclaims, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.step(ctx, Msg::kind("reclaim_many"), ready, |c, (), now| {
            let mut outs = Vec::with_capacity(m.nodes.len());
            for r in &m.nodes {
                outs.push(Ok(c.reclaim(&r.node_id, r.epoch, now)?.0));
            }
            Ok((outs, crate::shard::Answer::Durable))
        });
        reply(self.shard, out)
    }
}

impl Handler<EdgeAdded> for GhostActor {
    type Result = Durable<crate::EdgeOutcome>;
    fn handle(&mut self, m: EdgeAdded, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.step(ctx, Msg::kind("edge_added"), ready, |c, (), _| c.edge_added(&m.node_id));
        reply(self.shard, out)
    }
}

impl Handler<EdgeRemoved> for GhostActor {
    type Result = Result<crate::EdgeOutcome>;
    fn handle(&mut self, m: EdgeRemoved, ctx: &mut Context<Self>) -> Self::Result {
        let (out, _) =
            self.step(ctx, Msg::kind("edge_removed"), ready, |c, (), _| c.edge_removed(&m.node_id))?;
        Ok(out)
    }
}

impl Handler<EdgeBatch> for GhostActor {
    type Result = Durable<crate::BatchOutcome>;
    fn handle(&mut self, m: EdgeBatch, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.step(
            ctx,
            Msg::batch(m.seq),
            |c| c.warm_batch(&m.events),
            |c, mut w, _| c.edge_batch(m.seq, &mut w),
        );
        reply(self.shard, out)
    }
}

impl Handler<Retarget> for GhostActor {
    type Result = Durable<crate::MoveOutcome>;
    fn handle(&mut self, m: Retarget, ctx: &mut Context<Self>) -> Self::Result {
        let out = self
            .step(ctx, Msg::kind("retarget"), ready, |c, (), _| c.retarget(&m.node_id, m.target, m.epoch));
        let fut = reply(self.shard, out);
        Box::pin(async move { fut.await? })
    }
}

impl Handler<Reclaim> for GhostActor {
    type Result = Durable<crate::MoveOutcome>;
    fn handle(&mut self, m: Reclaim, ctx: &mut Context<Self>) -> Self::Result {
        let out =
            self.step(ctx, Msg::kind("reclaim"), ready, |c, (), now| c.reclaim(&m.node_id, m.epoch, now));
        reply(self.shard, out)
    }
}

impl Handler<Resolve> for GhostActor {
    type Result = Result<Option<ShardId>>;
    fn handle(&mut self, m: Resolve, ctx: &mut Context<Self>) -> Self::Result {
        self.read_step(ctx, Msg::kind("resolve"), |t, _| t.resolve(&m.node_id))
    }
}

impl Handler<ResolveMany> for GhostActor {
    type Result = Result<Vec<Option<ShardId>>>;
    fn handle(&mut self, m: ResolveMany, ctx: &mut Context<Self>) -> Self::Result {
        self.read_step(ctx, Msg::kind("resolve_many"), |t, _| {
            m.node_ids.iter().map(|id| t.resolve(id)).collect()
        })
    }
}

impl Handler<ExportPage> for GhostActor {
    type Result = Result<crate::table::GhostPage>;
    fn handle(&mut self, m: ExportPage, ctx: &mut Context<Self>) -> Self::Result {
        self.read_step(ctx, Msg::kind("export_page"), |t, _| t.export_page(m.after.as_deref(), m.limit))
    }
}

impl Handler<Inspect> for GhostActor {
    type Result = Result<Option<crate::GhostInfo>>;
    fn handle(&mut self, m: Inspect, ctx: &mut Context<Self>) -> Self::Result {
        self.read_step(ctx, Msg::kind("inspect"), |t, _| t.get(&m.node_id))
    }
}

impl Handler<ExportRecords> for GhostActor {
    type Result = Result<Vec<crate::store::StubRecord>>;
    fn handle(&mut self, _: ExportRecords, ctx: &mut Context<Self>) -> Self::Result {
        self.read_step(ctx, Msg::kind("export"), |t, _| t.records().collect())
    }
}

impl Handler<PlanSweep> for GhostActor {
    type Result = Result<PlanReply>;
    fn handle(&mut self, m: PlanSweep, ctx: &mut Context<Self>) -> Self::Result {
        self.refuse_by_hand(m.by_hand)?;
        let (mut reply, _) =
            self.step(ctx, Msg::kind("plan_sweep"), ready, |c, (), now| c.plan_sweep(m.max_scan, now))?;
        reply.writer_queue = self.writer.queue_len();
        Ok(reply)
    }
}

impl Handler<ApplyVerdicts> for GhostActor {
    type Result = Result<ApplyReport>;
    fn handle(&mut self, m: ApplyVerdicts, ctx: &mut Context<Self>) -> Self::Result {
        self.refuse_by_hand(m.by_hand)?;
        let (report, _) = self.step(
            ctx,
            Msg::kind("apply_verdicts"),
            |_| Ok(()),
            |c, (), now| c.apply_verdicts(m.incarnation, &m.verdicts, now),
        )?;
        Ok(report)
    }
}

impl Handler<GetStats> for GhostActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now_ms();
        MessageResult(self.cell.read().core.stats(now))
    }
}

impl Handler<Revive> for GhostActor {
    type Result = Result<()>;
    fn handle(&mut self, _: Revive, ctx: &mut Context<Self>) -> Self::Result {
        self.with_core(ctx, crate::shard::ShardCore::revive);
        Ok(())
    }
}

impl Handler<Flush> for GhostActor {
    type Result = Durable<()>;
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let out = self.step(ctx, Msg::kind("flush"), ready, |c, (), _| c.flush());
        reply(self.shard, out)
    }
}

#[cfg(feature = "testing")]
impl Handler<InjectPanic> for GhostActor {
    type Result = Result<()>;
    fn handle(&mut self, _: InjectPanic, ctx: &mut Context<Self>) -> Self::Result {
        self.refuse_by_hand(true)?;
        let inject = |_: &mut crate::shard::ShardCore, (), _| -> Result<((), crate::shard::Answer)> {
            std::panic::panic_any(super::INJECTED_PANIC)
        };
        self.step(ctx, Msg::kind("inject_panic"), ready, inject).map(drop)
    }
}

#[cfg(feature = "testing")]
impl Handler<InjectBatchPanic> for GhostActor {
    type Result = Result<()>;
    fn handle(&mut self, m: InjectBatchPanic, ctx: &mut Context<Self>) -> Self::Result {
        self.refuse_by_hand(true)?;
        let mut prefix = crate::EdgeEvents::default();
        if let BatchPanicAt::After(n) = m.at {
            m.events.iter().take(n).for_each(|(id, kind)| prefix.push(id, kind));
        }
        let inject = || -> ! { std::panic::panic_any(super::INJECTED_PANIC) };
        self.step(
            ctx,
            Msg::kind("inject_batch_panic"),
            |c| match m.at {
                BatchPanicAt::Warm => inject(),
                BatchPanicAt::After(_) => c.warm_batch(&m.events).map(drop),
            },
            |c, (), _| -> Result<((), crate::shard::Answer)> {
                c.table_mut()?.apply_batch(None, &prefix);
                inject()
            },
        )
        .map(drop)
    }
}

impl GhostActor {
    /// Test tooling's messages need the run-time switch as well as the cargo
    /// feature: features merge across a build, so a dependency that turns on
    /// `testing` must not let production code forge a plan or a verdict.
    fn refuse_by_hand(&self, by_hand: bool) -> Result<()> {
        if by_hand && !self.config.fault_injection {
            return Err(Error::InvalidConfig("fault injection is off (ShardConfig::fault_injection)".into()));
        }
        Ok(())
    }
}
