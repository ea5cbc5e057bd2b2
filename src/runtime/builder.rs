//! The builder that starts a `GhostRuntime`, and where its shards keep their state.

use super::GhostRuntime;
use crate::actors::GhostActor;
use crate::clock::{Clock, TokioClock};
use crate::config::{RuntimeConfig, ShardConfig, SweeperConfig};
use crate::error::Result;
use crate::ids::ShardId;
use crate::shard::{ShardEntry, ShardRegistry};
use crate::store::{GhostStore, MemoryStore, RedbStore};
use crate::sweep::Verifier;
use crate::writer::StoreWriter;
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

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
    pub fn shards<S: Into<ShardId>>(mut self, shards: impl IntoIterator<Item = S>) -> Self {
        self.config.shards = shards.into_iter().map(Into::into).collect();
        self
    }

    /// The number of arbiter threads (0: the calling arbiter runs everything).
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

    /// Runs the sweeper over every shard from the start, verifying through
    /// `verifier` (see [`GhostRuntime::start_sweeper`]; a host that replays
    /// its edge logs first starts it after the replay instead). Without this
    /// call or that one, no sweeper runs.
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
        let writer = StoreWriter::spawn(store, config.commit_retries, config.commit_retry_delay)?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        let arbiters: Vec<Arbiter> = (0..config.arbiters).map(|_| Arbiter::new()).collect();
        let handle =
            |i: usize| arbiters.get(i % arbiters.len().max(1)).map_or_else(Arbiter::current, Arbiter::handle);
        let shard_config = Arc::new(config.shard.clone());
        let mut entries = Vec::with_capacity(config.shards.len());
        for (i, &id) in config.shards.iter().enumerate() {
            let actor = GhostActor::new(id.get(), shard_config.clone(), writer.clone(), clock.clone());
            let cell = actor.cell();
            entries.push(ShardEntry { id, cell, addr: actor.start_supervised_in(&handle(i)) });
        }
        let shards = ShardRegistry::new(entries);
        tracing::info!(shards = shards.len(), arbiters = arbiters.len(), "ghost runtime started");
        let closed = Arc::new(AtomicBool::new(false));
        let runtime = GhostRuntime {
            reader: super::GhostReader::new(shards.clone(), closed.clone()),
            shards,
            sweeper: Mutex::default(),
            clock,
            closing: Default::default(),
            closed,
            own_threads: config.arbiters > 0,
            arbiters: Mutex::new(arbiters),
            writer: Mutex::new(Some(writer)),
            extra: Mutex::new(Vec::new()),
        };
        if !config.metrics_interval.is_zero() {
            let every = config.metrics_interval;
            let shards = runtime.shards.clone();
            let poller = actix::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    super::export_metrics(&shards).await;
                }
            });
            runtime.on_shutdown(Box::new(move || poller.abort()));
        }
        if let Some((verifier, sweeper)) = self.sweeper {
            runtime.start_sweeper(verifier, sweeper)?;
        }
        Ok(runtime)
    }
}
