//! Tombstones: removed ghosts remembered for a while, so that a stale insert cannot make them again.
//!
//! A host that retries an unacknowledged `InsertGhost`, or replays moves from
//! its own log, can deliver an insert after the ghost it made was reclaimed or
//! purged. Without a memory of the removal, the table would make the ghost
//! again, and after A→B→A shard A would forward its own node away. A tombstone
//! remembers the epoch of the removal; an insert at or below it is stale.
//!
//! Bounded twice: each tombstone lapses after `TableConfig::tombstone_ttl`,
//! and past `TableConfig::max_tombstones` the oldest goes first. An evicted
//! tombstone only reopens the (narrow) window it closed; it never removes a ghost.

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use std::collections::BTreeSet;

/// One remembered removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tombstone {
    /// Inserts at or below this epoch are stale.
    pub(crate) epoch: u64,
    /// Last target of the removed ghost (kept for the row; never forwarded to).
    pub(crate) target: u16,
    /// When the ghost was removed, in ms.
    pub(crate) removed_at_ms: u64,
    /// When the tombstone lapses, in ms.
    pub(crate) expires_at_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    by_id: HashMap<Box<str>, Tombstone, RandomState>,
    /// `(expires_at_ms, id)`, to find the lapsed and the oldest in O(log n).
    by_expiry: BTreeSet<(u64, Box<str>)>,
}

impl Tombstones {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Tombstone> {
        self.by_id.get(id)
    }

    /// Remembers `id`'s removal, replacing an older tombstone of it. Returns the
    /// ids evicted to stay within `max` (their rows must go).
    pub(crate) fn insert(&mut self, id: &str, t: Tombstone, max: usize, evicted: &mut Vec<Box<str>>) {
        if max == 0 {
            return;
        }
        if let Some(old) = self.by_id.insert(id.into(), t) {
            self.by_expiry.remove(&(old.expires_at_ms, id.into()));
        }
        self.by_expiry.insert((t.expires_at_ms, id.into()));
        while self.by_id.len() > max {
            let Some((_, oldest)) = self.by_expiry.pop_first() else { break };
            self.by_id.remove(&oldest);
            evicted.push(oldest);
        }
    }

    /// Forgets `id`'s tombstone (a newer insert made the ghost again).
    pub(crate) fn remove(&mut self, id: &str) -> Option<Tombstone> {
        let t = self.by_id.remove(id)?;
        self.by_expiry.remove(&(t.expires_at_ms, id.into()));
        Some(t)
    }

    /// Takes at most `limit` tombstones that lapsed by `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64, limit: usize, out: &mut Vec<Box<str>>) {
        while out.len() < limit {
            match self.by_expiry.first() {
                Some((at, _)) if *at <= now_ms => {}
                _ => break,
            }
            let Some((_, id)) = self.by_expiry.pop_first() else { break };
            self.by_id.remove(&id);
            out.push(id);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Tombstone)> + '_ {
        self.by_id.iter().map(|(id, t)| (&**id, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(epoch: u64, expires_at_ms: u64) -> Tombstone {
        Tombstone { epoch, target: 1, removed_at_ms: 0, expires_at_ms }
    }

    #[test]
    fn bounded_by_count_and_time() {
        let mut ts = Tombstones::default();
        let mut evicted = Vec::new();
        ts.insert("a", t(1, 10), 2, &mut evicted);
        ts.insert("b", t(1, 20), 2, &mut evicted);
        ts.insert("c", t(1, 30), 2, &mut evicted);
        assert_eq!(evicted, vec![Box::from("a")], "the oldest goes first");
        ts.insert("b", t(2, 40), 2, &mut evicted);
        assert_eq!((ts.len(), ts.get("b").map(|t| t.epoch)), (2, Some(2)), "a newer removal replaces");
        let mut lapsed = Vec::new();
        ts.expire(35, 10, &mut lapsed);
        assert_eq!(lapsed, vec![Box::from("c")]);
        assert!(ts.remove("b").is_some() && ts.len() == 0);
        ts.insert("z", t(1, 1), 0, &mut evicted);
        assert_eq!(ts.len(), 0, "max 0 keeps none");
    }
}
