//! End-to-end benchmark on the embedded default: the demo's collectors serve generated records
//! and the real pipeline pulls, hands off, enriches and stores them. Prints records/s end to end
//! and p50/p99 latency of each stage from botpipe's own histograms.
//!
//! `cargo bench --bench pipeline` (env `BOTPIPE_BENCH_RECORDS`, default 200000).

use std::time::Duration;

use botpipe::bench::probe::histogram;

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
        keep: false,
    };
    // Geodata as `botpipe run` would find it without a configuration (./botpipe-data/geo).
    let configured = botpipe::config::Settings::embedded_default();
    let summary = rt
        .block_on(botpipe::demo::run_demo(&args, &configured))
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
    for name in botpipe::telemetry::metrics::ALL {
        let buckets = histogram(&text, name);
        let (Some(p50), Some(p99)) = (buckets.quantile(0.5), buckets.quantile(0.99)) else {
            continue;
        };
        println!(
            "  {name:<40} p50 <= {:>8.1} ms   p99 <= {:>8.1} ms",
            p50 * 1e3,
            p99 * 1e3
        );
    }
}
