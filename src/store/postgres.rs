//! [`Postgres`]: the PostgreSQL [`Dialect`] of the generic [`SqlStore`](super::sql::SqlStore).
//!
//! **Write path.** Inside a partition's transaction (see [`super::sql`]), per botnet type, two
//! statements whose text never changes (so they stay prepared), each taking one array per
//! column:
//! 1. `INSERT … SELECT FROM UNNEST(…) ON CONFLICT (ip) DO UPDATE` merges every node delta with
//!    `LEAST`/`GREATEST` (PostgreSQL's ignore NULLs, which is the NULL-safe rule), adds each
//!    node's planned communications to `communication_count`, and returns the node ids;
//! 2. a `WITH ins AS (INSERT … ON CONFLICT DO NOTHING RETURNING node_id)` inserts the
//!    communications and, in the same statement, takes back from the count those that were
//!    already stored. A node row is therefore written once per batch unless the batch replays
//!    some of its communications; the count is only ever visible corrected, at commit.
//!
//! UNNEST beat COPY and multi-row VALUES on this machine (`docs/performance.md`), needs no
//! TCP_NODELAY, and uses one bind parameter per column whatever the batch size, so there is no
//! bind limit to chunk around.
//!
//! **Types.** Timestamps are `timestamptz` (the instant), and every session runs with
//! `TimeZone` set to `[store] timezone`, so the times print as that zone's wall-clock, the rule
//! of [`super::clock`] (a legacy `timestamp without time zone` column is read and written as
//! that wall-clock too). Ids are
//! `BIGINT` identities: `ON CONFLICT` consumes a sequence value per attempted row, which would
//! exhaust an `INT` in weeks at full speed. Legacy column names and meanings are kept; `status`
//! is a `VARCHAR` with a `CHECK`. The DDL is in `src/store/ddl/postgres/`.
//!
//! **Locks.** Migrations run in one transaction under `pg_advisory_xact_lock(key)`, so two
//! processes starting at once serialise, and a failed upgrade leaves nothing half-done
//! (PostgreSQL DDL is transactional). Write partitions take the two-key form
//! `pg_advisory_xact_lock(class, partition)`, a separate key space; both are released at the end
//! of their transaction. Sessions set `lock_timeout`, so no lock is waited for forever.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Executor, Row};

use super::clock::WallClock;
use super::merge::{place_assignments, stored_coordinates, Communication, NodeDelta};
use super::sql::{
    describe, sql_err, whole_seconds, Change, ColumnInfo, Dialect, Letters, SqlFuture, StoreFuture,
    TimeDefault, Write,
};
use super::StoreError;
use crate::record::{BotnetType, LogType, NodeIp};

/// Key of the advisory lock that serialises migrations (per database): "botpipe" + 1.
const MIGRATION_LOCK_KEY: i64 = 0x626f_7470_6970_6501;
/// How long `migrate` waits for another process's migration before giving up (retryable).
const MIGRATION_LOCK_TIMEOUT: &str = "120s";
/// First key of the write-partition locks ("bpw"); the second is the partition.
const PARTITION_LOCK_CLASS: i32 = 0x0062_7077;
/// How long a session waits for any lock (a busy write partition, a row held by a writer
/// outside botpipe) before the attempt fails as retryable.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection every method of the dialect works on.
type C = PgConnection;

/// The PostgreSQL dialect.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres host:port/database`, for messages.
    target: String,
    /// The sessions' zone.
    clock: WallClock,
}

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Statements = PgStatements;

    const BACKEND: &'static str = "postgres";
    const SESSION_SETUP: &'static [&'static str] = &[];
    const BOTPIPE_SCHEMA: &'static [&'static str] = &[include_str!("ddl/postgres/botpipe.sql")];
    const NODES_DDL: &'static str = include_str!("ddl/postgres/nodes.sql");
    const COMMUNICATIONS_DDL: &'static str = include_str!("ddl/postgres/communications.sql");
    const INDEX_NAMES_ARE_GLOBAL: bool = true;
    const LIST_TABLES: &'static str = "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema()";
    const COUNT_BY_STATUS: &'static str =
        "SELECT COALESCE(status::text, 'null'), count(*) FROM {table} GROUP BY 1";
    const COUNT_DEAD_LETTERS: &'static str =
        "SELECT reason::text, count(*) FROM botpipe_dead_letters GROUP BY reason";
    const COUNT_ROWS: &'static str = "SELECT 'rows'::text, count(*) FROM {table}";
    /// `reltuples` as of the last VACUUM or ANALYZE (negative, or zero pages, before the first),
    /// scaled by the table's pages now, as the planner scales it.
    const ESTIMATE_ROWS: &'static str = "SELECT
            CASE WHEN c.reltuples >= 0 AND c.relpages > 0 THEN 'estimate'
                 WHEN pg_relation_size(c.oid) <= {small_bytes} THEN 'small'
                 ELSE 'unknown' END,
            CASE WHEN c.reltuples >= 0 AND c.relpages > 0
                 THEN (c.reltuples::float8 / c.relpages * pg_relation_size(c.oid)
                       / current_setting('block_size')::float8)::bigint
                 ELSE 0 END
         FROM pg_class c WHERE c.oid = to_regclass('{table}')";
    const DEAD_LETTER_PAGE: &'static str = "SELECT id, source, reason::text, detail, raw,
                to_char(rejected_at, 'YYYY-MM-DD HH24:MI:SS') FROM botpipe_dead_letters
         WHERE id < $1 ORDER BY id DESC LIMIT $2";
    const RECORD_STEP: &'static str =
        "INSERT INTO botpipe_schema_migrations (scope, description, version) VALUES ($1, $2, $3)
         ON CONFLICT (scope, version) DO NOTHING";
    const APPLIED_VERSIONS: &'static str =
        "SELECT scope::text, max(version)::int8 FROM botpipe_schema_migrations GROUP BY scope";
    const NUMERIC_ASN: &'static str = "UPDATE {table} SET asn = 'AS' || asn WHERE asn ~ '^[0-9]+$'";
    /// PostgreSQL keeps comments through `ALTER`: none to restate.
    const COLUMNS: &'static str =
        "SELECT column_name::text, data_type::text, character_maximum_length::int8,
                is_nullable::text, NULL::text
         FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1";
    const INDEXES: &'static str = "SELECT i.relname::text,
                string_agg(a.attname::text, ',' ORDER BY k.ord),
                (CASE WHEN x.indisunique THEN 1 ELSE 0 END)::int8,
                (SELECT con.conname::text FROM pg_constraint con
                  WHERE con.conindid = x.indexrelid AND con.contype = 'u' LIMIT 1),
                obj_description(x.indexrelid, 'pg_class')
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
         WHERE x.indrelid = to_regclass($1) AND NOT x.indisprimary
         GROUP BY i.relname, x.indexrelid, x.indisunique";

    fn with_password(opts: PgConnectOptions, password: &str) -> PgConnectOptions {
        opts.password(password)
    }

    fn configure(mut opts: PgConnectOptions, clock: WallClock) -> (Self, PgConnectOptions) {
        let lock_timeout = format!("{}ms", LOCK_TIMEOUT.as_millis());
        // `client_min_messages`: the server keeps its NOTICEs (`relation … already exists,
        // skipping` for every `IF NOT EXISTS` that finds its object) to itself; sqlx would
        // log each one. Warnings still come through.
        opts = opts.options([
            ("lock_timeout", lock_timeout.as_str()),
            ("client_min_messages", "warning"),
        ]);
        let (host, port) = (opts.get_host(), opts.get_port());
        let target = describe(Self::BACKEND, host, port, opts.get_database());
        (Self { target, clock }, opts)
    }

    fn clock(&self) -> WallClock {
        self.clock
    }

    /// Sessions in `[store] timezone`: timestamptz values print as its wall-clock. Set after
    /// connecting: sqlx sends `TimeZone=UTC` in the startup message, which wins over options.
    fn session_statements(&self) -> Vec<String> {
        vec![format!("SET TIME ZONE '{}'", self.clock.tz().name())]
    }

    fn target(&self) -> &str {
        &self.target
    }

    fn placeholders(n: usize) -> String {
        (1..=n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn alter(table: &str, changes: &[Change<'_>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Rename { from, to, .. } => {
                    format!("ALTER TABLE {table} RENAME COLUMN {} TO {to}", from.name)
                }
                Change::AddTime {
                    name,
                    default,
                    like,
                } => {
                    let ty = like.map_or("TIMESTAMPTZ", |c| c.ty.as_str());
                    let default = match default {
                        TimeDefault::Now => " DEFAULT now()",
                        TimeDefault::Null => "",
                    };
                    format!("ALTER TABLE {table} ADD COLUMN {name} {ty}{default}")
                }
                Change::WidenIp(_) => format!(
                    "ALTER TABLE {table} ALTER COLUMN ip TYPE VARCHAR({})",
                    super::schema::IP_WIDTH
                ),
                Change::DropUnique(i) => match &i.constraint {
                    Some(con) => format!("ALTER TABLE {table} DROP CONSTRAINT \"{con}\""),
                    None => format!("DROP INDEX \"{}\"", i.name),
                },
                // No legacy PostgreSQL deployments: no index comments to carry over.
                Change::AddUnique { name, columns, .. } => {
                    format!("ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE ({columns})")
                }
                Change::AddIndex { name, columns } => {
                    format!("CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
                }
            })
            .collect()
    }

    fn status_ddl<'a>(
        conn: &'a mut C,
        table: &'a str,
        status: &'a ColumnInfo,
    ) -> SqlFuture<'a, Vec<String>> {
        Box::pin(async move {
            let n = table;
            let mut ddl = Vec::new();
            if status.ty == "USER-DEFINED" {
                // A legacy enum type cannot gain a value usable in the same transaction; a
                // VARCHAR with a CHECK is the current shape anyway.
                ddl.push(format!(
                    "ALTER TABLE {n} ALTER COLUMN status DROP DEFAULT,
                        ALTER COLUMN status TYPE VARCHAR(16) USING status::text,
                        ALTER COLUMN status SET DEFAULT 'active'"
                ));
            }
            let checks: Vec<(String, String)> = sqlx::query(
                "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
                 WHERE conrelid = to_regclass($1) AND contype = 'c'",
            )
            .bind(n)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
            let status_checks: Vec<&(String, String)> = checks
                .iter()
                .filter(|(_, def)| def.contains("status"))
                .collect();
            if !status_checks
                .iter()
                .any(|(_, def)| def.contains("'cleaned'"))
            {
                for (name, _) in &status_checks {
                    ddl.push(format!("ALTER TABLE {n} DROP CONSTRAINT \"{name}\""));
                }
                ddl.push(format!(
                    "ALTER TABLE {n} ADD CONSTRAINT {n}_status_check
                        CHECK (status IN ('active','inactive','cleaned'))"
                ));
            }
            Ok(ddl)
        })
    }

    fn lock_migrations<'a>(&'a self, conn: &'a mut C) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let set_timeout = format!("SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'");
            conn.execute(set_timeout.as_str())
                .await
                .map_err(sql_err(&self.target, "setting the migration lock timeout"))?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut *conn)
                .await
                .map_err(sql_err(&self.target, "taking the migration lock"))?;
            Ok(())
        })
    }

    fn unlock_migrations<'a>(&'a self, _conn: &'a mut C) -> SqlFuture<'a, ()> {
        // A transaction-level lock: released with the transaction.
        Box::pin(async { Ok(()) })
    }

    fn lock_partition<'a>(&'a self, conn: &'a mut C, p: u32, wait: bool) -> SqlFuture<'a, bool> {
        Box::pin(async move {
            let key = i32::try_from(p).unwrap_or(i32::MAX);
            if wait {
                sqlx::query("SELECT pg_advisory_xact_lock($1, $2)::text")
                    .bind(PARTITION_LOCK_CLASS)
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
                Ok(true)
            } else {
                sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
                    .bind(PARTITION_LOCK_CLASS)
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await
            }
        })
    }

    fn unlock_partitions<'a>(&'a self, _conn: &'a mut C) -> SqlFuture<'a, ()> {
        // A transaction-level lock: released with the transaction.
        Box::pin(async { Ok(()) })
    }

    fn write_type<'a>(&'a self, conn: &'a mut C, w: Write<'a, Self>) -> StoreFuture<'a, u64> {
        let Write { sql, plan: p, now } = w;
        Box::pin(async move {
            let n = p.botnet_type.nodes_table();
            let c = p.botnet_type.communications_table();
            let nodes = NodeArrays::new(&p.nodes, &p.communications);
            let ids = upsert_nodes(conn, &sql.upsert_nodes, &nodes, now)
                .await
                .map_err(sql_err(&self.target, format_args!("upserting into {n}")))?;
            let comms = CommArrays::new(&p.communications);
            if comms.is_empty() {
                return Ok(0);
            }
            let node_ids = comms.node_ids(&ids).map_err(|ip| StoreError::Schema {
                table: n.clone(),
                problem: format!("the upsert returned no id for {ip}"),
            })?;
            insert_communications(conn, &sql.insert_communications, &comms, &node_ids, now)
                .await
                .map_err(sql_err(&self.target, format_args!("inserting into {c}")))
        })
    }

    fn insert_letters<'a>(&'a self, conn: &'a mut C, l: Letters<'a>) -> StoreFuture<'a, ()> {
        let Letters {
            letters,
            positions,
            batch_id,
        } = l;
        Box::pin(async move {
            if letters.is_empty() {
                return Ok(());
            }
            // PostgreSQL text cannot hold NUL; a garbage record may contain one, and a dead
            // letter that cannot be stored would block its whole batch forever.
            let clean = |s: &str| s.replace('\0', "\u{FFFD}");
            let sources: Vec<String> = letters.iter().map(|d| clean(&d.source)).collect();
            let reasons: Vec<&str> = letters.iter().map(|d| d.reason.as_str()).collect();
            let details: Vec<String> = letters.iter().map(|d| clean(&d.detail)).collect();
            let raws: Vec<String> = letters.iter().map(|d| clean(&d.raw)).collect();
            let times: Vec<DateTime<Utc>> = letters
                .iter()
                .map(|d| whole_seconds(d.rejected_at))
                .collect();
            let positions: Vec<i32> = positions
                .iter()
                .map(|p| i32::try_from(*p).unwrap_or(i32::MAX))
                .collect();
            // A letter of a replayed batch is there already: keep the stored one.
            sqlx::query(
                "INSERT INTO botpipe_dead_letters
                    (source, reason, detail, raw, batch_id, batch_position, rejected_at)
                 SELECT u.source, u.reason, u.detail, u.raw, $5, u.position, u.rejected_at
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $6::timestamptz[],
                    $7::int4[]) AS u(source, reason, detail, raw, rejected_at, position)
                 ON CONFLICT (batch_id, batch_position) DO NOTHING",
            )
            .bind(&sources)
            .bind(&reasons)
            .bind(&details)
            .bind(&raws)
            .bind(clean(batch_id))
            .bind(&times)
            .bind(&positions)
            .execute(conn)
            .await
            .map_err(sql_err(&self.target, "inserting into botpipe_dead_letters"))?;
            Ok(())
        })
    }
}

/// The two statements that write a batch to one botnet type's tables.
#[derive(Debug, Clone)]
pub struct PgStatements {
    /// Node upsert over UNNEST arrays, adding each node's planned communications to its
    /// count; binds [`NodeArrays`] then `now`; returns `(id, ip)`.
    pub upsert_nodes: String,
    /// Communication insert plus the correction of counts for communications already stored;
    /// binds node ids, [`CommArrays`], then `now`; returns the number of rows inserted.
    pub insert_communications: String,
}

impl From<&BotnetType> for PgStatements {
    /// The statements for type `t`.
    fn from(t: &BotnetType) -> Self {
        let n = t.nodes_table();
        let c = t.communications_table();
        let upsert_nodes = format!(
            "INSERT INTO {n} AS n (ip, first_seen, last_seen, cleaned_time, active_time, status,
                longitude, latitude, country, province, city, continent, isp, asn, is_china,
                communication_count, created_time, updated_at)
             SELECT u.ip, u.first_seen, u.last_seen, u.cleaned_time, u.last_seen, u.status,
                u.longitude, u.latitude, u.country, u.province, u.city, u.continent, u.isp, u.asn,
                u.is_china, u.planned, $16, $16
             FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[],
                $5::text[], $6::float8[], $7::float8[], $8::text[], $9::text[], $10::text[],
                $11::text[], $12::text[], $13::text[], $14::bool[], $15::int4[])
                AS u(ip, first_seen, last_seen, cleaned_time, status, longitude, latitude,
                     country, province, city, continent, isp, asn, is_china, planned)
             ON CONFLICT (ip) DO UPDATE SET
                first_seen = LEAST(n.first_seen, EXCLUDED.first_seen),
                last_seen = GREATEST(n.last_seen, EXCLUDED.last_seen),
                active_time = GREATEST(n.active_time, n.last_seen, EXCLUDED.last_seen),
                cleaned_time = GREATEST(n.cleaned_time, EXCLUDED.cleaned_time),
                status = CASE
                    WHEN GREATEST(n.cleaned_time, EXCLUDED.cleaned_time) IS NOT NULL
                     AND (GREATEST(n.last_seen, EXCLUDED.last_seen) IS NULL
                          OR GREATEST(n.cleaned_time, EXCLUDED.cleaned_time)
                             >= GREATEST(n.last_seen, EXCLUDED.last_seen))
                    THEN 'cleaned' ELSE 'active' END,
                {place},
                communication_count = COALESCE(n.communication_count, 0)
                                      + EXCLUDED.communication_count,
                updated_at = EXCLUDED.updated_at
             RETURNING n.id::bigint, n.ip::text",
            place = place_assignments(|c| format!("EXCLUDED.{c}"), |c| format!("n.{c}")),
        );
        // The upsert added every planned online communication to the count (the count is of
        // online rows, as the legacy writer kept it); give back those that were already stored
        // (replays, concurrent duplicates). Usually no row matches, so a node is written once
        // per batch. The planned rows not inserted are found with `EXCEPT ALL` (a hash set
        // operation), not by joining planned and inserted counts: the prepared statement runs
        // on a generic plan whose UNNEST estimates are tiny, and the join became a nested loop
        // over both sides, quadratic in the batch (docs/performance.md, "Store writes").
        let insert_communications = format!(
            "WITH ins AS (
                INSERT INTO {c} (node_id, ip, communication_time, received_at, longitude, latitude,
                    country, province, city, continent, isp, asn, event_type, status, is_china)
                SELECT u.node_id, u.ip, u.t, $15, u.longitude, u.latitude, u.country, u.province,
                    u.city, u.continent, u.isp, u.asn, u.event_type, u.status, u.is_china
                FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[], $4::float8[],
                    $5::float8[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                    $11::text[], $12::text[], $13::text[], $14::bool[])
                    AS u(node_id, ip, t, longitude, latitude, country, province, city, continent,
                         isp, asn, event_type, status, is_china)
                ON CONFLICT (ip, communication_time, event_type) DO NOTHING
                RETURNING node_id, event_type
             ), missing AS (
                SELECT node_id, count(*) AS rows FROM (
                    SELECT p.node_id
                    FROM UNNEST($1::bigint[], $12::text[]) AS p(node_id, event_type)
                    WHERE p.event_type = '{online}'
                    EXCEPT ALL
                    SELECT ins.node_id FROM ins WHERE ins.event_type = '{online}'
                ) AS m
                GROUP BY node_id
             ), fix AS (
                UPDATE {n} AS n
                SET communication_count = n.communication_count - missing.rows
                FROM missing
                WHERE n.id = missing.node_id
                RETURNING n.id
             )
             SELECT (SELECT count(*) FROM ins)::bigint",
            online = LogType::Online.event_type(),
        );
        Self {
            upsert_nodes,
            insert_communications,
        }
    }
}

/// The per-column arrays of a node upsert.
#[derive(Debug, Default)]
struct NodeArrays<'a> {
    ips: Vec<String>,
    first_seen: Vec<Option<DateTime<Utc>>>,
    last_seen: Vec<Option<DateTime<Utc>>>,
    cleaned_time: Vec<Option<DateTime<Utc>>>,
    status: Vec<&'static str>,
    geo: GeoArrays<'a>,
    /// Online communications planned for each node: added to its count up front.
    planned: Vec<i32>,
}

impl<'a> NodeArrays<'a> {
    /// The columns of `nodes` (in their IP order), with the number of `comms` of each.
    fn new(nodes: &[NodeDelta<'a>], comms: &[Communication<'_>]) -> Self {
        let mut per_ip: HashMap<NodeIp, i32> = HashMap::with_capacity(nodes.len());
        for c in comms.iter().filter(|c| c.log_type == LogType::Online) {
            *per_ip.entry(c.ip).or_default() += 1;
        }
        let mut a = Self::default();
        for n in nodes {
            a.planned.push(per_ip.get(&n.ip).copied().unwrap_or(0));
            a.ips.push(n.ip.to_string());
            a.first_seen.push(n.first_online.map(whole_seconds));
            a.last_seen.push(n.last_online.map(whole_seconds));
            a.cleaned_time.push(n.last_cleanup.map(whole_seconds));
            a.status.push(n.status());
            a.geo.push(n.geo);
        }
        a
    }
}

/// The per-column arrays of a communication insert, without the node ids (known only after the
/// node upsert).
#[derive(Debug, Default)]
struct CommArrays<'a> {
    ips: Vec<String>,
    times: Vec<DateTime<Utc>>,
    event_types: Vec<&'static str>,
    status: Vec<&'static str>,
    geo: GeoArrays<'a>,
}

impl<'a> CommArrays<'a> {
    /// The columns of `comms`.
    fn new(comms: &[Communication<'a>]) -> Self {
        let mut a = Self::default();
        for c in comms {
            a.ips.push(c.ip.to_string());
            a.times.push(whole_seconds(c.time));
            a.event_types.push(c.log_type.event_type());
            a.status.push(c.log_type.communication_status());
            a.geo.push(Some(c.geo));
        }
        a
    }

    /// The node id of every row, from the `(id, ip)` pairs the node upsert returned.
    ///
    /// # Errors
    /// When a row's IP has no id (the upsert did not return it).
    fn node_ids(&self, ids: &HashMap<String, i64>) -> Result<Vec<i64>, String> {
        self.ips
            .iter()
            .map(|ip| ids.get(ip).copied().ok_or_else(|| ip.clone()))
            .collect()
    }

    /// True when there are no rows.
    fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }
}

#[derive(Debug, Default)]
struct GeoArrays<'a> {
    longitude: Vec<Option<f64>>,
    latitude: Vec<Option<f64>>,
    country: Vec<Option<&'a str>>,
    province: Vec<Option<&'a str>>,
    city: Vec<Option<&'a str>>,
    continent: Vec<Option<&'a str>>,
    isp: Vec<Option<&'a str>>,
    asn: Vec<Option<&'a str>>,
    is_china: Vec<bool>,
}

impl<'a> GeoArrays<'a> {
    fn push(&mut self, g: Option<&'a crate::enrich::Geo>) {
        let (longitude, latitude) = stored_coordinates(g);
        self.longitude.push(Some(longitude));
        self.latitude.push(Some(latitude));
        self.country.push(g.and_then(|g| g.country.as_deref()));
        self.province.push(g.and_then(|g| g.province.as_deref()));
        self.city.push(g.and_then(|g| g.city.as_deref()));
        self.continent.push(g.and_then(|g| g.continent.as_deref()));
        self.isp.push(g.and_then(|g| g.isp.as_deref()));
        self.asn.push(g.and_then(|g| g.asn.as_deref()));
        self.is_china.push(g.is_some_and(|g| g.is_china));
    }
}

/// Runs the node upsert; returns the id of every IP.
///
/// # Errors
/// Whatever the database reports.
async fn upsert_nodes(
    conn: &mut PgConnection,
    sql: &str,
    a: &NodeArrays<'_>,
    now: DateTime<Utc>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows = sqlx::query(sql)
        .bind(&a.ips)
        .bind(&a.first_seen)
        .bind(&a.last_seen)
        .bind(&a.cleaned_time)
        .bind(&a.status)
        .bind(&a.geo.longitude)
        .bind(&a.geo.latitude)
        .bind(&a.geo.country)
        .bind(&a.geo.province)
        .bind(&a.geo.city)
        .bind(&a.geo.continent)
        .bind(&a.geo.isp)
        .bind(&a.geo.asn)
        .bind(&a.geo.is_china)
        .bind(&a.planned)
        .bind(now)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(1)?, r.try_get::<i64, _>(0)?)))
        .collect()
}

/// Runs the communication insert and the count correction; returns the number of rows
/// inserted.
///
/// # Errors
/// Whatever the database reports.
async fn insert_communications(
    conn: &mut PgConnection,
    sql: &str,
    a: &CommArrays<'_>,
    node_ids: &[i64],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let rows = sqlx::query(sql)
        .bind(node_ids)
        .bind(&a.ips)
        .bind(&a.times)
        .bind(&a.geo.longitude)
        .bind(&a.geo.latitude)
        .bind(&a.geo.country)
        .bind(&a.geo.province)
        .bind(&a.geo.city)
        .bind(&a.geo.continent)
        .bind(&a.geo.isp)
        .bind(&a.geo.asn)
        .bind(&a.event_types)
        .bind(&a.status)
        .bind(&a.geo.is_china)
        .bind(now)
        .fetch_one(conn)
        .await?;
    Ok(u64::try_from(rows.try_get::<i64, _>(0)?).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_type_tables_only() {
        let t = BotnetType::parse("mozi").unwrap();
        let s = PgStatements::from(&t);
        assert!(s
            .upsert_nodes
            .contains("INSERT INTO botnet_nodes_mozi AS n"));
        assert!(s
            .insert_communications
            .contains("INSERT INTO botnet_communications_mozi"));
        assert!(s
            .insert_communications
            .contains("UPDATE botnet_nodes_mozi AS n"));
        // A fixed number of parameters; UNNEST keeps it constant whatever the batch size.
        assert!(s.upsert_nodes.contains("$16") && !s.upsert_nodes.contains("$17"));
        assert!(
            s.insert_communications.contains("$15") && !s.insert_communications.contains("$16")
        );
    }

    #[test]
    fn timestamps_lose_fractions() {
        let t = DateTime::from_timestamp(1_700_000_000, 999_999_999).unwrap();
        assert_eq!(whole_seconds(t).timestamp_subsec_nanos(), 0);
        assert_eq!(whole_seconds(t).timestamp(), 1_700_000_000);
    }

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(Postgres::placeholders(3), "$1,$2,$3");
    }
}
