//! `botpipe collector` end to end through its pull API: legacy wire compatibility, the
//! extensions, auth and 400s, tailing (rotation, truncation, partial lines, restarts), the
//! reports table, dedup, IP filtering, backpressure, metrics, and the real binary under
//! `kill -9` and SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::collector::{
    append, csv_line, events, settings, Api, CollectorProcess, TestCollector, KEY,
};
use crate::helpers::wait_until;

const JOIN_SOURCE: &str = r#"
[[sources]]
name = "online"
kind = "regex"
botnet_type = "utg_q_008"
path = "{dir}/online.log"
regex = '\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\] \[JOIN\s*\].*?([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})'
"#;

fn csv_source(name: &str, path: &str) -> String {
    format!(
        "[[sources]]\nname = \"{name}\"\nkind = \"csv\"\nbotnet_type = \"mozi\"\npath = \"{path}\"\n"
    )
}

fn with_dir(body: &str, dir: &Path) -> String {
    body.replace("{dir}", &dir.display().to_string())
}

/// Pulls with `since_seq` and confirms with `up_to_seq` until empty; returns every record.
async fn drain(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let (status, body) = api
            .get(&format!("/api/pull?limit=500&since_seq={cursor}"))
            .await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().cloned().unwrap_or_default();
        if data.is_empty() {
            return out;
        }
        let max = body["max_seq_id"].as_i64().unwrap();
        let (status, _) = api
            .confirm(json!({"count": data.len(), "up_to_seq": max}))
            .await;
        assert_eq!(status, 200);
        cursor = max;
        out.extend(data);
    }
}

fn seqs(records: &[Value]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r["seq_id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn pull_serves_every_legacy_field_and_the_extensions() {
    let dir = tempfile::tempdir().unwrap();
    append(
        &dir.path().join("online.log"),
        "[2026-03-03 16:36:49] [JOIN ] #bot   vn409   14.19.132.125\n\
         [2026-03-03 16:37:02] [EXIST] #bot   vn409   14.19.132.125\n\
         [2026-03-03 17:01:00] [JOIN ] #bot   vn410   014.019.132.126\n",
    );
    let c = TestCollector::start(settings(dir.path(), &with_dir(JOIN_SOURCE, dir.path()))).await;
    c.api.wait_for_unpulled(2).await;

    let (status, body) = c.api.get("/api/pull?limit=10").await;
    assert_eq!(status, 200);
    let keys: BTreeSet<_> = body.as_object().unwrap().keys().cloned().collect();
    let want: BTreeSet<String> = [
        "success",
        "count",
        "data",
        "records",
        "max_seq_id",
        "global_max_seq_id",
        "stats",
        "epoch",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(keys, want);
    assert_eq!(body["success"], true);
    assert_eq!(body["count"], 2);
    assert_eq!(body["data"], body["records"], "legacy copy of data");
    assert_eq!(body["max_seq_id"], 2);
    assert_eq!(body["global_max_seq_id"], 2);
    assert!(!body["epoch"].as_str().unwrap().is_empty());
    assert_eq!(
        body["stats"],
        json!({"cached_records": 2, "pulled_records": 0, "total_generated": 2,
               "total_pulled": 0, "cache_full": false})
    );
    assert_eq!(
        body["data"][0],
        json!({"ip":"14.19.132.125","timestamp":"2026-03-03T16:36:49","date":"2026-03-03",
               "log_hour":"2026-03-03_16","botnet_type":"utg_q_008","log_type":"online",
               "seq_id":1,"_cache_id":1,"_seq_id":1})
    );
    assert_eq!(
        body["data"][1]["ip"], "14.19.132.126",
        "leading zeros normalised"
    );
    assert_eq!(body["data"][1]["log_hour"], "2026-03-03_17");

    let (status, alias) = c.api.get("/pull?count=10").await;
    assert_eq!(status, 200);
    assert_eq!(alias["data"], body["data"]);

    for path in ["/health", "/api/health"] {
        let (status, health) = c.api.get(path).await;
        assert_eq!(status, 200);
        assert_eq!(health, json!({"status": "ok", "service": "c2-data-server"}));
    }
    let stats = c.api.stats().await;
    assert_eq!(stats["epoch"], body["epoch"]);
    assert_eq!(stats["cached_records"], 2);
    let (status, _) = c.api.get("/stats").await;
    assert_eq!(status, 200);
    c.stop().await;
}

#[tokio::test]
async fn legacy_puller_with_count_only_confirms_drains_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gen.log");
    let mut want = Vec::new();
    for i in 0..25 {
        let (line, ip, ts) = csv_line(i);
        append(&log, &line);
        want.push((ip, ts));
    }
    let body = csv_source("gen", &log.display().to_string());
    let c = TestCollector::start(settings(dir.path(), &body)).await;
    c.api.wait_for_unpulled(25).await;

    // The legacy puller: pull without since_seq, confirm positionally with count only.
    let mut got = Vec::new();
    loop {
        let (status, body) = c.api.get("/pull?count=10").await;
        assert_eq!(status, 200);
        let data = body["data"].as_array().cloned().unwrap();
        if data.is_empty() {
            break;
        }
        let (status, resp) = c
            .api
            .send(
                c.api
                    .raw(Method::POST, "/confirm")
                    .header("X-API-Key", KEY)
                    .json(&json!({"count": data.len()})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(resp["success"], true);
        assert_eq!(resp["confirmed"], data.len());
        got.extend(data);
    }
    assert_eq!(events(&got), want);
    let s = seqs(&got);
    assert!(s.windows(2).all(|w| w[0] < w[1]));
    let stats = c.api.stats().await;
    assert_eq!(stats["cached_records"], 0);
    assert_eq!(stats["pulled_records"], 25);
    assert_eq!(stats["total_pulled"], 25);
    c.stop().await;
}

#[tokio::test]
async fn up_to_seq_confirms_are_idempotent_and_confirm_true_marks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gen.log");
    for i in 0..10 {
        append(&log, &csv_line(i).0);
    }
    let c = TestCollector::start(settings(
        dir.path(),
        &csv_source("gen", &log.display().to_string()),
    ))
    .await;
    c.api.wait_for_unpulled(10).await;

    let (_, first) = c.api.get("/api/pull?limit=4&confirm=false").await;
    assert_eq!(seqs(first["data"].as_array().unwrap()), [1, 2, 3, 4]);
    let (_, resp) = c.api.confirm(json!({"count": 4, "up_to_seq": 4})).await;
    assert_eq!(resp["confirmed"], 4);
    let (status, resp) = c.api.confirm(json!({"count": 4, "up_to_seq": 4})).await;
    assert_eq!((status, &resp["confirmed"]), (200, &json!(0)), "idempotent");

    let (_, next) = c
        .api
        .get("/api/pull?since_seq=4&limit=3&confirm=true")
        .await;
    assert_eq!(seqs(next["data"].as_array().unwrap()), [5, 6, 7]);
    let (_, rest) = c.api.get("/api/pull?limit=100").await;
    assert_eq!(seqs(rest["data"].as_array().unwrap()), [8, 9, 10]);
    assert_eq!(rest["stats"]["pulled_records"], 7);
    assert_eq!(rest["global_max_seq_id"], 10);

    // since_ts: string comparison on the timestamp.
    let ts = rest["data"][1]["timestamp"].as_str().unwrap().to_owned();
    let (_, since) = c.api.get(&format!("/api/pull?since_ts={ts}")).await;
    assert_eq!(seqs(since["data"].as_array().unwrap()), [9, 10]);
    c.stop().await;
}

#[tokio::test]
async fn bad_parameters_get_400_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start(settings(
        dir.path(),
        &csv_source("gen", &dir.path().join("none.log").display().to_string()),
    ))
    .await;
    for q in [
        "limit=abc",
        "limit=0",
        "count=-5",
        "since_seq=-1",
        "since_seq=x",
        "confirm=maybe",
    ] {
        let (status, body) = c.api.get(&format!("/api/pull?{q}")).await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(body["success"], false, "{q}");
        assert!(body["error"].as_str().is_some(), "{q}");
    }
    let (status, body) = c.api.get("/api/pull?limit=999999").await;
    assert_eq!((status, &body["success"]), (200, &json!(true)), "clamped");

    for bad in [
        json!("nope"),
        json!({}),
        json!({"count": -2}),
        json!({"count": 1, "up_to_seq": -1}),
    ] {
        let (status, body) = c.api.confirm(bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["success"], false);
    }
    let (status, _) = c
        .api
        .send(
            c.api
                .raw(Method::POST, "/api/confirm")
                .header("X-API-Key", KEY)
                .body("not json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    c.stop().await;
}

#[tokio::test]
async fn auth_takes_x_api_key_or_bearer_and_stats_needs_the_key_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let body = csv_source("gen", &dir.path().join("none.log").display().to_string());
    let c = TestCollector::start(settings(dir.path(), &body)).await;
    let api = &c.api;
    let status = |req: reqwest::RequestBuilder| async move { api.send(req).await.unwrap() };

    let (s, b) = status(api.raw(Method::GET, "/api/pull")).await;
    assert_eq!((s, b), (401, json!({"error": "Unauthorized"})));
    let (s, _) = status(
        api.raw(Method::GET, "/api/pull")
            .header("X-API-Key", "wrong"),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = status(api.raw(Method::GET, "/api/pull").bearer_auth(KEY)).await;
    assert_eq!(s, 200);
    // With a Bearer header only that header counts.
    let (s, _) = status(
        api.raw(Method::GET, "/api/pull")
            .bearer_auth("wrong")
            .header("X-API-Key", KEY),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = status(
        api.raw(Method::GET, "/api/pull")
            .header("Authorization", "Basic Zm9vOmJhcg==")
            .header("X-API-Key", KEY),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = status(
        api.raw(Method::POST, "/api/confirm")
            .json(&json!({"count": 1})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = status(api.raw(Method::GET, "/api/stats")).await;
    assert_eq!(s, 401, "stats needs the key by default");
    let (s, _) = status(api.raw(Method::GET, "/health")).await;
    assert_eq!(s, 200);
    let (s, _) = status(api.raw(Method::GET, "/metrics")).await;
    assert_eq!(s, 200);
    c.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let open = format!(
        "stats_require_key = false\nhealth_require_key = true\n{}",
        csv_source("gen", &dir.path().join("none.log").display().to_string())
    );
    let c = TestCollector::start(settings(dir.path(), &open)).await;
    let (s, _) = c
        .api
        .send(c.api.raw(Method::GET, "/api/stats"))
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (s, _) = c.api.send(c.api.raw(Method::GET, "/health")).await.unwrap();
    assert_eq!(s, 401);
    c.stop().await;
}

#[tokio::test]
async fn tailing_survives_partial_lines_rotation_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("online.log");
    let rotated = dir.path().join("online.log.1");
    let c = TestCollector::start(settings(
        dir.path(),
        &csv_source("online", &log.display().to_string()),
    ))
    .await;
    let line = |i| csv_line(i).0;
    let event = |i| (csv_line(i).1, csv_line(i).2);
    let mut written = Vec::new();

    // Three lines and half of a fourth.
    let l3 = line(3);
    let (head, tail) = l3.split_at(14);
    append(&log, &format!("{}{}{}{head}", line(0), line(1), line(2)));
    written.extend((0..3).map(event));
    assert_eq!(c.api.wait_for_unpulled(3).await.len(), 3);
    // The partial line was seen by that read and not consumed.
    assert_eq!(c.api.peek_all().await.len(), 3);
    append(&log, tail);
    written.push(event(3));
    c.api.wait_for_unpulled(4).await;

    // Rotation: a line, rename, a new file under the old name.
    append(&log, &line(4));
    std::fs::rename(&log, &rotated).unwrap();
    append(&log, &line(5));
    written.extend((4..6).map(event));
    c.api.wait_for_unpulled(6).await;
    // The writer still holds the renamed file for a moment.
    append(&rotated, &line(6));
    append(&log, &line(7));
    written.extend((6..8).map(event));
    c.api.wait_for_unpulled(8).await;

    // copytruncate: the live file is cut to zero and written again.
    std::fs::write(&log, line(8)).unwrap();
    written.push(event(8));
    let all = c.api.wait_for_unpulled(9).await;
    assert_eq!(all.len(), 9);
    assert_eq!(events(&all), written);
    let s = seqs(&all);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");

    // A restart in the middle: stop, write, start again on the same cache.
    c.stop().await;
    append(&log, &line(9));
    append(&log, &line(10));
    let c = TestCollector::start(settings(
        dir.path(),
        &csv_source("online", &log.display().to_string()),
    ))
    .await;
    written.extend((9..11).map(event));
    let all = c.api.wait_for_unpulled(11).await;
    assert_eq!(events(&all), written, "nothing lost or read twice");
    c.stop().await;
}

#[tokio::test]
async fn a_growing_reports_table_yields_success_rows_as_cleanup_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reports.db");
    let body = format!(
        "[[sources]]\nname = \"cleanup\"\nkind = \"sqlite\"\nbotnet_type = \"utg_q_008\"\ndatabase = \"{}\"\n",
        db.display()
    );
    let c = TestCollector::start(settings(dir.path(), &body)).await;
    // The database appears after the collector started.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE reports(id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT,
         client_ip TEXT, timestamp DATETIME, status TEXT)",
    )
    .unwrap();
    let insert = |ip: &str, ts: &str, status: &str| {
        conn.execute(
            "INSERT INTO reports(device_id, client_ip, timestamp, status) VALUES ('d', ?1, ?2, ?3)",
            [ip, ts, status],
        )
        .unwrap();
    };
    insert("14.19.132.125", "2026-03-03T16:38:34", "SUCCESS");
    insert("14.19.132.126", "2026-03-03T16:38:35", "FAILED");
    c.api.wait_for_unpulled(1).await;
    // Rows keep arriving while the collector runs.
    for i in 0..20 {
        insert(
            &format!("45.1.2.{}", i + 1),
            &format!("2026-03-03T16:40:{i:02}"),
            if i % 4 == 0 { "FAILED" } else { "SUCCESS" },
        );
    }
    insert("192.168.1.9", "2026-03-03T16:41:00", "SUCCESS");
    let all = c.api.wait_for_unpulled(16).await;
    assert_eq!(all.len(), 16);
    assert!(all
        .iter()
        .all(|r| r["log_type"] == "cleanup" && r["botnet_type"] == "utg_q_008"));
    assert_eq!(all[0]["timestamp"], "2026-03-03T16:38:34");
    assert!(!events(&all).iter().any(|(ip, _)| ip == "14.19.132.126"));
    c.stop().await;
}

#[tokio::test]
async fn duplicate_lines_are_served_once_even_across_files_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2, l3) = (csv_line(1).0, csv_line(2).0, csv_line(3).0);
    append(&dir.path().join("a.log"), &format!("{l1}{l1}{l2}"));
    append(&dir.path().join("b.log"), &format!("{l1}{l2}{l3}"));
    let body = csv_source("dups", &dir.path().join("*.log").display().to_string());
    let c = TestCollector::start(settings(dir.path(), &body)).await;
    wait_until(Duration::from_secs(10), "both files read", || async {
        c.api.stats().await["total_generated"] == 3 && c.api.peek_all().await.len() == 3
    })
    .await;
    c.stop().await;

    append(&dir.path().join("a.log"), &l3);
    append(&dir.path().join("b.log"), &csv_line(4).0);
    let c = TestCollector::start(settings(dir.path(), &body)).await;
    let all = c.api.wait_for_unpulled(4).await;
    assert_eq!(
        events(&all),
        (1..5)
            .map(|i| (csv_line(i).1, csv_line(i).2))
            .collect::<Vec<_>>()
    );
    assert_eq!(c.api.stats().await["total_generated"], 4);
    c.stop().await;
}

/// The value of the first metric line naming `series` and containing every label.
fn metric(text: &str, series: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(series) && labels.iter().all(|lab| l.contains(lab)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn private_and_malformed_ips_never_reach_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ips.log");
    let ips = [
        "10.0.0.1",
        "192.168.1.1",
        "172.16.5.5",
        "127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "169.254.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "999.1.1.1",
        "abc",
        "014.019.132.125",
        "8.8.8.8",
    ];
    for (i, ip) in ips.iter().enumerate() {
        append(&log, &format!("2026-01-16 10:00:{i:02},{ip}\n"));
    }
    let c = TestCollector::start(settings(
        dir.path(),
        &csv_source("ipfilter", &log.display().to_string()),
    ))
    .await;
    let all = c.api.wait_for_unpulled(2).await;
    let got: Vec<_> = events(&all).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(got, ["14.19.132.125", "8.8.8.8"]);
    let api = c.api.clone();
    wait_until(Duration::from_secs(10), "line outcomes counted", || {
        let api = api.clone();
        async move {
            let text = reqwest::get(format!("{}/metrics", api.base))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let count = |o: &str| {
                metric(
                    &text,
                    "botpipe_collector_lines_total",
                    &["source=\"ipfilter\"", &format!("outcome=\"{o}\"")],
                )
            };
            count("non_public_ip") == Some(9.0)
                && count("bad_ip") == Some(2.0)
                && count("stored") == Some(2.0)
        }
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn the_legacy_generators_hourly_files_are_ingested_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for (hour, range) in [(16, 0..4500u64), (17, 4500..9300)] {
        let text: String = range
            .map(|i| {
                let (line, ip, ts) = csv_line(i);
                want.push((ip, ts));
                line
            })
            .collect();
        append(
            &dir.path().join(format!("test_2026-01-16_{hour}.log")),
            &text,
        );
    }
    append(&dir.path().join("notes.log"), &csv_line(99_999).0);
    let body = csv_source(
        "generator",
        &dir.path().join("test_{datetime}.log").display().to_string(),
    );
    let c = TestCollector::start(settings(dir.path(), &body)).await;
    wait_until(Duration::from_secs(30), "9300 records", || async {
        c.api.stats().await["total_generated"] == 9300
    })
    .await;
    let all = drain(&c.api).await;
    assert_eq!(events(&all), want);
    c.stop().await;
}

#[tokio::test]
async fn reading_pauses_at_the_cap_and_resumes_after_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gen.log");
    for i in 0..50 {
        append(&log, &csv_line(i).0);
    }
    let body = format!(
        "max_unpulled = 20\nresume_below = 10\n{}",
        csv_source("gen", &log.display().to_string())
    );
    let c = TestCollector::start(settings(dir.path(), &body)).await;
    wait_until(Duration::from_secs(10), "reading paused", || async {
        let s = c.api.stats().await;
        s["reading_paused"] == true && s["cache_full"] == true
    })
    .await;
    let s = c.api.stats().await;
    assert_eq!(s["cached_records"], 20, "the cap is not overshot");
    assert_eq!(s["total_generated"], 20);

    // 20 - 11 = 9, below the low mark: the confirm wakes the reader, which fills up to the cap.
    c.api.confirm(json!({"count": 11, "up_to_seq": 11})).await;
    wait_until(Duration::from_secs(10), "reading resumed", || async {
        c.api.stats().await["total_generated"] == 31
    })
    .await;
    // Refilled exactly to the cap. (Counted before draining: the drain's own confirms wake the
    // reader again, so what a drain returns depends on timing.)
    assert_eq!(c.api.stats().await["cached_records"], 20);
    drain(&c.api).await;
    wait_until(Duration::from_secs(10), "the rest read", || async {
        c.api.stats().await["total_generated"] == 50
    })
    .await;
    c.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_exports_the_collector_series() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gen.log");
    append(&log, &csv_line(1).0);
    let c = TestCollector::start(settings(
        dir.path(),
        &csv_source("metrics", &log.display().to_string()),
    ))
    .await;
    c.api.wait_for_unpulled(1).await;
    drain(&c.api).await;
    let base = c.api.base.clone();
    wait_until(Duration::from_secs(10), "collector series", || {
        let base = base.clone();
        async move {
            let text = reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            [
                "botpipe_collector_lines_total",
                "botpipe_collector_scan_duration_seconds",
                "botpipe_collector_unpulled_records",
                "botpipe_collector_max_seq_id",
                "botpipe_collector_reading_paused",
                "botpipe_collector_requests_total",
                "botpipe_collector_confirmed_records_total",
                "botpipe_collector_expired_records_total",
            ]
            .iter()
            .all(|s| text.contains(s))
        }
    })
    .await;
    c.stop().await;
}

fn write_config(dir: &Path, sources: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\napi_key = \"{KEY}\"\ncache_path = \"{}\"\n{extra}\n{sources}",
            dir.join("cache.sqlite").display()
        ),
    )
    .unwrap();
    path
}

/// What the test puller saw: every (seq, event) observation, and its confirmed cursor.
#[derive(Default)]
struct Seen {
    observations: Vec<(i64, (String, String))>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_reads_loses_and_duplicates_nothing() {
    const TOTAL: u64 = 6000;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("data.log");
    let config = write_config(
        dir.path(),
        &csv_source("data", &log.display().to_string()),
        "scan_interval = \"10ms\"\nread_batch = 50",
    );

    // The writer: steady appends, some lines split across two writes, one rotation halfway.
    let writer_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let log = log.clone();
        let rotated = dir.path().join("data.log.1");
        let done = Arc::clone(&writer_done);
        std::thread::spawn(move || {
            for i in 0..TOTAL {
                let line = csv_line(i).0;
                if i % 7 == 0 {
                    let (a, b) = line.split_at(10);
                    append(&log, a);
                    append(&log, b);
                } else {
                    append(&log, &line);
                }
                if i == TOTAL / 2 {
                    std::fs::rename(&log, &rotated).unwrap();
                }
                if i % 20 == 0 {
                    // Pacing the load, not waiting for anything.
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // The puller: since_seq + up_to_seq, like botpipe's, against whichever process is up.
    let current: Arc<Mutex<Option<Api>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_puller = Arc::new(AtomicBool::new(false));
    let puller = {
        let (current, seen, stop) = (current.clone(), seen.clone(), stop_puller.clone());
        tokio::spawn(async move {
            let mut cursor = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let api = current.lock().unwrap().clone();
                let pulled = match &api {
                    Some(api) => {
                        api.send(
                            api.raw(
                                Method::GET,
                                &format!("/api/pull?limit=500&since_seq={cursor}"),
                            )
                            .header("X-API-Key", KEY),
                        )
                        .await
                    }
                    None => None,
                };
                let Some((200, body)) = pulled else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let data = body["data"].as_array().cloned().unwrap_or_default();
                if data.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                {
                    let mut seen = seen.lock().unwrap();
                    for r in &data {
                        seen.observations.push((
                            r["seq_id"].as_i64().unwrap(),
                            (
                                r["ip"].as_str().unwrap().to_owned(),
                                r["timestamp"].as_str().unwrap().to_owned(),
                            ),
                        ));
                    }
                }
                let max = body["max_seq_id"].as_i64().unwrap();
                let api = api.unwrap();
                let confirmed = api
                    .send(
                        api.raw(Method::POST, "/api/confirm")
                            .header("X-API-Key", KEY)
                            .json(&json!({"count": data.len(), "up_to_seq": max})),
                    )
                    .await;
                if matches!(confirmed, Some((200, _))) {
                    cursor = max;
                }
            }
        })
    };

    let mut generated = 0u64;
    for round in 0..ROUNDS {
        let (proc, api) =
            CollectorProcess::start(&config, &dir.path().join(format!("run{round}.log"))).await;
        *current.lock().unwrap() = Some(api.clone());
        let target = (generated + 300).min(TOTAL);
        wait_until(Duration::from_secs(30), "progress before the kill", || {
            let api = api.clone();
            async move {
                let (_, s) = api.get("/api/stats").await;
                s["total_generated"].as_u64().unwrap_or(0) >= target
            }
        })
        .await;
        let (_, s) = api.get("/api/stats").await;
        generated = s["total_generated"].as_u64().unwrap();
        *current.lock().unwrap() = None;
        proc.kill9();
    }

    let (last, api) = CollectorProcess::start(&config, &dir.path().join("final.log")).await;
    *current.lock().unwrap() = Some(api.clone());
    wait_until(Duration::from_secs(60), "every line pulled", || {
        let (seen, done) = (seen.clone(), writer_done.clone());
        async move {
            let distinct: BTreeSet<_> = seen
                .lock()
                .unwrap()
                .observations
                .iter()
                .map(|o| o.1.clone())
                .collect();
            done.load(Ordering::SeqCst) && distinct.len() as u64 == TOTAL
        }
    })
    .await;
    stop_puller.store(true, Ordering::SeqCst);
    puller.await.unwrap();
    writer.join().unwrap();

    // Each line got exactly one seq id, each seq id belongs to one line, seq ids follow the
    // lines' order, and nothing was stored twice.
    let observations = std::mem::take(&mut seen.lock().unwrap().observations);
    let mut seq_of: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut line_of: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for (seq, ev) in &observations {
        assert_eq!(
            *seq_of.entry(ev.clone()).or_insert(*seq),
            *seq,
            "{ev:?} got two seq ids"
        );
        assert_eq!(
            line_of.entry(*seq).or_insert(ev.clone()),
            ev,
            "seq {seq} reused"
        );
    }
    let in_order: Vec<i64> = (0..TOTAL)
        .map(|i| {
            let (_, ip, ts) = csv_line(i);
            *seq_of
                .get(&(ip, ts))
                .unwrap_or_else(|| panic!("line {i} lost"))
        })
        .collect();
    assert!(
        in_order.windows(2).all(|w| w[0] < w[1]),
        "seq ids follow the lines' order"
    );
    let stats = api.stats().await;
    assert_eq!(stats["total_generated"], TOTAL, "nothing stored twice");
    assert_eq!(stats["cached_records"], 0);
    last.kill9();
}

#[tokio::test]
async fn sigterm_stops_the_collector_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &csv_source("gen", &dir.path().join("gen.log").display().to_string()),
        "",
    );
    let log = dir.path().join("run.log");
    let (mut proc, api) = CollectorProcess::start(&config, &log).await;
    let (status, _) = api.get("/health").await;
    assert_eq!(status, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut exit = None;
    wait_until(Duration::from_secs(15), "collector exits", || {
        exit = proc.child.try_wait().unwrap();
        let done = exit.is_some();
        async move { done }
    })
    .await;
    assert!(exit.unwrap().success(), "exit status {exit:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Collector stopped."), "{text}");
}

#[tokio::test]
async fn an_invalid_config_exits_2_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "listen = \"nowhere\"\n[[sources]]\nname = \"x\"\nkind = \"kafka\"\nbotnet_type = \"mozi\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .args(["collector", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["listen", "api_key", "sources[0].kind"] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .arg("collector")
        .env_remove("BOTPIPE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no --config");
}
