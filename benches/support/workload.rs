//! The write workload shared by the store benchmarks: `n` records in batches, a given share of
//! them repeating an IP seen before, mostly online events, every IP with known geography.
//! Deterministic (fixed seed), so every mode and backend writes exactly the same rows.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use botpipe::enrich::Geo;
use botpipe::record::{Batch, BotnetType, LogType, NodeIp, Record};
use botpipe::store::EnrichedBatch;
use chrono::DateTime;
use rand::{Rng, SeedableRng};

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200;

/// Reads a positive integer from the environment.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(default)
}

fn geo_of(i: u32) -> Geo {
    let k = i % 31;
    let china = !k.is_multiple_of(3);
    Geo {
        continent: Some(if china { "亚洲" } else { "Europe" }.into()),
        country: Some(if china { "中国" } else { "Germany" }.into()),
        province: Some(format!("省份{k}").into()),
        city: Some(format!("城市{k}").into()),
        isp: Some(format!("ISP number {k}").into()),
        asn: Some(format!("AS{}", 4100 + k).into()),
        longitude: Some(100.0 + f64::from(k)),
        latitude: Some(20.0 + f64::from(k) / 4.0),
        is_china: china,
    }
}

/// The `i`-th distinct public IPv4 address (skipping private and reserved ranges).
fn nth_ip(i: u32, next: &mut u32) -> (NodeIp, u32) {
    loop {
        // Spread over the address space so the unique index sees realistic keys.
        let raw = next.wrapping_mul(2_654_435_761) | 0x0100_0000;
        *next += 1;
        if let Ok(ip) = NodeIp::from_ip(IpAddr::V4(Ipv4Addr::from(raw))) {
            return (ip, i);
        }
    }
}

/// `records` records of type `t` in batches of `batch_size`, `repeat_share` of them repeating
/// an IP seen earlier in the run.
pub fn batches(
    t: &str,
    records: usize,
    batch_size: usize,
    repeat_share: f64,
) -> Vec<EnrichedBatch> {
    let t = BotnetType::parse(t).expect("benchmark type");
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut seen: Vec<(NodeIp, u32)> = Vec::new();
    let mut next = 0u32;
    let mut out = Vec::with_capacity(records.div_ceil(batch_size));
    let mut clock = 0i64;
    for start in (0..records).step_by(batch_size) {
        let n = batch_size.min(records - start);
        let mut recs = Vec::with_capacity(n);
        let mut geo = Vec::with_capacity(n);
        for _ in 0..n {
            let (ip, k) = if !seen.is_empty() && rng.random_bool(repeat_share) {
                seen[rng.random_range(0..seen.len())]
            } else {
                let id = u32::try_from(seen.len()).unwrap_or(u32::MAX);
                let pick = nth_ip(id, &mut next);
                seen.push(pick);
                pick
            };
            clock += rng.random_range(0..3);
            let log_type = if rng.random_bool(0.9) {
                LogType::Online
            } else {
                LogType::Cleanup
            };
            recs.push(Record {
                ip,
                timestamp: DateTime::from_timestamp(T0 + clock, 0).expect("time"),
                botnet_type: t.clone(),
                log_type,
                seq_id: None,
            });
            geo.push(geo_of(k));
        }
        out.push(EnrichedBatch {
            batch: Batch::new("bench", recs, vec![]),
            geo,
        });
    }
    out
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
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Self {
            records_per_sec: records as f64 / total.as_secs_f64(),
            p50: pick(0.50),
            p99: pick(0.99),
        }
    }
}

/// The run with the median throughput.
pub fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.records_per_sec.total_cmp(&b.records_per_sec));
    runs[runs.len() / 2]
}

/// `12345.6` → `12,346`.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
