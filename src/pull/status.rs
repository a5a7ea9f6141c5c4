//! The per-endpoint status board that pullers write and `/api/status` reads. Plain data behind a
//! std `RwLock` held only for a copy or a short update, never across an await.
//!
//! Besides the plain fields the board keeps two short windows per endpoint, from which each
//! snapshot derives what a single number cannot say: records/s over the last minute, and the
//! p99 of the schedule drift over the same minute. Both are bounded: records are summed per
//! second (at most 61 buckets), and at most [`MAX_DRIFT_SAMPLES`] drift samples are kept.
//!
//! A field the board does not know is `None` (`null` in JSON): an endpoint read from the files
//! has no pulls, rates or drift to show, and a collector that does not say how much it holds
//! has no lag. Unknown is never shown as 0.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::protocol::PullOutcomeLabel;

/// How far back `records_per_second` and `drift_p99_seconds` look.
pub const STATUS_WINDOW: Duration = Duration::from_secs(60);
/// Most drift samples kept per endpoint: a minute of ticks down to a 60 ms interval; a faster
/// endpoint's p99 covers its last 1,024 ticks instead of the whole minute.
pub const MAX_DRIFT_SAMPLES: usize = 1024;

/// What `/api/status` shows for one endpoint. `None` means unknown (`null` in JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointStatus {
    /// Endpoint name.
    pub name: String,
    /// The endpoint is configured with `enabled = false` (shown only when read from the files;
    /// a running botpipe has no puller for it).
    #[serde(default)]
    pub disabled: bool,
    /// When the last pull started.
    pub last_pull_at: Option<DateTime<Utc>>,
    /// Outcome of the last pull, in the vocabulary of `botpipe_pulls_total{outcome}`.
    pub last_outcome: Option<PullOutcomeLabel>,
    /// Last error message, while the endpoint fails.
    pub last_error: Option<String>,
    /// Failed pulls in a row (0 after a pull that worked).
    #[serde(default)]
    pub consecutive_failures: Option<u64>,
    /// When the first of those failed pulls started; `None` while pulls work.
    #[serde(default)]
    pub failing_since: Option<DateTime<Utc>>,
    /// Confirmed cursor.
    pub cursor: Option<u64>,
    /// Collector epoch, when known.
    pub epoch: Option<String>,
    /// Records the collector holds above the cursor, as of the last pull: `global_max_seq_id -
    /// cursor`, or a legacy collector's unconfirmed count; `None` when the collector says
    /// neither, or no pull has answered yet.
    pub lag: Option<u64>,
    /// Records pulled and confirmed per second over the last minute (over the time since start
    /// when shorter).
    #[serde(default)]
    pub records_per_second: Option<f64>,
    /// Drift of the last pull tick from its schedule, in seconds.
    #[serde(default)]
    pub last_drift_seconds: Option<f64>,
    /// p99 of the ticks' drift from their schedule over the last minute, in seconds.
    #[serde(default)]
    pub drift_p99_seconds: Option<f64>,
    /// Records pulled since start (valid and invalid).
    #[serde(default)]
    pub records_pulled: Option<u64>,
    /// Records dead-lettered at the pull stage since start.
    #[serde(default)]
    pub records_rejected: Option<u64>,
    /// Pulls since start.
    #[serde(default)]
    pub pulls: Option<u64>,
    /// Ticks skipped by backpressure since start.
    #[serde(default)]
    pub skipped_ticks: Option<u64>,
    /// Ticks missed because a pull overran since start.
    #[serde(default)]
    pub missed_ticks: Option<u64>,
    /// Batches that went to the spool since start.
    #[serde(default)]
    pub spooled_batches: Option<u64>,
    /// The process holding this endpoint's lease (Redis backend with `endpoint_leases`), as
    /// last seen; `None` without leases (the process answering pulls every enabled endpoint),
    /// or while nobody holds it.
    #[serde(default)]
    pub owner: Option<LeaseOwner>,
    /// Ticks skipped since start because this process's lease could not be confirmed in time
    /// (Redis unreachable).
    #[serde(default)]
    pub lease_lost_ticks: Option<u64>,
}

impl EndpointStatus {
    /// An endpoint of a running process before its first pull: the counters since start are
    /// known (0), everything the collector has to say is not yet.
    pub fn live(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            consecutive_failures: Some(0),
            records_pulled: Some(0),
            records_rejected: Some(0),
            pulls: Some(0),
            skipped_ticks: Some(0),
            missed_ticks: Some(0),
            spooled_batches: Some(0),
            lease_lost_ticks: Some(0),
            ..Self::default()
        }
    }
}

/// Who holds an endpoint's lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseOwner {
    /// Process name (`--name`, default `host-pid`).
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// When it acquired the lease.
    pub since: DateTime<Utc>,
    /// The lease's fencing token.
    pub token: u64,
    /// Whether that is the process answering.
    pub this_process: bool,
}

/// One endpoint's entry: what is shown, and the windows the derived numbers come from.
#[derive(Debug)]
struct Entry {
    status: EndpointStatus,
    /// When the entry was created (the puller started): the window is never longer.
    since: Instant,
    /// Records confirmed, summed per second: (start of the second, records).
    records: VecDeque<(Instant, u64)>,
    /// Recent tick drifts, seconds.
    drifts: VecDeque<(Instant, f64)>,
}

impl Entry {
    fn new(name: &str, now: Instant) -> Self {
        Self {
            status: EndpointStatus::live(name),
            since: now,
            records: VecDeque::new(),
            drifts: VecDeque::new(),
        }
    }

    /// Drops what has left the window as of `now`.
    fn prune(&mut self, now: Instant) {
        let Some(start) = now.checked_sub(STATUS_WINDOW) else {
            return;
        };
        while self.records.front().is_some_and(|(t, _)| *t < start) {
            self.records.pop_front();
        }
        while self.drifts.front().is_some_and(|(t, _)| *t < start) {
            self.drifts.pop_front();
        }
    }

    /// The status with its derived numbers as of `now`.
    fn view(&self, now: Instant) -> EndpointStatus {
        let mut status = self.status.clone();
        let start = now.checked_sub(STATUS_WINDOW);
        let in_window = |t: &Instant| start.is_none_or(|s| *t >= s);
        let records: u64 = self
            .records
            .iter()
            .filter(|(t, _)| in_window(t))
            .map(|(_, n)| n)
            .sum();
        // Over the minute, or the time since start when shorter (at least a second, so the
        // first pull does not show an absurd rate).
        let span = now
            .saturating_duration_since(self.since)
            .clamp(Duration::from_secs(1), STATUS_WINDOW);
        status.records_per_second = Some(records as f64 / span.as_secs_f64());
        let mut drifts: Vec<f64> = self
            .drifts
            .iter()
            .filter(|(t, _)| in_window(t))
            .map(|(_, d)| *d)
            .collect();
        status.drift_p99_seconds = p99(&mut drifts);
        status
    }
}

/// The nearest-rank 99th percentile; `None` for no samples.
fn p99(samples: &mut [f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = (samples.len() * 99).div_ceil(100).max(1);
    samples.get(rank - 1).copied()
}

/// Shared board of every endpoint's status.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BTreeMap<String, Entry>>>,
}

impl StatusBoard {
    fn with_entry<R>(&self, endpoint: &str, now: Instant, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(endpoint.to_owned())
            .or_insert_with(|| Entry::new(endpoint, now));
        f(entry)
    }

    /// Applies `f` to the status of `endpoint`, creating it if needed.
    pub fn update(&self, endpoint: &str, f: impl FnOnce(&mut EndpointStatus)) {
        self.with_entry(endpoint, Instant::now(), |e| f(&mut e.status));
    }

    /// Counts `records` confirmed now, for `records_per_second`.
    pub fn record_pulled(&self, endpoint: &str, records: u64) {
        self.record_pulled_at(endpoint, records, Instant::now());
    }

    fn record_pulled_at(&self, endpoint: &str, records: u64, now: Instant) {
        self.with_entry(endpoint, now, |e| {
            e.prune(now);
            match e.records.back_mut() {
                Some((second, n))
                    if now.saturating_duration_since(*second) < Duration::from_secs(1) =>
                {
                    *n += records;
                }
                _ => e.records.push_back((now, records)),
            }
        });
    }

    /// Records how late a tick of `endpoint` started, for `last_drift_seconds` and
    /// `drift_p99_seconds`.
    pub fn record_drift(&self, endpoint: &str, drift: Duration) {
        self.record_drift_at(endpoint, drift, Instant::now());
    }

    fn record_drift_at(&self, endpoint: &str, drift: Duration, now: Instant) {
        self.with_entry(endpoint, now, |e| {
            e.prune(now);
            if e.drifts.len() >= MAX_DRIFT_SAMPLES {
                e.drifts.pop_front();
            }
            e.drifts.push_back((now, drift.as_secs_f64()));
            e.status.last_drift_seconds = Some(drift.as_secs_f64());
        });
    }

    /// A copy of every endpoint's status, sorted by name.
    pub fn snapshot(&self) -> Vec<EndpointStatus> {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> Vec<EndpointStatus> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.values().map(|e| e.view(now)).collect()
    }

    /// A copy of one endpoint's status.
    pub fn get(&self, endpoint: &str) -> Option<EndpointStatus> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.get(endpoint).map(|e| e.view(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_new_endpoint_knows_its_counters_but_not_the_collector() {
        let board = StatusBoard::default();
        board.update("east", |_| {});
        let e = board.get("east").unwrap();
        assert_eq!(e.pulls, Some(0));
        assert_eq!(e.consecutive_failures, Some(0));
        assert_eq!(e.lag, None);
        assert_eq!(e.drift_p99_seconds, None);
        assert_eq!(e.last_outcome, None);
        // Read from the files, the counters since start are unknown too.
        let json = serde_json::to_value(EndpointStatus {
            name: "east".into(),
            ..EndpointStatus::default()
        })
        .unwrap();
        for field in [
            "pulls",
            "lag",
            "records_per_second",
            "drift_p99_seconds",
            "consecutive_failures",
        ] {
            assert!(json[field].is_null(), "{field}: {json}");
        }
    }

    #[test]
    fn records_per_second_cover_the_last_minute() {
        let board = StatusBoard::default();
        let t0 = Instant::now();
        board.with_entry("east", t0, |_| {});
        // 100 records in each of the first 10 seconds.
        for i in 0..10u32 {
            board.record_pulled_at("east", 60, t0 + S * i);
            board.record_pulled_at("east", 40, t0 + S * i + Duration::from_millis(500));
        }
        let at = |secs: u32| board.snapshot_at(t0 + S * secs)[0].records_per_second;
        // Ten seconds after start: 1,000 records over 10 s.
        assert_eq!(at(10), Some(100.0));
        // A minute after start: 1,000 over 60 s.
        assert_eq!(at(60), Some(1000.0 / 60.0));
        // Later the old seconds have left the window: a measured 0, not unknown.
        assert_eq!(at(75), Some(0.0));
        // Pruning keeps the window bounded.
        board.record_pulled_at("east", 5, t0 + S * 200);
        let map = board.inner.read().unwrap();
        assert_eq!(map["east"].records.len(), 1);
    }

    #[test]
    fn drift_p99_is_taken_over_the_window_and_bounded() {
        let board = StatusBoard::default();
        let t0 = Instant::now();
        for i in 0..100u32 {
            let drift = if i == 50 {
                0.5
            } else {
                0.001 * f64::from(i % 3)
            };
            board.record_drift_at("east", Duration::from_secs_f64(drift), t0 + S * i / 10);
        }
        let e = &board.snapshot_at(t0 + S * 10)[0];
        // 100 samples: the 99th of them in order is the largest but one.
        assert_eq!(e.drift_p99_seconds, Some(0.002));
        assert_eq!(e.last_drift_seconds, Some(0.001 * f64::from(99 % 3)));
        for i in 0..(MAX_DRIFT_SAMPLES as u32 + 10) {
            board.record_drift_at(
                "east",
                Duration::from_millis(1),
                t0 + S * 11 + Duration::from_micros(u64::from(i)),
            );
        }
        assert_eq!(
            board.inner.read().unwrap()["east"].drifts.len(),
            MAX_DRIFT_SAMPLES
        );
        // Two minutes later nothing is left in the window: unknown.
        assert_eq!(board.snapshot_at(t0 + S * 200)[0].drift_p99_seconds, None);
        assert_eq!(p99(&mut [0.25]), Some(0.25));
    }
}
