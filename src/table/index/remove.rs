//! Removal, which keeps every bucket that a key passed full.
//!
//! A key whose home bucket was full lives further on, and every bucket it
//! passed counts it, so that a lookup goes on past them. Freeing a place in
//! such a bucket and leaving the key where it is would leave a count on a
//! bucket with room: under inserts and removals those spread until every
//! bucket carries one, and a lookup of an absent id walks the whole table
//! (or, before the lookup was bounded, forever). So a removal moves back
//! into the hole the nearest key that passed it, then fills the hole that
//! key left the same way, until it reaches a bucket no key passed: a bucket
//! with a count is then always full, and a lookup stops at the first bucket
//! with room.

use super::{Index, WAYS, home_and_tag};

impl Index {
    /// Frees position `p`, which holds a key under `hash`, and unmarks it;
    /// then moves keys back (see above). `hash_at(q)` is the hash of the key
    /// at position `q` as the caller holds it: the caller moves its slots
    /// after, in the order of `moves` (each `(from, to)`), which this fills.
    pub(crate) fn remove(
        &mut self,
        hash: u64,
        p: usize,
        hash_at: impl Fn(usize) -> u64,
        moves: &mut Vec<(usize, usize)>,
    ) {
        let n = self.groups.len();
        self.free(p);
        self.unpass(home_and_tag(hash, n).0, p / WAYS);
        self.len -= 1;
        let mut hole = p;
        while self.groups[hole / WAYS].overflow() != 0 {
            let Some(key) = self.nearest_past(hole / WAYS, &hash_at) else {
                // Only a saturated count can say so: no key passed, after all.
                self.groups[hole / WAYS].set_overflow(0);
                break;
            };
            let (kb, kj) = (key / WAYS, key % WAYS);
            let (tag, marked) = (self.groups[kb].meta[kj], self.groups[kb].bits() & 1 << (WAYS + kj) != 0);
            self.free(key);
            let (hb, hj) = (hole / WAYS, hole % WAYS);
            let group = &mut self.groups[hb];
            group.meta[hj] = tag;
            group.set_bits(group.bits() | 1 << hj);
            if marked {
                self.mark(hole);
            }
            // The key now stops at the hole's bucket: it no longer passes it,
            // nor any bucket before its own.
            self.unpass(hb, kb);
            moves.push((key, hole));
            hole = key;
        }
    }

    /// Clears position `p`'s occupancy and mark.
    fn free(&mut self, p: usize) {
        self.unmark(p);
        let (b, k) = (p / WAYS, p % WAYS);
        let bits = self.groups[b].bits();
        debug_assert!(bits & (1 << k) != 0, "position {p} is free");
        self.groups[b].set_bits(bits & !(1 << k));
    }

    /// Takes a key off the counts of the buckets from `from` up to, not
    /// including, `to` (a saturated count stays).
    fn unpass(&mut self, mut from: usize, to: usize) {
        while from != to {
            let o = self.groups[from].overflow();
            if o != u8::MAX {
                self.groups[from].set_overflow(o - 1);
            }
            from = self.next(from);
        }
    }

    /// The position of the nearest key stored past bucket `hole` whose probe
    /// passed it. Every bucket between such a key and `hole` was passed too,
    /// so the search ends at the first bucket with a count of 0.
    fn nearest_past(&self, hole: usize, hash_at: &impl Fn(usize) -> u64) -> Option<usize> {
        let n = self.groups.len();
        let mut b = self.next(hole);
        for dist in 1..n {
            let mut bits = self.groups[b].occupied();
            while bits != 0 {
                let q = b * WAYS + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // Buckets walked from its home to `b`: it passed `hole` if
                // `hole` lies on that walk, `dist` buckets back from `b`.
                let home = home_and_tag(hash_at(q), n).0;
                if (b + n - home) % n >= dist {
                    return Some(q);
                }
            }
            if self.groups[b].overflow() == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Buckets with a count but with room: none, while removals shift back.
    #[cfg(test)]
    pub(crate) fn passed_with_room(&self) -> usize {
        self.groups.iter().filter(|g| g.overflow() != 0 && g.occupied() != super::FULL).count()
    }
}
