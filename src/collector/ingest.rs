//! [`Ingest`]: the collector's reading loop, on a dedicated thread with its own cache connection,
//! so neither file I/O nor SQLite ever runs on the async executor.
//!
//! One cycle ([`Ingest::try_cycle_one`]) visits every source: a file source scans its pattern
//! and reads the files that changed, a table source reads the rows after its cursor. Each chunk
//! (at most `read_batch` lines or rows) is one cache transaction holding its records and the
//! source's new position, committed before the in-memory position moves; a failed commit leaves
//! both where they were, and the chunk is read again on the next cycle.
//!
//! Read-side backpressure: when the unpulled rows reach `max_unpulled`, reading pauses (the logs
//! and the reports table keep the data) until they fall below `resume_below`. Chunks are sized so
//! the cap is not overshot. Confirmed rows older than the retention period are deleted by the
//! same thread, in small transactions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};

use super::cache::{Cache, CacheError, NewRecord, PositionUpdate, RETENTION_DELETE_BATCH};
use super::config::{CollectorSettings, LineParser, SourceKind, SourceSettings};
use super::sources::{Event, Outcome, TableBatch, TableReader};
use super::tail::{Line, Tailer};
use crate::telemetry::metrics as m;

/// How often confirmed rows past their retention are looked for.
pub const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Chunks one source may commit per cycle before the others get their turn.
pub const MAX_CHUNKS_PER_SOURCE_PER_CYCLE: u32 = 16;
/// Shortest time between two log lines about the same failing source.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// What one cycle did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleOutcome {
    /// New records stored.
    pub stored: u64,
    /// A source stopped at its per-cycle chunk limit: run again without waiting.
    pub more: bool,
    /// Reading is paused by backpressure.
    pub paused: bool,
}

enum Reader {
    Lines { tailer: Tailer, parser: LineParser },
    Table { reader: TableReader, last_id: i64 },
}

struct Source {
    settings: SourceSettings,
    reader: Reader,
    errors: ErrorLog,
}

/// The last read error of a source, to log repeated failures once per [`ERROR_LOG_INTERVAL`].
#[derive(Default)]
struct ErrorLog(Option<(String, Instant)>);

impl ErrorLog {
    fn report(&mut self, source: &str, error: &dyn std::error::Error) {
        counter!(m::COLLECTOR_SOURCE_ERRORS_TOTAL, "source" => source.to_owned()).increment(1);
        let text = error.to_string();
        let quiet = self
            .0
            .as_ref()
            .is_some_and(|(t, at)| *t == text && at.elapsed() < ERROR_LOG_INTERVAL);
        if !quiet {
            tracing::warn!(source, error = %text, "Source read failed; retrying next scan.");
            self.0 = Some((text, Instant::now()));
        }
    }

    fn recovered(&mut self, source: &str) {
        if self.0.take().is_some() {
            tracing::info!(source, "Source readable again.");
        }
    }
}

/// Per-chunk outcome counts, emitted once per chunk rather than per line.
#[derive(Default)]
struct Tally([u64; 8]);

impl Tally {
    const ORDER: [Outcome; 8] = [
        Outcome::Stored,
        Outcome::Duplicate,
        Outcome::NoMatch,
        Outcome::BadIp,
        Outcome::NonPublicIp,
        Outcome::BadTimestamp,
        Outcome::FilteredStatus,
        Outcome::Oversized,
    ];

    fn add(&mut self, o: Outcome, n: u64) {
        if let Some(i) = Self::ORDER.iter().position(|x| *x == o) {
            self.0[i] += n;
        }
    }

    fn emit(&self, source: &str) {
        for (o, n) in Self::ORDER.iter().zip(self.0) {
            if n > 0 {
                counter!(m::COLLECTOR_LINES_TOTAL, "source" => source.to_owned(), "outcome" => o.as_str())
                    .increment(n);
            }
        }
    }
}

/// The reading side of a collector.
pub struct Ingest {
    cache: Cache,
    sources: Vec<Source>,
    max_unpulled: u64,
    resume_below: u64,
    read_batch: u32,
    scan_interval: Duration,
    retention: Duration,
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    last_sweep: Option<Instant>,
    last_cache_error: Option<(String, Instant)>,
}

impl Ingest {
    /// Opens its own cache connection and loads every source's saved position. Blocking: call
    /// it from a blocking context.
    ///
    /// # Errors
    /// When the cache cannot be opened or read.
    pub fn build(
        settings: &CollectorSettings,
        paused: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, CacheError> {
        let cache = Cache::open(&settings.cache_path)?;
        let mut sources = Vec::with_capacity(settings.sources.len());
        for s in &settings.sources {
            let reader = match &s.kind {
                SourceKind::Lines {
                    files,
                    parser,
                    ignore_older_than,
                } => Reader::Lines {
                    tailer: Tailer::new(
                        &s.name,
                        files,
                        *ignore_older_than,
                        cache.file_positions(&s.name)?,
                    ),
                    parser: parser.clone(),
                },
                SourceKind::Table(spec) => Reader::Table {
                    reader: TableReader::new(&s.name, spec.clone()),
                    last_id: cache.table_cursor(&s.name)?.unwrap_or(0),
                },
            };
            sources.push(Source {
                settings: s.clone(),
                reader,
                errors: ErrorLog::default(),
            });
        }
        Ok(Self {
            cache,
            sources,
            max_unpulled: settings.max_unpulled,
            resume_below: settings.resume_below,
            read_batch: settings.read_batch,
            scan_interval: settings.scan_interval,
            retention: settings.retention,
            paused,
            stop,
            last_sweep: None,
            last_cache_error: None,
        })
    }

    /// Runs cycles every scan interval until `stop` is set or `wake`'s senders are all gone. A
    /// message on `wake` (a confirm freed room) starts the next cycle at once.
    pub fn run_until_stopped(mut self, wake: Receiver<()>) {
        tracing::info!(
            sources = self.sources.len(),
            cache = %self.cache.path().display(),
            "Collector reading started."
        );
        loop {
            if self.stopping() {
                break;
            }
            let started = Instant::now();
            let outcome = match self.try_cycle_one() {
                Ok(o) => {
                    if self.last_cache_error.take().is_some() {
                        tracing::info!("Collector cache writable again.");
                    }
                    o
                }
                Err(e) => {
                    self.report_cache_error(&e);
                    CycleOutcome::default()
                }
            };
            histogram!(m::COLLECTOR_SCAN_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
            if self.stopping() {
                break;
            }
            if outcome.more && !outcome.paused {
                continue;
            }
            match wake.recv_timeout(self.scan_interval) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::info!("Collector reading stopped.");
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn report_cache_error(&mut self, e: &CacheError) {
        let text = e.to_string();
        let quiet = self
            .last_cache_error
            .as_ref()
            .is_some_and(|(t, at)| *t == text && at.elapsed() < ERROR_LOG_INTERVAL);
        if !quiet {
            // ERROR: nothing is lost (positions did not move), but the operator must act.
            tracing::error!(error = %text, retryable = e.is_retryable(), "Collector cache write failed; positions kept, retrying.");
            self.last_cache_error = Some((text, Instant::now()));
        }
    }

    /// One pass over every source, then the retention sweep when due.
    ///
    /// # Errors
    /// When the cache fails; source read errors are logged and skipped.
    pub fn try_cycle_one(&mut self) -> Result<CycleOutcome, CacheError> {
        let mut unpulled = self.cache.unpulled()?;
        let mut paused = self.paused.load(Ordering::Relaxed);
        if paused && unpulled < self.resume_below {
            paused = false;
            tracing::info!(unpulled, "Collector reading resumed.");
        } else if !paused && unpulled >= self.max_unpulled {
            paused = true;
            tracing::warn!(
                unpulled,
                max_unpulled = self.max_unpulled,
                "Collector reading paused: too many unpulled records."
            );
        }
        let mut outcome = CycleOutcome::default();
        if !paused {
            for i in 0..self.sources.len() {
                if self.stopping() {
                    break;
                }
                let budget = self.max_unpulled.saturating_sub(unpulled);
                let (stored, more) = self.read_source(i, budget)?;
                outcome.stored += stored;
                outcome.more |= more;
                unpulled += stored;
                if unpulled >= self.max_unpulled {
                    paused = true;
                    tracing::warn!(
                        unpulled,
                        max_unpulled = self.max_unpulled,
                        "Collector reading paused: too many unpulled records."
                    );
                    break;
                }
            }
        }
        self.paused.store(paused, Ordering::Relaxed);
        outcome.paused = paused;

        if self
            .last_sweep
            .is_none_or(|t| t.elapsed() >= RETENTION_SWEEP_INTERVAL)
        {
            self.sweep()?;
            self.last_sweep = Some(Instant::now());
        }

        let stats = self.cache.stats()?;
        gauge!(m::COLLECTOR_UNPULLED_RECORDS).set(stats.unpulled as f64);
        gauge!(m::COLLECTOR_MAX_SEQ_ID).set(stats.max_seq_id as f64);
        gauge!(m::COLLECTOR_READING_PAUSED).set(if paused { 1.0 } else { 0.0 });
        Ok(outcome)
    }

    fn sweep(&mut self) -> Result<(), CacheError> {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(retention_ms);
        loop {
            let deleted = self
                .cache
                .delete_confirmed_before(cutoff, RETENTION_DELETE_BATCH)?;
            counter!(m::COLLECTOR_EXPIRED_RECORDS_TOTAL).increment(deleted);
            if deleted < u64::from(RETENTION_DELETE_BATCH) || self.stopping() {
                return Ok(());
            }
        }
    }

    /// Reads one source up to `budget` new records; returns records stored and whether it
    /// stopped at its chunk limit with more to read.
    fn read_source(&mut self, i: usize, mut budget: u64) -> Result<(u64, bool), CacheError> {
        let read_batch = u64::from(self.read_batch);
        let max_items = |budget: u64| budget.min(read_batch) as usize;
        let stop = Arc::clone(&self.stop);
        let cache = &mut self.cache;
        let Source {
            settings,
            reader,
            errors,
        } = &mut self.sources[i];
        let name = settings.name.clone();
        let botnet_type = settings.botnet_type.as_str().to_owned();
        let log_type = settings.log_type.as_str();
        let to_record = |e: Event| NewRecord {
            botnet_type: botnet_type.clone(),
            log_type,
            ip: e.ip.to_string(),
            timestamp: e.timestamp,
        };
        let mut stored = 0u64;
        let mut chunks = 0u32;

        match reader {
            Reader::Lines { tailer, parser } => {
                let scan = match tailer.scan() {
                    Ok(s) => s,
                    Err(e) => {
                        errors.report(&name, &e);
                        return Ok((0, false));
                    }
                };
                for id in scan.gone {
                    cache.forget_file(&name, id)?;
                }
                let mut failed = None;
                'files: for id in scan.to_read {
                    loop {
                        if budget == 0 || stop.load(Ordering::Relaxed) {
                            break 'files;
                        }
                        if chunks >= MAX_CHUNKS_PER_SOURCE_PER_CYCLE {
                            return Ok((stored, true));
                        }
                        let chunk = match tailer.read_chunk(id, max_items(budget)) {
                            Ok(Some(c)) => c,
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        };
                        let mut tally = Tally::default();
                        let mut records = Vec::with_capacity(chunk.lines.len());
                        for line in &chunk.lines {
                            match line {
                                Line::Text(text) => match parser.parse_line(text) {
                                    Ok(e) => records.push(to_record(e)),
                                    Err(o) => tally.add(o, 1),
                                },
                                Line::Oversized => tally.add(Outcome::Oversized, 1),
                            }
                        }
                        if let Some(reset) = chunk.reset {
                            tracing::warn!(source = %name, file = %chunk.next.path.display(), reason = reset.as_str(), "File restarted from its beginning.");
                            counter!(m::COLLECTOR_FILE_RESETS_TOTAL, "source" => name.clone(), "reason" => reset.as_str())
                                .increment(1);
                        }
                        let inserted = cache.commit(
                            &name,
                            &records,
                            &PositionUpdate::File(chunk.next.clone()),
                        )?;
                        tailer.advance(chunk.next);
                        tally.add(Outcome::Stored, inserted);
                        tally.add(Outcome::Duplicate, records.len() as u64 - inserted);
                        tally.emit(&name);
                        stored += inserted;
                        budget = budget.saturating_sub(inserted);
                        chunks += 1;
                    }
                }
                match failed {
                    Some(e) => errors.report(&name, &e),
                    None => errors.recovered(&name),
                }
            }
            Reader::Table { reader, last_id } => loop {
                if budget == 0 || stop.load(Ordering::Relaxed) {
                    break;
                }
                if chunks >= MAX_CHUNKS_PER_SOURCE_PER_CYCLE {
                    return Ok((stored, true));
                }
                let limit = max_items(budget);
                let TableBatch { rows, max_id } = match reader.read_after(*last_id, limit as u32) {
                    Ok(Some(r)) => {
                        errors.recovered(&name);
                        r
                    }
                    Ok(None) => break,
                    Err(e) => {
                        errors.report(&name, &*e);
                        break;
                    }
                };
                let Some(new_last) = rows.last().map(|r| r.id) else {
                    if max_id.unwrap_or(0) < *last_id {
                        // The table was recreated (its ids restarted): read it again; the dedup
                        // key absorbs rows still in the cache.
                        tracing::warn!(source = %name, database = %reader.database().display(), last_id = *last_id, "Reports table restarted its ids; reading it from the start.");
                        counter!(m::COLLECTOR_FILE_RESETS_TOTAL, "source" => name.clone(), "reason" => "table_restarted")
                            .increment(1);
                        cache.commit(&name, &[], &PositionUpdate::Table(0))?;
                        *last_id = 0;
                        continue;
                    }
                    break;
                };
                let mut tally = Tally::default();
                let full = rows.len() == limit;
                let mut records = Vec::with_capacity(rows.len());
                for row in rows {
                    match row.event {
                        Ok(e) => records.push(to_record(e)),
                        Err(o) => tally.add(o, 1),
                    }
                }
                let inserted = cache.commit(&name, &records, &PositionUpdate::Table(new_last))?;
                *last_id = new_last;
                tally.add(Outcome::Stored, inserted);
                tally.add(Outcome::Duplicate, records.len() as u64 - inserted);
                tally.emit(&name);
                stored += inserted;
                budget = budget.saturating_sub(inserted);
                chunks += 1;
                if !full {
                    break;
                }
            },
        }
        Ok((stored, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::cache::PullFilter;
    use crate::collector::config::CollectorConfig;
    use std::io::Write;
    use std::path::Path;

    fn settings(dir: &Path, extra: &str) -> CollectorSettings {
        let text = format!(
            r#"
            api_key = "k"
            cache_path = "{cache}"
            scan_interval = "10ms"
            read_batch = 3
            {extra}
            [[sources]]
            name = "gen"
            kind = "csv"
            botnet_type = "mozi"
            path = "{dir}/test_{{datetime}}.log"
            [[sources]]
            name = "cleanup"
            kind = "sqlite"
            botnet_type = "mozi"
            database = "{dir}/reports.db"
            "#,
            cache = dir.join("cache.sqlite").display(),
            dir = dir.display(),
        );
        let raw: CollectorConfig = toml::from_str(&text).unwrap();
        CollectorSettings::try_from(raw).unwrap()
    }

    fn ingest(s: &CollectorSettings) -> Ingest {
        Ingest::build(
            s,
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap()
    }

    fn write_lines(path: &Path, from: u32, to: u32) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for i in from..to {
            writeln!(
                f,
                "2026-01-16 16:{:02}:{:02},45.33.{}.{}",
                i / 60 % 60,
                i % 60,
                i / 250,
                i % 250 + 1
            )
            .unwrap();
        }
    }

    fn all(cache: &mut Cache) -> Vec<(i64, String, String)> {
        let (rows, _) = cache.pull(&PullFilter::All, 5000, false).unwrap();
        rows.into_iter()
            .map(|r| (r.seq_id, r.ip, r.log_type))
            .collect()
    }

    #[test]
    fn files_and_a_growing_reports_table_become_seq_numbered_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), "");
        let mut ing = ingest(&s);
        // More than MAX_CHUNKS_PER_SOURCE_PER_CYCLE chunks of read_batch (3) lines: the source
        // yields its turn and the cycle asks to run again at once.
        write_lines(&dir.path().join("test_2026-01-16_16.log"), 0, 60);
        assert!(ing.try_cycle_one().unwrap().more);
        while ing.try_cycle_one().unwrap().more {}
        let db = rusqlite::Connection::open(dir.path().join("reports.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE reports(id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT,
             client_ip TEXT, timestamp DATETIME, status TEXT);
             INSERT INTO reports(client_ip, timestamp, status) VALUES
             ('14.19.132.125', '2026-03-03T16:38:34', 'SUCCESS'),
             ('14.19.132.126', '2026-03-03T16:38:35', 'FAILED');",
        )
        .unwrap();
        ing.try_cycle_one().unwrap();
        db.execute_batch(
            "INSERT INTO reports(client_ip, timestamp, status) VALUES
             ('14.19.132.127', '2026-03-03T16:38:36', 'SUCCESS')",
        )
        .unwrap();
        ing.try_cycle_one().unwrap();
        let mut api = Cache::open(&s.cache_path).unwrap();
        let rows = all(&mut api);
        assert_eq!(rows.len(), 62);
        assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
        let cleanups: Vec<_> = rows
            .iter()
            .filter(|r| r.2 == "cleanup")
            .map(|r| r.1.as_str())
            .collect();
        assert_eq!(cleanups, ["14.19.132.125", "14.19.132.127"]);
        assert_eq!(api.table_cursor("cleanup").unwrap(), Some(3));
    }

    #[test]
    fn restart_resumes_without_loss_or_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), "");
        let f = dir.path().join("test_2026-01-16_16.log");
        write_lines(&f, 0, 7);
        let mut ing = ingest(&s);
        ing.try_cycle_one().unwrap();
        drop(ing);
        write_lines(&f, 7, 20);
        let mut ing = ingest(&s);
        while ing.try_cycle_one().unwrap().more {}
        let mut api = Cache::open(&s.cache_path).unwrap();
        let rows = all(&mut api);
        assert_eq!(rows.len(), 20);
        assert_eq!(api.stats().unwrap().total_generated, 20);
    }

    #[test]
    fn reading_pauses_at_the_cap_and_resumes_below_the_low_mark() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), "max_unpulled = 10\nresume_below = 5");
        write_lines(&dir.path().join("test_2026-01-16_16.log"), 0, 30);
        let mut ing = ingest(&s);
        let mut api = Cache::open(&s.cache_path).unwrap();
        let o = ing.try_cycle_one().unwrap();
        assert!(o.paused);
        assert_eq!(api.unpulled().unwrap(), 10, "the cap is not overshot");
        ing.try_cycle_one().unwrap();
        assert_eq!(api.unpulled().unwrap(), 10);

        api.confirm(crate::collector::cache::ConfirmScope::Oldest(4))
            .unwrap();
        assert!(ing.try_cycle_one().unwrap().paused, "6 is not below 5");
        api.confirm(crate::collector::cache::ConfirmScope::Oldest(2))
            .unwrap();
        let o = ing.try_cycle_one().unwrap();
        assert!(o.paused, "resumed, read up to the cap, paused again");
        assert_eq!(api.unpulled().unwrap(), 10);
        assert_eq!(api.stats().unwrap().total_generated, 16);
    }
}
