//! [`Mysql`]: the MySQL/MariaDB [`Dialect`] of the generic [`SqlStore`](super::sql::SqlStore),
//! on the legacy platform schema.
//!
//! **Write path.** Inside a partition's transaction (see [`super::sql`]: no other botpipe
//! transaction writes the same IPs meanwhile), at READ COMMITTED, per botnet type:
//! 1. `SELECT id, ip … WHERE ip IN (…)` finds the nodes that exist. A plain read, not `FOR
//!    UPDATE`: the partition lock already makes this transaction the only writer of these rows,
//!    and a locking read could scan (and wait on) rows of other partitions when the optimiser
//!    prefers a table scan on a small table;
//! 2. the new IPs go in with a multi-row `INSERT … ON DUPLICATE KEY UPDATE` (the merge still
//!    handles an IP inserted by a writer outside botpipe), counting all their communications as
//!    new, and a `SELECT` fetches their ids;
//! 3. a `SELECT … WHERE (ip, communication_time, event_type) IN (…)` finds the communications
//!    already stored; only the others are inserted, so botpipe knows per node how many rows were
//!    new. This is exact because a communication is only written under its partition's lock,
//!    and READ COMMITTED reads what committed before that lock was granted;
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
//! **Sessions** stay in the server's default `time_zone`, and every time is bound as the naive
//! wall-clock of `[store] timezone` ([`WallClock`]): exactly how the legacy writer wrote its
//! collectors' times, so the stored values equal the legacy's whatever the server's zone (see
//! [`super::clock`]). Sessions also run at READ COMMITTED (no gap locks outside duplicate
//! checks), with `STRICT_TRANS_TABLES`, so an out-of-range value is an error that dead-letters
//! its row instead of being silently mangled.
//!
//! **Locks** are `GET_LOCK` session locks named after the database: the migration lock, and one
//! per write partition, taken inside the transaction and released after it ended. MySQL DDL
//! commits implicitly, so every migration step is guarded by introspection and may safely run
//! again after an interruption. The DDL is in `src/store/ddl/mysql/`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::{MySql, MySqlArguments, MySqlConnectOptions, MySqlConnection};
use sqlx::query::Query;
use sqlx::Row;

use super::clock::WallClock;
use super::merge::{place_assignments, stored_coordinates, Communication, NodeDelta};
use super::recovery;
use super::schema::IP_WIDTH;
use super::sql::{
    describe, sql_err, Change, ColumnInfo, Dialect, Letters, SqlFuture, StoreFuture, TimeDefault,
    Write,
};
use super::{EnrichedBatch, StoreError};
use crate::enrich::Geo;
use crate::record::{BotnetType, LogType, RejectReason};
use crate::telemetry::metrics::DEAD_LETTERS_TOTAL;

/// Rows per multi-row statement: 19 binds per row stays far below MySQL's 65,535 placeholders,
/// and batches of up to this size reuse one prepared statement per distinct row count.
pub const ROWS_PER_STATEMENT: usize = 1000;
/// Prepared statements kept per connection: multi-row statements differ by row count.
const STATEMENT_CACHE: usize = 512;
/// Seconds `migrate` waits for another process's migration (`GET_LOCK` timeout).
const MIGRATION_LOCK_SECONDS: i64 = 120;
/// Seconds a write waits for a busy partition before the attempt fails as retryable.
const PARTITION_LOCK_SECONDS: i64 = 30;
/// The migration lock's name: per database, within `GET_LOCK`'s 64 characters.
const MIGRATION_LOCK: &str = "LEFT(CONCAT('botpipe_migrate:', DATABASE()), 64)";
/// A write partition lock's name (binds the partition): per database.
const PARTITION_LOCK: &str = "LEFT(CONCAT('botpipe_w', ?, ':', DATABASE()), 64)";
/// Dead letters per insert statement, and their approximate byte budget: a raw record can be
/// large, and the statement must fit `max_allowed_packet` (16 MiB by default).
const DEAD_LETTERS_PER_STATEMENT: usize = 200;
const DEAD_LETTER_BYTES_PER_STATEMENT: usize = 4 << 20;
/// The range of a MySQL `TIMESTAMP`, in Unix seconds: 1970-01-01 00:00:01 to 2038-01-19
/// 03:14:07 UTC. MariaDB 10.11 stores NULL instead of raising an error when a value outside it
/// is bound as a parameter, even in strict mode, so the store refuses such records itself.
/// Times are bound as wall-clock read in the server's zone, which may be up to 14 hours from
/// UTC, so the store keeps a day's margin at both ends.
const TIMESTAMP_RANGE: std::ops::RangeInclusive<i64> = 86_400..=2_147_483_647 - 86_400;
/// Error number of a duplicate key.
const ER_DUP_ENTRY: u16 = 1062;

/// The connection every method of the dialect works on.
type C = MySqlConnection;

/// The MySQL/MariaDB dialect.
#[derive(Debug)]
pub struct Mysql {
    /// `mysql host:port/database`, for messages.
    target: String,
    /// The wall-clock times are bound in.
    clock: WallClock,
}

impl Dialect for Mysql {
    type Db = MySql;
    type Statements = MysqlStatements;

    const BACKEND: &'static str = "mysql";
    /// The server's zone, strict (errors instead of silent mangling), READ COMMITTED (see the
    /// module docs).
    const SESSION_SETUP: &'static [&'static str] = &[
        "SET sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_TRANS_TABLES')",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    ];
    const BOTPIPE_SCHEMA: &'static [&'static str] = &[
        include_str!("ddl/mysql/botpipe_migrations.sql"),
        include_str!("ddl/mysql/botpipe_dead_letters.sql"),
    ];
    const NODES_DDL: &'static str = include_str!("ddl/mysql/nodes.sql");
    const COMMUNICATIONS_DDL: &'static str = include_str!("ddl/mysql/communications.sql");
    const INDEX_NAMES_ARE_GLOBAL: bool = false;
    const LIST_TABLES: &'static str =
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables
         WHERE table_schema = DATABASE()";
    const COUNT_BY_STATUS: &'static str =
        "SELECT COALESCE(CAST(status AS CHAR), 'null'), COUNT(*) FROM {table} GROUP BY 1";
    const COUNT_DEAD_LETTERS: &'static str =
        "SELECT reason, COUNT(*) FROM botpipe_dead_letters GROUP BY reason";
    const COUNT_ROWS: &'static str = "SELECT 'rows', COUNT(*) FROM {table}";
    /// InnoDB's running estimate (MySQL 8 caches it for `information_schema_stats_expiry`).
    const ESTIMATE_ROWS: &'static str = "SELECT
            CASE WHEN table_rows IS NOT NULL THEN 'estimate'
                 WHEN data_length <= {small_bytes} THEN 'small'
                 ELSE 'unknown' END,
            CAST(COALESCE(table_rows, 0) AS SIGNED)
         FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name = '{table}'";
    const DEAD_LETTER_PAGE: &'static str =
        "SELECT id, source, reason, detail, raw, DATE_FORMAT(rejected_at, '%Y-%m-%d %H:%i:%s')
         FROM botpipe_dead_letters
         WHERE id < ? ORDER BY id DESC LIMIT ?";
    const RECORD_STEP: &'static str =
        "INSERT IGNORE INTO botpipe_schema_migrations (scope, description, version) VALUES (?, ?, ?)";
    const APPLIED_VERSIONS: &'static str =
        "SELECT scope, CAST(MAX(version) AS SIGNED) FROM botpipe_schema_migrations GROUP BY scope";
    const NUMERIC_ASN: &'static str =
        "UPDATE {table} SET asn = CONCAT('AS', asn) WHERE asn REGEXP '^[0-9]+$'";
    const COLUMNS: &'static str = "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR),
                CAST(character_maximum_length AS SIGNED), CAST(is_nullable AS CHAR),
                CAST(column_comment AS CHAR)
         FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?";
    const INDEXES: &'static str = "SELECT CAST(index_name AS CHAR),
                CAST(GROUP_CONCAT(column_name ORDER BY seq_in_index SEPARATOR ',') AS CHAR),
                CAST(1 - MIN(non_unique) AS SIGNED), CAST(NULL AS CHAR),
                CAST(MAX(index_comment) AS CHAR)
         FROM information_schema.statistics
         WHERE table_schema = DATABASE() AND table_name = ? AND index_name <> 'PRIMARY'
         GROUP BY index_name";

    fn with_password(opts: MySqlConnectOptions, password: &str) -> MySqlConnectOptions {
        opts.password(password)
    }

    fn configure(mut opts: MySqlConnectOptions, clock: WallClock) -> (Self, MySqlConnectOptions) {
        // No `SET time_zone`: the session keeps the server's default, as the legacy writer's did.
        opts = opts
            .timezone(None)
            .charset("utf8mb4")
            .statement_cache_capacity(STATEMENT_CACHE);
        let (host, port) = (opts.get_host(), opts.get_port());
        let target = describe(Self::BACKEND, host, port, opts.get_database());
        (Self { target, clock }, opts)
    }

    fn clock(&self) -> WallClock {
        self.clock
    }

    fn placeholders(n: usize) -> String {
        repeat_row("?", n)
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn alter(table: &str, changes: &[Change<'_>]) -> Vec<String> {
        let default_sql = |d: &TimeDefault| match d {
            TimeDefault::Null => "NULL",
            TimeDefault::Now => "CURRENT_TIMESTAMP",
        };
        let null = |c: &ColumnInfo| if c.nullable { "NULL" } else { "NOT NULL" };
        // MODIFY and CHANGE restate a column whole: without its comment it would lose it.
        let parts: Vec<String> = changes
            .iter()
            .map(|c| match c {
                // CHANGE keeps the values; the type is kept too, only the name changes.
                Change::Rename { from, to, default } => {
                    let default = if is_time_type(&from.ty) {
                        default_sql(default)
                    } else {
                        "NULL"
                    };
                    format!(
                        "CHANGE {} {to} {} NULL DEFAULT {default}{}",
                        from.name,
                        from.ty,
                        comment_sql(from.comment.as_deref())
                    )
                }
                Change::AddTime {
                    name,
                    default,
                    like,
                } => {
                    let after = like.map_or(String::new(), |c| format!(" AFTER {}", c.name));
                    format!(
                        "ADD COLUMN {name} TIMESTAMP NULL DEFAULT {}{after}",
                        default_sql(default)
                    )
                }
                Change::WidenIp(ip) => format!(
                    "MODIFY ip VARCHAR({IP_WIDTH}) {}{}",
                    null(ip),
                    comment_sql(ip.comment.as_deref())
                ),
                Change::DropUnique(i) => format!("DROP INDEX `{}`", i.name),
                Change::AddUnique {
                    name,
                    columns,
                    comment,
                } => {
                    format!(
                        "ADD UNIQUE KEY `{name}` ({columns}){}",
                        comment_sql(*comment)
                    )
                }
                Change::AddIndex { name, columns } => format!("ADD INDEX `{name}` ({columns})"),
            })
            .collect();
        if parts.is_empty() {
            Vec::new()
        } else {
            // One ALTER: MySQL rebuilds the table once for all of them.
            vec![format!("ALTER TABLE {table} {}", parts.join(", "))]
        }
    }

    fn status_ddl<'a>(
        _conn: &'a mut C,
        table: &'a str,
        status: &'a ColumnInfo,
    ) -> SqlFuture<'a, Vec<String>> {
        // Decided from the column type alone: nothing to ask the server.
        let ty = status.ty.trim();
        let ddl = if ty.to_ascii_lowercase().starts_with("enum(") && !ty.contains("'cleaned'") {
            // Append, so that any other legacy value stays valid.
            let values = ty.strip_suffix(')').unwrap_or(ty);
            let null = if status.nullable { "NULL" } else { "NOT NULL" };
            vec![format!(
                "ALTER TABLE {table} MODIFY status {values},'cleaned') {null} DEFAULT 'active'{}",
                comment_sql(status.comment.as_deref())
            )]
        } else {
            Vec::new()
        };
        Box::pin(std::future::ready(Ok(ddl)))
    }

    fn lock_migrations<'a>(&'a self, conn: &'a mut C) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let got: Option<i64> =
                sqlx::query_scalar(&format!("SELECT GET_LOCK({MIGRATION_LOCK}, ?)"))
                    .bind(MIGRATION_LOCK_SECONDS)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(sql_err(&self.target, "taking the migration lock"))?;
            if got == Some(1) {
                Ok(())
            } else {
                Err(StoreError::MigrationLockTimeout {
                    lock: format!("botpipe_migrate:{}", self.target),
                })
            }
        })
    }

    fn unlock_migrations<'a>(&'a self, conn: &'a mut C) -> SqlFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(&format!("DO RELEASE_LOCK({MIGRATION_LOCK})"))
                .execute(conn)
                .await
                .map(|_| ())
        })
    }

    fn lock_partition<'a>(&'a self, conn: &'a mut C, p: u32, wait: bool) -> SqlFuture<'a, bool> {
        Box::pin(async move {
            let got: Option<i64> =
                sqlx::query_scalar(&format!("SELECT GET_LOCK({PARTITION_LOCK}, ?)"))
                    .bind(p)
                    .bind(if wait { PARTITION_LOCK_SECONDS } else { 0 })
                    .fetch_one(conn)
                    .await?;
            Ok(got == Some(1))
        })
    }

    fn unlock_partitions<'a>(&'a self, conn: &'a mut C) -> SqlFuture<'a, ()> {
        // The session holds no other named lock outside a migration, which releases its own.
        Box::pin(async move {
            sqlx::query("DO RELEASE_ALL_LOCKS()")
                .execute(conn)
                .await
                .map(|_| ())
        })
    }

    fn write_type<'a>(&'a self, conn: &'a mut C, w: Write<'a, Self>) -> StoreFuture<'a, u64> {
        let Write { sql, plan: p, now } = w;
        Box::pin(async move {
            let n = p.botnet_type.nodes_table();
            let c = p.botnet_type.communications_table();
            let clock = self.clock;
            let nodes = NodeRow::rows(&p.nodes, clock);
            let comms = CommRow::rows(&p.communications, clock);
            write_rows(conn, sql, &nodes, &comms, clock.wall(now))
                .await
                .map_err(|(stage, source)| match stage {
                    // A communication inserted meanwhile by a writer outside botpipe's
                    // partition locks: retrying re-reads the table.
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
                })
        })
    }

    fn insert_letters<'a>(&'a self, conn: &'a mut C, l: Letters<'a>) -> StoreFuture<'a, ()> {
        let Letters {
            letters,
            positions,
            batch_id,
        } = l;
        Box::pin(async move {
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
                // A letter of a replayed batch is there already: keep the stored one.
                let sql = format!(
                    "INSERT INTO botpipe_dead_letters
                        (source, reason, detail, raw, batch_id, batch_position, rejected_at)
                     VALUES {} ON DUPLICATE KEY UPDATE id = id",
                    repeat_row("(?,?,?,?,?,?,?)", chunk.len())
                );
                let mut q = sqlx::query(&sql);
                let at = positions.get(start..end).unwrap_or_default();
                for (d, position) in chunk.iter().zip(at) {
                    q = q
                        .bind(d.source.as_str())
                        .bind(d.reason.as_str())
                        .bind(d.detail.as_str())
                        .bind(d.raw.as_str())
                        .bind(batch_id)
                        .bind(*position)
                        .bind(self.clock.wall(d.rejected_at));
                }
                q.execute(&mut *conn)
                    .await
                    .map_err(sql_err(&self.target, "inserting into botpipe_dead_letters"))?;
                start = end;
            }
            Ok(())
        })
    }

    fn screen(batch: &EnrichedBatch) -> Option<EnrichedBatch> {
        without_unstorable_times(batch)
    }
}

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
         active_time = COALESCE(GREATEST(active_time, {last}), active_time, {last}),
         cleaned_time = {cleaned},
         status = CASE WHEN {cleaned} IS NOT NULL AND ({last} IS NULL OR {cleaned} >= {last})
                       THEN 'cleaned' ELSE 'active' END,
         {place},
         communication_count = COALESCE(communication_count, 0) + VALUES(communication_count),
         updated_at = VALUES(updated_at)",
        first = merged("first_seen", "LEAST"),
        place = place_assignments(|c| format!("VALUES({c})"), str::to_owned),
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

/// The statements that write a batch to one type's tables, by row count.
#[derive(Debug, Clone)]
pub struct MysqlStatements {
    nodes: String,
    comms: String,
    merge: String,
}

impl From<&BotnetType> for MysqlStatements {
    /// The statements for type `t`.
    fn from(t: &BotnetType) -> Self {
        Self {
            nodes: t.nodes_table(),
            comms: t.communications_table(),
            merge: merge_assignments(),
        }
    }
}

impl MysqlStatements {
    /// The ids of `rows` IPs; returns `(id, ip)`.
    fn select_ids(&self, rows: usize) -> String {
        format!(
            "SELECT CAST(id AS SIGNED), ip FROM {} WHERE ip IN ({})",
            self.nodes,
            repeat_row("?", rows)
        )
    }

    /// Inserts `rows` new nodes with their planned communications as count, merging with any
    /// inserted concurrently.
    fn insert_new_nodes(&self, rows: usize) -> String {
        format!(
            "INSERT INTO {} ({NEW_NODE_COLUMNS}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            self.nodes,
            repeat_row(NEW_NODE_ROW, rows),
            self.merge
        )
    }

    /// Which of `rows` communications are stored; returns `(ip, communication_time, event_type)`,
    /// the time as the session's wall-clock (sqlx reads a `DATETIME` as naive, not a
    /// `TIMESTAMP`).
    fn existing_communications(&self, rows: usize) -> String {
        format!(
            "SELECT ip, CAST(communication_time AS DATETIME), event_type FROM {}
             WHERE (ip, communication_time, event_type) IN ({})",
            self.comms,
            repeat_row("(?,?,?)", rows)
        )
    }

    /// Inserts `rows` communications known to be new.
    fn insert_communications(&self, rows: usize) -> String {
        format!(
            "INSERT INTO {} ({COMM_COLUMNS}) VALUES {}",
            self.comms,
            repeat_row(COMM_ROW, rows)
        )
    }

    /// Merges `rows` node deltas by id and adds a difference to their count.
    fn merge_nodes(&self, rows: usize) -> String {
        format!(
            "INSERT INTO {} ({MERGE_NODE_COLUMNS}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            self.nodes,
            repeat_row(MERGE_NODE_ROW, rows),
            self.merge
        )
    }
}

type MyQuery<'q> = Query<'q, MySql, MySqlArguments>;

/// Binds longitude … asn (eight columns); `is_china` is bound by the caller, whose column order
/// differs between nodes and communications.
fn bind_place<'q>(q: MyQuery<'q>, g: Option<&'q Geo>) -> MyQuery<'q> {
    let (longitude, latitude) = stored_coordinates(g);
    q.bind(longitude)
        .bind(latitude)
        .bind(g.and_then(|g| g.country.as_deref()))
        .bind(g.and_then(|g| g.province.as_deref()))
        .bind(g.and_then(|g| g.city.as_deref()))
        .bind(g.and_then(|g| g.continent.as_deref()))
        .bind(g.and_then(|g| g.isp.as_deref()))
        .bind(g.and_then(|g| g.asn.as_deref()))
}

/// One node delta with its IP text and wall-clock times, ready to bind.
#[derive(Debug)]
struct NodeRow<'a> {
    /// The IP as stored.
    pub ip: String,
    /// The delta.
    pub delta: &'a NodeDelta<'a>,
    /// Its earliest online, latest online and latest cleanup as wall-clock.
    pub times: [Option<NaiveDateTime>; 3],
}

impl<'a> NodeRow<'a> {
    /// Rows of `nodes`, sorted by IP text (the unique index order MySQL locks in).
    fn rows(nodes: &'a [NodeDelta<'a>], clock: WallClock) -> Vec<Self> {
        let mut rows: Vec<Self> = nodes
            .iter()
            .map(|delta| Self {
                ip: delta.ip.to_string(),
                delta,
                times: [delta.first_online, delta.last_online, delta.last_cleanup]
                    .map(|t| t.map(|t| clock.wall(t))),
            })
            .collect();
        rows.sort_by(|a, b| a.ip.cmp(&b.ip));
        rows
    }

    fn bind_merge_values<'q>(&'q self, q: MyQuery<'q>) -> MyQuery<'q> {
        let d = self.delta;
        let [first, last, cleanup] = self.times;
        let q = q
            .bind(first)
            .bind(last)
            .bind(cleanup)
            .bind(last)
            .bind(d.status());
        bind_place(q, d.geo).bind(d.geo.is_some_and(|g| g.is_china))
    }
}

/// Binds the new-node insert for `rows`: `(row, planned communications)`.
fn bind_new_nodes<'q>(
    sql: &'q str,
    rows: &'q [(&'q NodeRow<'q>, i64)],
    now: NaiveDateTime,
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
fn bind_merge_nodes<'q>(
    sql: &'q str,
    rows: &'q [(&'q NodeRow<'q>, i64, i64)],
    now: NaiveDateTime,
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
struct CommRow<'a> {
    /// The IP as stored.
    pub ip: String,
    /// The event time as wall-clock, whole seconds.
    pub time: NaiveDateTime,
    /// The communication.
    pub comm: &'a Communication<'a>,
}

impl<'a> CommRow<'a> {
    /// Rows of `comms`.
    fn rows(comms: &'a [Communication<'a>], clock: WallClock) -> Vec<Self> {
        comms
            .iter()
            .map(|comm| Self {
                ip: comm.ip.to_string(),
                time: clock.wall(comm.time),
                comm,
            })
            .collect()
    }

    fn key(&self) -> (&str, NaiveDateTime, &'static str) {
        (&self.ip, self.time, self.comm.log_type.event_type())
    }
}

/// Binds the existence check for `rows`.
fn bind_existing_communications<'q>(sql: &'q str, rows: &'q [CommRow<'q>]) -> MyQuery<'q> {
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
fn bind_communications<'q>(
    sql: &'q str,
    rows: &'q [(&'q CommRow<'q>, i64)],
    now: NaiveDateTime,
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
async fn fetch_ids(
    conn: &mut MySqlConnection,
    q: MyQuery<'_>,
    into: &mut HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    for r in q.fetch_all(conn).await? {
        into.insert(r.try_get::<String, _>(1)?, r.try_get::<i64, _>(0)?);
    }
    Ok(())
}

/// Which statement of [`write_type`] failed.
#[derive(Debug)]
enum Stage {
    /// Reading the ids of existing nodes.
    ExistingNodes,
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
            Self::ExistingNodes => "reading existing nodes from",
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
/// statements of [`MysqlStatements`], inside the caller's transaction, which holds the write
/// partition of their IPs. Returns the number of communications inserted.
async fn write_rows(
    conn: &mut MySqlConnection,
    sql: &MysqlStatements,
    nodes: &[NodeRow<'_>],
    comms: &[CommRow<'_>],
    now: NaiveDateTime,
) -> Result<u64, (Stage, sqlx::Error)> {
    // 1. Find the nodes that exist.
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(nodes.len());
    for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
        let text = sql.select_ids(chunk.len());
        let mut q = sqlx::query(&text);
        for r in chunk {
            q = q.bind(r.ip.as_str());
        }
        fetch_ids(conn, q, &mut ids)
            .await
            .map_err(|e| (Stage::ExistingNodes, e))?;
    }
    // 2. Insert the new ones, counting all their communications as new (a node that did not
    //    exist has none stored, unless another writer inserted it meanwhile: corrected below),
    //    and read their ids.
    // `communication_count` counts online rows, as the legacy writer kept it.
    let mut planned: HashMap<&str, i64> = HashMap::with_capacity(nodes.len());
    for c in comms.iter().filter(|c| c.comm.log_type == LogType::Online) {
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
    let mut stored: HashSet<(String, NaiveDateTime, String)> = HashSet::new();
    for chunk in comms.chunks(ROWS_PER_STATEMENT) {
        let text = sql.existing_communications(chunk.len());
        let rows = bind_existing_communications(&text, chunk)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| (Stage::ExistingCommunications, e))?;
        for r in rows {
            let get = || -> Result<(String, NaiveDateTime, String), sqlx::Error> {
                let t: NaiveDateTime = r.try_get(1)?;
                let e: Option<String> = r.try_get(2)?;
                Ok((r.try_get(0)?, t, e.unwrap_or_default()))
            };
            stored.insert(get().map_err(|e| (Stage::ExistingCommunications, e))?);
        }
    }
    let mut fresh: Vec<(&CommRow<'_>, i64)> = Vec::with_capacity(comms.len());
    let mut added: HashMap<&str, i64> = HashMap::new();
    for r in comms {
        let (ip, time, event) = r.key();
        if stored.contains(&(ip.to_owned(), time, event.to_owned())) {
            continue;
        }
        let Some(&id) = ids.get(&r.ip) else {
            return Err((Stage::MissingId(r.ip.clone()), sqlx::Error::RowNotFound));
        };
        fresh.push((r, id));
        if r.comm.log_type == LogType::Online {
            *added.entry(r.ip.as_str()).or_default() += 1;
        }
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

/// Why a `TIMESTAMP` column cannot hold `t`, or `None` when it can. Also what `botpipe dlq
/// replay` asks before it queues a record ([`super::AnyStore::refusal`]).
pub(crate) fn unstorable_time(t: &DateTime<Utc>) -> Option<String> {
    (!TIMESTAMP_RANGE.contains(&t.timestamp())).then(|| {
        format!(
            "timestamp {t} is outside the range of a MySQL TIMESTAMP (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC)"
        )
    })
}

/// `batch` without the records whose time a `TIMESTAMP` cannot hold, which become dead letters
/// of the returned batch; `None` when every record fits.
fn without_unstorable_times(batch: &EnrichedBatch) -> Option<EnrichedBatch> {
    if batch
        .batch
        .records
        .iter()
        .all(|r| unstorable_time(&r.timestamp).is_none())
    {
        return None;
    }
    let mut kept = recovery::sub_batch(batch, &[]);
    kept.batch.dead_letters = batch.batch.dead_letters.clone();
    let mut refused = 0u64;
    for (i, r) in batch.batch.records.iter().enumerate() {
        match unstorable_time(&r.timestamp) {
            None => {
                kept.batch.records.push(r.clone());
                kept.geo.push(batch.geo.get(i).cloned().unwrap_or_default());
            }
            Some(why) => {
                refused += 1;
                kept.batch
                    .dead_letters
                    .push(recovery::rejected_letter(batch, i, &why));
            }
        }
    }
    metrics::counter!(DEAD_LETTERS_TOTAL, "reason" => RejectReason::StoreRejected.as_str())
        .increment(refused);
    Some(kept)
}

/// ` COMMENT '…'` for a column or index comment to keep, quoted for MySQL; empty for none.
fn comment_sql(comment: Option<&str>) -> String {
    comment.map_or(String::new(), |c| {
        format!(" COMMENT '{}'", c.replace('\\', "\\\\").replace('\'', "''"))
    })
}

fn is_time_type(ty: &str) -> bool {
    let t = ty.to_ascii_lowercase();
    t.starts_with("timestamp") || t.starts_with("datetime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NodeIp;

    fn placeholders(s: &str) -> usize {
        s.matches('?').count()
    }

    #[test]
    fn statements_bind_one_placeholder_per_value() {
        let s = MysqlStatements::from(&BotnetType::parse("mozi").unwrap());
        assert_eq!(placeholders(&s.insert_new_nodes(3)), 3 * 18);
        assert_eq!(placeholders(&s.merge_nodes(2)), 2 * 18);
        assert_eq!(placeholders(&s.insert_communications(4)), 4 * 15);
        assert_eq!(placeholders(&s.existing_communications(5)), 5 * 3);
        assert_eq!(placeholders(&s.select_ids(7)), 7);
        assert!(!s.select_ids(1).contains("FOR UPDATE"));
        assert!(placeholders(&s.merge_nodes(ROWS_PER_STATEMENT)) < 65_535);
    }

    #[test]
    fn merge_uses_values_not_the_mysql8_alias() {
        let s = MysqlStatements::from(&BotnetType::parse("mozi").unwrap());
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
