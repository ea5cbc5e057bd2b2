//! Holds and tombstones across a takeover by a process whose clock is ahead
//! of, or behind, the clock of the process that wrote them, by up to
//! `TableConfig::max_clock_skew` (here as long as the grace period): on the
//! survivor's clock, nothing a stored time protects lapses before that time
//! plus the skew, which is no earlier than it lapses in real time.
//!
//! Needs `--features etcd` and `VSHARD_GHOSTS_ETCD=http://host:port`.
#![cfg(feature = "etcd")]

#[allow(dead_code)] // each test file uses a different part of it
mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{fresh_prefix, takeover_store};
use vshard_ghosts::messages::{InsertGhost, Inspect};
use vshard_ghosts::testing::ManualClock;
use vshard_ghosts::*;

/// The writer's clock when it wrote everything.
const T0: u64 = 10_000_000;
const GRACE: u64 = 10_000;
const SKEW: u64 = GRACE;
const TTL: u64 = 60_000;

fn runtime(store: &Arc<store::EtcdStore>, clock: &ManualClock) -> GhostRuntime {
    let table = TableConfig {
        grace: Duration::from_millis(GRACE),
        max_clock_skew: Duration::from_millis(SKEW),
        tombstone_ttl: Duration::from_millis(TTL),
        ..TableConfig::default()
    };
    // A fixed rate: on a manual clock that stands still during a pass, a rate
    // cut by a slow probe would leave the bucket a token nothing refills.
    let sweeper = SweeperConfig { pass_interval: None, latency_target: None, ..SweeperConfig::default() };
    GhostRuntime::builder()
        .shards([ShardId(0)])
        .arbiters(1)
        .shard_config(ShardConfig { table, ..ShardConfig::default() })
        .clock(Arc::new(clock.clone()))
        .store(StoreChoice::Custom(store.clone()))
        .sweeper(Arc::new(DirectoryVerifier::new()), sweeper)
        .start()
        .unwrap()
}

fn insert(id: &str, refcount: u32, epoch: u64) -> InsertGhost {
    InsertGhost { node_id: id.into(), target: ShardId(1), refcount, epoch: Epoch(epoch) }
}

/// Whether shard 0 still holds `id`'s ghost after a full sweep pass at the
/// survivor's `now`, and whether it still refuses a stale insert of `home`.
async fn at(rt: &GhostRuntime, clock: &ManualClock, now: u64) -> (bool, bool) {
    clock.set(now);
    rt.run_sweep_pass().await.unwrap();
    let held = rt.request(ShardId(0), Inspect { node_id: "fresh".into() }).await.unwrap().is_some();
    let stale = rt.insert_ghost(ShardId(0), insert("home", 1, 1)).await.unwrap() == InsertOutcome::Stale;
    (held, stale)
}

/// The writer, at `T0`: a zero-count ghost in its grace period (an edge may
/// still be on its way), and a node that came home, tombstoned until
/// `T0 + TTL` so that a late insert from its first move cannot forward it away.
async fn write(prefix: &str) {
    let clock = ManualClock::new(T0);
    let rt = runtime(&takeover_store(prefix, "writer"), &clock);
    rt.insert_ghost(ShardId(0), insert("fresh", 0, 1)).await.unwrap();
    rt.insert_ghost(ShardId(0), insert("home", 1, 1)).await.unwrap();
    rt.reclaim(ShardId(0), "home", Epoch(2)).await.unwrap();
    rt.shutdown().await.unwrap();
}

/// A survivor whose clock reads `T0 + offset` when the writer's read `T0`.
async fn take_over(prefix: &str, owner: &str, offset: i64) {
    let start = T0.checked_add_signed(offset).unwrap();
    let clock = ManualClock::new(start);
    let rt = runtime(&takeover_store(prefix, owner), &clock);
    // Real time is the survivor's clock minus `offset`: the grace period ends
    // at real T0 + GRACE, the tombstone lapses at real T0 + TTL. Every check
    // before either, on the survivor's clock, must find them in place.
    let real = |t: u64| t.checked_add_signed(offset).unwrap();
    for now in [start, real(T0 + GRACE) - 1] {
        assert_eq!(at(&rt, &clock, now).await, (true, true), "offset {offset} ms, survivor's clock {now}");
    }
    let now = real(T0 + TTL) - 1;
    assert!(at(&rt, &clock, now).await.1, "offset {offset} ms: tombstone forgotten at {now}");
    // Bounded: the stored times are read as at most `SKEW` later, so with a
    // clock ahead by the whole skew they end exactly on time.
    if offset == SKEW as i64 {
        assert_eq!(at(&rt, &clock, T0 + TTL + SKEW).await, (false, false));
    }
    rt.shutdown().await.unwrap();
}

#[actix::test]
async fn a_survivor_with_a_clock_ahead_by_the_skew_keeps_holds_and_tombstones_until_they_lapse() {
    let prefix = fresh_prefix();
    write(&prefix).await;
    take_over(&prefix, "ahead", SKEW as i64).await;
}

#[actix::test]
async fn a_survivor_with_a_clock_behind_by_the_skew_keeps_holds_and_tombstones_until_they_lapse() {
    let prefix = fresh_prefix();
    write(&prefix).await;
    take_over(&prefix, "behind", -(SKEW as i64)).await;
}
