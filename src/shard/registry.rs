//! `ShardRegistry`: the one list of a runtime's shards, each with its cell
//! and its actor's address, shared by the runtime, its readers and its sweeper.

use super::cell::ShardCell;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use std::sync::Arc;

/// One shard: its id, its cell, and how to reach its actor (`A`: an address).
pub(crate) struct ShardEntry<A> {
    pub(crate) id: ShardId,
    pub(crate) cell: Arc<ShardCell>,
    pub(crate) addr: A,
}

/// Every shard of a runtime, sorted by id; clones share it (a reference count).
pub(crate) struct ShardRegistry<A> {
    entries: Arc<[ShardEntry<A>]>,
}

impl<A> Clone for ShardRegistry<A> {
    fn clone(&self) -> Self {
        Self { entries: self.entries.clone() }
    }
}

impl<A> ShardRegistry<A> {
    /// The registry of `entries`, sorted by id.
    pub(crate) fn new(mut entries: Vec<ShardEntry<A>>) -> Self {
        entries.sort_unstable_by_key(|e| e.id);
        Self { entries: entries.into() }
    }

    /// The shard `id`, or [`Error::UnknownShard`].
    pub(crate) fn get(&self, id: ShardId) -> Result<&ShardEntry<A>> {
        match self.entries.binary_search_by_key(&id, |e| e.id) {
            Ok(i) => Ok(&self.entries[i]),
            Err(_) => Err(Error::UnknownShard(id.get())),
        }
    }

    /// Every shard id, ascending.
    pub(crate) fn ids(&self) -> Vec<ShardId> {
        self.entries.iter().map(|e| e.id).collect()
    }
}

impl<A> std::ops::Deref for ShardRegistry<A> {
    type Target = [ShardEntry<A>];
    fn deref(&self) -> &[ShardEntry<A>] {
        &self.entries
    }
}
