//! The puller's durable hand-off: append a batch to the queue within a deadline, or else to the
//! local spool, so that a slow or dead queue never holds up a pull for longer than the deadline.
//!
//! Only after [`Handoff::handoff`] returns `Ok` may the puller confirm upstream (design invariant
//! 2). With the embedded queue there is no separate spool: the queue file is already local and
//! durable, and a failure there is returned so the puller does not confirm.

use std::time::{Duration, Instant};

use super::{AnyQueue, Cursor, EmbeddedQueue, Fence, Queue, QueueError};
use crate::record::Batch;
use crate::telemetry::metrics as m;

/// Where a batch became durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffTarget {
    /// The primary queue acknowledged it within the deadline.
    Queue,
    /// The queue did not; the local spool holds it until the drainer moves it.
    Spool,
}

impl HandoffTarget {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Spool => "spool",
        }
    }
}

/// Why a batch could not be made durable anywhere; the puller must not confirm it.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The queue failed or timed out and there is no spool to fall back on.
    #[error("queue did not accept batch {batch}: {source}")]
    Queue {
        /// The batch id.
        batch: String,
        /// The cause.
        #[source]
        source: QueueError,
    },
    /// The queue failed and the spool failed too.
    #[error("neither queue nor spool accepted batch {batch}: {source}")]
    Spool {
        /// The batch id.
        batch: String,
        /// The spool's error.
        #[source]
        source: QueueError,
    },
}

/// Queue plus optional spool, with the hand-off deadline.
#[derive(Debug, Clone)]
pub struct Handoff {
    queue: AnyQueue,
    spool: Option<EmbeddedQueue>,
    deadline: Duration,
}

impl Handoff {
    /// A hand-off to `queue`, falling back to `spool` when given.
    pub fn new(queue: AnyQueue, spool: Option<EmbeddedQueue>, deadline: Duration) -> Self {
        Self {
            queue,
            spool,
            deadline,
        }
    }

    /// The same hand-off (queue, spool, deadline) for use from another tokio runtime, on Redis
    /// connections of its own (see [`AnyQueue::with_own_link`]).
    pub fn with_own_link(&self) -> Self {
        Self {
            queue: self.queue.with_own_link(),
            spool: self.spool.clone(),
            deadline: self.deadline,
        }
    }

    /// The primary queue.
    pub fn queue(&self) -> &AnyQueue {
        &self.queue
    }

    /// The spool, if any.
    pub fn spool(&self) -> Option<&EmbeddedQueue> {
        self.spool.as_ref()
    }

    /// Makes `batch` durable: in the queue within the deadline, else in the spool.
    ///
    /// # Errors
    /// When no durable target accepted the batch.
    pub async fn handoff(&self, batch: &Batch) -> Result<HandoffTarget, HandoffError> {
        let started = Instant::now();
        let primary = match tokio::time::timeout(self.deadline, self.queue.append(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QueueError::Timeout {
                op: "append",
                after: self.deadline,
            }),
        };
        let result = match (primary, &self.spool) {
            (Ok(()), _) => Ok(HandoffTarget::Queue),
            (Err(source), None) => Err(HandoffError::Queue {
                batch: batch.id.to_string(),
                source,
            }),
            (Err(queue_err), Some(spool)) => {
                tracing::debug!(batch = %batch.id, error = %queue_err, "Queue did not accept the batch in time; spooling it.");
                spool
                    .append(batch)
                    .await
                    .map(|()| HandoffTarget::Spool)
                    .map_err(|source| HandoffError::Spool {
                        batch: batch.id.to_string(),
                        source,
                    })
            }
        };
        let (target, outcome) = match &result {
            Ok(t) => (t.as_str(), "ok"),
            Err(HandoffError::Queue { .. }) => ("queue", "failed"),
            Err(HandoffError::Spool { .. }) => ("spool", "failed"),
        };
        metrics::counter!(m::HANDOFF_TOTAL, "target" => target, "outcome" => outcome).increment(1);
        metrics::histogram!(m::HANDOFF_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }
}

impl Handoff {
    /// The deadline every hand-off and cursor write is bounded by.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Loads the cursor of `endpoint` from the queue's cursor store.
    ///
    /// # Errors
    /// When the cursor store cannot be read.
    pub async fn load_cursor(&self, endpoint: &str) -> Result<Option<Cursor>, QueueError> {
        self.queue.load_cursor(endpoint).await
    }

    /// Persists the cursor of `endpoint`, bounded by the hand-off deadline.
    ///
    /// # Errors
    /// When the cursor store fails or does not answer in time.
    pub async fn save_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), QueueError> {
        self.save_cursor_fenced(endpoint, cursor, None).await
    }

    /// Persists the cursor of `endpoint` only while `fence` is its current lease (when given),
    /// bounded by the hand-off deadline.
    ///
    /// # Errors
    /// When the cursor store fails or does not answer in time, or the lease moved on.
    pub async fn save_cursor_fenced(
        &self,
        endpoint: &str,
        cursor: &Cursor,
        fence: Option<&Fence>,
    ) -> Result<(), QueueError> {
        let save = self.queue.save_cursor_fenced(endpoint, cursor, fence);
        match tokio::time::timeout(self.deadline, save).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout {
                op: "save_cursor",
                after: self.deadline,
            }),
        }
    }
}
