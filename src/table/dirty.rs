//! The slab's dirty set: a bit per slot position, and a bit per word of those.

/// Positions changed since the last drain, as bits: about 0.13 bytes a ghost
/// where a list of positions took 4, and a drain walks them in position
/// order with nothing to sort. The summary (a bit per word that has a bit
/// set) keeps a drain of a few slots from reading the whole bitmap.
#[derive(Debug, Default)]
pub(crate) struct DirtySet {
    words: Vec<u64>,
    summary: Vec<u64>,
    count: usize,
}

impl DirtySet {
    /// Empties the set and sizes it for `positions`, in the memory it has.
    pub(crate) fn reset(&mut self, positions: usize) {
        let words = positions.div_ceil(64);
        self.words.clear();
        self.words.resize(words, 0);
        self.summary.clear();
        self.summary.resize(words.div_ceil(64), 0);
        self.count = 0;
    }

    /// Positions in the set.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Adds `p`; true if it was not in the set.
    pub(crate) fn insert(&mut self, p: usize) -> bool {
        let (w, bit) = (p / 64, 1u64 << (p % 64));
        let new = self.words[w] & bit == 0;
        self.words[w] |= bit;
        self.summary[w / 64] |= 1 << (w % 64);
        self.count += usize::from(new);
        new
    }

    pub(crate) fn contains(&self, p: usize) -> bool {
        self.words[p / 64] & (1 << (p % 64)) != 0
    }

    pub(crate) fn remove(&mut self, p: usize) {
        let (w, bit) = (p / 64, 1u64 << (p % 64));
        if self.words[w] & bit != 0 {
            self.words[w] &= !bit;
            if self.words[w] == 0 {
                self.summary[w / 64] &= !(1 << (w % 64));
            }
            self.count -= 1;
        }
    }

    /// Every position in the set, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        bits(&self.summary)
            .flat_map(move |w| bits(std::slice::from_ref(&self.words[w])).map(move |k| w * 64 + k))
    }

    /// Empties the set, visiting only the words that had a bit set.
    pub(crate) fn clear(&mut self) {
        for s in 0..self.summary.len() {
            let mut set = std::mem::take(&mut self.summary[s]);
            while set != 0 {
                self.words[s * 64 + set.trailing_zeros() as usize] = 0;
                set &= set - 1;
            }
        }
        self.count = 0;
    }

    /// The allocations, for the next set (see `Slab::into_memory`).
    pub(crate) fn into_memory(mut self) -> Self {
        self.reset(0);
        self
    }
}

/// The set bits of `words`, as indexes into them.
fn bits(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(i, &w)| {
        let mut w = w;
        std::iter::from_fn(move || {
            (w != 0).then(|| {
                let k = w.trailing_zeros() as usize;
                w &= w - 1;
                i * 64 + k
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Against a `BTreeSet`: inserts, removals and clears, across many
        /// words and summary words; iteration is in order.
        #[test]
        fn matches_a_set(ops in prop::collection::vec((0u8..3, 0usize..9000), 1..300)) {
            let mut set = DirtySet::default();
            set.reset(9000);
            let mut model = BTreeSet::new();
            for (op, p) in ops {
                match op {
                    0 => { prop_assert_eq!(set.insert(p), model.insert(p)); prop_assert!(set.contains(p)); }
                    1 => { set.remove(p); model.remove(&p); prop_assert!(!set.contains(p)); }
                    _ if p % 50 == 0 => { set.clear(); model.clear(); }
                    _ => {}
                }
                prop_assert_eq!(set.len(), model.len());
            }
            prop_assert_eq!(set.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            set.clear();
            prop_assert_eq!(set.iter().count(), 0);
            prop_assert!(set.words.iter().all(|&w| w == 0));
        }
    }
}
