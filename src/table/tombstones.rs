//! Tombstones: removed ghosts remembered for a while, so that a stale insert cannot make them again.
//!
//! A host that retries an unacknowledged `InsertGhost`, or replays moves from
//! its own log, can deliver an insert after the ghost it made was reclaimed or
//! purged. Without a memory of the removal, the table would make the ghost
//! again, and after A→B→A shard A would forward its own node away. A tombstone
//! remembers the epoch of the removal; an insert at or below it is stale.
//!
//! Bounded twice: each tombstone lapses after `TableConfig::tombstone_ttl`,
//! and at most `TableConfig::max_tombstones` are kept. A live tombstone is
//! never forgotten to make room for another: forgetting it would let the
//! insert it refuses in (A→B→A again), so the table refuses the reclaim that
//! needs the room instead, until the oldest lapses. Only a load under a
//! lowered bound drops live tombstones (the oldest first).

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
    /// When the tombstone lapses, in ms, as stored: on the clock of the
    /// process that made it.
    pub(crate) expires_at_ms: u64,
    /// When this process forgets it: `expires_at_ms`, plus
    /// `TableConfig::max_clock_skew` for one read from the store (the writer's
    /// clock may be behind ours). Never stored, so reloads do not add up.
    pub(crate) lapses_at_ms: u64,
}

/// Most lapsed tombstones one `make_room` forgets.
const LAPSED_PER_ROOM: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    by_id: HashMap<Box<str>, Tombstone, RandomState>,
    /// `(lapses_at_ms, id)`, to find the lapsed and the oldest in O(log n).
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
    /// ids evicted to stay within `max` (their rows must go): none when room
    /// was made first with [`make_room`](Self::make_room).
    pub(crate) fn insert(&mut self, id: &str, t: Tombstone, max: usize, evicted: &mut Vec<Box<str>>) {
        if max == 0 {
            return;
        }
        if let Some(old) = self.by_id.insert(id.into(), t) {
            self.by_expiry.remove(&(old.lapses_at_ms, id.into()));
        }
        self.by_expiry.insert((t.lapses_at_ms, id.into()));
        while self.by_id.len() > max {
            let Some((_, oldest)) = self.by_expiry.pop_first() else { break };
            self.by_id.remove(&oldest);
            evicted.push(oldest);
        }
    }

    /// Makes room for one more tombstone within `max` by forgetting those that
    /// lapsed by `now_ms` (their ids go to `lapsed`: their rows must go). With
    /// every one still live: how long until the oldest lapses, in ms.
    pub(crate) fn make_room(
        &mut self,
        now_ms: u64,
        max: usize,
        lapsed: &mut Vec<Box<str>>,
    ) -> Result<(), u64> {
        if self.by_id.len() < max {
            return Ok(());
        }
        // A few at a time, so that one reclaim's cost stays bounded.
        self.expire(now_ms, lapsed.len() + LAPSED_PER_ROOM, lapsed);
        match self.by_expiry.first() {
            Some((at, _)) if self.by_id.len() >= max => Err(at.saturating_sub(now_ms).max(1)),
            _ => Ok(()),
        }
    }

    /// Forgets `id`'s tombstone (a newer insert made the ghost again).
    pub(crate) fn remove(&mut self, id: &str) -> Option<Tombstone> {
        let t = self.by_id.remove(id)?;
        self.by_expiry.remove(&(t.lapses_at_ms, id.into()));
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

    /// Forgets each tombstone when it says (`lapses_at_ms = expires_at_ms`):
    /// see `GhostTable::trust_stored_times`.
    pub(crate) fn trust_stored_times(&mut self) {
        self.by_expiry.clear();
        for (id, t) in &mut self.by_id {
            t.lapses_at_ms = t.expires_at_ms;
            self.by_expiry.insert((t.lapses_at_ms, id.clone()));
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
        Tombstone { epoch, target: 1, removed_at_ms: 0, expires_at_ms, lapses_at_ms: expires_at_ms }
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

    #[test]
    fn room_is_made_only_of_lapsed_tombstones() {
        let mut ts = Tombstones::default();
        let (mut evicted, mut lapsed) = (Vec::new(), Vec::new());
        assert_eq!(ts.make_room(0, 2, &mut lapsed), Ok(()));
        ts.insert("a", t(1, 10), 2, &mut evicted);
        ts.insert("b", t(1, 20), 2, &mut evicted);
        assert_eq!(ts.make_room(4, 2, &mut lapsed), Err(6), "full and live: the oldest lapses in 6 ms");
        assert_eq!(ts.make_room(9, 2, &mut lapsed), Err(1));
        assert_eq!((ts.len(), lapsed.len()), (2, 0), "nothing live forgotten");
        assert_eq!(ts.make_room(10, 2, &mut lapsed), Ok(()), "a lapses at 10");
        assert_eq!((ts.len(), lapsed), (1, vec![Box::from("a")]));
        assert_eq!(ts.make_room(0, 0, &mut Vec::new()), Err(20), "max 0 has no room");
        assert!(evicted.is_empty());
    }
}
