//! Store write throughput on PostgreSQL and MariaDB, against the raw capacity of the same
//! statements.
//!
//! For each backend, on a fresh database per run:
//! - **store**: `Store::apply` for every batch (planning, retries, error context, pool), one
//!   writer, as a worker calls it;
//! - **raw**: the same statements from a bare loop (`SqlStore::apply_raw`): one transaction
//!   per batch, `BEGIN`, the dialect's statements, `COMMIT`; no column fitting, no write
//!   partitions, no retry wrapper. This is the capacity the store is compared with.
//!
//! Workload: `BOTPIPE_BENCH_RECORDS` records (default 1,000,000), batches of 1,000, 30% of the
//! records repeating an earlier IP, 90% online. `BOTPIPE_BENCH_RUNS` runs per mode (default 3,
//! median reported, modes interleaved); `BOTPIPE_BENCH_BACKENDS` picks backends
//! (`postgres,mysql`). Admin URLs: `BOTPIPE_TEST_PG`, `BOTPIPE_TEST_MYSQL`, as in the tests.
//!
//! `cargo bench --bench store_write`; quick run: `BOTPIPE_BENCH_RECORDS=100000 BOTPIPE_BENCH_RUNS=1`.

#[path = "support/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use botpipe::config::{StoreKind, StoreSettings};
use botpipe::record::BotnetType;
use botpipe::store::merge::plan;
use botpipe::store::{EnrichedBatch, Store};
use sqlx::{Connection, Executor};

use workload::{batches, env_usize, median, thousands, Run};

const BATCH: usize = 1000;
const REPEAT_SHARE: f64 = 0.30;
const TYPE: &str = "mozi";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Postgres,
    Mysql,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    fn admin(self) -> String {
        match self {
            Self::Postgres => std::env::var("BOTPIPE_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            Self::Mysql => std::env::var("BOTPIPE_TEST_MYSQL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        }
    }

    fn url(self, db: &str) -> String {
        let mut u = url::Url::parse(&self.admin()).expect("admin URL");
        u.set_path(&format!("/{db}"));
        u.to_string()
    }

    async fn create(self) -> String {
        let db = format!("botpipe_bench_{}", uuid::Uuid::new_v4().simple());
        match self {
            Self::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.admin())
                    .await
                    .expect("admin");
                c.execute(format!("CREATE DATABASE {db}").as_str())
                    .await
                    .expect("create");
            }
            Self::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&self.admin())
                    .await
                    .expect("admin");
                c.execute(
                    format!(
                        "CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                    )
                    .as_str(),
                )
                .await
                .expect("create");
            }
        }
        db
    }

    async fn drop_db(self, db: &str) {
        match self {
            Self::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.admin())
                    .await
                    .expect("admin");
                c.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
                    .await
                    .expect("drop");
            }
            Self::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&self.admin())
                    .await
                    .expect("admin");
                c.execute(format!("DROP DATABASE IF EXISTS {db}").as_str())
                    .await
                    .expect("drop");
            }
        }
    }

    async fn store(self, db: &str) -> botpipe::store::AnyStore {
        let kind = match self {
            Self::Postgres => StoreKind::Postgres(self.url(db)),
            Self::Mysql => StoreKind::Mysql(self.url(db)),
        };
        let store = botpipe::store::open(&StoreSettings {
            kind,
            password: None,
            migrate_on_start: true,
            max_connections: 2,
        })
        .await
        .expect("open");
        store
            .migrate(&[BotnetType::parse(TYPE).expect("type")].into())
            .await
            .expect("migrate");
        store
    }
}

async fn run_store(backend: Backend, work: &[EnrichedBatch], records: usize) -> Run {
    let db = backend.create().await;
    let store = backend.store(&db).await;
    let mut lat = Vec::with_capacity(work.len());
    let start = Instant::now();
    for b in work {
        let t = Instant::now();
        store.apply(b).await.expect("apply");
        lat.push(t.elapsed());
    }
    let run = Run::new(records, start.elapsed(), lat);
    drop(store);
    backend.drop_db(&db).await;
    run
}

async fn run_raw(backend: Backend, work: &[EnrichedBatch], records: usize) -> Run {
    let db = backend.create().await;
    let store = backend.store(&db).await;
    let mut lat = Vec::with_capacity(work.len());
    let start = Instant::now();
    for b in work {
        let t0 = Instant::now();
        store.apply_raw(b).await.expect("raw apply");
        lat.push(t0.elapsed());
    }
    let run = Run::new(records, start.elapsed(), lat);
    drop(store);
    backend.drop_db(&db).await;
    run
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records = env_usize("BOTPIPE_BENCH_RECORDS", 1_000_000);
    let runs = env_usize("BOTPIPE_BENCH_RUNS", 3);
    let wanted =
        std::env::var("BOTPIPE_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,mysql".into());
    let backends: Vec<Backend> = [Backend::Postgres, Backend::Mysql]
        .into_iter()
        .filter(|b| wanted.split(',').any(|w| w.trim() == b.name()))
        .collect();
    let work = batches(TYPE, records, BATCH, REPEAT_SHARE);
    let distinct: usize = work
        .iter()
        .map(|b| plan(b).iter().map(|p| p.nodes.len()).sum::<usize>())
        .sum();
    println!(
        "store_write: {} records, batches of {BATCH}, {:.0}% repeated IPs, {} node upserts, {runs} run(s) per mode, median reported",
        thousands(records as f64),
        REPEAT_SHARE * 100.0,
        thousands(distinct as f64),
    );
    println!("| backend | mode | records/s | batch p50 | batch p99 |\n|---|---|---|---|---|");
    for backend in backends {
        let mut store_runs = Vec::new();
        let mut raw_runs = Vec::new();
        for _ in 0..runs {
            raw_runs.push(run_raw(backend, &work, records).await);
            store_runs.push(run_store(backend, &work, records).await);
        }
        let (s, r) = (median(store_runs), median(raw_runs));
        for (mode, run) in [("raw statements", r), ("Store::apply", s)] {
            println!(
                "| {} | {mode} | {} | {} | {} |",
                backend.name(),
                thousands(run.records_per_sec),
                ms(run.p50),
                ms(run.p99)
            );
        }
        println!(
            "| {} | ratio | {:.0}% of raw | | |",
            backend.name(),
            100.0 * s.records_per_sec / r.records_per_sec
        );
    }
}
