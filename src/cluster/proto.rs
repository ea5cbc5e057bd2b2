//! The code that build.rs generates from proto/verify.proto: messages, the
//! `GhostVerify` service's server trait and its client.

// Generated: neither documented nor linted like hand-written code.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("vshard_ghosts.verify.v1");
}

pub(crate) use generated::ghost_verify_client::GhostVerifyClient;
pub(crate) use generated::ghost_verify_server::{GhostVerify, GhostVerifyServer};
pub(crate) use generated::node_answer::Answer;
pub(crate) use generated::{
    Gone, Here, Moved, NodeAnswer, NodeQuery, Unknown, VerifyBatchRequest, VerifyBatchResponse,
};
