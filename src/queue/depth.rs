//! Depth sampling: reads queue and spool depth from the backends themselves (`XLEN`/`XPENDING`,
//! `COUNT(*)`), bounded by a deadline, sets the depth gauges and feeds [`Backpressure`].
//!
//! Gauges are set only from a fresh sample, never tracked by in-process increments. A backend
//! that does not answer in time leaves its gauge at the last value; the gate keeps using that
//! value too, so a dead Redis neither opens nor closes it by itself (the spool's own depth, which
//! is local and always readable, still closes it at the cap).
//!
//! The sampler also keeps a minute of samples in a [`DepthHistory`], one a second, from which
//! `botpipe status` shows how fast each depth grows or shrinks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How far back [`DepthHistory`] looks for a depth's rate of change.
pub const DEPTH_RATE_WINDOW: Duration = Duration::from_secs(60);

/// The last minute of depth samples, at most one a second (61 entries), shared between the
/// [`DepthSampler`] that writes it and `/api/status`, which reads the rates. A std `Mutex`,
/// held only to push or read, never across an await.
#[derive(Debug, Clone, Default)]
pub struct DepthHistory {
    samples: Arc<Mutex<VecDeque<(Instant, DepthSample)>>>,
}

impl DepthHistory {
    /// Keeps `sample` taken at `at`, unless the last kept one is less than a second older.
    pub fn record(&self, at: Instant, sample: DepthSample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples
            .back()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) < Duration::from_secs(1))
        {
            return;
        }
        if let Some(start) = at.checked_sub(DEPTH_RATE_WINDOW) {
            while samples.front().is_some_and(|(t, _)| *t < start) {
                samples.pop_front();
            }
        }
        samples.push_back((at, sample));
    }

    /// How fast the queue's depth (batches, ready plus leased) changed over the last minute,
    /// in batches per second: positive while it grows. `None` without two answered samples at
    /// least a second apart.
    pub fn queue_rate(&self) -> Option<f64> {
        self.rate(|s| s.queue.map(|d| d.total))
    }

    /// The same for the spool's depth.
    pub fn spool_rate(&self) -> Option<f64> {
        self.rate(|s| s.spool)
    }

    fn rate(&self, depth: impl Fn(&DepthSample) -> Option<u64>) -> Option<f64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut answered = samples.iter().filter_map(|(t, s)| Some((*t, depth(s)?)));
        let first = answered.next()?;
        let last = answered.last()?;
        let span = last.0.saturating_duration_since(first.0).as_secs_f64();
        (span >= 1.0).then(|| (last.1 as f64 - first.1 as f64) / span)
    }
}

/// Samples depths on a fixed period and feeds the backpressure gate.
#[derive(Debug)]
pub struct DepthSampler {
    queue: AnyQueue,
    spool: Option<EmbeddedQueue>,
    backpressure: Arc<Backpressure>,
    every: Duration,
    last: (u64, u64),
    history: Option<DepthHistory>,
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
            history: None,
        }
    }

    /// Also keeps the samples in `history`, for the rates in `/api/status`.
    #[must_use]
    pub fn with_history(mut self, history: DepthHistory) -> Self {
        self.history = Some(history);
        self
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
        if let Some(history) = &self.history {
            history.record(Instant::now(), sample);
        }
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

    #[test]
    fn history_rates_are_unknown_until_two_samples_a_second_apart() {
        let h = DepthHistory::default();
        let t0 = Instant::now();
        let depth = |total: u64| QueueDepth { total, pending: 0 };
        let sample = |q: Option<u64>, s: u64| DepthSample {
            queue: q.map(depth),
            spool: Some(s),
        };
        assert_eq!(h.queue_rate(), None);
        h.record(t0, sample(Some(10), 4));
        h.record(t0 + Duration::from_millis(500), sample(Some(99), 99));
        assert_eq!(
            h.queue_rate(),
            None,
            "the second sample is kept only after a second"
        );
        h.record(t0 + Duration::from_secs(2), sample(None, 2));
        h.record(t0 + Duration::from_secs(4), sample(Some(30), 0));
        // Queue: 10 → 30 over 4 s (the unanswered sample is skipped); spool: 4 → 0.
        assert_eq!(h.queue_rate(), Some(5.0));
        assert_eq!(h.spool_rate(), Some(-1.0));
        // Much later the old samples have left the window.
        h.record(t0 + Duration::from_secs(100), sample(Some(30), 0));
        assert_eq!(h.queue_rate(), None);
        h.record(t0 + Duration::from_secs(102), sample(Some(20), 0));
        assert_eq!(h.queue_rate(), Some(-5.0));
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
