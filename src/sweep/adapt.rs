//! The sweeper's effective rate: additive increase, multiplicative decrease on
//! the foreground's own latency signals, within `[min, max]`. Pure: time is an
//! argument.
//!
//! The rule, per observation of the shards' signals at `now`:
//! - *over target* (a round trip to a shard above the latency target, or a
//!   write backlog above the backlog target): the rate halves, at most once per
//!   [`DECREASE_HOLD_MS`] (one slow spell is one signal, however many probes
//!   see it), never below `min`;
//! - *under target*: the rate grows by `max / RECOVER_SECONDS` per second since
//!   the last observation, never above `max`; so from `min` it is back at
//!   `max` within [`RECOVER_SECONDS`] of quiet.

use std::num::NonZeroU32;
use std::time::Duration;

/// Least time between two halvings.
pub(crate) const DECREASE_HOLD_MS: u64 = 500;
/// Seconds of quiet that take the rate from `min` back to `max`.
pub(crate) const RECOVER_SECONDS: u32 = 10;

/// What the sweeper saw of the foreground in one probe of a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signals {
    /// Round trip of a request to the shard: its mailbox delay and the
    /// handler time of what was ahead of it.
    pub(crate) round_trip: Duration,
    /// Writes awaiting a commit: the shard's acknowledgements waiting plus the
    /// store writer's queue.
    pub(crate) backlog: usize,
}

/// The effective rate and what moves it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdaptiveRate {
    min: NonZeroU32,
    max: NonZeroU32,
    latency_target: Duration,
    backlog_target: usize,
    /// Fractional, so that slow growth at low rates is not rounded away.
    current: f64,
    last_seen_ms: Option<u64>,
    last_decrease_ms: Option<u64>,
}

impl AdaptiveRate {
    /// Starts at `max`; `min` above `max` is taken as `max`.
    pub(crate) fn new(
        min: NonZeroU32,
        max: NonZeroU32,
        latency_target: Duration,
        backlog_target: usize,
    ) -> Self {
        Self {
            min: min.min(max),
            max,
            latency_target,
            backlog_target,
            current: f64::from(max.get()),
            last_seen_ms: None,
            last_decrease_ms: None,
        }
    }

    /// The effective rate, in verifies per second.
    pub(crate) fn current(&self) -> NonZeroU32 {
        let n = (self.current.floor() as u32).clamp(self.min.get(), self.max.get());
        NonZeroU32::new(n).unwrap_or(self.min)
    }

    /// A new ceiling (an operator's rate): the rate starts again there.
    pub(crate) fn set_max(&mut self, max: NonZeroU32) {
        self.max = max;
        self.min = self.min.min(max);
        self.current = f64::from(max.get());
    }

    /// Whether `s` is over either target.
    pub(crate) fn over_target(&self, s: Signals) -> bool {
        s.round_trip > self.latency_target || s.backlog > self.backlog_target
    }

    /// Takes in one observation at `now_ms`; answers the effective rate after it.
    pub(crate) fn observe(&mut self, s: Signals, now_ms: u64) -> NonZeroU32 {
        let since = self.last_seen_ms.map_or(0, |t| now_ms.saturating_sub(t));
        self.last_seen_ms = Some(now_ms);
        if self.over_target(s) {
            let held = self.last_decrease_ms.is_some_and(|t| now_ms.saturating_sub(t) < DECREASE_HOLD_MS);
            if !held {
                self.current = (self.current / 2.0).max(f64::from(self.min.get()));
                self.last_decrease_ms = Some(now_ms);
            }
        } else {
            let per_second = f64::from(self.max.get()) / f64::from(RECOVER_SECONDS);
            let grown = self.current + per_second * since as f64 / 1e3;
            self.current = grown.min(f64::from(self.max.get()));
        }
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    const TARGET: Duration = Duration::from_millis(5);
    const SLOW: Signals = Signals { round_trip: Duration::from_millis(40), backlog: 0 };
    const QUIET: Signals = Signals { round_trip: Duration::from_micros(50), backlog: 0 };

    #[test]
    fn halves_when_over_target_once_per_hold_and_stops_at_min() {
        let mut r = AdaptiveRate::new(nz(5), nz(100), TARGET, 64);
        assert_eq!(r.observe(SLOW, 1_000).get(), 50);
        // Within the hold: the same slow spell, no second halving.
        assert_eq!(r.observe(SLOW, 1_000 + DECREASE_HOLD_MS - 1).get(), 50);
        assert_eq!(r.observe(SLOW, 1_000 + DECREASE_HOLD_MS).get(), 25);
        let mut now = 1_000 + DECREASE_HOLD_MS;
        for _ in 0..10 {
            now += DECREASE_HOLD_MS;
            r.observe(SLOW, now);
        }
        assert_eq!(r.current().get(), 5, "never below min");
    }

    #[test]
    fn a_backlog_over_target_backs_off_too() {
        let mut r = AdaptiveRate::new(nz(1), nz(100), TARGET, 64);
        let backlog = Signals { round_trip: Duration::ZERO, backlog: 65 };
        assert_eq!(r.observe(backlog, 0).get(), 50);
        let at_target = Signals { round_trip: TARGET, backlog: 64 };
        assert!(!r.over_target(at_target), "at the target is not over it");
    }

    #[test]
    fn recovers_linearly_to_max_within_the_recovery_time() {
        let mut r = AdaptiveRate::new(nz(1), nz(100), TARGET, 64);
        let mut now = 0;
        for _ in 0..12 {
            r.observe(SLOW, now);
            now += DECREASE_HOLD_MS;
        }
        assert_eq!(r.current().get(), 1);
        // Quiet from the last slow observation on: max / RECOVER_SECONDS = 10 per second.
        let now = now - DECREASE_HOLD_MS;
        assert_eq!(r.observe(QUIET, now).get(), 1);
        assert_eq!(r.observe(QUIET, now + 1_000).get(), 11);
        assert_eq!(r.observe(QUIET, now + 5_000).get(), 51);
        assert_eq!(r.observe(QUIET, now + 10_000).get(), 100);
        assert_eq!(r.observe(QUIET, now + 60_000).get(), 100, "never above max");
    }

    #[test]
    fn an_operator_rate_is_the_new_ceiling_and_start() {
        let mut r = AdaptiveRate::new(nz(10), nz(100), TARGET, 64);
        r.observe(SLOW, 0);
        r.set_max(nz(8));
        assert_eq!(r.current().get(), 8);
        assert_eq!(r.observe(SLOW, 10_000).get(), 8, "min is clamped to the new max");
        r.set_max(nz(1_000));
        assert_eq!(r.observe(QUIET, 20_000).get(), 1_000);
    }

    #[test]
    fn always_within_bounds_whatever_the_signals() {
        let mut r = AdaptiveRate::new(nz(3), nz(250), TARGET, 8);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut now = 0;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now += seed % 700;
            let s =
                Signals { round_trip: Duration::from_micros(seed % 10_000), backlog: (seed % 16) as usize };
            let rate = r.observe(s, now).get();
            assert!((3..=250).contains(&rate), "{rate}");
        }
    }
}
