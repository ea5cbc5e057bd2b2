//! The actors: one `GhostActor` per vShard and the `SweeperActor`.

pub mod ghost;
pub mod sweeper;

pub use ghost::GhostActor;
pub use sweeper::SweeperActor;
