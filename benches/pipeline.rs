//! End-to-end benchmark on the embedded default: the demo's collectors serve generated records
//! and the real pipeline pulls, hands off, enriches and stores them. Prints records/s end to end
//! and p50/p99 latency of each stage from botpipe's own histograms.
//!
//! `cargo bench --bench pipeline` (env `BOTPIPE_BENCH_RECORDS`, default 200000).

use std::collections::BTreeMap;
use std::time::Duration;

fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let target = total * q;
    buckets
        .iter()
        .find(|(_, c)| *c >= target)
        .map(|(le, _)| *le)
}

/// Cumulative buckets per histogram name (labels merged) from Prometheus text.
fn histograms(text: &str) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = name_labels.split_once('{') else {
            continue;
        };
        let Some(name) = name.strip_suffix("_bucket") else {
            continue;
        };
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        *out.entry(name.to_owned())
            .or_default()
            .entry(le.to_owned())
            .or_default() += v;
    }
    out.into_iter()
        .map(|(name, by_le)| {
            let mut v: Vec<(f64, f64)> = by_le
                .into_iter()
                .map(|(le, c)| {
                    (
                        if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::INFINITY)
                        },
                        c,
                    )
                })
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, v)
        })
        .collect()
}

fn main() {
    let records: u64 = std::env::var("BOTPIPE_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let args = botpipe::cli::DemoArgs {
        records,
        data_dir: Some(dir.path().to_path_buf()),
        interval: Duration::from_millis(250),
        batch_size: 5000,
        json: true,
    };
    let summary = rt
        .block_on(botpipe::demo::run_demo(&args))
        .expect("demo run");
    assert!(summary.matches_expected, "stored rows differ from expected");
    println!("pipeline (embedded SQLite store and queue, no geodata, 2 endpoints, batch 5000)");
    println!("  records                {:>10}", summary.records_pulled);
    println!(
        "  elapsed                {:>10.2} s",
        summary.elapsed_seconds
    );
    println!(
        "  end to end             {:>10.0} records/s",
        summary.records_per_second
    );
    let text = botpipe::telemetry::prometheus().render();
    for (name, buckets) in histograms(&text) {
        let (Some(p50), Some(p99)) = (quantile(&buckets, 0.5), quantile(&buckets, 0.99)) else {
            continue;
        };
        println!(
            "  {name:<40} p50 <= {:>8.1} ms   p99 <= {:>8.1} ms",
            p50 * 1e3,
            p99 * 1e3
        );
    }
}
