//! `botpipe bench store|pipeline` run as the real binary with `--json`: every number is there
//! and sane, and nothing is left behind.

use std::path::Path;

use serde_json::Value;

use crate::helpers::bin::{run_botpipe, text, write_config};
use crate::helpers::services::{self, Service};

const RECORDS: u64 = 5000;

/// Runs `botpipe bench <args>` with `--json` and returns the document.
async fn bench(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--records", "5000", "--batch-size", "500", "--json"]);
    let out = run_botpipe(Some(config), &all).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench {args:?} failed:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// A run's statistics: every record stored, a positive rate, ten segments ending at N.
fn assert_run(run: &Value) {
    assert_eq!(run["records"], RECORDS, "{run:#}");
    assert!(run["records_per_second"].as_f64().unwrap() > 0.0, "{run:#}");
    assert!(run["batch_p99_ms"].as_f64().unwrap() >= run["batch_p50_ms"].as_f64().unwrap());
    let segments = run["segments"].as_array().unwrap();
    assert!(!segments.is_empty() && segments.len() <= 10, "{run:#}");
    assert_eq!(segments.last().unwrap()["records"], RECORDS);
    for s in segments {
        for field in ["table_rows", "records_per_second", "batch_p50_ms"] {
            assert!(s[field].as_f64().is_some(), "{field} in {s:#}");
        }
    }
}

fn assert_store_report(r: &Value, backend: &str) {
    assert_eq!(r["backend"], backend);
    assert_eq!(r["workload"]["records"], RECORDS);
    assert_eq!(r["workload"]["batch_size"], 500);
    assert_run(&r["store"]);
    assert_run(&r["raw"]);
    assert!(r["ratio_to_raw"].as_f64().unwrap() > 0.0);
    assert_eq!(r["retries"], 0);
    assert_eq!(r["deadlocks"], 0);
    assert!(r["rows"]["communications"].as_u64().unwrap() > 0);
    assert!(r["rows"]["nodes"].as_u64().unwrap() > 0);
}

/// Nothing named like a scratch database or directory is left in `dir`.
fn assert_no_scratch_left(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().starts_with("botpipe_bench_"),
            "{name:?} left in {}",
            dir.display()
        );
    }
}

fn config_in(dir: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("data_dir = {:?}\n", dir.display().to_string()),
    )
}

#[tokio::test]
async fn bench_store_on_sqlite_reports_store_and_raw_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let url = format!("sqlite://{}/bench.sqlite", dir.path().display());
    let r = bench(&config, &["store", "--store", &url, "--geo", "off"]).await;
    assert_store_report(&r, "sqlite");
    assert_eq!(r["geo"], false);
    assert_no_scratch_left(dir.path());
}

#[tokio::test]
async fn bench_pipeline_on_sqlite_stores_everything_and_compares_with_bench_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let url = format!("sqlite://{}/bench.sqlite", dir.path().display());
    let r = bench(&config, &["pipeline", "--store", &url, "--workers", "2"]).await;
    assert_eq!(r["backend"], "sqlite");
    assert_eq!(r["queue"], "embedded");
    assert_eq!(r["workers"], 2);
    assert_run(&r["pipeline"]);
    assert_store_report(&r["store_baseline"], "sqlite");
    assert!(r["ratio_to_store"].as_f64().unwrap() > 0.0);
    // The pipeline wrote the same rows as `bench store` did.
    assert_eq!(r["rows"], r["store_baseline"]["rows"]);
    if cfg!(target_os = "linux") {
        assert!(r["pipeline"]["cpu_seconds"].as_f64().unwrap() > 0.0);
        let rss = &r["rss"]["peak"];
        assert!(rss["anon_mib"].as_f64().unwrap() > 0.0);
        assert!(rss["file_mib"].as_f64().unwrap() > 0.0);
    }
    assert_no_scratch_left(dir.path());
}

#[tokio::test]
async fn bench_store_on_postgres_uses_a_scratch_database() {
    if !services::available([Service::Postgres]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let admin = Service::Postgres.admin_url();
    let r = bench(&config, &["store", "--store", &admin, "--workers", "2"]).await;
    assert_store_report(&r, "postgres");
    assert_eq!(r["workers"], 2);
}
