//! One shard, apart from any runtime: its pure core (the table and every
//! promise made about it), the cell its actor and its readers share, and the
//! registry of a runtime's shards.
//!
//! | module | job |
//! |---|---|
//! | `core` | `ShardCore`: requests, store answers and time in; answers and effects out |
//! | `seq` | the host's sequence positions: awaiting acknowledgement, lost in a restart |
//! | `flush` | group commit: waiting requests, flush scheduling, commit outcomes, fencing |
//! | `restart` | the restart budget and back-off; start, load, panic, restart, revive |
//! | `effects` | what the core asks its host to do |
//! | `state` | where a shard is in its life |
//! | `cell` | the lock around the core, shared with the readers |
//! | `registry` | every shard of a runtime, with its cell and its actor's address |

mod cell;
mod core;
mod effects;
mod flush;
mod registry;
mod restart;
mod seq;
mod state;

pub(crate) use cell::{READ_CHUNK, ShardCell, downgrade, upgrade};
pub(crate) use core::{Ready, ShardCore};
pub(crate) use effects::{Effect, Restart, Token};
pub(crate) use flush::Answer;
pub(crate) use registry::{ShardEntry, ShardRegistry};
pub(crate) use state::State;
#[cfg(test)]
mod tests;
