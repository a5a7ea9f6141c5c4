//! The SQLite write path measured three ways, to choose between `rusqlite` and `sqlx-sqlite`
//! for `SqliteStore` (the raw limits in `docs/performance.md` advise measuring both):
//! 1. **rusqlite, prepared statements**: one transaction per batch, a cached prepared statement
//!    per row: the node upsert (`RETURNING id`), the communication insert, the count bump, as
//!    `SqliteStore` does;
//! 2. **sqlx-sqlite, one statement per row**: the same statements through sqlx, one `execute` or
//!    `fetch_one` per row, one transaction per batch;
//! 3. **sqlx-sqlite, multi-row VALUES**: the same work in three statements per batch (node
//!    upsert of every row `RETURNING id, ip`, communication insert `RETURNING node_id`, one bump
//!    `UPDATE … FROM (VALUES …)`), one transaction per batch;
//!
//! and, for reference, 4. `SqliteStore::apply` itself (rusqlite on the blocking pool, with
//! planning, `synchronous=FULL` as the store commits since issue 13), and 5. mode 1 with
//! `synchronous=FULL`, which prices the store's durable commit against mode 1. Modes 1–3 write
//! to a fresh WAL file with `synchronous=NORMAL`, foreign keys on. Workload as `store_write`:
//! `BOTPIPE_BENCH_RECORDS` (default 300,000) records, batches of 1,000, 30% repeated IPs;
//! `BOTPIPE_BENCH_RUNS` (default 3, median); `BOTPIPE_BENCH_MODES` picks modes by number
//! (`1,4,5`; default all).
//!
//! `cargo bench --bench sqlite_write`.

#[path = "support/workload.rs"]
mod workload;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use botpipe::enrich::Geo;
use botpipe::record::{BotnetType, LogType};
use botpipe::store::clock::WallClock;
use botpipe::store::merge::{plan, TypePlan};
use botpipe::store::{EnrichedBatch, SqliteStore, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row};

/// The stored text of a time, as the store writes it (the default wall-clock).
fn sql_time(t: chrono::DateTime<chrono::Utc>) -> String {
    WallClock::default().text(t)
}

use workload::{batches, env_usize, median, thousands, Run};

const BATCH: usize = 1000;
const REPEAT_SHARE: f64 = 0.30;
const TYPE: &str = "mozi";

/// The statements of `SqliteStore` (src/store/sqlite.rs), for a type's tables.
struct Sql {
    upsert: String,
    insert: String,
    bump: String,
    n: String,
    c: String,
    merge_set: String,
}

impl Sql {
    fn new() -> Self {
        let t = BotnetType::parse(TYPE).expect("type");
        let (n, c) = (t.nodes_table(), t.communications_table());
        let merged = |col: &str, f: &str| {
            format!("COALESCE({f}({col}, excluded.{col}), {col}, excluded.{col})")
        };
        let last = merged("last_seen", "MAX");
        let cleaned = merged("cleaned_time", "MAX");
        let merge_set = format!(
            "first_seen = {first}, last_seen = {last}, active_time = {active},
             cleaned_time = {cleaned},
             status = CASE WHEN {cleaned} IS NOT NULL AND ({last} IS NULL OR {cleaned} >= {last})
                           THEN 'cleaned' ELSE 'active' END,
             longitude = COALESCE(excluded.longitude, longitude),
             latitude = COALESCE(excluded.latitude, latitude),
             country = COALESCE(excluded.country, country),
             province = COALESCE(excluded.province, province),
             city = COALESCE(excluded.city, city),
             continent = COALESCE(excluded.continent, continent),
             isp = COALESCE(excluded.isp, isp),
             asn = COALESCE(excluded.asn, asn),
             is_china = CASE WHEN excluded.country IS NOT NULL THEN excluded.is_china ELSE is_china END,
             updated_at = excluded.updated_at",
            first = merged("first_seen", "MIN"),
            active = merged("active_time", "MAX"),
        );
        Self {
            upsert: format!(
                "INSERT INTO {n} (ip, first_seen, last_seen, cleaned_time, active_time, status,
                    longitude, latitude, country, province, city, continent, isp, asn, is_china,
                    communication_count, created_time, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 0, ?15, ?15)
                 ON CONFLICT(ip) DO UPDATE SET {merge_set} RETURNING id"
            ),
            insert: format!(
                "INSERT INTO {c} (node_id, ip, communication_time, received_at, longitude, latitude,
                    country, province, city, continent, isp, asn, event_type, status, is_china)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT(ip, communication_time, event_type) DO NOTHING"
            ),
            bump: format!(
                "UPDATE {n} SET communication_count = communication_count + ?2 WHERE id = ?1"
            ),
            n,
            c,
            merge_set,
        }
    }

    fn rows(row: &str, k: usize) -> String {
        vec![row; k].join(",")
    }

    fn multi_upsert(&self, k: usize) -> String {
        format!(
            "INSERT INTO {} (ip, first_seen, last_seen, cleaned_time, active_time, status,
                longitude, latitude, country, province, city, continent, isp, asn, is_china,
                communication_count, created_time, updated_at)
             VALUES {} ON CONFLICT(ip) DO UPDATE SET {} RETURNING id, ip",
            self.n,
            Self::rows("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?)", k),
            self.merge_set
        )
    }

    fn multi_insert(&self, k: usize) -> String {
        format!(
            "INSERT INTO {} (node_id, ip, communication_time, received_at, longitude, latitude,
                country, province, city, continent, isp, asn, event_type, status, is_china)
             VALUES {} ON CONFLICT(ip, communication_time, event_type) DO NOTHING RETURNING node_id, event_type",
            self.c,
            Self::rows("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", k)
        )
    }

    fn multi_bump(&self, k: usize) -> String {
        format!(
            "UPDATE {n} SET communication_count = communication_count + d.c
             FROM (SELECT column1 AS id, column2 AS c FROM (VALUES {})) AS d
             WHERE {n}.id = d.id",
            Self::rows("(?,?)", k),
            n = self.n
        )
    }
}

/// A fresh database file with the schema: botpipe's tables from `SqliteStore::migrate`, and the
/// type's tables, which the store creates with a type's first record, from one applied record
/// that is then deleted again (so every mode starts from the same empty tables).
async fn fresh(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.sqlite"));
    let store = SqliteStore::open(&path).expect("open");
    store
        .migrate(&[BotnetType::parse(TYPE).expect("type")].into())
        .await
        .expect("migrate");
    let first = batches(TYPE, 1, 1, 0.0);
    store
        .apply(&first[0])
        .await
        .expect("create the type's tables");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(&format!(
        "DELETE FROM botnet_communications_{TYPE}; DELETE FROM botnet_nodes_{TYPE};
         DELETE FROM sqlite_sequence;"
    ))
    .expect("empty the type's tables");
    path
}

fn unknown() -> &'static Geo {
    static G: std::sync::OnceLock<Geo> = std::sync::OnceLock::new();
    G.get_or_init(Geo::unknown)
}

fn rusqlite_prepared(
    path: &Path,
    plans: &[Vec<TypePlan<'_>>],
    records: usize,
    synchronous: &str,
) -> Run {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "synchronous", synchronous)
        .expect("pragma");
    conn.pragma_update(None, "foreign_keys", "ON")
        .expect("pragma");
    let sql = Sql::new();
    let now = sql_time(chrono::Utc::now());
    let mut lat = Vec::with_capacity(plans.len());
    let start = Instant::now();
    for batch in plans {
        let t0 = Instant::now();
        let tx = conn.transaction().expect("begin");
        for p in batch {
            let mut ids = HashMap::with_capacity(p.nodes.len());
            {
                let mut up = tx.prepare_cached(&sql.upsert).expect("prepare");
                for n in &p.nodes {
                    let g = n.geo.unwrap_or(unknown());
                    let [country, province, city, continent, isp, asn] = g.names();
                    let id: i64 = up
                        .query_row(
                            rusqlite::params![
                                n.ip.to_string(),
                                n.first_online.map(sql_time),
                                n.last_online.map(sql_time),
                                n.last_cleanup.map(sql_time),
                                n.status(),
                                g.longitude,
                                g.latitude,
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
                        .expect("upsert");
                    ids.insert(n.ip, id);
                }
            }
            let mut added: HashMap<i64, i64> = HashMap::new();
            {
                let mut ins = tx.prepare_cached(&sql.insert).expect("prepare");
                for c in &p.communications {
                    let id = ids[&c.ip];
                    let g = c.geo;
                    let [country, province, city, continent, isp, asn] = g.names();
                    let k = ins
                        .execute(rusqlite::params![
                            id,
                            c.ip.to_string(),
                            sql_time(c.time),
                            now,
                            g.longitude,
                            g.latitude,
                            country,
                            province,
                            city,
                            continent,
                            isp,
                            asn,
                            c.log_type.event_type(),
                            c.log_type.communication_status(),
                            g.is_china
                        ])
                        .expect("insert");
                    // `communication_count` counts online events only, as the store does.
                    if k > 0 && c.log_type == LogType::Online {
                        *added.entry(id).or_default() += 1;
                    }
                }
            }
            let mut bump = tx.prepare_cached(&sql.bump).expect("prepare");
            for (id, k) in added {
                bump.execute(rusqlite::params![id, k]).expect("bump");
            }
        }
        tx.commit().expect("commit");
        lat.push(t0.elapsed());
    }
    Run::new(records, start.elapsed(), lat)
}

async fn sqlx_connect(path: &Path) -> sqlx::SqliteConnection {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .expect("url")
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    sqlx::SqliteConnection::connect_with(&opts)
        .await
        .expect("connect")
}

async fn sqlx_per_row(path: &Path, plans: &[Vec<TypePlan<'_>>], records: usize) -> Run {
    let mut conn = sqlx_connect(path).await;
    let sql = Sql::new();
    let now = sql_time(chrono::Utc::now());
    let mut lat = Vec::with_capacity(plans.len());
    let start = Instant::now();
    for batch in plans {
        let t0 = Instant::now();
        let mut tx = conn.begin().await.expect("begin");
        for p in batch {
            let mut ids = HashMap::with_capacity(p.nodes.len());
            for n in &p.nodes {
                let g = n.geo.unwrap_or(unknown());
                let id: i64 = sqlx::query_scalar(&sql.upsert)
                    .bind(n.ip.to_string())
                    .bind(n.first_online.map(sql_time))
                    .bind(n.last_online.map(sql_time))
                    .bind(n.last_cleanup.map(sql_time))
                    .bind(n.status())
                    .bind(g.longitude)
                    .bind(g.latitude)
                    .bind(g.country.as_deref())
                    .bind(g.province.as_deref())
                    .bind(g.city.as_deref())
                    .bind(g.continent.as_deref())
                    .bind(g.isp.as_deref())
                    .bind(g.asn.as_deref())
                    .bind(g.is_china)
                    .bind(&now)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("upsert");
                ids.insert(n.ip, id);
            }
            let mut added: HashMap<i64, i64> = HashMap::new();
            for c in &p.communications {
                let id = ids[&c.ip];
                let g = c.geo;
                let k = sqlx::query(&sql.insert)
                    .bind(id)
                    .bind(c.ip.to_string())
                    .bind(sql_time(c.time))
                    .bind(&now)
                    .bind(g.longitude)
                    .bind(g.latitude)
                    .bind(g.country.as_deref())
                    .bind(g.province.as_deref())
                    .bind(g.city.as_deref())
                    .bind(g.continent.as_deref())
                    .bind(g.isp.as_deref())
                    .bind(g.asn.as_deref())
                    .bind(c.log_type.event_type())
                    .bind(c.log_type.communication_status())
                    .bind(g.is_china)
                    .execute(&mut *tx)
                    .await
                    .expect("insert")
                    .rows_affected();
                // `communication_count` counts online events only, as the store does.
                if k > 0 && c.log_type == LogType::Online {
                    *added.entry(id).or_default() += 1;
                }
            }
            for (id, k) in added {
                sqlx::query(&sql.bump)
                    .bind(id)
                    .bind(k)
                    .execute(&mut *tx)
                    .await
                    .expect("bump");
            }
        }
        tx.commit().await.expect("commit");
        lat.push(t0.elapsed());
    }
    Run::new(records, start.elapsed(), lat)
}

async fn sqlx_multi_row(path: &Path, plans: &[Vec<TypePlan<'_>>], records: usize) -> Run {
    let mut conn = sqlx_connect(path).await;
    let sql = Sql::new();
    let now = sql_time(chrono::Utc::now());
    let mut texts: HashMap<(u8, usize), String> = HashMap::new();
    let mut lat = Vec::with_capacity(plans.len());
    let start = Instant::now();
    for batch in plans {
        let t0 = Instant::now();
        let mut tx = conn.begin().await.expect("begin");
        for p in batch {
            let ips: Vec<String> = p.nodes.iter().map(|n| n.ip.to_string()).collect();
            let text = texts
                .entry((0, p.nodes.len()))
                .or_insert_with(|| sql.multi_upsert(p.nodes.len()));
            let mut q = sqlx::query(text.as_str());
            for (n, ip) in p.nodes.iter().zip(&ips) {
                let g = n.geo.unwrap_or(unknown());
                q = q
                    .bind(ip.as_str())
                    .bind(n.first_online.map(sql_time))
                    .bind(n.last_online.map(sql_time))
                    .bind(n.last_cleanup.map(sql_time))
                    .bind(n.last_online.map(sql_time))
                    .bind(n.status())
                    .bind(g.longitude)
                    .bind(g.latitude)
                    .bind(g.country.as_deref())
                    .bind(g.province.as_deref())
                    .bind(g.city.as_deref())
                    .bind(g.continent.as_deref())
                    .bind(g.isp.as_deref())
                    .bind(g.asn.as_deref())
                    .bind(g.is_china)
                    .bind(now.as_str())
                    .bind(now.as_str());
            }
            let ids: HashMap<String, i64> = q
                .fetch_all(&mut *tx)
                .await
                .expect("upsert")
                .iter()
                .map(|r| (r.get::<String, _>(1), r.get::<i64, _>(0)))
                .collect();
            let comm_ips: Vec<String> = p.communications.iter().map(|c| c.ip.to_string()).collect();
            let times: Vec<String> = p.communications.iter().map(|c| sql_time(c.time)).collect();
            let text = texts
                .entry((1, p.communications.len()))
                .or_insert_with(|| sql.multi_insert(p.communications.len()));
            let mut q = sqlx::query(text.as_str());
            for ((c, ip), time) in p.communications.iter().zip(&comm_ips).zip(&times) {
                let g = c.geo;
                q = q
                    .bind(ids[ip])
                    .bind(ip.as_str())
                    .bind(time.as_str())
                    .bind(now.as_str())
                    .bind(g.longitude)
                    .bind(g.latitude)
                    .bind(g.country.as_deref())
                    .bind(g.province.as_deref())
                    .bind(g.city.as_deref())
                    .bind(g.continent.as_deref())
                    .bind(g.isp.as_deref())
                    .bind(g.asn.as_deref())
                    .bind(c.log_type.event_type())
                    .bind(c.log_type.communication_status())
                    .bind(g.is_china);
            }
            let mut added: HashMap<i64, i64> = HashMap::new();
            for r in q.fetch_all(&mut *tx).await.expect("insert") {
                // `communication_count` counts online events only, as the store does.
                if r.get::<String, _>(1) == LogType::Online.event_type() {
                    *added.entry(r.get::<i64, _>(0)).or_default() += 1;
                }
            }
            if added.is_empty() {
                continue;
            }
            let added: Vec<(i64, i64)> = added.into_iter().collect();
            let text = texts
                .entry((2, added.len()))
                .or_insert_with(|| sql.multi_bump(added.len()));
            let mut q = sqlx::query(text.as_str());
            for (id, k) in &added {
                q = q.bind(*id).bind(*k);
            }
            q.execute(&mut *tx).await.expect("bump");
        }
        tx.commit().await.expect("commit");
        lat.push(t0.elapsed());
    }
    Run::new(records, start.elapsed(), lat)
}

async fn sqlite_store(path: &Path, work: &[EnrichedBatch], records: usize) -> Run {
    let store = SqliteStore::open(path).expect("open");
    let mut lat = Vec::with_capacity(work.len());
    let start = Instant::now();
    for b in work {
        let t0 = Instant::now();
        store.apply(b).await.expect("apply");
        lat.push(t0.elapsed());
    }
    Run::new(records, start.elapsed(), lat)
}

/// Rows of one type after a mode, to check that every mode wrote the same thing.
fn fingerprint(path: &Path) -> (i64, i64, i64) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM botnet_nodes_mozi),
                (SELECT COUNT(*) FROM botnet_communications_mozi),
                (SELECT SUM(communication_count) FROM botnet_nodes_mozi)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("fingerprint")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records = env_usize("BOTPIPE_BENCH_RECORDS", 300_000);
    let runs = env_usize("BOTPIPE_BENCH_RUNS", 3);
    let work = batches(TYPE, records, BATCH, REPEAT_SHARE);
    let plans: Vec<Vec<TypePlan<'_>>> = work.iter().map(plan).collect();
    let upserts: usize = plans.iter().flatten().map(|p| p.nodes.len()).sum();
    println!(
        "sqlite_write: {} records, batches of {BATCH}, {:.0}% repeated IPs, {} node upserts, {runs} run(s) per mode, median reported",
        thousands(records as f64),
        REPEAT_SHARE * 100.0,
        thousands(upserts as f64)
    );
    println!(
        "| mode | records/s | node upserts/s | batch p50 | batch p99 |\n|---|---|---|---|---|"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let modes = [
        "rusqlite, prepared statements, 1 tx per batch",
        "sqlx-sqlite, one statement per row, 1 tx per batch",
        "sqlx-sqlite, multi-row VALUES, 1 tx per batch",
        "SqliteStore::apply (rusqlite on the blocking pool, synchronous=FULL)",
        "rusqlite, prepared statements, 1 tx per batch, synchronous=FULL",
    ];
    let chosen: Vec<usize> = match std::env::var("BOTPIPE_BENCH_MODES") {
        Ok(list) => list
            .split(',')
            .map(|m| {
                m.trim()
                    .parse::<usize>()
                    .expect("BOTPIPE_BENCH_MODES: numbers 1..=5")
                    - 1
            })
            .collect(),
        Err(_) => (0..modes.len()).collect(),
    };
    let mut results: Vec<Vec<Run>> = vec![Vec::new(); modes.len()];
    let mut prints = Vec::new();
    for run in 0..runs {
        for (m, out) in results.iter_mut().enumerate() {
            if !chosen.contains(&m) {
                continue;
            }
            let path = fresh(dir.path(), &format!("m{m}r{run}")).await;
            let r = match m {
                0 | 4 => {
                    let p = path.clone();
                    let plans = &plans;
                    let sync = if m == 0 { "NORMAL" } else { "FULL" };
                    tokio::task::block_in_place(|| rusqlite_prepared(&p, plans, records, sync))
                }
                1 => sqlx_per_row(&path, &plans, records).await,
                2 => sqlx_multi_row(&path, &plans, records).await,
                _ => sqlite_store(&path, &work, records).await,
            };
            prints.push(fingerprint(&path));
            out.push(r);
        }
    }
    assert!(
        prints.windows(2).all(|w| w[0] == w[1]),
        "modes wrote different rows: {prints:?}"
    );
    for (mode, runs) in modes.iter().zip(results) {
        if runs.is_empty() {
            continue;
        }
        let r = median(runs);
        let per_upsert = r.records_per_sec * upserts as f64 / records as f64;
        println!(
            "| {mode} | {} | {} | {} | {} |",
            thousands(r.records_per_sec),
            thousands(per_upsert),
            ms(r.p50),
            ms(r.p99)
        );
    }
}
