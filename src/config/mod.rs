//! Tunables of the table, codec, shard actors and sweeper, with documented defaults and `validate()`.

mod file;
pub(crate) mod forms;
mod runtime;

pub use file::GhostConfig;
pub use runtime::RuntimeConfig;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of one shard's [`GhostTable`](crate::table::GhostTable) and of decoding its bytes.
///
/// Every field has a unit and a default; call [`TableConfig::validate`] before use
/// (the constructors do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableConfig {
    /// Longest accepted node id, in bytes. Default 1024; at most 65535.
    pub max_node_id_len: usize,
    /// Most ghosts a shard holds, and a decoded snapshot may declare. Default
    /// 2^28; at most 2^32 - 1. An insert of a new ghost into a full table is
    /// refused with [`Error::TableFull`] and changes nothing, so whatever a
    /// table holds its own snapshot loads again under the same config. Also
    /// bounds the allocation a hostile length prefix could otherwise request.
    pub max_stubs: usize,
    /// A ghost younger than this is not offered to the sweeper. Default 60 s.
    /// Gives the host time to register edges right after a move.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How far the clock of a process that loads a shard may run ahead of the
    /// clock of the process that wrote it (a takeover by another machine, or
    /// a snapshot imported there). Default 60 s, as long as the default
    /// `grace`.
    ///
    /// Holds, grace periods and tombstones are stored as times on the writer's
    /// clock. Those read from the store are kept this much longer than they
    /// say, so that a loader whose clock is ahead by up to this cannot shorten
    /// them (a clock behind only lengthens them); the stored times are left
    /// as they were, so repeated reloads do not add up. Those this process
    /// sets itself after the load are not lengthened. Larger values only
    /// delay purges and the forgetting of tombstones after a load. Applies
    /// to stores whose shards move between processes (those with claims, such
    /// as `EtcdStore`); a single-process store (memory, redb) is loaded on the
    /// clock that wrote it, and reads its times as written. A snapshot brought
    /// from another machine with `GhostStore::import_snapshot` has the
    /// allowance written into its times as it is imported; copying a redb file
    /// to another machine is not covered (export and import instead).
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// First retry delay after an `Inconclusive` verdict. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Seed of the jitter applied to retry delays. Default 0x1e37_79b9_7f4a_7c15
    /// (below 2^63, so that a config file, whose integers are signed, can hold it).
    /// Fixed seeds make sweeps reproducible in tests; hosts may vary it per shard.
    pub jitter_seed: u64,
    /// Seed of the hash that places each ghost in its table. Default none: a
    /// random seed per table, so that no one who chooses node ids can choose
    /// ids that crowd one place in it. A table's storage order (that of its
    /// sweep, its snapshot and its changes) follows the hash: a fixed seed
    /// makes it the same from run to run, for a simulation that must replay.
    pub hash_seed: Option<u64>,
    /// Changed stubs at which an edge batch copies its changes for the store at
    /// once, while they are in cache, instead of at the next flush. Default 256;
    /// at least 1. A stub changed by several such batches within one flush is
    /// written once per batch, so this also bounds that repetition.
    pub stage_after_changes: usize,
    /// How long a reclaimed or purged ghost is remembered to refuse stale
    /// inserts at or below its epoch. Default 1 h: longer than a host retries
    /// an unacknowledged insert or replays its moves.
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    /// Most tombstones per shard. Default 100 000; 0 keeps none (and so
    /// refuses no stale insert).
    ///
    /// A live tombstone is never forgotten to make room, since the stale
    /// insert it refuses would get in (A→B→A again): with this many live, a
    /// reclaim that needs one is refused with [`Error::TombstonesFull`]
    /// (retryable once the oldest lapses, nothing changed), and a `Redirect`
    /// verdict home is backed off. So a shard takes at most `max_tombstones`
    /// reclaims per [`tombstone_ttl`](Self::tombstone_ttl): the defaults allow
    /// a sustained 27 a second per shard. Each costs about 230 bytes of memory
    /// and 25 of snapshot (`cargo bench --bench memory`): 100 000 are 23 MB.
    /// Lowering it below what a shard stores drops the oldest at its next load.
    pub max_tombstones: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_node_id_len: 1024,
            max_stubs: 1 << 28,
            grace: Duration::from_secs(60),
            max_clock_skew: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            jitter_seed: 0x1e37_79b9_7f4a_7c15,
            hash_seed: None,
            stage_after_changes: 256,
            tombstone_ttl: Duration::from_secs(3_600),
            max_tombstones: 100_000,
        }
    }
}

impl TableConfig {
    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<()> {
        if self.max_node_id_len == 0 || self.max_node_id_len > u16::MAX as usize {
            return Err(Error::InvalidConfig(format!(
                "max_node_id_len must be in 1..=65535, got {}",
                self.max_node_id_len
            )));
        }
        if self.max_stubs == 0 || self.max_stubs > u32::MAX as usize {
            return Err(Error::InvalidConfig(format!(
                "max_stubs must be in 1..=2^32-1, got {}",
                self.max_stubs
            )));
        }
        if self.stage_after_changes == 0 {
            return Err(Error::InvalidConfig("stage_after_changes must be at least 1".into()));
        }
        if self.backoff_base_ms() == 0 || self.backoff_base > self.backoff_cap {
            return Err(Error::InvalidConfig(format!(
                "backoff_base ({:?}) must be at least 1 ms and at most backoff_cap ({:?})",
                self.backoff_base, self.backoff_cap
            )));
        }
        Ok(())
    }

    // The pure table counts time in ms on the host's clock; these are its views.
    pub(crate) fn grace_ms(&self) -> u64 {
        millis(self.grace)
    }

    pub(crate) fn max_clock_skew_ms(&self) -> u64 {
        millis(self.max_clock_skew)
    }

    pub(crate) fn backoff_base_ms(&self) -> u64 {
        millis(self.backoff_base)
    }

    pub(crate) fn backoff_cap_ms(&self) -> u64 {
        millis(self.backoff_cap)
    }

    pub(crate) fn tombstone_ttl_ms(&self) -> u64 {
        millis(self.tombstone_ttl)
    }
}

/// Whole milliseconds, saturating: a duration too long for a `u64` of ms is
/// forever for every purpose here.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// When an acknowledged change is durable, traded against speed.
///
/// In a config file: `durability = { mode = "group_commit" }` or
/// `durability = { mode = "interval", interval = "50ms" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Durability {
    /// Inserts, edges added, retargets and reclaims are acknowledged only after
    /// the store committed them; writes that arrive while a commit is in flight
    /// share the next one. Loses nothing acknowledged. Sequenced edge batches
    /// are acknowledged once durable whatever they hold (unless
    /// [`ShardConfig::ack_removal_batches_at_once`]); single edge removals,
    /// unsequenced removal-only batches and sweep purges are acknowledged at
    /// once (losing one only leaves a ghost that the sweeper removes later).
    /// The default.
    GroupCommit,
    /// Everything is acknowledged at once and flushed every `interval`.
    /// A crash loses up to `interval` of acknowledged changes, including
    /// inserts: traversals may then miss moved nodes until the host re-inserts.
    Interval {
        /// Time between flushes.
        #[serde(with = "humantime_serde")]
        interval: Duration,
    },
}

/// How often a shard may restart before it stays down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; one more and the shard stays down. Default 5.
    pub max_restarts: u32,
    /// The intensity window. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Delay before the first reload after a restart; doubles per restart
    /// within the window. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest delay before a reload. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(5),
        }
    }
}

/// Settings of one shard's [`GhostActor`](crate::GhostActor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// The table's settings.
    pub table: TableConfig,
    /// Messages the mailbox holds before `send` waits and `try_send` fails. Default 1 024.
    pub mailbox_capacity: usize,
    /// When acknowledged changes are durable. Default [`Durability::GroupCommit`].
    pub durability: Durability,
    /// Restart limits. Default [`RestartPolicy::default`].
    pub restart: RestartPolicy,
    /// Whether the shard obeys `messages::InjectPanic` (cargo feature `testing`), for
    /// chaos tests and simulations. Default `false`: in production the message
    /// is refused, so no client can crash a shard on purpose. Written to a
    /// file only when set, and only by a build with `testing`.
    #[serde(skip_serializing_if = "omit_fault_injection")]
    pub fault_injection: bool,
    /// Under [`Durability::GroupCommit`], acknowledge a sequenced edge batch
    /// that only removes edges at once, before it is durable (as unsequenced
    /// removals are). Faster, but a flush failure after the acknowledgement
    /// undoes a batch the host will not send again: the shard keeps ghosts
    /// (never too few edges) until the sweeper repairs them, and readers may
    /// see a purged ghost come back. Default `false`: every sequenced batch is
    /// durable before its acknowledgement.
    pub ack_removal_batches_at_once: bool,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            table: TableConfig::default(),
            mailbox_capacity: 1_024,
            durability: Durability::GroupCommit,
            restart: RestartPolicy::default(),
            fault_injection: false,
            ack_removal_batches_at_once: false,
        }
    }
}

/// `fault_injection` means nothing without the cargo feature `testing`, and
/// its default needs no line: a written file leaves it out then.
fn omit_fault_injection(on: &bool) -> bool {
    !*on || !cfg!(feature = "testing")
}

impl ShardConfig {
    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<()> {
        self.table.validate()?;
        if self.mailbox_capacity == 0 {
            return Err(Error::InvalidConfig("mailbox_capacity must be at least 1".into()));
        }
        if let Durability::Interval { interval } = self.durability
            && interval < Duration::from_millis(1)
        {
            return Err(Error::InvalidConfig("durability interval must be at least 1 ms".into()));
        }
        let r = &self.restart;
        // The window is counted in whole ms on the shard's clock: less is none.
        if r.window < Duration::from_millis(1) || r.backoff_base > r.backoff_cap {
            return Err(Error::InvalidConfig(
                "restart window must be at least 1 ms and backoff base at most its cap".into(),
            ));
        }
        Ok(())
    }
}

/// Settings of the sweeper; every field has a unit and a default.
///
/// Which ghosts are due is the table's business, so these live in
/// [`TableConfig`]: the grace period before a new ghost is first verified
/// (`grace`), and the back-off after an `Inconclusive` verdict
/// (`backoff_base`, `backoff_cap`, jittered from `jitter_seed`).
///
/// In a config file, durations are written as `"2s"`, `"500ms"`, `"1m 30s"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweeperConfig {
    /// Token bucket rate: verifies started per second, over all shards. Default 100.
    pub verifies_per_second: u32,
    /// Token bucket size: verifies that may start at once after an idle spell.
    /// Default 10. Timers tick per millisecond, so a rate above 1 000/s needs a
    /// burst of at least `verifies_per_second / 1000` (twice that to be safe).
    pub burst: u32,
    /// Most verifies awaiting an answer at once. Default 16.
    pub max_in_flight: usize,
    /// Longest wait for one verify; a timeout counts as `Inconclusive`. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub verify_timeout: Duration,
    /// Most stubs examined per plan request, and so most verdicts per apply. Default 256.
    pub page_size: usize,
    /// Time between periodic passes; `None` (`"off"` in a file) runs passes
    /// only when asked (`RunPass`, `GhostRuntime::run_pass`). Default 60 s
    /// (a file that leaves the key out gets it).
    #[serde(with = "forms::duration_or_off")]
    pub pass_interval: Option<Duration>,
    /// A shard with more acknowledgements awaiting a commit than this is busy. Default 64.
    pub busy_pending_acks: usize,
    /// A shard whose plan request took longer than this (queueing in its
    /// mailbox) is busy. Default 20 ms.
    #[serde(with = "humantime_serde")]
    pub busy_latency: Duration,
    /// Wait before revisiting when every shard left in the pass was busy. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub busy_retry: Duration,
    /// Deferrals of one shard within a pass before it is left to the next pass. Default 10.
    pub max_deferrals: u32,
    /// The foreground latency the sweeper yields to: while a probe of a shard
    /// (a request's round trip through its mailbox) takes longer than this, or
    /// the writes waiting for a commit (the shard's acknowledgements plus every
    /// shard's commits queued at the store writer) pass `busy_pending_acks`,
    /// the effective rate halves
    /// (at most twice a second); below it, the rate grows back to
    /// `verifies_per_second` within 10 s. `None` (`"off"` in a file): a fixed
    /// rate. Default 10 ms.
    #[serde(with = "forms::duration_or_off")]
    pub latency_target: Option<Duration>,
    /// The least effective rate the foreground can push the sweeper down to,
    /// in verifies per second; at least 1 and at most `verifies_per_second`.
    /// Default 1.
    pub min_verifies_per_second: u32,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        Self {
            verifies_per_second: 100,
            burst: 10,
            max_in_flight: 16,
            verify_timeout: Duration::from_secs(2),
            page_size: 256,
            pass_interval: Some(Duration::from_secs(60)),
            busy_pending_acks: 64,
            busy_latency: Duration::from_millis(20),
            busy_retry: Duration::from_millis(100),
            max_deferrals: 10,
            latency_target: Some(Duration::from_millis(10)),
            min_verifies_per_second: 1,
        }
    }
}

impl SweeperConfig {
    /// The token bucket's rate and burst, refused if either is 0.
    pub(crate) fn rate(&self) -> Result<crate::sweep::Rate> {
        crate::sweep::Rate::new(self.verifies_per_second, self.burst)
    }

    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidConfig(what.into()));
        self.rate()?;
        if self.max_in_flight == 0 || self.page_size == 0 {
            return bad("max_in_flight and page_size must be at least 1");
        }
        if self.verify_timeout.is_zero() || self.busy_retry.is_zero() {
            return bad("verify_timeout and busy_retry must be non-zero");
        }
        if self.pass_interval.is_some_and(|d| d.is_zero()) {
            return bad(
                "pass_interval must be non-zero; to run passes only on request, write \"off\" in a file (None in code)",
            );
        }
        if self.latency_target.is_some_and(|d| d.is_zero()) {
            return bad("latency_target must be non-zero (or None)");
        }
        if self.min_verifies_per_second == 0 || self.min_verifies_per_second > self.verifies_per_second {
            return bad("min_verifies_per_second must be at least 1 and at most verifies_per_second");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        TableConfig::default().validate().unwrap();
    }

    #[test]
    fn shard_defaults_are_valid_and_checked() {
        ShardConfig::default().validate().unwrap();
        let bad = ShardConfig { mailbox_capacity: 0, ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = ShardConfig {
            durability: Durability::Interval { interval: Duration::ZERO },
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn sweeper_defaults_are_valid_and_checked() {
        SweeperConfig::default().validate().unwrap();
        let bad = [
            SweeperConfig { verifies_per_second: 0, ..Default::default() },
            SweeperConfig { burst: 0, ..Default::default() },
            SweeperConfig { max_in_flight: 0, ..Default::default() },
            SweeperConfig { page_size: 0, ..Default::default() },
            SweeperConfig { verify_timeout: Duration::ZERO, ..Default::default() },
            SweeperConfig { pass_interval: Some(Duration::ZERO), ..Default::default() },
            SweeperConfig { latency_target: Some(Duration::ZERO), ..Default::default() },
            SweeperConfig { min_verifies_per_second: 0, ..Default::default() },
            SweeperConfig { min_verifies_per_second: 101, ..Default::default() },
        ];
        for cfg in bad {
            assert!(matches!(cfg.validate(), Err(Error::InvalidConfig(_))), "{cfg:?}");
        }
    }

    #[test]
    fn out_of_range_fields_are_rejected() {
        let bad = [
            TableConfig { max_node_id_len: 0, ..Default::default() },
            TableConfig { max_node_id_len: 70_000, ..Default::default() },
            TableConfig { max_stubs: 0, ..Default::default() },
            TableConfig { backoff_base: Duration::ZERO, ..Default::default() },
            TableConfig {
                backoff_base: Duration::from_millis(10),
                backoff_cap: Duration::from_millis(5),
                ..Default::default()
            },
            TableConfig { stage_after_changes: 0, ..Default::default() },
        ];
        for cfg in bad {
            assert!(matches!(cfg.validate(), Err(Error::InvalidConfig(_))), "{cfg:?}");
        }
    }
}
