//! [`SpoolDrainer`]: moves the batches the hand-off spooled, because Redis did not take them
//! within the deadline, into Redis once it answers again, oldest first.
//!
//! One step ([`SpoolDrainer::try_drain_one`]): lease the oldest spooled batch, append it to the
//! queue, ack it in the spool. If the append fails the lease is released without counting a
//! delivery, so the batch keeps its place and is never dead-lettered for Redis being down. If
//! the process dies (or the spool ack fails) after the append, the batch is appended once more
//! on the next step: at-least-once, and the store's merge rules absorb the copy. A step is never
//! abandoned half-way on shutdown: the loop checks its token only between steps, and each step
//! is bounded by the queue's command timeout plus one SQLite write.
//!
//! Logging: one line when Redis stops or starts taking batches, one when draining starts (with
//! the backlog), progress every few seconds while draining, and one when the spool is empty;
//! never a line per batch or per failed attempt.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{AnyQueue, EmbeddedQueue, Queue, QueueError};
use crate::retry::Backoff;
use crate::telemetry::metrics as m;

/// Consumer name of the drainer in the spool.
const DRAINER: &str = "spool-drainer";
/// Longest idle wait for a new spooled batch before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Pause after the queue refused a batch or the spool failed: full jitter under a ceiling of
/// 100 ms doubling to 2 s; the cap bounds how late a recovered Redis is noticed.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// How often progress is logged while draining.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What one drain step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// One batch moved from the spool into the queue.
    Moved,
    /// The spool is empty.
    Empty,
}

/// Why a drain step failed; nothing was lost either way.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The spool could not be read or written.
    #[error("spool: {0}")]
    Spool(#[source] QueueError),
    /// The queue did not take the batch; it stays in the spool.
    #[error("queue did not take spooled batch {batch}: {source}")]
    Queue {
        /// The batch id.
        batch: String,
        /// The cause.
        #[source]
        source: QueueError,
    },
}

impl DrainError {
    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Spool(e) | Self::Queue { source: e, .. } => e.is_retryable(),
        }
    }
}

/// Moves spooled batches into the queue.
#[derive(Debug, Clone)]
pub struct SpoolDrainer {
    spool: EmbeddedQueue,
    queue: AnyQueue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Draining,
    QueueDown,
    SpoolFailing,
}

impl SpoolDrainer {
    /// A drainer from `spool` into `queue`.
    pub fn new(spool: EmbeddedQueue, queue: AnyQueue) -> Self {
        Self { spool, queue }
    }

    /// Moves the oldest spooled batch into the queue, if any.
    ///
    /// # Errors
    /// When the spool fails, or the queue does not take the batch (it stays spooled).
    pub async fn try_drain_one(&self) -> Result<DrainStep, DrainError> {
        let Some(lease) = self
            .spool
            .lease(DRAINER, Duration::ZERO)
            .await
            .map_err(DrainError::Spool)?
        else {
            return Ok(DrainStep::Empty);
        };
        match self.queue.append(&lease.batch).await {
            Ok(()) => {
                // If this ack fails the batch is appended again later: a duplicate, not a loss.
                self.spool.ack(&lease).await.map_err(DrainError::Spool)?;
                metrics::counter!(m::SPOOL_DRAINED_TOTAL).increment(1);
                Ok(DrainStep::Moved)
            }
            Err(source) => {
                if let Err(error) = self.spool.release(&lease).await {
                    // The lease then expires on its own; the batch is only delayed.
                    tracing::warn!(%error, entry = %lease.entry, "Could not release a spool lease.");
                }
                Err(DrainError::Queue {
                    batch: lease.batch.id.to_string(),
                    source,
                })
            }
        }
    }

    async fn spooled(&self) -> Option<u64> {
        self.spool.depth().await.ok().map(|d| d.total)
    }

    /// Drains until `token` is cancelled: at once while batches are spooled and the queue takes
    /// them, with full-jitter backoff while it does not, and waiting for new spooled batches when
    /// the spool is empty.
    pub async fn run_until_stopped(self, token: CancellationToken) {
        let mut state = State::Idle;
        let mut failures: u32 = 0;
        let mut moved: u64 = 0;
        let mut started = Instant::now();
        let mut last_progress = Instant::now();
        while !token.is_cancelled() {
            // Not raced against the token: see the module doc.
            let step = self.try_drain_one().await;
            let pause = match step {
                Ok(DrainStep::Moved) => {
                    if state != State::Draining {
                        let backlog = self.spooled().await.map_or(0, |n| n + 1);
                        if state == State::QueueDown {
                            tracing::info!(
                                backlog,
                                "The queue takes batches again; draining the spool, oldest first."
                            );
                        } else {
                            tracing::info!(backlog, "Draining the spool, oldest first.");
                        }
                        state = State::Draining;
                        moved = 0;
                        started = Instant::now();
                        last_progress = started;
                    }
                    failures = 0;
                    moved += 1;
                    if last_progress.elapsed() >= PROGRESS_EVERY {
                        last_progress = Instant::now();
                        let secs = started.elapsed().as_secs_f64().max(1e-3);
                        // Awaited outside the macro: its arguments must not live across an await.
                        let left = self.spooled().await;
                        tracing::info!(
                            moved,
                            left,
                            batches_per_s = (moved as f64 / secs).round(),
                            "Draining the spool."
                        );
                    }
                    None
                }
                Ok(DrainStep::Empty) => {
                    if state == State::Draining {
                        tracing::info!(
                            moved,
                            secs = crate::telemetry::rounded(started.elapsed().as_secs_f64(), 3),
                            "Spool drained."
                        );
                    } else if state == State::SpoolFailing {
                        tracing::info!("The spool answers again.");
                    }
                    state = State::Idle;
                    failures = 0;
                    // Woken early by a new spooled batch; losing to the token just stops.
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = self.spool.wait_for_append(IDLE_WAIT) => {}
                    }
                    None
                }
                Err(DrainError::Queue { source, .. }) => {
                    if state != State::QueueDown {
                        let spooled = self.spooled().await;
                        tracing::warn!(error = %source, spooled, "The queue does not take batches; spooled batches wait until it does.");
                        state = State::QueueDown;
                    }
                    Some(RETRY_BACKOFF.delay(failures))
                }
                Err(DrainError::Spool(error)) => {
                    if state != State::SpoolFailing {
                        tracing::error!(%error, path = %self.spool.path().display(), "The spool cannot be read; spooled batches wait.");
                        state = State::SpoolFailing;
                    }
                    Some(RETRY_BACKOFF.delay(failures))
                }
            };
            if let Some(pause) = pause {
                failures = failures.saturating_add(1);
                // Losing to the token just stops; nothing is in flight during the pause.
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        tracing::debug!("Spool drainer stopped.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Batch, BotnetType, LogType, NodeIp, Record};

    fn batch() -> Batch {
        let record = Record {
            ip: NodeIp::parse("1.2.3.4").unwrap(),
            timestamp: chrono::Utc::now(),
            botnet_type: BotnetType::parse("mozi").unwrap(),
            log_type: LogType::Online,
            seq_id: None,
        };
        Batch::new("test", vec![record], vec![])
    }

    fn open(dir: &tempfile::TempDir, name: &str) -> EmbeddedQueue {
        EmbeddedQueue::open(&dir.path().join(name), Duration::from_secs(60), 5).unwrap()
    }

    #[tokio::test]
    async fn drains_oldest_first_then_reports_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, target) = (open(&dir, "spool.sqlite"), open(&dir, "queue.sqlite"));
        let batches: Vec<Batch> = (0..3).map(|_| batch()).collect();
        for b in &batches {
            spool.append(b).await.unwrap();
        }
        let drainer = SpoolDrainer::new(spool.clone(), AnyQueue::Embedded(target.clone()));
        for _ in 0..3 {
            assert_eq!(drainer.try_drain_one().await.unwrap(), DrainStep::Moved);
        }
        assert_eq!(drainer.try_drain_one().await.unwrap(), DrainStep::Empty);
        for b in &batches {
            let lease = target.lease("w", Duration::ZERO).await.unwrap().unwrap();
            assert_eq!(lease.batch.id, b.id);
            target.ack(&lease).await.unwrap();
        }
    }

    #[tokio::test]
    async fn run_loop_drains_new_batches_and_stops_on_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, target) = (open(&dir, "spool.sqlite"), open(&dir, "queue.sqlite"));
        let token = CancellationToken::new();
        let run = SpoolDrainer::new(spool.clone(), AnyQueue::Embedded(target.clone()))
            .run_until_stopped(token.clone());
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&run);
        let task = tokio::spawn(run);
        spool.append(&batch()).await.unwrap();
        let lease = target.lease("w", Duration::from_secs(10)).await.unwrap();
        assert!(lease.is_some(), "the spooled batch reached the queue");
        token.cancel();
        task.await.unwrap();
        assert_eq!(spool.depth().await.unwrap().total, 0);
    }
}
