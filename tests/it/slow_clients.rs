//! Issue 13: slow clients used to hold the HTTP listeners forever. A client that sends its
//! headers byte by byte, or never finishes a body, is now cut off after the header or body
//! timeout; a normal push still goes through while such clients are connected; and the number
//! of connections served at once is bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use botpipe::collector::Collector;
use botpipe::config::SecretSource;
use botpipe::push::sign;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::helpers::collector::settings as collector_settings;
use crate::helpers::{spawn_app, wait_until, TestApp};

const PUSH_KEY: &str = "relay-key";
const PUSH_SECRET: &str = "relay-secret";

async fn push_app(tweak: impl FnOnce(&mut botpipe::config::Settings)) -> TestApp {
    spawn_app(vec![], |s| {
        s.push.enabled = true;
        s.push.api_key = Some(SecretSource::Inline(PUSH_KEY.to_owned().into()));
        s.push.secret = Some(SecretSource::Inline(PUSH_SECRET.to_owned().into()));
        tweak(s);
    })
    .await
}

async fn signed_push(addr: SocketAddr, nonce: &str) -> u16 {
    let now = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let body = serde_json::to_vec(&json!({
        "botnet_type": "mozi",
        "data": [{"ip": "1.2.3.4", "timestamp": "2026-01-01T12:00:00"}],
        "timestamp": now,
        "nonce": nonce,
    }))
    .unwrap();
    reqwest::Client::new()
        .post(format!("http://{addr}/api/data-push"))
        .header("X-API-Key", PUSH_KEY)
        .header("X-Signature", sign(PUSH_SECRET, &now, nonce, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A slowloris client: sends the start of a request, then one header byte every `every`, for
/// as long as the server keeps the connection. Returns how long it was kept.
async fn slowloris(addr: SocketAddr, every: Duration) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /api/data-push HTTP/1.1\r\nHost: botpipe\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        // Either the server closes (read returns 0 or fails), or it is time for the next byte.
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => {
                if s.write_all(b"a").await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
}

/// Issue 13: three slowloris connections stayed open 90 s and eight made every push answer 503.
/// With the default header timeout (10 s) each is closed, and a normal push meanwhile succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_slowloris_clients_are_cut_off_by_default_and_pushes_still_succeed() {
    let app = push_app(|_| {}).await;
    let addr = app.http.unwrap();
    let slow: Vec<_> = (0..8)
        .map(|_| tokio::spawn(slowloris(addr, Duration::from_millis(500))))
        .collect();
    // Let them connect and start trickling.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        assert_eq!(signed_push(addr, &format!("n-slow-{i}")).await, 200);
    }
    for task in slow {
        let kept = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a slowloris client was not cut off within 30 s")
            .unwrap();
        assert!(
            kept >= Duration::from_secs(9),
            "cut off before the header timeout: {kept:?}"
        );
    }
    app.stop().await;
}

/// A client that sends its headers and part of a body, then nothing: refused with 408
/// `body_timeout` and disconnected once `http.body_timeout` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_push_body_that_never_finishes_is_cut_off_after_the_body_timeout() {
    let app = push_app(|s| s.http_limits.body_timeout = Duration::from_secs(1)).await;
    let addr = app.http.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/data-push HTTP/1.1\r\nHost: botpipe\r\nX-API-Key: {PUSH_KEY}\r\n\
         X-Signature: 00\r\nContent-Length: 1000\r\n\r\n{{\"botnet_type\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    // The listener still serves.
    assert_eq!(signed_push(addr, "n-after-slow-body").await, 200);
    app.stop().await;
}

/// At most `http.max_connections` connections are served: with both slots held by idle
/// clients a third waits, and is served as soon as one of them leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_connections_beyond_the_bound_wait_for_a_free_slot() {
    let app = push_app(|s| s.http_limits.max_connections = 2).await;
    let addr = app.http.unwrap();
    let idle_a = TcpStream::connect(addr).await.unwrap();
    let _idle_b = TcpStream::connect(addr).await.unwrap();
    let health = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: botpipe\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    });
    // Both slots are taken: the third connection is not served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!health.is_finished(), "served beyond max_connections");
    drop(idle_a);
    let answer = tokio::time::timeout(Duration::from_secs(10), health)
        .await
        .expect("not served after a slot was freed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.stop().await;
}

/// The collector's listener has the same limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_the_collector_cuts_off_slowloris_clients() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "header_timeout = \"1s\"\n[[sources]]\nname = \"g\"\nkind = \"csv\"\nbotnet_type = \"mozi\"\npath = {:?}\n",
        dir.path().join("g.log")
    );
    let collector = Collector::build(collector_settings(dir.path(), &body))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let token = CancellationToken::new();
    let task = tokio::spawn(collector.run_until_stopped(token.clone()));
    let kept = tokio::time::timeout(
        Duration::from_secs(20),
        slowloris(addr, Duration::from_millis(200)),
    )
    .await
    .expect("the collector did not cut off a slowloris client");
    assert!(kept >= Duration::from_millis(900), "{kept:?}");
    wait_until(
        Duration::from_secs(10),
        "the collector answers /health",
        || async move {
            reqwest::get(format!("http://{addr}/health"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    token.cancel();
    task.await.unwrap().unwrap();
}
