//! A small rebalancing simulation with the oracle check, on redb and in memory, so CI guards the main job.

#[path = "../examples/rebalance/model.rs"]
mod model;
#[path = "../examples/rebalance/sim.rs"]
mod sim;

use vshard_ghosts::StoreChoice;

fn small() -> sim::SimConfig {
    sim::SimConfig {
        shards: 8,
        nodes: 4_000,
        edges: 20_000,
        waves: 6,
        churn: 1_000,
        lost_decrements: 0.02,
        arbiters: 2,
        ..sim::SimConfig::default()
    }
}

fn assert_clean(report: &sim::SimReport) {
    assert!(report.divergences.is_empty(), "oracle divergences: {:#?}", report.divergences);
    assert!(report.replay_skipped, "a replayed batch was applied twice");
    assert!(report.moves > 0 && report.ghosts_inserted > 0 && report.miss_checks > 0);
    assert!(report.restarts >= u64::from(small().waves) - 1, "injected panics restarted shards");
}

#[test]
fn the_oracle_holds_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreChoice::Redb(dir.path().join("sim.redb"));
    let report = actix::System::new().block_on(sim::run(&small(), store, &|_, _, _| {})).unwrap();
    assert_clean(&report);
    assert!(report.lost_decrements > 0 && report.sweep.corrected > 0, "the sweeper repaired lost decrements");
}

#[test]
fn the_oracle_holds_with_the_documented_config_file() {
    let ghost = vshard_ghosts::GhostConfig::load("examples/rebalance/ghosts.toml").unwrap();
    // The file documents the simulation's own settings (shards come from its flags).
    let own = sim::sim_settings();
    assert_eq!((&ghost.runtime.shard, &ghost.sweeper), (&own.runtime.shard, &own.sweeper));
    let cfg = sim::SimConfig { ghost, seed: 11, ..small() };
    let report = actix::System::new().block_on(sim::run(&cfg, StoreChoice::Memory, &|_, _, _| {})).unwrap();
    assert_clean(&report);
}

#[test]
fn the_oracle_holds_in_memory_with_another_seed() {
    let cfg = sim::SimConfig { seed: 7, ..small() };
    let report = actix::System::new().block_on(sim::run(&cfg, StoreChoice::Memory, &|_, _, _| {})).unwrap();
    assert_clean(&report);
}
