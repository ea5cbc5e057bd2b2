//! Named numbers for the host API: a shard id and a move epoch cannot be
//! passed where the other, a refcount or a time is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A vShard's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u16);

/// The host's move epoch of a node: it rises with every move of that node, so
/// a later move wins over an earlier one that arrives late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl ShardId {
    /// The number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl Epoch {
    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
