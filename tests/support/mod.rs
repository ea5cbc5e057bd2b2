//! What the test files share: record and change builders, the store contract
//! (`contract`), the redb layout the hostile-file tests write, a runtime on
//! the calling arbiter, a fast restart policy, hand-made sweep steps, a caller
//! that gives up part-way, property-test case counts, and etcd and
//! child-process helpers. Each test file uses the parts it needs (`mod support;`).

pub(crate) mod contract;

#[allow(unused_imports)] // not every test file runs the contract
pub(crate) use contract::*;

use actix::Addr;
use proptest::test_runner::Config as ProptestConfig;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use vshard_ghosts::clock::Clock;
use vshard_ghosts::messages::{ApplyVerdicts, Inspect, PlanReply, PlanSweep};
use vshard_ghosts::store::{GhostStore, ShardChanges, StubRecord};
use vshard_ghosts::sweep::{ApplyReport, CheckedVerdict};
use vshard_ghosts::table::{ChangeSet, GhostTable};
use vshard_ghosts::testing::ManualClock;
use vshard_ghosts::{
    GhostActor, GhostRuntime, GhostRuntimeBuilder, RestartPolicy, RuntimeConfig, ShardConfig, ShardId,
    StoreChoice, SweeperConfig, TableConfig, Verdict,
};

pub(crate) fn cfg() -> TableConfig {
    TableConfig::default()
}

/// The host's insert of a ghost of `id` forwarding to `target`.
pub(crate) fn ghost(
    id: &str,
    target: u16,
    refcount: u32,
    epoch: u64,
) -> vshard_ghosts::messages::InsertGhost {
    vshard_ghosts::messages::InsertGhost {
        node_id: id.into(),
        target: vshard_ghosts::ShardId(target),
        refcount,
        epoch: vshard_ghosts::Epoch(epoch),
    }
}

pub(crate) fn rec(id: &str, target: u16, refcount: u32) -> StubRecord {
    StubRecord {
        node_id: id.to_owned(),
        target_shard: target,
        refcount,
        created_at_ms: 1_000 + u64::from(refcount),
        epoch: 3,
        hold_until_ms: 0,
        tombstone: false,
        seq: 0,
    }
}

pub(crate) fn changes(
    shard: u16,
    upserts: Vec<StubRecord>,
    removals: &[&str],
    seq: Option<u64>,
) -> ShardChanges {
    ShardChanges {
        shard: ShardId(shard),
        changes: ChangeSet::from_parts(upserts.iter().map(Into::into), removals.iter().copied(), seq),
    }
}

/// A table's stubs sorted by id, and its applied sequence number.
pub(crate) fn contents(t: &GhostTable) -> (Vec<StubRecord>, Option<u64>) {
    let mut v: Vec<_> = t.records().collect();
    v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    (v, t.applied_seq())
}

/// What a store loads for `shard`; a loaded table owes the store nothing.
pub(crate) fn loaded(s: &dyn GhostStore, shard: ShardId) -> (Vec<StubRecord>, Option<u64>) {
    let t = s.load(shard, &cfg()).unwrap();
    assert!(!t.has_changes(), "a loaded table owes the store nothing");
    contents(&t)
}

/// The redb file's tables, as the embedded store lays them out: for tests that
/// write hostile bytes under the store.
pub(crate) mod redb_tables {
    use redb::TableDefinition;

    pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("vshard_ghosts_meta");
    pub(crate) const GHOSTS: TableDefinition<(u16, &str), &[u8]> = TableDefinition::new("ghosts");
    pub(crate) const SHARD_META: TableDefinition<u16, (Option<u64>, u64)> =
        TableDefinition::new("shard_meta");
    pub(crate) const COMMIT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("commit_log");
}

/// `default` property-test cases unless `PROPTEST_CASES` is set (setting
/// `cases` directly would override the environment).
pub(crate) fn cases(default: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}

/// A runtime whose shards and sweeper all run on the calling arbiter (so
/// paused tokio time drives them), over `store`, on `clock`, with no metrics
/// poller; failed commits are retried `commit_retries` times 1 ms apart.
pub(crate) fn local_runtime(
    store: Arc<dyn GhostStore>,
    shards: impl IntoIterator<Item = ShardId>,
    shard: ShardConfig,
    clock: &ManualClock,
    commit_retries: u32,
) -> GhostRuntimeBuilder {
    local_runtime_on(store, shards, shard, Arc::new(clock.clone()), commit_retries)
}

/// [`local_runtime`] on any clock: the tables and the sweeper's bucket read it.
pub(crate) fn local_runtime_on(
    store: Arc<dyn GhostStore>,
    shards: impl IntoIterator<Item = ShardId>,
    shard: ShardConfig,
    clock: Arc<dyn Clock>,
    commit_retries: u32,
) -> GhostRuntimeBuilder {
    let config = RuntimeConfig {
        shards: shards.into_iter().collect(),
        arbiters: 0,
        shard,
        commit_retries,
        commit_retry_delay: Duration::from_millis(1),
        metrics_interval: Duration::ZERO,
    };
    GhostRuntimeBuilder::default().config(config).store(StoreChoice::Custom(store)).clock(clock)
}

/// Each shard's id and address, for tests that send to the actors themselves.
pub(crate) type Shards = Vec<(u16, Addr<GhostActor>)>;

/// Shards `ids` on the calling arbiter (no sweeper yet), on `clock`: the
/// runtime and its shards' addresses.
pub(crate) fn local_shards(
    ids: &[u16],
    store: Arc<dyn GhostStore>,
    shard: ShardConfig,
    clock: Arc<dyn Clock>,
) -> (Rc<GhostRuntime>, Shards) {
    let rt = local_runtime_on(store, ids.iter().copied().map(ShardId), shard, clock, 0).start().unwrap();
    let shards = ids.iter().map(|&id| (id, rt.addr(ShardId(id)).unwrap().clone())).collect();
    (Rc::new(rt), shards)
}

/// A sweeper fast enough that its bucket never matters, with passes only on
/// request, at a fixed rate: an adaptive one would replace the bucket when a
/// test makes a shard busy, and its tokens would wait on a manual clock.
pub(crate) fn fast_sweeper() -> SweeperConfig {
    SweeperConfig {
        verifies_per_second: 100_000,
        burst: 1_000,
        latency_target: None,
        pass_interval: None,
        busy_latency: Duration::from_secs(30),
        ..SweeperConfig::default()
    }
}

/// A restart policy that reloads at once (1 ms back-off), `max_restarts` times
/// within the default window.
pub(crate) fn fast_restarts(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(1),
        ..RestartPolicy::default()
    }
}

/// Plans one sweep page of up to 64 ghosts on `shard`, by hand.
pub(crate) async fn plan(rt: &GhostRuntime, shard: ShardId) -> PlanReply {
    rt.request(shard, PlanSweep::new(64)).await.unwrap()
}

/// Answers every check of `plan` with `verdict` and applies them.
pub(crate) async fn apply(rt: &GhostRuntime, plan: &PlanReply, verdict: Verdict) -> ApplyReport {
    let verdicts = plan.page.checks.iter().map(|c| CheckedVerdict::new(c, verdict)).collect();
    let msg = ApplyVerdicts::new(plan.incarnation, verdicts);
    rt.request(plan.shard, msg).await.unwrap()
}

/// `node`'s refcount on `shard`, if it is a ghost there.
pub(crate) async fn refcount(rt: &GhostRuntime, shard: ShardId, node: &str) -> Option<u32> {
    let g = rt.request(shard, Inspect { node_id: node.into() }).await.unwrap();
    g.map(|g| g.refcount)
}

/// Polls `fut` up to `polls` times, letting the runtime's other tasks run in
/// between, then drops it unfinished: a caller that timed out or went away
/// part-way through a call. Its answer, if it finished first.
pub(crate) async fn abandon_after<F: std::future::Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        if let std::task::Poll::Ready(out) = futures::poll!(fut.as_mut()) {
            return Some(out);
        }
        tokio::task::yield_now().await;
    }
    None
}

/// The etcd that the etcd tests use. They build only with `--features etcd`, which
/// asks for them, so without an etcd they fail instead of passing unrun.
pub(crate) fn etcd_endpoint() -> String {
    std::env::var("VSHARD_GHOSTS_ETCD")
        .ok()
        .filter(|e| !e.is_empty())
        .expect("set VSHARD_GHOSTS_ETCD=http://127.0.0.1:23790 (see README, \"etcd\")")
}

/// An etcd store for takeover tests, under `prefix`, owned by `owner`: a
/// short lease (3 s rather than etcd's 2 s minimum, so that a loaded machine
/// does not fence the victim early) so that a takeover is quick.
#[cfg(feature = "etcd")]
pub(crate) fn takeover_store(prefix: &str, owner: &str) -> Arc<vshard_ghosts::store::EtcdStore> {
    let config = vshard_ghosts::store::EtcdConfig {
        prefix: prefix.to_owned(),
        owner_id: owner.to_owned(),
        lease_ttl_secs: 3,
        acquire_timeout: Duration::from_secs(20),
        acquire_poll: Duration::from_millis(50),
        ..vshard_ghosts::store::EtcdConfig::default()
    };
    Arc::new(vshard_ghosts::store::EtcdStore::connect([etcd_endpoint()], config).unwrap())
}

/// A key prefix no other test or run shares.
pub(crate) fn fresh_prefix() -> String {
    format!("vshard-ghosts-test/{:016x}/", fastrand::u64(..))
}

/// Runs the ignored test `child` of this test binary in a new process with
/// `env_key=env_value`, expects it to die by `abort()`, and returns the
/// `(shard, node id)` pairs it printed as `ACK <shard> <id>` lines before dying.
pub(crate) fn acks_of_aborted_child(child: &str, env_key: &str, env_value: &str) -> Vec<(u16, String)> {
    use std::io::BufRead;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env_key, env_value)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must die by abort");
    out.stdout
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| {
            // libtest may print its own "test <child> ... " before the first line.
            let mut p = l.split("ACK ").nth(1)?.split(' ');
            Some((p.next()?.parse().ok()?, p.next()?.to_owned()))
        })
        .collect()
}
