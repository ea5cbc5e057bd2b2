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
//! | module | job |
//! |---|---|
//! | [`runtime`] | [`GhostRuntime`]: shards over arbiters, routing, metrics, graceful shutdown |
//! | [`actors`] | [`GhostActor`] (one per vShard, supervised), [`SweeperActor`] (own arbiter, rate-limited) |
//! | [`messages`] | what a [`GhostActor`] handles, and which send to use |
//! | [`writer`] | [`StoreWriter`]: the thread that does all blocking store I/O, group-committing |
//! | [`clock`] | [`Clock`] for the actors: [`TokioClock`]; `ManualClock` with the `testing` feature |
//! | [`metrics`] | names of every exported metric |
//! | [`table`] | [`GhostTable`]: one shard's stubs, a pure state machine (no I/O, no clock) |
//! | [`codec`] | snapshots and single stubs as MessagePack in a checksummed, versioned envelope |
//! | [`config`] | [`TableConfig`], [`ShardConfig`], [`SweeperConfig`] with documented defaults and `validate()` |
//! | [`config_file`] | [`GhostConfig`]: those settings from a TOML file, refused with an error naming the field |
//! | [`event`] | edge events and the outcomes of mutations |
//! | [`edge_events`] | [`EdgeEvents`]: a batch of edge events packed into two buffers |
//! | [`sweep`] | plan → verify → apply data: [`PlannedCheck`], [`Verdict`], reports |
//! | [`verify`] | the [`Verifier`] seam; [`DirectoryVerifier`] for single-process use and tests |
//! | [`sweep_report`] | the sweeper's [`PassReport`] and [`SweepTotals`] |
//! | [`store`] | [`GhostStore`] trait; [`MemoryStore`], the embedded default [`RedbStore`], `FaultyStore` for fault tests (feature `testing`); with the `etcd` feature, `EtcdStore` (state in etcd v3, per-shard ownership with fencing) |
//! | [`stub`] | [`StubRecord`] (persisted), [`StubRef`] (borrowed) and [`GhostInfo`] (live view) |
//! | [`error`] | the one [`Error`] enum and the [`Result`] alias |
//!
//! # Example
//!
//! ```
//! use vshard_ghosts::{codec, EdgeOutcome, GhostTable, TableConfig};
//!
//! let mut table = GhostTable::new(0, TableConfig::default())?;
//! // Node "user:42" moved to shard 7 at move epoch 1; two local edges point at it.
//! table.insert("user:42", 7, 2, 1, /* now_ms */ 1_000)?;
//! assert_eq!(table.resolve("user:42"), Some(7));
//!
//! table.edge_removed("user:42");
//! assert_eq!(table.edge_removed("user:42"), EdgeOutcome::Purged);
//! assert!(table.is_empty());
//!
//! let bytes = codec::encode_snapshot(&table)?;
//! let reloaded = codec::decode_snapshot(&bytes, 0, &TableConfig::default())?;
//! assert_eq!(reloaded.len(), 0);
//! # Ok::<(), vshard_ghosts::Error>(())
//! ```

pub mod actors;
pub mod clock;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod edge_events;
pub mod error;
pub mod event;
pub mod messages;
pub mod metrics;
pub mod runtime;
pub mod store;
pub mod stub;
pub mod sweep;
pub mod sweep_report;
pub mod table;
pub mod verify;
pub mod writer;

pub use actors::{GhostActor, SweeperActor};
#[cfg(feature = "testing")]
pub use clock::ManualClock;
pub use clock::{Clock, TokioClock};
pub use config::{Durability, RestartPolicy, ShardConfig, SweeperConfig, TableConfig};
pub use config_file::GhostConfig;
pub use edge_events::EdgeEvents;
pub use error::{DecodeError, Error, Result};
pub use event::{BatchOutcome, EdgeEvent, EdgeKind, EdgeOutcome, InsertOutcome, MoveOutcome};
pub use runtime::{GhostRuntime, GhostRuntimeBuilder, RuntimeConfig, StoreChoice};
pub use store::{ClaimWatch, GhostStore, MemoryStore, RedbStore, ShardChanges};
#[cfg(feature = "etcd")]
pub use store::{EtcdConfig, EtcdStore};
#[cfg(feature = "testing")]
pub use store::{Fault, FaultyStore, StoreOp};
pub use stub::{GhostInfo, PurgeReason, StubRecord, StubRef};
pub use sweep::{ApplyReport, CheckedVerdict, LocalEdges, PlannedCheck, SweepPage, Verdict};
pub use sweep_report::{PassReport, SweepCounts, SweepTotals};
pub use table::{ChangeSet, GhostTable, TableCounters, TableStats};
pub use verify::{DirectoryVerifier, Verifier, VerifyRequest};
pub use writer::{StoreWriter, WriterStats};

/// Compiles the README's code as a doctest, so the wiring example stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
