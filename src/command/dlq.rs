//! `botpipe dlq list|show|replay`: the dead letters in the store (single records that failed
//! validation or a write); `botpipe dlq batches|replay-batches`: the dead batches in the queue
//! (whole batches delivered `queue.max_deliveries` times without an ack, or that no longer
//! decode).
//!
//! Replaying a dead batch moves it back into the queue in one atomic step per batch (a
//! transaction in the embedded queue, a script in Redis), so it is never in both places or in
//! neither; workers then deliver it afresh, and the store's merge rules absorb what it already
//! holds. The set to replay is listed first, so a batch that dies again while the replay runs
//! is not replayed twice.
//!
//! Replay re-validates each letter's raw record with the *current* configuration (allowed types,
//! the time zone of its endpoint or of push), hands the ones that now pass to the queue through
//! the same durable [`Handoff`] the pullers use, and only after that hand-off succeeded deletes
//! their rows. A crash between the two re-queues them on the next replay, which the idempotent
//! store absorbs; a finished replay leaves nothing to replay twice. Letters that still fail stay
//! where they are. Pages are walked from the newest id down, so dead letters written while the
//! replay runs (for instance by a running botpipe) are not visited.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use chrono_tz::Tz;
use serde::Serialize;

use crate::app::{attach_queue, open_store};
use crate::cli::{DlqArgs, DlqCommand};
use crate::config::Settings;
use crate::queue::{AnyQueue, DeadBatch, Handoff};
use crate::record::{parse_record, Batch, Record, RecordContext};
use crate::store::{AnyStore, Store, StoredDeadLetter};

use super::{require_embedded_files, CommandError};

/// Dead letters read per page.
const PAGE: u32 = 1000;
/// Records per replayed batch: the size of the largest pull or push batch.
const REPLAY_BATCH: usize = 5000;
/// Zone for letters whose source is neither a configured endpoint nor push: the endpoint default.
const FALLBACK_TZ: Tz = chrono_tz::Asia::Shanghai;

/// Which dead letters a list or replay covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this reason.
    pub reason: Option<String>,
    /// Only these ids (empty: all).
    pub ids: Vec<i64>,
}

impl Filter {
    fn matches(&self, d: &StoredDeadLetter) -> bool {
        self.reason
            .as_deref()
            .is_none_or(|r| d.letter.reason.as_str() == r)
            && (self.ids.is_empty() || self.ids.contains(&d.id))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// Letters that matched the filter.
    pub examined: u64,
    /// Letters that now pass and were queued (or would be, on a dry run).
    pub replayed: u64,
    /// Rows deleted after their batch was durable (0 on a dry run).
    pub deleted: u64,
    /// Batches handed off.
    pub batches: u64,
    /// Letters that still fail, by their new reason.
    pub still_invalid: BTreeMap<String, u64>,
}

/// `botpipe dlq …`.
///
/// # Errors
/// On configuration, store or queue failure, or an unknown id for `show`.
pub async fn run(config: Option<&Path>, args: DlqArgs) -> Result<(), CommandError> {
    let settings = crate::config::load(config)?;
    require_embedded_files(&settings)?;
    match args.command {
        DlqCommand::Batches { limit, json } => {
            let (queue, _spool) = attach_queue(&settings).await?;
            let batches = queue.dead_batches(limit).await?;
            if json {
                for b in &batches {
                    println!("{}", serde_json::to_string(b)?);
                }
            } else {
                print!("{}", render_batches(&batches));
            }
            return Ok(());
        }
        DlqCommand::ReplayBatches { ids, dry_run } => {
            let (queue, _spool) = attach_queue(&settings).await?;
            let s = replay_batches(&queue, &ids, dry_run).await?;
            println!(
                "{} {} of {} dead batch(es){}.",
                if dry_run { "Would replay" } else { "Replayed" },
                s.replayed,
                s.examined,
                if s.missing == 0 {
                    String::new()
                } else {
                    format!("; {} not found", s.missing)
                }
            );
            return Ok(());
        }
        _ => {}
    }
    let store = open_store(&settings).await?;
    match args.command {
        DlqCommand::Batches { .. } | DlqCommand::ReplayBatches { .. } => {}
        DlqCommand::List {
            limit,
            reason,
            json,
        } => {
            let filter = Filter {
                reason,
                ids: Vec::new(),
            };
            let letters = list(&store, &filter, limit).await?;
            if json {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                print!("{}", render_list(&letters));
            }
        }
        DlqCommand::Show { id } => {
            let d = show(&store, id).await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        DlqCommand::Replay {
            reason,
            ids,
            dry_run,
        } => {
            let (queue, spool) = attach_queue(&settings).await?;
            let handoff = Handoff::new(queue, spool, settings.queue.handoff_deadline);
            let filter = Filter { reason, ids };
            let progress = std::io::stderr().is_terminal();
            let s = replay(&settings, &store, &handoff, &filter, dry_run, progress).await?;
            let still: u64 = s.still_invalid.values().sum();
            println!(
                "{} {} of {} dead letters in {} batch(es); {} deleted; {} still invalid{}.",
                if dry_run { "Would replay" } else { "Replayed" },
                s.replayed,
                s.examined,
                s.batches,
                s.deleted,
                still,
                if still == 0 {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        s.still_invalid
                            .iter()
                            .map(|(r, n)| format!("{r} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
    }
    Ok(())
}

/// Largest number of dead batches one `replay-batches` run moves.
const MAX_REPLAY_BATCHES: u32 = 100_000;

/// What a `replay-batches` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchReplaySummary {
    /// Dead batches selected.
    pub examined: u64,
    /// Moved back into the queue (or would be, on a dry run).
    pub replayed: u64,
    /// Named ids that are not (or no longer) dead batches.
    pub missing: u64,
}

/// Moves the dead batches named by `ids` (all when empty) back into `queue`.
///
/// # Errors
/// When the queue cannot be read or written; batches moved before the error stay moved.
pub async fn replay_batches(
    queue: &AnyQueue,
    ids: &[String],
    dry_run: bool,
) -> Result<BatchReplaySummary, CommandError> {
    // A snapshot first: a batch that dies again while this runs is not picked up twice.
    let dead = queue.dead_batches(MAX_REPLAY_BATCHES).await?;
    let selected: Vec<&DeadBatch> = if ids.is_empty() {
        dead.iter().collect()
    } else {
        dead.iter().filter(|b| ids.contains(&b.entry)).collect()
    };
    let mut summary = BatchReplaySummary {
        examined: selected.len() as u64,
        missing: ids.len().saturating_sub(selected.len()) as u64,
        ..Default::default()
    };
    // Oldest first, so they queue up roughly in their original order.
    for b in selected.into_iter().rev() {
        if dry_run {
            summary.replayed += 1;
            continue;
        }
        if queue.revive_dead(&b.entry).await? {
            summary.replayed += 1;
            tracing::info!(entry = %b.entry, batch = %b.batch_id, source = %b.source, reason = %b.reason, "Replayed a dead batch.");
        } else {
            summary.missing += 1;
        }
    }
    Ok(summary)
}

fn render_batches(batches: &[DeadBatch]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22}  {:<36}  {:<20}  {:<15}  {:>10}  {:>7}",
        "ENTRY", "BATCH", "SOURCE", "REASON", "DELIVERIES", "RECORDS"
    );
    for b in batches {
        let _ = writeln!(
            out,
            "{:<22}  {:<36}  {:<20}  {:<15}  {:>10}  {:>7}",
            b.entry,
            b.batch_id,
            b.source,
            b.reason,
            b.deliveries,
            b.records.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        );
    }
    if batches.is_empty() {
        let _ = writeln!(out, "(no dead batches)");
    }
    out
}

/// Up to `limit` dead letters matching `filter`, newest first.
///
/// # Errors
/// When the store cannot be read.
pub async fn list(
    store: &AnyStore,
    filter: &Filter,
    limit: u32,
) -> Result<Vec<StoredDeadLetter>, CommandError> {
    let mut out = Vec::new();
    let mut before = None;
    while out.len() < limit as usize {
        let page = store.dead_letters(PAGE, before).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        out.extend(page.into_iter().filter(|d| filter.matches(d)));
    }
    out.truncate(limit as usize);
    Ok(out)
}

/// The dead letter with `id`.
///
/// # Errors
/// [`CommandError::NoSuchDeadLetter`] when there is none; store errors.
pub async fn show(store: &AnyStore, id: i64) -> Result<StoredDeadLetter, CommandError> {
    let found = store
        .dead_letters(1, Some(id.saturating_add(1)))
        .await?
        .into_iter()
        .find(|d| d.id == id);
    found.ok_or(CommandError::NoSuchDeadLetter(id))
}

fn render_list(letters: &[StoredDeadLetter]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8}  {:<19}  {:<20}  {:<20}  DETAIL",
        "ID", "REJECTED (UTC)", "SOURCE", "REASON"
    );
    for d in letters {
        let detail: String = d.letter.detail.chars().take(60).collect();
        let _ = writeln!(
            out,
            "{:>8}  {:<19}  {:<20}  {:<20}  {detail}",
            d.id,
            d.letter.rejected_at.format("%Y-%m-%d %H:%M:%S"),
            d.letter.source,
            d.letter.reason.as_str(),
        );
    }
    if letters.is_empty() {
        let _ = writeln!(out, "(no dead letters)");
    }
    out
}

/// Re-validates the matching dead letters and re-queues those that pass (see the module docs).
///
/// # Errors
/// When the store cannot be read or written, or a batch cannot be made durable (then its rows
/// stay, and the replay stops).
pub async fn replay(
    settings: &Settings,
    store: &AnyStore,
    handoff: &Handoff,
    filter: &Filter,
    dry_run: bool,
    progress: bool,
) -> Result<ReplaySummary, CommandError> {
    let total: u64 = if filter.ids.is_empty() {
        let counts = store.counts().await?;
        match &filter.reason {
            Some(r) => counts.dead_letters.get(r).copied().unwrap_or(0),
            None => counts.total_dead_letters(),
        }
    } else {
        filter.ids.len() as u64
    };
    let zones: HashMap<&str, Tz> = settings
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.timezone))
        .collect();
    let context = |source: &str| RecordContext {
        source: source.to_owned(),
        tz: if source.starts_with("push:") {
            settings.push.timezone
        } else {
            zones.get(source).copied().unwrap_or(FALLBACK_TZ)
        },
        allowed: Arc::clone(&settings.allowed_types),
    };

    let mut summary = ReplaySummary::default();
    let wanted: BTreeSet<i64> = filter.ids.iter().copied().collect();
    // With ids, start just above the largest one instead of walking the whole table.
    let mut before = wanted.last().map(|id| id.saturating_add(1));
    loop {
        let page = store.dead_letters(PAGE, before).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        // Per source: the records that now pass and the ids they came from.
        let mut pending: BTreeMap<String, (Vec<Record>, Vec<i64>)> = BTreeMap::new();
        for d in page.iter().filter(|d| filter.matches(d)) {
            summary.examined += 1;
            match parse_record(&d.letter.raw, &context(&d.letter.source)) {
                Ok(r) => {
                    summary.replayed += 1;
                    let slot = pending.entry(d.letter.source.clone()).or_default();
                    slot.0.push(r);
                    slot.1.push(d.id);
                }
                Err(again) => {
                    *summary
                        .still_invalid
                        .entry(again.reason.as_str().to_owned())
                        .or_default() += 1;
                }
            }
        }
        for (source, (records, ids)) in pending {
            for (chunk, chunk_ids) in records.chunks(REPLAY_BATCH).zip(ids.chunks(REPLAY_BATCH)) {
                summary.batches += 1;
                if dry_run {
                    continue;
                }
                let batch = Batch::new(source.clone(), chunk.to_vec(), Vec::new());
                let target = handoff.handoff(&batch).await?;
                summary.deleted += store.delete_dead_letters(chunk_ids).await?;
                tracing::info!(
                    source = %source,
                    batch = %batch.id,
                    records = chunk.len(),
                    durable_in = target.as_str(),
                    "Replayed dead letters."
                );
            }
        }
        if progress {
            eprint!(
                "\r  dlq replay: examined {:>8}/{total}   re-queued {:>8}   still invalid {:>8}",
                summary.examined,
                summary.replayed,
                summary.still_invalid.values().sum::<u64>()
            );
        }
        if !wanted.is_empty() && wanted.first().is_some_and(|first| last.id <= *first) {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    Ok(summary)
}
