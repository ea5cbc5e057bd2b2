//! Dense stub storage: one id arena, one slot vector, one hash index of slot numbers.

use crate::error::{Error, Result};
use foldhash::fast::RandomState;
use hashbrown::{HashMap, HashTable};
use std::hash::BuildHasher;

/// Slot flag: changed since the last `take_changes`.
pub(crate) const DIRTY: u8 = 1;
/// Slot flag: the slot has a nonzero retry time in `Slab::retry`.
const RETRY: u8 = 2;

/// The fixed-size part of a stub. The id lives in the arena, so it is stored once
/// and costs no allocation of its own (a `String` key would cost 24 bytes plus a
/// heap block per ghost).
///
/// 40 bytes, in this order (`repr(C)`): what a lookup and an edge event read
/// and write (id, refcount, flags, version) is the first 24, so that it spans
/// one cache line for six slots in eight. The retry time, zero for almost
/// every ghost, lives beside the slots in `Slab::retry` rather than costing
/// every ghost 8 bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Slot {
    pub(crate) id_off: u32,
    pub(crate) id_len: u16,
    pub(crate) target: u16,
    pub(crate) refcount: u32,
    /// Consecutive `Inconclusive` verdicts: the back-off exponent.
    pub(crate) attempts: u8,
    pub(crate) flags: u8,
    /// The flush window in which the table last staged this stub (see
    /// `GhostTable::stage`); fills what would otherwise be padding.
    pub(crate) staged: u16,
    pub(crate) version: u64,
    pub(crate) epoch: u64,
    pub(crate) created_at_ms: u64,
}

/// Where a slot moved during a removal, so the caller's cursor stays consistent.
#[derive(Debug)]
pub(crate) struct Slab {
    /// A `String`, not bytes: ids are whole `&str`s, so slicing it back needs no
    /// UTF-8 validation (which cost a tenth of the event path as `Vec<u8>`).
    arena: String,
    garbage: usize,
    slots: Vec<Slot>,
    index: HashTable<u32>,
    hasher: RandomState,
    /// Slot numbers that turned dirty since the last drain (may hold stale numbers;
    /// the slot's DIRTY flag is the truth). Slots at or after `fresh_from` are
    /// not listed.
    dirty: Vec<u32>,
    /// Every slot at or after this one was inserted since the last drain, and
    /// is dirty: a table filled by inserts then keeps no list of them (4 bytes
    /// a ghost). Slots only ever move down (into holes), so the range holds
    /// nothing else; a fresh slot moved below it is listed in `dirty`.
    fresh_from: usize,
    /// Not offered to the sweeper before this time, for slots flagged RETRY
    /// (a back-off or a zero-count hold); every other slot's is 0.
    retry: HashMap<u32, u64, RandomState>,
}

impl Slab {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            arena: String::with_capacity(n * 16),
            garbage: 0,
            slots: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            hasher: RandomState::default(),
            dirty: Vec::new(),
            fresh_from: 0,
            retry: HashMap::default(),
        }
    }

    /// Slot `i`'s retry time (0: none).
    pub(crate) fn retry_at(&self, i: usize) -> u64 {
        if self.slots[i].flags & RETRY == 0 { 0 } else { self.retry.get(&(i as u32)).copied().unwrap_or(0) }
    }

    /// Sets slot `i`'s retry time (0: none), without marking it dirty.
    pub(crate) fn set_retry_at(&mut self, i: usize, at_ms: u64) {
        let s = &mut self.slots[i];
        if at_ms == 0 {
            if s.flags & RETRY != 0 {
                s.flags &= !RETRY;
                self.retry.remove(&(i as u32));
            }
        } else {
            s.flags |= RETRY;
            self.retry.insert(i as u32, at_ms);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub(crate) fn slot(&self, i: usize) -> &Slot {
        &self.slots[i]
    }

    pub(crate) fn id(&self, i: usize) -> &str {
        id_of(&self.arena, &self.slots[i])
    }

    pub(crate) fn find(&self, id: &str) -> Option<usize> {
        self.find_hashed(id, self.hasher.hash_one(id.as_bytes()))
    }

    /// [`find`](Self::find) with `hash` = [`hash_id`](Self::hash_id)`(id)` already computed.
    pub(crate) fn find_hashed(&self, id: &str, hash: u64) -> Option<usize> {
        let (arena, slots) = (&self.arena, &self.slots);
        self.index.find(hash, |&i| id_bytes(arena, &slots[i as usize]) == id.as_bytes()).map(|&i| i as usize)
    }

    /// Mutable access that marks the slot dirty.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut Slot {
        let s = &mut self.slots[i];
        if s.flags & DIRTY == 0 {
            // Never a fresh slot: those are dirty until the drain moves `fresh_from`.
            s.flags |= DIRTY;
            self.dirty.push(i as u32);
        }
        s
    }

    /// Mutable access for bookkeeping that is not persisted (back-off state).
    pub(crate) fn slot_mut_clean(&mut self, i: usize) -> &mut Slot {
        &mut self.slots[i]
    }

    /// Appends a new stub unless `id` is present: `Ok(Ok(new))` or `Ok(Err(existing))`.
    /// One hash and one probe either way.
    pub(crate) fn insert(&mut self, id: &str, mut slot: Slot) -> Result<Result<usize, usize>> {
        let i = self.slots.len();
        if i >= u32::MAX as usize {
            return Err(Error::CapacityExceeded("more than 2^32-1 stubs"));
        }
        let hash = self.hasher.hash_one(id.as_bytes());
        let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
        let entry = self.index.entry(
            hash,
            |&j| id_bytes(arena, &slots[j as usize]) == id.as_bytes(),
            |&j| hasher.hash_one(id_bytes(arena, &slots[j as usize])),
        );
        let vacant = match entry {
            hashbrown::hash_table::Entry::Occupied(o) => return Ok(Err(*o.get() as usize)),
            hashbrown::hash_table::Entry::Vacant(v) => v,
        };
        if self.arena.len() + id.len() > u32::MAX as usize {
            // Compaction would move ids under the index's feet mid-insert; the
            // arena is compacted on removals, so a full one is truly full.
            return Err(Error::CapacityExceeded("node id arena above 4 GiB"));
        }
        vacant.insert(i as u32);
        slot.id_off = self.arena.len() as u32;
        slot.id_len = id.len() as u16;
        slot.flags = DIRTY;
        self.arena.push_str(id);
        self.slots.push(slot);
        // Listed by `fresh_from` (which is at most `i`), not in `dirty`.
        Ok(Ok(i))
    }

    /// Appends a stub without indexing it, not dirty, with retry time
    /// `retry_at_ms`; [`rebuild_index`](Self::rebuild_index) must follow.
    pub(crate) fn push_unindexed(&mut self, id: &str, mut slot: Slot, retry_at_ms: u64) -> Result<()> {
        if self.slots.len() >= u32::MAX as usize {
            return Err(Error::CapacityExceeded("more than 2^32-1 stubs"));
        }
        if self.arena.len() + id.len() > u32::MAX as usize {
            return Err(Error::CapacityExceeded("node id arena above 4 GiB"));
        }
        slot.id_off = self.arena.len() as u32;
        slot.id_len = id.len() as u16;
        slot.flags = 0;
        // A slot that is not dirty cannot be in the fresh range: list the
        // range's slots (loads start empty, so this is normally nothing).
        for j in self.fresh_from..self.slots.len() {
            self.dirty.push(j as u32);
        }
        self.arena.push_str(id);
        self.slots.push(slot);
        self.fresh_from = self.slots.len();
        self.set_retry_at(self.slots.len() - 1, retry_at_ms);
        Ok(())
    }

    /// Indexes every slot from scratch; `Err(i)` names a slot whose id repeats.
    ///
    /// Inserting a million slots in slot order writes the index at random:
    /// a cache miss or two per slot, most of a reload's time. So the slots are
    /// first grouped by where their hash lands in the index (one counting-sort
    /// pass on the top bits of the position), and the index is then filled
    /// group by group: each group's part of the index stays in cache.
    pub(crate) fn rebuild_index(&mut self) -> std::result::Result<(), usize> {
        self.index.clear();
        let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
        self.index.reserve(slots.len(), |&j| hasher.hash_one(id_bytes(arena, &slots[j as usize])));
        let hashes: Vec<u64> = slots.iter().map(|s| hasher.hash_one(id_bytes(arena, s))).collect();
        let order = by_index_position(&hashes, self.index.capacity());
        for &(h, i) in &order {
            // The id is read only on a tag match: reading it for every slot
            // would be the random access the grouping avoids.
            let entry = self.index.entry(
                h,
                |&j| id_bytes(arena, &slots[j as usize]) == id_bytes(arena, &slots[i as usize]),
                |&j| hashes[j as usize],
            );
            match entry {
                hashbrown::hash_table::Entry::Occupied(_) => return Err(i as usize),
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
        Ok(())
    }

    /// Hashes every id of a batch into `hashes` and pulls into cache what
    /// looking each one up will read: its index group and bucket, its slot and
    /// the start of its id in the arena.
    ///
    /// A lookup on a table larger than the cache is a chain of dependent misses
    /// (group, bucket, slot, id): one at a time, a batch pays them end to end.
    /// Here each pass issues one level of that chain for every event, and the
    /// events are independent, so the processor overlaps a pass's misses; the
    /// batch is then applied against warm lines. The passes only read (a
    /// bucket whose tag matches stands in for the real match, which the apply
    /// pass still checks), so they cannot change what the batch does.
    pub(crate) fn warm<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
        hashes: &mut Vec<u64>,
        candidates: &mut Vec<u32>,
    ) {
        hashes.clear();
        candidates.clear();
        hashes.extend(ids.map(|id| self.hasher.hash_one(id.as_bytes())));
        // Group words only: a tag test that never matches reads no bucket.
        let mut touched = 0u64;
        for &h in hashes.iter() {
            touched ^= u64::from(self.index.find(h, |_| false).is_some());
        }
        for &h in hashes.iter() {
            let j = self.index.find(h, |_| true).copied().unwrap_or(u32::MAX);
            touched ^= u64::from(j);
            candidates.push(j);
        }
        // Both ends of what the apply reads (`id_off` .. `version`), which may
        // be on two lines.
        let mut offsets = 0u64;
        for &j in candidates.iter() {
            if let Some(s) = self.slots.get(j as usize) {
                touched ^= s.version;
                offsets ^= u64::from(s.id_off);
            }
        }
        // Both ends of the id too: one of ten ids crosses a line.
        let arena = self.arena.as_bytes();
        for &j in candidates.iter() {
            if let Some(s) = self.slots.get(j as usize) {
                let (first, last) =
                    (s.id_off as usize, (s.id_off as usize + s.id_len as usize).saturating_sub(1));
                touched ^= u64::from(arena.get(first).copied().unwrap_or(0));
                touched ^= u64::from(arena.get(last).copied().unwrap_or(0));
            }
        }
        touched ^= offsets;
        // Keeps the reads: without a use, the passes would be optimised away.
        std::hint::black_box(touched);
    }

    /// A fingerprint of the hasher: two slabs compute the same hashes when
    /// theirs agree (their keys are random, so a false match is a 2^-64 chance).
    pub(crate) fn fingerprint(&self) -> u64 {
        self.hasher.hash_one(0x9e37_79b9_7f4a_7c15_u64)
    }

    /// The index hash of `id`.
    pub(crate) fn hash_id(&self, id: &str) -> u64 {
        self.hasher.hash_one(id.as_bytes())
    }

    /// Takes an index built elsewhere from [`hash_id`](Self::hash_id) of every
    /// slot in order, each id distinct.
    pub(crate) fn install_index(&mut self, index: HashTable<u32>) {
        debug_assert_eq!(index.len(), self.slots.len());
        self.index = index;
    }

    /// Removes slot `i` in O(1). Slots before `*cursor` count as visited by the
    /// current sweep pass; the removal keeps every unvisited slot at or after the
    /// cursor, so a pass never skips a stub that was moved to fill the hole.
    pub(crate) fn remove(&mut self, i: usize, cursor: &mut usize) {
        let hash = self.hash_of(i);
        match self.index.find_entry(hash, |&j| j as usize == i) {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => unreachable!("slot {i} missing from the index"),
        }
        self.garbage += self.slots[i].id_len as usize;
        self.set_retry_at(i, 0);
        let last = self.slots.len() - 1;
        if i < *cursor {
            let c = *cursor - 1;
            if i != c {
                self.relocate(c, i);
            }
            if c != last {
                self.relocate(last, c);
            }
            *cursor = c;
        } else if i != last {
            self.relocate(last, i);
        }
        self.slots.pop();
        self.fresh_from = self.fresh_from.min(self.slots.len());
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
    }

    fn hash_of(&self, i: usize) -> u64 {
        self.hasher.hash_one(id_bytes(&self.arena, &self.slots[i]))
    }

    /// Moves slot `from` into position `to`, repointing its index entry.
    fn relocate(&mut self, from: usize, to: usize) {
        let hash = self.hash_of(from);
        if let Some(entry) = self.index.find_mut(hash, |&j| j as usize == from) {
            *entry = to as u32;
        }
        self.slots[to] = self.slots[from];
        if self.slots[to].flags & RETRY != 0 {
            // `to`'s own entry went with its removal or its own move.
            let at = self.retry.remove(&(from as u32)).unwrap_or(0);
            self.retry.insert(to as u32, at);
        }
        if self.slots[to].flags & DIRTY != 0 && to < self.fresh_from {
            self.dirty.push(to as u32);
        }
    }

    /// Rewrites the arena without the bytes of removed ids.
    fn compact(&mut self) {
        let mut arena = String::with_capacity(self.arena.len() - self.garbage);
        for s in &mut self.slots {
            let start = s.id_off as usize;
            s.id_off = arena.len() as u32;
            arena.push_str(&self.arena[start..start + s.id_len as usize]);
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// Calls `f` with every slot that is dirty and its retry time, clearing the flags.
    pub(crate) fn drain_dirty(&mut self, mut f: impl FnMut(&str, &mut Slot, u64)) {
        let dirty = std::mem::take(&mut self.dirty);
        let listed = dirty.iter().map(|&i| i as usize);
        for i in listed.chain(self.fresh_from..self.slots.len()) {
            if i < self.slots.len() && self.slots[i].flags & DIRTY != 0 {
                let retry = self.retry_at(i);
                let slot = &mut self.slots[i];
                slot.flags &= !DIRTY;
                f(id_of(&self.arena, slot), slot, retry);
            }
        }
        self.fresh_from = self.slots.len();
        // Keep the allocation: flushes happen often and the list refills.
        let mut dirty = dirty;
        dirty.clear();
        self.dirty = dirty;
    }

    /// Calls `f` with every slot [`drain_dirty`](Self::drain_dirty) would
    /// pass, each once, without clearing anything. The listed slots go in
    /// slot order (the list may name a slot twice, which the drain skips by
    /// its cleared flag and this by sorting), then the fresh range.
    pub(crate) fn peek_dirty(&self, mut f: impl FnMut(&str, &Slot, u64)) {
        let mut listed: Vec<u32> =
            self.dirty.iter().copied().filter(|&i| (i as usize) < self.fresh_from).collect();
        listed.sort_unstable();
        listed.dedup();
        for i in listed.into_iter().map(|i| i as usize).chain(self.fresh_from..self.slots.len()) {
            let slot = &self.slots[i];
            if slot.flags & DIRTY != 0 {
                f(id_of(&self.arena, slot), slot, self.retry_at(i));
            }
        }
    }

    /// What every change to the dirty set moves: equal before and after a
    /// span of code, that span made no slot dirty and drained none.
    pub(crate) fn dirty_stamp(&self) -> (usize, usize, usize) {
        (self.dirty.len(), self.fresh_from, self.slots.len())
    }

    /// An upper bound on the dirty slots and the bytes of their ids, to reserve for a drain.
    pub(crate) fn dirty_estimate(&self) -> (usize, usize) {
        let n = (self.dirty.len() + self.slots.len() - self.fresh_from).min(self.slots.len());
        // Mean id length, rounded up; a drain that outgrows it just reallocates.
        let mean = self.arena.len().div_ceil(self.slots.len().max(1));
        (n, n * mean)
    }

    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.fresh_from < self.slots.len()
    }

    /// Forgets pending dirtiness (after a load, the store already holds everything).
    pub(crate) fn clear_dirty(&mut self) {
        for &i in &self.dirty {
            if let Some(s) = self.slots.get_mut(i as usize) {
                s.flags &= !DIRTY;
            }
        }
        for s in &mut self.slots[self.fresh_from..] {
            s.flags &= !DIRTY;
        }
        self.dirty.clear();
        self.fresh_from = self.slots.len();
    }
}

/// `(hash, slot)` for every slot, grouped by the top bits of the position the
/// hash takes in an index of `capacity` (hashbrown starts a probe at `hash &
/// (buckets - 1)`, with `buckets` the power of two above `capacity`). Only
/// locality depends on that guess; the index is correct in any order.
pub(crate) fn by_index_position(hashes: &[u64], capacity: usize) -> Vec<(u64, u32)> {
    const GROUP_BITS: u32 = 11;
    let bits = capacity.max(1).next_power_of_two().trailing_zeros().max(GROUP_BITS);
    let group = |h: u64| ((h & ((1u64 << bits) - 1)) >> (bits - GROUP_BITS)) as usize;
    let mut starts = vec![0usize; (1 << GROUP_BITS) + 1];
    for &h in hashes {
        starts[group(h) + 1] += 1;
    }
    for g in 1..starts.len() {
        starts[g] += starts[g - 1];
    }
    let mut out = vec![(0u64, 0u32); hashes.len()];
    for (i, &h) in hashes.iter().enumerate() {
        let at = &mut starts[group(h)];
        out[*at] = (h, i as u32);
        *at += 1;
    }
    out
}

fn id_bytes<'a>(arena: &'a str, s: &Slot) -> &'a [u8] {
    // Sliced as bytes: slicing the `str` checks both ends for char
    // boundaries, which reads the byte after the id, often on the next line.
    &arena.as_bytes()[s.id_off as usize..s.id_off as usize + s.id_len as usize]
}

fn id_of<'a>(arena: &'a str, s: &Slot) -> &'a str {
    // Offsets always start and end whole ids, so they fall on char boundaries.
    &arena[s.id_off as usize..s.id_off as usize + s.id_len as usize]
}
