//! What a table keeps across a reload, against the table itself: random operations
//! (holds, redirects, reclaims, tombstones at their bound and past their lifetime,
//! staged batches, inserts into a full table) flushed through `take_changes` into
//! memory and redb (whose commit log is both replayed and folded), with `--features
//! etcd` etcd too (`VSHARD_GHOSTS_ETCD`), a snapshot and an export/import; after every
//! flush each of them loads exactly the live table: ghosts, holds, tombstones,
//! sequence number.

use proptest::prelude::*;
use std::time::Duration;
use vshard_ghosts::*;
use vshard_ghosts::{store::*, sweep::*, table::*};

#[cfg(feature = "etcd")]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

const SHARD: ShardId = ShardId(0);

#[derive(Debug, Clone)]
enum Op {
    Insert { id: u8, refcount: u32, epoch: u64 },
    Edges { seq: bool, events: Vec<(u8, bool)> },
    Reclaim { id: u8, epoch: u64 },
    Plan,
    Verdicts { count: u32, redirect: Option<u64> },
    Tick(u64),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..12, 0u32..3, 0u64..6).prop_map(|(id, refcount, epoch)| Op::Insert { id, refcount, epoch }),
        3 => (any::<bool>(), prop::collection::vec((0u8..12, any::<bool>()), 0..5))
            .prop_map(|(seq, events)| Op::Edges { seq, events }),
        2 => (0u8..12, 0u64..8).prop_map(|(id, epoch)| Op::Reclaim { id, epoch }),
        2 => Just(Op::Plan),
        2 => (0u32..3, proptest::option::of(0u64..8)).prop_map(|(count, redirect)| Op::Verdicts { count, redirect }),
        2 => (0u64..400).prop_map(Op::Tick),
        2 => Just(Op::Flush),
    ]
}

/// Small bounds, so that cases reach them: `max_stubs` ghosts (1 to 13 over
/// 12 ids) and two tombstones.
fn config(max_stubs: usize) -> TableConfig {
    TableConfig {
        max_stubs,
        grace: Duration::from_millis(50),
        stage_after_changes: 1,
        tombstone_ttl: Duration::from_millis(300),
        max_tombstones: 2,
        // A fixed storage order: a failing case replays the same way.
        hash_seed: Some(max_stubs as u64),
        ..TableConfig::default()
    }
}

/// A ghost as its live view shows it: id, target, refcount, created, epoch, and a
/// zero count's hold (a back-off is not persisted, so it is left out).
type Ghost = (String, u16, u32, u64, u64, u64);

/// Ghosts sorted by id, each id's tombstone epoch, and the sequence number.
type State = (Vec<Ghost>, Vec<(String, Option<Epoch>)>, Option<u64>);

fn state(t: &GhostTable) -> State {
    let mut ghosts: Vec<Ghost> = t
        .iter()
        .map(|(id, g)| {
            let hold = if g.refcount == 0 { g.not_before_ms } else { 0 };
            (id.to_owned(), g.target_shard.get(), g.refcount, g.created_at_ms, g.epoch.get(), hold)
        })
        .collect();
    ghosts.sort();
    let tombs = (0..12).map(|i| format!("n{i}")).map(|id| (id.clone(), t.tombstone_epoch(&id))).collect();
    (ghosts, tombs, t.applied_seq())
}

fn run(max_stubs: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let config = || config(max_stubs);
    let dir = tempfile::tempdir().unwrap();
    let memory = MemoryStore::new();
    let redb = RedbStore::open(dir.path().join("p.redb")).unwrap().with_checkpoint_bytes(600);
    #[cfg(feature = "etcd")]
    let etcd = {
        let c = EtcdConfig {
            prefix: support::fresh_prefix(),
            owner_id: "model".into(),
            lease_ttl_secs: 5,
            ..EtcdConfig::default()
        };
        EtcdStore::connect([support::etcd_endpoint()], c).unwrap()
    };
    #[cfg(feature = "etcd")]
    let stores: [(&str, &dyn GhostStore); 3] = [("memory", &memory), ("redb", &redb), ("etcd", &etcd)];
    #[cfg(not(feature = "etcd"))]
    let stores: [(&str, &dyn GhostStore); 2] = [("memory", &memory), ("redb", &redb)];
    let mut t = GhostTable::new(SHARD, config()).unwrap();
    let (mut now, mut seq, mut page) = (1_000u64, 0u64, Vec::new());
    for op in ops {
        match op {
            Op::Insert { id, refcount, epoch } => {
                let before = (state(&t), t.has_changes());
                if t.insert(&format!("n{id}"), ShardId(1), refcount, Epoch(epoch), now).is_err() {
                    prop_assert_eq!(t.len(), max_stubs, "only a full table refuses an insert");
                    prop_assert_eq!((state(&t), t.has_changes()), before, "a refused insert changes nothing");
                }
                prop_assert!(t.len() <= max_stubs, "{} ghosts past max_stubs {}", t.len(), max_stubs);
            }
            Op::Edges { seq: numbered, events } => {
                let events: Vec<EdgeEvent> = events
                    .iter()
                    .map(|&(i, add)| {
                        if add {
                            EdgeEvent::added(format!("n{i}"))
                        } else {
                            EdgeEvent::removed(format!("n{i}"))
                        }
                    })
                    .collect();
                seq += 1;
                t.apply_batch(numbered.then_some(seq), &events.into());
            }
            Op::Reclaim { id, epoch } => drop(t.reclaim(&format!("n{id}"), Epoch(epoch), now)),
            Op::Plan => page = t.plan_sweep(now, 8).checks,
            Op::Verdicts { count, redirect } => {
                let verdict = match redirect {
                    Some(epoch) => {
                        Verdict::Redirect { shard: ShardId((epoch % 3) as u16), epoch: Epoch(epoch) }
                    }
                    None => {
                        Verdict::Keep { local_edges: Some(LocalEdges { count, at_seq: t.applied_seq() }) }
                    }
                };
                let vs: Vec<_> = page.iter().map(|c| CheckedVerdict::new(c, verdict)).collect();
                t.apply_verdicts(&vs, now);
            }
            Op::Tick(ms) => now += ms,
            Op::Flush => {
                let changes = [ShardChanges { shard: SHARD, changes: t.take_changes() }];
                for (_, store) in &stores {
                    store.commit(&changes).unwrap();
                }
                let want = state(&t);
                for &(name, store) in &stores {
                    let loaded = store.load(SHARD, &config()).unwrap();
                    prop_assert_eq!(&state(&loaded), &want, "{} loads the live table", name);
                }
                let snapshot = codec::encode_snapshot(&t).unwrap();
                let back = codec::decode_snapshot(&snapshot, SHARD, &config()).unwrap();
                prop_assert_eq!(&state(&back), &want, "a snapshot round trip");
                let imported = MemoryStore::new();
                imported
                    .import_snapshot(SHARD, &redb.export_snapshot(SHARD, &config()).unwrap(), &config())
                    .unwrap();
                // An import stores the snapshot's times `max_clock_skew` later:
                // they were on the exporter's clock, which may be behind.
                let skew = config().max_clock_skew.as_millis() as u64;
                let mut shifted = want.clone();
                for g in &mut shifted.0 {
                    g.3 += skew;
                    if g.5 != 0 {
                        g.5 += skew;
                    }
                }
                prop_assert_eq!(
                    &state(&imported.load(SHARD, &config()).unwrap()),
                    &shifted,
                    "export, then import"
                );
            }
        }
    }
    #[cfg(feature = "etcd")]
    etcd.release_all().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if std::env::var_os("PROPTEST_CASES").is_some() { ProptestConfig::default().cases } else { 128 }, ..ProptestConfig::default() })]

    #[test]
    fn every_store_loads_the_live_table(max_stubs in 1usize..14, ops in prop::collection::vec(op(), 1..80)) {
        run(max_stubs, ops)?;
    }
}
