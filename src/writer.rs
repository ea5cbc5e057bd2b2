//! `StoreWriter`: the one thread that performs blocking store I/O, merging many shards' flushes.
//!
//! Shard actors never touch the store themselves: a commit or load is a job
//! sent here, answered through a oneshot channel. Jobs run in arrival order, so
//! a shard's reload after a restart sees every commit it sent before.

use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::ids::ShardId;
use crate::store::{ClaimWatch, GhostStore};
use crate::table::ShardChanges;
use crate::table::{GhostTable, TableMemory};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most shard flushes merged into one store transaction.
const MAX_MERGE: usize = 256;

enum Job {
    Commit(ShardChanges, oneshot::Sender<Result<()>>),
    Load(ShardId, TableConfig, TableMemory, oneshot::Sender<Result<Claimed>>),
    /// Ends the thread once the jobs queued before it are done.
    Close,
}

/// A loaded table and the watch of the claim it was loaded under.
type Claimed = (GhostTable, Option<ClaimWatch>);

/// Counters of the writer thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Store transactions committed.
    pub commits: u64,
    /// Shard flushes covered by those transactions (≥ `commits`).
    pub shard_flushes: u64,
    /// Commit attempts that failed (each is retried or reported).
    pub failures: u64,
    /// Loads served.
    pub loads: u64,
    /// Total time spent in store commits, in µs.
    pub commit_micros: u64,
}

#[derive(Debug, Default)]
struct Counters {
    /// Jobs sent and not yet taken up: the writer's queue, which every shard's
    /// sweep probe reports (one writer serves them all).
    queued: AtomicUsize,
    commits: AtomicU64,
    shard_flushes: AtomicU64,
    failures: AtomicU64,
    loads: AtomicU64,
    commit_micros: AtomicU64,
}

/// A handle to the writer thread; clone it freely. The thread ends once every
/// handle is dropped and its queue is empty, or at [`StoreWriter::shutdown`].
#[derive(Debug, Clone)]
pub(crate) struct StoreWriter {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl StoreWriter {
    /// Starts the writer thread over `store`. A failed commit is retried
    /// `retries` times, `retry_delay` apart, doubling, before it is reported.
    pub(crate) fn spawn(store: Arc<dyn GhostStore>, retries: u32, retry_delay: Duration) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let kind = store.kind();
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ghost-writer-{kind}"))
            .spawn(move || run(&*store, &rx, &c, retries, retry_delay))
            .map_err(|e| Error::store_from("cannot start writer thread", e))?;
        Ok(Self { tx, counters, thread: Arc::new(Mutex::new(Some(thread))) })
    }

    /// Durably applies one shard's changes; resolves once committed or failed.
    pub(crate) async fn commit(&self, changes: ShardChanges) -> Result<()> {
        let shard = changes.shard;
        let (tx, rx) = oneshot::channel();
        // Counted before it is sent: the writer may take it up at once.
        queued(&self.counters, 1);
        self.tx.send(Job::Commit(changes, tx)).map_err(|_| {
            queued(&self.counters, -1);
            Error::Unavailable { shard }
        })?;
        rx.await.map_err(|_| Error::Unavailable { shard })?
    }

    /// Loads a shard, after every commit queued before this call, with the
    /// watch of the store's claim it was loaded under
    /// ([`GhostStore::claim`]; `None`: the store has no ownership to lose).
    /// `memory`: a dropped table's allocations to build it in (see
    /// [`GhostStore::load_reusing`]).
    pub(crate) async fn load_claimed(
        &self,
        shard: ShardId,
        config: TableConfig,
        memory: TableMemory,
    ) -> Result<(GhostTable, Option<ClaimWatch>)> {
        let (tx, rx) = oneshot::channel();
        // Counted before it is sent: the writer may take it up at once.
        queued(&self.counters, 1);
        self.tx.send(Job::Load(shard, config, memory, tx)).map_err(|_| {
            queued(&self.counters, -1);
            Error::Unavailable { shard }
        })?;
        rx.await.map_err(|_| Error::Unavailable { shard })?
    }

    /// Commits and loads sent and not yet taken up by the writer thread.
    pub(crate) fn queue_len(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            commits: c.commits.load(Ordering::Relaxed),
            shard_flushes: c.shard_flushes.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            commit_micros: c.commit_micros.load(Ordering::Relaxed),
        }
    }

    /// Ends the writer: the jobs queued so far are done, then the store is
    /// released and closed, and the thread is joined. Jobs sent later, through
    /// any handle, fail as unavailable. Blocking: call it outside any arbiter.
    pub(crate) fn shutdown(self) {
        let Self { tx, thread, .. } = self;
        // Other handles (the shards') may outlive this call: the thread ends
        // on the job, not when the last sender goes.
        let _ = tx.send(Job::Close);
        drop(tx);
        let handle = thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = handle {
            let _ = t.join();
        }
    }
}

fn run(store: &dyn GhostStore, rx: &mpsc::Receiver<Job>, c: &Counters, retries: u32, delay: Duration) {
    let mut deferred = None;
    let mut served = std::collections::BTreeSet::new();
    loop {
        let job = match deferred.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => {
                    queued(c, -1);
                    job
                }
                Err(_) => break,
            },
        };
        match job {
            Job::Close => break,
            Job::Load(shard, config, memory, reply) => {
                served.insert(shard);
                c.loads.fetch_add(1, Ordering::Relaxed);
                // Asked right after the load, on this thread: no commit of
                // this shard runs in between.
                let loaded = guarded(|| {
                    let (mut table, claim) =
                        (store.load_reusing(shard, &config, memory)?, store.claim(shard));
                    if claim.is_none() {
                        // No claims: the shard never moves between processes,
                        // so its stored times are on this machine's clock.
                        table.trust_stored_times();
                    }
                    Ok((table, claim))
                });
                let _ = reply.send(loaded);
            }
            Job::Commit(first, reply) => {
                let mut batch = vec![first];
                let mut replies = vec![reply];
                // Group commit across shards: take what queued up meanwhile.
                while batch.len() < MAX_MERGE {
                    let next = rx.try_recv();
                    if next.is_ok() {
                        queued(c, -1);
                    }
                    match next {
                        Ok(Job::Commit(ch, r)) => {
                            batch.push(ch);
                            replies.push(r);
                        }
                        Ok(load) => {
                            deferred = Some(load);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_batch(store, batch, replies, c, retries, delay);
            }
        }
    }
    // Closed, or every handle is gone: nothing of this process writes these
    // shards again, so a store with ownership can hand them over at once.
    let served: Vec<ShardId> = served.into_iter().collect();
    if let Err(e) = guarded(|| store.release_shards(&served)) {
        tracing::warn!(error = %e.chain(), shards = served.len(), "releasing the shards failed; their ownership lapses");
    }
}

fn commit_batch(
    store: &dyn GhostStore,
    batch: Vec<ShardChanges>,
    replies: Vec<oneshot::Sender<Result<()>>>,
    c: &Counters,
    retries: u32,
    delay: Duration,
) {
    // Retried whole first: most failures (I/O, a lost leader) hit every shard alike.
    let result = commit_with_retries(store, &batch, c, retries, delay);
    if result.is_ok() || batch.len() == 1 {
        for r in replies {
            let _ = r.send(result.clone());
        }
        return;
    }
    // Still failing: one shard's bad changes must not fail the others, so each
    // gets one attempt of its own.
    for (ch, r) in batch.into_iter().zip(replies) {
        let _ = r.send(timed_commit(store, std::slice::from_ref(&ch), c));
    }
}

fn commit_with_retries(
    store: &dyn GhostStore,
    batch: &[ShardChanges],
    c: &Counters,
    retries: u32,
    mut delay: Duration,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        match timed_commit(store, batch, c) {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= retries => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e.chain(), attempt, "store commit failed; retrying");
                // This thread is the writer, never a shard's: waiting here
                // delays commits, not request handling.
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
        }
    }
}

fn timed_commit(store: &dyn GhostStore, batch: &[ShardChanges], c: &Counters) -> Result<()> {
    let start = Instant::now();
    let result = guarded(|| store.commit(batch));
    let took = start.elapsed();
    c.commit_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    metrics::histogram!(crate::metrics::FLUSH_SECONDS).record(took.as_secs_f64());
    match result {
        Ok(()) => {
            metrics::counter!(crate::metrics::STORE_COMMITS).increment(1);
            c.commits.fetch_add(1, Ordering::Relaxed);
            c.shard_flushes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            c.failures.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Moves the writer's queue depth, and its gauge ([`crate::metrics::WRITER_QUEUE`]).
fn queued(c: &Counters, by: isize) {
    if by >= 0 {
        c.queued.fetch_add(by.unsigned_abs(), Ordering::Relaxed);
    } else {
        c.queued.fetch_sub(by.unsigned_abs(), Ordering::Relaxed);
    }
    metrics::gauge!(crate::metrics::WRITER_QUEUE).increment(by as f64);
}

/// A panicking store must not take the writer thread (and every shard) down.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::store("store panicked")))
}
