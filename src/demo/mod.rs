//! `botpipe demo`: two in-process collectors (one botpipe-dialect, one legacy) serve generated
//! records for several botnet types (online and cleanup, with duplicates and a few invalid
//! records); the real pipeline pulls them on the embedded default; a summary compares what was
//! stored with what the generator knows must be stored. [`run_demo`] returns that [`Summary`];
//! printing it and failing on a mismatch is the `demo` command's part.
//!
//! The demo leaves nothing behind unless asked: its store and queue live in a fresh temporary
//! directory, removed at the end (kept with `--keep`; a `--data-dir` is the operator's and always
//! kept). It enriches with the geodata `run` would use with the operator's configuration, found
//! by the one rule of [`crate::enrich::geo_files`] from that configuration's `[geo]` and data
//! directory, not the demo's own directory, which never holds any. Progress goes to stderr: a
//! redrawn line on a terminal, else one line every [`PROGRESS_EVERY`], so a log or CI sees the
//! demo is moving; stdout carries only the summary.

pub mod collector;

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, TimeZone};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError, Mode};
use crate::cli::DemoArgs;
use crate::config::{EndpointSettings, Settings};
use crate::queue::Queue;
use crate::record::{LogType, NodeIp};
use crate::store::merge::derive_status;
use crate::store::Store;
use crate::store::StoreError;

pub use collector::{ConfirmCall, DemoCollector, Flavor, RequestKind, ServedRequest};

/// Why the demo could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A demo collector could not bind its listener on 127.0.0.1.
    #[error("binding a demo collector on 127.0.0.1")]
    Bind(#[source] std::io::Error),
    /// A demo collector's URL could not be formed.
    #[error("demo collector URL for port {port}")]
    Url {
        /// The collector's port.
        port: u16,
        /// The cause.
        #[source]
        source: url::ParseError,
    },
    /// The pipeline could not be built or stopped with an error.
    #[error("demo pipeline")]
    App(#[from] AppError),
    /// The pipeline task panicked or was cancelled.
    #[error("demo pipeline task")]
    Task(#[source] tokio::task::JoinError),
    /// The temporary data directory could not be created.
    #[error("creating the demo's temporary data directory in {}", dir.display())]
    TempDir {
        /// Where it was to be created.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The pipeline did not pull and store everything in time.
    #[error("demo did not drain within {0:?}")]
    NotDrained(Duration),
    /// The store could not be counted.
    #[error("counting the demo's rows")]
    Store(#[from] StoreError),
}

/// Botnet types the demo generates.
pub const DEMO_TYPES: [&str; 4] = ["mozi", "ramnit", "utg_q_008", "fodcha"];
/// Zone of the generated naive timestamps (the legacy fleet's).
const DEMO_TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
/// Longest the demo waits for the pipeline to drain before giving up.
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a progress line is printed when stderr is not a terminal (a terminal's line is
/// redrawn every poll instead).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often the demo looks at the collectors and the queue.
const POLL: Duration = Duration::from_millis(100);
/// Prefix of the temporary data directory.
const TEMP_PREFIX: &str = "botpipe-demo-";

/// What the generator produced and therefore what the store must end up with.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Expected {
    /// Records served, valid or not, duplicates included.
    pub records: u64,
    /// Records that must be dead-lettered.
    pub invalid: u64,
    /// Distinct communications per type.
    pub communications: BTreeMap<String, u64>,
    /// Nodes per type and status.
    pub nodes: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Records the collectors served and botpipe confirmed.
    pub records_pulled: u64,
    /// Communication rows stored.
    pub communications_stored: u64,
    /// Dead letters stored.
    pub dead_lettered: u64,
    /// Nodes per type and status as stored.
    pub nodes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Communications per type as stored.
    pub communications: BTreeMap<String, u64>,
    /// Dead letters per reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// What the generator says must be stored.
    pub expected: Expected,
    /// Wall time from start to drained.
    pub elapsed_seconds: f64,
    /// `records_pulled / elapsed_seconds`.
    pub records_per_second: f64,
    /// Where the data is: the `--data-dir`, or the temporary directory kept with `--keep`;
    /// `None` when the temporary directory was removed.
    pub data_dir: Option<PathBuf>,
    /// The geodata files used (found where `scripts/fetch-geodata.sh` installs by default), or
    /// where none was found.
    pub geodata: String,
    /// Whether stored equals expected.
    pub matches_expected: bool,
}

/// Generates `n` records spread over the collectors, returning what must be stored.
pub fn generate(collectors: &[DemoCollector], n: u64, seed: u64) -> Expected {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut exp = Expected::default();
    // (type, ip) -> (last online, last cleanup)
    let mut node_times: BTreeMap<(String, String), (Option<i64>, Option<i64>)> = BTreeMap::new();
    let mut comms: HashSet<(String, String, i64, LogType)> = HashSet::new();
    let pool: Vec<String> = (0..(n / 3).max(10))
        .map(|_| loop {
            let ip = format!(
                "{}.{}.{}.{}",
                rng.random_range(1..224),
                rng.random::<u8>(),
                rng.random::<u8>(),
                rng.random_range(1..255)
            );
            if NodeIp::parse(&ip).is_ok() {
                break ip;
            }
        })
        .collect();
    let base = NaiveDateTime::parse_from_str("2026-03-03 00:00:00", "%Y-%m-%d %H:%M:%S")
        .unwrap_or_default();
    let mut last: Option<serde_json::Value> = None;
    for i in 0..n {
        let c = &collectors[(i as usize) % collectors.len()];
        exp.records += 1;
        // ~3%: an exact duplicate of the previous record.
        if rng.random_ratio(3, 100) {
            if let Some(prev) = &last {
                let mut dup = prev.clone();
                if let Some(m) = dup.as_object_mut() {
                    m.remove("seq_id");
                }
                c.push(dup);
                continue;
            }
        }
        // ~1%: an invalid record of some kind.
        if rng.random_ratio(1, 100) {
            exp.invalid += 1;
            let bad = match rng.random_range(0..5) {
                0 => {
                    json!({"ip": "999.1.1.1", "timestamp": "2026-03-03T10:00:00", "botnet_type": "mozi"})
                }
                1 => {
                    json!({"ip": "192.168.1.10", "timestamp": "2026-03-03T10:00:00", "botnet_type": "mozi"})
                }
                2 => {
                    json!({"ip": "8.8.8.8", "timestamp": "2026-03-03T10:00:00", "botnet_type": "conficker"})
                }
                3 => json!({"ip": "8.8.8.8", "timestamp": "not a time", "botnet_type": "ramnit"}),
                _ => {
                    json!({"ip": "8.8.8.8", "timestamp": "2026-03-03T10:00:00", "botnet_type": "ramnit", "log_type": "offline"})
                }
            };
            c.push(bad);
            continue;
        }
        let t = DEMO_TYPES[rng.random_range(0..DEMO_TYPES.len())];
        let ip = &pool[rng.random_range(0..pool.len())];
        let secs = rng.random_range(0..86_400i64);
        let naive = base + chrono::Duration::seconds(secs);
        let log_type = if rng.random_ratio(15, 100) {
            LogType::Cleanup
        } else {
            LogType::Online
        };
        let ts = naive.format("%Y-%m-%dT%H:%M:%S").to_string();
        let utc = DEMO_TZ
            .from_local_datetime(&naive)
            .earliest()
            .map(|d| d.timestamp())
            .unwrap_or_default();
        let rec = json!({"ip": ip, "timestamp": ts, "date": naive.format("%Y-%m-%d").to_string(),
            "log_hour": naive.format("%Y-%m-%d_%H").to_string(), "botnet_type": t, "log_type": log_type.as_str()});
        c.push(rec.clone());
        last = Some(rec);
        comms.insert((t.to_owned(), ip.clone(), utc, log_type));
        let e = node_times.entry((t.to_owned(), ip.clone())).or_default();
        match log_type {
            LogType::Online => e.0 = e.0.max(Some(utc)),
            LogType::Cleanup => e.1 = e.1.max(Some(utc)),
        }
    }
    for (t, _, _, _) in &comms {
        *exp.communications.entry(t.clone()).or_default() += 1;
    }
    for ((t, _), (online, cleanup)) in node_times {
        let to_dt = |s: Option<i64>| s.and_then(|s| chrono::DateTime::from_timestamp(s, 0));
        let status = derive_status(to_dt(online), to_dt(cleanup));
        *exp.nodes
            .entry(t)
            .or_default()
            .entry(status.to_owned())
            .or_default() += 1;
    }
    exp
}

fn endpoint(
    name: &str,
    port: u16,
    interval: Duration,
    batch_size: u32,
) -> Result<EndpointSettings, DemoError> {
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/"))
        .map_err(|source| DemoError::Url { port, source })?;
    Ok(EndpointSettings {
        name: name.to_owned(),
        url: url.into(),
        tls: Default::default(),
        api_key: None,
        interval,
        batch_size,
        connect_timeout: Duration::from_secs(1),
        timeout: interval.mul_f64(0.9).max(Duration::from_millis(50)),
        timezone: DEMO_TZ,
        max_body_bytes: 64 * 1024 * 1024,
        enabled: true,
    })
}

/// When a progress line is due on a stderr that is not a terminal: the first look, then every
/// [`PROGRESS_EVERY`], and the last (`done`), so a log shows the start, the pace and the end.
#[derive(Debug, Default)]
struct LineTicker {
    last: Option<Instant>,
}

impl LineTicker {
    /// Whether to print a line `now`; if so, counts it as printed.
    fn due(&mut self, now: Instant, done: bool) -> bool {
        let due = done
            || self
                .last
                .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_EVERY);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// Runs the demo: starts the collectors and the pipeline, waits until everything generated is
/// pulled and the queue is empty, stops, and compares the store with what was generated.
/// Geodata is what `run` would use with `configured` (its `[geo]` and data directory); the
/// demo's data goes to `args.data_dir`, else to a temporary directory that is removed at the
/// end unless `args.keep` (then its path is printed on stderr at once).
///
/// # Errors
/// When the temporary directory cannot be created, the pipeline cannot start, stops with an
/// error or does not drain in time. A store that differs from the expectation is not an error:
/// see [`Summary::matches_expected`].
pub async fn run_demo(args: &DemoArgs, configured: &Settings) -> Result<Summary, DemoError> {
    let (data_dir, temp) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let parent = std::env::temp_dir();
            let temp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempdir_in(&parent)
                .map_err(|source| DemoError::TempDir {
                    dir: parent,
                    source,
                })?;
            if args.keep {
                let kept = temp.keep();
                crate::telemetry::eprint_line(&format!(
                    "demo: data in {} (kept: --keep)",
                    kept.display()
                ));
                (kept, None)
            } else {
                (temp.path().to_path_buf(), Some(temp))
            }
        }
    };
    let mut summary = run_in(args, configured, &data_dir).await;
    if let Some(temp) = temp {
        let path = temp.path().display().to_string();
        if let Err(error) = temp.close() {
            tracing::warn!(path, %error, "Could not remove the demo's temporary data directory.");
        }
        if let Ok(s) = &mut summary {
            s.data_dir = None;
        }
    }
    summary
}

async fn run_in(
    args: &DemoArgs,
    configured: &Settings,
    data_dir: &std::path::Path,
) -> Result<Summary, DemoError> {
    let started = Instant::now();
    let collectors = [
        DemoCollector::new(Flavor::Botpipe, None),
        DemoCollector::new(Flavor::Legacy, None),
    ];
    let expected = generate(&collectors, args.records, 0x0b07);

    let token = CancellationToken::new();
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for c in &collectors {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(DemoError::Bind)?;
        ports.push(l.local_addr().map_err(DemoError::Bind)?.port());
        servers.push(tokio::spawn(c.clone().serve(l, token.clone())));
    }

    let mut settings = Settings::embedded_default().with_data_dir(data_dir);
    // Geodata as `run` finds it with the operator's configuration (`[geo]`, else
    // `<data_dir>/geo` of *that* data directory), not in the demo's fresh directory.
    settings.geo = configured.geo.clone();
    settings.geo.dir = Some(crate::enrich::discovery_dir(
        &configured.geo,
        &configured.data_dir,
    ));
    settings.http_listen = ([127, 0, 0, 1], 0).into();
    settings.endpoints = vec![
        endpoint("demo-botpipe", ports[0], args.interval, args.batch_size)?,
        endpoint("demo-legacy", ports[1], args.interval, args.batch_size)?,
    ];
    let geo_files = crate::enrich::geo_files(&settings.geo, &settings.data_dir);
    let geodata = match (&geo_files.discovered_in, geo_files.is_empty()) {
        (Some(dir), true) => format!(
            "none installed in {} (scripts/fetch-geodata.sh)",
            dir.display()
        ),
        _ => geo_files
            .all()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let app = App::build(settings, Mode::Full).await?;
    let store = app.store().clone();
    let queue = app.handoff().queue().clone();
    let app_token = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(app_token.clone(), Duration::from_secs(10)));

    let tty = std::io::stderr().is_terminal();
    let total = expected.records;
    let drained = async {
        let mut lines = LineTicker::default();
        loop {
            let unpulled: usize = collectors.iter().map(DemoCollector::unpulled).sum();
            let depth = queue.depth().await.ok().map(|d| d.total);
            let pulled = total - unpulled as u64;
            let done = unpulled == 0 && depth == Some(0);
            let depth = depth.map_or_else(|| "?".to_owned(), |d| d.to_string());
            let secs = started.elapsed().as_secs_f64();
            if tty {
                eprint!("\r  pulled {pulled:>8}/{total}   queue {depth:>5} batches   {secs:>5.1}s");
            } else if lines.due(Instant::now(), done) {
                crate::telemetry::eprint_line(&format!(
                    "demo: pulled {pulled}/{total} records, queue {depth} batches, {secs:.1} s"
                ));
            }
            if done {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    let finished = tokio::time::timeout(DEMO_TIMEOUT, drained).await.is_ok();
    if tty {
        eprintln!();
    }
    let elapsed = started.elapsed().as_secs_f64();
    app_token.cancel();
    token.cancel();
    match running.await {
        Ok(r) => r?,
        Err(e) => return Err(DemoError::Task(e)),
    }
    for s in servers {
        let _ = s.await;
    }
    if !finished {
        return Err(DemoError::NotDrained(DEMO_TIMEOUT));
    }
    let counts = store.counts().await?;
    let unpulled: usize = collectors.iter().map(DemoCollector::unpulled).sum();
    let records_pulled = total - unpulled as u64;
    let nodes: BTreeMap<_, _> = counts
        .nodes
        .clone()
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .collect();
    let communications: BTreeMap<_, _> = counts
        .communications
        .clone()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let matches_expected = nodes == expected.nodes
        && communications == expected.communications
        && counts.total_dead_letters() == expected.invalid;
    Ok(Summary {
        geodata,
        records_pulled,
        communications_stored: counts.total_communications(),
        dead_lettered: counts.total_dead_letters(),
        nodes,
        communications,
        dead_letters: counts.dead_letters,
        expected,
        elapsed_seconds: elapsed,
        records_per_second: records_pulled as f64 / elapsed.max(1e-9),
        data_dir: Some(data_dir.to_path_buf()),
        matches_expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_progress_is_the_first_look_one_line_every_interval_and_the_last() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut lines = LineTicker::default();
        let printed: Vec<u64> = (0..=5_000)
            .step_by(100)
            .filter(|ms| lines.due(at(*ms), false))
            .collect();
        assert_eq!(printed, [0, 2_000, 4_000]);
        // The end is printed whenever it comes.
        assert!(lines.due(at(4_100), true));
    }
}
