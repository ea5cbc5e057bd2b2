//! `GhostTable`: one shard's ghost stubs as a pure state machine (no I/O, no clock).

pub(crate) mod changes;
mod dirty;
mod export;
mod index;
mod load;
mod slab;
mod stats;
mod sweep;
mod tombstones;

pub use changes::ChangeSet;
pub(crate) use changes::ShardChanges;
use changes::Upserts;
pub use export::GhostPage;
pub use stats::{TableCounters, TableStats};

use crate::config::TableConfig;
use crate::error::{Error, Result};
use crate::event::EdgeEvents;
use crate::event::{BatchOutcome, EdgeKind, EdgeOutcome, InsertOutcome, MoveOutcome};
use crate::ids::{Epoch, ShardId};
use crate::stub::{GhostInfo, PurgeReason, StubRecord, StubRef};
use slab::{STORED_BIRTH, Slab, SlabMemory, Slot};
use tombstones::{Tombstone, Tombstones};

/// Events of a batch warmed at a time (see `Slab::warm`).
const WARM_CHUNK: usize = 1024;

/// An edge batch whose first chunk of events [`GhostTable::warm_batch`] hashed
/// and pulled into cache: what [`GhostTable::apply_warmed`] applies. It holds
/// the batch itself, so it can only be applied as the batch it warmed, and the
/// fingerprint of the table's hasher, so its hashes are used only by a table
/// that computes the same ones.
#[derive(Debug)]
pub(crate) struct WarmBatch<'e> {
    events: &'e EdgeEvents,
    hasher: u64,
    hashes: Vec<u64>,
    candidates: Vec<u32>,
}

impl<'e> WarmBatch<'e> {
    /// The batch it warmed.
    pub(crate) fn events(&self) -> &'e EdgeEvents {
        self.events
    }
}

/// Dirty stubs copied for the store by [`GhostTable::stage_ahead`], with the
/// table's stamp at the copy: what [`GhostTable::commit_staged`] stages.
#[derive(Debug)]
pub(crate) struct StagedAhead {
    changes: ChangeSet,
    stamp: (u64, u64),
}

/// The memory of a table no longer needed, emptied: its slots, ids and index,
/// for the next table built in this process.
///
/// A million-ghost table is some 60 MB. Built afresh, that memory is mapped
/// and faulted in a page at a time, which in a process that has run a while
/// cost a decode more than parsing the bytes did. A shard that reloads after
/// a panic or a failed flush has just dropped a table of about the
/// size it is about to build: [`GhostTable::into_memory`] keeps it, and
/// [`codec::decode_snapshot_reusing`](crate::codec::decode_snapshot_reusing)
/// builds into it. Nothing of the old table is read back: its slots stay in
/// the memory, all of them free, until the new table's overwrite them.
#[derive(Debug, Default)]
pub struct TableMemory {
    slab: SlabMemory,
}

impl TableMemory {
    /// Ghosts a table built in this memory holds before it allocates more.
    pub fn capacity(&self) -> usize {
        self.slab.slots()
    }
}

/// The ghost stubs of one vShard.
///
/// Every operation is a plain method call; time comes in as `now_ms`. The table
/// records which stubs changed so that a store can persist exactly those
/// ([`take_changes`](Self::take_changes)).
#[derive(Debug)]
pub struct GhostTable {
    shard: u16,
    config: TableConfig,
    slab: Slab,
    next_version: u64,
    applied_seq: Option<u64>,
    seq_dirty: bool,
    /// Changes since the last `take_changes`: every removal, and the upserts
    /// staged so far (the rest are still marked dirty in the slab).
    pending: ChangeSet,
    /// Numbers flush windows, to tell which stubs were staged in this one.
    window: u16,
    /// Removed ghosts remembered to refuse stale inserts.
    tombstones: Tombstones,
    /// An unsequenced edge event was applied since the last sequenced batch
    /// (or the table was loaded, and the store cannot say): the shard's log
    /// position is then unknown, so no count may lower a refcount.
    unsequenced: bool,
    /// Stored rows that hold batches past `applied_seq`: a commit landed in
    /// part (rows without the sequence number). Each id maps to the sequence
    /// number its row holds; a sequenced batch at or below it skips the id's
    /// events, which the row already counts. Empty unless a store tore a commit.
    ahead: foldhash::HashMap<Box<str>, u64>,
    rng: fastrand::Rng,
    counters: TableCounters,
    /// `apply_batch`'s hashes and index candidates, kept between batches.
    scratch: (Vec<u64>, Vec<u32>),
}

impl GhostTable {
    /// An empty table for `shard`.
    pub fn new(shard: ShardId, config: TableConfig) -> Result<Self> {
        Self::with_capacity(shard, config, 0)
    }

    /// An empty table with room for `capacity` ghosts.
    pub fn with_capacity(shard: ShardId, config: TableConfig, capacity: usize) -> Result<Self> {
        Self::with_memory(shard, config, capacity, TableMemory::default())
    }

    /// [`with_capacity`](Self::with_capacity) in `memory`, a dropped table's
    /// allocations, which grow only where they are short of room.
    pub fn with_memory(
        shard: ShardId,
        config: TableConfig,
        capacity: usize,
        memory: TableMemory,
    ) -> Result<Self> {
        config.validate()?;
        let shard = shard.get();
        let slab = Slab::with_memory(memory.slab, capacity, config.hash_seed);
        Ok(Self {
            shard,
            rng: fastrand::Rng::with_seed(config.jitter_seed ^ u64::from(shard)),
            config,
            slab,
            next_version: 1,
            applied_seq: None,
            seq_dirty: false,
            pending: ChangeSet::new(),
            window: 1,
            tombstones: Tombstones::default(),
            unsequenced: false,
            ahead: foldhash::HashMap::default(),
            counters: TableCounters::default(),
            scratch: (Vec::new(), Vec::new()),
        })
    }

    /// Drops every ghost and keeps the table's large allocations for the next
    /// table of this process (see [`TableMemory`]).
    pub fn into_memory(self) -> TableMemory {
        TableMemory { slab: self.slab.into_memory() }
    }

    /// The shard this table belongs to.
    pub fn shard(&self) -> ShardId {
        ShardId(self.shard)
    }

    /// The table's settings.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Number of ghosts.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when the table holds no ghost.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    /// Sequence number of the last applied edge-event batch.
    pub fn applied_seq(&self) -> Option<u64> {
        self.applied_seq
    }

    /// The ghost for `node_id`, if any.
    pub fn get(&self, node_id: &str) -> Option<GhostInfo> {
        self.slab.find(node_id).map(|i| info(&self.slab, i))
    }

    /// The shard to forward a traversal to, if `node_id` is a ghost here.
    pub fn resolve(&self, node_id: &str) -> Option<ShardId> {
        self.slab.find(node_id).map(|i| ShardId(self.slab.slot(i).target))
    }

    /// [`resolve`](Self::resolve) for a traversal frontier, in input order.
    pub fn resolve_many<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<Option<ShardId>> {
        ids.into_iter().map(|id| self.resolve(id)).collect()
    }

    /// Every ghost with its live view, in storage order, which follows the
    /// table's hash (see [`TableConfig::hash_seed`]), not the order of inserts.
    pub fn iter(&self) -> impl Iterator<Item = (&str, GhostInfo)> + '_ {
        self.slab.occupied().map(|i| (self.slab.id(i), info(&self.slab, i)))
    }

    /// Every ghost as a persisted record (tombstones left out).
    pub fn records(&self) -> impl Iterator<Item = StubRecord> + '_ {
        self.slab.occupied().map(|i| self.stub_ref(i).to_record())
    }

    /// Every row a store must hold for this table: the ghosts, then the tombstones.
    pub(crate) fn rows(&self) -> impl Iterator<Item = StubRef<'_>> + '_ {
        let ghosts = self.slab.occupied().map(|i| self.stub_ref(i));
        ghosts.chain(self.tombstones.iter().map(|(id, t)| tombstone_ref(id, t)))
    }

    /// [`rows`](Self::rows), each with its id's bytes as the table holds
    /// them (the row's `node_id` is then empty for a ghost): for an encoder,
    /// which would otherwise check each id as UTF-8 again.
    pub(crate) fn rows_as_stored(&self) -> impl Iterator<Item = (&[u8], StubRef<'_>)> + '_ {
        let ghosts = self
            .slab
            .occupied()
            .map(|i| (self.slab.id_raw(i), stub_ref("", self.slab.slot(i), self.slab.retry_at(i), 0)));
        ghosts.chain(self.tombstones.iter().map(|(id, t)| (id.as_bytes(), tombstone_ref(id, t))))
    }

    /// Number of rows [`rows`](Self::rows) yields.
    pub(crate) fn row_count(&self) -> usize {
        self.slab.len() + self.tombstones.len()
    }

    /// The epoch at which `node_id`'s ghost was removed, while remembered.
    pub fn tombstone_epoch(&self, node_id: &str) -> Option<Epoch> {
        self.tombstones.get(node_id).map(|t| Epoch(t.epoch))
    }

    /// Records that `node_id` moved to `target` at move `epoch` with `refcount`
    /// local edges pointing at it.
    pub fn insert(
        &mut self,
        node_id: &str,
        target: ShardId,
        refcount: u32,
        epoch: Epoch,
        now_ms: u64,
    ) -> Result<InsertOutcome> {
        let (target, epoch) = (target.get(), epoch.get());
        self.check_id(node_id)?;
        self.check_target(target)?;
        if self.tombstones.len() > 0
            && let Some(t) = self.tombstones.get(node_id)
            && epoch <= t.epoch
            && self.slab.find(node_id).is_none()
        {
            // Removed at this epoch or later: a retried or replayed insert.
            self.counters.stale_moves += 1;
            self.counters.tombstoned_inserts += 1;
            return Ok(InsertOutcome::Stale);
        }
        if self.slab.len() >= self.config.max_stubs && self.slab.find(node_id).is_none() {
            // Past it, the table's own snapshot would not load again.
            return Err(Error::TableFull { shard: self.shard(), limit: self.config.max_stubs as u64 });
        }
        let version = self.bump();
        let fresh = new_slot(target, refcount, now_ms, epoch, version);
        let Err(i) = self.slab.insert(node_id, fresh)? else {
            if self.tombstones.len() > 0 && self.tombstones.remove(node_id).is_some() {
                // The tombstone's row goes, and with it any upsert of it still
                // in this window: the ghost's own upsert comes after.
                self.pending.push_late_removal(node_id);
            }
            self.counters.inserted += 1;
            return Ok(InsertOutcome::Inserted);
        };
        let current = self.slab.slot(i).epoch;
        if epoch <= current {
            // A resend, or the first insert of a life that a `Redirect` verdict
            // reached first, at or past its epoch: see `absorb_duplicate`.
            self.counters.stale_moves += 1;
            self.absorb_duplicate(i, refcount, now_ms);
            return Ok(if epoch == current { InsertOutcome::Duplicate } else { InsertOutcome::Stale });
        }
        // A newer move of a node we already forward: a fresh ghost life, so the
        // grace period starts over too.
        self.point_at(i, target, epoch, version);
        let s = self.slab.slot_mut(i);
        s.refcount = refcount;
        s.created_at_ms = now_ms;
        // On our clock now: no stored time to allow for.
        s.flags &= !STORED_BIRTH;
        // A new life: its grace period protects it now, not an old hold.
        self.slab.set_retry_at(i, 0);
        self.counters.inserted += 1;
        Ok(InsertOutcome::Replaced)
    }

    /// An insert at or below the ghost's epoch: a resend, or the first insert
    /// of a life that a `Redirect` verdict reached first, at its epoch or past
    /// it (the node came back here and left again while the reclaim was on its
    /// way, so the ghost still counts an older life's edges). The two cannot be
    /// told apart, so take what is safe for both: at least the insert's count,
    /// and a grace period from now. A resend can only make the ghost linger
    /// until a sweep repairs its count.
    fn absorb_duplicate(&mut self, i: usize, refcount: u32, now_ms: u64) {
        let s = *self.slab.slot(i);
        if refcount <= s.refcount && s.created_at_ms >= now_ms {
            return;
        }
        let version = self.bump();
        let s = self.slab.slot_mut(i);
        s.refcount = s.refcount.max(refcount);
        s.created_at_ms = s.created_at_ms.max(now_ms);
        s.version = version;
    }

    /// A local edge to `node_id` was added, outside any sequenced batch.
    pub fn edge_added(&mut self, node_id: &str) -> EdgeOutcome {
        self.unsequenced = true;
        self.add_edge(node_id)
    }

    /// A local edge to `node_id` was removed, outside any sequenced batch; at
    /// zero the ghost is purged.
    pub fn edge_removed(&mut self, node_id: &str) -> EdgeOutcome {
        self.unsequenced = true;
        self.remove_edge(node_id)
    }

    fn add_edge(&mut self, node_id: &str) -> EdgeOutcome {
        let hash = self.slab.hash_id(node_id);
        self.add_edge_hashed(node_id, hash)
    }

    fn add_edge_hashed(&mut self, node_id: &str, hash: u64) -> EdgeOutcome {
        self.counters.edge_events += 1;
        let Some(i) = self.slab.find_hashed(node_id, hash) else {
            self.counters.unknown_edge_events += 1;
            return EdgeOutcome::UnknownNode;
        };
        if self.slab.slot(i).refcount == u32::MAX {
            self.counters.saturated += 1;
            return EdgeOutcome::Saturated;
        }
        let version = self.bump();
        let s = self.slab.slot_mut(i);
        s.refcount += 1;
        s.version = version;
        EdgeOutcome::Applied { refcount: s.refcount }
    }

    fn remove_edge(&mut self, node_id: &str) -> EdgeOutcome {
        let hash = self.slab.hash_id(node_id);
        self.remove_edge_hashed(node_id, hash)
    }

    fn remove_edge_hashed(&mut self, node_id: &str, hash: u64) -> EdgeOutcome {
        self.counters.edge_events += 1;
        let Some(i) = self.slab.find_hashed(node_id, hash) else {
            self.counters.unknown_edge_events += 1;
            return EdgeOutcome::UnknownNode;
        };
        if self.slab.slot(i).refcount <= 1 {
            self.purge(i, PurgeReason::RefcountZero);
            return EdgeOutcome::Purged;
        }
        let version = self.bump();
        let s = self.slab.slot_mut(i);
        s.refcount -= 1;
        s.version = version;
        EdgeOutcome::Applied { refcount: s.refcount }
    }

    /// Applies a batch of edge events once: a batch whose `seq` is at or below
    /// the last applied one is skipped, so a host can replay its log.
    pub fn apply_batch(&mut self, seq: Option<u64>, events: &EdgeEvents) -> BatchOutcome {
        // The scratch buffers are kept so that a batch allocates nothing.
        let (hashes, candidates) = std::mem::take(&mut self.scratch);
        let mut warmed = WarmBatch { events, hasher: self.slab.fingerprint(), hashes, candidates };
        self.warm_chunk(&mut warmed, events.iter());
        let out = self.apply_warmed(seq, &mut warmed);
        self.scratch = (warmed.hashes, warmed.candidates);
        if self.stage_due() {
            // In the two steps the shard's actor takes, so that both are
            // tested wherever a batch is.
            let staged = self.stage_ahead();
            self.commit_staged(staged);
        }
        out
    }

    /// Hashes the first events of `events` (up to 1024) and pulls into cache
    /// what applying them will read (see `Slab::warm`), through a shared
    /// borrow: the shard's actor does this under a read lock that its readers
    /// share, and takes the write lock only for [`apply_warmed`](Self::apply_warmed),
    /// which then runs on warm lines.
    pub(crate) fn warm_batch<'e>(&self, events: &'e EdgeEvents) -> WarmBatch<'e> {
        let n = events.len().min(WARM_CHUNK);
        let (hashes, candidates) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut warmed = WarmBatch { events, hasher: self.slab.fingerprint(), hashes, candidates };
        self.warm_chunk(&mut warmed, events.iter());
        warmed
    }

    /// Warms the next chunk of `rest` into `warmed`.
    fn warm_chunk<'a>(&self, warmed: &mut WarmBatch<'_>, rest: impl Iterator<Item = (&'a str, EdgeKind)>) {
        let ids = rest.take(WARM_CHUNK).map(|(id, _)| id);
        self.slab.warm(ids, &mut warmed.hashes, &mut warmed.candidates);
    }

    /// [`apply_batch`](Self::apply_batch) of the batch `warmed` holds. Warming
    /// only reads, and a hash depends only on the id and the hasher, which is
    /// fixed for a table's life: so a table changed since the warm still
    /// applies the batch correctly (the apply looks every id up again). Hashes
    /// from a table with another hasher are not trusted: the batch is warmed
    /// again (a wrong hash would make the apply miss a ghost that is there).
    pub(crate) fn apply_warmed(&mut self, seq: Option<u64>, warmed: &mut WarmBatch<'_>) -> BatchOutcome {
        if let (Some(seq), Some(done)) = (seq, self.applied_seq)
            && seq <= done
        {
            self.counters.skipped_batches += 1;
            return BatchOutcome { skipped: true, ..BatchOutcome::default() };
        }
        let events = warmed.events;
        let mut out = BatchOutcome::default();
        // In chunks, for very large batches: a chunk's lines must still be in
        // cache when it is applied (a 1024-event chunk warms about 400 KiB).
        // Smaller chunks measured no faster on 1024-event batches.
        let mut rest = events.iter();
        let mut first = warmed.hasher == self.slab.fingerprint();
        while rest.len() > 0 {
            if !first {
                self.warm_chunk(warmed, rest.clone());
            }
            first = false;
            for ((node_id, kind), &hash) in rest.by_ref().take(WARM_CHUNK).zip(&warmed.hashes) {
                if !self.ahead.is_empty() && seq.is_some_and(|s| self.row_holds(node_id, s)) {
                    self.counters.replayed_events_skipped += 1;
                    continue;
                }
                out.count(match kind {
                    EdgeKind::Added => self.add_edge_hashed(node_id, hash),
                    EdgeKind::Removed => self.remove_edge_hashed(node_id, hash),
                });
            }
        }
        if let Some(s) = seq {
            self.applied_seq = seq;
            self.seq_dirty = true;
            self.unsequenced = false;
            if !self.ahead.is_empty() {
                self.ahead.retain(|_, held| *held > s);
            }
        } else if !events.is_empty() {
            self.unsequenced = true;
        }
        out
    }

    /// Whether enough stubs are dirty that they should be staged now, while
    /// the batch that dirtied them left them in cache (`stage_after_changes`).
    pub(crate) fn stage_due(&self) -> bool {
        self.slab.dirty_estimate().0 >= self.config.stage_after_changes
    }

    /// Copies the dirty stubs for the store through a shared borrow, the
    /// costly part of staging: the shard's actor does it under a read lock
    /// its readers share, then [`commit_staged`](Self::commit_staged) under
    /// the write lock.
    pub(crate) fn stage_ahead(&self) -> StagedAhead {
        let (n, id_bytes) = self.slab.dirty_estimate();
        let mut upserts = Upserts::with_capacity(n, id_bytes);
        let (seq, ahead) = (self.applied_seq.unwrap_or(0), &self.ahead);
        self.slab.peek_dirty(|id, s, retry_at_ms| {
            upserts.push(id, stub_ref("", s, retry_at_ms, held_seq(ahead, id, seq)));
        });
        StagedAhead { changes: upserts.seal(), stamp: (self.slab.dirty_stamp(), self.next_version) }
    }

    /// Makes `staged` the stubs' staged state: they join the pending change
    /// set and are clean again. A table changed since [`stage_ahead`](Self::stage_ahead)
    /// (its stamp moved) may hold newer states than the copies, so they are
    /// dropped and the stubs staged again from the table, as
    /// `take_changes` would.
    pub(crate) fn commit_staged(&mut self, staged: StagedAhead) {
        if staged.stamp != (self.slab.dirty_stamp(), self.next_version) {
            self.stage();
            return;
        }
        self.pending.append_upserts(staged.changes);
        let window = self.window;
        self.slab.drain_dirty(|_, s, _| s.staged = window);
    }

    /// The node moved on from its target to `target` at `epoch`: the ghost follows.
    /// Moving back here is [`reclaim`](Self::reclaim), not a retarget.
    pub fn retarget(&mut self, node_id: &str, target: ShardId, epoch: Epoch) -> Result<MoveOutcome> {
        let (target, epoch) = (target.get(), epoch.get());
        self.check_target(target)?;
        let Some(i) = self.slab.find(node_id) else {
            return Ok(MoveOutcome::UnknownNode);
        };
        if epoch <= self.slab.slot(i).epoch {
            self.counters.stale_moves += 1;
            return Ok(MoveOutcome::Stale);
        }
        self.follow(i, target, epoch);
        Ok(MoveOutcome::Applied)
    }

    /// The node moved back to this shard at `epoch`: the ghost is dropped at
    /// once, and a tombstone refuses stale inserts at or below `epoch`.
    ///
    /// A live tombstone is never forgotten to make room: with
    /// `TableConfig::max_tombstones` tombstones live, the reclaim is refused
    /// with [`Error::TombstonesFull`] (retryable once the oldest lapses) and
    /// changes nothing.
    pub fn reclaim(&mut self, node_id: &str, epoch: Epoch, now_ms: u64) -> Result<MoveOutcome> {
        let epoch = epoch.get();
        let Some(i) = self.slab.find(node_id) else {
            // Purged already (at zero, say): the node lives here all the same,
            // so a resent insert of an older move must not make its ghost again.
            if self.check_id(node_id).is_ok() && self.room_for_tombstone(node_id, epoch, now_ms)? {
                self.entomb(node_id, epoch, self.shard, now_ms);
            }
            return Ok(MoveOutcome::UnknownNode);
        };
        if epoch <= self.slab.slot(i).epoch {
            self.counters.stale_moves += 1;
            return Ok(MoveOutcome::Stale);
        }
        self.room_for_tombstone(node_id, epoch, now_ms)?;
        self.reclaim_slot(i, epoch, now_ms);
        Ok(MoveOutcome::Applied)
    }

    /// Drains the changes the store has not seen yet.
    pub fn take_changes(&mut self) -> ChangeSet {
        self.stage();
        let mut changes = std::mem::take(&mut self.pending);
        changes.settle();
        changes.set_applied_seq(self.applied_seq);
        self.seq_dirty = false;
        // Stubs staged in the window just taken no longer are. Window 0 is
        // skipped: it marks stubs never staged. After 2^16 - 1 windows a stub
        // staged long ago looks staged again, which only costs a `settle` that
        // finds nothing to drop.
        self.window = self.window.wrapping_add(1).max(1);
        changes
    }

    /// Copies the dirty stubs into the pending change set now, while a batch
    /// that just touched them has them in cache. Left for the flush, they are
    /// scattered over the whole table and cost a cache miss or two each; on a
    /// large table that drain cost about as much as applying the batch did.
    fn stage(&mut self) {
        if !self.slab.has_dirty() {
            // Clears any stale entries of the list all the same.
            self.slab.drain_dirty(|_, _, _| {});
            return;
        }
        let (n, id_bytes) = self.slab.dirty_estimate();
        let mut upserts = Upserts::with_capacity(n, id_bytes);
        let (window, seq, ahead) = (self.window, self.applied_seq.unwrap_or(0), &self.ahead);
        self.slab.drain_dirty(|id, s, retry_at_ms| {
            s.staged = window;
            upserts.push(id, stub_ref("", s, retry_at_ms, held_seq(ahead, id, seq)));
        });
        self.pending.append_upserts(upserts.seal());
    }

    /// True when [`take_changes`](Self::take_changes) would return something to write.
    pub fn has_changes(&self) -> bool {
        self.slab.has_dirty() || !self.pending.is_empty() || self.seq_dirty
    }

    /// Counts and ages at `now_ms`. Walks the table for the oldest ghost: call it
    /// at metrics cadence, not per request.
    pub fn stats(&self, now_ms: u64) -> TableStats {
        let oldest = self.slab.occupied().map(|i| self.slab.slot(i).created_at_ms).min();
        TableStats {
            shard: ShardId(self.shard),
            ghosts: self.slab.len() as u64,
            oldest_age_ms: oldest.map(|t| now_ms.saturating_sub(t)),
            tombstones: self.tombstones.len() as u64,
            applied_seq: self.applied_seq,
            counters: self.counters,
        }
    }

    /// Cumulative counters only (O(1)).
    pub fn counters(&self) -> &TableCounters {
        &self.counters
    }

    fn follow(&mut self, i: usize, target: u16, epoch: u64) {
        let version = self.bump();
        self.point_at(i, target, epoch, version);
        self.counters.redirected += 1;
    }

    /// Points stub `i` at `target` as of `epoch`: a new place to verify, so
    /// any back-off for the old one no longer applies. A zero-count hold does:
    /// the edge it waits for is on its way whatever the target.
    fn point_at(&mut self, i: usize, target: u16, epoch: u64, version: u64) {
        let s = self.slab.slot_mut(i);
        s.target = target;
        s.epoch = epoch;
        s.version = version;
        s.attempts = 0;
        if s.refcount != 0 {
            self.slab.set_retry_at(i, 0);
        }
    }

    /// Removes stub `i`. Only a reclaim leaves a tombstone ([`reclaim_slot`](Self::reclaim_slot)):
    /// a ghost made again after a purge only lingers with a count that was true
    /// when its insert was sent, until a sweep. And a purged ghost's epoch may be
    /// one a `Redirect` verdict moved it to, past the node's return here and its
    /// next move away: a tombstone at it would refuse that next life's insert.
    fn purge(&mut self, i: usize, reason: PurgeReason) {
        if self.slab.slot(i).staged == self.window {
            // Its staged upsert must not outlive it.
            self.pending.push_late_removal(self.slab.id(i));
        } else {
            self.pending.push_removal(self.slab.id(i));
        }
        self.slab.remove(i);
        self.counters.count_purge(reason);
    }

    /// Drops stub `i` because its node came back here at `epoch`, and remembers
    /// that: a ghost made again on the node's own shard would forward it away.
    fn reclaim_slot(&mut self, i: usize, epoch: u64, now_ms: u64) {
        let (id, target) = (self.slab.id(i).to_owned(), self.slab.slot(i).target);
        self.purge(i, PurgeReason::Reclaimed);
        self.entomb(&id, epoch, target, now_ms);
    }

    /// Whether a return of `id` at `epoch` needs a tombstone, once there is
    /// room for it: lapsed tombstones are forgotten to make it, live ones never
    /// (`TombstonesFull` then, and nothing changed but the lapsed forgotten).
    pub(crate) fn room_for_tombstone(&mut self, id: &str, epoch: u64, now_ms: u64) -> Result<bool> {
        match self.tombstones.get(id) {
            _ if self.config.max_tombstones == 0 => return Ok(false),
            Some(t) => return Ok(t.epoch < epoch),
            None => {}
        }
        let mut lapsed = Vec::new();
        let room = self.tombstones.make_room(now_ms, self.config.max_tombstones, &mut lapsed);
        self.forget_tombstones(&lapsed);
        room.map(|()| true).map_err(|lapses_in_ms| Error::TombstonesFull {
            shard: self.shard(),
            limit: self.config.max_tombstones as u64,
            lapses_in_ms,
        })
    }

    /// Remembers that `id` came back here at `epoch`, unless a later return is
    /// remembered already (room for it was made: see `room_for_tombstone`). The row goes to the store after any removal of the
    /// ghost's, so the store keeps it.
    fn entomb(&mut self, id: &str, epoch: u64, target: u16, now_ms: u64) {
        if self.config.max_tombstones == 0 || self.tombstones.get(id).is_some_and(|t| t.epoch >= epoch) {
            return;
        }
        let expires_at_ms = now_ms.saturating_add(self.config.tombstone_ttl_ms());
        let tomb =
            Tombstone { epoch, target, removed_at_ms: now_ms, expires_at_ms, lapses_at_ms: expires_at_ms };
        self.pending.push_upsert(tombstone_ref(id, &tomb));
        let mut evicted = Vec::new();
        self.tombstones.insert(id, tomb, self.config.max_tombstones, &mut evicted);
        self.forget_tombstones(&evicted);
    }

    /// Removes the rows of tombstones that lapsed or were evicted. Late
    /// removals: a tombstone's own upsert may be in this window already.
    fn forget_tombstones(&mut self, ids: &[Box<str>]) {
        for id in ids {
            self.pending.push_late_removal(id);
        }
    }

    /// Ghost `i` as a persisted row.
    /// How many stored rows hold batches past the applied sequence number (a
    /// commit that landed in part), if any.
    pub(crate) fn rows_ahead(&self) -> Option<usize> {
        (!self.ahead.is_empty()).then_some(self.ahead.len())
    }

    /// Whether `node_id`'s stored row already holds batch `seq` (see `ahead`).
    fn row_holds(&self, node_id: &str, seq: u64) -> bool {
        self.ahead.get(node_id).is_some_and(|&held| seq <= held)
    }

    fn stub_ref(&self, i: usize) -> StubRef<'_> {
        stub_ref(self.slab.id(i), self.slab.slot(i), self.slab.retry_at(i), 0)
    }

    fn bump(&mut self) -> u64 {
        let v = self.next_version;
        self.next_version += 1;
        v
    }

    /// Ids of stored state: anything a table can hold, the empty id included
    /// (the seed's format accepted it, and a table loaded from it writes it back).
    fn check_stored_id(&self, id: &str) -> Result<()> {
        if id.len() > self.config.max_node_id_len {
            return Err(Error::InvalidNodeId { len: id.len(), max: self.config.max_node_id_len });
        }
        Ok(())
    }

    fn check_id(&self, id: &str) -> Result<()> {
        if id.is_empty() || id.len() > self.config.max_node_id_len {
            return Err(Error::InvalidNodeId { len: id.len(), max: self.config.max_node_id_len });
        }
        Ok(())
    }

    fn check_target(&self, target: u16) -> Result<()> {
        if target == self.shard {
            return Err(Error::SelfTarget { shard: self.shard() });
        }
        Ok(())
    }
}

/// A slot with no retry time (that is the slab's, see `Slab::set_retry_at`).
fn new_slot(target: u16, refcount: u32, created_at_ms: u64, epoch: u64, version: u64) -> Slot {
    Slot {
        key: slab::Key::default(),
        target,
        refcount,
        attempts: 0,
        flags: 0,
        staged: 0,
        created_at_ms,
        epoch,
        version,
    }
}

fn info(slab: &Slab, i: usize) -> GhostInfo {
    let s = slab.slot(i);
    GhostInfo {
        target_shard: ShardId(s.target),
        refcount: s.refcount,
        created_at_ms: s.created_at_ms,
        epoch: Epoch(s.epoch),
        version: s.version,
        not_before_ms: slab.retry_at(i),
    }
}

/// The sequence number a row written now holds: the applied one, or more for
/// a row stored ahead of it (a commit landed in part), which still holds the
/// batches up to its own. Stamped lower, a later load would let a resend of
/// those batches count the row's events again.
fn held_seq(ahead: &foldhash::HashMap<Box<str>, u64>, id: &[u8], applied: u64) -> u64 {
    if ahead.is_empty() {
        return applied;
    }
    // Rows ahead are rare (a reload behind its store): a check per id is fine here.
    let held = std::str::from_utf8(id).ok().and_then(|id| ahead.get(id));
    held.map_or(applied, |&held| held.max(applied))
}

/// The row of slot `s`, holding the batches up to `seq` (0: not said).
fn stub_ref<'a>(id: &'a str, s: &Slot, retry_at_ms: u64, seq: u64) -> StubRef<'a> {
    StubRef {
        node_id: id,
        target_shard: s.target,
        refcount: s.refcount,
        created_at_ms: s.created_at_ms,
        epoch: s.epoch,
        // Only a zero count's hold is persisted; a back-off is not worth a write.
        hold_until_ms: if s.refcount == 0 { retry_at_ms } else { 0 },
        tombstone: false,
        seq,
    }
}

fn tombstone_ref<'a>(id: &'a str, t: &Tombstone) -> StubRef<'a> {
    StubRef {
        node_id: id,
        target_shard: t.target,
        refcount: 0,
        created_at_ms: t.removed_at_ms,
        epoch: t.epoch,
        hold_until_ms: t.expires_at_ms,
        tombstone: true,
        seq: 0,
    }
}

#[cfg(test)]
mod skew_tests;
#[cfg(test)]
mod tests;
