//! What the verify service answers from ([`NodeDirectory`]) and where the
//! holding process's own edge counts come from ([`LocalEdgeCounts`]).

use crate::ids::{Epoch, ShardId};
use crate::sweep::verify::DirectoryVerifier;
use crate::sweep::{LocalEdges, Verdict, VerifyRequest};
use std::sync::Arc;

/// Where a node lives, as the process that owns a shard knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The node lives on the shard asked about, since move `epoch`.
    Here {
        /// The move epoch that brought it there.
        epoch: Epoch,
    },
    /// The node moved on: it lives on `shard` since move `epoch`.
    Moved {
        /// Where it lives now.
        shard: ShardId,
        /// The epoch of that move.
        epoch: Epoch,
    },
    /// The node was deleted: its ghosts may be purged.
    Gone,
    /// This process cannot tell (it does not hold the shard, or is behind):
    /// the ghost is verified again later.
    Unknown,
}

/// The answers of the verify service, implemented by the host: where a node
/// asked about on one of this process's shards lives.
///
/// Answer [`Location::Gone`] only for a node known to be deleted: it purges
/// ghosts. A shard this process does not hold (any more) is
/// [`Location::Unknown`]. Called on the service's own runtime for each query,
/// so it must answer from memory, without blocking.
pub trait NodeDirectory: Send + Sync + 'static {
    /// Where `node_id`, asked about on `shard` by a ghost of move `epoch`, lives.
    fn locate(&self, shard: ShardId, node_id: &str, epoch: Epoch) -> Location;
}

impl<D: NodeDirectory + ?Sized> NodeDirectory for Arc<D> {
    fn locate(&self, shard: ShardId, node_id: &str, epoch: Epoch) -> Location {
        (**self).locate(shard, node_id, epoch)
    }
}

/// A [`DirectoryVerifier`]'s directory, served: a node it does not know is
/// [`Location::Gone`], as the directory itself takes it. So serve one only
/// where it records every move of the nodes it may be asked about (tests, one
/// directory shared by all); a host whose processes each know their own
/// shards implements [`NodeDirectory`] and answers `Unknown` for the rest.
impl NodeDirectory for DirectoryVerifier {
    fn locate(&self, shard: ShardId, node_id: &str, _epoch: Epoch) -> Location {
        match self.home(node_id) {
            Some((home, epoch)) if home == shard => Location::Here { epoch },
            Some((home, epoch)) => Location::Moved { shard: home, epoch },
            None => Location::Gone,
        }
    }
}

/// The holding process's authoritative count of a shard's local edges to a
/// node (see [`LocalEdges`]), returned with `Keep`. It never crosses the
/// network: only the process that holds the ghost's shard can count them.
/// Called on the verifier client's runtime, so it must not block.
pub trait LocalEdgeCounts: Send + Sync + 'static {
    /// `shard`'s local edges to `node_id`, if known.
    fn local_edges(&self, shard: ShardId, node_id: &str) -> Option<LocalEdges>;
}

impl<C: LocalEdgeCounts + ?Sized> LocalEdgeCounts for Arc<C> {
    fn local_edges(&self, shard: ShardId, node_id: &str) -> Option<LocalEdges> {
        (**self).local_edges(shard, node_id)
    }
}

/// The counts set with [`DirectoryVerifier::set_local_edges`].
impl LocalEdgeCounts for DirectoryVerifier {
    fn local_edges(&self, shard: ShardId, node_id: &str) -> Option<LocalEdges> {
        DirectoryVerifier::local_edges(self, shard, node_id)
    }
}

/// No counts: every `Keep` leaves the refcount as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLocalCounts;

impl LocalEdgeCounts for NoLocalCounts {
    fn local_edges(&self, _: ShardId, _: &str) -> Option<LocalEdges> {
        None
    }
}

/// The verdict for `request` given where the target's owner says the node
/// lives; `local` is asked only for a `Keep`. The same rules as
/// [`DirectoryVerifier`]'s, so that a cluster sweeps as one process does.
pub(crate) fn verdict(request: &VerifyRequest, location: Location, local: &dyn LocalEdgeCounts) -> Verdict {
    let (home, epoch) = match location {
        Location::Here { epoch } => (request.target_shard, epoch),
        Location::Moved { shard, epoch } => (shard, epoch),
        Location::Gone => return Verdict::Purge,
        Location::Unknown => return Verdict::Inconclusive,
    };
    if epoch > request.epoch {
        Verdict::Redirect { shard: home, epoch }
    } else if epoch == request.epoch && home == request.target_shard {
        Verdict::Keep { local_edges: local.local_edges(request.shard, &request.node_id) }
    } else {
        // The owner is behind the ghost, or contradicts it at the same epoch.
        Verdict::Inconclusive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: u16, epoch: u64) -> VerifyRequest {
        VerifyRequest {
            shard: ShardId(0),
            node_id: "n".into(),
            target_shard: ShardId(target),
            epoch: Epoch(epoch),
        }
    }

    #[test]
    fn locations_map_to_the_directory_verifiers_verdicts() {
        let counts = DirectoryVerifier::new();
        counts.set_local_edges(ShardId(0), "n", Some(LocalEdges::at(2, 5)));
        let v = |r: VerifyRequest, l| verdict(&r, l, &counts);
        let keep = Verdict::Keep { local_edges: Some(LocalEdges::at(2, 5)) };
        assert_eq!(v(req(1, 3), Location::Here { epoch: Epoch(3) }), keep);
        assert_eq!(v(req(1, 3), Location::Moved { shard: ShardId(1), epoch: Epoch(3) }), keep);
        let on = Verdict::Redirect { shard: ShardId(2), epoch: Epoch(4) };
        assert_eq!(v(req(1, 3), Location::Moved { shard: ShardId(2), epoch: Epoch(4) }), on);
        let back = Verdict::Redirect { shard: ShardId(1), epoch: Epoch(4) };
        assert_eq!(v(req(1, 3), Location::Here { epoch: Epoch(4) }), back);
        assert_eq!(v(req(1, 3), Location::Here { epoch: Epoch(2) }), Verdict::Inconclusive);
        let odd = Location::Moved { shard: ShardId(2), epoch: Epoch(3) };
        assert_eq!(v(req(1, 3), odd), Verdict::Inconclusive);
        assert_eq!(v(req(1, 3), Location::Unknown), Verdict::Inconclusive);
        assert_eq!(v(req(1, 3), Location::Gone), Verdict::Purge);
    }

    #[test]
    fn a_served_directory_verifier_answers_as_it_verifies() {
        let d = DirectoryVerifier::new();
        d.record_move("n", ShardId(1), Epoch(2));
        assert_eq!(d.locate(ShardId(1), "n", Epoch(2)), Location::Here { epoch: Epoch(2) });
        assert_eq!(
            d.locate(ShardId(3), "n", Epoch(2)),
            Location::Moved { shard: ShardId(1), epoch: Epoch(2) }
        );
        assert_eq!(d.locate(ShardId(1), "m", Epoch(2)), Location::Gone);
    }
}
