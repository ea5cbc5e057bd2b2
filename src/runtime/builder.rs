//! The builder that starts a `GhostRuntime`, and where its shards keep their state.

use super::GhostRuntime;
use crate::actors::GhostActor;
use crate::clock::{Clock, TokioClock};
use crate::config::{RuntimeConfig, ShardConfig, SweeperConfig};
use crate::error::{Error, Result};
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
///
/// The calls compose in any order: [`config`](Self::config) sets the base
/// settings, and [`shards`](Self::shards), [`arbiters`](Self::arbiters) and
/// [`shard_config`](Self::shard_config) override just the field they name,
/// whether they come before or after it. A store must be chosen
/// ([`store`](Self::store)): the builder creates no file nobody asked for.
#[derive(Default)]
pub struct GhostRuntimeBuilder {
    config: RuntimeConfig,
    shards: Option<Vec<ShardId>>,
    arbiters: Option<usize>,
    shard: Option<ShardConfig>,
    store: Option<StoreChoice>,
    clock: Option<Arc<dyn Clock>>,
    sweeper: Option<(Arc<dyn Verifier>, SweeperConfig)>,
}

impl GhostRuntimeBuilder {
    /// The base settings (say, [`GhostConfig::runtime`](crate::GhostConfig::runtime)
    /// from a file); a field set by another call of the builder, before or
    /// after this one, wins over it. A later `config` replaces an earlier one.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// The shards to serve, whatever [`config`](Self::config) says: a range
    /// of them is `(0..16).map(ShardId)`.
    pub fn shards(mut self, shards: impl IntoIterator<Item = ShardId>) -> Self {
        self.shards = Some(shards.into_iter().collect());
        self
    }

    /// The number of arbiter threads (0: the calling arbiter runs
    /// everything), whatever [`config`](Self::config) says.
    pub fn arbiters(mut self, n: usize) -> Self {
        self.arbiters = Some(n);
        self
    }

    /// Settings of every shard, whatever [`config`](Self::config) says.
    pub fn shard_config(mut self, shard: ShardConfig) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Where state lives; required ([`start`](Self::start) without it is
    /// [`Error::NoStore`]).
    pub fn store(mut self, store: StoreChoice) -> Self {
        self.store = Some(store);
        self
    }

    /// The settings `start` runs with: the base, with every field another
    /// call named put over it.
    fn settings(&self) -> RuntimeConfig {
        let mut config = self.config.clone();
        if let Some(shards) = &self.shards {
            config.shards = shards.clone();
        }
        if let Some(n) = self.arbiters {
            config.arbiters = n;
        }
        if let Some(shard) = &self.shard {
            config.shard = shard.clone();
        }
        config
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
        let config = self.settings();
        config.validate()?;
        let Some(store) = self.store else {
            return Err(Error::NoStore);
        };
        // Checked before anything starts, so a bad sweeper config leaks no thread or open file.
        if let Some((_, sweeper)) = &self.sweeper {
            sweeper.validate()?;
        }
        let store: Arc<dyn GhostStore> = match store {
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
            let actor = GhostActor::new(id, shard_config.clone(), writer.clone(), clock.clone());
            let cell = actor.cell();
            entries.push(ShardEntry { id, cell, addr: actor.start_supervised_in(&handle(i)) });
        }
        let shards = ShardRegistry::new(entries);
        tracing::info!(shards = shards.len(), arbiters = arbiters.len(), "ghost runtime started");
        let closed = Arc::new(AtomicBool::new(false));
        let sweeper = Arc::new(Mutex::default());
        let arbiters = Arc::new(Mutex::new(arbiters));
        let writer = Arc::new(Mutex::new(Some(writer)));
        let extra = Arc::new(Mutex::new(Vec::new()));
        let release = super::release::OnLastDrop {
            sweeper: sweeper.clone(),
            closed: closed.clone(),
            arbiters: arbiters.clone(),
            writer: writer.clone(),
            extra: extra.clone(),
        };
        let runtime = GhostRuntime {
            reader: super::GhostReader::new(shards.clone(), closed.clone()),
            shards,
            sweeper,
            clock,
            closing: Default::default(),
            closed,
            own_threads: config.arbiters > 0,
            arbiters,
            writer,
            extra,
            shutdown: Default::default(),
            _release: Arc::new(release),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: std::ops::Range<u16>) -> Vec<ShardId> {
        r.map(ShardId).collect()
    }

    #[test]
    fn named_fields_win_over_the_base_whatever_the_order() {
        let base =
            RuntimeConfig { shards: ids(0..64), arbiters: 3, commit_retries: 9, ..RuntimeConfig::default() };
        let before = GhostRuntimeBuilder::default()
            .shards((0..16).map(ShardId))
            .arbiters(0)
            .config(base.clone())
            .settings();
        let after = GhostRuntimeBuilder::default()
            .config(base.clone())
            .shards((0..16).map(ShardId))
            .arbiters(0)
            .settings();
        for s in [before, after] {
            assert_eq!(s.shards, ids(0..16));
            assert_eq!(s.arbiters, 0);
            assert_eq!(s.commit_retries, 9, "what no call named comes from the base");
        }
        let shard = ShardConfig { mailbox_capacity: 7, ..ShardConfig::default() };
        let s = GhostRuntimeBuilder::default().shard_config(shard.clone()).config(base.clone()).settings();
        assert_eq!(s.shard, shard);
        assert_eq!(GhostRuntimeBuilder::default().config(base.clone()).settings(), base);
    }

    #[test]
    fn no_store_is_refused_before_anything_starts() {
        let dir = std::env::current_dir().unwrap();
        let before: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        let err = GhostRuntimeBuilder::default().shards((0..2).map(ShardId)).start().map(|_| ());
        assert_eq!(err, Err(Error::NoStore));
        assert_eq!(err.unwrap_err().retry_hint(), crate::error::RetryHint::GiveUp);
        let after: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(before, after, "no file was created");
    }
}
