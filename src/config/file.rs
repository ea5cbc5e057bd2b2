//! `GhostConfig`: a runtime's and its sweeper's settings read from a TOML file, checked before use.

use super::{RuntimeConfig, SweeperConfig};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything a server sets in its ghost config file: `[runtime]` (with
/// `[runtime.shard]`, `[runtime.shard.table]`, `[runtime.shard.restart]`) and
/// `[sweeper]`. Every key is optional (its default applies), unknown keys are
/// refused, and the values are validated on load, with errors that name the
/// field. `examples/rebalance/ghosts.toml` documents every key.
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

    /// The file's text for these settings (every key, defaults included).
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
