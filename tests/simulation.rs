//! A small rebalancing simulation with the oracle check, on redb and in memory, so CI guards the main job.

#[path = "../examples/rebalance/model.rs"]
mod model;
#[path = "../examples/rebalance/plot.rs"]
mod plot;
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

/// The main job's flags in small, non-default combinations (few shards, one or two
/// waves, sparse or dense graphs): the oracle holds for each, and the story's
/// numbers add up.
#[test]
fn the_oracle_holds_for_other_flag_combinations() {
    // (seed, shards, nodes, edges, waves)
    for (seed, shards, nodes, edges, waves) in [
        (3, 2, 600, 2_000, 3),
        (99, 5, 1_500, 1_000, 1),
        (5, 16, 3_000, 30_000, 9),
        (1234, 3, 900, 9_000, 2),
        // Degenerate: more shards than nodes and no edge; no wave at all.
        (7, 64, 10, 0, 3),
        (8, 4, 500, 2_000, 0),
    ] {
        let cfg = sim::SimConfig { seed, shards, nodes, edges, waves, churn: 400, arbiters: 2, ..small() };
        let report =
            actix::System::new().block_on(sim::run(&cfg, StoreChoice::Memory, &|_, _, _| {})).unwrap();
        let at = format!("seed {seed}, {shards} shards, {nodes} nodes, {edges} edges, {waves} waves");
        assert!(report.divergences.is_empty(), "{at}: {:#?}", report.divergences);
        assert!(report.replay_skipped, "{at}: a replayed batch was applied twice");
        assert_eq!(report.waves.len(), waves as usize, "{at}: one sample a wave");
        assert_eq!(report.panics, u64::from(waves), "{at}");
        assert_eq!(report.reopened_shards, if waves > 0 { u64::from(shards) } else { 0 }, "{at}");
        assert!(
            report.restarts >= u64::from(waves).saturating_sub(1),
            "{at}: injected panics restarted shards"
        );
        assert!(report.waves.iter().all(|w| w.p50_us <= w.p99_us), "{at}");
        assert!(report.dark_verified_after <= report.dark_kept, "{at}");
    }
}

#[test]
fn the_plot_draws_a_run_as_svg_and_png() {
    let cfg = sim::SimConfig { shards: 4, nodes: 1_000, edges: 4_000, waves: 4, churn: 300, ..small() };
    let report = actix::System::new().block_on(sim::run(&cfg, StoreChoice::Memory, &|_, _, _| {})).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["run.svg", "run.png"] {
        let path = dir.path().join(name);
        let marks = plot::Marks { dark: sim::dark_waves(cfg.waves), reopen_after: Some(report.reopen_wave) };
        plot::draw(&path, &report.waves, &marks).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1_000, "{name} is drawn");
    }
    let svg = std::fs::read_to_string(dir.path().join("run.svg")).unwrap();
    assert!(svg.contains("inconclusive verifies") && svg.contains("ghosts held"));
    assert!(
        plot::draw(
            &dir.path().join("run.gif"),
            &report.waves,
            &plot::Marks { dark: 0..0, reopen_after: None }
        )
        .is_err()
    );
}

/// Every event the crate and the simulation log, by level, once the capture is on.
static LOGGED: std::sync::Mutex<Vec<(tracing::Level, String)>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        LOGGED.lock().unwrap().push((*event.metadata().level(), message.0));
    }
}

/// The injected faults (panics, lost decrements, dark shards, the stop and reopen,
/// the replay) are expected: they log below `error`, so an error in the main job's
/// log is a real one.
#[test]
fn injected_faults_log_no_error() {
    use tracing_subscriber::layer::SubscriberExt;
    // Global: the shards log from their arbiters' threads. Other tests of this file
    // may log into it too; they inject the same faults and must be as quiet.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture)).unwrap();
    let cfg = sim::SimConfig { seed: 21, ..small() };
    let report = actix::System::new().block_on(sim::run(&cfg, StoreChoice::Memory, &|_, _, _| {})).unwrap();
    assert_clean(&report);
    let logged = LOGGED.lock().unwrap();
    let errors: Vec<_> = logged.iter().filter(|(level, _)| *level == tracing::Level::ERROR).collect();
    assert!(errors.is_empty(), "injected faults logged as errors: {errors:#?}");
    let injected_panics =
        logged.iter().filter(|(l, m)| *l == tracing::Level::INFO && m.contains("injected panic"));
    assert!(injected_panics.count() >= cfg.waves as usize, "each injected panic is logged, at info");
}
