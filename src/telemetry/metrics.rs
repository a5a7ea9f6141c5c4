//! Every metric botpipe exports: names follow `botpipe_<component>_<noun>_<unit>[_total]`
//! (house style §5). Labels come from closed sets only: `endpoint` (configuration), `stage`,
//! `outcome`, `reason`, `result`. `docs/metrics.md` documents the same list; a test keeps them equal.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Histogram buckets in seconds, fine enough to see 1 ms drift on a 200 ms interval.
pub const HISTOGRAM_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0,
    10.0, 30.0,
];

/// Duration of one pull cycle (HTTP, hand-off and confirm), by `endpoint`.
pub const PULL_DURATION_SECONDS: &str = "botpipe_pull_duration_seconds";
/// How late each pull started relative to its schedule, by `endpoint`.
pub const PULL_SCHEDULE_DRIFT_SECONDS: &str = "botpipe_pull_schedule_drift_seconds";
/// Pull cycles by `endpoint` and `outcome` (ok, empty, http_error, bad_response, handoff_failed, confirm_failed, reset).
pub const PULLS_TOTAL: &str = "botpipe_pulls_total";
/// Ticks skipped by backpressure, by `endpoint`.
pub const PULL_SKIPPED_TICKS_TOTAL: &str = "botpipe_pull_skipped_ticks_total";
/// Ticks missed because a pull overran its interval, by `endpoint`.
pub const PULL_MISSED_TICKS_TOTAL: &str = "botpipe_pull_missed_ticks_total";
/// The last confirmed cursor per `endpoint`.
pub const PULL_CURSOR: &str = "botpipe_pull_cursor";
/// Collector resets detected, by `endpoint`.
pub const PULL_RESETS_TOTAL: &str = "botpipe_pull_resets_total";
/// Records by `stage` (pull, push, queue, enrich, store, collector) and `outcome`.
pub const RECORDS_TOTAL: &str = "botpipe_records_total";
/// Dead letters by `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "botpipe_dead_letters_total";
/// Batches waiting in the queue (ready + leased), sampled from the queue itself.
pub const QUEUE_DEPTH: &str = "botpipe_queue_depth";
/// Batches leased to workers and not yet acked.
pub const QUEUE_PENDING: &str = "botpipe_queue_pending";
/// Batches waiting in the local spool, sampled from the spool file.
pub const SPOOL_DEPTH: &str = "botpipe_spool_depth";
/// Hand-offs by `target` (queue, spool) and `outcome`.
pub const HANDOFF_TOTAL: &str = "botpipe_handoff_total";
/// Duration of one durable hand-off.
pub const HANDOFF_SECONDS: &str = "botpipe_handoff_seconds";
/// Geo lookups by `result` (hit, unknown, disabled).
pub const ENRICH_LOOKUPS_TOTAL: &str = "botpipe_enrich_lookups_total";
/// Duration of one store transaction for a batch.
pub const STORE_BATCH_SECONDS: &str = "botpipe_store_batch_seconds";
/// Store batches by `outcome` (ok, retry, failed).
pub const STORE_BATCHES_TOTAL: &str = "botpipe_store_batches_total";
/// Transient store failures retried inside one batch, by `backend` (postgres, mysql).
pub const STORE_RETRIES_TOTAL: &str = "botpipe_store_retries_total";
/// Batches a worker finished, by `outcome`.
pub const WORKER_BATCHES_TOTAL: &str = "botpipe_worker_batches_total";

/// Registers descriptions for every metric above.
pub fn describe_all() {
    describe_histogram!(
        PULL_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one pull cycle: HTTP, hand-off and confirm."
    );
    describe_histogram!(
        PULL_SCHEDULE_DRIFT_SECONDS,
        Unit::Seconds,
        "How late each pull started relative to its fixed-rate schedule."
    );
    describe_counter!(PULLS_TOTAL, "Pull cycles by endpoint and outcome.");
    describe_counter!(
        PULL_SKIPPED_TICKS_TOTAL,
        "Pull ticks skipped by backpressure."
    );
    describe_counter!(
        PULL_MISSED_TICKS_TOTAL,
        "Pull ticks missed because a pull overran its interval."
    );
    describe_gauge!(PULL_CURSOR, "Last confirmed seq cursor per endpoint.");
    describe_counter!(
        PULL_RESETS_TOTAL,
        "Collector resets detected (epoch change or seq below cursor)."
    );
    describe_counter!(RECORDS_TOTAL, "Records by pipeline stage and outcome.");
    describe_counter!(DEAD_LETTERS_TOTAL, "Dead-lettered records by reason.");
    describe_gauge!(QUEUE_DEPTH, "Batches in the queue, ready plus leased.");
    describe_gauge!(
        QUEUE_PENDING,
        "Batches leased to workers and not yet acked."
    );
    describe_gauge!(SPOOL_DEPTH, "Batches in the local spool.");
    describe_counter!(HANDOFF_TOTAL, "Durable hand-offs by target and outcome.");
    describe_histogram!(
        HANDOFF_SECONDS,
        Unit::Seconds,
        "Duration of one durable hand-off."
    );
    describe_counter!(ENRICH_LOOKUPS_TOTAL, "Geo lookups by result.");
    describe_histogram!(
        STORE_BATCH_SECONDS,
        Unit::Seconds,
        "Duration of one store transaction."
    );
    describe_counter!(STORE_BATCHES_TOTAL, "Store batch transactions by outcome.");
    describe_counter!(
        STORE_RETRIES_TOTAL,
        "Transient store failures (deadlock, serialization, lost connection) retried within a batch, by backend."
    );
    describe_counter!(
        WORKER_BATCHES_TOTAL,
        "Batches processed by workers, by outcome."
    );
}

/// Every metric name, for documentation checks.
pub const ALL: &[&str] = &[
    PULL_DURATION_SECONDS,
    PULL_SCHEDULE_DRIFT_SECONDS,
    PULLS_TOTAL,
    PULL_SKIPPED_TICKS_TOTAL,
    PULL_MISSED_TICKS_TOTAL,
    PULL_CURSOR,
    PULL_RESETS_TOTAL,
    RECORDS_TOTAL,
    DEAD_LETTERS_TOTAL,
    QUEUE_DEPTH,
    QUEUE_PENDING,
    SPOOL_DEPTH,
    HANDOFF_TOTAL,
    HANDOFF_SECONDS,
    ENRICH_LOOKUPS_TOTAL,
    STORE_BATCH_SECONDS,
    STORE_BATCHES_TOTAL,
    STORE_RETRIES_TOTAL,
    WORKER_BATCHES_TOTAL,
];
