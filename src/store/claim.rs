//! `ClaimWatch`: whether a store's claim on a shard still holds, cheap enough to ask on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Whether a store's claim on a shard still holds: a clonable handle that a
/// shard's actor asks before every request (see [`GhostStore::claim`](super::GhostStore::claim)).
///
/// A watch is valid until its deadline passes, its deadline is
/// [expired](Self::expire), or it is [revoked](Self::revoke); once invalid
/// through expiry or revocation it stays so. The deadline is real
/// (monotonic) time, not the actor's [`Clock`](crate::clock::Clock): it stands for a
/// real lease, which lapses in real time whatever clock the table runs on.
///
/// Watches made by [`derive`](Self::derive) share the deadline of the one
/// they come from (one lease, many shards: one renewal extends them all) but
/// are revoked on their own (one shard released or lost). Clones share both.
#[derive(Debug, Clone)]
pub struct ClaimWatch {
    deadline: Arc<Deadline>,
    revoked: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Deadline {
    origin: Instant,
    /// Nanoseconds after `origin` until which the claim holds; 0: expired for good.
    until: AtomicU64,
}

impl ClaimWatch {
    /// A watch valid until `deadline` (already invalid if that is not in the future).
    pub fn until(deadline: Instant) -> Self {
        let origin = Instant::now();
        let until = nanos(deadline.saturating_duration_since(origin));
        Self {
            deadline: Arc::new(Deadline { origin, until: AtomicU64::new(until) }),
            revoked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A watch on the same deadline, revoked on its own.
    pub fn derive(&self) -> Self {
        Self { deadline: self.deadline.clone(), revoked: Arc::new(AtomicBool::new(false)) }
    }

    /// Moves the shared deadline to `deadline` if that is later; does nothing
    /// once it expired or was [expired](Self::expire) (a lapsed claim is not
    /// brought back by a late renewal).
    pub fn extend(&self, deadline: Instant) {
        let to = nanos(deadline.saturating_duration_since(self.deadline.origin));
        let now = nanos(self.deadline.origin.elapsed());
        let _ = self
            .deadline
            .until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| (cur > now && to > cur).then_some(to));
    }

    /// Ends the shared deadline now, for good: this watch, its clones and
    /// every watch derived from the same deadline become invalid.
    pub fn expire(&self) {
        self.deadline.until.store(0, Ordering::Release);
    }

    /// Makes this watch and its clones invalid for good; watches derived from
    /// the same deadline are not affected.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// True while the claim holds: not revoked, and its deadline not passed.
    pub fn is_valid(&self) -> bool {
        !self.revoked.load(Ordering::Acquire)
            && nanos(self.deadline.origin.elapsed()) < self.deadline.until.load(Ordering::Acquire)
    }

    /// Why the claim no longer holds; `None` while it does.
    pub fn lapse_cause(&self) -> Option<&'static str> {
        let until = self.deadline.until.load(Ordering::Acquire);
        if self.revoked.load(Ordering::Acquire) {
            Some("the claim was released or lost")
        } else if until == 0 {
            Some("the lease was lost")
        } else if nanos(self.deadline.origin.elapsed()) >= until {
            Some("the lease was not renewed within its time-to-live")
        } else {
            None
        }
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_watch_lapses_at_its_deadline_and_stays_lapsed() {
        let now = Instant::now();
        let w = ClaimWatch::until(now + Duration::from_secs(3600));
        assert!(w.is_valid() && w.lapse_cause().is_none());
        let shard = w.derive();
        w.extend(now + Duration::from_secs(7200));
        assert!(shard.is_valid());
        // Revoking one claim leaves the lease's other claims valid.
        shard.clone().revoke();
        assert!(!shard.is_valid() && w.is_valid());
        assert_eq!(shard.lapse_cause(), Some("the claim was released or lost"));
        // Expiring the lease ends every claim on it, and no renewal brings them back.
        let other = w.derive();
        w.expire();
        w.extend(now + Duration::from_secs(9000));
        assert!(!w.is_valid() && !other.is_valid());
        assert_eq!(other.lapse_cause(), Some("the lease was lost"));
        // A deadline already past.
        let past = ClaimWatch::until(now);
        assert!(!past.is_valid());
        past.extend(Instant::now() + Duration::from_secs(60));
        assert!(!past.is_valid(), "a lapsed claim is not brought back");
    }

    #[test]
    fn a_short_deadline_passes_in_real_time() {
        let w = ClaimWatch::until(Instant::now() + Duration::from_millis(20));
        while w.is_valid() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.lapse_cause(), Some("the lease was not renewed within its time-to-live"));
    }
}
