//! Per-segment statistics of a benchmark run: the run is cut into [`SEGMENTS`] equal shares of
//! its records, and each segment gets its records/s, the table size at its end and its batch
//! latency percentiles, so a rate that falls as the tables grow shows as a falling column.
//!
//! Two kinds of input: every batch with its exact latency ([`from_batches`], for `bench store`,
//! which applies the batches itself), or progress polled from outside with the latencies as
//! Prometheus histogram buckets ([`from_polls`], for `bench pipeline`, whose batches are applied
//! by the workers). Percentiles of the second kind are bucket upper bounds.

use std::time::Duration;

use serde::Serialize;

/// Segments a run is cut into (every 10% of its records).
pub const SEGMENTS: u64 = 10;

/// One batch a writer finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSample {
    /// When it finished, from the start of the run.
    pub finished: Duration,
    /// Records it held.
    pub records: u64,
    /// Communication rows it inserted.
    pub inserted: u64,
    /// How long the store took for it.
    pub latency: Duration,
}

/// Cumulative histogram buckets: `(upper bound in seconds, observations ≤ bound)`, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram(pub Vec<(f64, f64)>);

impl Histogram {
    /// The observations made after `earlier` was taken.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram(
            self.0
                .iter()
                .map(|&(le, n)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0.0, |(_, c)| *c);
                    (le, (n - before).max(0.0))
                })
                .collect(),
        )
    }

    /// Observations counted.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, n)| *n)
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), or `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let target = total * q;
        self.0.iter().find(|(_, n)| *n >= target).map(|(le, _)| *le)
    }
}

/// A progress sample of a run observed from outside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Poll {
    /// When, from the start of the run.
    pub at: Duration,
    /// Records stored so far.
    pub records: u64,
    /// Communication rows so far.
    pub table_rows: u64,
    /// Store batch latencies so far.
    pub latencies: Histogram,
}

/// One segment of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Records stored at the end of the segment.
    pub records: u64,
    /// Communication rows in the store at the end of the segment.
    pub table_rows: u64,
    /// Wall time of the segment.
    pub seconds: f64,
    /// Records of the segment per second of it.
    pub records_per_second: f64,
    /// Median store time of a batch in the segment, in milliseconds.
    pub batch_p50_ms: f64,
    /// 99th percentile of the same.
    pub batch_p99_ms: f64,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// The whole run as one segment: records stored, communication rows (fewer than records
    /// when events repeat exactly), wall time, records/s and batch percentiles over the run.
    #[serde(flatten)]
    pub total: Segment,
    /// CPU time (user + system) of this process during the run, in seconds, when the platform
    /// reports it.
    pub cpu_seconds: Option<f64>,
    /// The run cut into segments of [`SEGMENTS`]-th of its records.
    pub segments: Vec<Segment>,
}

/// `sorted[q]` by nearest rank (0 for an empty slice).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rate(records: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        records as f64 / seconds
    } else {
        0.0
    }
}

/// The record count at which segment `k` (1-based) of a run of `total` records ends.
fn boundary(total: u64, k: u64) -> u64 {
    (total * k).div_ceil(SEGMENTS)
}

/// Tracks which segment boundary comes next; one batch or poll may pass several boundaries of
/// a small run, which then merge into one segment.
struct Boundaries {
    total: u64,
    next: u64,
}

impl Boundaries {
    fn new(total: u64) -> Self {
        Self { total, next: 1 }
    }

    /// True when `records` reached the next boundary; moves past every boundary it reached.
    fn passed(&mut self, records: u64) -> bool {
        if self.next > SEGMENTS || records < boundary(self.total, self.next) {
            return false;
        }
        while self.next <= SEGMENTS && records >= boundary(self.total, self.next) {
            self.next += 1;
        }
        true
    }
}

/// Statistics of a run from every batch it applied (in any order), `elapsed` being the whole
/// run's wall time.
pub fn from_batches(mut samples: Vec<BatchSample>, elapsed: Duration) -> RunStats {
    samples.sort_by_key(|s| s.finished);
    let records: u64 = samples.iter().map(|s| s.records).sum();
    let table_rows: u64 = samples.iter().map(|s| s.inserted).sum();
    let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    all.sort_unstable();
    let mut segments = Vec::new();
    let mut bounds = Boundaries::new(records);
    let (mut done, mut rows) = (0u64, 0u64);
    let (mut seg_start, mut seg_records) = (Duration::ZERO, 0u64);
    let mut seg_lat = Vec::new();
    for s in &samples {
        done += s.records;
        rows += s.inserted;
        seg_records += s.records;
        seg_lat.push(s.latency);
        if bounds.passed(done) {
            seg_lat.sort_unstable();
            let seconds = (s.finished - seg_start).as_secs_f64();
            segments.push(Segment {
                records: done,
                table_rows: rows,
                seconds,
                records_per_second: rate(seg_records, seconds),
                batch_p50_ms: ms(percentile(&seg_lat, 0.5)),
                batch_p99_ms: ms(percentile(&seg_lat, 0.99)),
            });
            seg_start = s.finished;
            seg_records = 0;
            seg_lat.clear();
        }
    }
    let seconds = elapsed.as_secs_f64();
    RunStats {
        total: Segment {
            records,
            table_rows,
            seconds,
            records_per_second: rate(records, seconds),
            batch_p50_ms: ms(percentile(&all, 0.5)),
            batch_p99_ms: ms(percentile(&all, 0.99)),
        },
        cpu_seconds: None,
        segments,
    }
}

/// Statistics of a run of `total` records from progress polled every so often (in order; the
/// first poll is the start, with the latencies already counted before the run).
pub fn from_polls(polls: &[Poll], total: u64) -> RunStats {
    let Some(first) = polls.first() else {
        return from_batches(Vec::new(), Duration::ZERO);
    };
    let last = polls.last().unwrap_or(first);
    let mut segments = Vec::new();
    let mut bounds = Boundaries::new(total);
    let mut start = first;
    for p in polls {
        if bounds.passed(p.records) {
            segments.push(between(start, p));
            start = p;
        }
    }
    RunStats {
        total: between(first, last),
        cpu_seconds: None,
        segments,
    }
}

/// The segment from poll `start` to poll `end`.
fn between(start: &Poll, end: &Poll) -> Segment {
    let seconds = end.at.saturating_sub(start.at).as_secs_f64();
    let lat = end.latencies.since(&start.latencies);
    Segment {
        records: end.records,
        table_rows: end.table_rows,
        seconds,
        records_per_second: rate(end.records.saturating_sub(start.records), seconds),
        batch_p50_ms: lat.quantile(0.5).unwrap_or(0.0) * 1000.0,
        batch_p99_ms: lat.quantile(0.99).unwrap_or(0.0) * 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn batches_are_cut_into_ten_segments_in_finishing_order() {
        // 20 batches of 100 records, one every 0.1 s; the second half twice as slow.
        let mut samples: Vec<BatchSample> = (0..20u32)
            .map(|i| {
                let slow = i >= 10;
                let t = if slow {
                    1.0 + f64::from(i - 9) * 0.2
                } else {
                    f64::from(i + 1) * 0.1
                };
                BatchSample {
                    finished: secs(t),
                    records: 100,
                    inserted: 90,
                    latency: Duration::from_millis(if slow { 20 } else { 10 }),
                }
            })
            .collect();
        samples.reverse();
        let run = from_batches(samples, secs(3.0));
        assert_eq!(run.total.records, 2000);
        assert_eq!(run.total.table_rows, 1800);
        assert_eq!(run.segments.len(), 10);
        let first = &run.segments[0];
        assert_eq!((first.records, first.table_rows), (200, 180));
        assert!((first.records_per_second - 1000.0).abs() < 1e-6);
        assert_eq!(first.batch_p50_ms, 10.0);
        let last = &run.segments[9];
        assert_eq!(last.records, 2000);
        assert!((last.records_per_second - 500.0).abs() < 1e-6);
        assert_eq!(last.batch_p99_ms, 20.0);
        assert!((run.total.records_per_second - 2000.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn batches_larger_than_a_segment_merge_segments() {
        let samples = (1..=3u32)
            .map(|i| BatchSample {
                finished: secs(f64::from(i)),
                records: 400,
                inserted: 400,
                latency: Duration::from_millis(5),
            })
            .collect();
        let run = from_batches(samples, secs(3.0));
        let ends: Vec<u64> = run.segments.iter().map(|s| s.records).collect();
        assert_eq!(ends, [400, 800, 1200]);
    }

    #[test]
    fn polls_give_segment_rates_and_histogram_percentiles() {
        let hist = |fast: f64, slow: f64| Histogram(vec![(0.01, fast), (0.1, fast + slow)]);
        let polls: Vec<Poll> = (0..=10u32)
            .map(|i| Poll {
                at: secs(f64::from(i)),
                records: u64::from(i) * 100,
                table_rows: u64::from(i) * 95,
                latencies: if i <= 5 {
                    hist(f64::from(i) + 7.0, 0.0)
                } else {
                    hist(12.0, f64::from(i - 5))
                },
            })
            .collect();
        let run = from_polls(&polls, 1000);
        assert_eq!(run.total.records, 1000);
        assert_eq!(run.total.table_rows, 950);
        assert_eq!(run.segments.len(), 10);
        assert!(run.segments.iter().all(|s| s.records_per_second == 100.0));
        assert_eq!(run.segments[0].batch_p99_ms, 10.0);
        assert_eq!(run.segments[9].batch_p50_ms, 100.0);
        assert_eq!(run.total.batch_p50_ms, 10.0);
        assert_eq!(run.total.batch_p99_ms, 100.0);
    }

    #[test]
    fn histogram_deltas_ignore_what_came_before() {
        let before = Histogram(vec![(1.0, 5.0), (2.0, 5.0)]);
        let after = Histogram(vec![(1.0, 5.0), (2.0, 9.0)]);
        let d = after.since(&before);
        assert_eq!(d.count(), 4.0);
        assert_eq!(d.quantile(0.5), Some(2.0));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
