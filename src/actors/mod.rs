//! The actors: one `GhostActor` per vShard and the `SweeperActor`.

pub mod ghost;

pub use ghost::GhostActor;
