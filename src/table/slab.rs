//! Dense stub storage: one slot vector (short ids in place), one arena for
//! long ids, one hash index of slot numbers.

use super::index::Index;
use crate::error::{Error, Result};
use foldhash::fast::RandomState;
use hashbrown::HashMap;
use std::hash::BuildHasher;

/// Slot flag: changed since the last `take_changes`.
pub(crate) const DIRTY: u8 = 1;
/// Slot flag: the slot has a nonzero retry time in `Slab::retry`.
const RETRY: u8 = 2;
/// Slot flag: `created_at_ms` was read from the store, so it is a time on the
/// writer's clock, which may be behind ours (see `TableConfig::max_clock_skew`).
pub(crate) const STORED_BIRTH: u8 = 4;
/// Slot flag: the retry time (a zero-count hold) was read from the store; a
/// retry time this process sets clears it.
pub(crate) const STORED_HOLD: u8 = 8;

/// Ids up to this many bytes live in their slot; longer ones in the arena.
pub(crate) const INLINE: usize = 17;
/// `Key`'s first byte for an id in the arena.
const LONG: u8 = u8::MAX;

/// A slot's id: up to [`INLINE`] bytes in place (the first byte is the
/// length), or where a longer one sits in the arena (`LONG`, then its offset
/// and length, little-endian). In place, a lookup that reads the slot has
/// the id on the same line, rather than one more dependent cache miss away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Key([u8; INLINE + 1]);

impl Key {
    /// `id` in place if it fits, else `None`.
    fn inline(id: &str) -> Option<Self> {
        let mut k = [0u8; INLINE + 1];
        k[0] = u8::try_from(id.len()).ok().filter(|&n| (n as usize) <= INLINE)?;
        k[1..=id.len()].copy_from_slice(id.as_bytes());
        Some(Self(k))
    }

    fn long(off: u32, len: u16) -> Self {
        let mut k = [0u8; INLINE + 1];
        k[0] = LONG;
        k[1..5].copy_from_slice(&off.to_le_bytes());
        k[5..7].copy_from_slice(&len.to_le_bytes());
        Self(k)
    }

    /// The arena's offset and length of a long id.
    fn in_arena(&self) -> Option<(usize, usize)> {
        (self.0[0] == LONG).then(|| {
            let off = u32::from_le_bytes([self.0[1], self.0[2], self.0[3], self.0[4]]);
            (off as usize, u16::from_le_bytes([self.0[5], self.0[6]]) as usize)
        })
    }
}

/// The fixed-size part of a stub, with its id when short (see [`Key`]).
///
/// 52 bytes, aligned to 4 (`packed(4)`: the three `u64`s would otherwise
/// pad it to 56), in this order: what a lookup and an edge event read and
/// write (id, refcount, version) is the first 32, so that it spans one cache
/// line for half the slots and two adjacent ones (fetched together) for the
/// rest. The retry time, zero for almost every ghost, lives beside the slots
/// in `Slab::retry` rather than costing every ghost 8 bytes.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub(crate) struct Slot {
    pub(crate) key: Key,
    pub(crate) target: u16,
    pub(crate) refcount: u32,
    pub(crate) version: u64,
    /// Consecutive `Inconclusive` verdicts: the back-off exponent.
    pub(crate) attempts: u8,
    pub(crate) flags: u8,
    /// The flush window in which the table last staged this stub (see
    /// `GhostTable::stage`).
    pub(crate) staged: u16,
    pub(crate) epoch: u64,
    pub(crate) created_at_ms: u64,
}

/// Where a slot moved during a removal, so the caller's cursor stays consistent.
#[derive(Debug)]
pub(crate) struct Slab {
    /// Ids longer than [`INLINE`] bytes. A `String`, not bytes: ids are
    /// whole `&str`s, so slicing it back needs no UTF-8 validation.
    arena: String,
    garbage: usize,
    /// Bytes of every slot's id, in place or not (for sizing a drain).
    id_bytes: usize,
    slots: Vec<Slot>,
    index: Index,
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

/// The allocations of a slab no longer needed, emptied: the next slab built
/// in this process takes them (see `GhostTable::into_memory`).
#[derive(Debug, Default)]
pub(crate) struct SlabMemory {
    slots: Vec<Slot>,
    arena: String,
    index: Index,
    dirty: Vec<u32>,
}

impl SlabMemory {
    /// Slots there is room for.
    pub(crate) fn slots(&self) -> usize {
        self.slots.capacity()
    }
}

impl Slab {
    /// Empties the slab into its allocations.
    pub(crate) fn into_memory(mut self) -> SlabMemory {
        self.slots.clear();
        self.arena.clear();
        self.dirty.clear();
        SlabMemory { slots: self.slots, arena: self.arena, index: self.index.reused(0), dirty: self.dirty }
    }

    /// An empty slab with room for `n` slots, in `memory` (a dropped slab's, or
    /// the default: none), which grows only where it is short of room.
    pub(crate) fn with_memory(memory: SlabMemory, n: usize) -> Self {
        let SlabMemory { mut slots, arena, index, dirty } = memory;
        // Exact, as a fresh table's: doubling an emptied buffer would keep
        // room for twice the table across every reload that grows it a little.
        slots.reserve_exact(n);
        Self {
            arena,
            garbage: 0,
            id_bytes: 0,
            slots,
            index: index.reused(n),
            hasher: RandomState::default(),
            dirty,
            fresh_from: 0,
            retry: HashMap::default(),
        }
    }

    /// Slot `i`'s retry time (0: none).
    pub(crate) fn retry_at(&self, i: usize) -> u64 {
        if self.slots[i].flags & RETRY == 0 { 0 } else { self.retry.get(&(i as u32)).copied().unwrap_or(0) }
    }

    /// Sets slot `i`'s retry time (0: none) as read from the store, on the
    /// writer's clock, without marking it dirty.
    pub(crate) fn set_stored_retry_at(&mut self, i: usize, at_ms: u64) {
        self.set_retry_at(i, at_ms);
        if at_ms != 0 {
            self.slots[i].flags |= STORED_HOLD;
        }
    }

    /// Sets slot `i`'s retry time (0: none) on this process's clock, without
    /// marking it dirty.
    pub(crate) fn set_retry_at(&mut self, i: usize, at_ms: u64) {
        let s = &mut self.slots[i];
        s.flags &= !STORED_HOLD;
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
    #[inline]
    pub(crate) fn find_hashed(&self, id: &str, hash: u64) -> Option<usize> {
        let (arena, slots) = (&self.arena, &self.slots);
        let found = match Key::inline(id) {
            // A short id is compared as its whole zero-padded key: a fixed-size
            // compare the compiler unrolls, where a call to `memcmp` would make
            // each lookup longer and so fewer of them overlap their misses. A
            // key in the arena starts with `LONG`, so it never equals one in place.
            Some(key) => self.index.find(hash, |i| slots[i as usize].key == key),
            None => self.index.find(hash, |i| id_bytes(arena, &slots[i as usize]) == id.as_bytes()),
        };
        found.map(|i| i as usize)
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
        if let Some(j) = self.find_hashed(id, hash) {
            return Ok(Err(j));
        }
        slot.key = self.store_key(id)?;
        slot.flags = DIRTY;
        if self.index.needs_growth() {
            self.grow_index(i + 1);
        }
        self.index.insert_unique(hash, i as u32);
        self.id_bytes += id.len();
        self.slots.push(slot);
        // Listed by `fresh_from` (which is at most `i`), not in `dirty`.
        Ok(Ok(i))
    }

    /// The key for `id`: in place, or appended to the arena.
    fn store_key(&mut self, id: &str) -> Result<Key> {
        if let Some(k) = Key::inline(id) {
            return Ok(k);
        }
        if self.arena.len() + id.len() > u32::MAX as usize {
            return Err(Error::CapacityExceeded("node id arena above 4 GiB"));
        }
        let len = u16::try_from(id.len()).map_err(|_| Error::CapacityExceeded("node id above 64 KiB"))?;
        let k = Key::long(self.arena.len() as u32, len);
        self.arena.push_str(id);
        Ok(k)
    }

    /// Grows the index to room for `room` slots.
    fn grow_index(&mut self, room: usize) {
        let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
        self.index.grow(room, |j| hasher.hash_one(id_bytes(arena, &slots[j as usize])));
    }

    /// Appends a stored stub without indexing it, not dirty, with the stored
    /// retry time `retry_at_ms`; [`rebuild_index`](Self::rebuild_index) must follow.
    pub(crate) fn push_unindexed(&mut self, id: &str, mut slot: Slot, retry_at_ms: u64) -> Result<()> {
        if self.slots.len() >= u32::MAX as usize {
            return Err(Error::CapacityExceeded("more than 2^32-1 stubs"));
        }
        slot.key = self.store_key(id)?;
        slot.flags = STORED_BIRTH;
        // A slot that is not dirty cannot be in the fresh range: list the
        // range's slots (loads start empty, so this is normally nothing).
        for j in self.fresh_from..self.slots.len() {
            self.dirty.push(j as u32);
        }
        self.id_bytes += id.len();
        self.slots.push(slot);
        self.fresh_from = self.slots.len();
        self.set_stored_retry_at(self.slots.len() - 1, retry_at_ms);
        Ok(())
    }

    /// Indexes every slot from scratch; `Err(i)` names a slot whose id repeats.
    /// The index is filled grouped by home bucket (see `Index::rebuild`); an
    /// id is read only where a hash shares a tag and a probe with another.
    pub(crate) fn rebuild_index(&mut self) -> std::result::Result<(), usize> {
        let hashes: Vec<u64> = (0..self.slots.len()).map(|j| self.hash_of(j)).collect();
        let (arena, slots) = (&self.arena, &self.slots);
        let same =
            |a: u32, b: u32| id_bytes(arena, &slots[a as usize]) == id_bytes(arena, &slots[b as usize]);
        self.index.rebuild(&hashes, slots.len(), same).map_err(|i| i as usize)
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
        // The home bucket's line: the candidate is the first entry with the tag.
        let mut touched = 0u64;
        for &h in hashes.iter() {
            let j = self.index.candidate(h).unwrap_or(u32::MAX);
            touched ^= u64::from(j);
            candidates.push(j);
        }
        // Both ends of what the apply reads (key .. version), which may be on
        // two lines; a long id's start in the arena too.
        let arena = self.arena.as_bytes();
        for &j in candidates.iter() {
            if let Some(s) = self.slots.get(j as usize) {
                touched ^= s.version;
                if let Some((off, _)) = s.key.in_arena() {
                    touched ^= u64::from(arena.get(off).copied().unwrap_or(0));
                }
            }
        }
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

    /// Takes the index out (an empty one is left) for building elsewhere and
    /// [`install_index`](Self::install_index) after.
    pub(crate) fn take_index(&mut self) -> Index {
        std::mem::take(&mut self.index)
    }

    /// Takes an index built elsewhere from [`hash_id`](Self::hash_id) of every
    /// slot in order, each id distinct.
    pub(crate) fn install_index(&mut self, index: Index) {
        debug_assert_eq!(index.len(), self.slots.len());
        self.index = index;
    }

    /// Removes slot `i` in O(1). Slots before `*cursor` count as visited by the
    /// current sweep pass; the removal keeps every unvisited slot at or after the
    /// cursor, so a pass never skips a stub that was moved to fill the hole.
    pub(crate) fn remove(&mut self, i: usize, cursor: &mut usize) {
        let hash = self.hash_of(i);
        let indexed = self.index.remove(hash, i as u32);
        debug_assert!(indexed, "slot {i} missing from the index");
        let key = self.slots[i].key;
        self.id_bytes -= id_bytes(&self.arena, &self.slots[i]).len();
        if let Some((_, len)) = key.in_arena() {
            self.garbage += len;
        }
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
        let indexed = self.index.replace(hash, from as u32, to as u32);
        debug_assert!(indexed, "slot {from} missing from the index");
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
            if let Some((start, len)) = s.key.in_arena() {
                // Fits: the new arena is no longer than the old.
                s.key = Key::long(arena.len() as u32, len as u16);
                arena.push_str(&self.arena[start..start + len]);
            }
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
                // A copy lends the id: an id in place is inside the slot `f` may change.
                let held = *slot;
                f(id_of(&self.arena, &held), slot, retry);
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
        let mean = self.id_bytes.div_ceil(self.slots.len().max(1));
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

fn id_bytes<'a>(arena: &'a str, s: &'a Slot) -> &'a [u8] {
    match s.key.in_arena() {
        // Sliced as bytes: slicing the `str` checks both ends for char
        // boundaries, which reads the byte after the id, often on the next line.
        Some((off, len)) => &arena.as_bytes()[off..off + len],
        None => &s.key.0[1..=s.key.0[0] as usize],
    }
}

fn id_of<'a>(arena: &'a str, s: &'a Slot) -> &'a str {
    match s.key.in_arena() {
        // Offsets always start and end whole ids, so they fall on char boundaries.
        Some((off, len)) => &arena[off..off + len],
        // Only ever copied from a `&str`.
        None => std::str::from_utf8(&s.key.0[1..=s.key.0[0] as usize]).expect("an id in place is UTF-8"),
    }
}
