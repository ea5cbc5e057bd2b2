//! Order of shard visits within a pass: a busy shard goes to the back, a bounded number of times.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
struct Entry {
    index: usize,
    deferrals: u32,
    /// The progress count when it was last deferred.
    deferred_at: Option<u64>,
}

/// One visit to make: the shard's index, and whether to wait first because
/// every shard left was found busy since anything else got done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Visit {
    pub(crate) index: usize,
    pub(crate) wait_first: bool,
    deferrals: u32,
}

/// What became of a deferred shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deferral {
    /// Revisited later in the pass.
    Later,
    /// Deferred too often: left to the next pass.
    GaveUp,
}

/// The shards a pass still has to visit.
#[derive(Debug)]
pub(crate) struct ShardQueue {
    queue: VecDeque<Entry>,
    max_deferrals: u32,
    progress: u64,
    /// Entries in the queue deferred since the last progress.
    fresh: usize,
}

impl ShardQueue {
    pub(crate) fn new(shards: usize, max_deferrals: u32) -> Self {
        let queue = (0..shards).map(|index| Entry { index, deferrals: 0, deferred_at: None }).collect();
        Self { queue, max_deferrals, progress: 0, fresh: 0 }
    }

    pub(crate) fn next(&mut self) -> Option<Visit> {
        let e = self.queue.pop_front()?;
        let was_fresh = e.deferred_at == Some(self.progress);
        if was_fresh {
            self.fresh -= 1;
        }
        // Probing shards that were all just busy, back to back, would only spin.
        let wait_first = was_fresh && self.fresh == self.queue.len();
        if wait_first {
            // The wait gives every shard time, as progress elsewhere would.
            self.progressed();
        }
        Some(Visit { index: e.index, wait_first, deferrals: e.deferrals })
    }

    /// The visited shard was busy.
    pub(crate) fn defer(&mut self, visit: Visit) -> Deferral {
        if visit.deferrals >= self.max_deferrals {
            return Deferral::GaveUp;
        }
        self.fresh += 1;
        let deferred_at = Some(self.progress);
        self.queue.push_back(Entry { index: visit.index, deferrals: visit.deferrals + 1, deferred_at });
        Deferral::Later
    }

    /// The visited shard was not busy (swept, or failed): time passed for the others.
    pub(crate) fn progressed(&mut self) {
        self.progress += 1;
        self.fresh = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_shard_is_revisited_after_the_others() {
        let mut q = ShardQueue::new(3, 5);
        let first = q.next().unwrap();
        assert_eq!((first.index, first.wait_first), (0, false));
        assert_eq!(q.defer(first), Deferral::Later);
        for want in [1, 2] {
            let v = q.next().unwrap();
            assert_eq!((v.index, v.wait_first), (want, false));
            q.progressed();
        }
        let again = q.next().unwrap();
        assert_eq!((again.index, again.wait_first), (0, false), "others were swept meanwhile");
        q.progressed();
        assert!(q.next().is_none());
    }

    #[test]
    fn all_busy_waits_and_gives_up_after_the_limit() {
        let mut q = ShardQueue::new(2, 2);
        let mut waits = Vec::new();
        let mut gave_up = Vec::new();
        while let Some(v) = q.next() {
            waits.push(v.wait_first);
            if q.defer(v) == Deferral::GaveUp {
                gave_up.push(v.index);
            }
        }
        // Round one probes both; each later round waits once, before its first probe.
        assert_eq!(waits, [false, false, true, false, true, false]);
        assert_eq!(gave_up, [0, 1]);
    }
}
