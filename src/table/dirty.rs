//! Which slots changed since the last drain, and in what order a drain takes them.
//!
//! A changed slot carries the `DIRTY` flag, which is the truth; its position
//! is also recorded in one of two places, which may hold stale entries the
//! flag screens out. An edge event, which has just written its slot, sets the
//! flag in that line and appends the position to a list: a store to a line
//! the write already owns and one to the list's tail. Marking it in a bitmap
//! or in its bucket's group instead (a second line written per event) made
//! an edge added slower than the dense table's (216–221 ns against 188, run
//! alternately); with the flag and the list it is faster (175–179 against
//! 188–204). A new stub, which would leave 4 bytes in
//! the list per insert of a table being filled, is marked in its bucket's
//! group instead (see `index/marks.rs`). A drain takes the list in its
//! order (the slots a batch just wrote, still in cache; a repeat finds its
//! flag cleared), then the marks. A copy that clears nothing (`peek_dirty`)
//! must take each position once without clearing flags: until a removal
//! since the drain, the list and the marks never repeat a position, so it
//! takes them as they are; after one, it takes them merged in position
//! order, the list sorted without repeats.

use std::iter::Peekable;

/// The listed positions (`list`), sorted and without repeats, merged with
/// the marked ones (`marks`, in order), each position once, in order.
pub(crate) fn merged<'a>(
    list: &'a [u32],
    marks: impl Iterator<Item = usize> + 'a,
) -> impl Iterator<Item = usize> + 'a {
    Merge { list: list.iter().map(|&p| p as usize).peekable(), marks: marks.peekable() }
}

struct Merge<A: Iterator<Item = usize>, B: Iterator<Item = usize>> {
    list: Peekable<A>,
    marks: Peekable<B>,
}

impl<A: Iterator<Item = usize>, B: Iterator<Item = usize>> Iterator for Merge<A, B> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match (self.list.peek().copied(), self.marks.peek().copied()) {
            (Some(a), Some(b)) if a == b => {
                self.marks.next();
                self.list.next()
            }
            (Some(a), Some(b)) if b < a => self.marks.next(),
            (Some(_), _) => self.list.next(),
            (None, _) => self.marks.next(),
        }
    }
}

/// Sorts `list` and drops repeats, for [`merged`].
pub(crate) fn settle(list: &mut Vec<u32>) {
    list.sort_unstable();
    list.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn merged_is_the_sorted_union(mut list in prop::collection::vec(0u32..500, 0..80), marks in prop::collection::btree_set(0usize..500, 0..80)) {
            let want: BTreeSet<usize> = list.iter().map(|&p| p as usize).chain(marks.iter().copied()).collect();
            settle(&mut list);
            let got: Vec<usize> = merged(&list, marks.iter().copied()).collect();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }
}
