//! [`SqliteStore`]: the embedded default store, one SQLite file in WAL mode with one writer.
//!
//! Written with `rusqlite` on the blocking pool, prepared statements and one transaction per
//! batch, committed with `synchronous=FULL` so a batch is on disk before it is acked.
//! `sqlx-sqlite` was measured against it on this write path (`cargo bench --bench
//! sqlite_write`, figures in `docs/performance.md`): sqlx crosses its worker thread once per
//! statement, which costs more than the statement itself here.
//!
//! Reads never queue behind the writer: counts and the dead-letter listing run on a read-only
//! connection of their own (WAL lets readers see the last commit while a write is in progress),
//! and the readiness ping probes the write lock on a third connection, so `/ready` and
//! `/api/status` answer while a long batch holds the writer.
//!
//! Timestamps are stored as `YYYY-MM-DD HH:MM:SS` text of the database's wall-clock (see
//! [`super::clock`]), whose lexical order is time order, so SQLite's scalar `MIN`/`MAX`
//! implement the `LEAST`/`GREATEST` merge rules. The zone is fixed when the database is created
//! and recorded in `botpipe_settings` (`time_zone`): `[store] timezone` then, or UTC for a
//! database an earlier botpipe filled with UTC text, so one file never mixes two clocks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};

use super::clock::WallClock;
use super::merge::{place_assignments, plan, stored_coordinates, TypePlan};
use super::{
    ApplyOutcome, CountSample, DeadLetterCount, EnrichedBatch, MigrationReport, Store, StoreCounts,
    StoreError, StoredDeadLetter,
};
use crate::enrich::Geo;
use crate::record::{BotnetType, DeadLetter, LogType};

/// How long a statement waits for a lock held by another connection (a reader, `botpipe status`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a readiness ping waits for the write lock: below the HTTP probe timeout, so a
/// locked database reads as "not ready" instead of "no answer".
const PING_BUSY_TIMEOUT: Duration = Duration::from_millis(500);
/// Ids per `DELETE … WHERE id IN (…)`, below SQLite's default bound-parameter limit.
const DELETE_CHUNK: usize = 500;
/// `PRAGMA synchronous` of every connection: `FULL`, so a commit is on disk (one fsync of the
/// WAL per batch transaction) before the worker acks the batch to the queue. `NORMAL` in WAL
/// mode may lose the last commits on an OS crash or power loss, and those batches would be
/// acked yet missing. The cost is measured in `docs/performance.md` ("SQLite durability").
const SYNCHRONOUS: &str = "FULL";
/// Prepared statements kept per connection: three per botnet type plus botpipe's own.
const STATEMENT_CACHE: usize = 256;

const BOTPIPE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS botpipe_schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS botpipe_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw TEXT NOT NULL,
    batch_id TEXT,
    batch_position INTEGER,
    rejected_at TEXT NOT NULL,
    stored_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_botpipe_dead_letters_reason ON botpipe_dead_letters (reason);
INSERT OR IGNORE INTO botpipe_schema_migrations (version, description) VALUES (1, 'botpipe tables');
";

/// Keys dead letters by (batch, position), after [`BOTPIPE_SCHEMA`] (whose table may predate
/// the column).
const DEAD_LETTER_KEY: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS idx_botpipe_dead_letters_key
    ON botpipe_dead_letters (batch_id, batch_position);
INSERT OR IGNORE INTO botpipe_schema_migrations (version, description)
    VALUES (2, 'dead letters keyed by batch and position');
";

/// botpipe's settings of this file: `time_zone`, the zone of its wall-clock times.
const SETTINGS_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS botpipe_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)";

fn type_schema(t: &BotnetType) -> String {
    let n = t.nodes_table();
    let c = t.communications_table();
    // One transaction: readers (counts, status) see both tables of a type or neither.
    format!(
        "BEGIN;
        CREATE TABLE IF NOT EXISTS {n} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ip VARCHAR(45) NOT NULL,
            longitude REAL, latitude REAL,
            country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
            isp VARCHAR(255), asn VARCHAR(50),
            status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','inactive','cleaned')),
            active_time TEXT, first_seen TEXT, last_seen TEXT, cleaned_time TEXT,
            communication_count INTEGER NOT NULL DEFAULT 0,
            created_time TEXT DEFAULT CURRENT_TIMESTAMP,
            updated_at TEXT,
            is_china INTEGER NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX IF NOT EXISTS idx_unique_ip_{t} ON {n} (ip);
        CREATE INDEX IF NOT EXISTS idx_location_{t} ON {n} (country, province, city);
        CREATE INDEX IF NOT EXISTS idx_status_{t} ON {n} (status);
        CREATE INDEX IF NOT EXISTS idx_first_seen_{t} ON {n} (first_seen);
        CREATE INDEX IF NOT EXISTS idx_last_seen_{t} ON {n} (last_seen);
        CREATE INDEX IF NOT EXISTS idx_cleaned_time_{t} ON {n} (cleaned_time);
        CREATE INDEX IF NOT EXISTS idx_is_china_{t} ON {n} (is_china);
        CREATE TABLE IF NOT EXISTS {c} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            node_id INTEGER NOT NULL REFERENCES {n}(id) ON DELETE RESTRICT,
            ip VARCHAR(45) NOT NULL,
            communication_time TEXT NOT NULL,
            received_at TEXT DEFAULT CURRENT_TIMESTAMP,
            longitude REAL, latitude REAL,
            country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
            isp VARCHAR(255), asn VARCHAR(50),
            event_type VARCHAR(50),
            status VARCHAR(50) DEFAULT 'active',
            is_china INTEGER NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX IF NOT EXISTS idx_unique_communication_{t} ON {c} (ip, communication_time, event_type);
        CREATE INDEX IF NOT EXISTS idx_node_id_{t} ON {c} (node_id);
        CREATE INDEX IF NOT EXISTS idx_communication_time_{t} ON {c} (communication_time);
        CREATE INDEX IF NOT EXISTS idx_comm_location_{t} ON {c} (country, province, city);
        COMMIT;"
    )
}

/// The three statements that apply a batch to one type's tables.
struct TypeSql {
    upsert_node: String,
    insert_communication: String,
    bump_count: String,
}

impl TypeSql {
    fn new(t: &BotnetType) -> Self {
        let n = t.nodes_table();
        let c = t.communications_table();
        let merged = |col: &str, f: &str| {
            format!("COALESCE({f}({col}, excluded.{col}), {col}, excluded.{col})")
        };
        let last = merged("last_seen", "MAX");
        let cleaned = merged("cleaned_time", "MAX");
        // Follows last_seen, never below it (a legacy row may hold NULL or older).
        let active = format!("MAX(COALESCE(active_time, {last}), COALESCE({last}, active_time))");
        let upsert_node = format!(
            "INSERT INTO {n} (ip, first_seen, last_seen, cleaned_time, active_time, status,
                longitude, latitude, country, province, city, continent, isp, asn, is_china,
                communication_count, created_time, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 0, ?15, ?15)
             ON CONFLICT(ip) DO UPDATE SET
                first_seen = {first},
                last_seen = {last},
                active_time = {active},
                cleaned_time = {cleaned},
                status = CASE WHEN {cleaned} IS NOT NULL AND ({last} IS NULL OR {cleaned} >= {last})
                              THEN 'cleaned' ELSE 'active' END,
                {place},
                updated_at = excluded.updated_at
             RETURNING id",
            first = merged("first_seen", "MIN"),
            place = place_assignments(|c| format!("excluded.{c}"), str::to_owned),
        );
        let insert_communication = format!(
            "INSERT INTO {c} (node_id, ip, communication_time, received_at, longitude, latitude,
                country, province, city, continent, isp, asn, event_type, status, is_china)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT(ip, communication_time, event_type) DO NOTHING"
        );
        let bump_count =
            format!("UPDATE {n} SET communication_count = communication_count + ?2 WHERE id = ?1");
        Self {
            upsert_node,
            insert_communication,
            bump_count,
        }
    }
}

/// The embedded SQLite store. Cheap to clone; clones share the writer connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

struct Inner {
    path: PathBuf,
    /// The wall-clock of this file's times (also in [`State`], for the writer).
    clock: WallClock,
    /// The writer: every write, and nothing else that could wait behind one.
    conn: Mutex<State>,
    /// Read-only: counts and dead-letter listings, beside the writer.
    reader: Mutex<Connection>,
    /// The readiness probe's connection: it only ever takes and drops the write lock.
    probe: Mutex<Connection>,
    /// Odd while the writer holds SQLite's write lock in a batch transaction; bumped on taking
    /// and on releasing it (see [`WriteLockHeld`]).
    write_epoch: Arc<AtomicU64>,
}

struct State {
    conn: Connection,
    /// The wall-clock of this file's times.
    clock: WallClock,
    /// Types whose tables exist, with their statements.
    types: HashMap<BotnetType, TypeSql>,
    /// The writer's [`Inner::write_epoch`].
    write_epoch: Arc<AtomicU64>,
}

/// Marks the writer as holding the write lock from its creation (just after `BEGIN IMMEDIATE`
/// succeeded) to its drop, so that the ping can tell the writer's own lock from another
/// process's.
struct WriteLockHeld<'a>(&'a AtomicU64);

impl<'a> WriteLockHeld<'a> {
    fn mark(epoch: &'a AtomicU64) -> Self {
        epoch.fetch_add(1, Ordering::SeqCst);
        Self(epoch)
    }
}

impl Drop for WriteLockHeld<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Begins a write transaction that holds the write lock from the start, marked in `epoch`; the
/// mark goes when the returned guard drops (declared after the transaction, it drops first).
fn begin_write<'c>(
    conn: &'c mut Connection,
    epoch: &'c AtomicU64,
) -> rusqlite::Result<(Transaction<'c>, WriteLockHeld<'c>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    Ok((tx, WriteLockHeld::mark(epoch)))
}

impl SqliteStore {
    /// Opens or creates the database file (and its directory) in WAL mode, a new one with
    /// times in the default [`WallClock`].
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_in(path, WallClock::default())
    }

    /// Opens or creates the database file (and its directory) in WAL mode; a new file writes
    /// its times in `clock`'s wall-clock, an existing one in the zone it recorded.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open_in(path: &Path, clock: WallClock) -> Result<Self, StoreError> {
        let err = |op: &str| {
            let path = path.display().to_string();
            let op = op.to_owned();
            move |source| StoreError::Sqlite { path, op, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlite {
                path: path.display().to_string(),
                op: format!("creating directory {}", dir.display()),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(e.to_string()),
                ),
            })?;
        }
        let conn = Connection::open(path).map_err(err("opening"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("setting busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", SYNCHRONOUS)
            .map_err(err("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enabling foreign keys"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let clock = file_clock(&conn, clock).map_err(err("reading the time zone of the file"))?;
        // Opened after the writer switched the file to WAL, which is what lets them read and
        // probe beside it.
        let side = |flags: OpenFlags, busy: Duration, what: &str| {
            let c = Connection::open_with_flags(path, flags)
                .map_err(err(&format!("opening the {what} connection")))?;
            c.busy_timeout(busy)
                .map_err(err(&format!("setting the {what} busy timeout")))?;
            c.pragma_update(None, "synchronous", SYNCHRONOUS)
                .map_err(err(&format!(
                    "setting synchronous on the {what} connection"
                )))?;
            Ok::<_, StoreError>(c)
        };
        let no_create = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let reader = side(
            no_create | OpenFlags::SQLITE_OPEN_READ_ONLY,
            BUSY_TIMEOUT,
            "read",
        )?;
        let probe = side(
            no_create | OpenFlags::SQLITE_OPEN_READ_WRITE,
            PING_BUSY_TIMEOUT,
            "probe",
        )?;
        let write_epoch = Arc::new(AtomicU64::new(0));
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                clock,
                conn: Mutex::new(State {
                    conn,
                    clock,
                    types: HashMap::new(),
                    write_epoch: Arc::clone(&write_epoch),
                }),
                reader: Mutex::new(reader),
                probe: Mutex::new(probe),
                write_epoch,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The wall-clock of this file's times.
    pub fn clock(&self) -> WallClock {
        self.inner.clock
    }

    async fn with_state<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &mut State) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut state = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&inner.path, &mut state)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the read-only connection, never waiting for the writer.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&inner.path, &conn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn sqlite_err(path: &Path, op: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.display().to_string();
    let op = op.into();
    move |source| StoreError::Sqlite { path, op, source }
}

/// botpipe's own tables, with the dead-letter key added to a table that predates it.
fn create_botpipe_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(BOTPIPE_SCHEMA)?;
    let keyed: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('botpipe_dead_letters') WHERE name = 'batch_position'",
        [],
        |r| r.get(0),
    )?;
    if keyed == 0 {
        conn.execute_batch("ALTER TABLE botpipe_dead_letters ADD COLUMN batch_position INTEGER")?;
    }
    conn.execute_batch(DEAD_LETTER_KEY)
}

fn ensure_type(path: &Path, state: &mut State, t: &BotnetType) -> Result<(), StoreError> {
    if !state.types.contains_key(t) {
        let created = state.conn.execute_batch(&type_schema(t));
        if created.is_err() && !state.conn.is_autocommit() {
            // Leave no half-open transaction on the writer.
            let _rolled_back = state.conn.execute_batch("ROLLBACK");
        }
        created.map_err(sqlite_err(path, format!("creating tables of {t}")))?;
        state.types.insert(t.clone(), TypeSql::new(t));
    }
    Ok(())
}

/// The zone of the file's wall-clock times: the one it recorded; else UTC if an earlier
/// botpipe already wrote node tables (it wrote UTC text); else `configured`, recorded now.
fn file_clock(conn: &Connection, configured: WallClock) -> rusqlite::Result<WallClock> {
    conn.execute_batch(SETTINGS_SCHEMA)?;
    let recorded: Option<String> = conn
        .query_row(
            "SELECT value FROM botpipe_settings WHERE name = 'time_zone'",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let clock = match recorded.as_deref().map(str::parse::<chrono_tz::Tz>) {
        Some(Ok(tz)) => WallClock::new(tz),
        Some(Err(_)) | None => {
            let filled: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'botnet_nodes_%'",
                [],
                |r| r.get(0),
            )?;
            let clock = if filled > 0 && recorded.is_none() {
                WallClock::new(chrono_tz::Tz::UTC)
            } else {
                configured
            };
            conn.execute(
                "INSERT OR REPLACE INTO botpipe_settings (name, value) VALUES ('time_zone', ?1)",
                params![clock.tz().name()],
            )?;
            clock
        }
    };
    if clock != configured {
        tracing::warn!(
            file_zone = clock.tz().name(),
            configured = configured.tz().name(),
            "This SQLite store holds its times as wall-clock of the zone it was created with; store.timezone does not change an existing file."
        );
    }
    Ok(clock)
}

/// Inserts `letters` of batch `batch_id`, `positions[i]` being the position of `letters[i]` in
/// its batch: a replayed batch's letters are already there and are skipped.
fn insert_dead_letters(
    path: &Path,
    tx: &Transaction<'_>,
    clock: WallClock,
    letters: &[DeadLetter],
    positions: impl IntoIterator<Item = u32>,
    batch_id: &str,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO botpipe_dead_letters
                (source, reason, detail, raw, batch_id, batch_position, rejected_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (batch_id, batch_position) DO NOTHING",
        )
        .map_err(sqlite_err(path, "preparing dead-letter insert"))?;
    for (d, position) in letters.iter().zip(positions) {
        stmt.execute(params![
            d.source,
            d.reason.as_str(),
            d.detail,
            d.raw,
            batch_id,
            position,
            clock.text(d.rejected_at)
        ])
        .map_err(sqlite_err(path, "inserting into botpipe_dead_letters"))?;
    }
    Ok(())
}

/// The geo columns of `g` in statement order: longitude, latitude, then country, province,
/// city, continent, isp and asn.
fn geo_params(g: &Geo) -> (f64, f64, [Option<&str>; 6]) {
    let (lon, lat) = stored_coordinates(Some(g));
    (lon, lat, g.names())
}

fn apply_type(
    path: &Path,
    tx: &Transaction<'_>,
    sql: &TypeSql,
    p: &TypePlan<'_>,
    (clock, now): (WallClock, &str),
    out: &mut ApplyOutcome,
) -> Result<(), StoreError> {
    let time = |t: chrono::DateTime<chrono::Utc>| clock.text(t);
    let table = p.botnet_type.nodes_table();
    let mut ids = HashMap::with_capacity(p.nodes.len());
    {
        let mut upsert = tx
            .prepare_cached(&sql.upsert_node)
            .map_err(sqlite_err(path, format!("preparing upsert into {table}")))?;
        let unknown = Geo::unknown();
        for n in &p.nodes {
            let g = n.geo.unwrap_or(&unknown);
            let (lon, lat, [country, province, city, continent, isp, asn]) = geo_params(g);
            let id: i64 = upsert
                .query_row(
                    params![
                        n.ip.to_string(),
                        n.first_online.map(time),
                        n.last_online.map(time),
                        n.last_cleanup.map(time),
                        n.status(),
                        lon,
                        lat,
                        country,
                        province,
                        city,
                        continent,
                        isp,
                        asn,
                        g.is_china,
                        now
                    ],
                    |r| r.get(0),
                )
                .map_err(sqlite_err(path, format!("upserting {} into {table}", n.ip)))?;
            ids.insert(n.ip, id);
        }
    }
    let ctable = p.botnet_type.communications_table();
    let mut new_per_node: HashMap<i64, i64> = HashMap::new();
    {
        let mut insert = tx
            .prepare_cached(&sql.insert_communication)
            .map_err(sqlite_err(path, format!("preparing insert into {ctable}")))?;
        for c in &p.communications {
            let Some(&node_id) = ids.get(&c.ip) else {
                continue;
            };
            let (lon, lat, [country, province, city, continent, isp, asn]) = geo_params(c.geo);
            let n = insert
                .execute(params![
                    node_id,
                    c.ip.to_string(),
                    time(c.time),
                    now,
                    lon,
                    lat,
                    country,
                    province,
                    city,
                    continent,
                    isp,
                    asn,
                    c.log_type.event_type(),
                    c.log_type.communication_status(),
                    c.geo.is_china
                ])
                .map_err(sqlite_err(path, format!("inserting into {ctable}")))?;
            if n > 0 {
                // The count is of online rows, as the legacy writer kept it.
                if c.log_type == LogType::Online {
                    *new_per_node.entry(node_id).or_default() += 1;
                }
                out.communications_inserted += 1;
            } else {
                out.communications_duplicate += 1;
            }
        }
    }
    let mut bump = tx.prepare_cached(&sql.bump_count).map_err(sqlite_err(
        path,
        format!("preparing count update of {table}"),
    ))?;
    for (id, n) in new_per_node {
        bump.execute(params![id, n]).map_err(sqlite_err(
            path,
            format!("updating communication_count in {table}"),
        ))?;
    }
    out.nodes += p.nodes.len() as u64;
    Ok(())
}

/// Exact row counts, on whichever connection `conn` is (the read connection in practice).
fn count_rows(path: &Path, conn: &Connection) -> Result<StoreCounts, StoreError> {
    let mut out = StoreCounts::default();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'botnet\\_nodes\\_%' ESCAPE '\\' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sqlite_err(path, "listing node tables"))?;
    let known: HashSet<String> = tables.into_iter().collect();
    for table in &known {
        let Some(t) = table
            .strip_prefix("botnet_nodes_")
            .and_then(|t| BotnetType::parse(t).ok())
        else {
            continue;
        };
        let mut by_status = std::collections::BTreeMap::new();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT status, COUNT(*) FROM {} GROUP BY status",
                t.nodes_table()
            ))
            .map_err(sqlite_err(path, format!("counting {table}")))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sqlite_err(path, format!("counting {table}")))?;
        for row in rows {
            let (status, n) = row.map_err(sqlite_err(path, format!("counting {table}")))?;
            by_status.insert(status, n.max(0) as u64);
        }
        out.nodes.insert(t.to_string(), by_status);
        let comms: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {}", t.communications_table()),
                [],
                |r| r.get(0),
            )
            .map_err(sqlite_err(
                path,
                format!("counting {}", t.communications_table()),
            ))?;
        out.communications
            .insert(t.to_string(), comms.max(0) as u64);
    }
    let has_dl: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'botpipe_dead_letters'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )
        .map_err(sqlite_err(path, "looking for botpipe_dead_letters"))?;
    if has_dl {
        let mut stmt = conn
            .prepare("SELECT reason, COUNT(*) FROM botpipe_dead_letters GROUP BY reason")
            .map_err(sqlite_err(path, "counting botpipe_dead_letters"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(sqlite_err(path, "counting botpipe_dead_letters"))?;
        for row in rows {
            let (reason, n) = row.map_err(sqlite_err(path, "counting botpipe_dead_letters"))?;
            out.dead_letters.insert(reason, n.max(0) as u64);
        }
    }
    Ok(out)
}

impl Store for SqliteStore {
    async fn migrate(&self, types: &BTreeSet<BotnetType>) -> Result<MigrationReport, StoreError> {
        let types = types.clone();
        self.with_state(move |path, state| {
            let mut report = MigrationReport::default();
            // The version before this migration: none when the table is missing.
            let before: i64 = state
                .conn
                .query_row(
                    "SELECT coalesce(max(version), 0) FROM botpipe_schema_migrations",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            create_botpipe_tables(&state.conn)
                .map_err(sqlite_err(path, "creating botpipe tables"))?;
            for (version, what) in [
                (1, "botpipe tables"),
                (2, "dead letters keyed by batch and position"),
            ] {
                if before < version {
                    report.applied.push(format!("botpipe v{version}: {what}"));
                }
            }
            // Only the types whose tables exist: the others are created when first seen.
            for t in &types {
                let exists: i64 = state
                    .conn
                    .query_row(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                        params![t.nodes_table()],
                        |r| r.get(0),
                    )
                    .map_err(sqlite_err(path, "listing tables"))?;
                if exists > 0 {
                    ensure_type(path, state, t)?;
                    report.types.push(t.to_string());
                }
            }
            Ok(report)
        })
        .await
    }

    async fn apply(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        // SQLite does not enforce VARCHAR widths; cut names anyway so every backend holds the
        // same rows.
        let batch = super::columns::fit_batch(batch).into_owned();
        self.with_state(move |path, state| {
            let plans = plan(&batch);
            for p in &plans {
                ensure_type(path, state, &p.botnet_type)?;
            }
            let mut out = ApplyOutcome::default();
            let State {
                conn,
                clock,
                types,
                write_epoch,
            } = state;
            let clock = *clock;
            let now = clock.text(chrono::Utc::now());
            let (tx, _held) = begin_write(conn, write_epoch)
                .map_err(sqlite_err(path, "beginning batch transaction"))?;
            insert_dead_letters(
                path,
                &tx,
                clock,
                &batch.batch.dead_letters,
                0..,
                &batch.batch.id.0,
            )?;
            out.dead_letters = batch.batch.dead_letters.len() as u64;
            for p in &plans {
                let Some(sql) = types.get(&p.botnet_type) else {
                    continue;
                };
                apply_type(path, &tx, sql, p, (clock, &now), &mut out)?;
            }
            tx.commit().map_err(sqlite_err(
                path,
                format!("committing batch {}", batch.batch.id),
            ))?;
            // In-batch repeats were folded into one row by planning: duplicates too.
            out.communications_duplicate =
                (batch.batch.records.len() as u64).saturating_sub(out.communications_inserted);
            Ok(out)
        })
        .await
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.with_reader(count_rows).await
    }

    async fn sample_counts(&self) -> Result<CountSample, StoreError> {
        // Counted exactly: SQLite keeps no row estimates, and the read connection does not hold
        // up the writer.
        self.counts().await.map(CountSample::exact)
    }

    async fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let clock = self.inner.clock;
        self.with_reader(move |path, conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT id, source, reason, detail, raw, rejected_at FROM botpipe_dead_letters
                     WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(sqlite_err(path, "listing botpipe_dead_letters"))?;
            let rows = stmt
                .query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
                    let reason: String = r.get(2)?;
                    let at: String = r.get(5)?;
                    let at = clock.parse(&at);
                    Ok(StoredDeadLetter::from_columns(
                        r.get(0)?,
                        r.get(1)?,
                        &reason,
                        r.get(3)?,
                        r.get(4)?,
                        at,
                    ))
                })
                .map_err(sqlite_err(path, "listing botpipe_dead_letters"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(sqlite_err(path, "reading botpipe_dead_letters"))
        })
        .await
    }

    async fn dead_letter_counts(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        self.with_reader(|path, conn| {
            let exists: bool = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'botpipe_dead_letters'",
                    [],
                    |r| r.get::<_, i64>(0).map(|n| n > 0),
                )
                .map_err(sqlite_err(path, "looking for botpipe_dead_letters"))?;
            if !exists {
                return Ok(Vec::new());
            }
            let mut stmt = conn
                .prepare(
                    "SELECT source, reason, COUNT(*) FROM botpipe_dead_letters GROUP BY source, reason",
                )
                .map_err(sqlite_err(path, "counting botpipe_dead_letters per source"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(DeadLetterCount {
                        source: r.get(0)?,
                        reason: r.get(1)?,
                        count: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })
                .map_err(sqlite_err(path, "counting botpipe_dead_letters per source"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(sqlite_err(path, "counting botpipe_dead_letters per source"))
        })
        .await
    }

    async fn delete_dead_letters(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.with_state(move |path, state| {
            let (tx, _held) = begin_write(&mut state.conn, &state.write_epoch)
                .map_err(sqlite_err(path, "beginning dead-letter delete"))?;
            let mut deleted = 0u64;
            for chunk in ids.chunks(DELETE_CHUNK) {
                let marks = vec!["?"; chunk.len()].join(",");
                let n = tx
                    .execute(
                        &format!("DELETE FROM botpipe_dead_letters WHERE id IN ({marks})"),
                        rusqlite::params_from_iter(chunk),
                    )
                    .map_err(sqlite_err(path, "deleting from botpipe_dead_letters"))?;
                deleted += n as u64;
            }
            tx.commit()
                .map_err(sqlite_err(path, "committing dead-letter delete"))?;
            Ok(deleted)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let path = &inner.path;
            let conn = inner.probe.lock().unwrap_or_else(|p| p.into_inner());
            // A plain `SELECT 1` answers even while another process holds the write lock, so
            // take the write lock briefly: that is what the workers need. On the probe's own
            // connection, so the ping never waits for the writer's mutex.
            let before = inner.write_epoch.load(Ordering::SeqCst);
            let probe = conn
                .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                .map_err(sqlite_err(path, "ping: taking the write lock"));
            if probe.is_err() && !conn.is_autocommit() {
                let _rolled_back = conn.execute_batch("ROLLBACK");
            }
            // Busy because this store's own writer held the lock, or took it meanwhile: the
            // database is taking writes, which is what the ping asks.
            let after = inner.write_epoch.load(Ordering::SeqCst);
            let ours = before % 2 == 1 || after != before;
            match probe {
                Err(e) if ours && e.is_retryable() => Ok(()),
                other => other,
            }
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Batch;
    use crate::record::RejectReason;

    fn letter(i: usize) -> DeadLetter {
        DeadLetter {
            source: "ep".into(),
            reason: RejectReason::BadIp,
            detail: format!("ip {i}"),
            raw: format!("{{\"ip\":\"{i}\"}}"),
            rejected_at: chrono::Utc::now(),
        }
    }

    /// Issue 13: the store committed with `synchronous=NORMAL` while the queue acked after the
    /// commit, so an OS crash could lose acked rows.
    #[test]
    fn issue_13_every_store_connection_commits_with_synchronous_full() {
        const FULL: i64 = 2;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.sqlite")).unwrap();
        let sync = |c: &Connection| -> i64 {
            c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap()
        };
        let inner = &store.inner;
        assert_eq!(sync(&inner.conn.lock().unwrap().conn), FULL, "writer");
        assert_eq!(sync(&inner.reader.lock().unwrap()), FULL, "reader");
        assert_eq!(sync(&inner.probe.lock().unwrap()), FULL, "probe");
    }

    #[tokio::test]
    async fn deleted_dead_letters_are_gone_and_unknown_ids_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.sqlite")).unwrap();
        store.migrate(&BTreeSet::new()).await.unwrap();
        let batch = Batch::new("ep", vec![], (0..1200).map(letter).collect());
        store
            .apply(&EnrichedBatch { batch, geo: vec![] })
            .await
            .unwrap();
        let all = store.dead_letters(2000, None).await.unwrap();
        assert_eq!(all.len(), 1200);
        let mut ids: Vec<i64> = all.iter().take(1100).map(|d| d.id).collect();
        ids.push(i64::MAX);
        assert_eq!(store.delete_dead_letters(&ids).await.unwrap(), 1100);
        assert_eq!(store.delete_dead_letters(&ids).await.unwrap(), 0);
        assert_eq!(store.counts().await.unwrap().total_dead_letters(), 100);
    }

    /// Holds this store's writer the way a long batch does (its mutex and, through
    /// [`begin_write`], SQLite's write lock, with one uncommitted dead letter) until `release`
    /// says so; then commits.
    fn hold_writer(
        store: &SqliteStore,
        held: std::sync::mpsc::Sender<()>,
        release: std::sync::mpsc::Receiver<()>,
    ) -> std::thread::JoinHandle<()> {
        let inner = Arc::clone(&store.inner);
        std::thread::spawn(move || {
            let mut state = inner.conn.lock().unwrap();
            let State {
                conn, write_epoch, ..
            } = &mut *state;
            let (tx, held_lock) = begin_write(conn, write_epoch).unwrap();
            insert_dead_letters(
                &inner.path,
                &tx,
                WallClock::default(),
                &[letter(0)],
                0..,
                "held",
            )
            .unwrap();
            held.send(()).unwrap();
            release.recv().unwrap();
            drop(held_lock);
            tx.commit().unwrap();
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_and_ping_answer_while_a_write_holds_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.sqlite")).unwrap();
        store.migrate(&BTreeSet::new()).await.unwrap();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let writer = hold_writer(&store, held_tx, release_rx);
        held_rx.recv().unwrap();

        // Each of these waited for the write to finish before; the write finishes only when
        // released below, so a bound far above any real answer time only stops a hang.
        let bound = Duration::from_secs(60);
        let counts = tokio::time::timeout(bound, store.counts()).await;
        let sample = tokio::time::timeout(bound, store.sample_counts()).await;
        let ping = tokio::time::timeout(bound, store.ping()).await;
        let listed = tokio::time::timeout(bound, store.dead_letters(10, None)).await;
        release_tx.send(()).unwrap();
        writer.join().unwrap();

        let counts = counts.expect("counts waited for the writer").unwrap();
        assert_eq!(counts.total_dead_letters(), 0, "only committed rows count");
        let sample = sample.expect("sample waited for the writer").unwrap();
        assert_eq!(sample, CountSample::exact(counts));
        ping.expect("ping waited for the writer")
            .expect("the store's own write in progress means it takes writes");
        assert!(listed
            .expect("listing waited for the writer")
            .unwrap()
            .is_empty());
        assert_eq!(store.counts().await.unwrap().total_dead_letters(), 1);
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn ping_fails_while_another_process_holds_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        store.migrate(&BTreeSet::new()).await.unwrap();
        store.ping().await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let err = store.ping().await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        other.execute_batch("ROLLBACK").unwrap();
        store.ping().await.unwrap();
    }
}
