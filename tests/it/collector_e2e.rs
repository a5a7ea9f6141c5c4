//! End to end across processes: `botpipe run` pulls from `botpipe collector` (both the real
//! binary) while a writer appends to the collector's log files. Every line must land in the
//! SQLite store exactly once, and the collector's cache must drain.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::collector::{append, csv_line, CollectorProcess, KillOnDrop, KEY};
use crate::helpers::wait_until;

/// CSV lines across two hourly generator files.
const CSV_LINES: u64 = 3000;
/// JOIN lines in the online log (each followed by an EXIST line that must be skipped).
const JOIN_LINES: u64 = 400;

/// `(ip, 'YYYY-MM-DD HH:MM:SS')` rows of one communications table; empty if it does not exist.
fn store_rows(db: &Path, botnet_type: &str) -> Vec<(String, String)> {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let sql = format!("SELECT ip, communication_time FROM botnet_communications_{botnet_type}");
    let Ok(mut stmt) = conn.prepare(&sql) else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .unwrap_or_default()
}

fn join_line(i: u64) -> (String, String, String) {
    let ip = format!("58.{}.{}.{}", (i >> 8) & 0xff, i & 0xff, 7);
    let t = chrono::NaiveDate::from_ymd_opt(2026, 3, 3)
        .and_then(|d| d.and_hms_opt(16, 0, 0))
        .unwrap()
        + chrono::Duration::seconds(i as i64);
    let ts = t.format("%Y-%m-%d %H:%M:%S").to_string();
    (
        format!("[{ts}] [JOIN ] #bot   vn409   {ip}\n[{ts}] [EXIST] #bot   vn409   {ip}\n"),
        ip,
        ts,
    )
}

fn sigterm(child: &Child) {
    let _status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn botpipe_run_pulls_every_line_from_a_live_collector_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let collector_dir = dir.path().join("collector");
    std::fs::create_dir_all(&collector_dir).unwrap();
    let platform_dir = dir.path().join("platform");
    std::fs::create_dir_all(&platform_dir).unwrap();

    let collector_config = collector_dir.join("collector.toml");
    std::fs::write(
        &collector_config,
        format!(
            r#"listen = "127.0.0.1:0"
api_key = "{KEY}"
cache_path = "{cache}"
scan_interval = "20ms"

[[sources]]
name = "generator"
kind = "csv"
botnet_type = "mozi"
path = "{logs}/test_{{datetime}}.log"

[[sources]]
name = "online"
kind = "regex"
botnet_type = "utg_q_008"
path = "{logs}/online.log"
regex = '\[(\d{{4}}-\d{{2}}-\d{{2}} \d{{2}}:\d{{2}}:\d{{2}})\] \[JOIN\s*\].*?([0-9]{{1,3}}\.[0-9]{{1,3}}\.[0-9]{{1,3}}\.[0-9]{{1,3}})'
"#,
            cache = collector_dir.join("cache.sqlite").display(),
            logs = logs.display(),
        ),
    )
    .unwrap();
    let (mut collector, api) =
        CollectorProcess::start(&collector_config, &collector_dir.join("collector.log")).await;

    // The writer appends continuously while both processes run.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (logs, done) = (logs.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            for i in 0..CSV_LINES.max(JOIN_LINES) {
                if i < CSV_LINES {
                    let hour = if i < CSV_LINES / 2 { 16 } else { 17 };
                    append(
                        &logs.join(format!("test_2026-01-16_{hour}.log")),
                        &csv_line(i).0,
                    );
                }
                if i < JOIN_LINES {
                    append(&logs.join("online.log"), &join_line(i).0);
                }
                if i % 25 == 0 {
                    // Pacing the load, not waiting for anything.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let platform_config = platform_dir.join("botpipe.toml");
    std::fs::write(
        &platform_config,
        format!(
            r#"data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[store]
# The collector logs in UTC, and the tables hold the same wall-clock.
timezone = "UTC"
[botnet]
allowed_types = ["mozi", "utg_q_008"]
[endpoints.c2]
url = "{url}"
api_key = "{KEY}"
interval = "200ms"
timeout = "150ms"
connect_timeout = "100ms"
timezone = "UTC"
"#,
            data = platform_dir.display(),
            url = api.base,
        ),
    )
    .unwrap();
    let mut run = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .args(["--log-format", "json", "--config"])
            .arg(&platform_config)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(platform_dir.join("run.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let store = platform_dir.join("botpipe.sqlite");
    let want_mozi: BTreeSet<(String, String)> = (0..CSV_LINES)
        .map(|i| {
            let (_, ip, ts) = csv_line(i);
            (ip, ts.replace('T', " "))
        })
        .collect();
    let want_online: BTreeSet<(String, String)> = (0..JOIN_LINES)
        .map(|i| {
            let (_, ip, ts) = join_line(i);
            (ip, ts)
        })
        .collect();
    wait_until(Duration::from_secs(120), "every line in the store", || {
        let ok = done.load(Ordering::SeqCst)
            && store_rows(&store, "mozi").len() >= want_mozi.len()
            && store_rows(&store, "utg_q_008").len() >= want_online.len();
        async move { ok }
    })
    .await;
    writer.join().unwrap();

    for (t, want) in [("mozi", &want_mozi), ("utg_q_008", &want_online)] {
        let rows = store_rows(&store, t);
        let distinct: BTreeSet<_> = rows.iter().cloned().collect();
        assert_eq!(rows.len(), distinct.len(), "{t}: a line stored twice");
        assert_eq!(&distinct, want, "{t}: store differs from the lines written");
    }
    wait_until(
        Duration::from_secs(30),
        "the collector's cache drains",
        || {
            let api = api.clone();
            async move { api.stats().await["cached_records"] == 0 }
        },
    )
    .await;

    sigterm(&run.0);
    sigterm(&collector.child);
    wait_until(Duration::from_secs(30), "both processes exit", || {
        let exited =
            run.0.try_wait().unwrap().is_some() && collector.child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
}
