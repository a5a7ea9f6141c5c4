//! `botpipe status`: the `/api/status` document, fetched from a running botpipe (`--url`) or
//! assembled directly from the store and the queue, printed as a table or as JSON.
//!
//! Read directly, the per-endpoint part holds only what is persisted (the cursor and its epoch);
//! last pull, outcome, lag and drift live in the running process and need `--url`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::app::{attach_queue, open_store};
use crate::cli::StatusArgs;
use crate::config::Settings;
use crate::http::{status_snapshot, StatusSnapshot};
use crate::pull::{LeaseOwner, StatusBoard};
use crate::queue::{AnyQueue, Backpressure, Handoff, Holder};
use crate::store::sampler::StoreSampler;
use crate::store::Accuracy;

use super::{bounded, require_embedded_files, CommandError};

/// `botpipe status`.
///
/// # Errors
/// When the configuration is invalid, the files are missing, or `--url` does not answer.
pub async fn run(config: Option<&Path>, args: StatusArgs) -> Result<(), CommandError> {
    let snapshot = match &args.url {
        Some(url) => fetch(url).await?,
        None => {
            let settings = crate::config::load(config)?;
            read_direct(&settings).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", render_table(&snapshot));
    }
    Ok(())
}

/// Asks a running botpipe at `base` (e.g. `http://127.0.0.1:8080`) for `/api/status`.
///
/// # Errors
/// When it cannot be reached or answers with something else.
pub async fn fetch(base: &str) -> Result<StatusSnapshot, CommandError> {
    let url = format!("{}/api/status", base.trim_end_matches('/'));
    let remote = |source| CommandError::Remote {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::builder()
        .timeout(super::DEPENDENCY_TIMEOUT)
        .build()
        .map_err(remote)?;
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
/// running on them.
///
/// # Errors
/// When the embedded files do not exist or cannot be opened.
pub async fn read_direct(settings: &Settings) -> Result<StatusSnapshot, CommandError> {
    require_embedded_files(settings)?;
    let store = open_store(settings).await?;
    let (queue, spool) = attach_queue(settings).await?;
    let handoff = Handoff::new(queue, spool, settings.queue.handoff_deadline);
    let board = StatusBoard::default();
    for e in &settings.endpoints {
        let cursor = bounded(handoff.load_cursor(&e.name)).await;
        board.update(&e.name, |s| match cursor {
            Ok(c) => {
                s.cursor = c.as_ref().map(|c| c.seq);
                s.epoch = c.and_then(|c| c.epoch);
                if !e.enabled {
                    s.last_outcome = Some("disabled".into());
                }
            }
            Err(err) => s.last_error = Some(format!("reading the cursor: {err}")),
        });
    }
    // Who holds each endpoint, from the leases themselves (Redis backend, leases on).
    if let (AnyQueue::Redis(q), true) = (handoff.queue(), settings.queue.endpoint_leases) {
        let names: Vec<String> = settings
            .enabled_endpoints()
            .map(|e| e.name.clone())
            .collect();
        let leases = q.endpoint_leases(settings.queue.lease_ttl, Holder::this_process(None));
        match bounded(leases.owners(&names)).await {
            Ok(owners) => {
                for (name, info) in names.iter().zip(owners) {
                    board.update(name, |s| {
                        s.owner = info.map(|i| LeaseOwner {
                            name: i.holder.name,
                            host: i.holder.host,
                            pid: i.holder.pid,
                            since: i.since,
                            token: i.token,
                            this_process: false,
                        });
                    });
                }
            }
            Err(err) => {
                for name in &names {
                    board.update(name, |s| {
                        s.last_error
                            .get_or_insert_with(|| format!("reading its lease: {err}"));
                    });
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
    // One sample now, the same one `/api/status` serves: catalogue estimates where the database
    // keeps them, so a status check does not scan the largest tables.
    let (sampler, _) = StoreSampler::new(
        store.clone(),
        super::DEPENDENCY_TIMEOUT,
        super::DEPENDENCY_TIMEOUT,
    );
    let counts = sampler.sample_once().await;
    Ok(status_snapshot(&board, &handoff, counts, &backpressure).await)
}

/// What the table says where the store has not been sampled yet.
const NOT_SAMPLED: &str = "not sampled yet";

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The status as a table for people.
pub fn render_table(s: &StatusSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<20} {:<14} {:>10} {:>8} {:>9} {:>7} {:>9}  {:<44} ERROR",
        "ENDPOINT",
        "LAST PULL (UTC)",
        "OUTCOME",
        "CURSOR",
        "LAG",
        "DRIFT",
        "PULLS",
        "SPOOLED",
        "HELD BY (Redis leases)"
    );
    if s.endpoints.is_empty() {
        let _ = writeln!(out, "(no endpoints)");
    }
    for e in &s.endpoints {
        let _ = writeln!(
            out,
            "{:<20} {:<20} {:<14} {:>10} {:>8} {:>8.3}s {:>7} {:>9}  {:<44} {}",
            e.name,
            opt(e.last_pull_at.map(|t| t.format("%Y-%m-%d %H:%M:%S"))),
            e.last_outcome.as_deref().unwrap_or("-"),
            opt(e.cursor),
            opt(e.lag),
            e.last_drift_seconds,
            e.pulls,
            e.spooled_batches,
            e.owner.as_ref().map_or_else(
                || "-".to_owned(),
                |o| format!(
                    "{}{} {}:{} since {}",
                    o.name,
                    if o.this_process { " (this)" } else { "" },
                    o.host,
                    o.pid,
                    o.since.format("%H:%M:%S")
                )
            ),
            e.last_error.as_deref().unwrap_or(""),
        );
    }
    let depth = |d: &crate::http::DepthStatus| match &d.error {
        Some(err) => format!("unavailable: {err}"),
        None => format!("{} batches ({} leased)", opt(d.depth), opt(d.pending)),
    };
    let _ = writeln!(out);
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
        let _ = writeln!(out, "store         unavailable: {err}");
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
    use crate::http::{DepthStatus, StoreSampleInfo};
    use crate::pull::EndpointStatus;

    #[test]
    fn table_shows_every_section() {
        let s = StatusSnapshot {
            endpoints: vec![EndpointStatus {
                name: "east".into(),
                last_outcome: Some("ok".into()),
                cursor: Some(42),
                lag: Some(3),
                last_drift_seconds: 0.002,
                pulls: 7,
                owner: Some(crate::pull::LeaseOwner {
                    name: "p2".into(),
                    host: "node7".into(),
                    pid: 4242,
                    since: chrono::Utc::now(),
                    token: 9,
                    this_process: false,
                }),
                ..EndpointStatus::default()
            }],
            queue: DepthStatus {
                depth: Some(2),
                pending: Some(1),
                error: None,
            },
            spool: None,
            backpressure_paused: false,
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
        };
        let t = render_table(&s);
        for want in [
            "east",
            "42",
            "0.002s",
            "2 batches (1 leased)",
            "bad_ip 4",
            "mozi",
            " 9",
            "(3.2s ago)",
            "p2 node7:4242 since",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
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
}
