//! Backpressure with hysteresis: above the high watermark of queue + spool depth, pullers skip
//! their ticks (collectors keep unconfirmed data, so nothing is lost); below the low watermark
//! they resume. The spool cap stops pulls on its own. The state is an atomic the pull loop reads
//! without awaiting; a sampler updates it from the backends' own depth figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared pull gate.
#[derive(Debug)]
pub struct Backpressure {
    high: u64,
    low: u64,
    spool_cap: u64,
    paused: AtomicBool,
    last_total: AtomicU64,
}

impl Backpressure {
    /// A gate with the given marks (in batches).
    pub fn new(high: u64, low: u64, spool_cap: u64) -> Self {
        Self {
            high,
            low,
            spool_cap,
            paused: AtomicBool::new(false),
            last_total: AtomicU64::new(0),
        }
    }

    /// Whether pullers may pull now.
    pub fn allows_pull(&self) -> bool {
        !self.paused.load(Ordering::Acquire)
    }

    /// Feeds a fresh depth sample; returns true when the paused state changed.
    pub fn observe(&self, queue_depth: u64, spool_depth: u64) -> bool {
        let total = queue_depth + spool_depth;
        self.last_total.store(total, Ordering::Release);
        let was = self.paused.load(Ordering::Acquire);
        let now = if spool_depth >= self.spool_cap || total >= self.high {
            true
        } else if total <= self.low {
            false
        } else {
            was
        };
        if now != was {
            self.paused.store(now, Ordering::Release);
            if now {
                tracing::warn!(queue_depth, spool_depth, high = self.high, spool_cap = self.spool_cap, "Backpressure on: pullers skip ticks until the depth falls below the low watermark.");
            } else {
                tracing::info!(
                    queue_depth,
                    spool_depth,
                    low = self.low,
                    "Backpressure off: pulling resumes."
                );
            }
        }
        now != was
    }

    /// The last sampled queue + spool depth.
    pub fn last_depth(&self) -> u64 {
        self.last_total.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_between_marks() {
        let b = Backpressure::new(10, 5, 100);
        assert!(b.allows_pull());
        b.observe(9, 0);
        assert!(b.allows_pull());
        b.observe(8, 2);
        assert!(!b.allows_pull());
        b.observe(7, 0);
        assert!(!b.allows_pull(), "still above the low mark");
        b.observe(5, 0);
        assert!(b.allows_pull());
    }

    #[test]
    fn spool_cap_stops_pulls_alone() {
        let b = Backpressure::new(1000, 500, 3);
        b.observe(0, 3);
        assert!(!b.allows_pull());
    }
}
