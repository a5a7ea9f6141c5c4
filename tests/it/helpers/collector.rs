//! Collector harness: an in-process `botpipe collector` on port 0, the real binary as a child
//! process (for kill -9 and signals), a small pull-API client, and a log-line writer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use botpipe::collector::config::{CollectorConfig, CollectorSettings};
use botpipe::collector::{Collector, CollectorError};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::wait_until;

/// The API key every test collector uses.
pub const KEY: &str = "test-collector-key";

/// Builds settings from the TOML of the sources (and any top-level fields) plus test defaults:
/// port 0, the cache in `dir`, fast scans.
pub fn settings(dir: &Path, body: &str) -> CollectorSettings {
    let text = format!(
        "listen = \"127.0.0.1:0\"\napi_key = \"{KEY}\"\ncache_path = \"{}\"\n{}",
        dir.join("cache.sqlite").display(),
        with_default_scan(body)
    );
    let raw: CollectorConfig = toml::from_str(&text).expect("test collector TOML parses");
    CollectorSettings::try_from(raw).expect("test collector config is valid")
}

fn with_default_scan(body: &str) -> String {
    if body.contains("scan_interval") {
        body.to_owned()
    } else {
        format!("scan_interval = \"20ms\"\n{body}")
    }
}

/// A collector running inside the test process.
pub struct TestCollector {
    /// Talks to it.
    pub api: Api,
    token: CancellationToken,
    task: JoinHandle<Result<(), CollectorError>>,
}

impl TestCollector {
    /// Builds and starts a collector.
    pub async fn start(settings: CollectorSettings) -> Self {
        super::init_test_log();
        let collector = Collector::build(settings).await.expect("collector builds");
        let api = Api::new(&format!("http://{}", collector.local_addr()));
        let token = CancellationToken::new();
        let task = tokio::spawn(collector.run_until_stopped(token.clone()));
        Self { api, token, task }
    }

    /// Stops it and checks it stopped cleanly.
    pub async fn stop(self) {
        self.token.cancel();
        self.task
            .await
            .expect("collector task joins")
            .expect("collector stops cleanly");
    }
}

/// A minimal pull-API client.
#[derive(Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client builds"),
        }
    }

    /// GET with the key as `X-API-Key`; returns the status and the JSON body (Null if none).
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        self.send(
            self.client
                .get(format!("{}{path_and_query}", self.base))
                .header("X-API-Key", KEY),
        )
        .await
        .expect("collector answers")
    }

    /// Sends a request; `None` when the collector is unreachable.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.ok()?;
        Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// An unauthenticated request builder, for auth tests.
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// POST /api/confirm with the key.
    pub async fn confirm(&self, body: Value) -> (u16, Value) {
        self.send(
            self.client
                .post(format!("{}/api/confirm", self.base))
                .header("X-API-Key", KEY)
                .json(&body),
        )
        .await
        .expect("collector answers")
    }

    /// `stats` of /api/stats.
    pub async fn stats(&self) -> Value {
        let (status, body) = self.get("/api/stats").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Pulls everything unpulled without confirming (limit 5000).
    pub async fn peek_all(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/pull?limit=5000").await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until at least `n` records are unpulled; returns them.
    pub async fn wait_for_unpulled(&self, n: usize) -> Vec<Value> {
        wait_until(
            Duration::from_secs(20),
            &format!("{n} unpulled records"),
            || async { self.peek_all().await.len() >= n },
        )
        .await;
        self.peek_all().await
    }
}

/// `(ip, timestamp)` of each record.
pub fn events(records: &[Value]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r["ip"].as_str().unwrap_or_default().to_owned(),
                r["timestamp"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Appends `text` to `path` (creating it) in one write.
pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log for append");
    f.write_all(text.as_bytes()).expect("append");
}

/// Line `i` of a generated log: a unique public IP and a unique second.
pub fn csv_line(i: u64) -> (String, String, String) {
    let (a, b, c) = ((i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    let ip = if c == 0 {
        format!("46.{a}.{b}.1")
    } else {
        format!("45.{a}.{b}.{c}")
    };
    let t = chrono::NaiveDate::from_ymd_opt(2026, 1, 16)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date")
        + chrono::Duration::seconds(i as i64);
    let line = format!("{},{ip}\n", t.format("%Y-%m-%d %H:%M:%S"));
    (line, ip, t.format("%Y-%m-%dT%H:%M:%S").to_string())
}

/// The real `botpipe collector` as a child process, logging JSON to a file.
pub struct CollectorProcess {
    /// The child.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl CollectorProcess {
    /// Starts `botpipe collector --config <config>`, logging to `log`, and waits for its
    /// address.
    pub async fn start(config: &Path, log: &Path) -> (Self, Api) {
        let child = Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .args(["--log-format", "json", "collector", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("botpipe starts");
        let proc = Self {
            child,
            log: log.to_path_buf(),
        };
        let mut addr = None;
        wait_until(Duration::from_secs(20), "collector listening", || {
            addr = listening_addr(log);
            let found = addr.is_some();
            async move { found }
        })
        .await;
        let addr = addr.expect("address logged");
        (proc, Api::new(&format!("http://{addr}")))
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for CollectorProcess {
    /// A failing test must not leave a collector running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _already_gone = self.child.kill();
            let _reaped = self.child.wait();
        }
    }
}

/// Kills a child process when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _already_gone = self.0.kill();
            let _reaped = self.0.wait();
        }
    }
}

/// The `addr` field of the "Collector listening." JSON log line, if written yet.
pub fn listening_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "Collector listening.")
        .and_then(|v| v["addr"].as_str().map(str::to_owned))
}
