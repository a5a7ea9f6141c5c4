//! Workers: lease a batch → enrich every record → apply it in one store transaction → ack.
//!
//! A batch is acked only after its transaction committed, so a crash anywhere before the ack
//! means redelivery, which the idempotent store absorbs.
//!
//! Two kinds of store failure, told apart by [`StoreError::is_retryable`]:
//! - Retryable (connection refused or lost, timeout, busy): the failure says nothing about the
//!   batch, so it must not count towards `queue.max_deliveries`, or an outage longer than
//!   `lease_timeout × max_deliveries` would move healthy batches to the dead letters. The worker
//!   gives the lease back ([`AnyQueue::release`]: ready again at once, delivery not counted) and
//!   marks the store down for the whole pool ([`StoreGate`]). While it is down no worker leases;
//!   one of them probes the store (`ping`) with backoff and lets the others go on once it
//!   answers. One log line when the store goes down, one when it answers again.
//! - Not retryable (the data or the schema): the batch stays unacked, comes back after the lease
//!   timeout, and after `max_deliveries` attempts the queue moves it to its dead letters (a
//!   poison batch must not block the rest).
//!
//! A store that hangs (a black-holed network, a frozen server) returns no error at all, so the
//! write is bounded: one that has not finished [`STORE_SHARE_OF_LEASE`] of `queue.lease_timeout`
//! after the lease counts as a retryable failure ([`StoreError::NoAnswer`]). Without the bound
//! the worker would sit in the write while the lease expired, the batch would be delivered again
//! (and counted) to the next worker, which would hang likewise, and the gate would never close.
//!
//! Queue failures back off with full jitter; they log once when they start and once when they
//! end, not once per attempt.
//!
//! Enrichment runs on tokio's blocking pool ([`tokio::task::spawn_blocking`]), not on the async
//! runtime: a batch is up to 5,000 lookups in memory-mapped files, and a page that is not in
//! memory is a disk read, which would otherwise hold a runtime thread that HTTP, push and the
//! spool drainer also need. `spawn_blocking` rather than `block_in_place`, because the latter
//! panics on a current-thread runtime and stalls the other tasks queued on its thread. The
//! per-thread cache of decoded city records (`enrich::city`) still pays off: blocking-pool
//! threads are reused across batches (they exit only after idling for a while), so a worker's
//! lookups keep landing on warm threads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
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

/// Pause between probes of a store known to be down: full jitter under a ceiling of 200 ms
/// doubling to 5 s, so a recovered store is noticed within seconds and a down one is not
/// hammered.
const PROBE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
/// Bound on one probe: a black-holed database must not hold the prober longer than this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Share of `queue.lease_timeout`, counted from the lease, that enriching and storing a batch may
/// take (numerator, denominator): a write still running then is abandoned and the batch given
/// back without counting a delivery, within the rest of its lease.
pub const STORE_SHARE_OF_LEASE: (u32, u32) = (3, 4);

/// Whether the store is known to be down, shared by a worker pool: while it is, workers do not
/// lease (a lease could only fail and hold the batch), and one of them probes the store.
#[derive(Debug, Default)]
pub struct StoreGate {
    down: AtomicBool,
    /// Held by the one worker probing; the others wait on `up`.
    probing: tokio::sync::Mutex<()>,
    up: Notify,
}

impl StoreGate {
    /// Whether the store is known to be down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Marks the store down after a retryable failure; logs on the change only.
    fn mark_down(&self, error: &StoreError) {
        if !self.down.swap(true, Ordering::AcqRel) {
            metrics::gauge!(m::STORE_UP).set(0.0);
            tracing::error!(error = %Chain(error), "Store unreachable: workers stop leasing and probe it with backoff. Queued batches wait; their delivery counts do not grow.");
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            metrics::gauge!(m::STORE_UP).set(1.0);
            tracing::info!("Store answers again: workers resume leasing.");
        }
        self.up.notify_waiters();
    }

    /// Returns once the store is up (at once when it is not known down) or `token` fires. One
    /// caller at a time probes the store with [`PROBE_BACKOFF`]; the others wait for it.
    async fn wait_until_up(&self, store: &AnyStore, token: &CancellationToken) {
        while self.is_down() && !token.is_cancelled() {
            let Ok(_probing) = self.probing.try_lock() else {
                // Another worker probes. Registered before re-checking, so its wake-up is not
                // missed; the timer covers a prober that stopped (shutdown).
                let woken = self.up.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if !self.is_down() {
                    return;
                }
                // The losing branches are dropped; the loop re-checks the state.
                tokio::select! {
                    () = token.cancelled() => {}
                    () = &mut woken => {}
                    () = tokio::time::sleep(PROBE_BACKOFF.cap) => {}
                }
                continue;
            };
            let mut attempt = 0u32;
            while self.is_down() {
                // The losing branch: a cancelled nap ends the probing (shutdown).
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(PROBE_BACKOFF.delay(attempt)) => {}
                }
                attempt = attempt.saturating_add(1);
                match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
                    Ok(Ok(())) => self.mark_up(),
                    Ok(Err(error)) => {
                        tracing::debug!(error = %Chain(&error), attempt, "Store still unreachable.")
                    }
                    Err(_) => tracing::debug!(attempt, "Store probe timed out."),
                }
            }
        }
    }
}

/// How many workers of a pool run, and how many of them hold a batch right now; shared by the
/// pool, read by `/api/status` through a [`WorkerPoolView`].
#[derive(Debug, Default)]
struct WorkerActivity {
    running: AtomicUsize,
    busy: AtomicUsize,
}

/// Counts one in an [`AtomicUsize`] while alive: a worker running, or a worker holding a batch.
/// A guard rather than paired calls, so every return path (and a panic) gives it back.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::AcqRel);
        Self(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a worker pool is doing, for the status: workers running and busy, and whether they
/// see the store down. Cheap to clone; reads only.
#[derive(Debug, Clone)]
pub struct WorkerPoolView {
    activity: Arc<WorkerActivity>,
    gate: Arc<StoreGate>,
}

impl WorkerPoolView {
    /// Workers running (0 until the store has come up at start).
    pub fn running(&self) -> usize {
        self.activity.running.load(Ordering::Acquire)
    }

    /// Workers holding a batch: enriching, writing or acking it.
    pub fn busy(&self) -> usize {
        self.activity.busy.load(Ordering::Acquire)
    }

    /// Whether the workers found the store unreachable and wait for it.
    pub fn store_down(&self) -> bool {
        self.gate.is_down()
    }
}

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
    /// The store failed with an error that says nothing about the batch (unreachable, busy);
    /// the lease was given back without counting a delivery.
    StoreUnavailable(StoreError),
    /// The store refused the batch; it stays unacked for redelivery, which counts.
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
    /// Shared across the pool: whether the store is known down.
    gate: Arc<StoreGate>,
    /// Shared across the pool: workers running and busy.
    activity: Arc<WorkerActivity>,
}

/// Every `outcome` of `botpipe_worker_batches_total`.
pub const BATCH_OUTCOMES: &[&str] = &["ok", "store_unavailable", "store_failed", "queue_failed"];

/// Registers at 0 the counters of the workers' work (batches, store transactions, stored
/// records, geo lookups and reloads), so that they are exported from the start.
pub fn register_metrics() {
    use crate::telemetry::metrics::{zero_counters, zero_histograms};
    zero_counters(m::WORKER_BATCHES_TOTAL, &[("outcome", BATCH_OUTCOMES)]);
    zero_counters(
        m::STORE_BATCHES_TOTAL,
        &[("outcome", &["ok", "retry", "failed"][..])],
    );
    zero_histograms(m::STORE_BATCH_SECONDS, &[]);
    zero_counters(
        m::RECORDS_TOTAL,
        &[
            ("stage", &["store"][..]),
            ("outcome", &["inserted", "duplicate"][..]),
        ],
    );
    let results = LookupResult::ALL.map(LookupResult::as_str);
    zero_counters(m::ENRICH_LOOKUPS_TOTAL, &[("result", &results[..])]);
    zero_counters(
        m::ENRICH_RELOADS_TOTAL,
        &[("outcome", &["ok", "failed"][..])],
    );
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
            gate: Arc::new(StoreGate::default()),
            activity: Arc::new(WorkerActivity::default()),
        }
    }

    /// What the pool (this worker and its siblings) is doing, for the status.
    pub fn pool_view(&self) -> WorkerPoolView {
        WorkerPoolView {
            activity: Arc::clone(&self.activity),
            gate: Arc::clone(&self.gate),
        }
    }

    /// The pool's store gate.
    pub fn store_gate(&self) -> &Arc<StoreGate> {
        &self.gate
    }

    /// Another worker of the same pool (shares the health flag and the store gate).
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
        let _busy = Counted::enter(&self.activity.busy);
        let leased_at = Instant::now();
        let records = lease.batch.records.len();
        let Some((batch, geo)) = self.enrich(lease.batch.clone()).await else {
            return Outcome::Abandoned;
        };

        let started = Instant::now();
        let enriched = EnrichedBatch { batch, geo };
        let (share, of) = STORE_SHARE_OF_LEASE;
        let bound = self.queue.lease_timeout() * share / of;
        // The losing branch: the write is dropped mid-way. Nothing is acked; whatever it
        // committed is absorbed when the batch is stored again (the merge rules), and the SQL
        // stores close a connection dropped mid-statement instead of pooling it.
        let write = tokio::time::timeout(
            bound.saturating_sub(leased_at.elapsed()),
            self.store.apply(&enriched),
        );
        let result = write.await.unwrap_or_else(|_| {
            Err(StoreError::NoAnswer {
                op: format!("storing batch {}", enriched.batch.id),
                after: bound,
            })
        });
        let applied = match result {
            Ok(a) => a,
            Err(e) if e.is_retryable() => {
                metrics::counter!(m::STORE_BATCHES_TOTAL, "outcome" => "retry").increment(1);
                self.gate.mark_down(&e);
                if let Err(error) = self.queue.release(&lease).await {
                    // It then expires as usual, which counts one delivery.
                    tracing::warn!(batch = %lease.batch.id, error = %Chain(&error), "Could not give a batch back to the queue; it is redelivered after the lease timeout.");
                }
                return Outcome::StoreUnavailable(e);
            }
            Err(e) => {
                metrics::counter!(m::STORE_BATCHES_TOTAL, "outcome" => "failed").increment(1);
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
        let _running = Counted::enter(&self.activity.running);
        let mut failures: u32 = 0;
        loop {
            if token.is_cancelled() {
                break;
            }
            if self.gate.is_down() {
                self.gate.wait_until_up(&self.store, &token).await;
                continue;
            }
            let outcome = self.try_process_one(LEASE_WAIT).await;
            if matches!(outcome, Outcome::StoreUnavailable(_)) {
                // The gate logged it and now holds every worker of the pool until the store
                // answers; no backoff of our own on top of the probe's.
                metrics::counter!(m::WORKER_BATCHES_TOTAL, "outcome" => "store_unavailable")
                    .increment(1);
                continue;
            }
            let failure = match &outcome {
                Outcome::Idle
                | Outcome::Stored { .. }
                | Outcome::Abandoned
                | Outcome::StoreUnavailable(_) => None,
                Outcome::StoreFailed(e) => Some(format!("store: {}", Chain(e))),
                Outcome::QueueFailed(e) => Some(format!("queue: {}", Chain(e))),
            };
            let label = match &outcome {
                Outcome::Idle | Outcome::Abandoned | Outcome::StoreUnavailable(_) => None,
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
