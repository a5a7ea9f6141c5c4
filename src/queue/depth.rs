//! Depth sampling: reads queue and spool depth from the backends themselves (`XLEN`/`XPENDING`,
//! `COUNT(*)`), bounded by a deadline, sets the depth gauges and feeds [`Backpressure`].
//!
//! Gauges are set only from a fresh sample, never tracked by in-process increments. A backend
//! that does not answer in time leaves its gauge at the last value; the gate keeps using that
//! value too, so a dead Redis neither opens nor closes it by itself (the spool's own depth, which
//! is local and always readable, still closes it at the cap).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{AnyQueue, Backpressure, EmbeddedQueue, Queue, QueueDepth};
use crate::telemetry::metrics as m;

/// Longest a single sample waits on a backend.
const SAMPLE_DEADLINE_MAX: Duration = Duration::from_secs(1);

/// One depth sample; `None` where the backend did not answer within the deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepthSample {
    /// The queue (Redis or embedded).
    pub queue: Option<QueueDepth>,
    /// Batches in the spool; `Some(0)` when there is no spool.
    pub spool: Option<u64>,
}

/// Reads both depths concurrently, each within `deadline`, and sets `botpipe_queue_depth`,
/// `botpipe_queue_pending` and `botpipe_spool_depth` from what answered.
pub async fn sample_depths(
    queue: &AnyQueue,
    spool: Option<&EmbeddedQueue>,
    deadline: Duration,
) -> DepthSample {
    let queue_depth = async {
        match tokio::time::timeout(deadline, queue.depth()).await {
            Ok(Ok(d)) => Some(d),
            Ok(Err(error)) => {
                tracing::debug!(%error, "Could not sample the queue depth.");
                None
            }
            Err(_) => None,
        }
    };
    let spool_depth = async {
        let Some(spool) = spool else { return Some(0) };
        match tokio::time::timeout(deadline, spool.depth()).await {
            Ok(Ok(d)) => Some(d.total),
            Ok(Err(error)) => {
                tracing::debug!(%error, "Could not sample the spool depth.");
                None
            }
            Err(_) => None,
        }
    };
    let (queue, spool) = tokio::join!(queue_depth, spool_depth);
    if let Some(d) = queue {
        metrics::gauge!(m::QUEUE_DEPTH).set(d.total as f64);
        metrics::gauge!(m::QUEUE_PENDING).set(d.pending as f64);
    }
    if let Some(n) = spool {
        metrics::gauge!(m::SPOOL_DEPTH).set(n as f64);
    }
    DepthSample { queue, spool }
}

/// Samples depths on a fixed period and feeds the backpressure gate.
#[derive(Debug)]
pub struct DepthSampler {
    queue: AnyQueue,
    spool: Option<EmbeddedQueue>,
    backpressure: Arc<Backpressure>,
    every: Duration,
    last: (u64, u64),
}

impl DepthSampler {
    /// A sampler of `queue` and `spool` every `every`, feeding `backpressure`.
    pub fn new(
        queue: AnyQueue,
        spool: Option<EmbeddedQueue>,
        backpressure: Arc<Backpressure>,
        every: Duration,
    ) -> Self {
        Self {
            queue,
            spool,
            backpressure,
            every,
            last: (0, 0),
        }
    }

    /// Takes one sample (within `min(every, 1 s)`), sets the gauges and feeds the gate, using
    /// the last known figure for a backend that did not answer.
    pub async fn sample_once(&mut self) -> DepthSample {
        let deadline = self.every.min(SAMPLE_DEADLINE_MAX);
        let sample = sample_depths(&self.queue, self.spool.as_ref(), deadline).await;
        if let Some(d) = sample.queue {
            self.last.0 = d.total;
        }
        if let Some(n) = sample.spool {
            self.last.1 = n;
        }
        self.backpressure.observe(self.last.0, self.last.1);
        sample
    }

    /// Samples until `token` is cancelled.
    pub async fn run_until_stopped(mut self, token: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Losing to the token drops the tick or an in-flight sample; both are read-only.
            tokio::select! {
                () = token.cancelled() => break,
                _ = tick.tick() => {
                    tokio::select! {
                        () = token.cancelled() => break,
                        _ = self.sample_once() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Queue;
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

    #[tokio::test]
    async fn sampler_reads_both_depths_and_closes_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            EmbeddedQueue::open(&dir.path().join(name), Duration::from_secs(60), 5).unwrap()
        };
        let (queue, spool) = (open("queue.sqlite"), open("spool.sqlite"));
        for _ in 0..2 {
            queue.append(&batch()).await.unwrap();
        }
        spool.append(&batch()).await.unwrap();
        let gate = Arc::new(Backpressure::new(3, 1, 10));
        let mut sampler = DepthSampler::new(
            AnyQueue::Embedded(queue),
            Some(spool),
            Arc::clone(&gate),
            Duration::from_millis(100),
        );
        let sample = sampler.sample_once().await;
        assert_eq!(sample.queue.map(|d| d.total), Some(2));
        assert_eq!(sample.spool, Some(1));
        assert!(!gate.allows_pull());

        let token = CancellationToken::new();
        let run = sampler.run_until_stopped(token.clone());
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&run);
        token.cancel();
        run.await;
    }

    #[tokio::test]
    async fn no_spool_counts_as_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let queue =
            EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_secs(60), 5).unwrap();
        let s = sample_depths(&AnyQueue::Embedded(queue), None, Duration::from_secs(1)).await;
        assert_eq!(s.spool, Some(0));
        assert_eq!(s.queue, Some(QueueDepth::default()));
    }
}
