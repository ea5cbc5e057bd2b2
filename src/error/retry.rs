//! [`RetryHint`]: what a host does about an [`Error`], without a case per variant.

use super::Error;

/// What to do after a failed call, from [`Error::retry_hint`].
///
/// Deliberately exhaustive: a host's retry loop matches these three and no
/// wildcard, so a new kind of advice would be a visible break, not a silent
/// give-up.
///
/// # The loop
///
/// A host that sends sequenced edge batches from its own per-shard log:
///
/// ```
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use vshard_ghosts::{EdgeEvents, Error, GhostRuntime, RetryHint, ShardId, StoreChoice};
///
/// /// Sends batch `seq` of `shard`'s log until it is applied, resending what
/// /// the shard asks for first.
/// async fn send(rt: &GhostRuntime, shard: ShardId, log: &BTreeMap<u64, EdgeEvents>, seq: u64) -> Result<(), Error> {
///     let mut next = seq;
///     let mut delay = Duration::from_millis(10);
///     while next <= seq {
///         match rt.edge_batch(shard, Some(next), log[&next].clone()).await {
///             Ok(_) => next += 1,
///             Err(e) => match e.retry_hint() {
///                 RetryHint::RetryAsIs => {
///                     tokio::time::sleep(delay).await;
///                     delay = (delay * 2).min(Duration::from_secs(1));
///                 }
///                 // Batches from `from` on were lost before they were
///                 // acknowledged: send them again, in order, then this one.
///                 RetryHint::ResendFrom(from) => next = from.min(seq),
///                 RetryHint::GiveUp => return Err(e),
///             },
///         }
///     }
///     Ok(())
/// }
///
/// actix::System::new().block_on(async {
///     let rt = GhostRuntime::builder().shards([ShardId(0)]).arbiters(0).store(StoreChoice::Memory).start()?;
///     let mut log = BTreeMap::new();
///     for seq in 1..=3 {
///         let mut events = EdgeEvents::new();
///         events.added("user:42");
///         log.insert(seq, events);
///         send(&rt, ShardId(0), &log, seq).await?;
///     }
///     rt.shutdown().await
/// })?;
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryHint {
    /// Make the same call again, after a back-off: the failure was transient
    /// (a store hiccup, a restart, a load in progress, an unreachable peer).
    RetryAsIs,
    /// The shard lost sequenced batches before acknowledging them: send this
    /// shard's batches again from this sequence number, in order, up to and
    /// including the one that failed.
    ResendFrom(u64),
    /// Retrying as is cannot help: the input, the stored state, ownership or
    /// the runtime's life must change first (see [`Error::is_retryable`]).
    GiveUp,
}

impl Error {
    /// What a host does about this error: [`RetryHint::ResendFrom`] for
    /// [`Error::SeqGap`] (the batch after the last applied one), otherwise
    /// [`RetryHint::RetryAsIs`] when [`is_retryable`](Self::is_retryable) and
    /// [`RetryHint::GiveUp`] when not.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::SeqGap { applied, .. } => RetryHint::ResendFrom(applied.map_or(0, |a| a.saturating_add(1))),
            e if e.is_retryable() => RetryHint::RetryAsIs,
            _ => RetryHint::GiveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    #[test]
    fn a_gap_names_the_first_batch_to_resend() {
        let gap = Error::SeqGap { shard: ShardId(2), applied: Some(7), awaiting: 9 };
        assert_eq!(gap.retry_hint(), RetryHint::ResendFrom(8));
        let none_applied = Error::SeqGap { shard: ShardId(2), applied: None, awaiting: 3 };
        assert_eq!(none_applied.retry_hint(), RetryHint::ResendFrom(0));
    }

    #[test]
    fn the_hint_agrees_with_is_retryable_elsewhere() {
        assert_eq!(Error::store("timeout").retry_hint(), RetryHint::RetryAsIs);
        assert_eq!(Error::ShardLoading { shard: ShardId(1) }.retry_hint(), RetryHint::RetryAsIs);
        assert_eq!(Error::Closed.retry_hint(), RetryHint::GiveUp);
        assert_eq!(Error::UnknownShard(ShardId(4)).retry_hint(), RetryHint::GiveUp);
        assert_eq!(Error::InvalidConfig("x".into()).retry_hint(), RetryHint::GiveUp);
    }
}
