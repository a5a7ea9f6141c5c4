//! How the network stores survive failures without losing or blocking a batch.
//!
//! - **Transient errors** (a lost connection, a busy lock, a concurrent writer outside botpipe,
//!   a deadlock that partitioned writes should make impossible) roll the transaction back and
//!   retry it (one write partition of a batch; see [`super::sql`]) with full-jitter backoff, a
//!   bounded number of times; then the error goes to the caller, which leaves the batch unacked
//!   in the queue. Retrying is safe because the merge rules make a replay a no-op.
//! - **Row rejections** (a value the database refuses: a timestamp out of range; names are cut
//!   to their columns beforehand, see [`super::columns`]) cannot be cured by retrying, and a
//!   multi-row statement does not say which row was bad. The partition is re-applied in a fresh
//!   transaction by bisection under savepoints: a failing
//!   slice is split in two until the bad records are single; those become
//!   [`RejectReason::StoreRejected`] dead letters in the same transaction and the rest commits.
//!   Because the merge rules do not depend on how events are batched, applying slices gives the
//!   same rows as applying the batch at once. Cost: O(k log n) slices for k bad records, paid
//!   only by batches that contain one.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use super::{EnrichedBatch, StoreError};
use crate::record::{Batch, DeadLetter, RejectReason};
use crate::telemetry::metrics::{zero_counters, STORE_DEADLOCKS_TOTAL, STORE_RETRIES_TOTAL};

/// Registers at 0 the retry and deadlock counters of `backend` (`postgres`, `mysql`), so that
/// they are exported from the start.
pub fn register_metrics(backend: &'static str) {
    for name in [STORE_RETRIES_TOTAL, STORE_DEADLOCKS_TOTAL] {
        zero_counters(name, &[("backend", &[backend][..])]);
    }
}

/// Attempts per batch before a transient error is handed to the caller.
pub(crate) const MAX_ATTEMPTS: u32 = 8;
/// First backoff ceiling; doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(20);
/// Largest backoff ceiling, so all attempts together stay within a few seconds.
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// Longest error text kept in a dead letter's detail.
const DETAIL_MAX_CHARS: usize = 1000;

/// Full-jitter backoff before retry number `attempt` (0-based): uniform in
/// `[0, min(cap, base * 2^attempt)]`, so colliding workers spread out instead of deadlocking
/// again in lockstep.
pub(crate) fn backoff(attempt: u32) -> Duration {
    crate::retry::Backoff::new(BACKOFF_BASE, BACKOFF_CAP).delay(attempt)
}

/// Runs `attempt` until it succeeds, fails permanently, or [`MAX_ATTEMPTS`] transient failures.
pub(crate) async fn with_retries<T, F, Fut>(
    backend: &'static str,
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            Err(error) if error.is_retryable() && n + 1 < MAX_ATTEMPTS => {
                if error.is_deadlock() {
                    metrics::counter!(STORE_DEADLOCKS_TOTAL, "backend" => backend).increment(1);
                }
                metrics::counter!(STORE_RETRIES_TOTAL, "backend" => backend).increment(1);
                if n == 0 {
                    tracing::debug!(backend, %error, "Store batch failed transiently; retrying.");
                } else {
                    tracing::warn!(backend, attempt = n + 1, %error, "Store batch failed transiently again; retrying.");
                }
                tokio::time::sleep(backoff(n)).await;
                n += 1;
            }
            result => return result,
        }
    }
}

/// The bisection state: record ranges still to apply.
#[derive(Debug)]
pub(crate) struct Isolation {
    pending: Vec<Range<usize>>,
}

impl Isolation {
    /// All `n` records pending as one slice.
    pub(crate) fn new(n: usize) -> Self {
        let mut pending = Vec::new();
        if n > 0 {
            pending.push(0..n);
        }
        Self { pending }
    }

    /// The next slice to apply, in record order.
    pub(crate) fn next_slice(&mut self) -> Option<Range<usize>> {
        self.pending.pop()
    }

    /// `slice` was refused: returns the record index when it is a single record (the culprit),
    /// otherwise schedules both halves.
    pub(crate) fn refused(&mut self, slice: Range<usize>) -> Option<usize> {
        if slice.len() <= 1 {
            return Some(slice.start);
        }
        let mid = slice.start + slice.len() / 2;
        self.pending.push(mid..slice.end);
        self.pending.push(slice.start..mid);
        None
    }
}

/// The records at `indexes` as a batch of their own, without the batch's dead letters (those
/// are written once per batch).
pub(crate) fn sub_batch(batch: &EnrichedBatch, indexes: &[usize]) -> EnrichedBatch {
    let records = indexes
        .iter()
        .filter_map(|&i| batch.batch.records.get(i).cloned())
        .collect();
    let geo = indexes
        .iter()
        .map(|&i| batch.geo.get(i).cloned().unwrap_or_default())
        .collect();
    EnrichedBatch {
        batch: Batch {
            id: batch.batch.id.clone(),
            source: batch.batch.source.clone(),
            received_at: batch.batch.received_at,
            records,
            dead_letters: Vec::new(),
        },
        geo,
    }
}

/// The dead letter for record `index`, refused by the database (or by the store, on the
/// database's behalf) for `why`. `raw` is the record's JSON, which `botpipe dlq replay` accepts.
pub(crate) fn rejected_letter(batch: &EnrichedBatch, index: usize, why: &str) -> DeadLetter {
    let raw = batch
        .batch
        .records
        .get(index)
        .and_then(|r| serde_json::to_string(r).ok())
        .unwrap_or_default();
    let detail: String = why.chars().take(DETAIL_MAX_CHARS).collect();
    DeadLetter {
        source: batch.batch.source.clone(),
        reason: RejectReason::StoreRejected,
        detail,
        raw,
        rejected_at: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 0..40 {
            assert!(backoff(attempt) <= BACKOFF_CAP);
        }
        assert!(backoff(0) <= BACKOFF_BASE);
    }

    #[test]
    fn bisection_finds_every_bad_record() {
        let bad = [3usize, 4, 9];
        let mut iso = Isolation::new(10);
        let mut applied = Vec::new();
        let mut culprits = Vec::new();
        while let Some(slice) = iso.next_slice() {
            if slice.clone().any(|i| bad.contains(&i)) {
                if let Some(i) = iso.refused(slice) {
                    culprits.push(i);
                }
            } else {
                applied.extend(slice);
            }
        }
        culprits.sort_unstable();
        applied.sort_unstable();
        assert_eq!(culprits, bad);
        assert_eq!(applied, [0, 1, 2, 5, 6, 7, 8]);
    }

    #[test]
    fn empty_batch_has_no_slices() {
        assert!(Isolation::new(0).next_slice().is_none());
    }
}
