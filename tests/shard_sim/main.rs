//! A deterministic simulation of one shard's pure core (`ShardCore`, driven
//! through `testing::CoreDriver`) with the real table, a store model and a
//! host model, in one thread, checked after every step.
//!
//! The host does what the docs allow: it pipelines sequenced edge batches,
//! sends unsequenced events, inserts, retargets and reclaims; it sends again
//! what failed, in any order, and on `SeqGap` every unacknowledged batch in
//! order; it restarts itself (forgetting what is in flight, replaying
//! acknowledged batches) and the shard's process. Verdicts are planned,
//! answered from the host's truth with counts at its log position, and
//! applied at random moments. The store lands commits, fails them, loses
//! their reply, or (torn mode) lands part of their rows without the sequence
//! number; loads fail or find the shard owned elsewhere. Time jumps across
//! grace periods, holds and back-offs; the shard panics, is fenced, goes
//! down and is revived.
//!
//! After every step, against the host's own bookkeeping: a ghost whose node
//! has acknowledged edges is there, with at least that many counted and at
//! least the acknowledged move epoch; an acknowledged reclaim is not undone;
//! a sequenced batch that adds an edge (every one, in strict mode) is
//! acknowledged or answered `skipped` only once its effects are durable.
//!
//! `SIM_STEPS=N` (default 3 000 000, a million per mode) steps in runs of `SIM_RUN` (default
//! 2 000), seeds from `SIM_SEED` (default: random, printed on failure);
//! a failure prints its seed and its shrunk case. For hours:
//! `SIM_STEPS=5000000000 cargo test --release --test shard_sim -- --nocapture`.

mod host;
mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};
use world::{Action, Mode, World};

fn action(rng: &mut fastrand::Rng) -> Action {
    let pick = rng.usize(..1 << 16);
    match rng.u32(..100) {
        0..14 => {
            let n = rng.usize(1..4);
            Action::Batch((0..n).map(|_| (rng.u32(..6), rng.bool(), rng.usize(..8))).collect())
        }
        14..18 => Action::Unsequenced(rng.u32(..6), rng.bool(), pick),
        18..24 => Action::Move(rng.u32(..6), rng.u16(..6), rng.u8(..3) == 0),
        24..46 => Action::Deliver,
        46..47 => Action::DeliverPanics,
        47..58 => Action::Commit(match rng.u8(..20) {
            0..14 => 0,
            14..16 => 1,
            16..18 => 2,
            _ => 3 + rng.usize(..4),
        }),
        58..66 => Action::Load(match rng.u8(..20) {
            0..17 => 0,
            17..19 => 1,
            _ => 2,
        }),
        66..74 => Action::Tick([1, 5, 30, 120, 400][rng.usize(..5)]),
        74..76 => Action::Flush,
        76..80 => Action::Plan(rng.usize(1..8)),
        80..84 => Action::Answer(pick, rng.u8(..8) == 0),
        84..88 => Action::Apply(pick),
        88..89 => Action::Fence,
        89..91 => Action::Revive,
        91..97 => Action::Resend(pick),
        97..99 => Action::HostRestart(pick),
        _ => Action::ProcessRestart,
    }
}

/// Runs `actions`; the index and message of the first broken promise.
fn run(mode: Mode, actions: &[Action]) -> Result<(), (usize, String)> {
    let mut w = World::new(mode);
    for (i, a) in actions.iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| w.step(a))) {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => return Err((i, msg)),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                return Err((i, format!("panicked: {}", msg.unwrap_or_default())));
            }
        }
    }
    Ok(())
}

/// Drops actions one at a time while the case still fails, pass after pass
/// until a pass drops none.
fn shrink(mode: Mode, mut actions: Vec<Action>) -> Vec<Action> {
    if let Err((i, _)) = run(mode, &actions) {
        actions.truncate(i + 1);
    }
    loop {
        let before = actions.len();
        let mut i = actions.len();
        while i > 0 {
            i -= 1;
            let mut fewer = actions.clone();
            fewer.remove(i);
            if let Err((end, _)) = run(mode, &fewer) {
                fewer.truncate(end + 1);
                actions = fewer;
                i = i.min(actions.len());
            }
        }
        if actions.len() == before {
            return actions;
        }
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

/// Runs `steps` steps in runs of `run_len`, seeded from `seed`, in `mode`;
/// panics with the seed and the shrunk case on the first broken promise.
fn simulate(mode: Mode, seed: u64, steps: u64, run_len: usize) {
    let (mut done, mut r, mut broken) = (0, 0u64, 0u64);
    let started = std::time::Instant::now();
    // `SIM_COUNT=1`: count the runs that break the promise instead of stopping at the first.
    let count = env("SIM_COUNT").is_some_and(|c| c > 0);
    while done < steps {
        let run_seed = seed.wrapping_add(r.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut rng = fastrand::Rng::with_seed(run_seed);
        let actions: Vec<Action> = (0..run_len).map(|_| action(&mut rng)).collect();
        let out = run(mode, &actions);
        done += out.as_ref().map_or_else(|(i, _)| *i as u64 + 1, |()| run_len as u64);
        r += 1;
        if count {
            broken += u64::from(out.is_err());
            continue;
        }
        if let Err((i, msg)) = out {
            let small = shrink(mode, actions[..=i].to_vec());
            let mut w = World::new(mode);
            for a in &small {
                if w.step(a).is_err() {
                    break;
                }
            }
            panic!(
                "{msg}\n  SIM_SEED={seed} (run {r}, seed {run_seed}, step {i}), {mode:?}\n  shrunk to {} actions: {small:?}\n  trace:\n{}",
                small.len(),
                w.trace.join("\n")
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "shard_sim: {mode:?}: {done} steps in {secs:.1} s ({:.0} steps/s), {broken} of {r} runs broke the promise",
        done as f64 / secs
    );
}

fn seed() -> u64 {
    let seed = env("SIM_SEED").unwrap_or_else(|| fastrand::u64(..));
    eprintln!("shard_sim: SIM_SEED={seed}");
    seed
}

fn steps(share: u64) -> u64 {
    env("SIM_STEPS").unwrap_or(3_000_000) / share
}

fn run_len() -> usize {
    env("SIM_RUN").unwrap_or(2_000) as usize
}

const ATOMIC: Mode = Mode { torn_commits: false, unsequenced: false, strict_acks: false };

#[test]
fn the_core_keeps_its_promise_with_sequenced_batches() {
    simulate(ATOMIC, seed(), steps(3), run_len());
}

#[test]
fn the_core_keeps_its_promise_with_unsequenced_events_too() {
    simulate(Mode { unsequenced: true, ..ATOMIC }, seed(), steps(3), run_len());
}

#[test]
fn the_core_keeps_its_promise_over_a_store_that_tears_commits() {
    simulate(Mode { torn_commits: true, ..ATOMIC }, seed(), steps(3), run_len());
}

/// Shrunk cases the simulation found, each a path that once broke the promise.
mod found {
    use super::*;
    use Action::*;

    /// Insert n1 (two edges) and batch 1 adding a third, all acknowledged.
    fn settled() -> Vec<Action> {
        vec![Load(0), Move(1, 0, false), Deliver, Commit(0), Batch(vec![(1, true, 0)]), Deliver, Commit(0)]
    }

    fn holds(mode: Mode, actions: &[Action]) {
        if let Err((i, msg)) = run(mode, actions) {
            let mut w = World::new(mode);
            actions[..=i].iter().for_each(|a| drop(w.step(a)));
            panic!("{msg} at step {i}\n{}", w.trace.join("\n"));
        }
    }

    /// Batches 2 and 3 die with a failed flush; the host sends 2, then 3; 2's
    /// flush fails again and 3 is applied over it; 2 sent again must not be
    /// answered `skipped` (its edge was never counted).
    #[test]
    fn a_lost_batch_is_not_skipped_when_a_later_retry_overtakes_it() {
        let mut case = settled();
        case.extend([
            Batch(vec![(1, true, 0)]),
            Batch(vec![(1, true, 0)]),
            Deliver,
            Deliver,
            Commit(1),
            Tick(30),
            Load(0),
            Resend(0),
            Resend(0),
            Deliver,
            Commit(1),
            Tick(120),
            Load(0),
            Deliver,
            Commit(0),
            Resend(0),
            Deliver,
            Commit(0),
        ]);
        holds(ATOMIC, &case);
    }

    /// The same, with the host's retry of 3 before its retry of 2.
    #[test]
    fn a_lost_batch_is_not_skipped_when_its_successor_is_retried_first() {
        let mut case = settled();
        case.extend([
            Batch(vec![(1, true, 0)]),
            Batch(vec![(1, true, 0)]),
            Deliver,
            Deliver,
            Commit(1),
            Tick(30),
            Load(0),
            Resend(1),
            Resend(0),
            Deliver,
            Deliver,
            Commit(0),
            Resend(0),
            Deliver,
            Commit(0),
        ]);
        holds(ATOMIC, &case);
    }

    /// A batch refused outright (the shard was fenced) is overtaken by a
    /// later one pipelined behind it once the shard is revived.
    #[test]
    fn a_refused_batch_is_not_overtaken_by_one_pipelined_behind_it() {
        let mut case = settled();
        case.extend([
            Batch(vec![(1, true, 0)]),
            Batch(vec![(1, true, 0)]),
            Fence,
            Deliver,
            Revive,
            Tick(30),
            Load(0),
            Deliver,
            Commit(0),
            Resend(0),
            Deliver,
            Commit(0),
        ]);
        holds(ATOMIC, &case);
    }

    /// A torn commit lands n5's row without batch 1's sequence number; n5 is
    /// retargeted (its row written again) and the process restarts before the
    /// resend of batch 1: the rewritten row must still hold batch 1.
    #[test]
    fn a_row_landed_ahead_keeps_its_batches_when_written_again() {
        let case = vec![
            Move(5, 5, false),
            Move(5, 1, true),
            HostRestart(8451),
            ProcessRestart,
            ProcessRestart,
            Load(0),
            Move(5, 2, false),
            Deliver,
            Commit(0),
            Batch(vec![(1, true, 1), (5, false, 0)]),
            Move(5, 1, false),
            Deliver,
            Commit(4),
            Tick(400),
            Load(0),
            Deliver,
            ProcessRestart,
            Load(0),
            Deliver,
        ];
        holds(Mode { torn_commits: true, ..ATOMIC }, &case);
    }

    /// A torn commit lands n1's row (one edge removed) without batch 2's
    /// sequence number; the host's retry must not remove that edge again.
    #[test]
    fn a_torn_commit_does_not_make_a_retry_apply_twice() {
        for k in 1..3 {
            let mut case = settled();
            case.extend([
                Move(2, 0, false),
                Deliver,
                Commit(0),
                Batch(vec![(1, false, 0), (2, true, 0)]),
                Deliver,
                Commit(3 + k),
                Tick(30),
                Load(0),
                Resend(0),
                Deliver,
                Commit(0),
            ]);
            holds(Mode { torn_commits: true, ..ATOMIC }, &case);
        }
    }
}
