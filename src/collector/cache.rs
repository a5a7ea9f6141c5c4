//! [`Cache`]: the collector's seq-numbered record cache in one SQLite file (WAL,
//! `synchronous=FULL`).
//!
//! Invariants, each the fix of a legacy collector defect:
//! - A record's `seq_id` is its `INTEGER PRIMARY KEY AUTOINCREMENT`, assigned by the INSERT that
//!   stores the row. `AUTOINCREMENT` keeps the high-water mark in `sqlite_sequence`, in the same
//!   transaction, so a crash can never hand out a seq id twice, and deleting rows (retention)
//!   never lowers it.
//! - A source's read position is written in the transaction that stores the rows read up to it
//!   ([`Cache::commit`]): either both are durable or neither, so a crash neither skips nor
//!   repeats lines.
//! - The dedup key is `(botnet_type, log_type, ip, timestamp)`, a unique index; a duplicate line
//!   is ignored while its first copy is in the cache (pulled or not).
//! - The epoch is a random id written when the file is created; a new file means a new epoch.
//! - The counters `generated`, `pulled` and `deleted` change in the same transactions as the rows
//!   they count, so `unpulled = generated - pulled` is exact and costs no `COUNT(*)`.
//!
//! A [`Cache`] owns one connection and is used from one thread at a time: the ingest thread owns
//! one, and the API holds another behind a mutex on the blocking pool. WAL lets the API read
//! while ingest writes; writers wait for each other up to [`BUSY_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// How long a writer waits for the other connection's transaction before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most rows the retention sweep deletes per transaction, so a pull never waits long for it.
pub const RETENTION_DELETE_BATCH: u32 = 10_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS collector_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS collector_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS collector_records (
    seq_id INTEGER PRIMARY KEY AUTOINCREMENT,
    botnet_type TEXT NOT NULL,
    log_type TEXT NOT NULL,
    ip TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    source TEXT NOT NULL,
    inserted_at_ms INTEGER NOT NULL,
    pulled_at_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS collector_records_event
    ON collector_records (botnet_type, log_type, ip, timestamp);
CREATE INDEX IF NOT EXISTS collector_records_unpulled
    ON collector_records (seq_id) WHERE pulled_at_ms IS NULL;
CREATE INDEX IF NOT EXISTS collector_records_pulled
    ON collector_records (pulled_at_ms) WHERE pulled_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS collector_file_positions (
    source TEXT NOT NULL,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    path TEXT NOT NULL,
    offset INTEGER NOT NULL,
    head BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, dev, ino)
);
CREATE TABLE IF NOT EXISTS collector_table_cursors (
    source TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO collector_counters (name, value)
    VALUES ('generated', 0), ('pulled', 0), ('deleted', 0);
";

/// Meta key of the epoch.
const EPOCH_KEY: &str = "epoch";
/// Meta key of the creation time.
const CREATED_KEY: &str = "created_at";

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
#[error("collector cache {path}: {op}: {source}")]
pub struct CacheError {
    /// The cache file.
    pub path: PathBuf,
    /// What was being done.
    pub op: &'static str,
    /// The SQLite error.
    #[source]
    pub source: rusqlite::Error,
}

impl CacheError {
    /// True when the same call may succeed later (a lock held too long, a full disk freed);
    /// false for a corrupt or unreadable file.
    pub fn is_retryable(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match &self.source {
            rusqlite::Error::SqliteFailure(e, _) => matches!(
                e.code,
                C::DatabaseBusy | C::DatabaseLocked | C::DiskFull | C::SystemIoFailure
            ),
            _ => false,
        }
    }
}

/// A file's identity: device and inode, which survive renames and tell a new file from an old
/// one with the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

/// How far a file has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    /// The file's identity.
    pub id: FileId,
    /// Where it was last seen.
    pub path: PathBuf,
    /// Bytes consumed: always just after a newline.
    pub offset: u64,
    /// The file's first bytes (up to 64, never past `offset`), to notice a file replaced under a
    /// reused inode or truncated and regrown past `offset` between two scans.
    pub head: Vec<u8>,
}

/// The position saved together with a chunk of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionUpdate {
    /// A tailed file.
    File(FilePosition),
    /// A table source: the last id read.
    Table(i64),
}

/// A record about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Botnet type name.
    pub botnet_type: String,
    /// `online` or `cleanup`.
    pub log_type: &'static str,
    /// Normalised IP text.
    pub ip: String,
    /// Normalised timestamp (`YYYY-MM-DDTHH:MM:SS`, naive local time, optional offset).
    pub timestamp: String,
}

/// A stored record as the pull API serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRecord {
    /// Its seq id.
    pub seq_id: i64,
    /// IP text.
    pub ip: String,
    /// Timestamp text.
    pub timestamp: String,
    /// Botnet type.
    pub botnet_type: String,
    /// Log type.
    pub log_type: String,
}

/// Counts served as `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Rows waiting to be pulled.
    pub unpulled: u64,
    /// Confirmed rows kept for the retention period.
    pub pulled: u64,
    /// Rows ever stored in this epoch.
    pub total_generated: u64,
    /// Rows ever confirmed in this epoch.
    pub total_pulled: u64,
    /// Highest seq id ever assigned in this epoch (0 before the first).
    pub max_seq_id: i64,
}

/// Which unpulled rows a pull asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullFilter {
    /// Every unpulled row.
    All,
    /// `seq_id > n`.
    SinceSeq(i64),
    /// `timestamp >= s`, compared as strings (the legacy behaviour).
    SinceTimestamp(String),
}

/// What a confirm marks as pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmScope {
    /// The `n` oldest unpulled rows (legacy, positional).
    Oldest(u64),
    /// Every unpulled row with `seq_id <= s` (idempotent).
    UpToSeq(i64),
}

/// One SQLite connection to the cache file.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    conn: Connection,
    epoch: String,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Cache {
    /// Opens the cache, creating the file, its directory, its schema and its epoch if needed.
    ///
    /// # Errors
    /// When the file cannot be opened or initialised.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let err = |op| fail(path, op);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CacheError {
                path: path.to_path_buf(),
                op: "creating the directory",
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("{}: {e}", dir.display())),
                ),
            })?;
        }
        let mut conn = Connection::open(path).map_err(err("opening"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("configuring"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enabling WAL"))?;
        // FULL: a commit is on disk before the API can serve its seq ids. With NORMAL a power cut
        // could lose rows a puller already confirmed, and their seq ids would be handed out again.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("configuring"))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("creating the schema"))?;
        tx.execute_batch(SCHEMA)
            .map_err(err("creating the schema"))?;
        tx.execute(
            "INSERT OR IGNORE INTO collector_meta (key, value) VALUES (?1, ?2), (?3, ?4)",
            params![
                EPOCH_KEY,
                uuid::Uuid::new_v4().to_string(),
                CREATED_KEY,
                chrono::Utc::now().to_rfc3339()
            ],
        )
        .map_err(err("creating the epoch"))?;
        let epoch: String = tx
            .query_row(
                "SELECT value FROM collector_meta WHERE key = ?1",
                [EPOCH_KEY],
                |r| r.get(0),
            )
            .map_err(err("reading the epoch"))?;
        tx.commit().map_err(err("creating the schema"))?;
        Ok(Self {
            path: path.to_path_buf(),
            conn,
            epoch,
        })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The epoch id, fixed for the life of the file.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> CacheError + '_ {
        move |source| CacheError {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Stores `records` (ignoring duplicates) and saves `position` for `source`, in one
    /// transaction. Returns how many records were new.
    ///
    /// # Errors
    /// When the transaction fails; then nothing was stored and the position did not move.
    pub fn commit(
        &mut self,
        source: &str,
        records: &[NewRecord],
        position: &PositionUpdate,
    ) -> Result<u64, CacheError> {
        let path = self.path.as_path();
        let err = |op| fail(path, op);
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("storing records"))?;
        let mut inserted = 0u64;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO collector_records
                     (botnet_type, log_type, ip, timestamp, source, inserted_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err("storing records"))?;
            for r in records {
                inserted += insert
                    .execute(params![
                        r.botnet_type,
                        r.log_type,
                        r.ip,
                        r.timestamp,
                        source,
                        now
                    ])
                    .map_err(err("storing records"))? as u64;
            }
        }
        if inserted > 0 {
            tx.execute(
                "UPDATE collector_counters SET value = value + ?1 WHERE name = 'generated'",
                [inserted as i64],
            )
            .map_err(err("counting records"))?;
        }
        match position {
            PositionUpdate::File(p) => tx.execute(
                "INSERT INTO collector_file_positions
                 (source, dev, ino, path, offset, head, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (source, dev, ino) DO UPDATE SET path = excluded.path,
                 offset = excluded.offset, head = excluded.head,
                 updated_at_ms = excluded.updated_at_ms",
                params![
                    source,
                    p.id.dev as i64,
                    p.id.ino as i64,
                    p.path.to_string_lossy(),
                    p.offset as i64,
                    p.head,
                    now
                ],
            ),
            PositionUpdate::Table(last_id) => tx.execute(
                "INSERT INTO collector_table_cursors (source, last_id, updated_at_ms)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (source) DO UPDATE SET last_id = excluded.last_id,
                 updated_at_ms = excluded.updated_at_ms",
                params![source, last_id, now],
            ),
        }
        .map_err(err("saving the source position"))?;
        tx.commit().map_err(err("storing records"))?;
        Ok(inserted)
    }

    /// The saved positions of a file source's files.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn file_positions(&self, source: &str) -> Result<Vec<FilePosition>, CacheError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT dev, ino, path, offset, head FROM collector_file_positions
                 WHERE source = ?1 ORDER BY path",
            )
            .map_err(self.err("reading file positions"))?;
        let rows = stmt
            .query_map([source], |r| {
                Ok(FilePosition {
                    id: FileId {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                    },
                    path: PathBuf::from(r.get::<_, String>(2)?),
                    offset: r.get::<_, i64>(3)?.max(0) as u64,
                    head: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        drop(stmt);
        rows.map_err(self.err("reading file positions"))
    }

    /// Forgets a file that no longer exists.
    ///
    /// # Errors
    /// When the write fails.
    pub fn forget_file(&mut self, source: &str, id: FileId) -> Result<(), CacheError> {
        self.conn
            .execute(
                "DELETE FROM collector_file_positions WHERE source = ?1 AND dev = ?2 AND ino = ?3",
                params![source, id.dev as i64, id.ino as i64],
            )
            .map_err(self.err("forgetting a file position"))?;
        Ok(())
    }

    /// The last id a table source has read.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn table_cursor(&self, source: &str) -> Result<Option<i64>, CacheError> {
        self.conn
            .query_row(
                "SELECT last_id FROM collector_table_cursors WHERE source = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("reading a table cursor"))
    }

    /// Counts and the seq high-water mark.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn stats(&self) -> Result<CacheStats, CacheError> {
        read_stats(&self.conn).map_err(self.err("reading stats"))
    }

    /// Unpulled rows, from the counters.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn unpulled(&self) -> Result<u64, CacheError> {
        Ok(self.stats()?.unpulled)
    }

    /// Up to `limit` unpulled rows matching `filter`, by seq id, with the stats read in the same
    /// snapshot. With `confirm`, the rows are marked pulled in the same transaction.
    ///
    /// # Errors
    /// When the file cannot be read or written.
    pub fn pull(
        &mut self,
        filter: &PullFilter,
        limit: u32,
        confirm: bool,
    ) -> Result<(Vec<CachedRecord>, CacheStats), CacheError> {
        let path = self.path.as_path();
        let err = |op| fail(path, op);
        // IMMEDIATE only when writing: a plain pull must not wait for the ingest writer.
        let behavior = if confirm {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = self
            .conn
            .transaction_with_behavior(behavior)
            .map_err(err("pulling"))?;
        const COLS: &str = "SELECT seq_id, ip, timestamp, botnet_type, log_type
                            FROM collector_records WHERE pulled_at_ms IS NULL";
        let map = |r: &rusqlite::Row<'_>| {
            Ok(CachedRecord {
                seq_id: r.get(0)?,
                ip: r.get(1)?,
                timestamp: r.get(2)?,
                botnet_type: r.get(3)?,
                log_type: r.get(4)?,
            })
        };
        let records = {
            let rows = match filter {
                PullFilter::All => tx
                    .prepare_cached(&format!("{COLS} ORDER BY seq_id LIMIT ?1"))
                    .and_then(|mut s| s.query_map([limit], map)?.collect()),
                PullFilter::SinceSeq(seq) => tx
                    .prepare_cached(&format!("{COLS} AND seq_id > ?1 ORDER BY seq_id LIMIT ?2"))
                    .and_then(|mut s| s.query_map(params![seq, limit], map)?.collect()),
                PullFilter::SinceTimestamp(ts) => tx
                    .prepare_cached(&format!(
                        "{COLS} AND timestamp >= ?1 ORDER BY seq_id LIMIT ?2"
                    ))
                    .and_then(|mut s| s.query_map(params![ts, limit], map)?.collect()),
            };
            rows.map_err(err("pulling"))?
        };
        let records: Vec<CachedRecord> = records;
        if confirm && !records.is_empty() {
            let now = now_ms();
            let mut marked = 0i64;
            {
                let mut mark = tx
                    .prepare_cached(
                        "UPDATE collector_records SET pulled_at_ms = ?1
                         WHERE seq_id = ?2 AND pulled_at_ms IS NULL",
                    )
                    .map_err(err("confirming"))?;
                for r in &records {
                    marked += mark
                        .execute(params![now, r.seq_id])
                        .map_err(err("confirming"))? as i64;
                }
            }
            tx.execute(
                "UPDATE collector_counters SET value = value + ?1 WHERE name = 'pulled'",
                [marked],
            )
            .map_err(err("confirming"))?;
        }
        let stats = read_stats(&tx).map_err(err("reading stats"))?;
        tx.commit().map_err(err("pulling"))?;
        Ok((records, stats))
    }

    /// Marks rows as pulled; returns how many changed. Repeating an `UpToSeq` confirm changes
    /// nothing.
    ///
    /// # Errors
    /// When the write fails.
    pub fn confirm(&mut self, scope: ConfirmScope) -> Result<u64, CacheError> {
        let path = self.path.as_path();
        let err = || fail(path, "confirming");
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err())?;
        let changed = match scope {
            ConfirmScope::Oldest(0) => Ok(0),
            // Insertion order is seq order: seq ids are assigned at insert, one writer at a time.
            ConfirmScope::Oldest(n) => tx.execute(
                "UPDATE collector_records SET pulled_at_ms = ?1 WHERE seq_id IN (
                     SELECT seq_id FROM collector_records WHERE pulled_at_ms IS NULL
                     ORDER BY seq_id LIMIT ?2)",
                params![now, i64::try_from(n).unwrap_or(i64::MAX)],
            ),
            ConfirmScope::UpToSeq(s) => tx.execute(
                "UPDATE collector_records SET pulled_at_ms = ?1
                 WHERE pulled_at_ms IS NULL AND seq_id <= ?2",
                params![now, s],
            ),
        }
        .map_err(err())?;
        if changed > 0 {
            tx.execute(
                "UPDATE collector_counters SET value = value + ?1 WHERE name = 'pulled'",
                [changed as i64],
            )
            .map_err(err())?;
        }
        tx.commit().map_err(err())?;
        Ok(changed as u64)
    }

    /// Deletes up to `batch` confirmed rows pulled before `cutoff_ms` (Unix ms); returns how
    /// many. Unpulled rows are never deleted.
    ///
    /// # Errors
    /// When the write fails.
    pub fn delete_confirmed_before(
        &mut self,
        cutoff_ms: i64,
        batch: u32,
    ) -> Result<u64, CacheError> {
        let path = self.path.as_path();
        let err = || fail(path, "deleting expired rows");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err())?;
        let deleted = tx
            .execute(
                "DELETE FROM collector_records WHERE seq_id IN (
                     SELECT seq_id FROM collector_records
                     WHERE pulled_at_ms IS NOT NULL AND pulled_at_ms < ?1 LIMIT ?2)",
                params![cutoff_ms, batch],
            )
            .map_err(err())?;
        if deleted > 0 {
            tx.execute(
                "UPDATE collector_counters SET value = value + ?1 WHERE name = 'deleted'",
                [deleted as i64],
            )
            .map_err(err())?;
        }
        tx.commit().map_err(err())?;
        Ok(deleted as u64)
    }
}

/// An error mapper for `op` on the cache at `path`; the path is copied only on failure.
fn fail<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(rusqlite::Error) -> CacheError + 'a {
    move |source| CacheError {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn read_stats(conn: &Connection) -> Result<CacheStats, rusqlite::Error> {
    let mut generated = 0i64;
    let mut pulled = 0i64;
    let mut deleted = 0i64;
    let mut stmt = conn.prepare_cached("SELECT name, value FROM collector_counters")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let value: i64 = r.get(1)?;
        match r.get_ref(0)?.as_str()? {
            "generated" => generated = value,
            "pulled" => pulled = value,
            "deleted" => deleted = value,
            _ => {}
        }
    }
    let max_seq_id: i64 = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'collector_records'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let nonneg = |v: i64| v.max(0) as u64;
    Ok(CacheStats {
        unpulled: nonneg(generated - pulled),
        pulled: nonneg(pulled - deleted),
        total_generated: nonneg(generated),
        total_pulled: nonneg(pulled),
        max_seq_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: &str, ts: &str, log_type: &'static str, bt: &str) -> NewRecord {
        NewRecord {
            botnet_type: bt.into(),
            log_type,
            ip: ip.into(),
            timestamp: ts.into(),
        }
    }

    fn table_pos(n: i64) -> PositionUpdate {
        PositionUpdate::Table(n)
    }

    fn counts(c: &Cache) -> (u64, u64) {
        let unpulled: i64 = c
            .conn
            .query_row(
                "SELECT COUNT(*) FROM collector_records WHERE pulled_at_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let pulled: i64 = c
            .conn
            .query_row(
                "SELECT COUNT(*) FROM collector_records WHERE pulled_at_ms IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (unpulled as u64, pulled as u64)
    }

    fn assert_counters_match_rows(c: &Cache) {
        let s = c.stats().unwrap();
        assert_eq!((s.unpulled, s.pulled), counts(c));
    }

    #[test]
    fn seq_ids_increase_and_are_never_reused_after_reopen_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache.sqlite");
        let mut c = Cache::open(&path).unwrap();
        let epoch = c.epoch().to_owned();
        c.commit(
            "s",
            &[
                rec("1.1.1.1", "2026-01-01T00:00:00", "online", "mozi"),
                rec("1.1.1.2", "2026-01-01T00:00:00", "online", "mozi"),
            ],
            &table_pos(2),
        )
        .unwrap();
        assert_eq!(c.confirm(ConfirmScope::UpToSeq(2)).unwrap(), 2);
        assert_eq!(c.delete_confirmed_before(i64::MAX, 100).unwrap(), 2);
        drop(c);

        let mut c = Cache::open(&path).unwrap();
        assert_eq!(c.epoch(), epoch, "the epoch is fixed for the file");
        assert_eq!(c.stats().unwrap().max_seq_id, 2, "high-water mark kept");
        c.commit(
            "s",
            &[rec("1.1.1.3", "2026-01-01T00:00:00", "online", "mozi")],
            &table_pos(3),
        )
        .unwrap();
        let (rows, stats) = c.pull(&PullFilter::All, 10, false).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].seq_id, 3);
        assert_eq!(stats.max_seq_id, 3);
        assert_eq!(stats.total_generated, 3);
        assert_eq!(stats.total_pulled, 2);
        assert_eq!(stats.pulled, 0);
        assert_eq!(c.table_cursor("s").unwrap(), Some(3));

        let other = Cache::open(&dir.path().join("other.sqlite")).unwrap();
        assert_ne!(other.epoch(), epoch, "a new file is a new epoch");
    }

    #[test]
    fn dedup_key_includes_log_type_and_botnet_type() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(&dir.path().join("c.sqlite")).unwrap();
        let ts = "2026-03-03T16:36:49";
        let n = c
            .commit(
                "s",
                &[
                    rec("14.19.132.125", ts, "online", "utg_q_008"),
                    rec("14.19.132.125", ts, "cleanup", "utg_q_008"),
                    rec("14.19.132.125", ts, "online", "mozi"),
                    rec("14.19.132.125", ts, "online", "utg_q_008"),
                ],
                &table_pos(4),
            )
            .unwrap();
        assert_eq!(n, 3);
        // Still a duplicate once pulled.
        c.confirm(ConfirmScope::Oldest(3)).unwrap();
        let n = c
            .commit(
                "s",
                &[rec("14.19.132.125", ts, "online", "utg_q_008")],
                &table_pos(5),
            )
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(c.stats().unwrap().total_generated, 3);
        assert_counters_match_rows(&c);
    }

    #[test]
    fn legacy_confirm_marks_the_oldest_and_up_to_seq_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(&dir.path().join("c.sqlite")).unwrap();
        let recs: Vec<_> = (0..10)
            .map(|i| rec(&format!("1.1.1.{i}"), "2026-01-01T00:00:00", "online", "m"))
            .collect();
        c.commit("s", &recs, &table_pos(10)).unwrap();

        assert_eq!(c.confirm(ConfirmScope::Oldest(3)).unwrap(), 3);
        let (rows, _) = c.pull(&PullFilter::All, 100, false).unwrap();
        assert_eq!(rows.first().map(|r| r.seq_id), Some(4));

        assert_eq!(c.confirm(ConfirmScope::UpToSeq(6)).unwrap(), 3);
        assert_eq!(c.confirm(ConfirmScope::UpToSeq(6)).unwrap(), 0);
        assert_eq!(c.confirm(ConfirmScope::Oldest(0)).unwrap(), 0);
        let s = c.stats().unwrap();
        assert_eq!((s.unpulled, s.pulled, s.total_pulled), (4, 6, 6));
        assert_counters_match_rows(&c);

        // More than there are: confirms the rest.
        assert_eq!(c.confirm(ConfirmScope::Oldest(100)).unwrap(), 4);
        assert_counters_match_rows(&c);
    }

    #[test]
    fn pull_filters_limits_and_confirm_true() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(&dir.path().join("c.sqlite")).unwrap();
        let recs: Vec<_> = (0..6)
            .map(|i| {
                rec(
                    &format!("1.1.1.{i}"),
                    &format!("2026-01-01T00:00:0{i}"),
                    "online",
                    "m",
                )
            })
            .collect();
        c.commit("s", &recs, &table_pos(6)).unwrap();
        let (rows, _) = c.pull(&PullFilter::SinceSeq(4), 100, false).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq_id).collect::<Vec<_>>(), [5, 6]);
        let (rows, _) = c
            .pull(
                &PullFilter::SinceTimestamp("2026-01-01T00:00:03".into()),
                2,
                false,
            )
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.seq_id).collect::<Vec<_>>(), [4, 5]);
        let (rows, stats) = c.pull(&PullFilter::All, 2, true).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((stats.unpulled, stats.pulled), (4, 2));
        let (rows, _) = c.pull(&PullFilter::All, 100, false).unwrap();
        assert_eq!(rows.first().map(|r| r.seq_id), Some(3));
        assert_counters_match_rows(&c);
    }

    #[test]
    fn retention_deletes_only_old_confirmed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(&dir.path().join("c.sqlite")).unwrap();
        let recs: Vec<_> = (0..5)
            .map(|i| rec(&format!("1.1.1.{i}"), "2026-01-01T00:00:00", "online", "m"))
            .collect();
        c.commit("s", &recs, &table_pos(5)).unwrap();
        c.confirm(ConfirmScope::UpToSeq(3)).unwrap();
        assert_eq!(c.delete_confirmed_before(0, 100).unwrap(), 0, "not old yet");
        assert_eq!(c.delete_confirmed_before(i64::MAX, 2).unwrap(), 2);
        assert_eq!(c.delete_confirmed_before(i64::MAX, 100).unwrap(), 1);
        let s = c.stats().unwrap();
        assert_eq!((s.unpulled, s.pulled, s.max_seq_id), (2, 0, 5));
        assert_counters_match_rows(&c);
    }

    #[test]
    fn file_positions_are_saved_with_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(&dir.path().join("c.sqlite")).unwrap();
        let pos = FilePosition {
            id: FileId {
                dev: u64::MAX,
                ino: 42,
            },
            path: "/logs/a.log".into(),
            offset: 120,
            head: b"[2026".to_vec(),
        };
        c.commit(
            "files",
            &[rec("1.1.1.1", "2026-01-01T00:00:00", "online", "m")],
            &PositionUpdate::File(pos.clone()),
        )
        .unwrap();
        assert_eq!(c.file_positions("files").unwrap(), vec![pos.clone()]);
        assert!(c.file_positions("other").unwrap().is_empty());
        c.forget_file("files", pos.id).unwrap();
        assert!(c.file_positions("files").unwrap().is_empty());
    }

    #[test]
    fn two_connections_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let mut writer = Cache::open(&path).unwrap();
        let mut api = Cache::open(&path).unwrap();
        assert_eq!(writer.epoch(), api.epoch());
        writer
            .commit(
                "s",
                &[rec("1.1.1.1", "2026-01-01T00:00:00", "online", "m")],
                &table_pos(1),
            )
            .unwrap();
        let (rows, _) = api.pull(&PullFilter::All, 10, false).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(api.confirm(ConfirmScope::UpToSeq(1)).unwrap(), 1);
        assert_eq!(writer.unpulled().unwrap(), 0);
    }
}
