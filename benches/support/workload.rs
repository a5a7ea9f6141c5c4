//! The write workload shared by the store benchmarks: `botpipe bench`'s generator
//! ([`botpipe::bench::workload`]) for one botnet type, 10% cleanup events, with made-up
//! geography on every IP. Deterministic (fixed seed), so every mode and backend writes exactly
//! the same rows. Plus the small helpers the benchmarks print with.

use std::time::Duration;

use botpipe::bench::stats::percentile;
use botpipe::bench::workload::{synthetic_geo, Workload, WorkloadSpec};
use botpipe::record::BotnetType;
use botpipe::store::EnrichedBatch;

pub use botpipe::bench::report::thousands;

/// Reads a positive integer from the environment.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(default)
}

/// `records` records of type `t` in batches of `batch_size`, `repeat_share` of them repeating
/// an IP seen earlier in the run.
pub fn batches(
    t: &str,
    records: usize,
    batch_size: usize,
    repeat_share: f64,
) -> Vec<EnrichedBatch> {
    Workload::generate(WorkloadSpec {
        records: records as u64,
        batch_size: u32::try_from(batch_size).expect("batch size"),
        distinct_ips: None,
        repeat_ratio: repeat_share,
        cleanup_ratio: 0.1,
        types: vec![BotnetType::parse(t).expect("benchmark type")],
        seed: 42,
    })
    .enrich(|r| synthetic_geo(r.ip))
}

/// Records/s and batch latency percentiles of one run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub records_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Run {
    /// Summarises per-batch latencies of a run that wrote `records` in `total`.
    pub fn new(records: usize, total: Duration, mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self {
            records_per_sec: records as f64 / total.as_secs_f64(),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
        }
    }
}

/// The run with the median throughput.
pub fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.records_per_sec.total_cmp(&b.records_per_sec));
    runs[runs.len() / 2]
}
