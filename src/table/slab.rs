//! Stub storage: slots in the positions their ids' hashes pick (short ids in
//! place), one arena for long ids.

use super::dirty::{merged, settle};
use super::index::Index;
use crate::error::{DecodeError, Error, Result};
use foldhash::SharedSeed;
use foldhash::fast::{RandomState, SeedableRandomState};
use hashbrown::HashMap;
use std::hash::BuildHasher;

/// Slot flag: changed since the last drain (see `dirty.rs`).
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
    ///
    /// The copy of `len` bytes compiles to a call to `memcpy`, and the
    /// compare then reads its byte stores back 16 at a time. Built in
    /// registers from fixed-size loads instead ([`padded`]), a batch's event
    /// was 3 % faster but a single lookup 5–10 % slower (interleaved probe,
    /// 1M ghosts), so the copy stays.
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

/// The bytes of `b` (at most 16) as a little-endian number, from at most
/// two fixed-size loads that overlap for lengths between the sizes.
#[inline]
pub(crate) fn padded(b: &[u8]) -> u128 {
    let n = b.len();
    debug_assert!(n <= 16);
    let word = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let half = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
    if n >= 8 {
        // The last eight bytes, shifted down past those the first eight hold.
        let rest = word(&b[n - 8..]).checked_shr(8 * (16 - n) as u32).unwrap_or(0);
        u128::from(word(&b[..8])) | u128::from(rest) << 64
    } else if n >= 4 {
        let rest = half(&b[n - 4..]).checked_shr(8 * (8 - n) as u32).unwrap_or(0);
        u128::from(half(&b[..4])) | u128::from(rest) << 32
    } else if n > 0 {
        // First, middle and last byte: each of the three when n is 3.
        u128::from(b[0]) | u128::from(b[n / 2]) << (8 * (n / 2)) | u128::from(b[n - 1]) << (8 * (n - 1))
    } else {
        0
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

/// The stubs of a table, each in the position its id's hash picks (see
/// [`Index`]): a lookup reads a group of tags, mostly in cache, and then its
/// slot, one miss to memory. A position stays its slot's until the slab
/// grows, which moves every slot (see [`grow`](Self::grow)).
#[derive(Debug)]
pub(crate) struct Slab {
    /// Ids longer than [`INLINE`] bytes. A `String`, not bytes: ids are
    /// whole `&str`s, so slicing it back needs no UTF-8 validation.
    arena: String,
    garbage: usize,
    /// Bytes of every slot's id, in place or not (for sizing a drain).
    id_bytes: usize,
    /// One per position of the index; a free position's slot is stale.
    slots: Vec<Slot>,
    index: Index,
    hasher: SeedableRandomState,
    /// Positions of slots an edge event made dirty (see `dirty.rs`); may
    /// repeat, or name a slot since removed or drained.
    listed: Vec<u32>,
    /// The list may repeat a position, or share one with the marks: a
    /// removal since the last drain (its moves and its freed position are
    /// the only way either happens). Until then a copy of the dirty set
    /// takes the list as it is, unsorted.
    list_repeats: bool,
    /// Slots flagged DIRTY.
    dirty: usize,
    /// Moves whenever the dirty set does, and at every insert and removal
    /// (see [`dirty_stamp`](Self::dirty_stamp)).
    stamp: u64,
    /// Next position the sweep visits; positions before it were visited this pass.
    cursor: usize,
    /// Positions before the cursor of slots the pass has not visited, and
    /// at or after it of slots it has: a removal moved them there (see
    /// [`relocate`](Self::relocate)). The pass visits the first before it
    /// goes on and passes over the second, so it takes every slot once.
    owed: Vec<u32>,
    done: Vec<u32>,
    /// Not offered to the sweeper before this time, for slots flagged RETRY
    /// (a back-off or a zero-count hold); every other slot's is 0.
    retry: HashMap<u32, u64, RandomState>,
    /// Stored stubs of a load not yet in their places (see
    /// [`insert_stored`](Self::insert_stored)).
    loading: Vec<Stored>,
}

/// A stored stub on its way into the slab: its hash, its slot (key set)
/// and its stored retry time.
#[derive(Debug, Clone, Copy)]
struct Stored {
    hash: u64,
    slot: Slot,
    retry_at_ms: u64,
}

/// Stored stubs placed at a time. A load writes each stub to a place
/// anywhere in the table: one at a time, every write waits for its line
/// (a store that misses holds up the stores behind it), and a million-stub
/// decode spent three quarters of its time so. A chunk's lines are read in
/// first, where the misses overlap, and then written: 512 stubs' lines are
/// some 100 KB, which stay in cache between the two passes.
const LOAD_CHUNK: usize = 512;

/// The allocations of a slab no longer needed, emptied: the next slab built
/// in this process takes them (see `GhostTable::into_memory`).
#[derive(Debug, Default)]
pub(crate) struct SlabMemory {
    slots: Vec<Slot>,
    arena: String,
    index: Index,
    listed: Vec<u32>,
}

impl SlabMemory {
    /// Slots a slab built in this memory holds before it allocates more.
    pub(crate) fn slots(&self) -> usize {
        super::index::room_in(self.slots.capacity())
    }
}

/// What a free position holds.
const FREE: Slot = Slot {
    key: Key([0; INLINE + 1]),
    target: 0,
    refcount: 0,
    version: 0,
    attempts: 0,
    flags: 0,
    staged: 0,
    epoch: 0,
    created_at_ms: 0,
};

impl Slab {
    /// Empties the slab into its allocations. The slots stay as they were,
    /// all of them free (see [`with_memory`](Self::with_memory)).
    pub(crate) fn into_memory(mut self) -> SlabMemory {
        self.arena.clear();
        SlabMemory {
            slots: self.slots,
            arena: self.arena,
            index: self.index.reused(0),
            listed: {
                self.listed.clear();
                self.listed
            },
        }
    }

    /// An empty slab with room for `n` slots, in `memory` (a dropped slab's, or
    /// the default: none), which grows only where it is short of room.
    pub(crate) fn with_memory(memory: SlabMemory, n: usize, seed: Option<u64>) -> Self {
        let SlabMemory { mut slots, arena, index, listed } = memory;
        // Positions are `u32`s (retry times, batch candidates): a table this
        // large grows, and its growth refuses what would pass 2^32.
        let index = index.reused(n.min(super::index::room_in(u32::MAX as usize)));
        // Exact, as a fresh table's: doubling an emptied buffer would keep
        // room for twice the table across every reload that grows it a little.
        // The dropped table's slots are left where they lie, not rewritten as
        // free: a position is free by its group's bits, whatever its slot
        // holds, and writing 60 MB of free slots took 7 % of a decode.
        slots.truncate(index.positions());
        slots.reserve_exact(index.positions() - slots.len());
        slots.resize(index.positions(), FREE);
        let hasher = match seed {
            Some(seed) => SeedableRandomState::with_seed(seed, SharedSeed::global_fixed()),
            None => SeedableRandomState::random(),
        };
        Self {
            arena,
            garbage: 0,
            id_bytes: 0,
            slots,
            index,
            hasher,
            listed,
            list_repeats: false,
            dirty: 0,
            stamp: 0,
            cursor: 0,
            owed: Vec::new(),
            done: Vec::new(),
            retry: HashMap::default(),
            loading: Vec::new(),
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

    /// Slots held.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Every position that holds a slot, in order.
    pub(crate) fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        self.index.occupied()
    }

    /// Buckets with room that a key passed (see `index/remove.rs`): always 0.
    #[cfg(test)]
    pub(crate) fn passed_with_room(&self) -> usize {
        self.index.passed_with_room()
    }

    /// The first position at or after `p` that holds a slot.
    pub(crate) fn next_occupied(&self, p: usize) -> Option<usize> {
        self.index.next_occupied(p)
    }

    /// The next slot of the sweep's pass, or `None` at the pass's end (the
    /// next call starts the next pass).
    pub(crate) fn sweep_next(&mut self) -> Option<usize> {
        if let Some(p) = self.owed.pop() {
            return Some(p as usize);
        }
        loop {
            let next = self.index.next_occupied(self.cursor);
            self.cursor = next.map_or(0, |p| p + 1);
            match next {
                Some(p) if self.done.contains(&(p as u32)) => self.done.retain(|&d| d as usize != p),
                _ => return next,
            }
        }
    }

    /// Whether the sweep's pass has visited the slot at `p`.
    fn visited(&self, p: usize) -> bool {
        let p32 = p as u32;
        if p < self.cursor { !self.owed.contains(&p32) } else { self.done.contains(&p32) }
    }

    pub(crate) fn slot(&self, i: usize) -> &Slot {
        debug_assert!(self.index.is_occupied(i), "position {i} is free");
        &self.slots[i]
    }

    /// The bytes of slot `i`'s id (a whole `&str`'s, unchecked here).
    pub(crate) fn id_raw(&self, i: usize) -> &[u8] {
        id_bytes(&self.arena, self.slot(i))
    }

    pub(crate) fn id(&self, i: usize) -> &str {
        id_of(&self.arena, self.slot(i))
    }

    pub(crate) fn find(&self, id: &str) -> Option<usize> {
        self.find_hashed(id, self.hasher.hash_one(id.as_bytes()))
    }

    /// [`find`](Self::find) with `hash` = [`hash_id`](Self::hash_id)`(id)` already computed.
    #[inline]
    pub(crate) fn find_hashed(&self, id: &str, hash: u64) -> Option<usize> {
        self.find_key(Key::inline(id), id.as_bytes(), hash)
    }

    /// The position of the id `id` under `hash`, whose key is `key` when the
    /// id is short enough to be kept in place.
    #[inline]
    fn find_key(&self, key: Option<Key>, id: &[u8], hash: u64) -> Option<usize> {
        let (arena, slots) = (&self.arena, &self.slots);
        match key {
            // A short id is compared as its whole zero-padded key: a fixed-size
            // compare the compiler unrolls, where a call to `memcmp` would make
            // each lookup longer and so fewer of them overlap their misses. A
            // key in the arena starts with `LONG`, so it never equals one in place.
            Some(key) => self.index.find(hash, |i| slots[i].key == key),
            None => self.index.find(hash, |i| id_bytes(arena, &slots[i]) == id),
        }
    }

    /// Mutable access that marks the slot dirty.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut Slot {
        debug_assert!(self.index.is_occupied(i), "position {i} is free");
        let s = &mut self.slots[i];
        if s.flags & DIRTY == 0 {
            s.flags |= DIRTY;
            self.listed.push(i as u32);
            self.dirty += 1;
            self.stamp += 1;
        }
        s
    }

    /// Mutable access for bookkeeping that is not persisted (back-off state).
    pub(crate) fn slot_mut_clean(&mut self, i: usize) -> &mut Slot {
        debug_assert!(self.index.is_occupied(i), "position {i} is free");
        &mut self.slots[i]
    }

    /// Adds a new stub, dirty, unless `id` is present: `Ok(Ok(new))` or
    /// `Ok(Err(existing))`. One hash and one probe either way, and a growth
    /// when the index is full.
    pub(crate) fn insert(&mut self, id: &str, mut slot: Slot) -> Result<Result<usize, usize>> {
        let hash = self.hasher.hash_one(id.as_bytes());
        if let Some(j) = self.find_hashed(id, hash) {
            return Ok(Err(j));
        }
        slot.flags = DIRTY;
        let i = self.place(id, hash, slot)?;
        // Marked in its group, not listed (see `dirty.rs`).
        self.index.mark(i);
        self.dirty += 1;
        Ok(Ok(i))
    }

    /// Adds a stored stub, not dirty, with the stored retry time
    /// `retry_at_ms`, by the next [`place_stored`](Self::place_stored) at
    /// the latest; until then no lookup finds it. A repeated id fails that call.
    pub(crate) fn insert_stored(&mut self, id: &str, mut slot: Slot, retry_at_ms: u64) -> Result<()> {
        let hash = self.hasher.hash_one(id.as_bytes());
        slot.flags = STORED_BIRTH;
        slot.key = self.store_key(id)?;
        self.loading.push(Stored { hash, slot, retry_at_ms });
        if self.loading.len() == LOAD_CHUNK {
            self.place_stored()?;
        }
        Ok(())
    }

    /// Puts every stored stub [`insert_stored`](Self::insert_stored) holds
    /// in its place: first reading in each one's group of tags, then the
    /// slot it will most likely take (the first free one of its home
    /// bucket), then writing them. A stub whose id is already in place, or
    /// repeats in the chunk, is malformed state.
    pub(crate) fn place_stored(&mut self) -> Result<()> {
        let loading = std::mem::take(&mut self.loading);
        if self.index.len() + loading.len() > self.index.room() {
            self.grow(self.len() + loading.len())?;
        }
        let guesses: Vec<usize> = loading.iter().map(|l| self.index.first_free(l.hash)).collect();
        let mut touched = 0u64;
        for &g in &guesses {
            // Both ends of the slot, which may span two lines.
            if let Some(s) = self.slots.get(g) {
                touched ^= u64::from(s.key.0[0]) ^ s.created_at_ms;
            }
        }
        std::hint::black_box(touched);
        for l in &loading {
            let in_place = l.slot.key.in_arena().is_none().then_some(l.slot.key);
            if self.find_key(in_place, id_bytes(&self.arena, &l.slot), l.hash).is_some() {
                let id = id_of(&self.arena, &l.slot);
                return Err(DecodeError::Malformed(format!("duplicate node id {id:?}")).into());
            }
            let i = self.index.insert_unique(l.hash);
            self.slots[i] = l.slot;
            self.id_bytes += id_bytes(&self.arena, &l.slot).len();
            self.set_stored_retry_at(i, l.retry_at_ms);
        }
        self.stamp += 1;
        // Keep the allocation for the next chunk.
        let mut loading = loading;
        loading.clear();
        self.loading = loading;
        Ok(())
    }

    /// Puts `slot` for `id` (absent, under `hash`) in a position of its own.
    fn place(&mut self, id: &str, hash: u64, mut slot: Slot) -> Result<usize> {
        if self.index.needs_growth() {
            self.grow(self.len() + 1)?;
        }
        slot.key = self.store_key(id)?;
        let i = self.index.insert_unique(hash);
        self.slots[i] = slot;
        self.id_bytes += id.len();
        self.stamp += 1;
        Ok(i)
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

    /// Moves every slot into a larger index with room for `room`: a new
    /// position each, its retry time and dirtiness with it.
    ///
    /// The old slots are read in order, and a key's home moves in step with
    /// its old one (the range map keeps hashes in order), so the new slots
    /// are written front to back. The sweep's pass goes on from the first new
    /// position of a slot it had not visited: every unvisited slot is at or
    /// after it, so the pass skips none (it may visit a few twice). A slot
    /// added during a pass is visited in it if it lands after the cursor.
    fn grow(&mut self, room: usize) -> Result<()> {
        let mut index = self.index.grown(room);
        if index.positions() > u32::MAX as usize {
            return Err(Error::CapacityExceeded("more than 2^32 slot positions"));
        }
        let mut slots = vec![FREE; index.positions()];
        let mut retry = HashMap::with_capacity_and_hasher(self.retry.len(), RandomState::default());
        // A pass not begun stays so; one with nothing left to visit ends.
        let mut cursor = if self.cursor == 0 { 0 } else { index.positions() };
        for p in self.index.occupied() {
            let s = self.slots[p];
            let q = index.insert_unique(self.hasher.hash_one(id_bytes(&self.arena, &s)));
            slots[q] = s;
            if !self.visited(p) {
                cursor = cursor.min(q);
            }
            if s.flags & RETRY != 0 {
                retry.insert(q as u32, self.retry.get(&(p as u32)).copied().unwrap_or(0));
            }
            // Every dirty slot is marked in the new index, listed or not.
            if s.flags & DIRTY != 0 {
                index.mark(q);
            }
        }
        (self.index, self.slots, self.retry, self.cursor) = (index, slots, retry, cursor);
        self.listed.clear();
        self.list_repeats = false;
        self.owed.clear();
        self.done.clear();
        Ok(())
    }

    /// Hashes every id of a batch into `hashes` and pulls into cache what
    /// looking each one up will read: its group of tags, its slot and the
    /// start of its id in the arena.
    ///
    /// A lookup on a table larger than the cache is a chain of dependent
    /// misses (group, slot, id): one at a time, a batch pays them end to end.
    /// Here each pass issues one level of that chain for every event, and the
    /// events are independent, so the processor overlaps a pass's misses; the
    /// batch is then applied against warm lines. The passes only read (a
    /// position whose tag matches stands in for the real match, which the
    /// apply pass still checks), so they cannot change what the batch does.
    pub(crate) fn warm<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
        hashes: &mut Vec<u64>,
        candidates: &mut Vec<u32>,
    ) {
        hashes.clear();
        candidates.clear();
        hashes.extend(ids.map(|id| self.hasher.hash_one(id.as_bytes())));
        // The home group: the candidate is the first position with the tag.
        let mut touched = 0u64;
        for &h in hashes.iter() {
            let j = self.index.candidate(h).map_or(u32::MAX, |p| p as u32);
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

    /// Removes slot `i`. Keys stored past their home may move back into the
    /// hole (see `index/remove.rs`), each with its retry time, dirtiness and
    /// place in the sweep's pass.
    pub(crate) fn remove(&mut self, i: usize) {
        self.owed.retain(|&p| p as usize != i);
        self.done.retain(|&p| p as usize != i);
        let hash = self.hash_of(i);
        let key = self.slots[i].key;
        self.id_bytes -= id_bytes(&self.arena, &self.slots[i]).len();
        if let Some((_, len)) = key.in_arena() {
            self.garbage += len;
        }
        self.set_retry_at(i, 0);
        if self.slots[i].flags & DIRTY != 0 {
            self.dirty -= 1;
        }
        // A listed position of it is then passed over (and the index
        // unmarks it): the flag is the truth.
        self.slots[i].flags = 0;
        self.list_repeats = true;
        let mut moves = Vec::new();
        let (hasher, arena, slots) = (&self.hasher, &self.arena, &self.slots);
        self.index.remove(hash, i, |q| hasher.hash_one(id_bytes(arena, &slots[q])), &mut moves);
        for (from, to) in moves {
            self.relocate(from, to);
        }
        self.stamp += 1;
        if self.garbage > 4096 && self.garbage * 2 > self.arena.len() {
            self.compact();
        }
    }

    /// Moves the slot at `from` to the free position `to` (the index has
    /// moved its key and its mark), with its retry time, dirtiness and place
    /// in the pass. A slot moves back, or from the first bucket round to the
    /// last: one the pass has not visited that lands before the cursor is
    /// owed to the pass, one it has visited that lands after is done.
    fn relocate(&mut self, from: usize, to: usize) {
        let s = self.slots[from];
        self.slots[to] = s;
        self.slots[from].flags = 0;
        if s.flags & RETRY != 0 {
            let at = self.retry.remove(&(from as u32)).unwrap_or(0);
            self.retry.insert(to as u32, at);
        }
        if s.flags & DIRTY != 0 {
            // Listed at its old position perhaps, which now holds another
            // slot or none: the drain goes by the flag at each position.
            self.listed.push(to as u32);
        }
        let visited = self.visited(from);
        self.owed.retain(|&p| p as usize != from);
        self.done.retain(|&p| p as usize != from);
        match (visited, to < self.cursor) {
            (false, true) => self.owed.push(to as u32),
            (true, false) => self.done.push(to as u32),
            _ => {}
        }
    }

    fn hash_of(&self, i: usize) -> u64 {
        self.hasher.hash_one(id_bytes(&self.arena, &self.slots[i]))
    }

    /// Rewrites the arena without the bytes of removed ids.
    fn compact(&mut self) {
        let mut arena = String::with_capacity(self.arena.len() - self.garbage);
        for p in self.index.occupied() {
            let s = &mut self.slots[p];
            if let Some((start, len)) = s.key.in_arena() {
                // Fits: the new arena is no longer than the old.
                s.key = Key::long(arena.len() as u32, len as u16);
                arena.push_str(&self.arena[start..start + len]);
            }
        }
        self.arena = arena;
        self.garbage = 0;
    }

    /// Calls `f` with every slot that is dirty and its retry time, clearing
    /// the flags: the listed ones in the order they were listed (the slots a
    /// batch just wrote, still in cache; a repeat finds its flag cleared),
    /// then the marked ones in position order.
    pub(crate) fn drain_dirty(&mut self, mut f: impl FnMut(&[u8], &mut Slot, u64)) {
        if self.dirty == 0 {
            // Only entries of slots since removed or drained can be left.
            self.listed.clear();
            return;
        }
        let listed = std::mem::take(&mut self.listed);
        for i in listed.iter().map(|&p| p as usize).chain(self.index.marked()) {
            if self.slots[i].flags & DIRTY == 0 {
                continue;
            }
            let retry = if self.slots[i].flags & RETRY == 0 {
                0
            } else {
                self.retry.get(&(i as u32)).copied().unwrap_or(0)
            };
            let slot = &mut self.slots[i];
            slot.flags &= !DIRTY;
            // A copy lends the id: an id in place is inside the slot `f` may change.
            let held = *slot;
            f(id_bytes(&self.arena, &held), slot, retry);
        }
        self.end_drain(listed);
    }

    /// Empties the list (keeping its allocation) and the marks.
    fn end_drain(&mut self, mut listed: Vec<u32>) {
        listed.clear();
        self.listed = listed;
        self.list_repeats = false;
        self.index.clear_marks();
        self.dirty = 0;
        self.stamp += 1;
    }

    /// Calls `f` with every slot [`drain_dirty`](Self::drain_dirty) would
    /// pass, each once, without clearing anything; the id's bytes are a
    /// whole `&str`'s, unchecked here (see `changes::Upserts`).
    ///
    /// Without a removal since the drain, the list and the marks are each
    /// position once (see `list_repeats`), taken as they are: sorting a
    /// copy of the list to drop repeats was a sixth of a 1024-event batch.
    pub(crate) fn peek_dirty(&self, mut f: impl FnMut(&[u8], &Slot, u64)) {
        if !self.list_repeats {
            for i in self.listed.iter().map(|&p| p as usize).chain(self.index.marked()) {
                let slot = &self.slots[i];
                if slot.flags & DIRTY != 0 {
                    f(id_bytes(&self.arena, slot), slot, self.retry_at(i));
                }
            }
            return;
        }
        let mut listed = self.listed.clone();
        settle(&mut listed);
        for i in merged(&listed, self.index.marked()) {
            let slot = &self.slots[i];
            if slot.flags & DIRTY != 0 {
                f(id_bytes(&self.arena, slot), slot, self.retry_at(i));
            }
        }
    }

    /// What every change to the dirty set moves: equal before and after a
    /// span of code, that span made no slot dirty, drained none and added
    /// or removed none.
    pub(crate) fn dirty_stamp(&self) -> u64 {
        self.stamp
    }

    /// The dirty slots and an upper bound on the bytes of their ids, to reserve for a drain.
    pub(crate) fn dirty_estimate(&self) -> (usize, usize) {
        let n = self.dirty;
        // Mean id length, rounded up; a drain that outgrows it just reallocates.
        let mean = self.id_bytes.div_ceil(self.len().max(1));
        (n, n * mean)
    }

    pub(crate) fn has_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// Forgets pending dirtiness (after a load, the store already holds everything).
    pub(crate) fn clear_dirty(&mut self) {
        let mut listed = std::mem::take(&mut self.listed);
        settle(&mut listed);
        for i in merged(&listed, self.index.marked()) {
            self.slots[i].flags &= !DIRTY;
        }
        self.end_drain(listed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot { created_at_ms: 5, ..FREE }
    }

    /// Every length in place, every byte position distinct, multibyte
    /// characters included: the key built from fixed-size loads is the id's
    /// bytes after its length, zero after them; longer ids go to the arena.
    #[test]
    fn a_key_in_place_holds_the_length_then_the_bytes_then_zeros() {
        let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyzé€".chars().collect();
        for n in 0..=INLINE + 2 {
            for shift in 0..alphabet.len() {
                let mut id = String::new();
                for j in 0.. {
                    let c = alphabet[(shift + j) % alphabet.len()];
                    if id.len() + c.len_utf8() > n {
                        break;
                    }
                    id.push(c);
                }
                let key = Key::inline(&id);
                if id.len() > INLINE {
                    assert!(key.is_none());
                    continue;
                }
                let mut want = [0u8; INLINE + 1];
                want[0] = id.len() as u8;
                want[1..=id.len()].copy_from_slice(id.as_bytes());
                assert_eq!(key, Some(Key(want)), "{id:?}");
            }
        }
    }

    /// Clearing a retry time clears the time and its flag, and nothing else: a
    /// dirty slot stays dirty (its change still goes to the store), a slot
    /// whose only flag was RETRY is left with none, and the map forgets both.
    #[test]
    fn clearing_a_retry_time_clears_only_the_retry() {
        let mut slab = Slab::with_memory(SlabMemory::default(), 0, Some(1));
        let i = slab.insert("dirty", slot()).unwrap().unwrap();
        let j = slab.insert("plain", slot()).unwrap().unwrap();
        slab.slot_mut(i);
        slab.slots[j].flags = 0;
        slab.set_stored_retry_at(i, 500);
        slab.set_retry_at(j, 600);
        assert_eq!((slab.retry_at(i), slab.retry_at(j)), (500, 600));
        assert_eq!(slab.slot(i).flags, DIRTY | RETRY | STORED_HOLD);
        assert_eq!(slab.slot(j).flags, RETRY);
        // A time this process sets is on its own clock.
        slab.set_retry_at(i, 700);
        assert_eq!((slab.retry_at(i), slab.slot(i).flags), (700, DIRTY | RETRY));
        slab.set_retry_at(i, 0);
        slab.set_retry_at(j, 0);
        assert_eq!((slab.retry_at(i), slab.retry_at(j)), (0, 0));
        assert_eq!((slab.slot(i).flags, slab.slot(j).flags), (DIRTY, 0));
        assert!(slab.retry.is_empty());
    }

    /// A slot's retry time (a zero-count hold, say) and its dirtiness go with
    /// it wherever the table moves it: the slots a removal moves back into the
    /// place it freed, and every slot at a growth. Neither, in the middle of a
    /// pass, leaves a key the pass had not visited unvisited.
    #[test]
    fn retry_times_and_dirtiness_follow_a_slot_through_growth_and_removal() {
        let mut moved = 0;
        for seed in 0..40u64 {
            let mut slab = Slab::with_memory(SlabMemory::default(), 0, Some(seed));
            let ids: Vec<String> = (0..180).map(|i| format!("r{seed}-{i}")).collect();
            for id in &ids {
                slab.insert(id, slot()).unwrap().unwrap();
            }
            slab.clear_dirty();
            let want = |k: usize| if k.is_multiple_of(3) { 0 } else { 1000 + k as u64 };
            for (k, id) in ids.iter().enumerate() {
                let i = slab.find(id).unwrap();
                slab.set_retry_at(i, want(k));
                if k % 4 == 0 {
                    slab.slot_mut(i);
                }
            }
            let check = |slab: &Slab, live: &dyn Fn(usize) -> bool, when: &str| {
                for (k, id) in ids.iter().enumerate().filter(|(k, _)| live(*k)) {
                    let i = slab.find(id).unwrap();
                    assert_eq!(slab.retry_at(i), want(k), "seed {seed}, {when}: {id}'s retry time");
                    assert_eq!(
                        slab.slot(i).flags & DIRTY != 0,
                        k % 4 == 0,
                        "seed {seed}, {when}: {id}'s dirtiness"
                    );
                }
            };
            let mut visited = std::collections::HashSet::new();
            for _ in 0..(seed as usize % 120 + 10) {
                let p = slab.sweep_next().unwrap();
                visited.insert(slab.id(p).to_owned());
            }
            // Full buckets: a removal moves keys that passed the freed one back.
            for id in ids.iter().step_by(5) {
                let at: Vec<(&String, usize)> = ids.iter().filter_map(|k| Some((k, slab.find(k)?))).collect();
                slab.remove(slab.find(id).unwrap());
                moved += at.iter().filter(|&&(k, p)| slab.find(k).is_some_and(|q| q != p)).count();
            }
            let live = |k: usize| !k.is_multiple_of(5);
            check(&slab, &live, "after removals");
            let positions = slab.index.positions();
            let extra: Vec<String> = (0..200).map(|i| format!("x{seed}-{i}")).collect();
            for id in &extra {
                slab.insert(id, slot()).unwrap().unwrap();
            }
            assert!(slab.index.positions() > positions, "seed {seed}: no growth");
            check(&slab, &live, "grown");
            while let Some(p) = slab.sweep_next() {
                visited.insert(slab.id(p).to_owned());
            }
            let missed: Vec<_> = ids
                .iter()
                .enumerate()
                .filter(|&(k, id)| live(k) && !visited.contains(id))
                .map(|(_, id)| id)
                .collect();
            assert!(missed.is_empty(), "seed {seed}: the pass skipped {missed:?}");
        }
        assert!(moved > 0, "no removal moved a slot");
    }

    /// A removal that moves a key the sweep has not visited back before the
    /// cursor: the rest of the pass visits every key that was unvisited, and
    /// none twice. Removals are tried until such moves happened, so the
    /// check is not vacuous.
    #[test]
    fn a_key_moved_back_past_the_cursor_is_still_visited_in_the_pass() {
        let mut crossings = 0;
        for seed in 0..400u64 {
            let mut slab = Slab::with_memory(SlabMemory::default(), 0, Some(seed));
            // 180 keys in 16 buckets: the most before a growth, so many live
            // past a full home bucket.
            let ids: Vec<String> = (0..180).map(|i| format!("k{seed}-{i}")).collect();
            for id in &ids {
                slab.insert(id, slot()).unwrap().unwrap();
            }
            assert_eq!(slab.index.positions(), 16 * super::super::index::WAYS);
            let mut visited = std::collections::HashSet::new();
            for _ in 0..(seed as usize % 150 + 10) {
                let p = slab.sweep_next().unwrap();
                visited.insert(slab.id(p).to_owned());
            }
            let cursor = slab.cursor;
            let before: Vec<(String, usize)> =
                ids.iter().map(|id| (id.clone(), slab.find(id).unwrap())).collect();
            // Remove the visited key nearest the cursor: keys past it that
            // passed its bucket, unvisited, may shift back before the cursor.
            let victim = before
                .iter()
                .filter(|(id, _)| visited.contains(id))
                .max_by_key(|(_, p)| *p)
                .unwrap()
                .0
                .clone();
            slab.remove(slab.find(&victim).unwrap());
            for (id, p) in &before {
                if let Some(q) = slab.find(id)
                    && *p >= cursor
                    && q < cursor
                {
                    crossings += 1;
                }
            }
            while let Some(p) = slab.sweep_next() {
                assert!(visited.insert(slab.id(p).to_owned()), "seed {seed}: {} visited twice", slab.id(p));
            }
            let missed: Vec<_> = ids.iter().filter(|id| **id != victim && !visited.contains(*id)).collect();
            assert!(missed.is_empty(), "seed {seed}: the pass skipped {missed:?}");
        }
        assert!(crossings > 0, "no removal moved an unvisited key before the cursor");
    }
}
