//! Message handlers of `GhostActor`: each one a table call, lazy or durable.

use super::{GhostActor, Msg, State};
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::messages::*;
use crate::sweep::ApplyReport;
use actix::prelude::*;

type Durable<T> = ResponseFuture<Result<T>>;

impl Handler<InsertGhost> for GhostActor {
    type Result = Durable<crate::InsertOutcome>;
    fn handle(&mut self, m: InsertGhost, ctx: &mut Context<Self>) -> Self::Result {
        let fut = self.durable(ctx, Msg::kind("insert"), |t, now| {
            t.insert(&m.node_id, m.target, m.refcount, m.epoch, now)
        });
        Box::pin(async move { fut.await? })
    }
}

// Bulk moves: each item applies alone (its own outcome), all share one commit.
impl Handler<InsertGhosts> for GhostActor {
    type Result = Durable<Vec<Result<crate::InsertOutcome>>>;
    fn handle(&mut self, m: InsertGhosts, ctx: &mut Context<Self>) -> Self::Result {
        self.durable(ctx, Msg::kind("insert_many"), |t, now| {
            m.ghosts.iter().map(|g| t.insert(&g.node_id, g.target, g.refcount, g.epoch, now)).collect()
        })
    }
}

impl Handler<Retargets> for GhostActor {
    type Result = Durable<Vec<Result<crate::MoveOutcome>>>;
    fn handle(&mut self, m: Retargets, ctx: &mut Context<Self>) -> Self::Result {
        self.durable(ctx, Msg::kind("retarget_many"), |t, _| {
            m.moves.iter().map(|r| t.retarget(&r.node_id, r.target, r.epoch)).collect()
        })
    }
}

impl Handler<Reclaims> for GhostActor {
    type Result = Durable<Vec<Result<crate::MoveOutcome>>>;
    fn handle(&mut self, m: Reclaims, ctx: &mut Context<Self>) -> Self::Result {
        self.durable(ctx, Msg::kind("reclaim_many"), |t, now| {
            m.nodes.iter().map(|r| Ok(t.reclaim(&r.node_id, r.epoch, now))).collect()
        })
    }
}

impl Handler<EdgeAdded> for GhostActor {
    type Result = Durable<crate::EdgeOutcome>;
    fn handle(&mut self, m: EdgeAdded, ctx: &mut Context<Self>) -> Self::Result {
        self.durable(ctx, Msg::kind("edge_added"), |t, _| t.edge_added(&m.node_id))
    }
}

impl Handler<EdgeRemoved> for GhostActor {
    type Result = Result<crate::EdgeOutcome>;
    fn handle(&mut self, m: EdgeRemoved, ctx: &mut Context<Self>) -> Self::Result {
        self.lazy(ctx, Msg::kind("edge_removed"), |t, _| t.edge_removed(&m.node_id))
    }
}

impl Handler<EdgeBatch> for GhostActor {
    type Result = Durable<crate::BatchOutcome>;
    fn handle(&mut self, m: EdgeBatch, ctx: &mut Context<Self>) -> Self::Result {
        if let (Some(seq), Some(upto)) = (m.seq, self.lost_upto) {
            let applied =
                match self.with_table(ctx, Msg::kind("edge_batch_gap_check"), |t, _| t.applied_seq()) {
                    Ok(applied) => applied,
                    Err(e) => return Box::pin(async move { Err(e) }),
                };
            if applied >= Some(upto) {
                self.lost_upto = None;
            } else if seq > upto {
                // Applying it would move the sequence number past batches
                // whose retries are still to come, and those would be skipped.
                let shard = self.shard;
                return Box::pin(async move {
                    Err(Error::SeqGap { shard: shard.into(), applied, awaiting: upto })
                });
            }
        }
        if m.events.any_added() {
            // Under interval durability the batch is acknowledged at once: a
            // restart may lose it, but the host will not send it again.
            if m.seq.is_some() && matches!(self.config.durability, crate::config::Durability::GroupCommit) {
                self.unacked_seq = self.unacked_seq.max(m.seq);
            }
            return self.durable_warmed(
                ctx,
                Msg::batch(m.seq),
                |t| t.warm_batch(&m.events),
                |t, mut w, _| t.apply_warmed(m.seq, &mut w),
            );
        }
        let out = self.lazy_warmed(
            ctx,
            Msg::batch(m.seq),
            |t| t.warm_batch(&m.events),
            |t, mut w, _| t.apply_warmed(m.seq, &mut w),
        );
        Box::pin(async move { out })
    }
}

impl Handler<Retarget> for GhostActor {
    type Result = Durable<crate::MoveOutcome>;
    fn handle(&mut self, m: Retarget, ctx: &mut Context<Self>) -> Self::Result {
        let fut = self.durable(ctx, Msg::kind("retarget"), |t, _| t.retarget(&m.node_id, m.target, m.epoch));
        Box::pin(async move { fut.await? })
    }
}

impl Handler<Reclaim> for GhostActor {
    type Result = Durable<crate::MoveOutcome>;
    fn handle(&mut self, m: Reclaim, ctx: &mut Context<Self>) -> Self::Result {
        self.durable(ctx, Msg::kind("reclaim"), |t, now| t.reclaim(&m.node_id, m.epoch, now))
    }
}

impl Handler<Resolve> for GhostActor {
    type Result = Result<Option<ShardId>>;
    fn handle(&mut self, m: Resolve, ctx: &mut Context<Self>) -> Self::Result {
        self.read_table(ctx, Msg::kind("resolve"), |t, _| t.resolve(&m.node_id).map(ShardId))
    }
}

impl Handler<ResolveMany> for GhostActor {
    type Result = Result<Vec<Option<ShardId>>>;
    fn handle(&mut self, m: ResolveMany, ctx: &mut Context<Self>) -> Self::Result {
        self.read_table(ctx, Msg::kind("resolve_many"), |t, _| {
            m.node_ids.iter().map(|id| t.resolve(id).map(ShardId)).collect()
        })
    }
}

impl Handler<ExportPage> for GhostActor {
    type Result = Result<crate::table::GhostPage>;
    fn handle(&mut self, m: ExportPage, ctx: &mut Context<Self>) -> Self::Result {
        self.read_table(ctx, Msg::kind("export_page"), |t, _| t.export_page(m.after.as_deref(), m.limit))
    }
}

impl Handler<Inspect> for GhostActor {
    type Result = Result<Option<crate::GhostInfo>>;
    fn handle(&mut self, m: Inspect, ctx: &mut Context<Self>) -> Self::Result {
        self.read_table(ctx, Msg::kind("inspect"), |t, _| t.get(&m.node_id))
    }
}

impl Handler<ExportRecords> for GhostActor {
    type Result = Result<Vec<crate::store::StubRecord>>;
    fn handle(&mut self, _: ExportRecords, ctx: &mut Context<Self>) -> Self::Result {
        self.read_table(ctx, Msg::kind("export"), |t, _| t.records().collect())
    }
}

impl Handler<PlanSweep> for GhostActor {
    type Result = Result<PlanReply>;
    fn handle(&mut self, m: PlanSweep, ctx: &mut Context<Self>) -> Self::Result {
        self.refuse_by_hand(m.by_hand)?;
        let page = self.lazy(ctx, Msg::kind("plan_sweep"), |t, now| t.plan_sweep(now, m.max_scan))?;
        Ok(PlanReply {
            shard: self.shard,
            incarnation: self.incarnation,
            page,
            pending_acks: self.waiters.len(),
        })
    }
}

impl Handler<ApplyVerdicts> for GhostActor {
    type Result = Result<ApplyReport>;
    fn handle(&mut self, m: ApplyVerdicts, ctx: &mut Context<Self>) -> Self::Result {
        self.refuse_by_hand(m.by_hand)?;
        if m.incarnation != self.incarnation {
            // Planned before a restart: versions restarted too, so none can be trusted.
            let n = m.verdicts.len() as u32;
            self.stats.stale_incarnation_verdicts += u64::from(n);
            return Ok(ApplyReport { stale: n, ..ApplyReport::default() });
        }
        self.lazy(ctx, Msg::kind("apply_verdicts"), |t, now| t.apply_verdicts(&m.verdicts, now))
    }
}

impl Handler<GetStats> for GhostActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats.clone();
        stats.pending_acks = self.waiters.len();
        let view = self.cell.view.read();
        stats.state = match &view.state {
            State::Loading | State::Closed => ShardState::Loading,
            State::Ready(t) => {
                stats.table = t.stats(self.clock.now_ms());
                ShardState::Ready
            }
            State::Failed(cause) => ShardState::FailedClosed(cause.chain()),
            State::Fenced(cause) => ShardState::FailedClosed(
                Error::Fenced { shard: self.shard, cause: cause.clone() }.to_string(),
            ),
            State::Down { .. } => ShardState::Down,
        };
        drop(view);
        MessageResult(stats)
    }
}

impl Handler<Revive> for GhostActor {
    type Result = Result<()>;
    fn handle(&mut self, _: Revive, ctx: &mut Context<Self>) -> Self::Result {
        if matches!(self.cell.view.read().state, State::Ready(_) | State::Loading) {
            return Ok(());
        }
        tracing::info!(shard = self.shard, "operator revives the shard; reloading");
        // A fresh restart budget: the operator has dealt with what exhausted it.
        self.restart_times.clear();
        self.reviving = true;
        self.cell.set_state(State::Loading);
        ctx.stop();
        Ok(())
    }
}

impl Handler<Flush> for GhostActor {
    type Result = Durable<()>;
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.with_table(ctx, Msg::kind("flush"), |_, _| ()) {
            return Box::pin(async move { Err(e) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push(tx);
        self.schedule_flush(ctx);
        let shard = self.shard;
        Box::pin(async move { rx.await.map_err(|_| Error::Unavailable { shard })? })
    }
}

#[cfg(feature = "testing")]
impl Handler<InjectPanic> for GhostActor {
    type Result = Result<()>;
    fn handle(&mut self, _: InjectPanic, ctx: &mut Context<Self>) -> Self::Result {
        self.refuse_by_hand(true)?;
        self.with_table(ctx, Msg::kind("inject_panic"), |_, _| std::panic::panic_any(super::INJECTED_PANIC))
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
        self.with_table_warmed(
            ctx,
            Msg::kind("inject_batch_panic"),
            |t| match m.at {
                BatchPanicAt::Warm => inject(),
                BatchPanicAt::After(_) => t.warm_batch(&m.events),
            },
            |t, _, _| -> () {
                t.apply_batch(None, &prefix);
                inject()
            },
        )
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
