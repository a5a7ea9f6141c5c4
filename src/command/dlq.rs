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
//!
//! A dry run goes through the same checks ([`check`]: parsing and validation, then whether the
//! store could hold the record at all) and reports each letter's [`Verdict`], without queueing
//! or deleting anything. What it cannot foresee is a refusal the database decides only when it
//! writes (a `store_rejected` letter that validates now); it says so for those letters.
//!
//! `dlq list` prints the counts by reason and by source first ([`summarize`], one `GROUP BY` in
//! the store, so it covers every letter however many there are), then the newest rows, one line
//! each.

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
use crate::record::{parse_record, Batch, Record, RecordContext, RejectReason};
use crate::store::{AnyStore, DeadLetterCount, Store, StoredDeadLetter};

use super::{require_embedded_files, CommandError};

/// Dead letters read per page.
const PAGE: u32 = 1000;
/// Records per replayed batch: the size of the largest pull or push batch.
const REPLAY_BATCH: usize = 5000;
/// Zone for letters whose source is neither a configured endpoint nor push: the endpoint default.
const FALLBACK_TZ: Tz = chrono_tz::Asia::Shanghai;
/// Characters of a letter's detail on its one line in `dlq list`.
const DETAIL_CHARS: usize = 60;
/// Characters of the new detail on a dry run's line.
const VERDICT_DETAIL_CHARS: usize = 160;

/// Which dead letters a list or replay covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this source (endpoint name or `push:<relay>`).
    pub source: Option<String>,
    /// Only these ids (empty: all).
    pub ids: Vec<i64>,
}

impl Filter {
    fn matches(&self, d: &StoredDeadLetter) -> bool {
        self.matches_kind(&d.letter.source, d.letter.reason.as_str())
            && (self.ids.is_empty() || self.ids.contains(&d.id))
    }

    /// Whether letters of `source` and `reason` are covered (ids aside).
    fn matches_kind(&self, source: &str, reason: &str) -> bool {
        self.reason.as_deref().is_none_or(|r| reason == r)
            && self.source.as_deref().is_none_or(|s| source == s)
    }
}

/// Dead letters counted by reason and by source: what `dlq list` prints before the rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    /// Letters matching the filter.
    pub total: u64,
    /// Per reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Per source (endpoint name or `push:<relay>`).
    pub by_source: BTreeMap<String, u64>,
}

impl DeadLetterSummary {
    /// The counts of `rows` that `filter` covers (its reason and source; ids are not counted).
    pub fn of(rows: &[DeadLetterCount], filter: &Filter) -> Self {
        let mut out = Self::default();
        for r in rows
            .iter()
            .filter(|r| filter.matches_kind(&r.source, &r.reason))
        {
            out.total += r.count;
            *out.by_reason.entry(r.reason.clone()).or_default() += r.count;
            *out.by_source.entry(r.source.clone()).or_default() += r.count;
        }
        out
    }
}

/// The dead letters `filter` covers, counted by reason and by source.
///
/// # Errors
/// When the store cannot be read.
pub async fn summarize(
    store: &AnyStore,
    filter: &Filter,
) -> Result<DeadLetterSummary, CommandError> {
    Ok(DeadLetterSummary::of(
        &store.dead_letter_counts().await?,
        filter,
    ))
}

/// What a replay does with one dead letter, or on a dry run would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It passes every check now: queued, for the workers to store.
    Passes,
    /// It fails again, with this reason and detail; it stays where it is.
    FailsAgain {
        /// The new reason.
        reason: RejectReason,
        /// What is wrong, as a new dead letter would say it.
        detail: String,
    },
}

/// One letter as a replay judged it, for the dry run's report.
#[derive(Debug, Clone)]
pub struct LetterCheck<'a> {
    /// The letter.
    pub letter: &'a StoredDeadLetter,
    /// What the replay does with it.
    pub verdict: Verdict,
    /// Its source is neither a configured endpoint nor push, so its naive times were read in
    /// the endpoint default zone.
    pub unknown_source: bool,
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
            source,
            detail,
            json,
        } => {
            let filter = Filter {
                reason,
                source,
                ids: Vec::new(),
            };
            let letters = list(&store, &filter, limit).await?;
            if json {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                let summary = summarize(&store, &filter).await?;
                print!("{}", render_summary(&summary, letters.len()));
                print!("{}", render_list(&letters, detail));
            }
        }
        DlqCommand::Show { id } => {
            let d = show(&store, id).await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        DlqCommand::Replay {
            reason,
            source,
            ids,
            dry_run,
        } => {
            let (queue, spool) = attach_queue(&settings).await?;
            let handoff = Handoff::new(queue, spool, settings.queue.handoff_deadline);
            let filter = Filter {
                reason,
                source,
                ids,
            };
            // A dry run's per-letter report goes to stdout; the progress line would garble it.
            let progress = !dry_run && std::io::stderr().is_terminal();
            let mut header = false;
            let mut report = |c: &LetterCheck<'_>| {
                if !dry_run {
                    return;
                }
                if !header {
                    header = true;
                    println!("{}", verdict_header());
                }
                println!("{}", render_verdict(c));
            };
            let s = replay(
                &settings,
                &store,
                &handoff,
                &filter,
                dry_run,
                progress,
                &mut report,
            )
            .await?;
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

/// `text` on one line (line breaks and tabs as spaces), cut to `max` characters with `…`.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `(name, count)` largest first, then by name.
fn by_count(counts: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = counts.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

fn render_summary(s: &DeadLetterSummary, shown: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "Dead letters: {}", s.total);
    if s.total == 0 {
        return out;
    }
    let width = s
        .by_reason
        .keys()
        .chain(s.by_source.keys())
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(20);
    for (title, counts) in [("BY REASON", &s.by_reason), ("BY SOURCE", &s.by_source)] {
        let _ = writeln!(out, "  {title:<width$}  {:>9}", "COUNT");
        for (name, n) in by_count(counts) {
            let _ = writeln!(out, "  {name:<width$}  {n:>9}");
        }
    }
    let _ = writeln!(
        out,
        "\nThe {shown} newest{}:",
        if (shown as u64) < s.total {
            " (--limit for more, --detail for whole details, dlq show <ID> for one)"
        } else {
            " (--detail for whole details, dlq show <ID> for one)"
        }
    );
    out
}

fn render_list(letters: &[StoredDeadLetter], detail: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if letters.is_empty() {
        let _ = writeln!(out, "(no dead letters)");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>8}  {:<19}  {:<20}  {:<20}  DETAIL",
        "ID", "REJECTED (UTC)", "SOURCE", "REASON"
    );
    for d in letters {
        let _ = writeln!(
            out,
            "{:>8}  {:<19}  {:<20}  {:<20}  {}",
            d.id,
            d.letter.rejected_at.format("%Y-%m-%d %H:%M:%S"),
            d.letter.source,
            d.letter.reason.as_str(),
            one_line(&d.letter.detail, DETAIL_CHARS),
        );
        if detail {
            let indent = " ".repeat(10);
            for (label, text) in [("detail", &d.letter.detail), ("raw", &d.letter.raw)] {
                let mut lines = text.lines();
                let first = lines.next().unwrap_or_default();
                let _ = writeln!(out, "{indent}{label:<7} {first}");
                for more in lines {
                    let _ = writeln!(out, "{indent}        {more}");
                }
            }
        }
    }
    out
}

fn verdict_header() -> String {
    format!("{:>8}  {:<20}  {:<20}  DRY RUN", "ID", "SOURCE", "WAS")
}

/// One line of a dry run: the letter, and what the replay would do with it.
fn render_verdict(c: &LetterCheck<'_>) -> String {
    let d = c.letter;
    let what = match (&c.verdict, d.letter.reason) {
        (Verdict::Passes, RejectReason::StoreRejected) => format!(
            "would be queued: it validates, but the database refused it before, which a dry run cannot re-check (dlq show {})",
            d.id
        ),
        (Verdict::Passes, _) => "would be stored".to_owned(),
        (Verdict::FailsAgain { reason, detail }, _) => format!(
            "fails again: {reason}: {}",
            one_line(detail, VERDICT_DETAIL_CHARS)
        ),
    };
    let note = if c.unknown_source {
        format!(
            " (source is not a configured endpoint: times without an offset read in {FALLBACK_TZ})"
        )
    } else {
        String::new()
    };
    format!(
        "{:>8}  {:<20}  {:<20}  {what}{note}",
        d.id,
        d.letter.source,
        d.letter.reason.as_str()
    )
}

/// What a replay does with `letter` read in `ctx`: parse and validate it as a puller would,
/// then ask the store whether it could hold the record at all.
///
/// # Errors
/// The reason and detail it fails with again.
pub fn check(
    letter: &StoredDeadLetter,
    ctx: &RecordContext,
    store: &AnyStore,
) -> Result<Record, (RejectReason, String)> {
    let record = parse_record(&letter.letter.raw, ctx).map_err(|d| (d.reason, d.detail))?;
    match store.refusal(&record) {
        Some(why) => Err((RejectReason::StoreRejected, why)),
        None => Ok(record),
    }
}

/// Re-validates the matching dead letters and re-queues those that pass (see the module docs);
/// `report` hears each letter's [`Verdict`] (on a dry run too, where nothing else happens).
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
    report: &mut (dyn FnMut(&LetterCheck<'_>) + Send),
) -> Result<ReplaySummary, CommandError> {
    let total: u64 = if filter.ids.is_empty() {
        summarize(store, filter).await?.total
    } else {
        filter.ids.len() as u64
    };
    let zones: HashMap<&str, Tz> = settings
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.timezone))
        .collect();
    // The zone naive times of `source` are read in, `None` for a source botpipe has no
    // configuration for (an endpoint since removed or renamed).
    let zone = |source: &str| {
        if source.starts_with("push:") {
            Some(settings.push.timezone)
        } else {
            zones.get(source).copied()
        }
    };
    let context = |source: &str| RecordContext {
        source: source.to_owned(),
        tz: zone(source).unwrap_or(FALLBACK_TZ),
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
            let verdict = match check(d, &context(&d.letter.source), store) {
                Ok(r) => {
                    summary.replayed += 1;
                    let slot = pending.entry(d.letter.source.clone()).or_default();
                    slot.0.push(r);
                    slot.1.push(d.id);
                    Verdict::Passes
                }
                Err((reason, detail)) => {
                    *summary
                        .still_invalid
                        .entry(reason.as_str().to_owned())
                        .or_default() += 1;
                    Verdict::FailsAgain { reason, detail }
                }
            };
            report(&LetterCheck {
                letter: d,
                verdict,
                unknown_source: zone(&d.letter.source).is_none(),
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DeadLetter;

    fn count(source: &str, reason: &str, count: u64) -> DeadLetterCount {
        DeadLetterCount {
            source: source.into(),
            reason: reason.into(),
            count,
        }
    }

    fn letter(id: i64, reason: RejectReason, detail: &str) -> StoredDeadLetter {
        StoredDeadLetter {
            id,
            letter: DeadLetter {
                source: "east".into(),
                reason,
                detail: detail.into(),
                raw: "{\"ip\":\"10.0.0.1\"}".into(),
                rejected_at: chrono::DateTime::from_timestamp(1_772_000_000, 0).unwrap(),
            },
        }
    }

    #[test]
    fn the_summary_counts_per_reason_and_per_source_within_the_filter() {
        let rows = [
            count("east", "bad_ip", 3),
            count("east", "unknown_botnet_type", 10),
            count("push:relay", "bad_ip", 2),
        ];
        let all = DeadLetterSummary::of(&rows, &Filter::default());
        assert_eq!(all.total, 15);
        assert_eq!(all.by_reason["bad_ip"], 5);
        assert_eq!(all.by_reason["unknown_botnet_type"], 10);
        assert_eq!(all.by_source["east"], 13);
        assert_eq!(all.by_source["push:relay"], 2);

        let bad_ip = Filter {
            reason: Some("bad_ip".into()),
            ..Filter::default()
        };
        let s = DeadLetterSummary::of(&rows, &bad_ip);
        assert_eq!(s.total, 5);
        assert_eq!(s.by_source["east"], 3);
        assert!(!s.by_reason.contains_key("unknown_botnet_type"));

        let relay = Filter {
            source: Some("push:relay".into()),
            ..Filter::default()
        };
        assert_eq!(DeadLetterSummary::of(&rows, &relay).total, 2);

        let text = render_summary(&all, 2);
        let reason_at = text.find("BY REASON").unwrap();
        let source_at = text.find("BY SOURCE").unwrap();
        assert!(reason_at < source_at, "{text}");
        // Largest first.
        assert!(
            text.find("unknown_botnet_type").unwrap()
                < text[reason_at..].find("bad_ip").unwrap() + reason_at,
            "{text}"
        );
        assert!(text.contains("The 2 newest (--limit for more"), "{text}");
    }

    #[test]
    fn rows_are_one_line_each_unless_the_whole_detail_is_asked_for() {
        let long = format!("first line\nsecond\t{}", "x".repeat(200));
        let letters = [letter(7, RejectReason::StoreRejected, &long)];
        let table = render_list(&letters, false);
        assert_eq!(table.lines().count(), 2, "{table}");
        let row = table.lines().nth(1).unwrap();
        assert!(row.contains("first line second "), "{row}");
        assert!(row.ends_with('…'), "{row}");
        assert!(!row.contains(&"x".repeat(DETAIL_CHARS)), "{row}");

        let whole = render_list(&letters, true);
        assert!(whole.contains(&"x".repeat(200)), "{whole}");
        assert!(whole.contains("raw     {\"ip\":\"10.0.0.1\"}"), "{whole}");
        assert!(whole.contains("        second\t"), "{whole}");

        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
    }

    #[test]
    fn a_dry_run_line_says_what_would_happen_and_why() {
        let d = letter(12, RejectReason::UnknownBotnetType, "not allowed");
        let passes = LetterCheck {
            letter: &d,
            verdict: Verdict::Passes,
            unknown_source: false,
        };
        let line = render_verdict(&passes);
        assert!(line.contains("unknown_botnet_type"), "{line}");
        assert!(line.ends_with("would be stored"), "{line}");

        let fails = LetterCheck {
            letter: &d,
            verdict: Verdict::FailsAgain {
                reason: RejectReason::BadIp,
                detail: "10.0.0.1 is not public".into(),
            },
            unknown_source: true,
        };
        let line = render_verdict(&fails);
        assert!(
            line.contains("fails again: bad_ip: 10.0.0.1 is not public"),
            "{line}"
        );
        assert!(line.contains("not a configured endpoint"), "{line}");

        let refused = letter(13, RejectReason::StoreRejected, "out of range");
        let line = render_verdict(&LetterCheck {
            letter: &refused,
            verdict: Verdict::Passes,
            unknown_source: false,
        });
        assert!(line.contains("would be queued"), "{line}");
        assert!(line.contains("dlq show 13"), "{line}");
    }
}
