//! The actors: one `GhostActor` per vShard and the `SweeperActor`.

pub(crate) mod ghost;
pub(crate) mod sweeper;

pub use ghost::GhostActor;
pub(crate) use sweeper::SweeperActor;
