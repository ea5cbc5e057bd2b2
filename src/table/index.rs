//! The slab's hash index: slot numbers in cache-line buckets, each beside the
//! tags that pick it out, so that a lookup reads one line of index and then
//! its slot.
//!
//! A general-purpose table (hashbrown) keeps its control bytes and its
//! entries in two arrays: on a table larger than the cache a lookup pays a
//! miss on the control group and then, dependent on it, another on the
//! entry. Here a 64-byte bucket holds twelve slot numbers and their one-byte
//! tags together; a key whose home bucket is full lives in the next one with
//! room, and every bucket counts the keys that passed it (`overflow`), so a
//! lookup stops at the first bucket that no key of its home passed.

/// Entries per bucket: twelve slot numbers (48 bytes) and their tags fill a
/// line with the bucket's two counts.
const WAYS: usize = 12;
/// An index is grown when an insert would take it past this load (4/5).
const MAX_LOAD: (usize, usize) = (4, 5);
/// A built or grown index starts at this load (5/8), so that a table filled
/// one insert at a time grows by 1.28× a time, and little memory sits unused.
const START_LOAD: (usize, usize) = (5, 8);

/// One cache line of the index.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    slots: [u32; WAYS],
    /// The entries' tags, then the bucket's two counts: one 16-byte group,
    /// so that a lookup compares every tag at once (see [`matches`](Self::matches)).
    /// `[..WAYS]`: the tags of the first `len` entries, which are in use.
    /// `[LEN]`: `len`. `[OVERFLOW..]`: `overflow`, a little-endian `u16`, the
    /// keys stored past this bucket whose home is this bucket or an earlier
    /// one. It saturates: a saturated count stays (only a rebuild clears it),
    /// which costs lookups a bucket more but never misses a key.
    meta: [u8; 16],
}

const LEN: usize = WAYS;
const OVERFLOW: usize = 14;

impl Bucket {
    fn len(&self) -> usize {
        usize::from(self.meta[LEN])
    }

    fn set_len(&mut self, n: usize) {
        self.meta[LEN] = n as u8;
    }

    fn overflow(&self) -> u16 {
        u16::from_le_bytes([self.meta[OVERFLOW], self.meta[OVERFLOW + 1]])
    }

    fn set_overflow(&mut self, n: u16) {
        self.meta[OVERFLOW..].copy_from_slice(&n.to_le_bytes());
    }

    fn tag(&self, k: usize) -> u8 {
        self.meta[k]
    }

    /// A bit for every entry in use whose tag is `tag`.
    ///
    /// One vector compare of the 16-byte group (the counts' lanes are masked
    /// off with the unused entries). The lookups of a run of edge events are
    /// independent, so the processor overlaps their cache misses, but only as
    /// many as its scheduler holds: every instruction that waits on a missed
    /// line takes a place there. A compare per tag put some fifty of them
    /// behind each bucket's miss: a lookup in the index alone, 1M ghosts in
    /// random order, took 135–157 ns; with the vector compare (four), 84–91.
    /// A branch per tag would be worse still: a mispredicted match throws the
    /// overlapped work away.
    #[inline]
    fn matches(&self, tag: u8) -> u32 {
        let eq = wide::u8x16::from(self.meta).cmp_eq(wide::u8x16::splat(tag)).move_mask() as u32;
        eq & ((1u32 << self.len()) - 1)
    }
}

const EMPTY: Bucket = Bucket { slots: [0; WAYS], meta: [0; 16] };

/// Slot numbers by the hash of their ids. The caller supplies hashes and
/// decides equality (the index does not hold ids).
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    buckets: Vec<Bucket>,
    len: usize,
}

/// Where a hash's probe starts (a multiply-shift range map, so the number of
/// buckets need not be a power of two) and its tag.
fn home_and_tag(hash: u64, buckets: usize) -> (usize, u8) {
    let home = (((hash >> 32) * buckets as u64) >> 32) as usize;
    (home, (hash >> 24) as u8)
}

/// Buckets for `n` entries at `load`.
fn buckets_for(n: usize, load: (usize, usize)) -> usize {
    (n * load.1).div_ceil(WAYS * load.0).max(1)
}

impl Index {
    /// This index emptied, with room for `n` entries before it grows, in the
    /// memory it already has where that is enough.
    pub(crate) fn reused(mut self, n: usize) -> Self {
        let buckets = if n == 0 { 0 } else { buckets_for(n, MAX_LOAD) };
        self.buckets.clear();
        self.buckets.reserve_exact(buckets);
        self.buckets.resize(buckets, EMPTY);
        self.len = 0;
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries the index holds before it must grow.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buckets.len() * WAYS * MAX_LOAD.0 / MAX_LOAD.1
    }

    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() { 0 } else { b + 1 }
    }

    /// The slot whose entry has `hash`'s tag and satisfies `eq`.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let (mut b, tag) = home_and_tag(hash, self.buckets.len());
        loop {
            let bucket = &self.buckets[b];
            let mut matches = bucket.matches(tag);
            while matches != 0 {
                let slot = bucket.slots[matches.trailing_zeros() as usize];
                if eq(slot) {
                    return Some(slot);
                }
                matches &= matches - 1;
            }
            if bucket.overflow() == 0 {
                return None;
            }
            b = self.next(b);
        }
    }

    /// The first entry of `hash`'s home bucket with its tag, without
    /// checking it: for warming a batch (see `Slab::warm`). Reads one line.
    pub(crate) fn candidate(&self, hash: u64) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let (b, tag) = home_and_tag(hash, self.buckets.len());
        let (bucket, matches) = (&self.buckets[b], self.buckets[b].matches(tag));
        (matches != 0).then(|| bucket.slots[matches.trailing_zeros() as usize])
    }

    /// True when one more entry needs [`rebuild`](Self::rebuild) first.
    pub(crate) fn needs_growth(&self) -> bool {
        (self.len + 1) * MAX_LOAD.1 > self.buckets.len() * WAYS * MAX_LOAD.0
    }

    /// Adds `slot` under `hash`; the caller knows no equal key is present and
    /// that the index has room (see [`needs_growth`](Self::needs_growth)).
    pub(crate) fn insert_unique(&mut self, hash: u64, slot: u32) {
        debug_assert!(!self.needs_growth());
        let (mut b, tag) = home_and_tag(hash, self.buckets.len());
        while self.buckets[b].len() == WAYS {
            let o = self.buckets[b].overflow();
            self.buckets[b].set_overflow(o.saturating_add(1));
            b = self.next(b);
        }
        let bucket = &mut self.buckets[b];
        let k = bucket.len();
        bucket.slots[k] = slot;
        bucket.meta[k] = tag;
        bucket.set_len(k + 1);
        self.len += 1;
    }

    /// Repoints the entry of `from` (under `hash`) at `to`; false if absent.
    pub(crate) fn replace(&mut self, hash: u64, from: u32, to: u32) -> bool {
        match self.locate(hash, from) {
            Some((b, k)) => {
                self.buckets[b].slots[k] = to;
                true
            }
            None => false,
        }
    }

    /// Removes the entry of `slot` (under `hash`); false if absent.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let Some((at, k)) = self.locate(hash, slot) else {
            return false;
        };
        let bucket = &mut self.buckets[at];
        let last = bucket.len() - 1;
        bucket.slots[k] = bucket.slots[last];
        bucket.meta[k] = bucket.meta[last];
        bucket.set_len(last);
        // The key passed every bucket from its home up to `at`.
        let (mut b, _) = home_and_tag(hash, self.buckets.len());
        while b != at {
            let o = self.buckets[b].overflow();
            if o != u16::MAX {
                self.buckets[b].set_overflow(o - 1);
            }
            b = self.next(b);
        }
        self.len -= 1;
        true
    }

    /// Bucket and way of the entry for `slot` under `hash`.
    fn locate(&self, hash: u64, slot: u32) -> Option<(usize, usize)> {
        if self.buckets.is_empty() {
            return None;
        }
        let (mut b, tag) = home_and_tag(hash, self.buckets.len());
        loop {
            let bucket = &self.buckets[b];
            if let Some(k) = (0..bucket.len()).find(|&k| bucket.slots[k] == slot && bucket.tag(k) == tag) {
                return Some((b, k));
            }
            if bucket.overflow() == 0 {
                return None;
            }
            b = self.next(b);
        }
    }

    /// Moves every entry into a larger index with room for `room` entries;
    /// `rehash(slot)` is the slot's hash.
    ///
    /// The old buckets are read in order, and a key's home moves in step with
    /// its old one (the range map keeps hashes in order), so the new index is
    /// written front to back. Only the two indexes are held: no list of
    /// hashes, which a table filled one insert at a time would otherwise
    /// leave behind in its heap as it grows.
    pub(crate) fn grow(&mut self, room: usize, mut rehash: impl FnMut(u32) -> u64) {
        let n = buckets_for(room.max(self.len), START_LOAD);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n]);
        self.len = 0;
        for bucket in &old {
            for &slot in &bucket.slots[..bucket.len()] {
                self.insert_unique(rehash(slot), slot);
            }
        }
    }

    /// Rebuilds the index from `hashes[i]`, the hash of slot `i`, with room
    /// for `room` entries (at least `hashes.len()`), reusing its memory when
    /// the size stays. `same(a, b)` says whether slots `a` and `b` hold equal
    /// ids; it is asked only of slots whose hashes share a tag and a probe,
    /// and a `true` stops the rebuild with `Err` of the later slot (the index
    /// is then incomplete: rebuild it again before use).
    ///
    /// Slots are inserted grouped by their home bucket (one counting-sort
    /// pass), so the index is written front to back rather than at random:
    /// inserting a million slots in slot order costs a cache miss each.
    pub(crate) fn rebuild(
        &mut self,
        hashes: &[u64],
        room: usize,
        mut same: impl FnMut(u32, u32) -> bool,
    ) -> Result<(), u32> {
        let n = buckets_for(room.max(hashes.len()), START_LOAD);
        self.buckets.clear();
        self.buckets.resize(n, EMPTY);
        self.len = 0;
        for (h, i) in by_home(hashes, n) {
            if let Some(j) = self.find(h, |j| same(i, j)) {
                return Err(i.max(j));
            }
            self.insert_unique(h, i);
        }
        Ok(())
    }
}

/// `(hash, slot)` for every slot, in order of home bucket among `buckets`.
fn by_home(hashes: &[u64], buckets: usize) -> Vec<(u64, u32)> {
    // Groups of about 64 buckets: fine enough that a group's lines stay in
    // cache, coarse enough that the counts do.
    const SHIFT: u32 = 6;
    let groups = (buckets >> SHIFT) + 1;
    let group = |h: u64| home_and_tag(h, buckets).0 >> SHIFT;
    let mut starts = vec![0usize; groups + 1];
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn a_bucket_is_one_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    /// Hashes that all land in one bucket with one tag: every lookup walks
    /// overflowed buckets and checks equality.
    fn crowded(key: u32) -> u64 {
        u64::from(key) & 0xff
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32),
        Remove(u32),
        Move(u32, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..300).prop_map(Op::Insert),
            2 => (0u32..300).prop_map(Op::Remove),
            1 => (0u32..300, 300u32..400).prop_map(|(a, b)| Op::Move(a, b)),
        ]
    }

    proptest! {
        /// Against a `HashMap` of key -> slot, with keys as slot numbers'
        /// payloads: inserts (growing by rebuild), removals and moves, under a
        /// good hash and under one that crowds every key into a bucket or two.
        #[test]
        fn index_matches_a_map(ops in prop::collection::vec(op(), 1..400), crowd in any::<bool>()) {
            let hash = |k: u32| if crowd { crowded(k) } else { foldhash::fast::FixedState::with_seed(1).hash_one(k) };
            // slot -> key, and the model key -> slot.
            let mut keys: HashMap<u32, u32> = HashMap::new();
            let mut model: HashMap<u32, u32> = HashMap::new();
            let mut index = Index::default();
            let mut next_slot = 0u32;
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        let found = index.find(hash(k), |s| keys[&s] == k);
                        prop_assert_eq!(found, model.get(&k).copied());
                        if found.is_none() {
                            if index.needs_growth() && model.len().is_multiple_of(2) {
                                index.grow(model.len() + 1, |s| hash(keys[&s]));
                            } else if index.needs_growth() {
                                let mut slots: Vec<u32> = keys.keys().copied().collect();
                                slots.sort_unstable();
                                // Renumber densely, as the slab's slots are.
                                let mut renumbered = HashMap::new();
                                for (i, s) in slots.iter().enumerate() {
                                    renumbered.insert(i as u32, keys[s]);
                                }
                                keys = renumbered;
                                model = keys.iter().map(|(&s, &k)| (k, s)).collect();
                                next_slot = keys.len() as u32;
                                let hashes: Vec<u64> = (0..next_slot).map(|s| hash(keys[&s])).collect();
                                prop_assert!(index.rebuild(&hashes, hashes.len() + 1, |a, b| keys[&a] == keys[&b]).is_ok());
                            }
                            index.insert_unique(hash(k), next_slot);
                            keys.insert(next_slot, k);
                            model.insert(k, next_slot);
                            next_slot += 1;
                        }
                    }
                    Op::Remove(k) => {
                        let removed = model.remove(&k);
                        if let Some(s) = removed {
                            keys.remove(&s);
                        }
                        prop_assert_eq!(removed.is_some_and(|s| index.remove(hash(k), s)), removed.is_some());
                    }
                    Op::Move(k, to) => {
                        if let Some(&s) = model.get(&k) && !keys.contains_key(&(to + 1000)) {
                            let to = to + 1000;
                            prop_assert!(index.replace(hash(k), s, to));
                            keys.remove(&s);
                            keys.insert(to, k);
                            model.insert(k, to);
                        }
                    }
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for k in 0..400u32 {
                prop_assert_eq!(index.find(hash(k), |s| keys[&s] == k), model.get(&k).copied());
            }
        }
    }

    #[test]
    fn rebuild_keeps_every_slot_findable() {
        let hash = |k: u32| foldhash::fast::FixedState::with_seed(2).hash_one(k);
        let hashes: Vec<u64> = (0..10_000).map(hash).collect();
        let mut index = Index::default();
        assert_eq!(index.rebuild(&hashes, hashes.len(), |_, _| false), Ok(()));
        assert_eq!(index.len(), 10_000);
        for k in 0..10_000u32 {
            assert_eq!(index.find(hash(k), |s| s == k), Some(k));
        }
        assert_eq!(index.find(hash(10_001), |s| s == 10_001), None);
        assert!(index.capacity() >= 10_000);
        // Slot 7 holds slot 3's key again.
        let mut repeated = hashes.clone();
        repeated[7] = hashes[3];
        let key = |s: u32| if s == 7 { 3 } else { s };
        assert_eq!(index.rebuild(&repeated, repeated.len(), |a, b| key(a) == key(b)), Err(7));
    }
}
