//! [`RuntimeConfig`]: the settings of a whole [`GhostRuntime`](crate::GhostRuntime).

use super::ShardConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use std::time::Duration;

/// Settings of a [`GhostRuntime`](crate::GhostRuntime).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The vShard ids this process serves. Default `0..64`. In a file, a
    /// list (`[0, 1, 5]`) or a range (`"0..16"`, end excluded; `"0..=15"`).
    #[serde(with = "super::forms::shard_list")]
    pub shards: Vec<ShardId>,
    /// Arbiter threads the shards are spread over (round-robin); 0 runs every
    /// shard and the sweeper on the arbiter that starts the runtime (one
    /// thread: for single-threaded hosts and deterministic tests). Default: the
    /// number of cores.
    pub arbiters: usize,
    /// Settings of every shard. Default [`ShardConfig::default`].
    pub shard: ShardConfig,
    /// Retries of a failed store commit before the shard restarts. Default 3.
    pub commit_retries: u32,
    /// Delay before the first commit retry, doubling. Default 10 ms.
    #[serde(with = "humantime_serde")]
    pub commit_retry_delay: Duration,
    /// How often shard statistics are published as metrics; zero (`"0s"` in
    /// a file) turns the poller off. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shards: (0..64).map(ShardId).collect(),
            arbiters: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shard: ShardConfig::default(),
            commit_retries: 3,
            commit_retry_delay: Duration::from_millis(10),
            metrics_interval: Duration::from_secs(5),
        }
    }
}

impl RuntimeConfig {
    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<()> {
        self.shard.validate()?;
        if self.shards.is_empty() {
            return Err(Error::InvalidConfig("at least one shard is needed".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.shards.iter().find(|s| !seen.insert(**s)) {
            return Err(Error::InvalidConfig(format!("shard {dup} listed twice")));
        }
        Ok(())
    }
}
