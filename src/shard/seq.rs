//! The host's sequence positions as the shard sees them: which batches wait
//! for their acknowledgement, and which died unacknowledged in a restart.

/// Sequence positions beside the table's `applied_seq`.
#[derive(Debug, Default)]
pub(crate) struct SeqPositions {
    /// Highest sequence number of a batch awaiting its (durable) acknowledgement.
    unacked: Option<u64>,
    /// After a restart, the highest unacknowledged batch that died with the
    /// table: later batches are refused until the host has sent it again, so
    /// that a pipelined batch cannot overtake a retry and make it look applied.
    lost_upto: Option<u64>,
}

impl SeqPositions {
    /// Whether batch `seq` may be applied to a table whose last applied batch
    /// is `applied`; `Err(awaiting)` names the batch the host must send first.
    pub(crate) fn admit(&mut self, seq: Option<u64>, applied: Option<u64>) -> Result<(), u64> {
        if let (Some(seq), Some(upto)) = (seq, self.lost_upto) {
            if applied >= Some(upto) {
                self.lost_upto = None;
            } else if seq > upto {
                // Applying it would move the sequence number past batches
                // whose retries are still to come, and those would be skipped.
                return Err(upto);
            }
        }
        Ok(())
    }

    /// Batch `seq` was applied and waits for its durable acknowledgement.
    pub(crate) fn awaiting_ack(&mut self, seq: Option<u64>) {
        self.unacked = self.unacked.max(seq);
    }

    /// Every batch applied so far is acknowledged.
    pub(crate) fn all_acked(&mut self) {
        self.unacked = None;
    }

    /// The table died: the batches not yet acknowledged are lost with it.
    pub(crate) fn restarted(&mut self) {
        self.lost_upto = self.lost_upto.max(self.unacked.take());
    }

    /// The highest batch awaiting its acknowledgement.
    #[cfg(test)]
    pub(crate) fn unacked(&self) -> Option<u64> {
        self.unacked
    }

    /// The highest batch known lost (see the field).
    #[cfg(test)]
    pub(crate) fn lost_upto(&self) -> Option<u64> {
        self.lost_upto
    }
}
