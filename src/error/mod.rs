//! The crate's one error type, its `Result` alias, and the [`Cause`] behind a
//! store, encoding or load failure.

mod cause;
mod retry;

use crate::ids::ShardId;
pub use cause::Cause;
pub use retry::RetryHint;
use thiserror::Error;

/// Why a persisted byte string could not be decoded.
///
/// Each variant names a different failure so that an operator can tell a torn
/// write (truncated) from bit rot (checksum) from a foreign file (magic).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure it declares.
    #[error("truncated input: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the structure declares.
        needed: u64,
        /// Bytes actually present.
        available: u64,
    },
    /// The input does not start with the envelope magic nor a legacy map.
    #[error("bad magic bytes {found:02x?}")]
    BadMagic {
        /// The first bytes found (up to four).
        found: Vec<u8>,
    },
    /// The envelope names a format version this build cannot read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// The envelope holds a different kind of payload than asked for.
    #[error("wrong payload kind {found}, expected {expected}")]
    WrongKind {
        /// Kind byte expected.
        expected: u8,
        /// Kind byte found.
        found: u8,
    },
    /// The payload's checksum does not match the envelope's.
    #[error("checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch {
        /// Checksum recorded in the envelope.
        stored: u64,
        /// Checksum of the payload as read.
        computed: u64,
    },
    /// The payload is not the MessagePack structure expected.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A declared length or value exceeds a configured limit.
    #[error("limit exceeded: {what} is {value}, limit {limit}")]
    LimitExceeded {
        /// Which quantity.
        what: &'static str,
        /// The declared value.
        value: u64,
        /// The configured bound.
        limit: u64,
    },
}

/// Every failure the crate reports.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// Persisted bytes could not be decoded.
    #[error("decode: {0}")]
    Decode(DecodeError),
    /// Encoding failed; no bytes were produced.
    #[error("encode: {what}")]
    Encode {
        /// What could not be encoded.
        what: String,
        /// The encoder's error, if there was one.
        #[source]
        source: Option<Cause>,
    },
    /// A node id is empty or longer than the configured maximum.
    #[error("invalid node id (length {len}, maximum {max})")]
    InvalidNodeId {
        /// Length of the rejected id in bytes.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A ghost may not point at the shard that holds it.
    #[error("ghost on shard {shard} cannot target its own shard")]
    SelfTarget {
        /// The local shard.
        shard: ShardId,
    },
    /// The table's id arena would exceed its addressable size.
    #[error("table capacity exceeded: {0}")]
    CapacityExceeded(&'static str),
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The store failed; the operation may be retried.
    #[error("store: {what}")]
    Store {
        /// What the store was doing.
        what: String,
        /// The underlying failure (I/O, redb, etcd), if there was one.
        #[source]
        source: Option<Cause>,
    },
    /// The store refuses writes for lack of space: etcd raised its `NOSPACE`
    /// alarm (its backend reached `--quota-backend-bytes`). Nothing of the
    /// write was made durable; reads still work. Retrying does not help until
    /// the operator frees space (compact, defragment, disarm the alarm).
    #[error("store full: {what}")]
    StoreFull {
        /// What the store was doing.
        what: String,
        /// The store's refusal.
        #[source]
        source: Option<Cause>,
    },
    /// A file or catalog exists but is not a ghost store of this crate.
    #[error("not a ghost store: {0}")]
    NotAStore(String),
    /// The shard's stored state is unreadable; it fails closed rather than start
    /// empty, and its stored bytes are left untouched.
    #[error("shard {shard} failed closed")]
    ShardFailed {
        /// The shard.
        shard: ShardId,
        /// Why its state could not be loaded or kept durable.
        #[source]
        cause: Box<Error>,
    },
    /// The shard restarted more often than its restart policy allows and stays down.
    #[error("shard {shard} is down after {restarts} restarts")]
    ShardDown {
        /// The shard.
        shard: ShardId,
        /// Restarts within the policy's window.
        restarts: u32,
    },
    /// A handler panicked on this request; the shard restarts and reloads.
    #[error("shard {shard} panicked handling the request; restarting")]
    Panicked {
        /// The shard.
        shard: ShardId,
    },
    /// The shard dropped the request's answer: it restarted before the
    /// request was acknowledged (or its store writer stopped). Retry it.
    #[error("shard {shard} unavailable")]
    Unavailable {
        /// The shard.
        shard: ShardId,
    },
    /// The shard is loading its state (after a restart); retry shortly.
    #[error("shard {shard} is loading")]
    ShardLoading {
        /// The shard.
        shard: ShardId,
    },
    /// The shard's actor is gone for good (the runtime shut down, or it was
    /// stopped): nothing will answer on this address again.
    #[error("shard {shard}'s mailbox is closed")]
    MailboxClosed {
        /// The shard.
        shard: ShardId,
    },
    /// A verify could not reach the shard that holds the node (the sweeper
    /// counts it as `Inconclusive` and backs off).
    #[error("target shard {shard} unreachable")]
    TargetUnreachable {
        /// The target shard.
        shard: ShardId,
    },
    /// A cluster call failed (cargo feature `cluster`): a peer could not be
    /// reached, did not answer in time, or answered garbage; a verify that
    /// fails so counts as `Inconclusive`. Retryable.
    #[error("cluster: {what}")]
    Cluster {
        /// What was being done, with whom.
        what: String,
        /// The underlying failure (transport, status), if there was one.
        #[source]
        source: Option<Cause>,
    },
    /// No shard with this id runs here.
    #[error("unknown shard {0}")]
    UnknownShard(ShardId),
    /// This process does not own the shard in a shared catalog: its ownership
    /// lapsed or another process holds it. Nothing was written; retrying does
    /// not help until ownership is taken again, so the shard fails closed.
    #[error("shard {shard} is fenced: {cause}")]
    Fenced {
        /// The shard.
        shard: ShardId,
        /// Who holds it instead, or why ownership was lost.
        cause: String,
    },
    /// A batch arrived ahead of batches that a restart lost before they were
    /// acknowledged: applying it would make their retries look applied. Send the
    /// unacknowledged batches from `awaiting` on again, in order, then this one.
    #[error("shard {shard} awaits the retry of batch {awaiting} (applied {applied:?})")]
    SeqGap {
        /// The shard.
        shard: ShardId,
        /// The last batch the shard has applied.
        applied: Option<u64>,
        /// The lowest batch that a restart lost unacknowledged and the shard awaits.
        awaiting: u64,
    },
    /// An insert of a new ghost into a table that holds
    /// `TableConfig::max_stubs` of them already: refused, nothing changed (past
    /// the bound, the shard's own snapshot would not load again). Not
    /// retryable as it is: ghosts must go first, or the bound be raised.
    #[error("shard {shard} holds its most ghosts ({limit})")]
    TableFull {
        /// The shard.
        shard: ShardId,
        /// Its `max_stubs`.
        limit: u64,
    },
    /// A reclaim that needs a tombstone while `TableConfig::max_tombstones`
    /// live ones fill the shard: refused, nothing changed (forgetting a live
    /// tombstone would let the stale insert it refuses in). Retryable once the
    /// oldest lapses, in `lapses_in_ms` on the shard's clock.
    #[error("shard {shard} holds its most live tombstones ({limit}); the oldest lapses in {lapses_in_ms} ms")]
    TombstonesFull {
        /// The shard.
        shard: ShardId,
        /// Its `max_tombstones`.
        limit: u64,
        /// Until the oldest tombstone lapses, in ms.
        lapses_in_ms: u64,
    },
    /// The runtime was built without a store: name one with
    /// `GhostRuntimeBuilder::store` (a redb file, memory, or your own).
    #[error("no store chosen: call GhostRuntimeBuilder::store (StoreChoice::Redb(path), Memory or Custom)")]
    NoStore,
    /// No sweeper runs: none was started (the builder was given no verifier
    /// and `start_sweeper` was not called), or it was stopped.
    #[error("no sweeper runs")]
    NoSweeper,
    /// A sweeper runs (or is stopping) already: one at a time.
    #[error("a sweeper runs already")]
    SweeperRunning,
    /// The runtime was shut down: nothing is routed or started any more.
    #[error("the runtime is shut down")]
    Closed,
    /// `wait_until_swept` ran its most passes without two clean ones in a row:
    /// a shard stayed busy, kept failing (down, failed closed: revive it), or
    /// its ghosts kept changing under the sweep.
    #[error("not swept after {passes} passes")]
    NotSwept {
        /// Passes run.
        passes: u32,
    },
}

impl Error {
    /// True when the same call may succeed if made again as it is: the store
    /// failed transiently, the shard restarted (after a panic, the retry meets
    /// the reloaded table) or is loading, the actor was restarting, a verify's
    /// target was unreachable or a cluster peer failed (`Cluster`), a batch
    /// came ahead of retries the shard awaits (`SeqGap`: after those), a
    /// reclaim met a shard full of live tombstones (`TombstonesFull`: once the
    /// oldest lapses), or a wait for a sweep ran out of passes (`NotSwept`).
    /// False when something must change first: the input (`InvalidNodeId`,
    /// `SelfTarget`, `InvalidConfig`, `NoStore`, `UnknownShard`), the table's
    /// contents or bound (`TableFull`), the stored state or the operator's
    /// view of the shard (`Decode`, `NotAStore`, `ShardFailed`, `ShardDown`:
    /// see `GhostRuntime::revive_shard`), the store's space (`StoreFull`),
    /// ownership (`Fenced`), or the
    /// runtime's life (`MailboxClosed`, `NoSweeper`, `SweeperRunning`, `Closed`).
    ///
    /// Not retryable as it is still means resent later for a sequenced edge
    /// batch: once what must change has (the shard revived, the claim taken
    /// again), the shard awaits the refused batch and answers later ones
    /// `SeqGap` until it comes (see [`EdgeBatch`](crate::messages::EdgeBatch)).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Store { .. }
                | Self::Panicked { .. }
                | Self::Unavailable { .. }
                | Self::ShardLoading { .. }
                | Self::TargetUnreachable { .. }
                | Self::Cluster { .. }
                | Self::SeqGap { .. }
                | Self::TombstonesFull { .. }
                | Self::NotSwept { .. }
        )
    }
}

// By hand rather than `#[from]`, which would also make the decode error the
// `source()` and so print it twice in a chain: the message already holds it.
impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl Error {
    /// A store failure with no underlying error.
    pub fn store(what: impl Into<String>) -> Self {
        Self::Store { what: what.into(), source: None }
    }

    /// A store failure caused by `source`.
    pub fn store_from(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Store { what: what.into(), source: Some(Cause::new(source)) }
    }

    /// An encoding failure, with the encoder's error if there is one.
    pub(crate) fn encode(what: impl Into<String>, source: Option<Cause>) -> Self {
        Self::Encode { what: what.into(), source }
    }

    /// This error and every cause below it, joined by `": "`: for logs, which
    /// print one line.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_worth_a_retry() {
        let retry = [
            Error::store("timeout"),
            Error::Panicked { shard: ShardId(1) },
            Error::Unavailable { shard: ShardId(1) },
            Error::ShardLoading { shard: ShardId(1) },
            Error::TargetUnreachable { shard: ShardId(1) },
            Error::SeqGap { shard: ShardId(1), applied: Some(1), awaiting: 2 },
            Error::NotSwept { passes: 16 },
            Error::TombstonesFull { shard: ShardId(1), limit: 2, lapses_in_ms: 3 },
        ];
        assert!(retry.iter().all(Error::is_retryable));
        let change_first = [
            Error::Decode(DecodeError::Malformed("x".into())),
            Error::InvalidNodeId { len: 0, max: 8 },
            Error::SelfTarget { shard: ShardId(1) },
            Error::TableFull { shard: ShardId(1), limit: 2 },
            Error::InvalidConfig("x".into()),
            Error::ShardFailed { shard: ShardId(1), cause: Box::new(Error::InvalidConfig("x".into())) },
            Error::ShardDown { shard: ShardId(1), restarts: 6 },
            Error::UnknownShard(ShardId(1)),
            Error::MailboxClosed { shard: ShardId(1) },
            Error::Fenced { shard: ShardId(1), cause: "x".into() },
            Error::StoreFull { what: "etcd commit".into(), source: None },
            Error::NoSweeper,
            Error::SweeperRunning,
            Error::Closed,
        ];
        assert!(!change_first.iter().any(Error::is_retryable));
    }

    #[test]
    fn causes_chain_and_compare_by_message() {
        let io = std::io::Error::other("disk full");
        let e = Error::store_from("redb commit", io);
        assert_eq!(e.to_string(), "store: redb commit");
        assert_eq!(std::error::Error::source(&e).map(ToString::to_string).as_deref(), Some("disk full"));
        assert_eq!(e.chain(), "store: redb commit: disk full");
        assert_eq!(e, Error::store_from("redb commit", std::io::Error::other("disk full")));
        assert_ne!(e, Error::store("redb commit"));
        let failed = Error::ShardFailed { shard: ShardId(3), cause: Box::new(e) };
        assert_eq!(failed.chain(), "shard 3 failed closed: store: redb commit: disk full");
    }

    /// A shard typed `ShardId` prints as the bare number it printed as a `u16`.
    #[test]
    fn a_typed_shard_prints_its_bare_number() {
        let s = ShardId(7);
        let cases = [
            (Error::SelfTarget { shard: s }, "ghost on shard 7 cannot target its own shard"),
            (Error::ShardDown { shard: s, restarts: 6 }, "shard 7 is down after 6 restarts"),
            (Error::Panicked { shard: s }, "shard 7 panicked handling the request; restarting"),
            (Error::Unavailable { shard: s }, "shard 7 unavailable"),
            (Error::ShardLoading { shard: s }, "shard 7 is loading"),
            (Error::MailboxClosed { shard: s }, "shard 7's mailbox is closed"),
            (Error::TargetUnreachable { shard: s }, "target shard 7 unreachable"),
            (Error::UnknownShard(s), "unknown shard 7"),
            (Error::Fenced { shard: s, cause: "held by b".into() }, "shard 7 is fenced: held by b"),
            (
                Error::SeqGap { shard: s, applied: Some(1), awaiting: 2 },
                "shard 7 awaits the retry of batch 2 (applied Some(1))",
            ),
            (Error::TableFull { shard: s, limit: 2 }, "shard 7 holds its most ghosts (2)"),
            (
                Error::TombstonesFull { shard: s, limit: 2, lapses_in_ms: 3 },
                "shard 7 holds its most live tombstones (2); the oldest lapses in 3 ms",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
