//! Which slots changed since the last drain: a bit per position in its
//! bucket's group, and a bit per group that has one set.
//!
//! A new stub is marked here (see `dirty.rs` for edge events): its insert
//! has just written the group, so the mark costs a store to a line already
//! in cache, and one to the summary (a bit per group, some 12 KB for a
//! million ghosts). A drain walks the summary, then the marked groups, in
//! position order.

use super::{Index, WAYS};

impl Index {
    /// Marks position `p` (which holds a slot) changed.
    pub(crate) fn mark(&mut self, p: usize) {
        let (b, k) = (p / WAYS, p % WAYS);
        let group = &mut self.groups[b];
        group.set_bits(group.bits() | 1 << (WAYS + k));
        self.marked_groups[b / 64] |= 1 << (b % 64);
    }

    /// Clears position `p`'s mark, if it has one.
    pub(crate) fn unmark(&mut self, p: usize) {
        let (b, k) = (p / WAYS, p % WAYS);
        let bits = self.groups[b].bits();
        let bit = 1 << (WAYS + k);
        if bits & bit != 0 {
            self.groups[b].set_bits(bits & !bit);
            if (bits & !bit) >> WAYS == 0 {
                self.marked_groups[b / 64] &= !(1 << (b % 64));
            }
        }
    }

    /// Every marked position, in order.
    pub(crate) fn marked(&self) -> impl Iterator<Item = usize> + '_ {
        ones(&self.marked_groups)
            .flat_map(move |b| ones_of(u64::from(self.groups[b].bits() >> WAYS)).map(move |k| b * WAYS + k))
    }

    /// Clears every mark, visiting only the marked groups.
    pub(crate) fn clear_marks(&mut self) {
        for w in 0..self.marked_groups.len() {
            let set = std::mem::take(&mut self.marked_groups[w]);
            for i in ones_of(set) {
                let g = &mut self.groups[w * 64 + i];
                g.set_bits(g.bits() & ((1 << WAYS) - 1));
            }
        }
    }
}

/// The set bits of `words`, as indexes into them.
fn ones(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(i, &w)| ones_of(w).map(move |k| i * 64 + k))
}

/// The set bits of `w`, lowest first.
fn ones_of(mut w: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (w != 0).then(|| {
            let k = w.trailing_zeros() as usize;
            w &= w - 1;
            k
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::hash::BuildHasher;

    proptest! {
        /// Against a `BTreeSet` of marked keys: marks, unmarks, clears and
        /// removals (which unmark), over keys placed across many groups and
        /// summary words; the marks never disturb lookups or occupancy.
        #[test]
        fn marks_match_a_set(ops in prop::collection::vec((0u8..4, 0u32..6000), 1..400)) {
            let hash = |k: u32| foldhash::fast::FixedState::with_seed(3).hash_one(k);
            let mut index = Index::default().reused(6000);
            let mut at = std::collections::HashMap::new();
            let mut key_at = std::collections::HashMap::new();
            for k in 0..6000u32 {
                let p = index.insert_unique(hash(k));
                at.insert(k, p);
                key_at.insert(p, k);
            }
            let mut model = BTreeSet::new();
            let mut removed = BTreeSet::new();
            for (op, k) in ops {
                let p = at[&k];
                match op {
                    _ if removed.contains(&k) => {}
                    0 => { index.mark(p); model.insert(p); }
                    1 => { index.unmark(p); model.remove(&p); }
                    2 if k % 97 == 0 => { index.clear_marks(); model.clear(); }
                    3 if k % 5 == 0 => {
                        // A removal moves keys back, and their marks with them.
                        key_at.remove(&p);
                        model.remove(&p);
                        removed.insert(k);
                        let mut moves = Vec::new();
                        index.remove(hash(k), p, |q| hash(key_at[&q]), &mut moves);
                        for (from, to) in moves {
                            let moved = key_at.remove(&from).unwrap();
                            key_at.insert(to, moved);
                            at.insert(moved, to);
                            if model.remove(&from) {
                                model.insert(to);
                            }
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(index.marked().count(), model.len());
                // The summary names exactly the groups with a mark: one it
                // kept for a group without would cost every drain a visit.
                for (b, g) in index.groups.iter().enumerate() {
                    let summary = index.marked_groups[b / 64] >> (b % 64) & 1 == 1;
                    prop_assert_eq!(summary, g.bits() >> WAYS != 0, "group {}", b);
                }
                if !removed.contains(&k) {
                    let p = at[&k];
                    prop_assert_eq!(index.marked().any(|q| q == p), model.contains(&p));
                }
            }
            prop_assert_eq!(index.marked().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            for k in 0..6000u32 {
                let found = index.find(hash(k), |q| q == at[&k]);
                prop_assert_eq!(found, (!removed.contains(&k)).then_some(at[&k]));
            }
            prop_assert_eq!(index.occupied().count(), 6000 - removed.len());
            index.clear_marks();
            prop_assert_eq!(index.marked().count(), 0);
        }
    }
}
