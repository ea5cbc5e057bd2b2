//! `ChangeSet`: one shard's stub upserts and removals since its last flush, packed for the store.

use crate::ids::ShardId;
use crate::stub::StubRef;
use std::fmt;

/// One shard's changes within a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardChanges {
    /// The shard.
    pub shard: ShardId,
    /// Its changes: apply the removals, then the upserts in order, then record
    /// the sequence number.
    pub changes: ChangeSet,
}

/// Changes since the last [`GhostTable::take_changes`](crate::table::GhostTable::take_changes), for the store.
///
/// Apply the removals, then the upserts in order: an id removed and inserted
/// again within one window appears in both, and the upsert is its current
/// state. An id may appear more than once among the upserts (changed by several
/// large batches within one window); the last is its current state.
///
/// Ids are packed into one buffer per list and the fixed fields into a dense
/// vector. A flush of a thousand stubs is then a handful of allocations instead
/// of one per stub, and draining the table stays a tight loop whose cache misses
/// overlap: on a table larger than the cache, that drain would otherwise cost
/// about as much as applying the events did.
#[derive(Clone, Default)]
pub struct ChangeSet {
    upsert_ids: String,
    upserts: Vec<Packed>,
    removal_ids: String,
    /// End offset of each removed id in `removal_ids`.
    removal_ends: Vec<usize>,
    /// Removals of stubs that already had an upsert here: `(removal, upserts
    /// before it)`. Those upserts must go before anyone reads the set.
    late: Vec<(usize, usize)>,
    applied_seq: Option<u64>,
}

/// An upsert's fixed fields; its id ends at `id_end` in `upsert_ids`.
#[derive(Debug, Clone, Copy)]
struct Packed {
    id_end: usize,
    target_shard: u16,
    refcount: u32,
    created_at_ms: u64,
    epoch: u64,
    hold_until_ms: u64,
    tombstone: bool,
    seq: u64,
}

impl Packed {
    /// `stub`'s fixed fields, its id ending at `id_end`.
    fn of(stub: &StubRef<'_>, id_end: usize) -> Self {
        Self {
            id_end,
            target_shard: stub.target_shard,
            refcount: stub.refcount,
            created_at_ms: stub.created_at_ms,
            epoch: stub.epoch,
            hold_until_ms: stub.hold_until_ms,
            tombstone: stub.tombstone,
            seq: stub.seq,
        }
    }
}

/// Upserts copied out of a table, their ids as bytes, checked as UTF-8
/// once for all of them when [`sealed`](Self::seal). The table's ids are
/// whole `&str`s already; a check per id (a call on a dozen bytes) was a
/// tenth of a 1024-event batch with its drain, one over the drain's ids
/// together a few hundred nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct Upserts {
    ids: Vec<u8>,
    packed: Vec<Packed>,
}

impl Upserts {
    /// Room for `n` upserts whose ids total `id_bytes`.
    pub(crate) fn with_capacity(n: usize, id_bytes: usize) -> Self {
        // 16 over: the last short id's fixed-size copy writes past its end
        // before cutting back, which would reallocate the whole buffer.
        Self { ids: Vec::with_capacity(id_bytes + 16), packed: Vec::with_capacity(n) }
    }

    /// Adds an upsert of the id `id` (the bytes of a `&str`) with the fixed
    /// fields of `fields` (whose own `node_id` is not read).
    pub(crate) fn push(&mut self, id: &[u8], fields: StubRef<'_>) {
        let n = id.len();
        if n <= 16 {
            // A fixed-size copy, cut back: copying `n` bytes is a call to `memcpy`.
            self.ids.extend_from_slice(&super::slab::padded(id).to_le_bytes());
            self.ids.truncate(self.ids.len() - (16 - n));
        } else {
            self.ids.extend_from_slice(id);
        }
        self.packed.push(Packed::of(&fields, self.ids.len()));
    }

    /// The upserts as a change set.
    ///
    /// # Panics
    /// If the ids pushed were not UTF-8, which ids copied from a table
    /// always are.
    pub(crate) fn seal(self) -> ChangeSet {
        let upsert_ids = String::from_utf8(self.ids).expect("a table's ids are UTF-8");
        ChangeSet { upsert_ids, upserts: self.packed, ..ChangeSet::default() }
    }
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty change set with room for `upserts` stubs whose ids total `id_bytes`.
    pub fn with_capacity(upserts: usize, id_bytes: usize) -> Self {
        Self {
            upsert_ids: String::with_capacity(id_bytes),
            upserts: Vec::with_capacity(upserts),
            ..Self::default()
        }
    }

    /// A change set holding `upserts` and `removals`, in that order, with `applied_seq`.
    pub fn from_parts<'a>(
        upserts: impl IntoIterator<Item = StubRef<'a>>,
        removals: impl IntoIterator<Item = &'a str>,
        applied_seq: Option<u64>,
    ) -> Self {
        let mut c = Self { applied_seq, ..Self::default() };
        upserts.into_iter().for_each(|s| c.push_upsert(s));
        removals.into_iter().for_each(|id| c.push_removal(id));
        c
    }

    /// Adds a stub in its current state.
    pub fn push_upsert(&mut self, stub: StubRef<'_>) {
        self.upsert_ids.push_str(stub.node_id);
        self.upserts.push(Packed::of(&stub, self.upsert_ids.len()));
    }

    /// Appends `other`'s upserts after this set's own (its removals, if any,
    /// are not taken: staging makes none).
    pub(crate) fn append_upserts(&mut self, other: ChangeSet) {
        if self.upserts.is_empty() && self.removal_ends.is_empty() && self.late.is_empty() {
            // The common case, right after a flush took the pending set: no copy.
            self.upsert_ids = other.upsert_ids;
            self.upserts = other.upserts;
            return;
        }
        let base = self.upsert_ids.len();
        self.upsert_ids.push_str(&other.upsert_ids);
        self.upserts.extend(other.upserts.iter().map(|p| Packed { id_end: p.id_end + base, ..*p }));
    }

    /// Adds the id of a stub that left the table.
    pub fn push_removal(&mut self, node_id: &str) {
        self.removal_ids.push_str(node_id);
        self.removal_ends.push(self.removal_ids.len());
    }

    /// Adds a removal of a stub that may already have an upsert here, which
    /// [`settle`](Self::settle) then drops.
    pub(crate) fn push_late_removal(&mut self, node_id: &str) {
        self.late.push((self.removal_ends.len(), self.upserts.len()));
        self.push_removal(node_id);
    }

    /// Drops every upsert that a later removal of the same id overrides, so that
    /// removals-then-upserts yields the current state again.
    pub(crate) fn settle(&mut self) {
        if self.late.is_empty() {
            return;
        }
        let mut before: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
        let removals: Vec<&str> = self.removals().collect();
        for &(r, mark) in &self.late {
            let m = before.entry(removals[r]).or_default();
            *m = (*m).max(mark);
        }
        let mut kept = Self::with_capacity(self.upserts.len(), self.upsert_ids.len());
        for (j, s) in self.upserts().enumerate() {
            if before.get(s.node_id).is_none_or(|&mark| j >= mark) {
                kept.push_upsert(s);
            }
        }
        drop(before);
        drop(removals);
        self.upsert_ids = kept.upsert_ids;
        self.upserts = kept.upserts;
        self.late.clear();
    }

    /// Sets the applied batch sequence number to persist with the changes.
    pub fn set_applied_seq(&mut self, seq: Option<u64>) {
        self.applied_seq = seq;
    }

    /// The applied batch sequence number to persist with the changes.
    pub fn applied_seq(&self) -> Option<u64> {
        self.applied_seq
    }

    /// Stubs created or changed, in their current state, in the order pushed.
    pub fn upserts(&self) -> impl ExactSizeIterator<Item = StubRef<'_>> + Clone + '_ {
        (0..self.upserts.len()).map(move |i| {
            let p = &self.upserts[i];
            let start = if i == 0 { 0 } else { self.upserts[i - 1].id_end };
            StubRef {
                node_id: &self.upsert_ids[start..p.id_end],
                target_shard: p.target_shard,
                refcount: p.refcount,
                created_at_ms: p.created_at_ms,
                epoch: p.epoch,
                hold_until_ms: p.hold_until_ms,
                tombstone: p.tombstone,
                seq: p.seq,
            }
        })
    }

    /// Ids of stubs that left the table, in the order pushed.
    pub fn removals(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (0..self.removal_ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.removal_ends[i - 1] };
            &self.removal_ids[start..self.removal_ends[i]]
        })
    }

    /// True when there is no stub to write (the sequence number alone may still be).
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removal_ends.is_empty()
    }

    /// Forgets everything, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.upsert_ids.clear();
        self.upserts.clear();
        self.removal_ids.clear();
        self.removal_ends.clear();
        self.late.clear();
        self.applied_seq = None;
    }
}

impl PartialEq for ChangeSet {
    fn eq(&self, other: &Self) -> bool {
        self.applied_seq == other.applied_seq
            && self.upserts().eq(other.upserts())
            && self.removals().eq(other.removals())
    }
}

impl Eq for ChangeSet {}

impl fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct List<I>(I);
        impl<I: Iterator<Item = T> + Clone, T: fmt::Debug> fmt::Debug for List<I> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list().entries(self.0.clone()).finish()
            }
        }
        f.debug_struct("ChangeSet")
            .field("upserts", &List(self.upserts()))
            .field("removals", &List(self.removals()))
            .field("applied_seq", &self.applied_seq)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stub(id: &str, refcount: u32) -> StubRef<'_> {
        StubRef {
            node_id: id,
            target_shard: 2,
            refcount,
            created_at_ms: 5,
            epoch: 7,
            hold_until_ms: 0,
            tombstone: false,
            seq: 0,
        }
    }

    #[test]
    fn round_trips_in_push_order() {
        let mut c = ChangeSet::new();
        assert!(c.is_empty());
        c.push_upsert(stub("b", 1));
        c.push_removal("gone");
        c.push_upsert(stub("ü-ä", 3));
        c.push_removal("x");
        c.set_applied_seq(Some(9));
        assert!(!c.is_empty());
        assert_eq!(c.upserts().collect::<Vec<_>>(), [stub("b", 1), stub("ü-ä", 3)]);
        assert_eq!(c.upserts().len(), 2);
        assert_eq!(c.removals().collect::<Vec<_>>(), ["gone", "x"]);
        assert_eq!(c.applied_seq(), Some(9));
    }

    /// Ids of every length up to past the fixed-size copy's, multibyte
    /// characters included, come back whole and in order once sealed.
    #[test]
    fn upserts_copied_as_bytes_seal_to_the_same_ids() {
        let ids: Vec<String> = (0..40).map(|n| "é-x".chars().cycle().take(n).collect()).collect();
        let mut raw = Upserts::with_capacity(0, 0);
        let mut plain = ChangeSet::new();
        for (n, id) in ids.iter().enumerate() {
            let s = stub(id, n as u32);
            raw.push(id.as_bytes(), StubRef { node_id: "", ..s });
            plain.push_upsert(s);
        }
        let sealed = raw.seal();
        assert_eq!(sealed, plain);
        assert!(sealed.upserts().map(|s| s.node_id).eq(ids.iter().map(String::as_str)));
    }

    #[test]
    fn settle_drops_upserts_that_a_later_removal_overrides() {
        let mut c = ChangeSet::new();
        c.push_upsert(stub("a", 1));
        c.push_upsert(stub("b", 1));
        c.push_late_removal("a");
        c.push_upsert(stub("b", 2));
        c.push_upsert(stub("a", 5)); // inserted again after its removal: kept
        c.push_late_removal("b");
        c.push_late_removal("never-staged");
        c.settle();
        assert_eq!(c.upserts().collect::<Vec<_>>(), [stub("a", 5)]);
        assert_eq!(c.removals().collect::<Vec<_>>(), ["a", "b", "never-staged"]);
        let settled = c.clone();
        c.settle();
        assert_eq!(c, settled, "settling twice changes nothing");
    }

    #[test]
    fn equality_ignores_capacity_and_compares_content() {
        let mut a = ChangeSet::with_capacity(64, 1024);
        let mut b = ChangeSet::new();
        for c in [&mut a, &mut b] {
            c.push_upsert(stub("n", 4));
            c.push_removal("m");
        }
        assert_eq!(a, b);
        b.set_applied_seq(Some(1));
        assert_ne!(a, b);
        a.clear();
        assert!(a.is_empty() && a.applied_seq().is_none());
        assert!(format!("{b:?}").contains("\"n\""));
    }
}
