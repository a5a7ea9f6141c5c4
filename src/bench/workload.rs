//! The benchmark workload: `records` valid records in batches of `batch_size`, a share of them
//! repeating an IP seen before (so node upserts hit existing rows), a share of cleanup events,
//! spread over the given botnet types. Every IP is a distinct public IPv4 address (private and
//! reserved ranges are skipped, as [`NodeIp`] would reject them), and the whole workload is a
//! function of its [`WorkloadSpec`]: the same seed gives the same records, so `bench store`,
//! its raw loop, `bench pipeline` and the `benches/` all write exactly the same rows.
//!
//! Geography is attached separately ([`Workload::enrich`]): from the installed geodata, unknown,
//! or [`synthetic_geo`] for benches that must write geography columns without geodata files.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::enrich::Geo;
use crate::record::{Batch, BotnetType, LogType, NodeIp, Record};
use crate::store::EnrichedBatch;

/// First event time of every workload: 2024-01-01T00:00:00Z (whole seconds, so the wire form
/// round-trips exactly).
const T0: i64 = 1_704_067_200;
/// Source name the workload's batches carry.
pub const BENCH_SOURCE: &str = "bench";
/// Timestamp format of [`wire_json`]: naive, read in the endpoint's zone (UTC for the bench).
const WIRE_TIME: &str = "%Y-%m-%dT%H:%M:%S";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadSpec {
    /// Records in total.
    pub records: u64,
    /// Records per batch (the last batch may be shorter).
    pub batch_size: u32,
    /// At most this many distinct IPs; once reached, every record repeats one. `None`: a new
    /// IP for every record that does not repeat.
    pub distinct_ips: Option<u64>,
    /// Share of records (0..=1) that repeat an IP seen earlier in the run.
    pub repeat_ratio: f64,
    /// Share of records (0..=1) that are cleanup events; the rest are online.
    pub cleanup_ratio: f64,
    /// Botnet types, picked uniformly per record.
    #[serde(serialize_with = "type_names")]
    pub types: Vec<BotnetType>,
    /// Seed of the generator.
    pub seed: u64,
}

fn type_names<S: serde::Serializer>(types: &[BotnetType], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(types.iter().map(BotnetType::as_str))
}

/// A generated workload: records in batches.
#[derive(Debug, Clone)]
pub struct Workload {
    spec: WorkloadSpec,
    batches: Vec<Vec<Record>>,
    distinct_ips: u64,
}

impl Workload {
    /// Generates the records `spec` describes. With no types, generates nothing.
    pub fn generate(spec: WorkloadSpec) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let batch_size = u64::from(spec.batch_size.max(1));
        let mut seen: Vec<NodeIp> = Vec::new();
        let mut next = 0u32;
        let mut clock = 0i64;
        let mut batches = Vec::with_capacity(spec.records.div_ceil(batch_size) as usize);
        let mut current = Vec::with_capacity(batch_size as usize);
        let cap = spec.distinct_ips.unwrap_or(u64::MAX).max(1);
        let repeat = spec.repeat_ratio.clamp(0.0, 1.0);
        let cleanup = spec.cleanup_ratio.clamp(0.0, 1.0);
        let total = if spec.types.is_empty() {
            0
        } else {
            spec.records
        };
        for _ in 0..total {
            let exhausted = seen.len() as u64 >= cap;
            let ip = if !seen.is_empty() && (exhausted || rng.random_bool(repeat)) {
                seen[rng.random_range(0..seen.len())]
            } else {
                let ip = nth_public_ip(&mut next);
                seen.push(ip);
                ip
            };
            clock += rng.random_range(0..3);
            let log_type = if rng.random_bool(cleanup) {
                LogType::Cleanup
            } else {
                LogType::Online
            };
            let botnet_type = spec.types[rng.random_range(0..spec.types.len())].clone();
            current.push(Record {
                ip,
                timestamp: DateTime::from_timestamp(T0 + clock, 0).unwrap_or_default(),
                botnet_type,
                log_type,
                seq_id: None,
            });
            if current.len() as u64 == batch_size {
                batches.push(std::mem::replace(
                    &mut current,
                    Vec::with_capacity(batch_size as usize),
                ));
            }
        }
        if !current.is_empty() {
            batches.push(current);
        }
        Self {
            spec,
            batches,
            distinct_ips: seen.len() as u64,
        }
    }

    /// What was generated.
    pub fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    /// The records, batch by batch.
    pub fn batches(&self) -> &[Vec<Record>] {
        &self.batches
    }

    /// Every record in order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.batches.iter().flatten()
    }

    /// Records generated.
    pub fn len(&self) -> u64 {
        self.batches.iter().map(|b| b.len() as u64).sum()
    }

    /// True when nothing was generated.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Distinct IPs among the records.
    pub fn distinct_ips(&self) -> u64 {
        self.distinct_ips
    }

    /// The batches as a worker would hand them to the store, with `geo(record)` per record.
    pub fn enrich(&self, mut geo: impl FnMut(&Record) -> Geo) -> Vec<EnrichedBatch> {
        self.batches
            .iter()
            .map(|records| EnrichedBatch {
                geo: records.iter().map(&mut geo).collect(),
                batch: Batch::new(BENCH_SOURCE, records.clone(), Vec::new()),
            })
            .collect()
    }
}

/// The next public IPv4 address after `*next` in a scrambled order (multiplication by an odd
/// constant is a bijection on `u32`, so no address comes twice), spread over the address space
/// so the unique indexes see realistic keys.
fn nth_public_ip(next: &mut u32) -> NodeIp {
    loop {
        let raw = next.wrapping_mul(2_654_435_761);
        *next = next.wrapping_add(1);
        if let Ok(ip) = NodeIp::from_ip(IpAddr::V4(Ipv4Addr::from(raw))) {
            return ip;
        }
    }
}

/// A record in the pull API's wire form, as a collector serves it; its time is naive UTC.
pub fn wire_json(r: &Record) -> serde_json::Value {
    serde_json::json!({
        "ip": r.ip.to_string(),
        "timestamp": r.timestamp.format(WIRE_TIME).to_string(),
        "botnet_type": r.botnet_type.as_str(),
        "log_type": r.log_type.as_str(),
    })
}

/// Made-up but stable geography for an IP (31 places, two thirds in China), for benchmarks that
/// must write the geography columns on a machine without geodata files.
pub fn synthetic_geo(ip: NodeIp) -> Geo {
    let k = match ip.addr() {
        IpAddr::V4(v4) => u32::from(v4) % 31,
        IpAddr::V6(v6) => (u128::from(v6) % 31) as u32,
    };
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

/// When the workload's clock starts, for tests and reports.
pub fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(T0, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(records: u64) -> WorkloadSpec {
        WorkloadSpec {
            records,
            batch_size: 1000,
            distinct_ips: None,
            repeat_ratio: 0.3,
            cleanup_ratio: 0.1,
            types: vec![
                BotnetType::parse("mozi").unwrap(),
                BotnetType::parse("ramnit").unwrap(),
            ],
            seed: 42,
        }
    }

    #[test]
    fn generates_the_records_asked_for_in_batches() {
        let w = Workload::generate(spec(10_500));
        assert_eq!(w.len(), 10_500);
        assert_eq!(w.batches().len(), 11);
        assert!(w.batches()[..10].iter().all(|b| b.len() == 1000));
        assert_eq!(w.batches()[10].len(), 500);
    }

    #[test]
    fn ratios_are_close_to_the_spec() {
        let w = Workload::generate(spec(50_000));
        let distinct: HashSet<NodeIp> = w.records().map(|r| r.ip).collect();
        assert_eq!(distinct.len() as u64, w.distinct_ips());
        let repeated = 1.0 - distinct.len() as f64 / 50_000.0;
        assert!((repeated - 0.3).abs() < 0.02, "repeated share {repeated}");
        let cleanups = w
            .records()
            .filter(|r| r.log_type == LogType::Cleanup)
            .count() as f64
            / 50_000.0;
        assert!((cleanups - 0.1).abs() < 0.02, "cleanup share {cleanups}");
        let mozi = w
            .records()
            .filter(|r| r.botnet_type.as_str() == "mozi")
            .count() as f64
            / 50_000.0;
        assert!((mozi - 0.5).abs() < 0.02, "mozi share {mozi}");
    }

    #[test]
    fn distinct_ips_cap_the_pool() {
        let w = Workload::generate(WorkloadSpec {
            distinct_ips: Some(100),
            ..spec(5_000)
        });
        let distinct: HashSet<NodeIp> = w.records().map(|r| r.ip).collect();
        assert_eq!(distinct.len(), 100);
        assert_eq!(w.distinct_ips(), 100);
    }

    #[test]
    fn every_ip_is_public_and_survives_the_wire() {
        let w = Workload::generate(spec(20_000));
        for r in w.records() {
            let wire = wire_json(r);
            let ip = wire["ip"].as_str().unwrap();
            assert_eq!(NodeIp::parse(ip).unwrap(), r.ip, "{ip}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_records() {
        let a = Workload::generate(spec(3_000));
        let b = Workload::generate(spec(3_000));
        assert!(a.records().eq(b.records()));
        let c = Workload::generate(WorkloadSpec {
            seed: 7,
            ..spec(3_000)
        });
        assert!(!a.records().eq(c.records()));
    }

    #[test]
    fn enrich_attaches_one_geo_per_record() {
        let w = Workload::generate(spec(2_500));
        let batches = w.enrich(|r| synthetic_geo(r.ip));
        assert_eq!(batches.len(), 3);
        for b in &batches {
            assert_eq!(b.geo.len(), b.batch.records.len());
            assert!(b.geo.iter().all(Geo::is_known));
        }
        assert!(w.records().all(|r| r.timestamp >= start_time()));
    }
}
