//! The sweeper's token bucket settings: the one place that says a rate and a burst are at least 1.

use crate::error::{Error, Result};
use std::num::NonZeroU32;

/// A token bucket's rate and size, both at least 1 by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Verifies started per second.
    pub(crate) per_second: NonZeroU32,
    /// Verifies that may start at once after an idle spell.
    pub(crate) burst: NonZeroU32,
}

impl Rate {
    /// `per_second` and `burst`, refused with [`Error::InvalidConfig`] if either is 0.
    pub(crate) fn new(per_second: u32, burst: u32) -> Result<Self> {
        match (NonZeroU32::new(per_second), NonZeroU32::new(burst)) {
            (Some(per_second), Some(burst)) => Ok(Self { per_second, burst }),
            _ => {
                Err(Error::InvalidConfig("sweeper: verifies_per_second and burst must be at least 1".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_or_burst_is_refused() {
        for (r, b) in [(0, 1), (1, 0), (0, 0)] {
            assert!(matches!(Rate::new(r, b), Err(Error::InvalidConfig(_))), "{r}/{b}");
        }
        let rate = Rate::new(100, 10).unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (100, 10));
    }
}
