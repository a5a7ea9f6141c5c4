//! Workers: lease a batch → enrich every record → apply it in one store transaction → ack.
//!
//! A batch is acked only after its transaction committed, so a crash anywhere before the ack
//! means redelivery, which the idempotent store absorbs. A failed store write leaves the batch
//! unacked (it comes back after the lease timeout) and the worker backs off with full jitter; it
//! logs once when it enters and once when it leaves that unhealthy state, not once per attempt.
//!
//! Enrichment runs on tokio's blocking pool ([`tokio::task::spawn_blocking`]), not on the async
//! runtime: a batch is up to 5,000 lookups in memory-mapped files, and a page that is not in
//! memory is a disk read, which would otherwise hold a runtime thread that HTTP, push and the
//! spool drainer also need. `spawn_blocking` rather than `block_in_place`, because the latter
//! panics on a current-thread runtime and stalls the other tasks queued on its thread. The
//! per-thread cache of decoded city records (`enrich::city`) still pays off: blocking-pool
//! threads are reused across batches (they exit only after idling for a while), so a worker's
//! lookups keep landing on warm threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::enrich::{AnyLookup, Geo, Lookup, LookupResult};
use crate::queue::{AnyQueue, Queue, QueueError};
use crate::record::Batch;
use crate::retry::Backoff;
use crate::store::{AnyStore, ApplyOutcome, EnrichedBatch, Store, StoreError};
use crate::telemetry::metrics as m;
use crate::telemetry::Chain;

/// How long one lease call waits for work before checking for shutdown again.
const LEASE_WAIT: Duration = Duration::from_millis(500);
/// Pause between failed steps while the store or queue is failing: full jitter under a ceiling
/// of 100 ms doubling to 10 s, reset by the first step that works.
const FAILURE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

/// What one step did.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to do within the wait.
    Idle,
    /// A batch was stored and acked.
    Stored {
        /// What the store changed.
        applied: ApplyOutcome,
        /// Records in the batch.
        records: usize,
    },
    /// The store failed; the batch stays unacked for redelivery.
    StoreFailed(StoreError),
    /// The queue failed (lease or ack).
    QueueFailed(QueueError),
    /// The runtime shut down before the batch's enrichment ran; the batch stays unacked for
    /// redelivery.
    Abandoned,
}

/// One worker's dependencies.
#[derive(Debug, Clone)]
pub struct Worker {
    name: String,
    queue: AnyQueue,
    store: AnyStore,
    lookup: AnyLookup,
    /// Shared across the pool so the unhealthy state is logged once per change, not per worker.
    unhealthy: Arc<AtomicBool>,
}

impl Worker {
    /// A worker named `name` (the consumer name).
    pub fn new(
        name: impl Into<String>,
        queue: AnyQueue,
        store: AnyStore,
        lookup: AnyLookup,
    ) -> Self {
        Self {
            name: name.into(),
            queue,
            store,
            lookup,
            unhealthy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Another worker of the same pool (shares the health flag).
    pub fn sibling(&self, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..self.clone()
        }
    }

    /// Leases, processes and acks at most one batch.
    #[tracing::instrument(skip_all, fields(worker = %self.name))]
    pub async fn try_process_one(&self, wait: Duration) -> Outcome {
        let lease = match self.queue.lease(&self.name, wait).await {
            Ok(Some(l)) => l,
            Ok(None) => return Outcome::Idle,
            Err(e) => return Outcome::QueueFailed(e),
        };
        let records = lease.batch.records.len();
        let Some((batch, geo)) = self.enrich(lease.batch.clone()).await else {
            return Outcome::Abandoned;
        };

        let started = Instant::now();
        let enriched = EnrichedBatch { batch, geo };
        let applied = match self.store.apply(&enriched).await {
            Ok(a) => a,
            Err(e) => {
                metrics::counter!(m::STORE_BATCHES_TOTAL, "outcome" => if e.is_retryable() { "retry" } else { "failed" }).increment(1);
                return Outcome::StoreFailed(e);
            }
        };
        metrics::histogram!(m::STORE_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::STORE_BATCHES_TOTAL, "outcome" => "ok").increment(1);
        metrics::counter!(m::RECORDS_TOTAL, "stage" => "store", "outcome" => "inserted")
            .increment(applied.communications_inserted);
        metrics::counter!(m::RECORDS_TOTAL, "stage" => "store", "outcome" => "duplicate")
            .increment(applied.communications_duplicate);
        if let Err(e) = self.queue.ack(&lease).await {
            // Stored but not acked: it will be redelivered and absorbed as duplicates.
            return Outcome::QueueFailed(e);
        }
        tracing::info!(
            batch = %enriched.batch.id,
            source = %enriched.batch.source,
            records,
            nodes = applied.nodes,
            inserted = applied.communications_inserted,
            duplicates = applied.communications_duplicate,
            dead_letters = applied.dead_letters,
            deliveries = lease.deliveries,
            store_ms = started.elapsed().as_millis() as u64,
            "Stored batch."
        );
        Outcome::Stored { applied, records }
    }

    /// Looks up every record of `batch` on the blocking pool (see the module doc) and counts the
    /// results; `None` when the runtime is shutting down and the lookups never ran.
    ///
    /// # Panics
    /// When a lookup panics: the panic is carried over to the calling task, as if the lookups
    /// had run on it.
    async fn enrich(&self, batch: Batch) -> Option<(Batch, Vec<Geo>)> {
        let lookup = self.lookup.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut geo = Vec::with_capacity(batch.records.len());
            let (mut hit, mut unknown, mut disabled) = (0u64, 0u64, 0u64);
            for r in &batch.records {
                let (g, result) = lookup.lookup(r.ip.addr());
                match result {
                    LookupResult::Hit => hit += 1,
                    LookupResult::Unknown => unknown += 1,
                    LookupResult::Disabled => disabled += 1,
                }
                geo.push(g);
            }
            (
                batch,
                geo,
                [("hit", hit), ("unknown", unknown), ("disabled", disabled)],
            )
        });
        let (batch, geo, counts) = match task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return None,
        };
        for (label, n) in counts {
            if n > 0 {
                metrics::counter!(m::ENRICH_LOOKUPS_TOTAL, "result" => label).increment(n);
            }
        }
        Some((batch, geo))
    }

    /// Processes batches until `token` is cancelled. A batch in progress when the token fires is
    /// finished and acked; the caller bounds the whole shutdown with its grace period, after
    /// which an unfinished batch is simply redelivered.
    pub async fn run_until_stopped(self, token: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            if token.is_cancelled() {
                break;
            }
            let outcome = self.try_process_one(LEASE_WAIT).await;
            let failure = match &outcome {
                Outcome::Idle | Outcome::Stored { .. } | Outcome::Abandoned => None,
                Outcome::StoreFailed(e) => Some(format!("store: {}", Chain(e))),
                Outcome::QueueFailed(e) => Some(format!("queue: {}", Chain(e))),
            };
            let label = match &outcome {
                Outcome::Idle | Outcome::Abandoned => None,
                Outcome::Stored { .. } => Some("ok"),
                Outcome::StoreFailed(_) => Some("store_failed"),
                Outcome::QueueFailed(_) => Some("queue_failed"),
            };
            if let Some(label) = label {
                metrics::counter!(m::WORKER_BATCHES_TOTAL, "outcome" => label).increment(1);
            }
            match failure {
                None => {
                    failures = 0;
                    if self.unhealthy.swap(false, Ordering::AcqRel) {
                        tracing::info!(worker = %self.name, "Workers recovered: store and queue answer again.");
                    }
                }
                Some(error) => {
                    if !self.unhealthy.swap(true, Ordering::AcqRel) {
                        tracing::error!(worker = %self.name, %error, "Workers cannot store batches; backing off. Batches stay queued.");
                    } else {
                        tracing::debug!(worker = %self.name, %error, "Still failing.");
                    }
                    let nap = FAILURE_BACKOFF.delay(failures);
                    failures = failures.saturating_add(1);
                    // The losing branch: a cancelled nap ends the loop at the top.
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = tokio::time::sleep(nap) => {}
                    }
                }
            }
        }
        tracing::debug!(worker = %self.name, "Worker stopped.");
    }
}
