//! Logging contract: one line per pull with its figures, and an unhealthy endpoint that logs on
//! state changes, not on every attempt.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use botpipe::demo::{DemoCollector, Flavor};
use botpipe::pull::{PullClient, PullOutcome, Puller, StatusBoard};
use botpipe::queue::{AnyQueue, EmbeddedQueue, Handoff};
use botpipe::record::{BotnetType, RecordContext};
use tokio_util::sync::CancellationToken;

use crate::helpers::{endpoint, wire};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// JSON log lines so far, then cleared.
    fn take(&self) -> Vec<serde_json::Value> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn at(lines: &[serde_json::Value], level: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["level"] == level)
        .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// The current-thread runtime keeps every log call of the puller on this thread, where the
// capturing subscriber is installed.
#[tokio::test(flavor = "current_thread")]
async fn a_dead_endpoint_logs_once_when_it_fails_and_once_when_it_recovers() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A port nothing listens on yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/");
    let ep = endpoint("log-east", &url, Duration::from_millis(500), 100);
    let dir = tempfile::tempdir().unwrap();
    let queue =
        EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_secs(60), 5).unwrap();
    let handoff = Handoff::new(AnyQueue::Embedded(queue), None, Duration::from_millis(500));
    let ctx = RecordContext {
        source: ep.name.clone(),
        tz: chrono_tz::UTC,
        allowed: Arc::new([BotnetType::parse("mozi").unwrap()].into_iter().collect()),
    };
    let mut puller = Puller::new(
        PullClient::new(&ep, None).unwrap(),
        ctx,
        handoff,
        None,
        ep.batch_size,
        StatusBoard::default(),
    );

    for _ in 0..5 {
        assert_eq!(puller.try_pull_one().await, PullOutcome::PullFailed);
    }
    let lines = logs.take();
    assert_eq!(at(&lines, "WARN").len(), 1, "{lines:#?}");
    assert!(at(&lines, "WARN")[0].starts_with("Pull failed."));

    // The collector comes up on that address.
    let collector = DemoCollector::new(Flavor::Botpipe, None);
    collector.push(wire("1.2.3.4", "2026-03-03T10:00:00", "mozi", "online"));
    let token = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = tokio::spawn(collector.clone().serve(listener, token.clone()));
    puller.set_tick_drift(Duration::from_millis(3));
    assert!(matches!(
        puller.try_pull_one().await,
        PullOutcome::Confirmed { count: 1, .. }
    ));
    let lines = logs.take();
    assert!(at(&lines, "WARN").is_empty(), "{lines:#?}");
    let info = at(&lines, "INFO");
    assert!(
        info.iter().any(|m| m.starts_with("Endpoint recovered")),
        "{info:?}"
    );
    let pulled = lines
        .iter()
        .find(|l| l["message"] == "Pulled batch.")
        .expect("a line for the pull");
    assert_eq!(pulled["endpoint"], "log-east");
    assert_eq!(pulled["count"], 1);
    assert_eq!(pulled["cursor"], 1);
    assert!(pulled["duration_ms"].is_u64());
    assert_eq!(pulled["drift_ms"], 3.0);
    token.cancel();
    server.await.unwrap().unwrap();
}
