//! Dense stub storage: one id arena, one slot vector, one hash index of slot numbers.

use crate::error::{Error, Result};
use foldhash::fast::RandomState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// Slot flag: changed since the last `take_changes`.
pub(crate) const DIRTY: u8 = 1;

/// The fixed-size part of a stub. The id lives in the arena, so it is stored once
/// and costs no allocation of its own (a `String` key would cost 24 bytes plus a
/// heap block per ghost).
#[derive(Debug, Clone, Copy)]
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
    pub(crate) created_at_ms: u64,
    pub(crate) epoch: u64,
    pub(crate) version: u64,
    /// Not offered to the sweeper before this time (0: no back-off).
    pub(crate) retry_at_ms: u64,
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
    /// the slot's DIRTY flag is the truth).
    dirty: Vec<u32>,
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
        let hash = self.hasher.hash_one(id.as_bytes());
        let (arena, slots) = (&self.arena, &self.slots);
        self.index.find(hash, |&i| id_bytes(arena, &slots[i as usize]) == id.as_bytes()).map(|&i| i as usize)
    }

    /// Mutable access that marks the slot dirty.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut Slot {
        let s = &mut self.slots[i];
        if s.flags & DIRTY == 0 {
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
        self.dirty.push(i as u32);
        Ok(Ok(i))
    }

    /// Appends a stub without indexing it; [`rebuild_index`](Self::rebuild_index) must follow.
    pub(crate) fn push_unindexed(&mut self, id: &str, mut slot: Slot) -> Result<()> {
        if self.slots.len() >= u32::MAX as usize {
            return Err(Error::CapacityExceeded("more than 2^32-1 stubs"));
        }
        if self.arena.len() + id.len() > u32::MAX as usize {
            return Err(Error::CapacityExceeded("node id arena above 4 GiB"));
        }
        slot.id_off = self.arena.len() as u32;
        slot.id_len = id.len() as u16;
        slot.flags = 0;
        self.arena.push_str(id);
        self.slots.push(slot);
        Ok(())
    }

    /// Indexes every slot from scratch; `Err(i)` names a slot whose id repeats.
    pub(crate) fn rebuild_index(&mut self) -> std::result::Result<(), usize> {
        self.index.clear();
        let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
        self.index.reserve(slots.len(), |&j| hasher.hash_one(id_bytes(arena, &slots[j as usize])));
        for (i, s) in slots.iter().enumerate() {
            let id = id_bytes(arena, s);
            let entry = self.index.entry(
                hasher.hash_one(id),
                |&j| id_bytes(arena, &slots[j as usize]) == id,
                |&j| hasher.hash_one(id_bytes(arena, &slots[j as usize])),
            );
            match entry {
                hashbrown::hash_table::Entry::Occupied(_) => return Err(i),
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(i as u32);
                }
            }
        }
        Ok(())
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
        if self.slots[to].flags & DIRTY != 0 {
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

    /// Calls `f` with every slot that is dirty, clearing the flags.
    pub(crate) fn drain_dirty(&mut self, mut f: impl FnMut(&str, &mut Slot)) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let i = i as usize;
            if i < self.slots.len() && self.slots[i].flags & DIRTY != 0 {
                self.slots[i].flags &= !DIRTY;
                let slot = &mut self.slots[i];
                f(id_of(&self.arena, slot), slot);
            }
        }
        // Keep the allocation: flushes happen often and the list refills.
        let mut dirty = dirty;
        dirty.clear();
        self.dirty = dirty;
    }

    /// An upper bound on the dirty slots and the bytes of their ids, to reserve for a drain.
    pub(crate) fn dirty_estimate(&self) -> (usize, usize) {
        let n = self.dirty.len().min(self.slots.len());
        // Mean id length, rounded up; a drain that outgrows it just reallocates.
        let mean = self.arena.len().div_ceil(self.slots.len().max(1));
        (n, n * mean)
    }

    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Forgets pending dirtiness (after a load, the store already holds everything).
    pub(crate) fn clear_dirty(&mut self) {
        for &i in &self.dirty {
            if let Some(s) = self.slots.get_mut(i as usize) {
                s.flags &= !DIRTY;
            }
        }
        self.dirty.clear();
    }
}

fn id_bytes<'a>(arena: &'a str, s: &Slot) -> &'a [u8] {
    id_of(arena, s).as_bytes()
}

fn id_of<'a>(arena: &'a str, s: &Slot) -> &'a str {
    // Offsets always start and end whole ids, so they fall on char boundaries.
    &arena[s.id_off as usize..s.id_off as usize + s.id_len as usize]
}
