//! Settings from a TOML file: the documented example loads, defaults round-trip, bad files name the field.

use std::time::Duration;
use vshard_ghosts::{Durability, Error, GhostConfig, ShardId};

const EXAMPLE: &str = "examples/rebalance/ghosts.toml";

fn refused(text: &str) -> String {
    match GhostConfig::from_toml_str(text) {
        Err(Error::InvalidConfig(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_documented_example_loads() {
    let c = GhostConfig::load(EXAMPLE).unwrap();
    assert_eq!(c.runtime.shards, (0..8).map(ShardId).collect::<Vec<_>>());
    assert_eq!(c.runtime.shard.mailbox_capacity, 4_096);
    assert_eq!(c.runtime.shard.durability, Durability::GroupCommit);
    assert_eq!(c.runtime.shard.table.grace, std::time::Duration::ZERO);
    assert_eq!(c.sweeper.verifies_per_second, 50_000);
    assert_eq!(c.sweeper.pass_interval, Some(Duration::from_millis(500)));
    assert_eq!(c.sweeper.verify_timeout, Duration::from_secs(2));
}

#[test]
fn an_empty_file_is_the_defaults_and_settings_round_trip() {
    let mut defaults = GhostConfig::default();
    assert_eq!(GhostConfig::from_toml_str("").unwrap(), defaults);
    assert_eq!(GhostConfig::from_toml_str(&defaults.to_toml_string().unwrap()).unwrap(), defaults);
    defaults.runtime.shard.durability = Durability::Interval { interval: Duration::from_millis(50) };
    let text = defaults.to_toml_string().unwrap();
    assert_eq!(GhostConfig::from_toml_str(&text).unwrap(), defaults);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let why = refused("[sweeper]\nverifies_per_secnd = 5\n");
    assert!(why.contains("verifies_per_secnd"), "{why}");
    // Durations were `_ms` integers once: the old names are refused, not ignored.
    let why = refused("[runtime.shard.table]\ngrace_ms = 5\n");
    assert!(why.contains("grace_ms"), "{why}");
}

#[test]
fn out_of_range_values_are_refused_naming_the_field() {
    let why = refused("[runtime.shard.table]\nmax_node_id_len = 0\n");
    assert!(why.contains("[runtime]") && why.contains("max_node_id_len"), "{why}");
    let why = refused("[sweeper]\nburst = 0\n");
    assert!(why.contains("[sweeper]") && why.contains("burst"), "{why}");
    let why = refused("[runtime.shard.table]\ngrace = 5\n");
    assert!(why.contains("grace"), "{why}");
    let why = refused("[sweeper]\nverify_timeout = \"soon\"\n");
    assert!(why.contains("verify_timeout"), "{why}");
    let why = refused("[runtime]\nshards = [1, 1]\n");
    assert!(why.contains("shard 1 listed twice"), "{why}");
}

#[test]
fn a_missing_file_names_its_path() {
    let why = match GhostConfig::load("no/such/ghosts.toml") {
        Err(Error::InvalidConfig(why)) => why,
        other => panic!("{other:?}"),
    };
    assert!(why.contains("no/such/ghosts.toml"), "{why}");
}
