//! `EtcdConfig`: the settings of an `EtcdStore`, with their defaults and checks.

use crate::error::{Error, Result};
use std::time::Duration;

/// Settings of an [`EtcdStore`](super::EtcdStore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Prefix of every key. Default `"vshard-ghosts/"`.
    pub prefix: String,
    /// This process's name in the owner keys; unique per process. Default:
    /// `"{host}-{pid}-{random}"`.
    pub owner_id: String,
    /// Lease time-to-live in seconds: how long a crashed owner's shards stay
    /// taken. etcd raises values below its minimum (about 2 s with its default
    /// heartbeat). Default 10.
    pub lease_ttl_secs: u32,
    /// Bound on one etcd call. Default 5 s.
    pub op_timeout: Duration,
    /// Retries of a call that failed on the network, a timeout or a lost
    /// leader, before the store call fails. Default 8.
    pub retries: u32,
    /// Wait before the first retry, doubling. Default 50 ms.
    pub retry_delay: Duration,
    /// Longest wait between retries. Default 2 s.
    pub retry_delay_cap: Duration,
    /// How long taking a shard held by another live owner waits. Default 30 s.
    pub acquire_timeout: Duration,
    /// How often a waiting acquisition looks again. Default 250 ms.
    pub acquire_poll: Duration,
    /// Operations per transaction; etcd's `--max-txn-ops`. Default 128.
    pub max_txn_ops: usize,
    /// Bytes per transaction request; under etcd's `--max-request-bytes`
    /// (1.5 MiB by default). Default 1 MiB.
    pub max_txn_bytes: usize,
    /// A shard's log is folded into a new checkpoint once its bytes pass this
    /// percentage of the checkpoint's size (and `checkpoint_min_bytes`): the
    /// bound on what the log adds to the checkpoint in etcd, and on a load's
    /// replay. Lower: less space, more checkpoints. Default 50.
    pub checkpoint_log_percent: u32,
    /// A log this small is never folded, whatever the checkpoint's size, so
    /// that a small shard is not checkpointed at every commit. Bytes; default
    /// 64 KiB.
    pub checkpoint_min_bytes: u64,
    /// After a checkpoint, etcd's history is compacted at its revision once
    /// that is this many revisions past the store's last compaction, so that
    /// the log entries and checkpoints it deleted stop taking space. 0: never
    /// (then rely on etcd's `--auto-compaction-retention`). Compaction is
    /// cluster-wide: it ends the history of every key, as auto-compaction
    /// does. Default 1 000.
    pub compact_every_revisions: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let host = if host.is_empty() { "host".to_owned() } else { host };
        Self {
            prefix: "vshard-ghosts/".into(),
            owner_id: format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..)),
            lease_ttl_secs: 10,
            op_timeout: Duration::from_secs(5),
            retries: 8,
            retry_delay: Duration::from_millis(50),
            retry_delay_cap: Duration::from_secs(2),
            acquire_timeout: Duration::from_secs(30),
            acquire_poll: Duration::from_millis(250),
            max_txn_ops: 128,
            max_txn_bytes: 1 << 20,
            checkpoint_log_percent: 50,
            checkpoint_min_bytes: 64 << 10,
            compact_every_revisions: 1_000,
        }
    }
}

impl EtcdConfig {
    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidConfig(format!("etcd: {why}")));
        if self.prefix.is_empty() {
            return bad("the key prefix must not be empty");
        }
        if self.owner_id.is_empty() {
            return bad("the owner id must not be empty");
        }
        if self.lease_ttl_secs == 0 {
            return bad("lease_ttl_secs must be at least 1");
        }
        if self.op_timeout.is_zero() || self.acquire_poll.is_zero() {
            return bad("op_timeout and acquire_poll must be positive");
        }
        // A log entry takes two compares (its shard's claim, its key's absence).
        if self.max_txn_ops < 2 || self.max_txn_bytes < 4_096 {
            return bad("max_txn_ops ≥ 2 and max_txn_bytes ≥ 4096 are needed");
        }
        Ok(())
    }
}
