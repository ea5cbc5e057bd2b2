//! The host's sequence positions as the shard sees them: which batches wait
//! for their acknowledgement, and which a restart lost unacknowledged.

use std::collections::BTreeSet;

/// Sequence positions beside the table's `applied_seq`.
///
/// Every loss is kept exactly, not only the highest: after two restarts that
/// each lost part of a pipeline, the shard still knows every batch the host
/// must send again, and refuses whatever would overtake the lowest of them.
#[derive(Debug, Default)]
pub(crate) struct SeqPositions {
    /// Batches applied since the last flush started, awaiting their acknowledgement.
    unacked: BTreeSet<u64>,
    /// Batches in the commit in flight, awaiting their acknowledgement.
    in_flight: BTreeSet<u64>,
    /// Batches the host must send again, not applied since: those a restart
    /// lost unacknowledged, and those the shard refused (fenced, down,
    /// loading, panicking, or refused for a gap). Batches above the lowest
    /// are refused until it is applied, so that a pipelined batch cannot
    /// overtake a retry and make it look applied.
    lost: BTreeSet<u64>,
}

impl SeqPositions {
    /// Whether batch `seq` may be applied to a table whose last applied batch
    /// is `applied`; `Err(awaiting)` names the lowest batch the host must send
    /// again first.
    pub(crate) fn admit(&mut self, seq: Option<u64>, applied: Option<u64>) -> Result<(), u64> {
        // A loss at or below what the table holds reached the store after
        // all (its commit landed though it was reported failed).
        if let Some(applied) = applied {
            self.lost.retain(|&s| s > applied);
        }
        match (seq, self.lost.first()) {
            // Applying it would move the sequence number past batches whose
            // retries are still to come, and those would be skipped.
            (Some(seq), Some(&lowest)) if seq > lowest => Err(lowest),
            _ => Ok(()),
        }
    }

    /// Batch `seq` is being applied; `awaits_ack`: its answer waits for its commit.
    pub(crate) fn applying(&mut self, seq: Option<u64>, awaits_ack: bool) {
        if let Some(seq) = seq {
            self.lost.remove(&seq);
            if awaits_ack {
                self.unacked.insert(seq);
            }
        }
    }

    /// A flush starts: every batch applied so far rides it.
    pub(crate) fn flush_started(&mut self) {
        let unacked = std::mem::take(&mut self.unacked);
        self.in_flight.extend(unacked);
    }

    /// The flush in flight committed: its batches are acknowledged.
    pub(crate) fn flush_committed(&mut self) {
        self.in_flight.clear();
    }

    /// Batch `seq` was refused (with an error the host answers by sending it
    /// again): until it is applied, no later batch may be. `applied`: the
    /// table's last applied batch, when it has a table; a batch at or below
    /// it is a resend of one applied, which the host need not send again.
    pub(crate) fn refused(&mut self, seq: u64, applied: Option<u64>) {
        if applied.is_none_or(|a| seq > a) {
            self.lost.insert(seq);
        }
    }

    /// The table died: the batches not yet acknowledged are lost with it.
    pub(crate) fn restarted(&mut self) {
        let (unacked, in_flight) = (std::mem::take(&mut self.unacked), std::mem::take(&mut self.in_flight));
        self.lost.extend(unacked);
        self.lost.extend(in_flight);
    }

    /// The highest batch awaiting its acknowledgement.
    #[cfg(test)]
    pub(crate) fn unacked(&self) -> Option<u64> {
        self.unacked.last().max(self.in_flight.last()).copied()
    }

    /// The lowest batch known lost (see the field).
    #[cfg(test)]
    pub(crate) fn lowest_lost(&self) -> Option<u64> {
        self.lost.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::SeqPositions;

    #[test]
    fn every_loss_is_kept_until_it_is_applied_again() {
        let mut s = SeqPositions::default();
        s.applying(Some(2), true);
        s.applying(Some(3), true);
        s.restarted();
        assert_eq!(s.admit(Some(3), Some(1)), Err(2));
        assert_eq!(s.admit(Some(2), Some(1)), Ok(()));
        s.applying(Some(2), true);
        // The retry of 2 is lost again: 2 and 3 both still are.
        s.restarted();
        assert_eq!(s.lowest_lost(), Some(2));
        assert_eq!(s.admit(Some(3), Some(1)), Err(2));
        s.applying(Some(2), true);
        assert_eq!(s.admit(Some(4), Some(2)), Err(3));
        assert_eq!(s.admit(Some(3), Some(2)), Ok(()));
        s.applying(Some(3), true);
        assert_eq!(s.admit(Some(4), Some(3)), Ok(()));
        assert_eq!(s.unacked(), Some(3));
    }

    #[test]
    fn a_refused_batch_holds_back_every_later_one_until_it_is_applied() {
        let mut s = SeqPositions::default();
        // Refused while the shard had no table: kept whatever it was.
        s.refused(4, None);
        assert_eq!(s.admit(Some(5), Some(3)), Err(4));
        assert_eq!(s.admit(Some(4), Some(3)), Ok(()));
        s.applying(Some(4), true);
        assert_eq!(s.admit(Some(5), Some(4)), Ok(()));
        // A resend of a batch applied already is not awaited.
        s.refused(2, Some(4));
        assert_eq!(s.lowest_lost(), None);
        // A refused batch below a lost one keeps its own place.
        s.refused(9, Some(4));
        s.refused(7, Some(4));
        assert_eq!(s.admit(Some(8), Some(4)), Err(7));
    }

    #[test]
    fn a_loss_the_store_holds_after_all_is_forgotten() {
        let mut s = SeqPositions::default();
        s.applying(Some(5), true);
        s.flush_started();
        assert_eq!(s.unacked(), Some(5));
        s.restarted();
        assert_eq!(s.admit(Some(6), Some(5)), Ok(()));
        assert_eq!(s.lowest_lost(), None);
    }

    #[test]
    fn a_committed_flush_acknowledges_only_what_rode_it() {
        let mut s = SeqPositions::default();
        s.applying(Some(1), true);
        s.flush_started();
        s.applying(Some(2), true);
        s.flush_committed();
        assert_eq!(s.unacked(), Some(2));
        s.restarted();
        assert_eq!(s.admit(Some(3), Some(1)), Err(2));
        // Batches answered at once are not awaited, so not known lost.
        let mut s = SeqPositions::default();
        s.applying(Some(1), false);
        s.restarted();
        assert_eq!(s.admit(Some(2), None), Ok(()));
        // Unsequenced batches pass.
        assert_eq!(s.admit(None, None), Ok(()));
    }
}
