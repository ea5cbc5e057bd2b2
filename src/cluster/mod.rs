//! A cluster on etcd (cargo feature `cluster`): verify over gRPC between
//! processes, and who owns which shard.
//!
//! | item | job |
//! |---|---|
//! | [`VerifyServer`] | the verify service a process serves, answering from the host's [`NodeDirectory`] |
//! | [`GrpcVerifier`] | the sweeper's [`Verifier`](crate::Verifier): routes each ghost to its target shard's owner, batching per owner |
//! | [`EtcdOwners`] | who owns which shard, from the owner keys in etcd, kept current by a watch; each process's verify address |
//! | [`ShardRoutes`], [`StaticRoutes`] | which address serves a shard |
//! | [`LocalEdgeCounts`] | the holding process's own edge counts, returned with `Keep`: they never cross the network |
//!
//! The wire format is proto/verify.proto: one call carries a batch of
//! (node, target shard, epoch) queries and gets one [`Location`] for each.

mod client;
mod directory;
mod owners;
mod proto;
mod routes;
mod service;

pub use client::{ClientStats, GrpcVerifier, GrpcVerifierConfig};
pub use directory::{LocalEdgeCounts, Location, NoLocalCounts, NodeDirectory};
pub use owners::{EtcdOwners, OwnersConfig};
pub use routes::{ShardRoutes, StaticRoutes};
#[cfg(feature = "testing")]
pub use service::ServerFault;
pub use service::{MAX_QUERIES_PER_CALL, ServerStats, VerifyServer};
