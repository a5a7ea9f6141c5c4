//! `bench pipeline`: the workload end to end in one process. An in-process collector
//! ([`DemoCollector`], botpipe dialect) serves the records; the real [`App`] pulls them, hands
//! them to the configured queue, and its workers enrich them with the configured geodata and
//! store them into a fresh database. Nothing is shared with a deployment: the store is a
//! [`ScratchStore`], the embedded queue and spool live in a [`ScratchDir`], a Redis queue gets a
//! fresh key prefix, all removed afterwards unless kept.
//!
//! Progress is read off the workers' own metrics (`botpipe_records_total{stage="store"}` and
//! `botpipe_store_batch_seconds`) every [`POLL_INTERVAL`], never per record; CPU time and
//! resident memory come from `/proc` (see [`super::probe`]). The process also runs the
//! collector, so its CPU time includes serving the records, and its memory includes the
//! records held for serving, reported apart as the memory before the pipeline started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::probe::{counter, cpu_seconds, histogram, Rss, StoreFaults};
use super::report::{PipelineReport, Rows, RssReport, StoreReport, WorkloadReport};
use super::scratch::{scratch_name, ScratchDir, ScratchStore};
use super::stats::{from_polls, Poll, RunStats};
use super::workload::{wire_json, Workload};
use super::{BenchError, Progress};
use crate::app::{App, Mode};
use crate::config::{EndpointSettings, QueueBackend, Settings};
use crate::demo::{DemoCollector, Flavor};
use crate::store::{AnyStore, Store};
use crate::telemetry::metrics::{RECORDS_TOTAL, STORE_BATCH_SECONDS};

/// How often the workers' metrics are sampled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the pipeline may store nothing before the benchmark gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace period when stopping the pipeline after the last record is stored.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Pull interval of the bench endpoint. A full batch is pulled again at once, so this only
/// paces the pulls once the collector is drained.
const PULL_INTERVAL: Duration = Duration::from_millis(250);
/// Total timeout of one pull; generous, as a large batch on a loaded machine takes a while.
const PULL_TIMEOUT: Duration = Duration::from_secs(10);

/// What `bench pipeline` runs on.
#[derive(Debug)]
pub struct PipelineBench {
    /// The configuration: store server, queue, geodata and worker count as the operator set
    /// them (the command applied its flags already).
    pub settings: Settings,
    /// Whether geodata is in use (for the report).
    pub geo: bool,
    /// Keep the scratch database, directory and Redis keys.
    pub keep: bool,
    /// `bench store` on the same workload, run before, to compare with.
    pub baseline: Option<StoreReport>,
}

/// Runs `bench pipeline` on `workload`.
///
/// # Errors
/// When a scratch resource cannot be created or removed, the pipeline cannot start, or it
/// stops storing for [`STALL_TIMEOUT`].
pub async fn run(bench: PipelineBench, workload: &Workload) -> Result<PipelineReport, BenchError> {
    let PipelineBench {
        mut settings,
        geo,
        keep,
        baseline,
    } = bench;
    let store_place = ScratchStore::create(&settings.store).await?;
    let dir = match ScratchDir::create(&settings.data_dir) {
        Ok(d) => d,
        Err(e) => {
            store_place.remove().await?;
            return Err(e);
        }
    };
    settings.store = store_place.settings().clone();
    settings.queue.spool_path = dir.path().join("spool.sqlite");
    let redis = match &mut settings.queue.backend {
        QueueBackend::Embedded { path } => {
            *path = dir.path().join("queue.sqlite");
            None
        }
        QueueBackend::Redis(r) => {
            r.prefix = scratch_name();
            Some((r.url.expose().clone(), r.prefix.clone()))
        }
    };
    let mut types = (*settings.allowed_types).clone();
    types.extend(workload.spec().types.iter().cloned());
    settings.allowed_types = Arc::new(types);
    settings.push.enabled = false;
    settings.http_listen = ([127, 0, 0, 1], 0).into();

    let measured = measure(settings, workload).await;

    if keep {
        eprintln!(
            "bench pipeline: kept {} and {}{}",
            store_place.location(),
            dir.path().display(),
            redis
                .as_ref()
                .map(|(_, p)| format!(" and Redis keys {p}:*"))
                .unwrap_or_default()
        );
    } else {
        store_place.remove().await?;
        dir.remove()?;
        if let Some((url, prefix)) = redis {
            remove_redis_keys(&url, &prefix)
                .await
                .map_err(|source| BenchError::Redis {
                    prefix,
                    source: Box::new(source),
                })?;
        }
    }
    let m = measured?;
    let ratio_to_store = baseline.as_ref().map(|b| {
        super::store::ratio(
            m.run.total.records_per_second,
            b.store.total.records_per_second,
        )
    });
    Ok(PipelineReport {
        backend: super::report::backend(&m.backend),
        queue: m.queue,
        workload: WorkloadReport::of(workload),
        workers: m.workers,
        geo,
        pipeline: m.run,
        rows: m.rows,
        retries: m.faults.retries,
        deadlocks: m.faults.deadlocks,
        rss: m.rss,
        store_baseline: baseline,
        ratio_to_store,
    })
}

struct Measured {
    backend: crate::config::StoreKind,
    queue: &'static str,
    workers: u32,
    run: RunStats,
    rows: Rows,
    faults: StoreFaults,
    rss: Option<RssReport>,
}

async fn measure(settings: Settings, workload: &Workload) -> Result<Measured, BenchError> {
    let collector = DemoCollector::new(Flavor::Botpipe, None);
    for r in workload.records() {
        collector.push(wire_json(r));
    }
    let total = workload.len();
    let rss_before = Rss::now();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::Bind)?;
    let port = listener.local_addr().map_err(BenchError::Bind)?.port();
    let mut settings = settings;
    settings.endpoints = vec![endpoint(port, workload.spec().batch_size)?];
    let (backend, workers) = (settings.store.kind.clone(), settings.worker_count);

    let app = App::build(settings, Mode::Full).await?;
    let store = app.store().clone();
    let queue = app.handoff().queue().backend_name();
    let collector_token = CancellationToken::new();
    let server = tokio::spawn(collector.clone().serve(listener, collector_token.clone()));
    let app_token = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(app_token.clone(), SHUTDOWN_GRACE));

    let watched = watch(total, rss_before).await;

    app_token.cancel();
    collector_token.cancel();
    let stopped = running.await.map_err(BenchError::Task);
    // The collector only serves what it holds; how it stopped changes nothing measured.
    let _served = server.await;
    let counted = rows(&store).await;
    store.close().await;
    stopped??;
    let (run, faults, rss) = watched?;
    Ok(Measured {
        backend,
        queue,
        workers,
        run,
        rows: counted?,
        faults,
        rss,
    })
}

/// Samples the workers' metrics until `total` records are stored.
async fn watch(
    total: u64,
    rss_before: Option<Rss>,
) -> Result<(RunStats, StoreFaults, Option<RssReport>), BenchError> {
    let prometheus = crate::telemetry::prometheus();
    let stored = |text: &str| counter(text, RECORDS_TOTAL, &["stage=\"store\""]) as u64;
    let inserted = |text: &str| {
        counter(
            text,
            RECORDS_TOTAL,
            &["stage=\"store\"", "outcome=\"inserted\""],
        ) as u64
    };
    let text = prometheus.render();
    let (stored0, inserted0) = (stored(&text), inserted(&text));
    let faults0 = StoreFaults::read(&text);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut polls = vec![Poll {
        at: Duration::ZERO,
        records: 0,
        table_rows: 0,
        latencies: histogram(&text, STORE_BATCH_SECONDS),
    }];
    let mut peak = rss_before;
    let mut progress = Progress::new("bench pipeline", total);
    let mut moved = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        tick.tick().await;
        let text = prometheus.render();
        let done = stored(&text).saturating_sub(stored0);
        polls.push(Poll {
            at: started.elapsed(),
            records: done,
            table_rows: inserted(&text).saturating_sub(inserted0),
            latencies: histogram(&text, STORE_BATCH_SECONDS),
        });
        peak = match (peak, Rss::now()) {
            (Some(p), Some(now)) => Some(p.max(now)),
            (p, now) => p.or(now),
        };
        progress.tick(done);
        if done >= total {
            let mut run = from_polls(&polls, total);
            run.cpu_seconds = cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
            let faults = StoreFaults::read(&text).since(faults0);
            let rss = peak
                .zip(rss_before)
                .map(|(peak, before)| RssReport { peak, before });
            return Ok((run, faults, rss));
        }
        if done > moved.1 {
            moved = (Instant::now(), done);
        } else if moved.0.elapsed() > STALL_TIMEOUT {
            return Err(BenchError::Stalled {
                stored: done,
                total,
                idle: STALL_TIMEOUT,
            });
        }
    }
}

async fn rows(store: &AnyStore) -> Result<Rows, BenchError> {
    let counts = store
        .counts()
        .await
        .map_err(BenchError::store("counting the rows the pipeline wrote"))?;
    Ok(Rows {
        communications: counts.total_communications(),
        nodes: counts.total_nodes(),
    })
}

/// The one endpoint the bench pulls: the in-process collector on `port`, times in UTC (the
/// workload's wire form).
fn endpoint(port: u16, batch_size: u32) -> Result<EndpointSettings, BenchError> {
    let url = format!("http://127.0.0.1:{port}/");
    let url = url::Url::parse(&url).map_err(|source| BenchError::Url { url, source })?;
    Ok(EndpointSettings {
        name: "bench".to_owned(),
        url: url.into(),
        tls: Default::default(),
        api_key: None,
        interval: PULL_INTERVAL,
        batch_size,
        connect_timeout: Duration::from_secs(1),
        timeout: PULL_TIMEOUT,
        timezone: chrono_tz::UTC,
        max_body_bytes: 256 * 1024 * 1024,
        enabled: true,
    })
}

/// Deletes every key under `prefix` (the queue's stream, group state, cursors, dead letters).
async fn remove_redis_keys(url: &str, prefix: &str) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}
