//! Paged export: a shard's ghosts in node-id order, a bounded page at a time.

use super::GhostTable;
use crate::stub::StubRecord;
use std::collections::BinaryHeap;

/// One page of a shard's ghosts, in ascending node-id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GhostPage {
    /// The ghosts, ascending by node id.
    pub records: Vec<StubRecord>,
    /// Where the next page starts (exclusive), or `None` when this page is the last.
    pub next: Option<Box<str>>,
}

impl GhostTable {
    /// The first `limit` ghosts whose ids sort after `after` (from the start
    /// when `None`). Walking from `None` through each page's
    /// [`next`](GhostPage::next) yields every ghost that lives throughout the
    /// walk exactly once, whatever changes between pages; ghosts made, changed
    /// or removed meanwhile appear in their state at their page, or not at all.
    ///
    /// Id order, unlike storage order, does not shift when the table grows
    /// and its ghosts move to new places. Each page costs one scan of the table (O(n log limit)
    /// time, O(limit) memory) and no copy of it, so a shard keeps serving
    /// between pages. `limit` 0 is taken as 1.
    pub fn export_page(&self, after: Option<&str>, limit: usize) -> GhostPage {
        // Bounded by the table, so a huge `limit` neither overflows nor
        // reserves memory the page could never fill.
        let limit = limit.clamp(1, self.slab.len().max(1));
        // A max-heap of the `limit` smallest ids past the cursor.
        let mut best: BinaryHeap<(&str, usize)> = BinaryHeap::with_capacity(limit + 1);
        for i in self.slab.occupied() {
            let id = self.slab.id(i);
            if after.is_some_and(|a| id <= a) {
                continue;
            }
            if best.len() < limit {
                best.push((id, i));
            } else if best.peek().is_some_and(|&(top, _)| id < top) {
                best.pop();
                best.push((id, i));
            }
        }
        let full = best.len() == limit && limit < self.slab.len();
        let page = best.into_sorted_vec();
        let records: Vec<StubRecord> = page.iter().map(|&(_, i)| self.stub_ref(i).to_record()).collect();
        // A full page may not be the last; the next call answers an empty page then.
        let next = if full { records.last().map(|r| r.node_id.as_str().into()) } else { None };
        GhostPage { records, next }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::TableConfig;
    use crate::ids::{Epoch, ShardId};
    use crate::table::GhostTable;

    fn walk(t: &GhostTable, limit: usize) -> Vec<String> {
        let (mut out, mut after) = (Vec::new(), None::<Box<str>>);
        loop {
            let page = t.export_page(after.as_deref(), limit);
            assert!(page.records.len() <= limit.max(1));
            out.extend(page.records.into_iter().map(|r| r.node_id));
            match page.next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_walk_every_ghost_once_in_id_order() {
        let mut t = GhostTable::new(ShardId(0), TableConfig::default()).unwrap();
        for i in [5, 3, 9, 1, 7, 2, 8] {
            t.insert(&format!("n{i}"), ShardId(1), 1, Epoch(1), 0).unwrap();
        }
        let want: Vec<String> = [1, 2, 3, 5, 7, 8, 9].iter().map(|i| format!("n{i}")).collect();
        for limit in [0, 1, 2, 3, 7, 100] {
            assert_eq!(walk(&t, limit), want, "limit {limit}");
        }
        assert_eq!(
            GhostTable::new(ShardId(0), TableConfig::default()).unwrap().export_page(None, 4).records,
            vec![]
        );
    }

    #[test]
    fn a_removal_between_pages_skips_no_ghost_that_lives_on() {
        let mut t = GhostTable::new(ShardId(0), TableConfig::default()).unwrap();
        for i in 0..10 {
            t.insert(&format!("n{i}"), ShardId(1), 1, Epoch(1), 0).unwrap();
        }
        let first = t.export_page(None, 4);
        // Removing an early slot moves the last one ("n9") into its hole.
        t.edge_removed("n0");
        let mut seen: Vec<String> = first.records.into_iter().map(|r| r.node_id).collect();
        let mut after = first.next;
        while let Some(a) = after {
            let page = t.export_page(Some(&a), 4);
            seen.extend(page.records.into_iter().map(|r| r.node_id));
            after = page.next;
        }
        let want: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        assert_eq!(seen, want);
    }
}
