//! Where the slab's slots sit: twelve positions to a bucket, picked by the
//! hash of a slot's id, and one 16-byte group of tags per bucket that says
//! which of its positions hold which hash.
//!
//! A lookup reads the group of its id's home bucket, then the one slot whose
//! tag matches. The groups are a small array (16 bytes per twelve slots, some
//! 1.5 MB for a million ghosts) that mostly stays in cache, so a lookup pays
//! one miss to memory: the slot, whose position follows from the hash rather
//! than from a slot number read first. A key whose home bucket is full lives
//! in the next bucket with room, and every bucket counts the keys that passed
//! it (`overflow`), so a lookup stops at the first bucket that no key of its
//! home passed.

mod marks;
mod remove;

/// Positions per bucket: their tags, the occupancy bits and the overflow
/// count fill one 16-byte group.
pub(crate) const WAYS: usize = 12;
/// An index is grown when an insert would take it past this load (15/16).
/// The slots sit in place, so every free position costs a whole slot: a
/// load this high is what keeps a table near 60 bytes a ghost.
const MAX_LOAD: (usize, usize) = (15, 16);
/// A built or grown index starts at this load (21/25): a table filled one
/// insert at a time grows by 1.12× a time, and never holds more than 1/0.84
/// positions per ghost (64 bytes at 13-byte ids).
const START_LOAD: (usize, usize) = (21, 25);
/// Below this many buckets an index doubles when it grows: memory is no
/// concern there, and growing 1.12× a time would rehash a small table often.
const DOUBLE_BELOW: usize = 1024;

/// One bucket's tags and counts.
///
/// `[..WAYS]`: the tags of the positions in use. `[BITS..OVERFLOW]`: a
/// little-endian 24-bit field: bit `k` set when position `k` holds a slot,
/// bit `WAYS + k` when its slot changed since the last drain (see
/// `marks.rs`). `[OVERFLOW]`: the keys stored past this bucket whose home
/// is this bucket or an earlier one. It saturates: a saturated count stays
/// (only a growth clears it), which costs lookups a bucket more but never
/// misses a key.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Group {
    meta: [u8; 16],
}

const BITS: usize = WAYS;
const OVERFLOW: usize = 15;
// The occupancy and change bits fit their field.
const _: () = assert!(2 * WAYS <= 8 * (OVERFLOW - BITS));
/// Occupancy of a full bucket.
const FULL: u16 = (1 << WAYS) - 1;
const EMPTY: Group = Group { meta: [0; 16] };

impl Group {
    /// The occupancy and change bits.
    fn bits(&self) -> u32 {
        u32::from_le_bytes([self.meta[BITS], self.meta[BITS + 1], self.meta[BITS + 2], 0])
    }

    fn set_bits(&mut self, bits: u32) {
        self.meta[BITS..OVERFLOW].copy_from_slice(&bits.to_le_bytes()[..3]);
    }

    fn occupied(&self) -> u16 {
        (self.bits() & u32::from(FULL)) as u16
    }

    fn overflow(&self) -> u8 {
        self.meta[OVERFLOW]
    }

    fn set_overflow(&mut self, n: u8) {
        self.meta[OVERFLOW] = n;
    }

    /// A bit for every position in use whose tag is `tag`.
    ///
    /// One vector compare of the 16-byte group, masked with the occupancy
    /// bits. The lookups of a run of edge events are independent, so the
    /// processor overlaps their cache misses, but only as many as its
    /// scheduler holds: every instruction that waits on a missed line takes a
    /// place there. A compare per tag put some fifty of them behind each
    /// miss: a lookup in the index alone, 1M ghosts in random order, took
    /// 135–157 ns; with the vector compare (four), 84–91. A branch per tag
    /// would be worse still: a mispredicted match throws the overlapped work away.
    #[inline]
    fn matches(&self, tag: u8) -> u32 {
        let eq = wide::u8x16::from(self.meta).cmp_eq(wide::u8x16::splat(tag)).move_mask() as u32;
        eq & u32::from(self.occupied())
    }
}

/// Which positions hold a slot, by the hash of their ids. The caller keeps
/// the slots, supplies hashes and decides equality (the index holds no id).
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    groups: Vec<Group>,
    len: usize,
    /// A bit per group with a changed slot (see `marks.rs`).
    marked_groups: Vec<u64>,
}

/// Where a hash's probe starts (a multiply-shift range map, so the number of
/// buckets need not be a power of two, and a larger index keeps the hashes'
/// order) and its tag.
fn home_and_tag(hash: u64, buckets: usize) -> (usize, u8) {
    let home = (((hash >> 32) * buckets as u64) >> 32) as usize;
    (home, (hash >> 24) as u8)
}

/// Buckets for `n` entries at `load`.
fn buckets_for(n: usize, load: (usize, usize)) -> usize {
    (n * load.1).div_ceil(WAYS * load.0).max(1)
}

/// The most entries an index built for them fits in `positions` (see
/// [`Index::reused`]).
pub(crate) fn room_in(positions: usize) -> usize {
    positions / WAYS * WAYS * START_LOAD.0 / START_LOAD.1
}

impl Index {
    /// This index emptied, with room for `n` entries before it grows, in the
    /// memory it already has where that is enough.
    pub(crate) fn reused(mut self, n: usize) -> Self {
        let buckets = if n == 0 { 0 } else { buckets_for(n, START_LOAD) };
        self.groups.clear();
        self.groups.reserve_exact(buckets);
        self.groups.resize(buckets, EMPTY);
        self.len = 0;
        self.marked_groups.clear();
        self.marked_groups.resize(buckets.div_ceil(64), 0);
        self
    }

    /// An empty index of the size a growth to room for `room` entries takes.
    pub(crate) fn grown(&self, room: usize) -> Self {
        let mut buckets = buckets_for(room.max(self.len + 1), START_LOAD);
        if self.groups.len() < DOUBLE_BELOW {
            buckets = buckets.max(self.groups.len() * 2);
        }
        Self { groups: vec![EMPTY; buckets], len: 0, marked_groups: vec![0; buckets.div_ceil(64)] }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Positions, in use or not: slots `0..positions()`.
    pub(crate) fn positions(&self) -> usize {
        self.groups.len() * WAYS
    }

    /// Whether position `p` holds a slot.
    pub(crate) fn is_occupied(&self, p: usize) -> bool {
        self.groups.get(p / WAYS).is_some_and(|g| g.occupied() & (1 << (p % WAYS)) != 0)
    }

    /// The first position at or after `p` that holds a slot.
    pub(crate) fn next_occupied(&self, p: usize) -> Option<usize> {
        let (mut b, k) = (p / WAYS, p % WAYS);
        let mut bits = self.groups.get(b)?.occupied() & (FULL << k);
        loop {
            if bits != 0 {
                return Some(b * WAYS + bits.trailing_zeros() as usize);
            }
            b += 1;
            bits = self.groups.get(b)?.occupied();
        }
    }

    /// Every position that holds a slot, in order.
    pub(crate) fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups.iter().enumerate().flat_map(|(b, g)| {
            let mut bits = g.occupied();
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let k = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    b * WAYS + k
                })
            })
        })
    }

    fn next(&self, b: usize) -> usize {
        if b + 1 == self.groups.len() { 0 } else { b + 1 }
    }

    /// The position whose tag is `hash`'s and that satisfies `eq`.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.groups.is_empty() {
            return None;
        }
        let (mut b, tag) = home_and_tag(hash, self.groups.len());
        // At most a lap: a removal keeps every bucket that a key passed full
        // (see `remove.rs`), and some bucket has room, so a probe meets a
        // count of 0 sooner; the bound holds whatever the counts say.
        for _ in 0..self.groups.len() {
            let group = &self.groups[b];
            let mut matches = group.matches(tag);
            while matches != 0 {
                let p = b * WAYS + matches.trailing_zeros() as usize;
                if eq(p) {
                    return Some(p);
                }
                matches &= matches - 1;
            }
            if group.overflow() == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// The first position of `hash`'s home bucket with its tag, without
    /// checking it: for warming a batch (see `Slab::warm`). Reads one group.
    pub(crate) fn candidate(&self, hash: u64) -> Option<usize> {
        if self.groups.is_empty() {
            return None;
        }
        let (b, tag) = home_and_tag(hash, self.groups.len());
        let matches = self.groups[b].matches(tag);
        (matches != 0).then(|| b * WAYS + matches.trailing_zeros() as usize)
    }

    /// Entries the index holds before it must grow.
    pub(crate) fn room(&self) -> usize {
        self.positions() * MAX_LOAD.0 / MAX_LOAD.1
    }

    /// The position an insert under `hash` would take if its home bucket has
    /// room (else some position of it): a guess, for warming. Reads one group.
    pub(crate) fn first_free(&self, hash: u64) -> usize {
        if self.groups.is_empty() {
            return 0;
        }
        let (b, _) = home_and_tag(hash, self.groups.len());
        b * WAYS + ((!self.groups[b].occupied() & FULL).trailing_zeros() as usize % WAYS)
    }

    /// True when one more entry needs a growth first (see [`grown`](Self::grown)).
    pub(crate) fn needs_growth(&self) -> bool {
        (self.len + 1) * MAX_LOAD.1 > self.positions() * MAX_LOAD.0
    }

    /// Takes a position for a key under `hash` and returns it; the caller
    /// knows no equal key is present and that the index has room (see
    /// [`needs_growth`](Self::needs_growth); a grown index, filled by the
    /// caller, has room for all it held).
    pub(crate) fn insert_unique(&mut self, hash: u64) -> usize {
        debug_assert!(self.len < self.positions());
        let (mut b, tag) = home_and_tag(hash, self.groups.len());
        while self.groups[b].occupied() == FULL {
            let o = self.groups[b].overflow();
            self.groups[b].set_overflow(o.saturating_add(1));
            b = self.next(b);
        }
        let group = &mut self.groups[b];
        let k = (!group.occupied() & FULL).trailing_zeros() as usize;
        group.meta[k] = tag;
        // A free position is never marked (see `remove.rs`).
        group.set_bits(group.bits() | (1 << k));
        self.len += 1;
        b * WAYS + k
    }
}

#[cfg(test)]
mod tests {
    // The marks' tests are in `marks.rs`.
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    #[test]
    fn a_group_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Group>(), 16);
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
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![3 => (0u32..300).prop_map(Op::Insert), 2 => (0u32..300).prop_map(Op::Remove)]
    }

    proptest! {
        /// Against a `HashMap` of key -> position: inserts (growing as the
        /// slab does, moving every key to the larger index) and removals
        /// (moving keys back as the index says), under a good hash and under
        /// one that crowds every key into a bucket or two; the positions in
        /// use are exactly the model's, and no bucket with room has a count.
        #[test]
        fn index_matches_a_map(ops in prop::collection::vec(op(), 1..400), crowd in any::<bool>()) {
            let hash = |k: u32| if crowd { crowded(k) } else { foldhash::fast::FixedState::with_seed(1).hash_one(k) };
            // position -> key, and the model key -> position.
            let mut keys: HashMap<usize, u32> = HashMap::new();
            let mut model: HashMap<u32, usize> = HashMap::new();
            let mut index = Index::default();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        let found = index.find(hash(k), |p| keys[&p] == k);
                        prop_assert_eq!(found, model.get(&k).copied());
                        if found.is_none() {
                            if index.needs_growth() {
                                let mut grown = index.grown(model.len() + 1);
                                let mut moved = HashMap::new();
                                for p in index.occupied() {
                                    moved.insert(grown.insert_unique(hash(keys[&p])), keys[&p]);
                                }
                                index = grown;
                                keys = moved;
                                model = keys.iter().map(|(&p, &k)| (k, p)).collect();
                                prop_assert!(!index.needs_growth());
                            }
                            let p = index.insert_unique(hash(k));
                            prop_assert!(!keys.contains_key(&p), "position {} taken twice", p);
                            keys.insert(p, k);
                            model.insert(k, p);
                        }
                    }
                    Op::Remove(k) => {
                        if let Some(p) = model.remove(&k) {
                            keys.remove(&p);
                            let mut moves = Vec::new();
                            index.remove(hash(k), p, |q| hash(keys[&q]), &mut moves);
                            for (from, to) in moves {
                                let moved = keys.remove(&from).expect("a key moves from a position in use");
                                prop_assert!(keys.insert(to, moved).is_none(), "moved onto a position in use");
                                model.insert(moved, to);
                            }
                        }
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert_eq!(index.passed_with_room(), 0);
                // Each count is the number of keys that passed its bucket,
                // unless it saturated (then it stays until no key passes).
                let n = index.groups.len();
                let mut passers = vec![0usize; n];
                for (&p, &k) in &keys {
                    let mut b = home_and_tag(hash(k), n).0;
                    while b != p / WAYS {
                        passers[b] += 1;
                        b = index.next(b);
                    }
                }
                for (b, &true_count) in passers.iter().enumerate() {
                    let count = index.groups[b].overflow();
                    prop_assert!(count == u8::MAX || usize::from(count) == true_count,
                        "bucket {} counts {} keys passing, {} do", b, count, true_count);
                }
            }
            for k in 0..400u32 {
                prop_assert_eq!(index.find(hash(k), |p| keys[&p] == k), model.get(&k).copied());
            }
            let mut used: Vec<usize> = keys.keys().copied().collect();
            used.sort_unstable();
            prop_assert_eq!(index.occupied().collect::<Vec<_>>(), used.clone());
            for (i, &p) in used.iter().enumerate() {
                prop_assert!(index.is_occupied(p));
                let from = if i == 0 { 0 } else { used[i - 1] + 1 };
                prop_assert_eq!(index.next_occupied(from), Some(p));
            }
            prop_assert_eq!(index.next_occupied(used.last().map_or(0, |&p| p + 1)), None);
        }
    }

    /// Four hundred keys in one home bucket: the counts of the buckets they
    /// pass saturate (at 255), and stay so while keys are removed. Removing
    /// them all, in a shuffled order, keeps every remaining key findable and
    /// no count on a bucket with room; a saturated count whose passers are
    /// all gone is cleared, so the empty index sends a new key home again.
    #[test]
    fn saturated_counts_are_cleared_once_no_key_passes() {
        let mut index = Index::default().reused(600);
        let mut keys: HashMap<usize, u32> = HashMap::new();
        let mut at: HashMap<u32, usize> = HashMap::new();
        for k in 0..400u32 {
            let p = index.insert_unique(crowded(k));
            keys.insert(p, k);
            at.insert(k, p);
        }
        assert_eq!(index.groups[0].overflow(), u8::MAX, "the home bucket's count saturated");
        let mut order: Vec<u32> = (0..400).collect();
        let mut x = 0x9e37_79b9_u32;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            order.swap(i, x as usize % (i + 1));
        }
        for (n, &k) in order.iter().enumerate() {
            let p = at.remove(&k).unwrap();
            keys.remove(&p);
            let mut moves = Vec::new();
            index.remove(crowded(k), p, |q| crowded(keys[&q]), &mut moves);
            for (from, to) in moves {
                let moved = keys.remove(&from).unwrap();
                keys.insert(to, moved);
                at.insert(moved, to);
            }
            assert_eq!(index.passed_with_room(), 0, "after {} removals", n + 1);
            if n % 50 == 0 {
                for (&k, &p) in &at {
                    assert_eq!(index.find(crowded(k), |q| keys[&q] == k), Some(p));
                }
            }
        }
        assert_eq!(index.len(), 0);
        assert!(index.groups.iter().all(|g| g.overflow() == 0), "every count cleared");
        assert!(index.insert_unique(crowded(7)) < WAYS, "a new key stops at home");
    }

    #[test]
    fn a_grown_index_keeps_every_key_findable_and_its_load_in_bounds() {
        let hash = |k: u32| foldhash::fast::FixedState::with_seed(2).hash_one(k);
        let mut index = Index::default().reused(10_000);
        let mut at = HashMap::new();
        for k in 0..10_000u32 {
            assert!(!index.needs_growth(), "sized for 10 000");
            at.insert(index.insert_unique(hash(k)), k);
        }
        assert!(index.room() >= 10_000);
        let mut grown = index.grown(20_000);
        let mut moved = HashMap::new();
        for p in index.occupied() {
            moved.insert(grown.insert_unique(hash(at[&p])), at[&p]);
        }
        assert_eq!(grown.len(), 10_000);
        for k in 0..10_000u32 {
            assert_eq!(grown.find(hash(k), |p| moved[&p] == k).map(|p| moved[&p]), Some(k));
        }
        assert_eq!(grown.find(hash(10_001), |p| moved[&p] == 10_001), None);
        // Past the doubling sizes, a growth adds an eighth or so, not a doubling.
        let big = Index::default().reused(1_000_000);
        let next = big.grown(big.room() + 1);
        let ratio = next.positions() as f64 / big.positions() as f64;
        assert!((1.05..1.2).contains(&ratio), "grew {ratio}×");
    }
}
