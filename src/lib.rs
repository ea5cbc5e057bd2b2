//! Ghost stubs for a sharded, actor-model graph database.
//!
//! When rebalancing moves a graph node from vShard A to vShard B, A keeps a
//! *ghost stub* `(node_id, target_shard, refcount)` so that traversals reaching
//! the node are forwarded to B. The refcount counts A's local edges to the node;
//! at zero the ghost goes. A rate-limited sweeper verifies ghosts against their
//! targets and purges stale ones by compare-and-set on a per-stub version.
//!
//! # Layout
//!
//! Dependencies point down this list, never up.
//!
//! **Pure core** (no I/O, no clock: time is an argument)
//!
//! | module | job |
//! |---|---|
//! | [`table`] | `GhostTable`: one shard's stubs as a state machine, with its changes and counters |
//! | [`sweep`] | plan → verify → apply as data, and the reports; its seam, [`Verifier`], and [`DirectoryVerifier`] are at the root |
//! | `event` | [`EdgeEvent`]s, the packed [`EdgeEvents`] batch, and the outcomes of mutations |
//! | `config` | [`TableConfig`], [`ShardConfig`], [`SweeperConfig`], [`RuntimeConfig`], and [`GhostConfig`] from TOML |
//! | `ids` | [`ShardId`] and [`Epoch`], so that arguments cannot be swapped |
//! | `error` | the one [`Error`] enum, [`Error::is_retryable`], and [`Result`] |
//!
//! **Persistence**
//!
//! | module | job |
//! |---|---|
//! | [`codec`] | snapshots and stubs as MessagePack in a checksummed, versioned envelope |
//! | [`store`] | the [`GhostStore`](store::GhostStore) seam; `MemoryStore`, the embedded default `RedbStore`, and with the `etcd` feature `EtcdStore` |
//!
//! **Cluster** (cargo feature `cluster`, on top of `etcd`)
//!
//! | module | job |
//! |---|---|
//! | `cluster` | verify over gRPC (`VerifyServer`, `GrpcVerifier`, the host's `NodeDirectory`), shard routes and owners |
//!
//! **Actors and runtime**
//!
//! | module | job |
//! |---|---|
//! | `shard` | one shard apart from any runtime: `ShardCore` (the table and every promise about it, as a state machine: requests, store answers and time in, effects out), the cell its actor and readers share, the registry of a runtime's shards |
//! | `runtime` | [`GhostRuntime`]: shards over arbiters, routing, operator calls, graceful shutdown; [`GhostReader`]: resolves from any thread without a message |
//! | `actors` | [`GhostActor`] (one per vShard, supervised, the driver of its shard's core and the only writer of its cell) and the sweeper (own arbiter, rate-limited) |
//! | [`messages`] | every actor message, grouped by actor; the host's ones are public |
//! | `writer` | the thread that does all blocking store I/O, group-committing |
//! | [`clock`] | the injected [`Clock`](clock::Clock) the shards read time from |
//! | [`metrics`] | the name of every exported metric |
//! | `testing` | fault injection and a manual clock (cargo feature `testing`, off by default) |
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use vshard_ghosts::messages::InsertGhost;
//! use vshard_ghosts::{DirectoryVerifier, EdgeEvents, Epoch, GhostRuntime, ShardId, StoreChoice, SweeperConfig};
//!
//! actix::System::new().block_on(async {
//!     let verifier = Arc::new(DirectoryVerifier::new());
//!     let rt = GhostRuntime::builder()
//!         .shards((0..4).map(ShardId))
//!         .store(StoreChoice::Memory)
//!         .sweeper(verifier.clone(), SweeperConfig::default())
//!         .start()?;
//!
//!     // Node "user:42" moved from shard 0 to shard 3 at move epoch 1; two of
//!     // shard 0's edges point at it. Answered once durable.
//!     verifier.record_move("user:42", ShardId(3), Epoch(1));
//!     let ghost = InsertGhost { node_id: "user:42".into(), target: ShardId(3), refcount: 2, epoch: Epoch(1) };
//!     rt.insert_ghost(ShardId(0), ghost).await?;
//!     assert_eq!(rt.resolve(ShardId(0), "user:42").await?, Some(ShardId(3)));
//!
//!     // Both edges go (batch 1 of shard 0's edge log): so does the ghost.
//!     let mut events = EdgeEvents::new();
//!     events.removed("user:42");
//!     events.removed("user:42");
//!     rt.edge_batch(ShardId(0), Some(1), events).await?;
//!     assert_eq!(rt.resolve(ShardId(0), "user:42").await?, None);
//!     rt.shutdown().await
//! })?;
//! # Ok::<(), vshard_ghosts::Error>(())
//! ```

mod actors;
pub mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod codec;
mod config;
mod error;
mod event;
mod ids;
pub mod messages;
pub mod metrics;
mod runtime;
mod shard;
pub mod store;
mod stub;
pub mod sweep;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

pub use actors::GhostActor;
pub use config::{
    Durability, GhostConfig, RestartPolicy, RuntimeConfig, ShardConfig, SweeperConfig, TableConfig,
};
pub use error::{Cause, DecodeError, Error, Result, RetryHint};
pub use event::{BatchOutcome, EdgeEvent, EdgeEvents, EdgeKind, EdgeOutcome, InsertOutcome, MoveOutcome};
pub use ids::{Epoch, ShardId};
pub use runtime::{FrontierEntry, GhostReader, GhostRuntime, GhostRuntimeBuilder, Health, StoreChoice};
pub use stub::GhostInfo;
pub use sweep::verdict::{LocalEdges, Verdict};
pub use sweep::verify::{DirectoryVerifier, Verifier, VerifyRequest};
pub use writer::WriterStats;

/// The boxed future [`Verifier`] and [`Clock`](clock::Clock) return, so that a
/// host implements them without a `futures` dependency of its own.
pub use futures::future::BoxFuture;

/// Compiles the README's code as a doctest, so the wiring example stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
