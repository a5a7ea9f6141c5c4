//! Logging contract: one line per pull with its figures, an unhealthy endpoint that logs on
//! state changes, not on every attempt, and a log destination that fails (a closed pipe, a full
//! disk) costing only the lines, never a pull or the shutdown.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use botpipe::demo::{DemoCollector, Flavor};
use botpipe::pull::{PullClient, PullOutcome, Puller, StatusBoard};
use botpipe::queue::{AnyQueue, EmbeddedQueue, Handoff};
use botpipe::record::{BotnetType, RecordContext};
use tokio_util::sync::CancellationToken;

use crate::helpers::bin::write_config;
use crate::helpers::{endpoint, spawn_collector, wait_until, wire};

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
    let addr = crate::helpers::free_addr();
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

/// A child process killed (if still running) when the test ends, also on a failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Records `first..first + n` of type mozi, distinct by IP and time.
fn push_mozi(c: &DemoCollector, first: u32, n: u32) {
    crate::helpers::push_online_mozi(c, 5, first, n);
}

/// Communication rows in the embedded store under `data_dir` (0 before the tables exist).
fn stored(data_dir: &Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(data_dir.join("botpipe.sqlite")) else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM botnet_communications_mozi", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap_or(0)
}

/// A default configuration apart from the data directory, the HTTP address and one endpoint.
fn run_config(dir: &Path, listen: &str, collector: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "data_dir = {:?}\n[http]\nlisten = \"{listen}\"\n\
             [endpoints.east]\nurl = {collector:?}\ninterval = \"200ms\"\ntimezone = \"UTC\"\n",
            dir.display().to_string(),
        ),
    )
}

/// Sends SIGTERM and waits up to `within` for a clean exit.
async fn sigterm_exits_within(child: &mut Child, within: Duration) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut status = None;
    wait_until(within, "botpipe to exit after SIGTERM", || {
        status = child.try_wait().unwrap();
        let done = status.is_some();
        async move { done }
    })
    .await;
    let status = status.unwrap();
    assert!(status.success(), "botpipe exited with {status}");
}

/// Polls `/health` at `addr` until it answers, failing at once if the process has exited.
async fn wait_for_health(child: &mut Child, addr: &str) {
    let url = format!("http://{addr}/health");
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(30), "/health to answer", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("botpipe exited at start with {status}");
        }
        let request = client.get(&url).send();
        async move { matches!(request.await, Ok(r) if r.status() == 200) }
    })
    .await;
}

async fn metric(addr: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    crate::helpers::prom::sample(&text, name, &[]).unwrap_or(0.0)
}

// Issue 12, item 1: journald or a log shipper restarts and the reader of botpipe's stderr goes
// away. Logging must not take the pullers (or the signal watcher) down with it.
#[tokio::test]
async fn issue_12_log_pipe_closed_mid_run_keeps_pulling_and_stops_on_sigterm() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    push_mozi(&tc.collector, 0, 500);
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(dir.path(), "127.0.0.1:0", &tc.url);
    let mut guard = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .args(["--log-format", "json", "--log-level", "info", "--config"])
            .arg(&config)
            .arg("run")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    // Read the log until botpipe listens and has stored the first records, then close the pipe.
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut addr = None;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "HTTP server listening." {
                addr = v["addr"].as_str().map(str::to_owned);
            }
            if v["message"] == "Stored batch." && addr.is_some() {
                break;
            }
        }
        addr
        // The read end of the pipe closes here.
    });
    let addr = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap()
        .expect("botpipe logged its HTTP address");
    wait_until(Duration::from_secs(30), "the first records stored", || {
        let n = stored(dir.path());
        async move { n == 500 }
    })
    .await;

    // Every pull and stored batch now logs into a pipe nobody reads.
    push_mozi(&tc.collector, 500, 2500);
    wait_until(
        Duration::from_secs(30),
        "records pulled and stored after the pipe closed",
        || {
            let pulled = tc.collector.unpulled() == 0;
            let n = stored(dir.path());
            async move { pulled && n == 3000 }
        },
    )
    .await;
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        metric(&addr, "botpipe_log_write_errors_total").await > 0.0,
        "failed log writes are counted"
    );
    sigterm_exits_within(child, Duration::from_secs(5)).await;
}

// Issue 12, item 1: a log destination that fails every write (a full disk) from the start.
#[tokio::test]
async fn issue_12_stderr_on_dev_full_starts_stores_and_stops_on_sigterm() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    push_mozi(&tc.collector, 0, 1500);
    let dir = tempfile::tempdir().unwrap();
    // No log to read the address from: pick a free port first.
    let addr = crate::helpers::free_addr().to_string();
    let config = run_config(dir.path(), &addr, &tc.url);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .args(["--log-level", "info", "--config"])
        .arg(&config)
        .arg("run")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(full))
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(child);
    let child = &mut guard.0;
    wait_for_health(child, &addr).await;
    wait_until(Duration::from_secs(30), "every record stored", || {
        let pulled = tc.collector.unpulled() == 0;
        let n = stored(dir.path());
        async move { pulled && n == 1500 }
    })
    .await;
    assert!(metric(&addr, "botpipe_log_write_errors_total").await > 0.0);
    sigterm_exits_within(child, Duration::from_secs(5)).await;
}

/// Deserializes any JSON value and fails on an object that has a key twice, at any depth
/// (`serde_json::Value` would silently keep one of the two values).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = a.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key {key:?} twice")));
            }
            a.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

/// The field names of a readable (pretty) log line, in order, repeats kept: every `name=`
/// that starts a word.
fn pretty_fields(line: &str) -> Vec<&str> {
    line.split(' ')
        .filter_map(|word| word.split_once('=').map(|(k, _)| k))
        .filter(|k| {
            k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
        .collect()
}

// Issue 16, item 3: a JSON log has one value per key on every line (a field named `target`
// used to collide with tracing's own `target`, and parsers dropped one), and the start-up
// migration says what it did.
#[tokio::test]
async fn issue_16_json_log_lines_have_one_value_per_key() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    push_mozi(&tc.collector, 0, 300);
    let dir = tempfile::tempdir().unwrap();
    let config = run_config(dir.path(), "127.0.0.1:0", &tc.url);
    let mut run = crate::helpers::bin::spawn_run(&config);
    wait_until(Duration::from_secs(30), "every record stored", || {
        let n = stored(dir.path());
        async move { n == 300 }
    })
    .await;
    assert!(run.terminate().await.success());
    let lines = run.log_lines();
    let mut problems = Vec::new();
    for line in &lines {
        if let Err(e) = serde_json::from_str::<NoDuplicateKeys>(line) {
            problems.push(format!("{e}: {line}"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pulled = parsed
        .iter()
        .find(|v| v["message"] == "Pulled batch.")
        .expect("a Pulled batch. line");
    assert_eq!(pulled["durable_in"], "queue", "{pulled}");
    assert_eq!(pulled["target"], "botpipe::pull::protocol", "{pulled}");
    let migrated = parsed
        .iter()
        .find(|v| v["message"] == "Migrated the store schema.")
        .unwrap_or_else(|| panic!("the start-up migration says what it applied: {lines:#?}"));
    assert!(migrated["steps"].as_u64().unwrap() > 0, "{migrated}");
    assert!(
        migrated["applied"].as_str().unwrap().contains("botpipe v1"),
        "{migrated}"
    );
}

// Issue 16, item 3: readable logs written into a pipe carry no colour codes, and no field
// appears twice on a line (`endpoint=east … endpoint=east` came from the pull span's field
// plus the event's own).
#[tokio::test]
async fn issue_16_pretty_logs_on_a_pipe_have_no_colour_and_no_field_twice() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    push_mozi(&tc.collector, 0, 300);
    let dir = tempfile::tempdir().unwrap();
    let addr = crate::helpers::free_addr();
    let config = run_config(dir.path(), &addr.to_string(), &tc.url);
    let mut run = crate::helpers::bin::spawn_run_pretty(&config, addr).await;
    wait_until(Duration::from_secs(30), "every record stored", || {
        let n = stored(dir.path());
        async move { n == 300 }
    })
    .await;
    assert!(run.terminate().await.success());
    let lines = run.log_lines();
    let coloured: Vec<&String> = lines.iter().filter(|l| l.contains("\x1b[")).collect();
    assert!(coloured.is_empty(), "colour codes on a pipe: {coloured:#?}");
    let mut twice = Vec::new();
    for line in &lines {
        let fields = pretty_fields(line);
        let unique: std::collections::BTreeSet<&&str> = fields.iter().collect();
        if unique.len() != fields.len() {
            twice.push(line);
        }
    }
    assert!(twice.is_empty(), "a field twice on a line: {twice:#?}");
    let pulled = lines
        .iter()
        .find(|l| l.contains("Pulled batch."))
        .unwrap_or_else(|| panic!("a Pulled batch. line: {lines:#?}"));
    assert!(pretty_fields(pulled).contains(&"endpoint"), "{pulled}");
}

#[test]
fn pretty_fields_finds_repeats() {
    let line = "2026-12-01T10:00:00.000000Z  INFO botpipe::pull::protocol: Pulled batch. \
                endpoint=east count=3 error=a b=c: d drift_ms=0.5 endpoint=east";
    assert_eq!(
        pretty_fields(line),
        ["endpoint", "count", "error", "b", "drift_ms", "endpoint"]
    );
}

// Issue 16, item 3: `botpipe migrate` on a fresh PostgreSQL database says what it applied, on
// a current one that nothing was needed, and neither run lets the server's notices
// (`relation … already exists, skipping`) into the log.
#[tokio::test]
async fn issue_16_migrate_on_postgres_says_what_it_did_without_server_notices() {
    use crate::helpers::db::{Backend, TestDb};
    if !Backend::Postgres.available() {
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    let first = migrate_on(&db.url).await;
    let (stdout, stderr) = crate::helpers::bin::text(&first);
    assert!(first.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Applied") && stdout.contains("botpipe v1"),
        "{stdout}"
    );
    // Now every `CREATE … IF NOT EXISTS` finds its object: PostgreSQL answers each with a
    // NOTICE.
    let second = migrate_on(&db.url).await;
    let (stdout2, stderr2) = crate::helpers::bin::text(&second);
    assert!(second.status.success(), "{stdout2}\n{stderr2}");
    assert!(stdout2.contains("Nothing to migrate"), "{stdout2}");
    for err in [&stderr, &stderr2] {
        assert!(
            !err.contains("already exists") && !err.contains("skipping"),
            "the server's notices reached the log:\n{err}"
        );
    }
}

/// `botpipe --log-level info migrate` on the store at `url`, allowing the type mozi.
async fn migrate_on(url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .args(["--log-level", "info", "migrate"])
        .env_remove("RUST_LOG")
        .env("BOTPIPE_STORE__URL", url)
        .env("BOTPIPE_BOTNET__ALLOWED_TYPES", r#"["mozi"]"#)
        .output()
        .await
        .unwrap()
}
