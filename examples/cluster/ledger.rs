//! The parent's account of each shard's log: how far it is known durable.
//!
//! A batch is done once it is durable, which the parent learns two ways: the
//! `ACK shard seq` line of the process that streamed it, or, for a shard taken
//! over, the applied sequence number the survivor loaded from the store
//! (`TOOK shard applied`). The second matters: a victim killed after its commit
//! landed but before it said `ACK` leaves batches durable that no process ever
//! acknowledges (the survivor resumes past them). Were that the shard's last
//! batch, nothing would ever complete the shard, and the run would wait for it
//! until its timeout: issue 22, seen at scale, where the victim is killed while
//! most of its shards are finishing.
//!
//! Pure bookkeeping, no I/O: `tests/cluster_example.rs` includes this file.

/// What the parent knows of every shard's log.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    /// Per shard: every batch up to this one is durable (0: none yet).
    durable: Vec<u64>,
    /// `ACK` lines counted (batches acknowledged by the process that streamed them).
    acks: u64,
}

/// A takeover that resumed below a batch already acknowledged: that batch is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    pub(crate) shard: u16,
    pub(crate) acknowledged: u64,
    pub(crate) applied: u64,
}

impl Ledger {
    pub(crate) fn new(shards: u16) -> Self {
        Self { durable: vec![0; usize::from(shards)], acks: 0 }
    }

    /// `ACK shard seq`: batch `seq` of `shard` (and so every one before it,
    /// since a shard applies its log in order) is durable.
    pub(crate) fn ack(&mut self, shard: u16, seq: u64) {
        let d = &mut self.durable[usize::from(shard)];
        *d = (*d).max(seq);
        self.acks += 1;
    }

    /// `TOOK shard applied`: a survivor loaded `shard` with every batch up to
    /// `applied` in it. Those count as durable whether or not their `ACK`
    /// came (see the module docs); fails if an acknowledged batch is missing.
    pub(crate) fn took(&mut self, shard: u16, applied: u64) -> Result<(), Lost> {
        let d = &mut self.durable[usize::from(shard)];
        if applied < *d {
            return Err(Lost { shard, acknowledged: *d, applied });
        }
        *d = applied;
        Ok(())
    }

    /// Every batch up to this one of `shard` is durable.
    pub(crate) fn durable(&self, shard: u16) -> u64 {
        self.durable[usize::from(shard)]
    }

    /// Whether every shard's log is durable through batch `batches`.
    pub(crate) fn all_durable(&self, batches: u64) -> bool {
        self.durable.iter().all(|&d| d >= batches)
    }

    /// `ACK` lines counted so far.
    pub(crate) fn acks(&self) -> u64 {
        self.acks
    }
}
