//! What a benchmark reads off its own process: counters and histograms from the Prometheus
//! recorder's text (the same numbers `/metrics` serves), CPU time from `/proc/self/stat` and
//! resident memory from `/proc/self/status`, split into anonymous memory (heap, stacks) and
//! file-backed pages (the binary, and the geodata files botpipe maps).
//!
//! The `/proc` readers return `None` off Linux; a report then leaves those numbers out.

use serde::Serialize;

use super::stats::Histogram;
use crate::telemetry::metrics::{STORE_DEADLOCKS_TOTAL, STORE_RETRIES_TOTAL};

/// Clock ticks per second of the CPU times in `/proc/<pid>/stat`: `USER_HZ`, which Linux fixes
/// at 100 for user space whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// Sum of every series of counter `name` whose labels contain all of `labels` (each written
/// `key="value"`), in Prometheus text exposition `text`.
pub fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').map_or((series, ""), |(n, r)| (n, r));
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Retries and deadlocks the stores of this process counted (every backend).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreFaults {
    /// Transient failures retried inside a batch (`botpipe_store_retries_total`).
    pub retries: u64,
    /// Deadlocks the database reported (`botpipe_store_deadlocks_total`).
    pub deadlocks: u64,
}

impl StoreFaults {
    /// The totals in Prometheus text `text`.
    pub fn read(text: &str) -> Self {
        Self {
            retries: counter(text, STORE_RETRIES_TOTAL, &[]) as u64,
            deadlocks: counter(text, STORE_DEADLOCKS_TOTAL, &[]) as u64,
        }
    }

    /// What was counted after `earlier` was read.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            retries: self.retries.saturating_sub(earlier.retries),
            deadlocks: self.deadlocks.saturating_sub(earlier.deadlocks),
        }
    }
}

/// Histogram `name` in `text`, every label set merged into one.
pub fn histogram(text: &str, name: &str) -> Histogram {
    let bucket = format!("{name}_bucket{{");
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&bucket) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let n: f64 = value.parse().unwrap_or(0.0);
        match by_le.iter_mut().find(|(l, _)| *l == le) {
            Some((_, c)) => *c += n,
            None => by_le.push((le, n)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    Histogram(by_le)
}

/// User plus system CPU time this process used so far, in seconds.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` are fixed.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Resident memory of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rss {
    /// Anonymous pages (heap, stacks), MiB.
    pub anon_mib: f64,
    /// File-backed pages (the binary, mapped geodata files), MiB.
    pub file_mib: f64,
}

impl Rss {
    /// The current resident memory.
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Self::parse(&status)
    }

    fn parse(status: &str) -> Option<Self> {
        let kib = |key: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(Self {
            anon_mib: kib("RssAnon:")? / 1024.0,
            file_mib: kib("RssFile:")? / 1024.0,
        })
    }

    /// The larger of each part of `self` and `other`.
    pub fn max(self, other: Self) -> Self {
        Self {
            anon_mib: self.anon_mib.max(other.anon_mib),
            file_mib: self.file_mib.max(other.file_mib),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE botpipe_store_retries_total counter
botpipe_store_retries_total{backend=\"postgres\"} 3
botpipe_store_retries_total{backend=\"mysql\"} 2
botpipe_records_total{stage=\"store\",outcome=\"inserted\"} 90
botpipe_records_total{stage=\"store\",outcome=\"duplicate\"} 10
botpipe_records_total{stage=\"pull\",outcome=\"ok\"} 100
botpipe_plain_total 7
botpipe_store_batch_seconds_bucket{le=\"0.5\"} 4
botpipe_store_batch_seconds_bucket{le=\"+Inf\"} 6
botpipe_store_batch_seconds_bucket{le=\"0.1\"} 1
botpipe_store_batch_seconds_sum 1.5
";

    #[test]
    fn counters_sum_matching_series() {
        assert_eq!(counter(TEXT, "botpipe_store_retries_total", &[]), 5.0);
        assert_eq!(
            counter(TEXT, "botpipe_records_total", &["stage=\"store\""]),
            100.0
        );
        assert_eq!(
            counter(
                TEXT,
                "botpipe_records_total",
                &["stage=\"store\"", "outcome=\"inserted\""]
            ),
            90.0
        );
        assert_eq!(counter(TEXT, "botpipe_plain_total", &[]), 7.0);
        assert_eq!(counter(TEXT, "botpipe_missing_total", &[]), 0.0);
    }

    #[test]
    fn histogram_buckets_come_back_sorted() {
        let h = histogram(TEXT, "botpipe_store_batch_seconds");
        assert_eq!(h.0, vec![(0.1, 1.0), (0.5, 4.0), (f64::INFINITY, 6.0)]);
    }

    #[test]
    fn rss_parts_come_from_status() {
        let status = "Name:\tbotpipe\nRssAnon:\t  204800 kB\nRssFile:\t   10240 kB\n";
        let rss = Rss::parse(status).unwrap();
        assert_eq!(rss.anon_mib, 200.0);
        assert_eq!(rss.file_mib, 10.0);
        if cfg!(target_os = "linux") {
            assert!(Rss::now().is_some());
            assert!(cpu_seconds().is_some());
        }
    }
}
