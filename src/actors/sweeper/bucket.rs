//! The sweeper's token bucket: governor's limiter on the runtime's clock, swapped whole on a rate change.

use super::control::{Control, running};
use crate::clock::Clock;
use crate::sweep::Rate;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// governor's clock over the runtime's one [`Clock`], which the tables read
/// too: a manual clock paces the bucket as it paces ghost ages, and the
/// default one follows tokio's time, paused test time included (governor's
/// own `until_ready` would sleep on a real-time timer instead).
#[derive(Debug, Clone)]
struct BucketClock(Arc<dyn Clock>);

impl governor::clock::Clock for BucketClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, BucketClock, NoOpMiddleware<Duration>>;

/// Whether a new bucket starts with its burst available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refill {
    /// Full: an operator's new rate may be spent at once.
    Full,
    /// One token: the adaptive rate changes often; a full bucket at each
    /// change would add a burst every time, an empty one would push the next
    /// token a whole period out every time.
    One,
}

/// The bucket every verify takes a token from.
pub(super) struct Bucket {
    clock: BucketClock,
    limiter: RwLock<Arc<Limiter>>,
}

impl Bucket {
    /// A full bucket at `rate` on `clock`.
    pub(super) fn new(rate: Rate, clock: Arc<dyn Clock>) -> Self {
        let clock = BucketClock(clock);
        let limiter = RwLock::new(limiter(rate, &clock, Refill::Full));
        Self { clock, limiter }
    }

    /// Replaces the bucket.
    pub(super) fn set_rate(&self, rate: Rate, refill: Refill) {
        let new = limiter(rate, &self.clock, refill);
        *self.limiter.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    fn current(&self) -> Arc<Limiter> {
        self.limiter.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits for a token of the current bucket; false once stopping. Callers
    /// take tokens one at a time: many waiters would all wake at each refill.
    pub(super) async fn token(&self, control: &mut watch::Receiver<Control>) -> bool {
        loop {
            if !running(control).await {
                return false;
            }
            let Err(not_until) = self.current().check() else {
                return true;
            };
            // The clock counts whole ms: wait at least one, or a wait shorter
            // than that would spin.
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&self.clock));
            let deadline = self.clock.0.now_ms().saturating_add(crate::config::millis(wait).max(1));
            tokio::select! {
                () = self.clock.0.sleep_until(deadline) => {}
                changed = control.changed() => if changed.is_err() { return false },
            }
        }
    }
}

fn limiter(rate: Rate, clock: &BucketClock, refill: Refill) -> Arc<Limiter> {
    let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
    let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
    if refill == Refill::One {
        // A new bucket is full: spend all of its burst but one.
        if let Some(spend) = NonZeroU32::new(rate.burst.get() - 1) {
            let _ = limiter.check_n(spend);
        }
    }
    Arc::new(limiter)
}
