//! Start-up without the store (issue 12, item 3): the real binary, default configuration apart
//! from addresses, with PostgreSQL behind the TCP fault proxy hanging or refusing when botpipe
//! starts. botpipe must serve HTTP at once, report itself unready with the reason, pull into
//! the queue, and migrate and store everything once the proxy lets traffic through.

use std::process::Command;
use std::time::{Duration, Instant};

use botpipe::demo::{DemoCollector, Flavor};
use serde_json::Value;

use crate::helpers::bin::{spawn_run, write_config, RunningBotpipe};
use crate::helpers::db::{Backend, TestDb};
use crate::helpers::proxy::{FaultProxy, Mode};
use crate::helpers::services::Service;
use crate::helpers::{spawn_collector, wait_until};

/// Records pushed to the collector: three pulls of the default batch size.
const RECORDS: u32 = 2500;

fn push_mozi(c: &DemoCollector, n: u32) {
    crate::helpers::push_online_mozi(c, 6, 0, n);
}

async fn get_json(bp: &RunningBotpipe, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{}{path}", bp.http))
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

/// Communication rows of type mozi, read directly (not through the proxy); 0 while the table
/// does not exist.
async fn stored(db: &TestDb) -> i64 {
    let exists = db
        .query_strings("SELECT COALESCE(to_regclass('botnet_communications_mozi')::text, '')")
        .await;
    if exists.first().is_none_or(String::is_empty) {
        return 0;
    }
    db.query_strings("SELECT COUNT(*)::text FROM botnet_communications_mozi")
        .await
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn starts_without_its_store(fault: Mode) {
    if !Backend::Postgres.available() {
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    let proxy = FaultProxy::start(Service::Postgres.address().parse().unwrap()).await;
    proxy.set_mode(fault);
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    url.set_host(Some(&proxy.addr().ip().to_string())).unwrap();

    let tc = spawn_collector(Flavor::Botpipe, None).await;
    push_mozi(&tc.collector, RECORDS);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"{url}\"\n\
             [endpoints.east]\nurl = {:?}\ninterval = \"1s\"\ntimezone = \"UTC\"\n",
            dir.path().display().to_string(),
            tc.url,
        ),
    );

    let started = Instant::now();
    let mut bp = spawn_run(&config);
    let (code, health) = get_json(&bp, "/health").await;
    assert_eq!(code, 200, "{health}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "HTTP took {:?} to answer",
        started.elapsed()
    );
    let (code, ready) = get_json(&bp, "/ready").await;
    assert_eq!(code, 503, "{ready}");
    let reason = ready["store"]["error"].as_str().unwrap_or_default();
    assert!(reason.starts_with("store not reachable"), "{ready}");

    // Pulls go on into the queue while the store is away.
    wait_until(
        Duration::from_secs(30),
        "every record pulled into the queue",
        || async {
            let (_, status) = get_json(&bp, "/api/status").await;
            tc.collector.unpulled() == 0 && status["queue"]["depth"].as_u64() == Some(3)
        },
    )
    .await;
    assert_eq!(stored(&db).await, 0, "nothing can be stored yet");
    let (code, ready) = get_json(&bp, "/ready").await;
    assert_eq!(code, 503, "{ready}");

    proxy.set_mode(Mode::Pass);
    wait_until(
        Duration::from_secs(90),
        "every record stored and botpipe ready",
        || async {
            let (code, _) = get_json(&bp, "/ready").await;
            code == 200 && stored(&db).await == i64::from(RECORDS)
        },
    )
    .await;
    wait_until(Duration::from_secs(30), "the queue drained", || async {
        let (_, status) = get_json(&bp, "/api/status").await;
        status["queue"]["depth"].as_u64() == Some(0)
    })
    .await;

    let sent = Command::new("kill")
        .args(["-TERM", &bp.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut exited = None;
    wait_until(
        Duration::from_secs(15),
        "botpipe to exit on SIGTERM",
        || {
            exited = bp.child.try_wait().unwrap();
            let done = exited.is_some();
            async move { done }
        },
    )
    .await;
    assert!(exited.unwrap().success(), "{exited:?}");
}

#[tokio::test]
async fn issue_12_store_hanging_at_start_up_leaves_http_and_pulls_running() {
    starts_without_its_store(Mode::Hang).await;
}

#[tokio::test]
async fn issue_12_store_refusing_at_start_up_leaves_http_and_pulls_running() {
    starts_without_its_store(Mode::Refuse).await;
}
