//! `bench store`: the store's write path against the raw capacity of its statements, each on a
//! fresh database, with the same batches.
//!
//! The batches are generated and enriched before any clock starts, so the numbers are the
//! store's alone. The store phase runs the configured number of writers, each taking the next
//! batch and calling [`Store::apply`] as a worker does (partitions, retries, column fitting,
//! pool); the raw phase runs one writer calling [`AnyStore::apply_raw`], the same statements in
//! one transaction per batch and nothing around them. On SQLite both are the same call (the
//! store has no other path), so the ratio shows the cost of concurrency there.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::probe::{cpu_seconds, StoreFaults};
use super::report::{Rows, StoreReport, WorkloadReport};
use super::scratch::ScratchStore;
use super::stats::{from_batches, BatchSample, RunStats};
use super::workload::Workload;
use super::{BenchError, GeoSource, Progress};
use crate::config::StoreSettings;
use crate::record::BotnetType;
use crate::store::{AnyStore, EnrichedBatch, Store, StoreError};

/// How often the writers' progress is looked at (a line is printed every
/// [`super::PROGRESS_INTERVAL`]).
const PROGRESS_POLL: Duration = Duration::from_millis(250);

/// Which write path a phase measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Store,
    Raw,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Self::Store => "bench store",
            Self::Raw => "bench store (raw)",
        }
    }
}

/// Runs `bench store`: the workload through [`Store::apply`] with `workers` writers, then
/// through [`AnyStore::apply_raw`] with one, each into a fresh database on the server (or in
/// the directory) of `base`, dropped afterwards unless `keep`.
///
/// # Errors
/// When a scratch database cannot be created or dropped, or the store fails.
pub async fn run(
    base: &StoreSettings,
    workers: u32,
    keep: bool,
    workload: &Workload,
    geo: &GeoSource,
) -> Result<StoreReport, BenchError> {
    let prometheus = crate::telemetry::prometheus();
    let batches = Arc::new(workload.enrich(|r| geo.geo(r)));
    let types: BTreeSet<BotnetType> = workload.spec().types.iter().cloned().collect();
    let before = StoreFaults::read(&prometheus.render());
    let (store, rows) = phase(
        base,
        &types,
        Arc::clone(&batches),
        workers,
        Path::Store,
        keep,
    )
    .await?;
    let (raw, _) = phase(base, &types, batches, 1, Path::Raw, keep).await?;
    let faults = StoreFaults::read(&prometheus.render()).since(before);
    Ok(StoreReport {
        backend: super::report::backend(&base.kind),
        workload: WorkloadReport::of(workload),
        workers,
        geo: geo.is_on(),
        ratio_to_raw: ratio(store.total.records_per_second, raw.total.records_per_second),
        store,
        raw,
        retries: faults.retries,
        deadlocks: faults.deadlocks,
        rows,
    })
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

async fn phase(
    base: &StoreSettings,
    types: &BTreeSet<BotnetType>,
    batches: Arc<Vec<EnrichedBatch>>,
    writers: u32,
    path: Path,
    keep: bool,
) -> Result<(RunStats, Rows), BenchError> {
    let scratch = ScratchStore::create(base).await?;
    let failed = BenchError::store;
    // Measured in a block so the scratch database is removed whatever happens in it.
    let measured = async {
        let store = crate::store::open(scratch.settings())
            .await
            .map_err(failed("opening the scratch store"))?;
        let result = async {
            store
                .migrate(types)
                .await
                .map_err(failed("migrating the scratch store"))?;
            let run = drive(&store, batches, writers, path).await?;
            let counts = store
                .counts()
                .await
                .map_err(failed("counting the rows written"))?;
            Ok((
                run,
                Rows {
                    communications: counts.total_communications(),
                    nodes: counts.total_nodes(),
                },
            ))
        }
        .await;
        store.close().await;
        result
    }
    .await;
    if keep {
        eprintln!("{}: kept {}", path.label(), scratch.location());
    } else {
        scratch.remove().await?;
    }
    measured
}

/// Applies every batch with `writers` concurrent writers, each taking the next batch not yet
/// taken, and times each.
async fn drive(
    store: &AnyStore,
    batches: Arc<Vec<EnrichedBatch>>,
    writers: u32,
    path: Path,
) -> Result<RunStats, BenchError> {
    let total: u64 = batches.iter().map(|b| b.batch.records.len() as u64).sum();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..writers.max(1) {
        let (store, batches) = (store.clone(), Arc::clone(&batches));
        let (next, done) = (Arc::clone(&next), Arc::clone(&done));
        set.spawn(async move {
            let mut samples = Vec::new();
            while let Some(b) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                let inserted = match path {
                    Path::Store => store.apply(b).await?.communications_inserted,
                    Path::Raw => store.apply_raw(b).await?,
                };
                let records = b.batch.records.len() as u64;
                samples.push(BatchSample {
                    finished: started.elapsed(),
                    records,
                    inserted,
                    latency: t.elapsed(),
                });
                done.fetch_add(records, Ordering::Relaxed);
            }
            Ok::<_, StoreError>(samples)
        });
    }
    let mut progress = Progress::new(path.label(), total);
    let mut poll = tokio::time::interval(PROGRESS_POLL);
    let mut samples = Vec::with_capacity(batches.len());
    loop {
        // A tick that loses is skipped; `join_next` is cancel-safe, so a writer that finished
        // meanwhile is collected on the next turn. An error returns at once and dropping the
        // set aborts the other writers.
        tokio::select! {
            joined = set.join_next() => match joined {
                None => break,
                Some(Ok(Ok(mine))) => samples.extend(mine),
                Some(Ok(Err(e))) => return Err(BenchError::store(path.label())(e)),
                Some(Err(e)) => return Err(BenchError::Task(e)),
            },
            _ = poll.tick() => progress.tick(done.load(Ordering::Relaxed)),
        }
    }
    let mut run = from_batches(samples, started.elapsed());
    run.cpu_seconds = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    Ok(run)
}
