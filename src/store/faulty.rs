//! `FaultyStore`: wraps any `GhostStore` and injects failures, panics and delays, for fault tests.

use super::{GhostStore, ShardChanges};
use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::table::{GhostTable, TableMemory};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which store call a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOp {
    /// [`GhostStore::load`].
    Load,
    /// [`GhostStore::commit`].
    Commit,
    /// [`GhostStore::replace`].
    Replace,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with [`Error::Store`] and changes nothing.
    Fail,
    /// The call panics (the writer turns that into an error).
    Panic,
    /// The call waits this long, then proceeds.
    Delay(Duration),
    /// A commit or replace is applied, then reported as failed: the write is
    /// durable but its acknowledgement is an error (a lost reply).
    ApplyThenFail,
    /// A commit lands only its first `n` rows of each shard (removals, then
    /// upserts) and not the sequence number, then fails: a store that breaks
    /// the all-or-nothing contract, as a host's own storage might. The rows
    /// keep the sequence number they hold ([`StubRecord::seq`](crate::store::StubRecord::seq)).
    /// Other calls fail.
    LandPart(usize),
}

#[derive(Debug)]
struct Plan {
    next: VecDeque<(StoreOp, Fault)>,
    random: Option<(f64, fastrand::Rng)>,
}

/// A [`GhostStore`] that misbehaves on request: the next calls of a kind
/// ([`inject`](Self::inject)), or at random ([`set_random`](Self::set_random)).
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    plan: Mutex<Plan>,
    injected: AtomicU64,
}

impl<S: GhostStore> FaultyStore<S> {
    /// Wraps `inner`; no fault until one is asked for.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            plan: Mutex::new(Plan { next: VecDeque::new(), random: None }),
            injected: AtomicU64::new(0),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The next call of kind `op` suffers `fault` (queued faults are used in order).
    pub fn inject(&self, op: StoreOp, fault: Fault) {
        self.lock().next.push_back((op, fault));
    }

    /// Every call fails or panics with `probability` (0 turns it off), drawn from `seed`.
    pub fn set_random(&self, probability: f64, seed: u64) {
        self.lock().random = (probability > 0.0).then(|| (probability, fastrand::Rng::with_seed(seed)));
    }

    /// Forgets every queued and random fault.
    pub fn clear(&self) {
        let mut plan = self.lock();
        plan.next.clear();
        plan.random = None;
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, op: StoreOp) -> Option<Fault> {
        let mut plan = self.lock();
        let fault = match plan.next.iter().position(|(o, _)| *o == op) {
            Some(i) => plan.next.remove(i).map(|(_, f)| f),
            None => plan.random.as_mut().and_then(|(p, rng)| {
                (rng.f64() < *p).then(|| if rng.bool() { Fault::Fail } else { Fault::Panic })
            }),
        };
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }

    /// Runs `call` under the fault chosen for `op`.
    fn faulted<T>(&self, op: StoreOp, call: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.take(op) {
            None => call(),
            Some(Fault::Fail) => Err(Error::store(format!("injected failure of {op:?}"))),
            Some(Fault::Panic) => panic!("injected panic in {op:?}"),
            Some(Fault::Delay(d)) => {
                std::thread::sleep(d);
                call()
            }
            Some(Fault::ApplyThenFail) => {
                call()?;
                Err(Error::store(format!("injected lost reply of {op:?}")))
            }
            Some(Fault::LandPart(_)) => Err(Error::store(format!("injected failure of {op:?}"))),
        }
    }
}

impl<S: GhostStore> GhostStore for FaultyStore<S> {
    fn load(&self, shard: ShardId, config: &TableConfig) -> Result<GhostTable> {
        self.faulted(StoreOp::Load, || self.inner.load(shard, config))
    }

    fn load_reusing(&self, shard: ShardId, config: &TableConfig, memory: TableMemory) -> Result<GhostTable> {
        self.faulted(StoreOp::Load, || self.inner.load_reusing(shard, config, memory))
    }

    fn commit(&self, batch: &[ShardChanges]) -> Result<()> {
        let part = {
            // Only when it is the next commit fault queued.
            let mut plan = self.lock();
            match plan.next.iter().position(|(o, _)| *o == StoreOp::Commit) {
                Some(i) if matches!(plan.next[i].1, Fault::LandPart(_)) => {
                    plan.next.remove(i).map(|(_, f)| f)
                }
                _ => None,
            }
        };
        if let Some(Fault::LandPart(n)) = part {
            self.injected.fetch_add(1, Ordering::Relaxed);
            let torn: Vec<ShardChanges> = batch.iter().map(|sc| land_part(sc, n)).collect();
            self.inner.commit(&torn)?;
            return Err(Error::store("injected commit that landed in part"));
        }
        self.faulted(StoreOp::Commit, || self.inner.commit(batch))
    }

    fn replace(&self, table: &GhostTable) -> Result<()> {
        self.faulted(StoreOp::Replace, || self.inner.replace(table))
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn release_shards(&self, shards: &[ShardId]) -> Result<()> {
        self.inner.release_shards(shards)
    }

    fn claim(&self, shard: ShardId) -> Option<super::ClaimWatch> {
        self.inner.claim(shard)
    }
}

/// The first `n` rows of `sc` (removals first), without its sequence number.
fn land_part(sc: &ShardChanges, n: usize) -> ShardChanges {
    let c = &sc.changes;
    let removals: Vec<&str> = c.removals().take(n).collect();
    let upserts = c.upserts().take(n.saturating_sub(removals.len()));
    ShardChanges { shard: sc.shard, changes: crate::table::ChangeSet::from_parts(upserts, removals, None) }
}
