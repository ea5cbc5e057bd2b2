//! `RuntimeConfig` and the builder that starts a `GhostRuntime`.

use super::GhostRuntime;
use crate::actors::GhostActor;
use crate::actors::sweeper::SweeperActor;
use crate::clock::{Clock, TokioClock};
use crate::config::ShardConfig;
use crate::config::SweeperConfig;
use crate::error::{Error, Result};
use crate::store::{GhostStore, MemoryStore, RedbStore};
use crate::verify::Verifier;
use crate::writer::StoreWriter;
use actix::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where shard state lives.
#[derive(Clone)]
#[non_exhaustive]
pub enum StoreChoice {
    /// The embedded default: one redb file for all shards (created if missing).
    Redb(PathBuf),
    /// In process memory; lost at exit. For tests and throwaway deployments.
    Memory,
    /// Any [`GhostStore`], such as a networked catalog.
    Custom(Arc<dyn GhostStore>),
}

impl std::fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redb(path) => f.debug_tuple("Redb").field(path).finish(),
            Self::Memory => f.write_str("Memory"),
            Self::Custom(store) => f.debug_tuple("Custom").field(&store.kind()).finish(),
        }
    }
}

/// Settings of a [`GhostRuntime`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The vShard ids this process serves. Default `0..64`.
    pub shards: Vec<u16>,
    /// Arbiter threads the shards are spread over (round-robin). Default: the
    /// number of cores.
    pub arbiters: usize,
    /// Settings of every shard. Default [`ShardConfig::default`].
    pub shard: ShardConfig,
    /// Retries of a failed store commit before the shard restarts. Default 3.
    pub commit_retries: u32,
    /// Delay before the first commit retry, in ms, doubling. Default 10.
    pub commit_retry_delay_ms: u64,
    /// How often shard statistics are published as metrics, in ms; 0 turns
    /// the poller off. Default 5 000.
    pub metrics_interval_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shards: (0..64).collect(),
            arbiters: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shard: ShardConfig::default(),
            commit_retries: 3,
            commit_retry_delay_ms: 10,
            metrics_interval_ms: 5_000,
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
        if self.arbiters == 0 {
            return Err(Error::InvalidConfig("arbiters must be at least 1".into()));
        }
        Ok(())
    }
}

/// Builds a [`GhostRuntime`]; [`start`](Self::start) must run inside an actix `System`.
pub struct GhostRuntimeBuilder {
    config: RuntimeConfig,
    store: StoreChoice,
    clock: Option<Arc<dyn Clock>>,
    sweeper: Option<(Arc<dyn Verifier>, SweeperConfig)>,
}

impl Default for GhostRuntimeBuilder {
    fn default() -> Self {
        Self {
            config: RuntimeConfig::default(),
            store: StoreChoice::Redb("ghosts.redb".into()),
            clock: None,
            sweeper: None,
        }
    }
}

impl GhostRuntimeBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// The shards to serve.
    pub fn shards(mut self, shards: impl IntoIterator<Item = u16>) -> Self {
        self.config.shards = shards.into_iter().collect();
        self
    }

    /// The number of arbiter threads.
    pub fn arbiters(mut self, n: usize) -> Self {
        self.config.arbiters = n;
        self
    }

    /// Settings of every shard.
    pub fn shard_config(mut self, shard: ShardConfig) -> Self {
        self.config.shard = shard;
        self
    }

    /// Where state lives.
    pub fn store(mut self, store: StoreChoice) -> Self {
        self.store = store;
        self
    }

    /// The clock for ghost ages and sweeps. Default [`TokioClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs a [`SweeperActor`] over every shard on an arbiter of its own,
    /// verifying through `verifier`. Without this call no sweeper runs.
    pub fn sweeper(mut self, verifier: Arc<dyn Verifier>, config: SweeperConfig) -> Self {
        self.sweeper = Some((verifier, config));
        self
    }

    /// Opens the store, starts the writer, one supervised actor per shard and
    /// the sweeper if one was asked for.
    pub fn start(self) -> Result<GhostRuntime> {
        let config = self.config;
        config.validate()?;
        // Checked before anything starts, so a bad sweeper config leaks no thread or open file.
        if let Some((_, sweeper)) = &self.sweeper {
            sweeper.validate()?;
        }
        let store: Arc<dyn GhostStore> = match self.store {
            StoreChoice::Redb(path) => Arc::new(RedbStore::open(path)?),
            StoreChoice::Memory => Arc::new(MemoryStore::new()),
            StoreChoice::Custom(store) => store,
        };
        let writer = StoreWriter::spawn(
            store,
            config.commit_retries,
            Duration::from_millis(config.commit_retry_delay_ms),
        )?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        let arbiters: Vec<Arbiter> = (0..config.arbiters).map(|_| Arbiter::new()).collect();
        let shard_config = Arc::new(config.shard.clone());
        let mut shards = HashMap::with_capacity(config.shards.len());
        for (i, &shard) in config.shards.iter().enumerate() {
            let actor = GhostActor::new(shard, shard_config.clone(), writer.clone(), clock.clone());
            shards.insert(shard, actor.start_supervised_in(&arbiters[i % arbiters.len()].handle()));
        }
        let mut arbiters = arbiters;
        let sweeper = match self.sweeper {
            Some((verifier, sweeper_config)) => {
                let mut addrs: Vec<_> = shards.iter().map(|(&s, a)| (s, a.clone())).collect();
                addrs.sort_unstable_by_key(|(s, _)| *s);
                let actor = SweeperActor::new(addrs, verifier, sweeper_config)?;
                // Its own thread: sweeping never runs where a shard's requests do.
                let arbiter = Arbiter::new();
                let addr = actor.start_in(&arbiter.handle());
                arbiters.push(arbiter);
                Some(addr)
            }
            None => None,
        };
        tracing::info!(shards = shards.len(), arbiters = arbiters.len(), "ghost runtime started");
        let runtime = GhostRuntime {
            shards,
            sweeper,
            arbiters: Mutex::new(arbiters),
            writer: Mutex::new(Some(writer)),
            extra: Mutex::new(Vec::new()),
        };
        if config.metrics_interval_ms > 0 {
            let shards = runtime.shards.clone();
            let every = Duration::from_millis(config.metrics_interval_ms);
            let poller = actix::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    super::export_metrics(&shards).await;
                }
            });
            runtime.on_shutdown(Box::new(move || poller.abort()));
        }
        Ok(runtime)
    }
}
