//! The durable queue between pullers (and push) and workers.
//!
//! [`Queue`] is one of botpipe's three seams, with two real implementations:
//! [`EmbeddedQueue`] (a SQLite file; the default, and the spool when Redis is down) and Redis
//! Streams. Callers use [`AnyQueue`], an enum chosen at start-up.
//!
//! Contract, checked by `tests/it/queue_contract.rs` for every backend:
//! - `append` returns only once the batch is durable; then the puller may confirm upstream.
//! - A leased batch that is not acked is delivered again after the lease timeout or a restart
//!   (at-least-once). Delivery order is not guaranteed.
//! - `ack` is fenced by the lease: a stale lease cannot ack a redelivered batch.
//! - Acking twice is harmless.

mod backpressure;
mod embedded;
mod handoff;

pub use backpressure::Backpressure;
pub use embedded::{Cursor, EmbeddedQueue};
pub use handoff::{Handoff, HandoffError, HandoffTarget};

use std::future::Future;
use std::time::Duration;

use crate::record::Batch;

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
}

impl QueueError {
    /// Whether retrying later may succeed (timeouts, connection problems) as opposed to a defect.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Sqlite { .. } | Self::Timeout { .. })
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
}

impl Queue for AnyQueue {
    async fn append(&self, batch: &Batch) -> Result<(), QueueError> {
        match self {
            Self::Embedded(q) => q.append(batch).await,
        }
    }

    async fn lease(&self, consumer: &str, wait: Duration) -> Result<Option<Lease>, QueueError> {
        match self {
            Self::Embedded(q) => q.lease(consumer, wait).await,
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        match self {
            Self::Embedded(q) => q.ack(lease).await,
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        match self {
            Self::Embedded(q) => q.depth().await,
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
        }
    }

    /// Persists the pull cursor of `endpoint` atomically.
    ///
    /// # Errors
    /// When the backend cannot be written.
    pub async fn save_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), QueueError> {
        match self {
            Self::Embedded(q) => q.save_cursor(endpoint, cursor).await,
        }
    }
}
