//! The durable queue between pullers (and push) and workers.
//!
//! [`Queue`] is one of botpipe's three seams, with two real implementations:
//! [`EmbeddedQueue`] (a SQLite file; the default, and the spool when Redis is down) and Redis
//! Streams ([`RedisStreamsQueue`], with the embedded queue as its local spool). Callers use
//! [`AnyQueue`], an enum chosen at start-up by [`open`].
//!
//! Around the trait: [`Handoff`] (the puller's deadline-bounded append with spool fallback),
//! [`SpoolDrainer`] (moves spooled batches into Redis once it answers), [`Backpressure`] and
//! [`DepthSampler`] (depth gauges and the pull gate, sampled from the backends themselves).
//!
//! Contract, checked by `tests/it/queue_contract.rs` for every backend:
//! - `append` returns only once the batch is durable; then the puller may confirm upstream.
//! - A leased batch that is not acked is delivered again after the lease timeout or a restart
//!   (at-least-once). Delivery order is not guaranteed.
//! - `ack` is fenced by the lease: a stale lease cannot ack a redelivered batch.
//! - Acking twice is harmless.

mod backpressure;
mod depth;
mod drain;
mod embedded;
mod endpoint_lease;
mod handoff;
mod redis_link;
mod redis_streams;

pub use backpressure::Backpressure;
pub use depth::{sample_depths, DepthHistory, DepthSample, DepthSampler};
pub use drain::{DrainError, DrainStep, SpoolDrainer};
pub use embedded::{Cursor, EmbeddedQueue};
pub use endpoint_lease::{
    host_name, Acquire, EndpointLeases, Fence, Holder, LeaseInfo, Member, Round,
};
pub use handoff::{Handoff, HandoffError, HandoffTarget};
pub use redis_streams::{
    redis_client, RedisQueueOptions, RedisStreamsQueue, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
};

use std::future::Future;
use std::time::Duration;

use crate::config::{QueueBackend, QueueSettings};
use crate::record::Batch;
use crate::telemetry::metrics::{self as m, zero_counters, zero_histograms};

/// Every `reason` of `botpipe_queue_dead_lettered_total`: delivered `max_deliveries` times
/// without an ack, or an entry that no longer decodes. Both queues use these.
pub const DEAD_LETTER_REASONS: &[&str] = &["max_deliveries", "corrupt"];

/// Registers at 0 the queue's counters: batches set aside by reason, spool drains and, with
/// `handoffs` (where batches are handed off: `botpipe run`), hand-offs by target and outcome.
pub fn register_metrics(handoffs: bool) {
    zero_counters(
        m::QUEUE_DEAD_LETTERED_TOTAL,
        &[("reason", DEAD_LETTER_REASONS)],
    );
    zero_counters(m::SPOOL_DRAINED_TOTAL, &[]);
    if handoffs {
        let targets = HandoffTarget::ALL.map(HandoffTarget::as_str);
        zero_counters(
            m::HANDOFF_TOTAL,
            &[("target", &targets[..]), ("outcome", &["ok", "failed"][..])],
        );
        zero_histograms(m::HANDOFF_SECONDS, &[]);
    }
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The SQLite file could not be opened, read or written.
    #[error("embedded queue {path}: {source}")]
    Sqlite {
        /// The queue file.
        path: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A durable write failed earlier; the queue refuses writes so nothing is confirmed upstream.
    #[error("embedded queue {path} is poisoned after a failed durable write; restart botpipe")]
    Poisoned {
        /// The queue file.
        path: String,
    },
    /// A stored entry is not a batch.
    #[error("queue entry {entry} is corrupt: {source}")]
    Corrupt {
        /// The entry id.
        entry: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The operation did not finish within its deadline.
    #[error("queue {op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The background thread serving the queue is gone (process shutting down).
    #[error("queue worker thread stopped")]
    Closed,
    /// A Redis command failed (connection, timeout or error reply).
    #[error("redis {op} at {addr}: {source}")]
    Redis {
        /// The operation.
        op: &'static str,
        /// The server, without credentials.
        addr: String,
        /// The cause.
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer the last connection attempt; calls fail fast until the next one.
    #[error("redis at {addr} is unreachable: {source}")]
    Unavailable {
        /// The server, without credentials.
        addr: String,
        /// Why the last connection attempt failed.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis URL is not usable (it is not printed: it may hold a password).
    #[error("{field} is not a usable Redis URL: {source}")]
    BadUrl {
        /// The configuration field.
        field: &'static str,
        /// The parse error.
        #[source]
        source: redis::RedisError,
    },
    /// The `rediss://` certificate files could not be used.
    #[error("queue: Redis TLS")]
    Tls(#[source] crate::transport::TlsError),
    /// Redis answered something this version does not understand.
    #[error("redis {op} at {addr}: unexpected reply")]
    UnexpectedReply {
        /// The operation.
        op: &'static str,
        /// The server, without credentials.
        addr: String,
    },
    /// A fenced write was refused: the endpoint's lease is no longer the writer's.
    #[error(
        "endpoint {endpoint}: lease (token {token}) is no longer held; not writing its cursor"
    )]
    Fenced {
        /// The endpoint.
        endpoint: String,
        /// The writer's fencing token.
        token: u64,
    },
    /// A lease handed to `ack` was not made by this backend.
    #[error("lease of queue entry {entry} does not belong to this queue")]
    BadLease {
        /// The entry id.
        entry: String,
    },
}

impl QueueError {
    /// Whether retrying later may succeed (timeouts, connection problems) as opposed to a defect.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sqlite { .. } | Self::Timeout { .. } | Self::Unavailable { .. } => true,
            Self::Redis { source, .. } => {
                !matches!(source.retry_method(), redis::RetryMethod::NoRetry)
                    || source.is_io_error()
                    || source.is_timeout()
            }
            Self::Poisoned { .. }
            | Self::Corrupt { .. }
            | Self::Closed
            | Self::BadUrl { .. }
            | Self::Tls(_)
            | Self::UnexpectedReply { .. }
            | Self::BadLease { .. }
            | Self::Fenced { .. } => false,
        }
    }
}

/// A batch handed to one worker until it acks or the lease expires.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Backend id of the entry (row id or stream id).
    pub entry: String,
    /// Fencing token: only the holder of the current lease may ack.
    pub token: String,
    /// How many times this entry has been delivered, this one included.
    pub deliveries: u32,
    /// The batch.
    pub batch: Batch,
}

/// A batch the queue set aside: a row of the embedded queue's dead table or an entry of the
/// Redis dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadBatch {
    /// Backend id of the dead entry (row id or dead-stream id): what a replay names.
    pub entry: String,
    /// The batch id.
    pub batch_id: String,
    /// Where the batch came from (endpoint or `push:…`); empty when it does not decode.
    pub source: String,
    /// Why it was set aside: Redis's label (`max_deliveries`, `corrupt`) or the embedded
    /// queue's sentence (`delivered 6 times without an ack`, `corrupt entry: …`).
    pub reason: String,
    /// Deliveries when it was set aside.
    pub deliveries: u64,
    /// Records in the batch; `None` when it does not decode.
    pub records: Option<usize>,
}

/// How much work is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Entries not yet acked: ready plus leased.
    pub total: u64,
    /// Entries currently leased.
    pub pending: u64,
}

/// A durable queue of batches.
pub trait Queue: Send + Sync {
    /// Appends a batch; when this returns `Ok`, the batch survives a crash.
    fn append(&self, batch: &Batch) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Leases the next available batch to `consumer`, waiting up to `wait` for one.
    fn lease(
        &self,
        consumer: &str,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, QueueError>> + Send;

    /// Acknowledges a processed batch; it will not be delivered again.
    fn ack(&self, lease: &Lease) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// The current depth, read from the backend itself.
    fn depth(&self) -> impl Future<Output = Result<QueueDepth, QueueError>> + Send;
}

/// The configured queue backend.
#[derive(Debug, Clone)]
pub enum AnyQueue {
    /// SQLite file.
    Embedded(EmbeddedQueue),
    /// Redis Streams.
    Redis(RedisStreamsQueue),
}

/// Opens the configured queue: the embedded file alone, or Redis plus its local spool (at
/// `settings.spool_path`), which the caller gives to [`Handoff`] and [`SpoolDrainer`].
///
/// Redis is not required to answer: connections are made on first use, and until Redis answers
/// hand-offs go to the spool. The spool also backs the Redis queue's cursors.
///
/// # Errors
/// When a SQLite file cannot be opened, or the Redis URL is not usable.
pub async fn open(
    settings: &QueueSettings,
) -> Result<(AnyQueue, Option<EmbeddedQueue>), QueueError> {
    let open_file = |path: std::path::PathBuf| {
        let (lease, max) = (settings.lease_timeout, settings.max_deliveries);
        async move {
            tokio::task::spawn_blocking(move || EmbeddedQueue::open(&path, lease, max))
                .await
                .map_err(|_| QueueError::Closed)?
        }
    };
    match &settings.backend {
        QueueBackend::Embedded { path } => {
            let queue = open_file(path.clone()).await?;
            Ok((AnyQueue::Embedded(queue), None))
        }
        QueueBackend::Redis(redis) => {
            let spool = open_file(settings.spool_path.clone()).await?;
            let queue = RedisStreamsQueue::new(
                redis,
                RedisQueueOptions::from_settings(settings),
                Some(spool.clone()),
            )?;
            // Only to say early in the log whether Redis answers; failing here is fine, and it
            // costs start-up at most one dial timeout.
            let probe = tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, queue.ping()).await;
            if let Some(error) = match probe {
                Ok(r) => r.err(),
                Err(_) => Some(QueueError::Timeout {
                    op: "ping",
                    after: DEFAULT_CONNECT_TIMEOUT,
                }),
            } {
                tracing::warn!(addr = %queue.addr(), %error, spool = %spool.path().display(), "Redis does not answer at start; hand-offs go to the spool until it does.");
            }
            Ok((AnyQueue::Redis(queue), Some(spool)))
        }
    }
}

impl Queue for AnyQueue {
    async fn append(&self, batch: &Batch) -> Result<(), QueueError> {
        match self {
            Self::Embedded(q) => q.append(batch).await,
            Self::Redis(q) => q.append(batch).await,
        }
    }

    async fn lease(&self, consumer: &str, wait: Duration) -> Result<Option<Lease>, QueueError> {
        match self {
            Self::Embedded(q) => q.lease(consumer, wait).await,
            Self::Redis(q) => q.lease(consumer, wait).await,
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        match self {
            Self::Embedded(q) => q.ack(lease).await,
            Self::Redis(q) => q.ack(lease).await,
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        match self {
            Self::Embedded(q) => q.depth().await,
            Self::Redis(q) => q.depth().await,
        }
    }
}

impl AnyQueue {
    /// Loads the saved pull cursor of `endpoint`.
    ///
    /// # Errors
    /// When the backend cannot be read.
    pub async fn load_cursor(&self, endpoint: &str) -> Result<Option<Cursor>, QueueError> {
        match self {
            Self::Embedded(q) => q.load_cursor(endpoint).await,
            Self::Redis(q) => q.load_cursor(endpoint).await,
        }
    }

    /// Persists the pull cursor of `endpoint` atomically.
    ///
    /// # Errors
    /// When the backend cannot be written.
    pub async fn save_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), QueueError> {
        match self {
            Self::Embedded(q) => q.save_cursor(endpoint, cursor).await,
            Self::Redis(q) => q.save_cursor(endpoint, cursor).await,
        }
    }

    /// Batches moved aside (dead-lettered) after too many deliveries or because they no longer
    /// decode.
    ///
    /// # Errors
    /// When the backend cannot be read.
    pub async fn dead_count(&self) -> Result<u64, QueueError> {
        match self {
            Self::Embedded(q) => q.dead_count().await,
            Self::Redis(q) => q.dead_count().await,
        }
    }

    /// Gives a lease back without counting it as a delivery: the batch is ready again at once.
    /// For failures that say nothing about the batch (the store is unreachable).
    ///
    /// # Errors
    /// When the backend cannot be written; the lease then expires as usual.
    pub async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        match self {
            Self::Embedded(q) => q.release(lease).await,
            Self::Redis(q) => q.release(lease).await,
        }
    }

    /// Up to `limit` dead batches, newest first.
    ///
    /// # Errors
    /// When the backend cannot be read.
    pub async fn dead_batches(&self, limit: u32) -> Result<Vec<DeadBatch>, QueueError> {
        match self {
            Self::Embedded(q) => q.dead_batches(limit).await,
            Self::Redis(q) => q.dead_batches(limit).await,
        }
    }

    /// Moves dead batch `entry` back into the queue; `false` when it is not there (any more).
    ///
    /// # Errors
    /// When the backend cannot be written.
    pub async fn revive_dead(&self, entry: &str) -> Result<bool, QueueError> {
        match self {
            Self::Embedded(q) => q.revive_dead(entry).await,
            Self::Redis(q) => q.revive_dead(entry).await,
        }
    }

    /// Persists the pull cursor of `endpoint`, fenced by its lease when `fence` is given (see
    /// [`RedisStreamsQueue::save_cursor_fenced`]); the embedded queue has no leases (one
    /// process per data directory) and ignores it.
    ///
    /// # Errors
    /// When the backend cannot be written, or the lease is no longer `fence`.
    pub async fn save_cursor_fenced(
        &self,
        endpoint: &str,
        cursor: &Cursor,
        fence: Option<&Fence>,
    ) -> Result<(), QueueError> {
        match (self, fence) {
            (Self::Redis(q), Some(f)) => q.save_cursor_fenced(endpoint, cursor, f).await,
            _ => self.save_cursor(endpoint, cursor).await,
        }
    }

    /// The same queue for use from another tokio runtime: for Redis, a handle with connections
    /// of its own ([`RedisStreamsQueue::with_own_link`]); the embedded queue holds no
    /// connection tied to a runtime, so it is shared as is.
    pub fn with_own_link(&self) -> Self {
        match self {
            Self::Embedded(q) => Self::Embedded(q.clone()),
            Self::Redis(q) => Self::Redis(q.with_own_link()),
        }
    }

    /// How long a lease lasts before the batch is delivered again (`queue.lease_timeout`).
    pub fn lease_timeout(&self) -> Duration {
        match self {
            Self::Embedded(q) => q.lease_timeout(),
            Self::Redis(q) => q.lease_timeout(),
        }
    }

    /// The backend's name, for logs and status.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Redis(_) => "redis",
        }
    }
}
