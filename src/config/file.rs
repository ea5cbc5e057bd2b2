//! `GhostConfig`: a runtime's and its sweeper's settings read from a TOML file, checked before use.

use super::{RuntimeConfig, SweeperConfig};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything a server sets in its ghost config file: `[runtime]`
/// ([`RuntimeConfig`]) with `[runtime.shard]` ([`ShardConfig`](crate::ShardConfig)),
/// `[runtime.shard.durability]` ([`Durability`](crate::Durability)),
/// `[runtime.shard.table]` ([`TableConfig`](crate::TableConfig)) and
/// `[runtime.shard.restart]` ([`RestartPolicy`](crate::RestartPolicy)), and
/// `[sweeper]` ([`SweeperConfig`]). Every key is optional (its default
/// applies), unknown keys are refused, and the values are validated on load,
/// with errors that name the field.
///
/// Give the result to [`GhostRuntimeBuilder::config`](crate::GhostRuntimeBuilder::config)
/// and its sweeper settings to [`GhostRuntimeBuilder::sweeper`](crate::GhostRuntimeBuilder::sweeper).
///
/// # Every key, at its default
///
/// (A test keeps this reference and the types in step: a key added to a
/// section and missing here fails it.)
///
/// ```toml
#[doc = include_str!("reference.toml")]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GhostConfig {
    /// The runtime's settings.
    pub runtime: RuntimeConfig,
    /// The sweeper's settings.
    pub sweeper: SweeperConfig,
}

impl GhostConfig {
    /// Parses and validates a config file's text.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidConfig(format!("{}: {e}", path.display())))?;
        Self::from_toml_str(&text).map_err(|e| match e {
            Error::InvalidConfig(why) => Error::InvalidConfig(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    /// The file's text for these settings: every key, defaults included,
    /// except `fault_injection` unless it is set in a build with `testing`.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::InvalidConfig(e.to_string()))
    }

    /// Checks every section; an error names the section and the field.
    pub fn validate(&self) -> Result<()> {
        let within = |section: &'static str| {
            move |e: Error| match e {
                Error::InvalidConfig(why) => Error::InvalidConfig(format!("[{section}] {why}")),
                other => other,
            }
        };
        self.runtime.validate().map_err(within("runtime"))?;
        self.sweeper.validate().map_err(within("sweeper"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const REFERENCE: &str = include_str!("reference.toml");

    fn keys(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => keys(&path, t, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }

    #[test]
    fn the_reference_is_the_defaults_and_names_every_key() {
        assert_eq!(GhostConfig::from_toml_str(REFERENCE).unwrap(), GhostConfig::default());
        let mut written = BTreeSet::new();
        let defaults = GhostConfig::default().to_toml_string().unwrap();
        keys("", &toml::from_str(&defaults).unwrap(), &mut written);
        let mut documented = BTreeSet::new();
        keys("", &toml::from_str(REFERENCE).unwrap(), &mut documented);
        // The one default a file cannot state: the machine's core count.
        assert!(REFERENCE.contains("\n# arbiters = "));
        documented.insert("runtime.arbiters".into());
        let missing: Vec<_> = written.difference(&documented).collect();
        assert!(missing.is_empty(), "keys missing from reference.toml: {missing:?}");
        assert!(documented.contains("runtime.shard.fault_injection"));
    }

    #[test]
    fn a_written_file_leaves_out_an_unset_fault_injection() {
        let text = GhostConfig::default().to_toml_string().unwrap();
        assert!(!text.contains("fault_injection"), "{text}");
        let mut on = GhostConfig::default();
        on.runtime.shard.fault_injection = true;
        let text = on.to_toml_string().unwrap();
        assert_eq!(text.contains("fault_injection = true"), cfg!(feature = "testing"), "{text}");
    }

    #[test]
    fn sweeps_turn_off_in_a_file_and_stay_off_when_written() {
        let off = GhostConfig::from_toml_str("[sweeper]\npass_interval = \"off\"\n").unwrap();
        assert_eq!(off.sweeper.pass_interval, None);
        let text = off.to_toml_string().unwrap();
        assert!(text.contains("pass_interval = \"off\""), "{text}");
        assert_eq!(GhostConfig::from_toml_str(&text).unwrap(), off);
        let absent = GhostConfig::from_toml_str("[sweeper]\n").unwrap();
        assert_eq!(absent.sweeper.pass_interval, SweeperConfig::default().pass_interval);
    }

    #[test]
    fn a_zero_interval_is_refused_saying_how_to_turn_sweeps_off() {
        let Err(Error::InvalidConfig(why)) =
            GhostConfig::from_toml_str("[sweeper]\npass_interval = \"0s\"\n")
        else {
            panic!("a zero pass_interval must be refused");
        };
        assert!(why.contains("\"off\""), "{why}");
        assert_eq!(why.matches("sweeper").count(), 1, "{why}");
    }

    #[test]
    fn shards_read_as_a_range_or_a_list() {
        let ids = |r: std::ops::Range<u16>| r.map(crate::ids::ShardId).collect::<Vec<_>>();
        let c = GhostConfig::from_toml_str("[runtime]\nshards = \"0..16\"\n").unwrap();
        assert_eq!(c.runtime.shards, ids(0..16));
        let c = GhostConfig::from_toml_str("[runtime]\nshards = [3, 1]\n").unwrap();
        assert_eq!(c.runtime.shards, vec![crate::ids::ShardId(3), crate::ids::ShardId(1)]);
        let text = c.to_toml_string().unwrap();
        assert_eq!(GhostConfig::from_toml_str(&text).unwrap(), c);
        let Err(Error::InvalidConfig(why)) = GhostConfig::from_toml_str("[runtime]\nshards = \"5..5\"\n")
        else {
            panic!("an empty range must be refused");
        };
        assert!(why.contains("at least one shard"), "{why}");
        assert!(GhostConfig::from_toml_str("[runtime]\nshards = \"0-16\"\n").is_err());
    }
}
