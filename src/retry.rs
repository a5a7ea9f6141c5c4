//! [`Backoff`]: the one exponential backoff policy behind every retry pause in botpipe (store
//! retries, worker pauses, the spool drainer, the Redis link's fail-fast window).
//!
//! The delay before retry `attempt` (0-based) is drawn from `[0, min(cap, base · 2^attempt)]`
//! ("full jitter"), so processes and workers that failed together spread out instead of
//! retrying in lockstep. [`Jitter::None`] gives the ceiling itself, for the one caller whose
//! pause is a window rather than a sleep (see `queue::redis_link`). Each caller keeps its own
//! attempt count and picks its own base and cap; which layer retries what is written down in
//! `docs/architecture.md` ("Who retries what").

use std::time::Duration;

use rand::Rng;

/// How a [`Backoff`] randomises its delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`.
    Full,
    /// Exactly the ceiling.
    None,
}

/// An exponential backoff policy: the ceiling starts at `base` and doubles per attempt up to
/// `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay (attempt 0).
    pub base: Duration,
    /// Largest ceiling, whatever the attempt.
    pub cap: Duration,
    /// How delays are drawn below the ceiling.
    pub jitter: Jitter,
}

impl Backoff {
    /// A full-jitter policy from `base` doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            jitter: Jitter::Full,
        }
    }

    /// The same policy with delays fixed at the ceiling.
    pub const fn without_jitter(self) -> Self {
        Self {
            jitter: Jitter::None,
            ..self
        }
    }

    /// The ceiling for retry `attempt` (0-based): `min(cap, base · 2^attempt)`, saturating.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The pause before retry `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        match self.jitter {
            Jitter::Full => rand::rng().random_range(Duration::ZERO..=ceiling),
            Jitter::None => ceiling,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_from_base_up_to_cap_and_saturates() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(b.ceiling(0), 100 * MS);
        assert_eq!(b.ceiling(1), 200 * MS);
        assert_eq!(b.ceiling(3), 800 * MS);
        assert_eq!(b.ceiling(4), 1000 * MS);
        assert_eq!(b.ceiling(31), 1000 * MS);
        assert_eq!(b.ceiling(u32::MAX), 1000 * MS);
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        for attempt in 0..40 {
            for _ in 0..50 {
                assert!(b.delay(attempt) <= b.ceiling(attempt));
            }
        }
        let draws: std::collections::HashSet<Duration> = (0..50).map(|_| b.delay(5)).collect();
        assert!(draws.len() > 1, "full jitter draws different delays");
    }

    #[test]
    fn without_jitter_the_delay_is_the_ceiling() {
        let b = Backoff::new(50 * MS, 1000 * MS).without_jitter();
        assert_eq!(b.jitter, Jitter::None);
        assert_eq!(b.delay(0), 50 * MS);
        assert_eq!(b.delay(2), 200 * MS);
        assert_eq!(b.delay(10), 1000 * MS);
    }
}
