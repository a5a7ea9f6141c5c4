//! [`MysqlStore`]: the legacy platform schema on MySQL or MariaDB, written with sqlx.
//!
//! **Write path.** A batch is one transaction at READ COMMITTED; per botnet type:
//! 1. `SELECT id, ip … WHERE ip IN (…) FOR UPDATE` locks the nodes that exist, in index order;
//! 2. the new IPs go in with a multi-row `INSERT … ON DUPLICATE KEY UPDATE` (the merge handles a
//!    concurrent insert of the same IP), counting all their communications as new, and a
//!    `SELECT` fetches their ids;
//! 3. a `SELECT … WHERE (ip, communication_time, event_type) IN (…)` finds the communications
//!    already stored; only the others are inserted, so botpipe knows per node how many rows were
//!    new. This is exact because a communication is only written by a transaction holding its
//!    node's row lock, and READ COMMITTED reads what committed before that lock was granted;
//! 4. one multi-row `INSERT (id, …) … ON DUPLICATE KEY UPDATE` merges the existing nodes' deltas
//!    with `LEAST`/`GREATEST` and adds their new communications to `communication_count` (and
//!    corrects a new node whose communications turned out to be stored already). Every node row
//!    is written once per batch in the common case.
//!
//! Why not simply upsert everything by IP: InnoDB consumes an `AUTO_INCREMENT` value for every
//! row of an `INSERT … ON DUPLICATE KEY UPDATE` that has no explicit id, so updating existing
//! nodes that way would burn through the legacy `INT` id (2^31) in hours at full speed. Rows
//! with explicit ids consume nothing, and only genuinely new IPs take an id.
//!
//! Dialect notes: `VALUES(col)` names the proposed value in `ON DUPLICATE KEY UPDATE` (MariaDB
//! rejects MySQL 8's `AS new` alias). Every merge expression is idempotent
//! (`GREATEST(GREATEST(a, b), b) = GREATEST(a, b)`), so it is correct whichever order MySQL
//! assigns the columns in. MySQL's `GREATEST`/`LEAST` return NULL when an argument is NULL,
//! hence the `COALESCE` around them. Multi-row statements stay under the 65,535 bind limit by
//! [`ROWS_PER_STATEMENT`].
//!
//! **Sessions** run with `time_zone = '+00:00'` (TIMESTAMP values are UTC instants), READ
//! COMMITTED, and `STRICT_TRANS_TABLES`, so an over-long or out-of-range value is an error that
//! dead-letters its row instead of being silently truncated.
//!
//! **Migrations** hold `GET_LOCK` on one connection, so two processes starting at once run
//! them one after the other. MySQL DDL commits implicitly, so every step is guarded by
//! introspection and may safely run again after an interruption.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use sqlx::mysql::{
    MySql, MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions,
};
use sqlx::query::Query;
use sqlx::{Acquire, Executor, Row};

use super::merge::{plan, Communication, NodeDelta, TypePlan};
use super::recovery::{self, Isolation};
use super::schema::{self, TypeStep, BOTPIPE_SCOPE, BOTPIPE_VERSION, IP_WIDTH};
use super::{ApplyOutcome, EnrichedBatch, Store, StoreCounts, StoreError, StoredDeadLetter};
use crate::enrich::Geo;
use crate::record::{BotnetType, DeadLetter, NodeIp, RejectReason};
use crate::telemetry::metrics::DEAD_LETTERS_TOTAL;

/// Backend label for metrics and logs.
const BACKEND: &str = "mysql";
/// How long a batch waits for a pooled connection before the attempt counts as transient.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row statement: 19 binds per row stays far below MySQL's 65,535 placeholders,
/// and batches of up to this size reuse one prepared statement per distinct row count.
pub const ROWS_PER_STATEMENT: usize = 1000;
/// Prepared statements kept per connection: multi-row statements differ by row count.
const STATEMENT_CACHE: usize = 512;
/// Seconds `migrate` waits for another process's migration (`GET_LOCK` timeout).
const MIGRATION_LOCK_SECONDS: i64 = 120;
/// Dead letters per insert statement, and their approximate byte budget: a raw record can be
/// large, and the statement must fit `max_allowed_packet` (16 MiB by default).
const DEAD_LETTERS_PER_STATEMENT: usize = 200;
const DEAD_LETTER_BYTES_PER_STATEMENT: usize = 4 << 20;
/// The range of a MySQL `TIMESTAMP`, in Unix seconds: 1970-01-01 00:00:01 to 2038-01-19
/// 03:14:07 UTC. MariaDB 10.11 stores NULL instead of raising an error when a value outside it
/// is bound as a parameter, even in strict mode, so the store refuses such records itself.
const TIMESTAMP_RANGE: std::ops::RangeInclusive<i64> = 1..=2_147_483_647;
/// Error number of a duplicate key.
const ER_DUP_ENTRY: u16 = 1062;

/// Sessions: UTC, strict (errors instead of silent truncation), READ COMMITTED (see the module
/// docs for why the communication check needs it).
const SESSION_SETUP: &[&str] = &[
    "SET time_zone = '+00:00', sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_TRANS_TABLES')",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

const BOTPIPE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS botpipe_schema_migrations (
        scope VARCHAR(64) NOT NULL,
        version INT NOT NULL,
        description VARCHAR(255) NOT NULL,
        applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        PRIMARY KEY (scope, version)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
    "CREATE TABLE IF NOT EXISTS botpipe_dead_letters (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        source TEXT NOT NULL,
        reason VARCHAR(32) NOT NULL,
        detail MEDIUMTEXT NOT NULL,
        raw LONGTEXT NOT NULL,
        batch_id VARCHAR(64),
        rejected_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        stored_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        INDEX idx_botpipe_dead_letters_reason (reason)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
];

fn nodes_ddl(t: &BotnetType) -> String {
    let n = t.nodes_table();
    format!(
        "CREATE TABLE IF NOT EXISTS {n} (
            id INT AUTO_INCREMENT PRIMARY KEY,
            ip VARCHAR({IP_WIDTH}) NOT NULL,
            longitude FLOAT, latitude FLOAT,
            country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
            isp VARCHAR(255), asn VARCHAR(50),
            status ENUM('active','inactive','cleaned') DEFAULT 'active',
            active_time TIMESTAMP NULL DEFAULT NULL,
            first_seen TIMESTAMP NULL DEFAULT NULL,
            last_seen TIMESTAMP NULL DEFAULT NULL,
            cleaned_time TIMESTAMP NULL DEFAULT NULL,
            communication_count INT DEFAULT 0,
            created_time TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP NULL DEFAULT NULL,
            is_china BOOLEAN DEFAULT FALSE,
            INDEX idx_location (country, province, city), INDEX idx_status (status),
            INDEX idx_first_seen (first_seen), INDEX idx_last_seen (last_seen),
            INDEX idx_cleaned_time (cleaned_time), INDEX idx_is_china (is_china),
            UNIQUE KEY idx_unique_ip (ip)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )
}

fn communications_ddl(t: &BotnetType) -> String {
    let n = t.nodes_table();
    let c = t.communications_table();
    format!(
        "CREATE TABLE IF NOT EXISTS {c} (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            node_id INT NOT NULL,
            ip VARCHAR({IP_WIDTH}) NOT NULL,
            communication_time TIMESTAMP NOT NULL,
            received_at TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
            longitude FLOAT, latitude FLOAT,
            country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
            isp VARCHAR(255), asn VARCHAR(50),
            event_type VARCHAR(50),
            status VARCHAR(50) DEFAULT 'active',
            is_china BOOLEAN DEFAULT FALSE,
            UNIQUE KEY idx_unique_communication (ip, communication_time, event_type),
            INDEX idx_node_id (node_id), INDEX idx_communication_time (communication_time),
            INDEX idx_location (country, province, city),
            CONSTRAINT fk_node_{t} FOREIGN KEY (node_id) REFERENCES {n}(id) ON DELETE RESTRICT
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )
}

/// Secondary indexes of the current schema: (table is nodes, name, columns).
const INDEXES: &[(bool, &str, &str)] = &[
    (true, "idx_location", "country,province,city"),
    (true, "idx_status", "status"),
    (true, "idx_first_seen", "first_seen"),
    (true, "idx_last_seen", "last_seen"),
    (true, "idx_cleaned_time", "cleaned_time"),
    (true, "idx_is_china", "is_china"),
    (false, "idx_node_id", "node_id"),
    (false, "idx_communication_time", "communication_time"),
    (false, "idx_location", "country,province,city"),
];

/// Columns of the node insert for new IPs.
const NEW_NODE_COLUMNS: &str = "ip, first_seen, last_seen, cleaned_time, active_time, status, \
     longitude, latitude, country, province, city, continent, isp, asn, is_china, \
     communication_count, created_time, updated_at";
const NEW_NODE_ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
/// Columns of the merge by id.
const MERGE_NODE_COLUMNS: &str = "id, ip, first_seen, last_seen, cleaned_time, active_time, \
     status, longitude, latitude, country, province, city, continent, isp, asn, is_china, \
     communication_count, updated_at";
const MERGE_NODE_ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
const COMM_COLUMNS: &str = "node_id, ip, communication_time, received_at, longitude, latitude, \
     country, province, city, continent, isp, asn, event_type, status, is_china";
const COMM_ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

/// The `ON DUPLICATE KEY UPDATE` list of the node merge rules; the proposed
/// `communication_count` is a difference to add.
fn merge_assignments() -> String {
    let merged =
        |col: &str, f: &str| format!("COALESCE({f}({col}, VALUES({col})), {col}, VALUES({col}))");
    let last = merged("last_seen", "GREATEST");
    let cleaned = merged("cleaned_time", "GREATEST");
    format!(
        "first_seen = {first},
         last_seen = {last},
         active_time = {active},
         cleaned_time = {cleaned},
         status = CASE WHEN {cleaned} IS NOT NULL AND ({last} IS NULL OR {cleaned} >= {last})
                       THEN 'cleaned' ELSE 'active' END,
         longitude = COALESCE(VALUES(longitude), longitude),
         latitude = COALESCE(VALUES(latitude), latitude),
         country = COALESCE(VALUES(country), country),
         province = COALESCE(VALUES(province), province),
         city = COALESCE(VALUES(city), city),
         continent = COALESCE(VALUES(continent), continent),
         isp = COALESCE(VALUES(isp), isp),
         asn = COALESCE(VALUES(asn), asn),
         is_china = IF(VALUES(country) IS NOT NULL, VALUES(is_china), is_china),
         communication_count = COALESCE(communication_count, 0) + VALUES(communication_count),
         updated_at = VALUES(updated_at)",
        first = merged("first_seen", "LEAST"),
        active = merged("active_time", "GREATEST"),
    )
}

fn repeat_row(row: &str, rows: usize) -> String {
    let mut s = String::with_capacity((row.len() + 1) * rows);
    for i in 0..rows {
        if i > 0 {
            s.push(',');
        }
        s.push_str(row);
    }
    s
}

/// The statements that write a batch to one type's tables, by row count. Public so that
/// `benches/store_write.rs` can time exactly these statements without the store around them.
#[derive(Debug, Clone)]
pub struct MysqlStatements {
    nodes: String,
    comms: String,
    merge: String,
}

impl MysqlStatements {
    /// The statements for type `t`.
    pub fn new(t: &BotnetType) -> Self {
        Self {
            nodes: t.nodes_table(),
            comms: t.communications_table(),
            merge: merge_assignments(),
        }
    }

    /// Locks the existing nodes among `rows` IPs; returns `(id, ip)`.
    pub fn lock_existing(&self, rows: usize) -> String {
        format!(
            "SELECT CAST(id AS SIGNED), ip FROM {} WHERE ip IN ({}) FOR UPDATE",
            self.nodes,
            repeat_row("?", rows)
        )
    }

    /// The ids of `rows` IPs; returns `(id, ip)`.
    pub fn select_ids(&self, rows: usize) -> String {
        format!(
            "SELECT CAST(id AS SIGNED), ip FROM {} WHERE ip IN ({})",
            self.nodes,
            repeat_row("?", rows)
        )
    }

    /// Inserts `rows` new nodes with their planned communications as count, merging with any
    /// inserted concurrently.
    pub fn insert_new_nodes(&self, rows: usize) -> String {
        format!(
            "INSERT INTO {} ({NEW_NODE_COLUMNS}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            self.nodes,
            repeat_row(NEW_NODE_ROW, rows),
            self.merge
        )
    }

    /// Which of `rows` communications are stored; returns `(ip, communication_time, event_type)`.
    pub fn existing_communications(&self, rows: usize) -> String {
        format!(
            "SELECT ip, communication_time, event_type FROM {}
             WHERE (ip, communication_time, event_type) IN ({})",
            self.comms,
            repeat_row("(?,?,?)", rows)
        )
    }

    /// Inserts `rows` communications known to be new.
    pub fn insert_communications(&self, rows: usize) -> String {
        format!(
            "INSERT INTO {} ({COMM_COLUMNS}) VALUES {}",
            self.comms,
            repeat_row(COMM_ROW, rows)
        )
    }

    /// Merges `rows` node deltas by id and adds a difference to their count.
    pub fn merge_nodes(&self, rows: usize) -> String {
        format!(
            "INSERT INTO {} ({MERGE_NODE_COLUMNS}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            self.nodes,
            repeat_row(MERGE_NODE_ROW, rows),
            self.merge
        )
    }
}

type MyQuery<'q> = Query<'q, MySql, MySqlArguments>;

/// Timestamps are stored to the second (TIMESTAMP has no fraction here), and MySQL would round a
/// fraction where SQLite truncates: truncate so every backend holds the same rows.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Binds longitude … asn (eight columns); `is_china` is bound by the caller, whose column order
/// differs between nodes and communications.
fn bind_place<'q>(q: MyQuery<'q>, g: Option<&'q Geo>) -> MyQuery<'q> {
    q.bind(g.and_then(|g| g.longitude))
        .bind(g.and_then(|g| g.latitude))
        .bind(g.and_then(|g| g.country.as_deref()))
        .bind(g.and_then(|g| g.province.as_deref()))
        .bind(g.and_then(|g| g.city.as_deref()))
        .bind(g.and_then(|g| g.continent.as_deref()))
        .bind(g.and_then(|g| g.isp.as_deref()))
        .bind(g.and_then(|g| g.asn.as_deref()))
}

/// One node delta with its IP text, ready to bind.
#[derive(Debug)]
pub struct NodeRow<'a> {
    /// The IP as stored.
    pub ip: String,
    /// The delta.
    pub delta: &'a NodeDelta<'a>,
}

impl<'a> NodeRow<'a> {
    /// Rows of `nodes`, sorted by IP text (the unique index order MySQL locks in).
    pub fn rows(nodes: &'a [NodeDelta<'a>]) -> Vec<Self> {
        let mut rows: Vec<Self> = nodes
            .iter()
            .map(|delta| Self {
                ip: delta.ip.to_string(),
                delta,
            })
            .collect();
        rows.sort_by(|a, b| a.ip.cmp(&b.ip));
        rows
    }

    fn bind_merge_values<'q>(&'q self, q: MyQuery<'q>) -> MyQuery<'q> {
        let d = self.delta;
        let q = q
            .bind(d.first_online.map(whole_seconds))
            .bind(d.last_online.map(whole_seconds))
            .bind(d.last_cleanup.map(whole_seconds))
            .bind(d.last_online.map(whole_seconds))
            .bind(d.status());
        bind_place(q, d.geo).bind(d.geo.is_some_and(|g| g.is_china))
    }
}

/// Binds the new-node insert for `rows`: `(row, planned communications)`.
pub fn bind_new_nodes<'q>(
    sql: &'q str,
    rows: &'q [(&'q NodeRow<'q>, i64)],
    now: DateTime<Utc>,
) -> MyQuery<'q> {
    let mut q = sqlx::query(sql);
    for (r, planned) in rows {
        q = r
            .bind_merge_values(q.bind(r.ip.as_str()))
            .bind(*planned)
            .bind(now)
            .bind(now);
    }
    q
}

/// Binds the merge by id for `rows`: `(row, id, communications added)`.
pub fn bind_merge_nodes<'q>(
    sql: &'q str,
    rows: &'q [(&'q NodeRow<'q>, i64, i64)],
    now: DateTime<Utc>,
) -> MyQuery<'q> {
    let mut q = sqlx::query(sql);
    for (r, id, added) in rows {
        q = r
            .bind_merge_values(q.bind(*id).bind(r.ip.as_str()))
            .bind(*added)
            .bind(now);
    }
    q
}

/// One communication with its IP text, ready to bind.
#[derive(Debug)]
pub struct CommRow<'a> {
    /// The IP as stored.
    pub ip: String,
    /// The event time, whole seconds.
    pub time: DateTime<Utc>,
    /// The communication.
    pub comm: &'a Communication<'a>,
}

impl<'a> CommRow<'a> {
    /// Rows of `comms`.
    pub fn rows(comms: &'a [Communication<'a>]) -> Vec<Self> {
        comms
            .iter()
            .map(|comm| Self {
                ip: comm.ip.to_string(),
                time: whole_seconds(comm.time),
                comm,
            })
            .collect()
    }

    fn key(&self) -> (&str, i64, &'static str) {
        (
            &self.ip,
            self.time.timestamp(),
            self.comm.log_type.event_type(),
        )
    }
}

/// Binds the existence check for `rows`.
pub fn bind_existing_communications<'q>(sql: &'q str, rows: &'q [CommRow<'q>]) -> MyQuery<'q> {
    let mut q = sqlx::query(sql);
    for r in rows {
        q = q
            .bind(r.ip.as_str())
            .bind(r.time)
            .bind(r.comm.log_type.event_type());
    }
    q
}

/// Binds the insert of `rows`: `(row, node id)`.
pub fn bind_communications<'q>(
    sql: &'q str,
    rows: &'q [(&'q CommRow<'q>, i64)],
    now: DateTime<Utc>,
) -> MyQuery<'q> {
    let mut q = sqlx::query(sql);
    for (r, node_id) in rows {
        let c = r.comm;
        q = q.bind(*node_id).bind(r.ip.as_str()).bind(r.time).bind(now);
        q = bind_place(q, Some(c.geo))
            .bind(c.log_type.event_type())
            .bind(c.log_type.communication_status())
            .bind(c.geo.is_china);
    }
    q
}

/// Reads `(id, ip)` rows.
///
/// # Errors
/// Whatever the database reports.
pub async fn fetch_ids(
    conn: &mut MySqlConnection,
    q: MyQuery<'_>,
    into: &mut HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    for r in q.fetch_all(conn).await? {
        into.insert(r.try_get::<String, _>(1)?, r.try_get::<i64, _>(0)?);
    }
    Ok(())
}

/// The MySQL/MariaDB store. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct MysqlStore {
    pool: MySqlPool,
    /// `host:port/database`, for error messages (never the password).
    target: Arc<str>,
    /// Types whose tables are migrated in this process, with their statements.
    types: Arc<Mutex<HashMap<BotnetType, Arc<MysqlStatements>>>>,
}

impl MysqlStore {
    /// A pool for `url`, with `password` if the URL has none. Connects lazily: an unreachable
    /// server shows up as a retryable error on first use, not here.
    ///
    /// # Errors
    /// When the URL is not a MySQL URL.
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let mut opts = MySqlConnectOptions::from_str(url).map_err(|source| StoreError::Sqlx {
            op: "parsing the MySQL URL in store.url".into(),
            source,
        })?;
        if let Some(p) = password {
            opts = opts.password(p);
        }
        opts = opts
            .timezone(Some("+00:00".to_owned()))
            .charset("utf8mb4")
            .statement_cache_capacity(STATEMENT_CACHE);
        let target = format!(
            "mysql {}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("")
        );
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    for s in SESSION_SETUP {
                        conn.execute(*s).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(opts);
        Ok(Self {
            pool,
            target: target.into(),
            types: Arc::default(),
        })
    }

    /// The pool, for tools that inspect the database (tests, benchmarks).
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    fn err(&self, op: impl std::fmt::Display) -> impl FnOnce(sqlx::Error) -> StoreError {
        let op = format!("{}: {op}", self.target);
        move |source| StoreError::Sqlx { op, source }
    }

    fn statements(&self, t: &BotnetType) -> Option<Arc<MysqlStatements>> {
        self.types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .cloned()
    }

    async fn ensure_types(&self, batch: &EnrichedBatch) -> Result<(), StoreError> {
        let missing: BTreeSet<BotnetType> = {
            let known = self.types.lock().unwrap_or_else(|p| p.into_inner());
            batch
                .batch
                .records
                .iter()
                .map(|r| &r.botnet_type)
                .filter(|t| !known.contains_key(*t))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            Ok(())
        } else {
            self.migrate(&missing).await
        }
    }

    async fn migrate_locked(&self, types: &BTreeSet<BotnetType>) -> Result<(), StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(self.err("connecting to migrate"))?;
        let lock = "LEFT(CONCAT('botpipe_migrate:', DATABASE()), 64)";
        let got: Option<i64> = sqlx::query_scalar(&format!("SELECT GET_LOCK({lock}, ?)"))
            .bind(MIGRATION_LOCK_SECONDS)
            .fetch_one(&mut *conn)
            .await
            .map_err(self.err("taking the migration lock"))?;
        if got != Some(1) {
            return Err(StoreError::MigrationLockTimeout {
                lock: format!("botpipe_migrate:{}", self.target),
            });
        }
        let result = self.migrate_steps(&mut conn, types).await;
        let released = sqlx::query(&format!("DO RELEASE_LOCK({lock})"))
            .execute(&mut *conn)
            .await;
        if let Err(error) = released {
            // Closing the session releases the lock too.
            tracing::warn!(%error, "Releasing the migration lock failed; closing the connection.");
            if let Err(error) = conn.close().await {
                tracing::debug!(%error, "Closing the migration connection failed.");
            }
        }
        result
    }

    async fn migrate_steps(
        &self,
        conn: &mut MySqlConnection,
        types: &BTreeSet<BotnetType>,
    ) -> Result<(), StoreError> {
        for ddl in BOTPIPE_SCHEMA {
            conn.execute(*ddl)
                .await
                .map_err(self.err("creating botpipe tables"))?;
        }
        record_step(conn, BOTPIPE_SCOPE, BOTPIPE_VERSION, "botpipe tables")
            .await
            .map_err(self.err("recording migration"))?;
        let done: HashMap<String, i32> = sqlx::query(
            "SELECT scope, CAST(MAX(version) AS SIGNED) FROM botpipe_schema_migrations GROUP BY scope",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(self.err("reading botpipe_schema_migrations"))?
        .iter()
        .map(|r| Ok((r.try_get(0)?, i32::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0))))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(self.err("reading botpipe_schema_migrations"))?;
        for t in types {
            let from = done.get(t.as_str()).copied().unwrap_or(0);
            for step in TypeStep::ALL.into_iter().filter(|s| s.version() > from) {
                self.run_step(conn, t, step).await?;
                record_step(conn, t.as_str(), step.version(), step.description())
                    .await
                    .map_err(self.err("recording migration"))?;
                tracing::info!(botnet_type = %t, version = step.version(), step = step.description(), "Applied migration step.");
            }
        }
        Ok(())
    }

    async fn run_step(
        &self,
        conn: &mut MySqlConnection,
        t: &BotnetType,
        step: TypeStep,
    ) -> Result<(), StoreError> {
        let n = t.nodes_table();
        let c = t.communications_table();
        let what = format!("migrating {n}/{c}: {}", step.description());
        let mut ddl: Vec<String> = Vec::new();
        match step {
            TypeStep::CreateTables => {
                ddl.push(nodes_ddl(t));
                ddl.push(communications_ddl(t));
            }
            TypeStep::RenameLogTime | TypeStep::RenameCreatedAt => {
                let (old, new, default) = if step == TypeStep::RenameLogTime {
                    ("log_time", "active_time", "NULL")
                } else {
                    ("created_at", "created_time", "CURRENT_TIMESTAMP")
                };
                let cols = columns(conn, &n).await.map_err(self.err(&what))?;
                match (cols.get(old), cols.contains_key(new)) {
                    (Some(col), false) => {
                        // CHANGE keeps the values; the type is kept too, only the name changes.
                        let ty = &col.column_type;
                        let default = if is_time_type(ty) { default } else { "NULL" };
                        ddl.push(format!(
                            "ALTER TABLE {n} CHANGE {old} {new} {ty} NULL DEFAULT {default}"
                        ));
                    }
                    (None, false) => ddl.push(format!(
                        "ALTER TABLE {n} ADD COLUMN {new} TIMESTAMP NULL DEFAULT {default}"
                    )),
                    (Some(_), true) => tracing::warn!(
                        table = %n, old, new,
                        "Both the legacy and the current column exist; keeping both, botpipe writes the current one."
                    ),
                    (None, true) => {}
                }
            }
            TypeStep::AddCleanedTime => {
                let cols = columns(conn, &n).await.map_err(self.err(&what))?;
                if !cols.contains_key("cleaned_time") {
                    let after = if cols.contains_key("last_seen") {
                        " AFTER last_seen"
                    } else {
                        ""
                    };
                    ddl.push(format!(
                        "ALTER TABLE {n} ADD COLUMN cleaned_time TIMESTAMP NULL DEFAULT NULL{after}"
                    ));
                }
            }
            TypeStep::StatusAcceptsCleaned => {
                let cols = columns(conn, &n).await.map_err(self.err(&what))?;
                let Some(status) = cols.get("status") else {
                    return Err(StoreError::Schema {
                        table: n,
                        problem: "no status column".into(),
                    });
                };
                let ty = status.column_type.trim();
                if ty.to_ascii_lowercase().starts_with("enum(") && !ty.contains("'cleaned'") {
                    // Append, so that any other legacy value stays valid.
                    let values = ty.strip_suffix(')').unwrap_or(ty);
                    let null = if status.nullable { "NULL" } else { "NOT NULL" };
                    ddl.push(format!(
                        "ALTER TABLE {n} MODIFY status {values},'cleaned') {null} DEFAULT 'active'"
                    ));
                }
            }
            TypeStep::WidenIp => {
                for table in [&n, &c] {
                    let cols = columns(conn, table).await.map_err(self.err(&what))?;
                    if let Some(ip) = cols.get("ip") {
                        if schema::varchar_len(&ip.column_type).is_some_and(|l| l < IP_WIDTH) {
                            let null = if ip.nullable { "NULL" } else { "NOT NULL" };
                            ddl.push(format!(
                                "ALTER TABLE {table} MODIFY ip VARCHAR({IP_WIDTH}) {null}"
                            ));
                        }
                    }
                }
            }
            TypeStep::CommunicationKeyWithEventType => {
                let idx = indexes(conn, &c).await.map_err(self.err(&what))?;
                let mut parts: Vec<String> = idx
                    .iter()
                    .filter(|i| i.unique && i.columns == "ip,communication_time")
                    .map(|i| format!("DROP INDEX `{}`", i.name))
                    .collect();
                let has_new = idx
                    .iter()
                    .any(|i| i.unique && i.columns == "ip,communication_time,event_type");
                if !has_new {
                    let taken = idx.iter().any(|i| {
                        i.name == "idx_unique_communication" && i.columns != "ip,communication_time"
                    });
                    let name = if taken {
                        format!("idx_unique_communication_{t}")
                    } else {
                        "idx_unique_communication".to_owned()
                    };
                    parts.push(format!(
                        "ADD UNIQUE KEY `{name}` (ip, communication_time, event_type)"
                    ));
                }
                if !parts.is_empty() {
                    ddl.push(format!("ALTER TABLE {c} {}", parts.join(", ")));
                }
                let node_idx = indexes(conn, &n).await.map_err(self.err(&what))?;
                if !node_idx.iter().any(|i| i.unique && i.columns == "ip") {
                    ddl.push(format!("ALTER TABLE {n} ADD UNIQUE KEY idx_unique_ip (ip)"));
                }
            }
            TypeStep::Indexes => {
                for (table, is_nodes) in [(&n, true), (&c, false)] {
                    let idx = indexes(conn, table).await.map_err(self.err(&what))?;
                    let parts: Vec<String> = INDEXES
                        .iter()
                        .filter(|(on_nodes, _, _)| *on_nodes == is_nodes)
                        .filter(|(_, name, cols)| {
                            !idx.iter().any(|i| {
                                i.name == *name
                                    || i.columns == *cols
                                    || i.columns.starts_with(&format!("{cols},"))
                            })
                        })
                        .map(|(_, name, cols)| format!("ADD INDEX `{name}` ({cols})"))
                        .collect();
                    if !parts.is_empty() {
                        ddl.push(format!("ALTER TABLE {table} {}", parts.join(", ")));
                    }
                }
            }
        }
        for statement in ddl {
            conn.execute(statement.as_str())
                .await
                .map_err(self.err(&what))?;
        }
        Ok(())
    }

    async fn apply_whole(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        let plans = plan(batch);
        let now = whole_seconds(Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.err("beginning batch transaction"))?;
        let mut out = ApplyOutcome::default();
        self.insert_dead_letters(&mut tx, &batch.batch.dead_letters, &batch.batch.id.0)
            .await?;
        out.dead_letters = batch.batch.dead_letters.len() as u64;
        for p in &plans {
            self.apply_type(&mut tx, p, now, &mut out).await?;
        }
        tx.commit()
            .await
            .map_err(self.err(format_args!("committing batch {}", batch.batch.id)))?;
        Ok(out)
    }

    /// The slow path after a row rejection: see [`super::recovery`].
    async fn apply_isolating(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        let now = whole_seconds(Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(self.err("beginning batch transaction"))?;
        let mut out = ApplyOutcome::default();
        let mut nodes: HashSet<(BotnetType, NodeIp)> = HashSet::new();
        let mut rejected: Vec<DeadLetter> = Vec::new();
        let mut iso = Isolation::new(batch.batch.records.len());
        while let Some(slice) = iso.next_slice() {
            let sub = recovery::sub_batch(batch, slice.clone());
            let plans = plan(&sub);
            let mut sp = (&mut tx)
                .begin()
                .await
                .map_err(self.err("creating savepoint"))?;
            let mut sub_out = ApplyOutcome::default();
            let mut result = Ok(());
            for p in &plans {
                result = self.apply_type(&mut sp, p, now, &mut sub_out).await;
                if result.is_err() {
                    break;
                }
            }
            match result {
                Ok(()) => {
                    sp.commit().await.map_err(self.err("releasing savepoint"))?;
                    out.communications_inserted += sub_out.communications_inserted;
                    out.communications_duplicate += sub_out.communications_duplicate;
                    nodes.extend(
                        sub.batch
                            .records
                            .iter()
                            .map(|r| (r.botnet_type.clone(), r.ip)),
                    );
                }
                Err(e) if e.is_row_rejection() => {
                    sp.rollback()
                        .await
                        .map_err(self.err("rolling back to savepoint"))?;
                    if let Some(i) = iso.refused(slice) {
                        rejected.push(recovery::rejected_letter(batch, i, &e.to_string()));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut letters = batch.batch.dead_letters.clone();
        letters.extend(rejected.iter().cloned());
        self.insert_dead_letters(&mut tx, &letters, &batch.batch.id.0)
            .await?;
        tx.commit()
            .await
            .map_err(self.err(format_args!("committing batch {}", batch.batch.id)))?;
        out.nodes = nodes.len() as u64;
        out.dead_letters = letters.len() as u64;
        metrics::counter!(DEAD_LETTERS_TOTAL, "reason" => RejectReason::StoreRejected.as_str())
            .increment(rejected.len() as u64);
        tracing::warn!(
            backend = BACKEND,
            batch = %batch.batch.id,
            rejected = rejected.len(),
            "The database refused some records; they are dead letters and the rest of the batch is committed."
        );
        Ok(out)
    }

    async fn apply_type(
        &self,
        conn: &mut MySqlConnection,
        p: &TypePlan<'_>,
        now: DateTime<Utc>,
        out: &mut ApplyOutcome,
    ) -> Result<(), StoreError> {
        let Some(sql) = self.statements(&p.botnet_type) else {
            return Err(StoreError::Schema {
                table: p.botnet_type.nodes_table(),
                problem: "not migrated".into(),
            });
        };
        let n = p.botnet_type.nodes_table();
        let c = p.botnet_type.communications_table();
        let nodes = NodeRow::rows(&p.nodes);
        if nodes.is_empty() {
            return Ok(());
        }
        let comms = CommRow::rows(&p.communications);
        let written = write_type(conn, &sql, &nodes, &comms, now).await.map_err(
            |(stage, source)| match stage {
                Stage::InsertCommunications
                    if source
                        .as_database_error()
                        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
                        .is_some_and(|d| d.number() == ER_DUP_ENTRY) =>
                {
                    StoreError::Conflict { table: c.clone() }
                }
                Stage::MissingId(ip) => StoreError::Schema {
                    table: n.clone(),
                    problem: format!("no id for {ip} after inserting it"),
                },
                stage => StoreError::Sqlx {
                    op: format!("{}: {} {}", self.target, stage.verb(), stage.table(&n, &c)),
                    source,
                },
            },
        )?;
        out.nodes += nodes.len() as u64;
        out.communications_inserted += written;
        out.communications_duplicate += comms.len() as u64 - written.min(comms.len() as u64);
        Ok(())
    }

    async fn insert_dead_letters(
        &self,
        conn: &mut MySqlConnection,
        letters: &[DeadLetter],
        batch_id: &str,
    ) -> Result<(), StoreError> {
        let mut start = 0;
        while start < letters.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < letters.len()
                && end - start < DEAD_LETTERS_PER_STATEMENT
                && (end == start || bytes < DEAD_LETTER_BYTES_PER_STATEMENT)
            {
                let d = &letters[end];
                bytes += d.raw.len() + d.detail.len() + d.source.len();
                end += 1;
            }
            let chunk = &letters[start..end];
            let sql = format!(
                "INSERT INTO botpipe_dead_letters (source, reason, detail, raw, batch_id, rejected_at) VALUES {}",
                repeat_row("(?,?,?,?,?,?)", chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q
                    .bind(d.source.as_str())
                    .bind(d.reason.as_str())
                    .bind(d.detail.as_str())
                    .bind(d.raw.as_str())
                    .bind(batch_id)
                    .bind(whole_seconds(d.rejected_at));
            }
            q.execute(&mut *conn)
                .await
                .map_err(self.err("inserting into botpipe_dead_letters"))?;
            start = end;
        }
        Ok(())
    }
}

/// Which statement of [`write_type`] failed.
#[derive(Debug)]
pub enum Stage {
    /// Locking existing nodes.
    LockNodes,
    /// Inserting new nodes.
    InsertNodes,
    /// Reading ids of new nodes.
    SelectIds,
    /// A new node has no id (it vanished): carries the IP.
    MissingId(String),
    /// Reading stored communications.
    ExistingCommunications,
    /// Inserting communications.
    InsertCommunications,
    /// Merging nodes by id.
    MergeNodes,
}

impl Stage {
    fn verb(&self) -> &'static str {
        match self {
            Self::LockNodes => "locking nodes in",
            Self::InsertNodes => "inserting new nodes into",
            Self::SelectIds | Self::MissingId(_) => "reading node ids from",
            Self::ExistingCommunications => "reading stored communications from",
            Self::InsertCommunications => "inserting into",
            Self::MergeNodes => "merging nodes into",
        }
    }

    fn table<'t>(&self, nodes: &'t str, comms: &'t str) -> &'t str {
        match self {
            Self::ExistingCommunications | Self::InsertCommunications => comms,
            _ => nodes,
        }
    }
}

/// Writes one type's node deltas (`nodes`, sorted by IP) and distinct communications with the
/// statements of [`MysqlStatements`], inside the caller's transaction. Returns the number of
/// communications inserted. Public so that the benchmark's raw loop issues exactly this
/// sequence; the store adds planning, retries and error context around it.
///
/// # Errors
/// The failing stage and the database error.
pub async fn write_type(
    conn: &mut MySqlConnection,
    sql: &MysqlStatements,
    nodes: &[NodeRow<'_>],
    comms: &[CommRow<'_>],
    now: DateTime<Utc>,
) -> Result<u64, (Stage, sqlx::Error)> {
    // 1. Lock the nodes that exist.
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(nodes.len());
    for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
        let text = sql.lock_existing(chunk.len());
        let mut q = sqlx::query(&text);
        for r in chunk {
            q = q.bind(r.ip.as_str());
        }
        fetch_ids(conn, q, &mut ids)
            .await
            .map_err(|e| (Stage::LockNodes, e))?;
    }
    // 2. Insert the new ones, counting all their communications as new (a node that did not
    //    exist has none stored, unless another writer inserted it meanwhile: corrected below),
    //    and read their ids.
    let mut planned: HashMap<&str, i64> = HashMap::with_capacity(nodes.len());
    for c in comms {
        *planned.entry(c.ip.as_str()).or_default() += 1;
    }
    let existing: HashSet<String> = ids.keys().cloned().collect();
    let new: Vec<(&NodeRow<'_>, i64)> = nodes
        .iter()
        .filter(|r| !existing.contains(r.ip.as_str()))
        .map(|r| (r, planned.get(r.ip.as_str()).copied().unwrap_or(0)))
        .collect();
    for chunk in new.chunks(ROWS_PER_STATEMENT) {
        let text = sql.insert_new_nodes(chunk.len());
        bind_new_nodes(&text, chunk, now)
            .execute(&mut *conn)
            .await
            .map_err(|e| (Stage::InsertNodes, e))?;
        let text = sql.select_ids(chunk.len());
        let mut q = sqlx::query(&text);
        for (r, _) in chunk {
            q = q.bind(r.ip.as_str());
        }
        fetch_ids(conn, q, &mut ids)
            .await
            .map_err(|e| (Stage::SelectIds, e))?;
    }
    // 3. Insert the communications not stored yet.
    let mut stored: HashSet<(String, i64, String)> = HashSet::new();
    for chunk in comms.chunks(ROWS_PER_STATEMENT) {
        let text = sql.existing_communications(chunk.len());
        let rows = bind_existing_communications(&text, chunk)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| (Stage::ExistingCommunications, e))?;
        for r in rows {
            let get = || -> Result<(String, i64, String), sqlx::Error> {
                let t: DateTime<Utc> = r.try_get(1)?;
                let e: Option<String> = r.try_get(2)?;
                Ok((r.try_get(0)?, t.timestamp(), e.unwrap_or_default()))
            };
            stored.insert(get().map_err(|e| (Stage::ExistingCommunications, e))?);
        }
    }
    let mut fresh: Vec<(&CommRow<'_>, i64)> = Vec::with_capacity(comms.len());
    let mut added: HashMap<&str, i64> = HashMap::new();
    for r in comms {
        let (ip, secs, event) = r.key();
        if stored.contains(&(ip.to_owned(), secs, event.to_owned())) {
            continue;
        }
        let Some(&id) = ids.get(&r.ip) else {
            return Err((Stage::MissingId(r.ip.clone()), sqlx::Error::RowNotFound));
        };
        fresh.push((r, id));
        *added.entry(r.ip.as_str()).or_default() += 1;
    }
    for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
        let text = sql.insert_communications(chunk.len());
        bind_communications(&text, chunk, now)
            .execute(&mut *conn)
            .await
            .map_err(|e| (Stage::InsertCommunications, e))?;
    }
    // 4. Merge the existing nodes by id, adding their new communications; a new node only
    //    needs this when its planned count was wrong.
    let mut merge: Vec<(&NodeRow<'_>, i64, i64)> = Vec::with_capacity(nodes.len());
    for r in nodes {
        let Some(&id) = ids.get(&r.ip) else {
            return Err((Stage::MissingId(r.ip.clone()), sqlx::Error::RowNotFound));
        };
        let got = added.get(r.ip.as_str()).copied().unwrap_or(0);
        if existing.contains(r.ip.as_str()) {
            merge.push((r, id, got));
        } else {
            let counted = planned.get(r.ip.as_str()).copied().unwrap_or(0);
            if got != counted {
                merge.push((r, id, got - counted));
            }
        }
    }
    for chunk in merge.chunks(ROWS_PER_STATEMENT) {
        let text = sql.merge_nodes(chunk.len());
        bind_merge_nodes(&text, chunk, now)
            .execute(&mut *conn)
            .await
            .map_err(|e| (Stage::MergeNodes, e))?;
    }
    Ok(fresh.len() as u64)
}

async fn record_step(
    conn: &mut MySqlConnection,
    scope: &str,
    version: i32,
    description: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT IGNORE INTO botpipe_schema_migrations (scope, version, description) VALUES (?, ?, ?)",
    )
    .bind(scope)
    .bind(version)
    .bind(description)
    .execute(conn)
    .await
    .map(|_| ())
}

/// `batch` without the records whose time a `TIMESTAMP` cannot hold, which become dead letters
/// of the returned batch; `None` when every record fits.
fn without_unstorable_times(batch: &EnrichedBatch) -> Option<EnrichedBatch> {
    let fits = |t: &DateTime<Utc>| TIMESTAMP_RANGE.contains(&t.timestamp());
    if batch.batch.records.iter().all(|r| fits(&r.timestamp)) {
        return None;
    }
    let mut kept = recovery::sub_batch(batch, 0..0);
    kept.batch.dead_letters = batch.batch.dead_letters.clone();
    let mut refused = 0u64;
    for (i, r) in batch.batch.records.iter().enumerate() {
        if fits(&r.timestamp) {
            kept.batch.records.push(r.clone());
            kept.geo.push(batch.geo.get(i).cloned().unwrap_or_default());
        } else {
            refused += 1;
            kept.batch.dead_letters.push(recovery::rejected_letter(
                batch,
                i,
                &format!(
                    "timestamp {} is outside the range of a MySQL TIMESTAMP (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC)",
                    r.timestamp
                ),
            ));
        }
    }
    metrics::counter!(DEAD_LETTERS_TOTAL, "reason" => RejectReason::StoreRejected.as_str())
        .increment(refused);
    Some(kept)
}

fn is_time_type(ty: &str) -> bool {
    let t = ty.to_ascii_lowercase();
    t.starts_with("timestamp") || t.starts_with("datetime")
}

#[derive(Debug)]
struct Column {
    column_type: String,
    nullable: bool,
}

async fn columns(
    conn: &mut MySqlConnection,
    table: &str,
) -> Result<HashMap<String, Column>, sqlx::Error> {
    sqlx::query(
        "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), CAST(is_nullable AS CHAR)
         FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(table)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get::<String, _>(0)?.to_ascii_lowercase(),
            Column {
                column_type: r.try_get(1)?,
                nullable: r.try_get::<String, _>(2)? == "YES",
            },
        ))
    })
    .collect()
}

#[derive(Debug)]
struct Index {
    name: String,
    /// Comma-separated, in key order, lower case.
    columns: String,
    unique: bool,
}

async fn indexes(conn: &mut MySqlConnection, table: &str) -> Result<Vec<Index>, sqlx::Error> {
    sqlx::query(
        "SELECT CAST(index_name AS CHAR),
                CAST(GROUP_CONCAT(column_name ORDER BY seq_in_index SEPARATOR ',') AS CHAR),
                CAST(MIN(non_unique) AS SIGNED)
         FROM information_schema.statistics
         WHERE table_schema = DATABASE() AND table_name = ? AND index_name <> 'PRIMARY'
         GROUP BY index_name",
    )
    .bind(table)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| {
        Ok(Index {
            name: r.try_get(0)?,
            columns: r.try_get::<String, _>(1)?.to_ascii_lowercase(),
            unique: r.try_get::<i64, _>(2)? == 0,
        })
    })
    .collect()
}

impl Store for MysqlStore {
    async fn migrate(&self, types: &BTreeSet<BotnetType>) -> Result<(), StoreError> {
        recovery::with_retries(BACKEND, || self.migrate_locked(types)).await?;
        let mut known = self.types.lock().unwrap_or_else(|p| p.into_inner());
        for t in types {
            known
                .entry(t.clone())
                .or_insert_with(|| Arc::new(MysqlStatements::new(t)));
        }
        Ok(())
    }

    async fn apply(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        let checked = without_unstorable_times(batch);
        let batch = checked.as_ref().unwrap_or(batch);
        self.ensure_types(batch).await?;
        recovery::with_retries(BACKEND, || async move {
            match self.apply_whole(batch).await {
                Err(e) if e.is_row_rejection() => self.apply_isolating(batch).await,
                r => r,
            }
        })
        .await
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(self.err("counting rows"))?;
        let mut out = StoreCounts::default();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables
             WHERE table_schema = DATABASE() AND table_name LIKE 'botnet\\_nodes\\_%'
             ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(self.err("listing node tables"))?;
        let all: HashSet<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables
             WHERE table_schema = DATABASE()",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(self.err("listing tables"))?
        .into_iter()
        .collect();
        for table in tables {
            let Some(t) = table
                .strip_prefix("botnet_nodes_")
                .and_then(|t| BotnetType::parse(t).ok())
            else {
                continue;
            };
            let by_status = sqlx::query(&format!(
                "SELECT COALESCE(CAST(status AS CHAR), 'null'), COUNT(*) FROM {table} GROUP BY 1"
            ))
            .fetch_all(&mut *conn)
            .await
            .map_err(self.err(format_args!("counting {table}")))?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)?,
                    r.try_get::<i64, _>(1)?.max(0) as u64,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.err(format_args!("counting {table}")))?;
            out.nodes.insert(t.to_string(), by_status);
            let c = t.communications_table();
            let comms: i64 = if all.contains(&c) {
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {c}"))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(self.err(format_args!("counting {c}")))?
            } else {
                0
            };
            out.communications
                .insert(t.to_string(), comms.max(0) as u64);
        }
        if all.contains("botpipe_dead_letters") {
            out.dead_letters =
                sqlx::query("SELECT reason, COUNT(*) FROM botpipe_dead_letters GROUP BY reason")
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(self.err("counting botpipe_dead_letters"))?
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<String, _>(0)?,
                            r.try_get::<i64, _>(1)?.max(0) as u64,
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(self.err("counting botpipe_dead_letters"))?;
        }
        Ok(out)
    }

    async fn delete_dead_letters(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        // Chunks keep each statement far below MySQL's 65,535 placeholders.
        for chunk in ids.chunks(1000) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!("DELETE FROM botpipe_dead_letters WHERE id IN ({marks})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            let done = q
                .execute(&self.pool)
                .await
                .map_err(self.err("deleting from botpipe_dead_letters"))?;
            deleted += done.rows_affected();
        }
        Ok(deleted)
    }

    async fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        sqlx::query(
            "SELECT id, source, reason, detail, raw, rejected_at FROM botpipe_dead_letters
             WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err("listing botpipe_dead_letters"))?
        .iter()
        .map(|r| {
            let reason: String = r.try_get(2)?;
            Ok(StoredDeadLetter {
                id: r.try_get(0)?,
                letter: DeadLetter {
                    source: r.try_get(1)?,
                    reason: RejectReason::parse(&reason).unwrap_or(RejectReason::StoreRejected),
                    detail: r.try_get(3)?,
                    raw: r.try_get(4)?,
                    rejected_at: r.try_get(5)?,
                },
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(self.err("reading botpipe_dead_letters"))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(self.err("ping"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(s: &str) -> usize {
        s.matches('?').count()
    }

    #[test]
    fn statements_bind_one_placeholder_per_value() {
        let s = MysqlStatements::new(&BotnetType::parse("mozi").unwrap());
        assert_eq!(placeholders(&s.insert_new_nodes(3)), 3 * 18);
        assert_eq!(placeholders(&s.merge_nodes(2)), 2 * 18);
        assert_eq!(placeholders(&s.insert_communications(4)), 4 * 15);
        assert_eq!(placeholders(&s.existing_communications(5)), 5 * 3);
        assert_eq!(placeholders(&s.lock_existing(7)), 7);
        assert!(placeholders(&s.merge_nodes(ROWS_PER_STATEMENT)) < 65_535);
    }

    #[test]
    fn merge_uses_values_not_the_mysql8_alias() {
        let s = MysqlStatements::new(&BotnetType::parse("mozi").unwrap());
        let sql = s.merge_nodes(1);
        assert!(sql.contains("VALUES(last_seen)"));
        assert!(!sql.contains(" AS new"));
        assert!(sql.contains(
            "communication_count = COALESCE(communication_count, 0) + VALUES(communication_count)"
        ));
        // New nodes add their planned count too, so a concurrent insert of the same IP still
        // ends with the right count after the correction.
        assert!(s
            .insert_new_nodes(1)
            .contains("+ VALUES(communication_count)"));
    }

    #[test]
    fn records_beyond_2038_become_dead_letters() {
        let rec = |secs: i64| crate::record::Record {
            ip: NodeIp::parse("1.2.3.4").unwrap(),
            timestamp: DateTime::from_timestamp(secs, 0).unwrap(),
            botnet_type: BotnetType::parse("mozi").unwrap(),
            log_type: crate::record::LogType::Online,
            seq_id: None,
        };
        let ok = EnrichedBatch {
            batch: crate::record::Batch::new("t", vec![rec(1_700_000_000)], vec![]),
            geo: vec![Geo::unknown()],
        };
        assert!(without_unstorable_times(&ok).is_none());
        let mixed = EnrichedBatch {
            batch: crate::record::Batch::new(
                "t",
                vec![rec(1_700_000_000), rec(2_200_000_000), rec(0)],
                vec![],
            ),
            geo: vec![Geo::unknown(); 3],
        };
        let kept = without_unstorable_times(&mixed).unwrap();
        assert_eq!(kept.batch.records.len(), 1);
        assert_eq!(kept.geo.len(), 1);
        assert_eq!(kept.batch.dead_letters.len(), 2);
        assert!(kept
            .batch
            .dead_letters
            .iter()
            .all(|d| d.reason == RejectReason::StoreRejected && d.raw.contains("1.2.3.4")));
    }

    #[test]
    fn time_types() {
        assert!(is_time_type("timestamp"));
        assert!(is_time_type("datetime(6)"));
        assert!(!is_time_type("varchar(20)"));
    }
}
