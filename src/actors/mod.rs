//! The actors: one `GhostActor` per vShard and the `SweeperActor`.

pub(crate) mod ghost;
pub(crate) mod sweeper;

pub use ghost::GhostActor;
pub(crate) use sweeper::SweeperActor;

/// The runtime's shards, each with its cell and its actor's address.
pub(crate) type Shards = crate::shard::ShardRegistry<actix::Addr<GhostActor>>;
