//! One task per endpoint on a fixed-rate schedule. Each tick records its drift from the schedule
//! (`botpipe_pull_schedule_drift_seconds` and a log line), checks backpressure without awaiting,
//! and runs one pull cycle. A full batch means a backlog: the next cycle starts at once, but only
//! while there is time left before the next tick, so draining a backlog never delays a tick.
//!
//! Precision: tokio's timer has 1 ms resolution and the OS adds its wake-up latency, so a plain
//! `sleep_until(tick)` lands 1–2 ms late, more when the thread is not scheduled at once. The
//! [`Cadence`] therefore sleeps until [`EARLY_WAKE`] before the tick and finishes the wait by
//! yielding to the runtime (other endpoints keep running) until the tick instant. That costs at
//! most `EARLY_WAKE` of one core per tick. The schedulers run on their own runtime thread (see
//! [`PullRuntime`]), so no worker, HTTP handler or drainer can sit on the thread a tick needs.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::protocol::{PullOutcome, Puller};
use super::status::StatusBoard;
use crate::queue::Backpressure;
use crate::telemetry::metrics as m;

/// How long before a tick the scheduler leaves the coarse timer and waits precisely.
pub const EARLY_WAKE: Duration = Duration::from_millis(2);

/// A fixed-rate schedule: ticks at `start + k·interval`, whatever the cycles in between took.
#[derive(Debug)]
pub struct Cadence {
    interval: Duration,
    next: Instant,
}

/// One tick of a [`Cadence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// When the tick was due.
    pub scheduled: Instant,
    /// How late it started.
    pub drift: Duration,
    /// Earlier ticks that passed entirely while the previous cycle ran (they are not run).
    pub missed: u64,
}

impl Cadence {
    /// A schedule whose first tick is due now.
    pub fn new(interval: Duration) -> Self {
        Self::starting_at(Instant::now(), interval)
    }

    /// A schedule whose first tick is due at `first`.
    pub fn starting_at(first: Instant, interval: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            next: first,
        }
    }

    /// When the next tick is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Catches up without waiting: when `now` is past the next tick, the latest tick already due
    /// is the one that runs and those before it are missed.
    fn catch_up(&mut self, now: Instant) -> u64 {
        if now <= self.next {
            return 0;
        }
        let behind = now.duration_since(self.next);
        let missed = (behind.as_nanos() / self.interval.as_nanos()) as u64;
        // `missed` whole intervals fit in `behind`, so this stays at or before `now`.
        self.next += self.interval * u32::try_from(missed).unwrap_or(u32::MAX);
        missed
    }

    /// Waits for the next tick, or returns `None` when `token` is cancelled first.
    pub async fn tick(&mut self, token: &CancellationToken) -> Option<Tick> {
        let missed = self.catch_up(Instant::now());
        if let Some(early) = self.next.checked_sub(EARLY_WAKE) {
            if Instant::now() < early {
                tokio::select! {
                    () = token.cancelled() => return None,
                    () = tokio::time::sleep_until(early) => {}
                }
            }
        }
        // The precise part: at most EARLY_WAKE of yielding (less when the timer woke us late).
        while Instant::now() < self.next {
            if token.is_cancelled() {
                return None;
            }
            tokio::task::yield_now().await;
        }
        let scheduled = self.next;
        let drift = Instant::now().saturating_duration_since(scheduled);
        self.next = scheduled + self.interval;
        Some(Tick {
            scheduled,
            drift,
            missed,
        })
    }
}

/// The runtime the pull schedulers run on: one worker thread of its own, so that a busy main
/// runtime (workers enriching and writing, HTTP, the spool drainer) cannot delay a tick. The
/// pullers on it hand off through [`crate::queue::Handoff::with_own_link`], so their Redis
/// connections are driven here too, and the main runtime's are not. Dropping it shuts it down in
/// the background, which is allowed from async code.
#[derive(Debug)]
pub struct PullRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl PullRuntime {
    /// Starts the runtime thread (`botpipe-pull`).
    ///
    /// # Errors
    /// When the OS refuses the thread or the I/O driver.
    pub fn start() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("botpipe-pull")
            .enable_all()
            .build()
            .map(|rt| Self {
                handle: rt.handle().clone(),
                runtime: Some(rt),
            })
    }

    /// A handle to spawn schedulers on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for PullRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The first-tick offsets of endpoints with these `intervals`, in the same order: endpoints
/// that share an interval are spread evenly over it (the k-th of n starts k·interval/n late), so
/// their ticks do not fall on the same instant on the one pull thread, where each would wait
/// for the others' work and drift. Endpoints with different intervals keep offset zero.
pub fn spread_phases(intervals: &[Duration]) -> Vec<Duration> {
    intervals
        .iter()
        .enumerate()
        .map(|(i, interval)| {
            let same = intervals.iter().filter(|d| *d == interval).count() as u32;
            let rank = intervals[..i].iter().filter(|d| *d == interval).count() as u32;
            (*interval / same.max(1)) * rank
        })
        .collect()
}

/// Runs `puller` every `interval`, the first tick `phase` from now (see [`spread_phases`]),
/// until `token` is cancelled. A cycle in flight when the token fires is finished (its hand-off
/// is deadline-bounded), so no batch is left half confirmed.
pub async fn run_until_stopped(
    mut puller: Puller,
    interval: Duration,
    phase: Duration,
    backpressure: Arc<Backpressure>,
    board: StatusBoard,
    token: CancellationToken,
) {
    let name = puller.name().to_owned();
    let mut cadence = Cadence::starting_at(Instant::now() + phase, interval);
    tracing::info!(endpoint = %name, interval_ms = interval.as_millis() as u64, "Puller started.");
    while let Some(tick) = cadence.tick(&token).await {
        let Tick {
            scheduled,
            drift,
            missed,
        } = tick;
        metrics::histogram!(m::PULL_SCHEDULE_DRIFT_SECONDS, "endpoint" => name.clone())
            .record(drift.as_secs_f64());
        if missed > 0 {
            metrics::counter!(m::PULL_MISSED_TICKS_TOTAL, "endpoint" => name.clone())
                .increment(missed);
            board.update(&name, |s| *s.missed_ticks.get_or_insert(0) += missed);
            tracing::warn!(endpoint = %name, missed, "Pull ticks missed: a cycle overran its interval.");
        }
        // Lease hook (several processes): only the holder pulls; no I/O here.
        if !puller.may_pull() {
            continue;
        }
        board.record_drift(&name, drift);
        tracing::debug!(endpoint = %name, drift_us = drift.as_micros() as u64, "Pull tick.");
        puller.set_tick_drift(drift);

        if !backpressure.allows_pull() {
            metrics::counter!(m::PULL_SKIPPED_TICKS_TOTAL, "endpoint" => name.clone()).increment(1);
            board.update(&name, |s| *s.skipped_ticks.get_or_insert(0) += 1);
            continue;
        }
        // A skipped tick pulled nothing: "last pull" is the last tick that did.
        board.update(&name, |s| s.last_pull_at = Some(chrono::Utc::now()));

        let next_tick = scheduled + interval;
        loop {
            let cycle_start = Instant::now();
            let outcome = puller.try_pull_one().await;
            let took = cycle_start.elapsed();
            let backlog = matches!(
                outcome,
                PullOutcome::Confirmed { full: true, .. } | PullOutcome::Reset
            );
            // Room for another cycle of the same length with margin before the next tick
            // (and before the scheduler must start its precise wait)?
            let room = next_tick.saturating_duration_since(Instant::now())
                > took * 2 + EARLY_WAKE + Duration::from_millis(1);
            if !(backlog && room && backpressure.allows_pull() && !token.is_cancelled()) {
                break;
            }
        }
    }
    tracing::info!(endpoint = %name, "Puller stopped.");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_on_time_schedule_misses_nothing() {
        let t0 = Instant::now();
        let mut c = Cadence::starting_at(t0, 100 * MS);
        assert_eq!(c.catch_up(t0), 0);
        assert_eq!(c.catch_up(t0 - 5 * MS), 0);
        assert_eq!(c.next_due(), t0);
    }

    #[test]
    fn a_late_start_within_one_interval_runs_the_due_tick() {
        let t0 = Instant::now();
        let mut c = Cadence::starting_at(t0, 100 * MS);
        assert_eq!(c.catch_up(t0 + 99 * MS), 0);
        assert_eq!(c.next_due(), t0);
    }

    #[test]
    fn an_overrun_skips_whole_intervals_and_keeps_the_phase() {
        let t0 = Instant::now();
        let mut c = Cadence::starting_at(t0, 100 * MS);
        // 350 ms late: ticks at 0, 100 and 200 ms passed entirely; the one at 300 ms runs.
        assert_eq!(c.catch_up(t0 + 350 * MS), 3);
        assert_eq!(c.next_due(), t0 + 300 * MS);
    }

    #[test]
    fn issue_12_endpoints_sharing_an_interval_get_spread_phases() {
        let phases = spread_phases(&[100 * MS, 300 * MS, 100 * MS, 100 * MS, 300 * MS, 70 * MS]);
        assert_eq!(phases.len(), 6);
        assert_eq!(phases[0], Duration::ZERO);
        assert_eq!(phases[2], Duration::from_nanos(33_333_333));
        assert_eq!(phases[3], Duration::from_nanos(66_666_666));
        assert_eq!(phases[1], Duration::ZERO);
        assert_eq!(phases[4], 150 * MS);
        assert_eq!(phases[5], Duration::ZERO);
        assert!(spread_phases(&[]).is_empty());
    }

    #[tokio::test]
    async fn ticks_follow_the_schedule_and_cancel_promptly() {
        let token = CancellationToken::new();
        let t0 = Instant::now() + 20 * MS;
        let mut c = Cadence::starting_at(t0, 10 * MS);
        let first = c.tick(&token).await.unwrap();
        assert_eq!(first.scheduled, t0);
        assert!(Instant::now() >= t0, "a tick never starts early");
        let second = c.tick(&token).await.unwrap();
        assert_eq!(second.scheduled, t0 + 10 * MS);
        token.cancel();
        assert_eq!(c.tick(&token).await, None);
    }
}
