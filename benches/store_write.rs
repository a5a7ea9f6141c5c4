//! Store write throughput on PostgreSQL and MariaDB against the raw capacity of the same
//! statements: `botpipe bench store` (the same code, [`botpipe::bench::store::run`]) for each
//! backend, on the servers the tests use.
//!
//! For each backend, on a fresh database per mode:
//! - **store**: `Store::apply` for every batch (planning, partitions, retries, error context,
//!   pool), with `BOTPIPE_BENCH_WORKERS` concurrent writers (default 1);
//! - **raw**: the same statements from a bare loop (`AnyStore::apply_raw`): one transaction
//!   per batch, no write partitions, no retry wrapper, one writer (geography is still cut to its columns).
//!
//! Workload: `BOTPIPE_BENCH_RECORDS` records (default 1,000,000) of one type, batches of 1,000,
//! 30% of the records repeating an earlier IP, 90% online, made-up geography on every IP.
//! `BOTPIPE_BENCH_BACKENDS` picks backends (`postgres,mysql`). Admin URLs: `BOTPIPE_TEST_PG`,
//! `BOTPIPE_TEST_MYSQL`, as in the tests.
//!
//! `cargo bench --bench store_write`; quick run: `BOTPIPE_BENCH_RECORDS=100000`.

// Only `env_usize` is used here; the rest serves `sqlite_write`.
#[path = "support/workload.rs"]
#[allow(dead_code, unused_imports)]
mod workload;

use botpipe::bench::workload::{Workload, WorkloadSpec};
use botpipe::bench::GeoSource;
use botpipe::config::{StoreKind, StoreSettings};
use botpipe::record::BotnetType;

use workload::env_usize;

fn admin(backend: &str) -> StoreKind {
    match backend {
        "postgres" => StoreKind::Postgres(
            std::env::var("BOTPIPE_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
                .into(),
        ),
        _ => StoreKind::Mysql(
            std::env::var("BOTPIPE_TEST_MYSQL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into())
                .into(),
        ),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records = env_usize("BOTPIPE_BENCH_RECORDS", 1_000_000);
    let workers = env_usize("BOTPIPE_BENCH_WORKERS", 1);
    let wanted =
        std::env::var("BOTPIPE_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,mysql".into());
    let workload = Workload::generate(WorkloadSpec {
        records: records as u64,
        batch_size: 1000,
        distinct_ips: None,
        repeat_ratio: 0.3,
        cleanup_ratio: 0.1,
        types: vec![BotnetType::parse("mozi").expect("type")],
        seed: 42,
    });
    for backend in ["postgres", "mysql"] {
        if !wanted.split(',').any(|w| w.trim() == backend) {
            continue;
        }
        let settings = StoreSettings {
            kind: admin(backend),
            password: None,
            migrate_on_start: true,
            max_connections: 4,
            timezone: botpipe::store::clock::DEFAULT_TIMEZONE,
        };
        let report = botpipe::bench::store::run(
            &settings,
            u32::try_from(workers).expect("workers"),
            false,
            &workload,
            &GeoSource::Synthetic,
        )
        .await
        .expect("bench store");
        println!("{}", botpipe::bench::report::store_text(&report));
    }
}
