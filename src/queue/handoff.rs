//! The puller's durable hand-off: append a batch to the queue within a deadline, or else to the
//! local spool, so that a slow or dead queue never holds up a pull for longer than the deadline.
//!
//! Only after [`Handoff::handoff`] returns `Ok` may the puller confirm upstream (design invariant
//! 2). With the embedded queue there is no separate spool: the queue file is already local and
//! durable, and a failure there is returned so the puller does not confirm.
//!
//! One slow cycle per outage, not one per tick: once a hand-off to Redis has timed out (or a
//! cursor save has, or the pull cycle's lease check: [`Handoff::redis_timed_out`]), the
//! hand-off goes into *bypass*: further batches and cursors go straight to the spool without
//! trying Redis, and a background probe pings Redis with backoff until it
//! answers, which ends the bypass. Without it, a hanging or slow Redis would cost every cycle
//! its whole deadline, and at short intervals the ticks would drift and be missed. A Redis that
//! refuses connections fails fast anyway (`redis_link`), so only timeouts start a bypass. The
//! bypass belongs to one Redis link: the clones of a `Handoff` share it, a handle made by
//! [`Handoff::with_own_link`] has its own. One log line when it starts, one when it ends; the
//! state is the gauge `botpipe_handoff_bypass`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{AnyQueue, Cursor, EmbeddedQueue, Fence, Queue, QueueError};
use crate::record::Batch;
use crate::retry::Backoff;
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
    /// Both targets, for registering their counters.
    pub const ALL: [Self; 2] = [Self::Queue, Self::Spool];

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

/// Pause between probes of Redis during a bypass: full jitter under a ceiling of 100 ms doubling
/// to 2 s, so a recovered Redis is taken back within about 2 s.
const PROBE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// The bypass state shared by the clones of one [`Handoff`] (see the module doc).
#[derive(Debug, Default)]
struct Bypass {
    on: AtomicBool,
}

impl Bypass {
    fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }
}

/// Queue plus optional spool, with the hand-off deadline.
#[derive(Debug, Clone)]
pub struct Handoff {
    queue: AnyQueue,
    spool: Option<EmbeddedQueue>,
    deadline: Duration,
    bypass: Arc<Bypass>,
}

impl Handoff {
    /// A hand-off to `queue`, falling back to `spool` when given.
    pub fn new(queue: AnyQueue, spool: Option<EmbeddedQueue>, deadline: Duration) -> Self {
        Self {
            queue,
            spool,
            deadline,
            bypass: Arc::default(),
        }
    }

    /// The same hand-off (queue, spool, deadline) for use from another tokio runtime, on Redis
    /// connections of its own (see [`AnyQueue::with_own_link`]), with a bypass state of its own.
    pub fn with_own_link(&self) -> Self {
        Self {
            queue: self.queue.with_own_link(),
            spool: self.spool.clone(),
            deadline: self.deadline,
            bypass: Arc::default(),
        }
    }

    /// The same hand-off (sharing its link and bypass) with another deadline: each puller's
    /// is fitted to its interval (`QueueSettings::handoff_deadline_for`).
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Self {
            deadline,
            ..self.clone()
        }
    }

    /// The deadline of one hand-off.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Whether hand-offs currently skip Redis for the spool (see the module doc).
    pub fn bypassing(&self) -> bool {
        self.bypass.is_on()
    }

    /// What is left of one hand-off's deadline `since` it started, for the pull cycle's one
    /// other Redis round trip before its confirm (the lease check): the two together wait on
    /// Redis for at most one deadline. `None` while hand-offs bypass Redis: do not ask it.
    pub fn remaining(&self, since: Instant) -> Option<Duration> {
        if self.bypass.is_on() {
            None
        } else {
            Some(self.deadline.saturating_sub(since.elapsed()))
        }
    }

    /// Reports that a Redis call of the pull cycle other than the hand-off itself (`op`, the
    /// lease check) did not answer within `after`, what was left of the deadline: like a
    /// hand-off that timed out, this starts the bypass, so the cursor save that follows and
    /// the next cycles do not wait on Redis again.
    pub fn redis_timed_out(&self, op: &'static str, after: Duration) {
        self.start_bypass(&QueueError::Timeout { op, after });
    }

    /// Starts a bypass after `cause` timed out, unless one is on; spawns its probe on the
    /// current runtime. Only with Redis and a spool: there is nowhere else to go otherwise.
    fn start_bypass(&self, cause: &QueueError) {
        let AnyQueue::Redis(redis) = &self.queue else {
            return;
        };
        if self.spool.is_none() || self.bypass.on.swap(true, Ordering::AcqRel) {
            return;
        }
        metrics::gauge!(m::HANDOFF_BYPASS).set(1.0);
        tracing::warn!(addr = %redis.addr(), error = %cause, deadline_ms = self.deadline.as_millis() as u64, "Redis did not answer within the hand-off deadline: batches and cursors go straight to the spool until a probe sees Redis answer.");
        let redis = redis.clone();
        let bypass: Weak<Bypass> = Arc::downgrade(&self.bypass);
        // Redis is back when it answers within a hand-off's deadline: a slow Redis that answers
        // a PING after seconds would only cost every cycle its deadline again.
        let within = self.deadline;
        // Not tracked: it ends as soon as Redis answers, when every clone of this hand-off is
        // gone (the weak reference), or with its runtime, and it holds nothing that needs a
        // clean stop (a PING in flight).
        tokio::spawn(async move {
            let mut attempt = 0u32;
            loop {
                tokio::time::sleep(PROBE_BACKOFF.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
                let Some(state) = bypass.upgrade() else {
                    return;
                };
                match tokio::time::timeout(within, redis.ping()).await {
                    Ok(Ok(())) => {
                        state.on.store(false, Ordering::Release);
                        metrics::gauge!(m::HANDOFF_BYPASS).set(0.0);
                        tracing::info!(addr = %redis.addr(), attempts = attempt, "Redis answers again: hand-offs go to Redis again; the drainer moves the spooled batches.");
                        return;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, attempt, "Redis still does not answer the probe.")
                    }
                    Err(_) => tracing::debug!(
                        attempt,
                        "Redis did not answer the probe within the hand-off deadline."
                    ),
                }
            }
        });
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
        let primary = if self.spool.is_some() && self.bypass.is_on() {
            Err(QueueError::Timeout {
                op: "append (bypassed until Redis answers)",
                after: Duration::ZERO,
            })
        } else {
            match tokio::time::timeout(self.deadline, self.queue.append(batch)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    if matches!(e, QueueError::Timeout { .. }) {
                        self.start_bypass(&e);
                    }
                    Err(e)
                }
                Err(_) => {
                    let e = QueueError::Timeout {
                        op: "append",
                        after: self.deadline,
                    };
                    self.start_bypass(&e);
                    Err(e)
                }
            }
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
    /// Loads the cursor of `endpoint` from the queue's cursor store.
    ///
    /// # Errors
    /// When the cursor store cannot be read.
    pub async fn load_cursor(&self, endpoint: &str) -> Result<Option<Cursor>, QueueError> {
        self.queue.load_cursor(endpoint).await
    }

    /// Persists the cursor of `endpoint`, bounded by the hand-off deadline. During a bypass, and
    /// when Redis does not take it in time, the cursor goes to the spool at once: a cycle whose
    /// hand-off already waited out its deadline does not wait a second time here.
    ///
    /// # Errors
    /// When the cursor store fails or does not answer in time.
    pub async fn save_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), QueueError> {
        self.save_cursor_fenced(endpoint, cursor, None).await
    }

    /// Persists the cursor of `endpoint` only while `fence` is its current lease (when given),
    /// bounded by the hand-off deadline. During a bypass, and when Redis does not take it in
    /// time, the cursor goes to the spool at once (unfenced: Redis, which holds the leases, is
    /// not answering).
    ///
    /// # Errors
    /// When the cursor store fails or does not answer in time, or the lease moved on.
    pub async fn save_cursor_fenced(
        &self,
        endpoint: &str,
        cursor: &Cursor,
        fence: Option<&Fence>,
    ) -> Result<(), QueueError> {
        let redis = match &self.queue {
            AnyQueue::Redis(r) if self.spool.is_some() => Some(r),
            _ => None,
        };
        if let Some(redis) = redis {
            if self.bypass.is_on() {
                return redis.save_cursor_locally(endpoint, cursor).await;
            }
        }
        let save = self.queue.save_cursor_fenced(endpoint, cursor, fence);
        match tokio::time::timeout(self.deadline, save).await {
            Ok(r) => r,
            Err(_) => {
                let e = QueueError::Timeout {
                    op: "save_cursor",
                    after: self.deadline,
                };
                match redis {
                    Some(redis) => {
                        self.start_bypass(&e);
                        redis.save_cursor_locally(endpoint, cursor).await
                    }
                    None => Err(e),
                }
            }
        }
    }
}
