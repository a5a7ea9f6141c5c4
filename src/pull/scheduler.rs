//! One task per endpoint on a fixed-rate schedule. Each tick records its drift from the schedule
//! (`botpipe_pull_schedule_drift_seconds` and a log line), checks backpressure without awaiting,
//! and runs one pull cycle. A full batch means a backlog: the next cycle starts at once, but only
//! while there is time left before the next tick, so draining a backlog never delays a tick.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::protocol::{PullOutcome, Puller};
use super::status::StatusBoard;
use crate::queue::Backpressure;
use crate::telemetry::metrics as m;

/// Runs `puller` every `interval` until `token` is cancelled. A cycle in flight when the token
/// fires is finished (its hand-off is deadline-bounded), so no batch is left half confirmed.
pub async fn run_until_stopped(
    mut puller: Puller,
    interval: Duration,
    backpressure: Arc<Backpressure>,
    board: StatusBoard,
    token: CancellationToken,
) {
    let name = puller.name().to_owned();
    let mut ticker = tokio::time::interval(interval);
    // Skip: after an overrun, the schedule keeps its phase instead of bursting to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_scheduled: Option<Instant> = None;
    tracing::info!(endpoint = %name, interval_ms = interval.as_millis() as u64, "Puller started.");
    loop {
        // The losing branch: a pending tick is dropped on shutdown; a cancel while waiting ends
        // the loop.
        let scheduled = tokio::select! {
            () = token.cancelled() => break,
            t = ticker.tick() => t,
        };
        let drift = Instant::now().saturating_duration_since(scheduled);
        metrics::histogram!(m::PULL_SCHEDULE_DRIFT_SECONDS, "endpoint" => name.clone())
            .record(drift.as_secs_f64());
        if let Some(prev) = last_scheduled {
            let gap = scheduled.saturating_duration_since(prev);
            let missed = (gap.as_nanos() / interval.as_nanos().max(1)).saturating_sub(1) as u64;
            if missed > 0 {
                metrics::counter!(m::PULL_MISSED_TICKS_TOTAL, "endpoint" => name.clone())
                    .increment(missed);
                board.update(&name, |s| s.missed_ticks += missed);
                tracing::warn!(endpoint = %name, missed, "Pull ticks missed: a cycle overran its interval.");
            }
        }
        last_scheduled = Some(scheduled);
        board.update(&name, |s| {
            s.last_pull_at = Some(chrono::Utc::now());
            s.last_drift_seconds = drift.as_secs_f64();
        });
        tracing::debug!(endpoint = %name, drift_us = drift.as_micros() as u64, "Pull tick.");

        if !backpressure.allows_pull() {
            metrics::counter!(m::PULL_SKIPPED_TICKS_TOTAL, "endpoint" => name.clone()).increment(1);
            board.update(&name, |s| s.skipped_ticks += 1);
            continue;
        }

        let next_tick = scheduled + interval;
        loop {
            let cycle_start = Instant::now();
            let outcome = puller.try_pull_one().await;
            let took = cycle_start.elapsed();
            let backlog = matches!(
                outcome,
                PullOutcome::Confirmed { full: true, .. } | PullOutcome::Reset
            );
            // Room for another cycle of the same length with margin before the next tick?
            let room = next_tick.saturating_duration_since(Instant::now())
                > took * 2 + Duration::from_millis(1);
            if !(backlog && room && backpressure.allows_pull() && !token.is_cancelled()) {
                break;
            }
        }
    }
    tracing::info!(endpoint = %name, "Puller stopped.");
}
