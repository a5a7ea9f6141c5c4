//! The HTTP surface of `botpipe run`: every route, `/ready` following the store's health, and
//! `/metrics` series that move while records flow.

use std::time::Duration;

use botpipe::demo::Flavor;
use botpipe::http::StatusSnapshot;
use botpipe::queue::Queue;
use botpipe::store::{Accuracy, Store};
use serde_json::Value;

use crate::helpers::db::{Backend, TestDb};
use crate::helpers::prom::{families, sample};
use crate::helpers::{endpoint, spawn_app, spawn_collector, wait_until, wire, TestApp};

const DRAIN: Duration = Duration::from_secs(60);

async fn get(app: &TestApp, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", app.http.unwrap());
    let resp = reqwest::get(&url).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let (code, body) = get(app, path).await;
    (code, serde_json::from_str(&body).unwrap())
}

fn push_records(c: &botpipe::demo::DemoCollector, n: usize, salt: u32) {
    for i in 0..n {
        let ip = format!("5.{}.{}.{}", salt % 200 + 1, i / 200 + 1, i % 200 + 1);
        let ts = chrono::DateTime::from_timestamp(1_772_000_000 + i as i64, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        c.push(wire(&ip, &ts, "mozi", "online"));
    }
}

#[tokio::test]
async fn health_ready_status_and_metrics_answer() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    push_records(&tc.collector, 250, 1);
    let app = spawn_app(
        vec![endpoint(
            "http-east",
            &tc.url,
            Duration::from_millis(50),
            100,
        )],
        |_| {},
    )
    .await;

    let (code, health) = get_json(&app, "/health").await;
    assert_eq!(code, 200);
    assert_eq!(health["status"], "ok");

    let (code, ready) = get_json(&app, "/ready").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    for dep in ["store", "queue", "spool", "geodata"] {
        assert_eq!(ready[dep]["ok"], true, "{dep}: {ready}");
    }

    wait_until(
        DRAIN,
        "all records stored and the cursor at the end",
        || async {
            let (_, status) = get_json(&app, "/api/status").await;
            tc.collector.unpulled() == 0
                && app.store.counts().await.unwrap().total_communications() == 250
                && app.queue.depth().await.unwrap().total == 0
                && status["endpoints"][0]["cursor"] == 250
                && status["endpoints"][0]["lag"] == 0
                && status["communications"]["mozi"] == 250
        },
    )
    .await;
    let (code, body) = get(&app, "/api/status").await;
    assert_eq!(code, 200);
    let status: StatusSnapshot = serde_json::from_str(&body).unwrap();
    let ep = status
        .endpoints
        .iter()
        .find(|e| e.name == "http-east")
        .unwrap();
    assert_eq!(ep.cursor, Some(250));
    assert_eq!(ep.lag, Some(0));
    assert_eq!(ep.records_pulled, Some(250));
    assert!(ep.pulls.is_some_and(|n| n >= 3), "{ep:?}");
    assert!(ep.last_pull_at.is_some());
    assert!(ep.last_outcome.is_some());
    assert_eq!(status.queue.depth, Some(0));
    let communications = status.communications.unwrap();
    assert_eq!(communications.get("mozi"), Some(&250));
    assert_eq!(
        status
            .nodes
            .as_ref()
            .and_then(|n| n.get("mozi"))
            .and_then(|m| m.get("active")),
        Some(&250)
    );
    assert!(status.store_error.is_none());
    let taken = status.store_sample.unwrap();
    assert_eq!(taken.communications.get("mozi"), Some(&Accuracy::Exact));
    assert!(taken.age_seconds >= 0.0, "{taken:?}");

    let (code, text) = get(&app, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        sample(
            &text,
            "botpipe_pulls_total",
            &[("endpoint", "http-east"), ("outcome", "ok")]
        )
        .unwrap()
            >= 3.0
    );

    let (code, _) = get(&app, "/no/such/route").await;
    assert_eq!(code, 404);
    app.stop().await;
}

#[tokio::test]
async fn ready_is_503_while_the_store_is_locked_and_200_again_after() {
    let app = spawn_app(vec![], |_| {}).await;
    let (code, _) = get_json(&app, "/ready").await;
    assert_eq!(code, 200);

    // Another process takes the store's write lock: workers could not write now.
    let blocker = rusqlite::Connection::open(app.dir.path().join("botpipe.sqlite")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (code, ready) = get_json(&app, "/ready").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["store"]["ok"], false);
    assert!(
        ready["store"]["error"].as_str().unwrap().contains("locked"),
        "{ready}"
    );
    assert_eq!(
        ready["queue"]["ok"], true,
        "only the store is down: {ready}"
    );

    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    let url = format!("http://{}/ready", app.http.unwrap());
    wait_until(DRAIN, "/ready back to 200", || async {
        reqwest::get(&url).await.unwrap().status() == 200
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn ready_is_503_when_a_configured_geodata_file_is_missing() {
    // A file missing at start is a start-up error (`enrich::open`); one that disappears while
    // botpipe runs (a botched update) makes it unready.
    let geo_dir = tempfile::tempdir().unwrap();
    let city = geo_dir.path().join("city.mmdb");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geo/geoip2-city.mmdb"),
        &city,
    )
    .unwrap();
    let app = spawn_app(vec![], |s| {
        s.geo.city = vec![city.clone()];
        s.geo.discovered = false;
    })
    .await;
    let (code, ready) = get_json(&app, "/ready").await;
    assert_eq!(code, 200, "{ready}");
    std::fs::remove_file(&city).unwrap();
    let (code, ready) = get_json(&app, "/ready").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["geodata"]["ok"], false);
    assert_eq!(ready["store"]["ok"], true);
    let files = ready["geodata"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0]["error"].is_string());
    app.stop().await;
}

/// Issue 17: `/ready` checks the files botpipe discovered (not only configured ones) and gives
/// each database's build date from its metadata, flagging one older than 180 days.
#[tokio::test]
async fn issue_17_ready_shows_discovered_geodata_with_build_dates() {
    let dir = tempfile::tempdir().unwrap();
    let geo = dir.path().join("geo");
    std::fs::create_dir_all(&geo).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geo");
    std::fs::copy(fixtures.join("qqwry.ipdb"), geo.join("qqwry.ipdb")).unwrap();
    std::fs::copy(fixtures.join("asn.csv"), geo.join("asn.csv")).unwrap();
    let app = spawn_app(vec![], |s| {
        s.geo.discovered = true;
        s.geo.dir = Some(geo.clone());
    })
    .await;
    let (code, ready) = get_json(&app, "/ready").await;
    assert_eq!(code, 200, "{ready}");
    let files = ready["geodata"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{ready}");
    let dbs = ready["geodata"]["databases"].as_array().unwrap();
    assert_eq!(dbs[0]["name"], "qqwry.ipdb", "{ready}");
    assert_eq!(dbs[0]["kind"], "IPIP.net IPDB city", "{ready}");
    assert_eq!(dbs[0]["built"], "2026-01-01", "{ready}");
    assert_eq!(dbs[0]["build_timestamp"], 1_767_225_600_u64, "{ready}");
    // The fixture's build date is fixed, so it is stale from 2026-06-30 on.
    let stale = botpipe::enrich::unix_now() > 1_767_225_600 + 180 * 86_400;
    assert_eq!(dbs[0]["stale"], stale, "{ready}");
    // The build date is also the gauge's value.
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(
        metrics.contains(
            "botpipe_geo_database_build_timestamp_seconds{database=\"qqwry.ipdb\"} 1767225600"
        ),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_series_move_while_records_flow() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let app = spawn_app(
        vec![endpoint(
            "metrics-east",
            &tc.url,
            Duration::from_millis(50),
            100,
        )],
        |_| {},
    )
    .await;
    let ep = [("endpoint", "metrics-east")];
    // The recorder is process-wide and other tests run beside this one: compare before/after
    // on series that only grow, and on this test's own endpoint label.
    let (_, before) = get(&app, "/metrics").await;
    let stored = |t: &str| {
        sample(
            t,
            "botpipe_records_total",
            &[("stage", "store"), ("outcome", "inserted")],
        )
        .unwrap_or(0.0)
    };
    let pulled = |t: &str| {
        sample(
            t,
            "botpipe_records_total",
            &[("stage", "pull"), ("outcome", "valid")],
        )
        .unwrap_or(0.0)
    };
    let store_batches =
        |t: &str| sample(t, "botpipe_store_batch_seconds_count", &[]).unwrap_or(0.0);
    let handoffs = |t: &str| {
        sample(
            t,
            "botpipe_handoff_total",
            &[("target", "queue"), ("outcome", "ok")],
        )
        .unwrap_or(0.0)
    };

    push_records(&tc.collector, 300, 2);
    tc.collector
        .push(wire("10.0.0.1", "2026-03-03T00:00:00", "mozi", "online"));
    wait_until(DRAIN, "records stored and the cursor exported", || async {
        let (_, text) = get(&app, "/metrics").await;
        tc.collector.unpulled() == 0
            && app.store.counts().await.unwrap().total_communications() == 300
            && sample(&text, "botpipe_pull_cursor", &ep) == Some(301.0)
            // A full batch is followed by another pull within the same tick, so ticks can be
            // fewer than pulls: wait for a few (they come every 50 ms).
            && sample(&text, "botpipe_pull_schedule_drift_seconds_count", &ep).unwrap_or(0.0) >= 3.0
    })
    .await;
    let (_, after) = get(&app, "/metrics").await;

    assert!(pulled(&after) - pulled(&before) >= 300.0);
    assert!(stored(&after) - stored(&before) >= 300.0);
    assert!(store_batches(&after) > store_batches(&before));
    assert!(handoffs(&after) - handoffs(&before) >= 3.0);
    assert!(sample(&after, "botpipe_pull_duration_seconds_count", &ep).unwrap() >= 3.0);
    assert!(sample(&after, "botpipe_pull_schedule_drift_seconds_count", &ep).unwrap() >= 3.0);
    assert_eq!(sample(&after, "botpipe_pull_cursor", &ep), Some(301.0));
    assert!(
        sample(
            &after,
            "botpipe_dead_letters_total",
            &[("reason", "bad_ip")]
        )
        .unwrap()
            >= 1.0
    );
    for family in [
        "botpipe_queue_depth",
        "botpipe_queue_pending",
        "botpipe_spool_depth",
        "botpipe_enrich_lookups_total",
        "botpipe_worker_batches_total",
        "botpipe_store_batches_total",
    ] {
        assert!(
            families(&after).iter().any(|f| f == family),
            "{family} missing from /metrics"
        );
    }
    // Every family botpipe renders is one it documents.
    for f in families(&after) {
        assert!(
            botpipe::telemetry::metrics::ALL.contains(&f.as_str()),
            "undocumented metric {f}"
        );
    }
    app.stop().await;
}

/// `/api/status` while `cond` does not hold yet for it, until it does; then the document.
async fn status_when(
    app: &TestApp,
    what: &str,
    cond: impl Fn(&StatusSnapshot) -> bool,
) -> StatusSnapshot {
    let fetch = || async {
        let (code, body) = get(app, "/api/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<StatusSnapshot>(&body).unwrap()
    };
    wait_until(DRAIN, what, || async { cond(&fetch().await) }).await;
    fetch().await
}

/// How `/api/status` labels the communication rows of `mozi`, and their number.
fn mozi_rows(s: &StatusSnapshot) -> (Option<Accuracy>, Option<u64>) {
    (
        s.store_sample
            .as_ref()
            .and_then(|i| i.communications.get("mozi").copied()),
        s.communications
            .as_ref()
            .and_then(|c| c.get("mozi").copied()),
    )
}

/// On the network databases `/api/status` serves the sampler's numbers, each labelled: nodes
/// and dead letters exact, communication rows from the catalogue once it has statistics
/// (PostgreSQL counts a small table it has none for yet).
async fn status_serves_labelled_samples(backend: Backend) {
    const ROWS: usize = 200;
    if !backend.available() {
        return;
    }
    let db = TestDb::create(backend).await;
    let app = spawn_app(vec![], |s| s.store = db.settings()).await;
    // The store is migrated once botpipe runs, not when it is built: ready means migrated.
    let url = format!("http://{}/ready", app.http.unwrap());
    wait_until(DRAIN, "the store migrated", || async {
        reqwest::get(&url).await.unwrap().status() == 200
    })
    .await;
    let batch = crate::helpers::test_batch("status", ROWS);
    let geo = vec![botpipe::enrich::Geo::unknown(); ROWS];
    // The batch creates the type's tables (a type's tables appear with its first record).
    app.store
        .apply(&botpipe::store::EnrichedBatch { batch, geo })
        .await
        .unwrap();
    if backend == Backend::Postgres {
        // So that only the ANALYZE below gives PostgreSQL its statistics (autovacuum wakes up
        // once a minute: it has not looked at the new table yet).
        db.exec(&["ALTER TABLE botnet_communications_mozi SET (autovacuum_enabled = false)"])
            .await;
    }

    let status = status_when(&app, "the nodes sampled", |s| {
        s.nodes
            .as_ref()
            .and_then(|n| n.get("mozi"))
            .and_then(|m| m.get("active"))
            == Some(&(ROWS as u64))
    })
    .await;
    let info = status.store_sample.as_ref().unwrap();
    assert_eq!(info.nodes, Accuracy::Exact);
    assert_eq!(info.dead_letters, Accuracy::Exact);
    assert!(status.store_error.is_none(), "{:?}", status.store_error);
    match backend {
        Backend::Postgres => assert_eq!(
            mozi_rows(&status),
            (Some(Accuracy::Exact), Some(ROWS as u64)),
            "no statistics yet, and small: counted"
        ),
        _ => assert_eq!(mozi_rows(&status).0, Some(Accuracy::Estimate)),
    }

    let analyze = match backend {
        Backend::Postgres => "ANALYZE botnet_communications_mozi",
        _ => "ANALYZE TABLE botnet_communications_mozi",
    };
    db.exec(&[analyze]).await;
    let status = status_when(&app, "an estimate served", |s| {
        mozi_rows(s).0 == Some(Accuracy::Estimate)
    })
    .await;
    let (_, rows) = mozi_rows(&status);
    if backend == Backend::Postgres {
        // ANALYZE reads every row of a table this small, and nothing was written since.
        assert_eq!(rows, Some(ROWS as u64));
    } else {
        assert!(rows.is_some_and(|n| n > 0), "{status:?}");
    }
    let json: Value = serde_json::from_str(&get(&app, "/api/status").await.1).unwrap();
    assert_eq!(json["store_sample"]["communications"]["mozi"], "estimate");
    assert_eq!(json["store_sample"]["nodes"], "exact");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_serves_labelled_samples_on_postgres() {
    status_serves_labelled_samples(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_serves_labelled_samples_on_mysql() {
    status_serves_labelled_samples(Backend::Mysql).await;
}
