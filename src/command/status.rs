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
use crate::pull::StatusBoard;
use crate::queue::{Backpressure, Handoff};

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
    Ok(status_snapshot(&board, &handoff, &store, &backpressure).await)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The status as a table for people.
pub fn render_table(s: &StatusSnapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<20} {:<14} {:>10} {:>8} {:>9} {:>7} {:>9}  ERROR",
        "ENDPOINT", "LAST PULL (UTC)", "OUTCOME", "CURSOR", "LAG", "DRIFT", "PULLS", "SPOOLED"
    );
    if s.endpoints.is_empty() {
        let _ = writeln!(out, "(no endpoints)");
    }
    for e in &s.endpoints {
        let _ = writeln!(
            out,
            "{:<20} {:<20} {:<14} {:>10} {:>8} {:>8.3}s {:>7} {:>9}  {}",
            e.name,
            opt(e.last_pull_at.map(|t| t.format("%Y-%m-%d %H:%M:%S"))),
            e.last_outcome.as_deref().unwrap_or("-"),
            opt(e.cursor),
            opt(e.lag),
            e.last_drift_seconds,
            e.pulls,
            e.spooled_batches,
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
    let dead: u64 = s.dead_letters.values().sum();
    let by_reason: Vec<String> = s
        .dead_letters
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "dead letters  {dead}{}",
        if by_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_reason.join(", "))
        }
    );
    if let Some(err) = &s.store_error {
        let _ = writeln!(out, "store         unavailable: {err}");
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>10} {:>10} {:>15}",
        "BOTNET TYPE", "ACTIVE", "INACTIVE", "CLEANED", "COMMUNICATIONS"
    );
    let types: std::collections::BTreeSet<&String> =
        s.nodes.keys().chain(s.communications.keys()).collect();
    for t in types {
        let n = s.nodes.get(t);
        let get = |k: &str| n.and_then(|m| m.get(k)).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10} {:>15}",
            t,
            get("active"),
            get("inactive"),
            get("cleaned"),
            s.communications.get(t).copied().unwrap_or(0)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::DepthStatus;
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
                ..EndpointStatus::default()
            }],
            queue: DepthStatus {
                depth: Some(2),
                pending: Some(1),
                error: None,
            },
            spool: None,
            backpressure_paused: false,
            dead_letters: [("bad_ip".to_owned(), 4)].into_iter().collect(),
            nodes: [(
                "mozi".to_owned(),
                [("active".to_owned(), 5)].into_iter().collect(),
            )]
            .into_iter()
            .collect(),
            communications: [("mozi".to_owned(), 9)].into_iter().collect(),
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
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
