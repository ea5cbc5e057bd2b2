//! `EdgeEvents`: a batch of edge events packed into two buffers, however many it holds.

use crate::event::{EdgeEvent, EdgeKind};
use std::fmt;

/// Edge events in order, their ids packed into one buffer.
///
/// A batch of a thousand events built as `Vec<EdgeEvent>` costs a thousand
/// allocations to build, and as many frees on the shard's thread once handled;
/// packed, it costs two of each. Build it with [`push`](Self::push) (or
/// [`added`](Self::added) / [`removed`](Self::removed)), or collect
/// [`EdgeEvent`]s into it.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct EdgeEvents {
    ids: String,
    events: Vec<Packed>,
}

/// An event's kind and where its id ends in `ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Packed {
    id_end: usize,
    kind: EdgeKind,
}

impl EdgeEvents {
    /// No events.
    pub fn new() -> Self {
        Self::default()
    }

    /// No events, with room for `events` of them whose ids total `id_bytes`.
    pub fn with_capacity(events: usize, id_bytes: usize) -> Self {
        Self { ids: String::with_capacity(id_bytes), events: Vec::with_capacity(events) }
    }

    /// Appends an event on `node_id`.
    pub fn push(&mut self, node_id: &str, kind: EdgeKind) {
        self.ids.push_str(node_id);
        self.events.push(Packed { id_end: self.ids.len(), kind });
    }

    /// Appends "an edge to `node_id` was added".
    pub fn added(&mut self, node_id: &str) {
        self.push(node_id, EdgeKind::Added);
    }

    /// Appends "an edge to `node_id` was removed".
    pub fn removed(&mut self, node_id: &str) {
        self.push(node_id, EdgeKind::Removed);
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when there is no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Forgets every event, keeping the buffers for the next batch.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.events.clear();
    }

    /// The events in order, as `(node_id, kind)`.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, EdgeKind)> + Clone + '_ {
        (0..self.events.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.events[i - 1].id_end };
            let p = self.events[i];
            (&self.ids[start..p.id_end], p.kind)
        })
    }

    /// True when some event adds an edge (the batch must then be durable before its reply).
    pub fn any_added(&self) -> bool {
        self.events.iter().any(|p| p.kind == EdgeKind::Added)
    }
}

impl<E: std::borrow::Borrow<EdgeEvent>> FromIterator<E> for EdgeEvents {
    fn from_iter<I: IntoIterator<Item = E>>(iter: I) -> Self {
        let mut out = Self::new();
        out.extend(iter);
        out
    }
}

impl<E: std::borrow::Borrow<EdgeEvent>> Extend<E> for EdgeEvents {
    fn extend<I: IntoIterator<Item = E>>(&mut self, iter: I) {
        for e in iter {
            let e = e.borrow();
            self.push(&e.node_id, e.kind);
        }
    }
}

impl From<Vec<EdgeEvent>> for EdgeEvents {
    fn from(events: Vec<EdgeEvent>) -> Self {
        events.iter().collect()
    }
}

impl From<&[EdgeEvent]> for EdgeEvents {
    fn from(events: &[EdgeEvent]) -> Self {
        events.iter().collect()
    }
}

impl<const N: usize> From<[EdgeEvent; N]> for EdgeEvents {
    fn from(events: [EdgeEvent; N]) -> Self {
        events.iter().collect()
    }
}

impl fmt::Debug for EdgeEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_yields_events_in_order() {
        let mut e = EdgeEvents::with_capacity(4, 16);
        assert!(e.is_empty() && !e.any_added());
        e.removed("a");
        e.added("ünï");
        e.push("a", EdgeKind::Removed);
        assert_eq!(e.len(), 3);
        assert!(e.any_added());
        let got: Vec<_> = e.iter().collect();
        assert_eq!(got, [("a", EdgeKind::Removed), ("ünï", EdgeKind::Added), ("a", EdgeKind::Removed)]);
        assert_eq!(e.iter().len(), 3);
        let same: EdgeEvents =
            vec![EdgeEvent::removed("a"), EdgeEvent::added("ünï"), EdgeEvent::removed("a")].into();
        assert_eq!(e, same);
        assert_eq!(format!("{e:?}"), r#"[("a", Removed), ("ünï", Added), ("a", Removed)]"#);
        e.clear();
        assert_eq!(e, EdgeEvents::new());
    }
}
