//! The core's transitions, one by one, with no runtime: a small host drives
//! it as the actor does and keeps what it was asked to do.

use super::core::ShardCore;
use super::effects::{Effect, Restart, Token};
use super::flush::Answer;
use super::state::State;
use crate::config::{Durability, ShardConfig};
use crate::error::{Error, Result};
use crate::event::{BatchOutcome, EdgeEvents};
use crate::ids::{Epoch, ShardId};
use crate::table::{GhostTable, ShardChanges};
use std::time::Duration;

/// The core under test and the effects it asked for, not yet looked at.
struct Host {
    core: ShardCore,
    effects: Vec<Effect>,
}

impl Host {
    fn new(config: &ShardConfig) -> Self {
        Self { core: ShardCore::new(ShardId(0), config, 7), effects: Vec::new() }
    }

    /// A core that started and loaded an empty table at time 0.
    fn ready(config: &ShardConfig) -> Self {
        let mut h = Self::new(config);
        h.core.start(0);
        h.core.loaded(GhostTable::new(ShardId(0), config.table.clone()));
        h.drain();
        assert!(h.core.is_ready());
        h.effects.clear();
        h
    }

    fn drain(&mut self) {
        self.effects.extend(self.core.ready().effects);
    }

    /// An edge batch, taken through every step the actor takes.
    fn batch(&mut self, seq: Option<u64>, events: &EdgeEvents) -> Result<(BatchOutcome, Option<Token>)> {
        let out = (|| {
            let mut warm = self.core.warm_batch(events)?;
            let (out, answer) = self.core.edge_batch(seq, &mut warm)?;
            if self.core.stage_due()
                && let Some(staged) = self.core.stage_ahead()
            {
                self.core.commit_staged(staged);
            }
            Ok((out, self.core.settle(answer)))
        })();
        self.drain();
        out
    }

    /// Inserts a ghost for `node` with `refcount` edges, and makes it durable.
    fn insert(&mut self, node: &str, refcount: u32) {
        let (out, answer) = self.core.insert(node, ShardId(3), refcount, Epoch(1), 0).unwrap();
        out.unwrap();
        let token = self.core.settle(answer);
        self.drain();
        self.commit(Ok(()));
        if let Some(t) = token {
            assert_eq!(self.acks(), vec![(t, true)]);
        }
    }

    /// Takes the commit asked for (there must be one) and answers it.
    fn commit(&mut self, result: Result<()>) -> ShardChanges {
        let i = self.effects.iter().position(|e| matches!(e, Effect::Commit(_))).expect("a commit");
        let Effect::Commit(changes) = self.effects.remove(i) else { unreachable!() };
        self.core.commit_done(result);
        self.drain();
        changes
    }

    /// The acknowledgements given since the last look, as (token, ok).
    fn acks(&mut self) -> Vec<(Token, bool)> {
        let mut out = Vec::new();
        self.effects.retain(|e| match e {
            Effect::Ack { token, result } => {
                out.push((*token, result.is_ok()));
                false
            }
            _ => true,
        });
        out
    }

    fn commits(&self) -> usize {
        self.effects.iter().filter(|e| matches!(e, Effect::Commit(_))).count()
    }

    /// Takes a restart asked for, and restarts at `now`; true if one was asked for.
    fn restart(&mut self, now: u64) -> bool {
        let Some(i) = self.effects.iter().position(|e| matches!(e, Effect::Restart(_))) else {
            return false;
        };
        self.effects.remove(i);
        self.core.restarting(now);
        self.drain();
        true
    }

    /// Starts at `now` and loads `table`; the time the load was asked for.
    fn reload(&mut self, now: u64, table: GhostTable) -> u64 {
        self.core.start(now);
        self.drain();
        let i = self.effects.iter().position(|e| matches!(e, Effect::Load { .. })).expect("a load");
        let Effect::Load { at_ms } = self.effects.remove(i) else { unreachable!() };
        self.core.loaded(Ok(table));
        self.drain();
        at_ms
    }
}

fn added(node: &str) -> EdgeEvents {
    let mut e = EdgeEvents::new();
    e.added(node);
    e
}

fn removed(node: &str) -> EdgeEvents {
    let mut e = EdgeEvents::new();
    e.removed(node);
    e
}

#[test]
fn a_batch_that_adds_waits_for_its_commit_under_group_commit() {
    let config = ShardConfig::default();
    let mut h = Host::ready(&config);
    h.insert("n", 1);
    let (out, token) = h.batch(Some(1), &added("n")).unwrap();
    assert_eq!(out.applied, 1);
    let token = token.expect("waits for the commit");
    assert!(h.acks().is_empty());
    assert_eq!(h.core.seq_positions(), (Some(1), None));
    h.commit(Ok(()));
    assert_eq!(h.acks(), vec![(token, true)]);
    assert_eq!(h.core.seq_positions(), (None, None));
    assert_eq!(h.core.stats(0).flushes, 2);
}

#[test]
fn a_failed_commit_answers_its_waiters_restarts_and_remembers_the_lost_batch() {
    let config = ShardConfig::default();
    let mut h = Host::ready(&config);
    h.insert("n", 1);
    let incarnation = h.core.incarnation();
    let (_, token) = h.batch(Some(2), &added("n")).unwrap();
    // A second batch joins the next flush while the first is in flight.
    let (_, second) = h.batch(Some(3), &added("n")).unwrap();
    h.commit(Err(Error::Unavailable { shard: ShardId(0) }));
    assert_eq!(h.acks(), vec![(token.unwrap(), false)]);
    assert!(matches!(h.core.state(), State::Loading));
    assert!(h.restart(10));
    // The waiter of the next flush learns it will not happen.
    assert_eq!(h.acks(), vec![(second.unwrap(), false)]);
    assert_eq!(h.core.seq_positions(), (None, Some(2)));
    assert_eq!(h.core.incarnation(), incarnation.wrapping_add(1));
    assert_eq!(h.core.stats(10).flush_failures, 1);
    assert_eq!(h.core.stats(10).restarts, 1);
}

#[test]
fn a_sequenced_removal_batch_waits_for_its_commit_under_group_commit() {
    let config = ShardConfig::default();
    let mut h = Host::ready(&config);
    h.insert("n", 2);
    let (out, token) = h.batch(Some(1), &removed("n")).unwrap();
    assert_eq!(out.applied, 1);
    let token = token.expect("a sequenced batch waits, whatever it holds");
    assert_eq!(h.core.seq_positions(), (Some(1), None));
    h.commit(Ok(()));
    assert_eq!(h.acks(), vec![(token, true)]);
    // Unsequenced, it is answered at once and rides the flush.
    let (_, token) = h.batch(None, &removed("n")).unwrap();
    assert_eq!((token, h.commits()), (None, 1));
}

#[test]
fn removal_batches_are_answered_at_once_when_the_host_opts_in() {
    let config = ShardConfig { ack_removal_batches_at_once: true, ..ShardConfig::default() };
    let mut h = Host::ready(&config);
    h.insert("n", 2);
    let (out, token) = h.batch(Some(1), &removed("n")).unwrap();
    assert_eq!((out.applied, token), (1, None));
    assert_eq!(h.commits(), 1, "the removal is flushed at once under group commit");
    assert_eq!(h.core.seq_positions(), (None, None), "not awaited: answered already");
}

/// The table as the store holds it after `h.insert("n", 1)`.
fn stored(config: &ShardConfig) -> GhostTable {
    let mut t = GhostTable::new(ShardId(0), config.table.clone()).unwrap();
    t.insert("n", ShardId(3), 1, Epoch(1), 0).unwrap();
    let _ = t.take_changes();
    t
}

/// Batches 2 and 3 each add an edge to n, pipelined; both die with a failed
/// flush, and the shard reloads the stored table.
fn two_batches_lost(config: &ShardConfig) -> Host {
    let mut h = Host::ready(config);
    h.insert("n", 1);
    h.batch(Some(2), &added("n")).unwrap();
    h.batch(Some(3), &added("n")).unwrap();
    h.commit(Err(Error::Unavailable { shard: ShardId(0) }));
    assert!(h.restart(10));
    h.reload(10, stored(config));
    h.acks();
    h
}

fn gap(r: Result<(BatchOutcome, Option<Token>)>) -> Option<u64> {
    match r {
        Err(Error::SeqGap { awaiting, .. }) => Some(awaiting),
        _ => None,
    }
}

#[test]
fn a_retry_lost_again_keeps_every_lost_batch_awaited_in_order() {
    let config = ShardConfig::default();
    let mut h = two_batches_lost(&config);
    // The retry of 2 is applied, but its flush fails too.
    let (out, _) = h.batch(Some(2), &added("n")).unwrap();
    assert!(!out.skipped);
    h.commit(Err(Error::Unavailable { shard: ShardId(0) }));
    assert!(h.restart(20));
    h.reload(20, stored(&config));
    // The pipelined retry of 3 must not overtake the second retry of 2.
    assert_eq!(gap(h.batch(Some(3), &added("n"))), Some(2));
    let (out, _) = h.batch(Some(2), &added("n")).unwrap();
    assert!(!out.skipped, "batch 2 was lost: never answered skipped");
    let (out, _) = h.batch(Some(3), &added("n")).unwrap();
    assert!(!out.skipped);
    assert_eq!(h.core.table().unwrap().get("n").unwrap().refcount, 3);
}

#[test]
fn a_retry_of_a_later_lost_batch_waits_for_the_earlier_one() {
    let config = ShardConfig::default();
    let mut h = two_batches_lost(&config);
    assert_eq!(gap(h.batch(Some(3), &added("n"))), Some(2));
    assert_eq!(gap(h.batch(Some(4), &added("n"))), Some(2));
    assert!(!h.batch(Some(2), &added("n")).unwrap().0.skipped);
    // 3 is still lost: a new batch may not overtake it either.
    assert_eq!(gap(h.batch(Some(4), &added("n"))), Some(3));
    assert!(!h.batch(Some(3), &added("n")).unwrap().0.skipped);
    assert!(!h.batch(Some(4), &added("n")).unwrap().0.skipped);
    assert_eq!(h.core.table().unwrap().get("n").unwrap().refcount, 4);
}

#[test]
fn interval_durability_answers_at_once_and_arms_one_timer() {
    let interval = Duration::from_millis(50);
    let config = ShardConfig { durability: Durability::Interval { interval }, ..ShardConfig::default() };
    let mut h = Host::ready(&config);
    let (out, answer) = h.core.insert("n", ShardId(3), 1, Epoch(1), 0).unwrap();
    out.unwrap();
    assert_eq!(h.core.settle(answer), None);
    assert_eq!(h.batch(Some(1), &added("n")).unwrap().1, None);
    h.drain();
    let timers: Vec<_> =
        h.effects.iter().filter(|e| matches!(e, Effect::FlushAfter(d) if *d == interval)).collect();
    assert_eq!(timers.len(), 1, "one timer for both");
    assert_eq!(h.commits(), 0);
    h.core.flush_due();
    h.drain();
    assert_eq!(h.commits(), 1);
    // A flush asked for explicitly waits whatever the durability.
    let (_, answer) = h.core.flush().unwrap();
    assert_eq!(answer, Answer::AfterFlush);
    let token = h.core.settle(answer).unwrap();
    h.drain();
    h.commit(Ok(()));
    assert_eq!(h.acks(), vec![(token, true)]);
}

#[test]
fn a_flush_with_nothing_to_commit_is_answered_at_once() {
    let config = ShardConfig::default();
    let mut h = Host::ready(&config);
    let (_, answer) = h.core.flush().unwrap();
    let token = h.core.settle(answer).unwrap();
    h.drain();
    assert_eq!(h.commits(), 0);
    assert_eq!(h.acks(), vec![(token, true)]);
}

#[test]
fn restarts_back_off_doubling_to_the_cap_then_the_shard_stays_down() {
    let mut config = ShardConfig::default();
    config.restart.max_restarts = 3;
    config.restart.window = Duration::from_secs(60);
    config.restart.backoff_base = Duration::from_millis(100);
    config.restart.backoff_cap = Duration::from_millis(300);
    let mut h = Host::ready(&config);
    let mut delays = Vec::new();
    for now in [1000, 2000, 3000] {
        h.core.panicked(false);
        h.drain();
        assert!(h.restart(now));
        let at = h.reload(now, GhostTable::new(ShardId(0), config.table.clone()).unwrap());
        delays.push(at - now);
    }
    assert_eq!(delays, vec![100, 200, 300]);
    h.core.panicked(false);
    h.drain();
    assert!(h.restart(4000));
    assert!(matches!(h.core.state(), State::Down { restarts: 4 }));
    assert!(h.effects.iter().any(|e| matches!(e, Effect::Down)));
    h.core.start(5000);
    h.drain();
    assert!(!h.effects.iter().any(|e| matches!(e, Effect::Load { .. })), "down: no reload");
    // An operator's revive: a fresh budget, not counted, reloaded at once.
    h.core.revive();
    h.drain();
    assert!(h.effects.iter().any(|e| matches!(e, Effect::Restart(Restart::Revive))));
    let restarts = h.core.stats(0).restarts;
    assert!(h.restart(6000));
    assert_eq!(h.core.stats(0).restarts, restarts);
    let at = h.reload(6000, GhostTable::new(ShardId(0), config.table.clone()).unwrap());
    assert_eq!(at, 6000);
    assert!(h.core.is_ready());
}

#[test]
fn restarts_outside_the_window_are_forgotten() {
    let mut config = ShardConfig::default();
    config.restart.max_restarts = 1;
    config.restart.window = Duration::from_millis(1000);
    let mut h = Host::ready(&config);
    for now in [0, 1001, 2002] {
        h.core.panicked(false);
        h.drain();
        assert!(h.restart(now));
        assert!(matches!(h.core.state(), State::Loading), "at {now}");
        h.reload(now, GhostTable::new(ShardId(0), config.table.clone()).unwrap());
    }
}

#[test]
fn fencing_answers_the_waiters_and_a_late_commit_failure_does_not_restart() {
    let config = ShardConfig::default();
    let mut h = Host::ready(&config);
    h.insert("n", 1);
    let (_, in_flight) = h.batch(Some(1), &added("n")).unwrap();
    let (_, waiting) = h.batch(Some(2), &added("n")).unwrap();
    h.core.fence("lost".into());
    h.drain();
    assert_eq!(h.acks(), vec![(waiting.unwrap(), false)]);
    assert!(h.effects.iter().any(|e| matches!(e, Effect::Fenced(c) if c == "lost")));
    assert!(matches!(h.core.table(), Err(Error::Fenced { .. })));
    h.commit(Err(Error::Unavailable { shard: ShardId(0) }));
    assert_eq!(h.acks(), vec![(in_flight.unwrap(), false)]);
    assert!(!h.restart(0), "fenced stays fenced");
}

#[test]
fn unreadable_state_fails_closed_and_other_load_errors_restart() {
    let config = ShardConfig::default();
    let mut h = Host::new(&config);
    h.core.start(0);
    h.core.loaded(Err(Error::NotAStore("x".into())));
    h.drain();
    assert!(matches!(h.core.table(), Err(Error::ShardFailed { .. })));
    assert!(h.effects.iter().any(|e| matches!(e, Effect::FailedClosed(_))));
    let mut h = Host::new(&config);
    h.core.start(0);
    h.core.loaded(Err(Error::Unavailable { shard: ShardId(0) }));
    h.drain();
    assert!(h.restart(0));
    let mut h = Host::new(&config);
    h.core.start(0);
    h.core.loaded(Err(Error::Fenced { shard: ShardId(0), cause: "taken".into() }));
    h.drain();
    assert!(matches!(h.core.table(), Err(Error::Fenced { .. })));
}

#[test]
fn verdicts_of_another_incarnation_are_stale() {
    let config = ShardConfig::default();
    let mut h = Host::ready(&config);
    let (report, answer) = h.core.apply_verdicts(h.core.incarnation() ^ 1, &[], 0).unwrap();
    assert_eq!((report.stale, answer), (0, Answer::Now));
    let (plan, _) = h.core.plan_sweep(10, 0).unwrap();
    assert_eq!(plan.incarnation, h.core.incarnation());
}

#[test]
fn a_restart_exactly_one_window_later_still_counts() {
    let mut config = ShardConfig::default();
    config.restart.max_restarts = 1;
    config.restart.window = Duration::from_millis(1000);
    let mut h = Host::ready(&config);
    h.core.panicked(false);
    h.drain();
    assert!(h.restart(0));
    h.reload(0, GhostTable::new(ShardId(0), config.table.clone()).unwrap());
    h.core.panicked(false);
    h.drain();
    assert!(h.restart(1000));
    assert!(matches!(h.core.state(), State::Down { restarts: 2 }));
}

/// Verdicts apply in the incarnation that planned them, and only there: after
/// a restart the versions they carry name other states.
#[test]
fn verdicts_apply_in_their_own_incarnation_only() {
    use crate::sweep::{CheckedVerdict, LocalEdges, Verdict};
    let mut config = ShardConfig::default();
    config.table.grace = Duration::ZERO;
    let mut h = Host::ready(&config);
    h.insert("n", 1);
    let raise = |plan: &crate::sweep::SweepPage| -> Vec<CheckedVerdict> {
        let keep = Verdict::Keep { local_edges: Some(LocalEdges::unsequenced(3)) };
        plan.checks.iter().map(|c| CheckedVerdict::new(c, keep)).collect()
    };
    let (plan, _) = h.core.plan_sweep(16, 10).unwrap();
    assert_eq!(plan.page.checks.len(), 1);
    let (report, _) = h.core.apply_verdicts(plan.incarnation, &raise(&plan.page), 10).unwrap();
    assert_eq!((report.corrected, report.stale), (1, 0));
    let (old, _) = h.core.plan_sweep(16, 10_000).unwrap();
    assert_eq!(old.page.checks.len(), 1);
    h.core.panicked(false);
    h.drain();
    assert!(h.restart(20));
    let mut t = GhostTable::new(ShardId(0), config.table.clone()).unwrap();
    t.insert("n", ShardId(3), 1, Epoch(1), 0).unwrap();
    h.reload(20, t);
    let (report, _) = h.core.apply_verdicts(old.incarnation, &raise(&old.page), 10_000).unwrap();
    assert_eq!((report.corrected, report.stale), (0, 1), "planned before the restart");
    assert_eq!(h.core.stats(10_000).stale_incarnation_verdicts, 1);
}

/// What the host and the sweeper read of the core: its id, whether it
/// serves, its write backlog, and whether anything is left to write.
#[test]
fn the_core_reports_its_id_readiness_backlog_and_unwritten_changes() {
    let config = ShardConfig::default();
    assert_eq!(ShardCore::new(ShardId(5), &config, 7).shard(), ShardId(5));
    let mut loading = Host::new(&config);
    loading.core.start(0);
    assert!(!loading.core.is_ready(), "loading, not serving");
    let mut h = Host::ready(&config);
    h.insert("n", 1);
    assert!(!h.core.has_changes(), "all written");
    let (_, first) = h.batch(Some(1), &added("n")).unwrap();
    assert!(first.is_some() && h.commits() == 1, "the first batch's commit is in flight");
    assert_eq!(h.core.pending_acks(), 0, "in flight is not waiting");
    h.batch(Some(2), &added("n")).unwrap();
    h.batch(Some(3), &added("n")).unwrap();
    assert_eq!(h.core.pending_acks(), 2, "two wait for the next commit");
    assert!(h.core.has_changes());
    h.commit(Ok(()));
    h.commit(Ok(()));
    assert_eq!(h.core.pending_acks(), 0);
    assert!(!h.core.has_changes());
}
