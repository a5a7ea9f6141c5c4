//! `botpipe status` (issue 16, "Live status"): it finds the running botpipe by the
//! configuration's `[http] listen` and reads the files only when none answers, saying which it
//! shows; what it does not know is `null` in `--json` (`-` in the table), never 0; the outcome
//! it shows is the `outcome` label of `botpipe_pulls_total`; `--watch` prints a snapshot a
//! second. Everything here runs on the embedded default (no services needed).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use botpipe::demo::Flavor;
use botpipe::queue::Queue;
use botpipe::store::Store;
use serde_json::Value;

use crate::helpers::bin::{run_botpipe, text, write_config};
use crate::helpers::collector::KillOnDrop;
use crate::helpers::prom::sample;
use crate::helpers::{
    endpoint, spawn_app_with, spawn_collector, test_settings, wait_until, wire, TestApp,
};

const WAIT: Duration = Duration::from_secs(60);

/// A configuration for `botpipe status` on `data_dir`, whose `[http] listen` is `listen`.
fn status_config(
    dir: &std::path::Path,
    data_dir: &std::path::Path,
    listen: SocketAddr,
    endpoints: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut toml = format!(
        "data_dir = {:?}\n[http]\nlisten = \"{listen}\"\n",
        data_dir.display().to_string()
    );
    for (name, url) in endpoints {
        toml.push_str(&format!(
            "[endpoints.{name}]\nurl = {url:?}\ntimezone = \"UTC\"\n"
        ));
    }
    write_config(dir, &toml)
}

async fn status_json(config: &std::path::Path, extra: &[&str]) -> Value {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = run_botpipe(Some(config), &args).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

async fn api_status(app: &TestApp) -> Value {
    reqwest::get(format!("http://{}/api/status", app.http.unwrap()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn endpoint_named<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no endpoint {name} in {status}"))
}

#[tokio::test]
async fn issue_16_status_finds_the_running_botpipe_and_falls_back_to_the_files() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    for i in 0..120 {
        tc.collector.push(wire(
            &format!("8.9.{}.{}", i / 100 + 1, i % 100 + 1),
            "2026-03-03T10:00:00",
            "mozi",
            "online",
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut settings = test_settings(&data);
    settings.endpoints = vec![endpoint("s16-east", &tc.url, Duration::from_millis(50), 50)];
    let app = spawn_app_with(tempfile::tempdir().unwrap(), settings).await;
    let addr = app.http.unwrap();
    // The operator's configuration: the same files, and where that botpipe listens.
    let config = status_config(dir.path(), &data, addr, &[("s16-east", &tc.url)]);
    wait_until(WAIT, "all pulled and stored", || async {
        tc.collector.unpulled() == 0
            && app.queue.depth().await.unwrap().total == 0
            && app.store.counts().await.unwrap().total_communications() == 120
    })
    .await;

    // No --url: the running botpipe answers, and the document says so.
    let live = status_json(&config, &[]).await;
    assert_eq!(live["source"], "live", "{live}");
    assert!(
        live["source_detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("http://{addr}"))),
        "{live}"
    );
    assert_eq!(live["version"], env!("CARGO_PKG_VERSION"));
    // The process answering is this test's (the app runs in it).
    assert_eq!(live["process"]["pid"], std::process::id());
    assert!(
        live["process"]["uptime_seconds"].as_f64().is_some(),
        "{live}"
    );
    assert_eq!(live["workers"]["configured"], 2, "{live}");
    assert!(live["workers"]["idle"].is_u64(), "{live}");
    assert_eq!(live["store"]["state"], "up", "{live}");
    assert!(live["geodata"]["mode"].is_string(), "{live}");
    let ep = endpoint_named(&live, "s16-east");
    assert_eq!(ep["cursor"], 120, "{ep}");
    assert_eq!(ep["lag"], 0, "{ep}");
    assert_eq!(ep["consecutive_failures"], 0, "{ep}");
    assert!(ep["failing_since"].is_null(), "{ep}");
    assert!(
        ep["last_outcome"] == "ok" || ep["last_outcome"] == "empty",
        "{ep}"
    );
    assert!(
        ep["records_per_second"].as_f64().is_some_and(|r| r > 0.0),
        "{ep}"
    );
    assert!(ep["drift_p99_seconds"].as_f64().is_some(), "{ep}");
    assert!(ep["last_pull_at"].is_string(), "{ep}");

    let out = run_botpipe(Some(&config), &["status"]).await;
    let (table, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let first = table.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("botpipe ")
            && first.contains(&format!("live: asked http://{addr} ([http] listen)")),
        "{table}"
    );
    assert!(table.contains("this process"), "{table}");

    app.stop().await;

    // Nothing answers any more: the files, saying why, with null for what only a running
    // botpipe knows.
    let files = status_json(&config, &[]).await;
    assert_eq!(files["source"], "files", "{files}");
    assert!(
        files["source_detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("no botpipe answered at http://{addr}"))),
        "{files}"
    );
    for field in ["process", "workers"] {
        assert!(files[field].is_null(), "{field}: {files}");
    }
    assert!(files["queue"]["change_per_second"].is_null(), "{files}");
    assert_eq!(files["queue"]["depth"], 0, "{files}");
    assert_eq!(files["store"]["state"], "up", "{files}");
    assert_eq!(files["communications"]["mozi"], 120, "{files}");
    let ep = endpoint_named(&files, "s16-east");
    assert_eq!(ep["cursor"], 120, "{ep}");
    for field in [
        "lag",
        "last_outcome",
        "last_pull_at",
        "consecutive_failures",
        "records_per_second",
        "drift_p99_seconds",
        "last_drift_seconds",
        "pulls",
        "records_pulled",
    ] {
        assert!(
            ep[field].is_null(),
            "{field} should be null, not made up: {ep}"
        );
    }
    let out = run_botpipe(Some(&config), &["status"]).await;
    let (table, _) = text(&out);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|l| l.contains("from the files: no botpipe answered at")),
        "{table}"
    );

    // --watch on a pipe: one snapshot a second, separated by a blank line, no screen control.
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .arg("--config")
            .arg(&config)
            .args(["status", "--watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    wait_until(WAIT, "two snapshots from status --watch", || {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        let headers = lines.iter().filter(|l| l.starts_with("botpipe ")).count();
        async move { headers >= 2 }
    })
    .await;
    drop(child);
    let second = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("botpipe "))
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    assert_eq!(lines[second - 1], "", "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:#?}");
}

#[tokio::test]
async fn issue_16_status_json_is_null_where_unknown_and_speaks_the_metrics_outcomes() {
    // A collector nobody listens for, and a legacy collector (no global_max_seq_id; its lag
    // comes from its cache statistics).
    let dead: SocketAddr = crate::helpers::free_addr();
    let dead_url = format!("http://{dead}/");
    let legacy = spawn_collector(Flavor::Legacy, None).await;
    for i in 0..30 {
        legacy.collector.push(wire(
            &format!("8.10.0.{}", i + 1),
            "2026-03-03T10:00:00",
            "mozi",
            "online",
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut settings = test_settings(&data);
    settings.endpoints = vec![
        endpoint("s16-dead", &dead_url, Duration::from_millis(100), 50),
        endpoint("s16-legacy", &legacy.url, Duration::from_millis(50), 20),
    ];
    let app = spawn_app_with(tempfile::tempdir().unwrap(), settings).await;
    wait_until(
        WAIT,
        "the legacy endpoint drained, the dead one failing",
        || async {
            let s = api_status(&app).await;
            legacy.collector.unpulled() == 0
                && endpoint_named(&s, "s16-legacy")["lag"] == 0
                && endpoint_named(&s, "s16-dead")["consecutive_failures"]
                    .as_u64()
                    .is_some_and(|n| n >= 2)
        },
    )
    .await;

    // Explicit --url: only that botpipe is asked.
    let config = status_config(dir.path(), &data, app.http.unwrap(), &[]);
    let url = format!("http://{}", app.http.unwrap());
    let status = status_json(&config, &["--url", &url]).await;
    assert_eq!(status["source"], "live", "{status}");

    let dead_ep = endpoint_named(&status, "s16-dead");
    // The collector never answered: its lag and cursor are unknown, not 0.
    assert!(dead_ep["lag"].is_null(), "{dead_ep}");
    assert!(dead_ep["cursor"].is_null(), "{dead_ep}");
    assert!(dead_ep["failing_since"].is_string(), "{dead_ep}");
    assert!(dead_ep["last_error"].is_string(), "{dead_ep}");
    // Measured: nothing pulled over the last minute.
    assert_eq!(dead_ep["records_per_second"], 0.0, "{dead_ep}");
    assert!(dead_ep["drift_p99_seconds"].as_f64().is_some(), "{dead_ep}");
    // The outcome is a value of the metric's `outcome` label, and that series counts it.
    let outcome = dead_ep["last_outcome"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        ["http_error", "timeout"].contains(&outcome.as_str()),
        "{dead_ep}"
    );
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sample(
            &metrics,
            "botpipe_pulls_total",
            &[("endpoint", "s16-dead"), ("outcome", &outcome)]
        )
        .is_some_and(|n| n >= 2.0),
        "botpipe_pulls_total{{endpoint=\"s16-dead\",outcome=\"{outcome}\"}} missing"
    );

    // A legacy collector's lag is known from its statistics, and exported.
    let legacy_ep = endpoint_named(&status, "s16-legacy");
    assert_eq!(legacy_ep["lag"], 0, "{legacy_ep}");
    assert_eq!(legacy_ep["records_pulled"], 30, "{legacy_ep}");
    assert_eq!(
        sample(
            &metrics,
            "botpipe_pull_lag_records",
            &[("endpoint", "s16-legacy")]
        ),
        Some(0.0)
    );
    // The dead endpoint has no lag series at all rather than a 0.
    assert_eq!(
        sample(
            &metrics,
            "botpipe_pull_lag_records",
            &[("endpoint", "s16-dead")]
        ),
        None
    );

    // The table: `-` for the unknown lag, the failures and since when.
    let out = run_botpipe(None, &["status", "--url", &url]).await;
    let (table, _) = text(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with("s16-dead"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&outcome) && row.contains(" since "), "{row}");
    assert!(table.contains("error s16-dead: "), "{table}");
    app.stop().await;
}
