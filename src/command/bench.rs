//! `botpipe bench store|pipeline`: load the configuration, apply the flags (store server,
//! workers, batch size, geography), generate the workload, run [`crate::bench`] and print its
//! report as tables or, with `--json`, one JSON document. Progress goes to stderr.

use std::path::Path;

use crate::bench::pipeline::PipelineBench;
use crate::bench::workload::{Workload, WorkloadSpec};
use crate::bench::{BenchError, GeoSource};
use crate::cli::{BenchArgs, BenchCommand, BenchRunArgs, GeoSwitch};
use crate::config::{GeoSettings, Settings, DEFAULT_BATCH_SIZE};
use crate::enrich::AnyLookup;

use super::CommandError;

/// `botpipe bench`.
///
/// # Errors
/// A configuration that does not load, or `--geo on` without geodata (exit 2); a store server
/// that refuses a scratch database, or a run that fails (exit 1).
pub async fn run(config: Option<&Path>, args: BenchArgs) -> Result<(), CommandError> {
    let settings = crate::config::load(config)?;
    match args.command {
        BenchCommand::Store(a) => {
            let json = a.json;
            let p = prepare(settings, a).await?;
            let report = crate::bench::store::run(
                &p.settings.store,
                p.settings.worker_count,
                p.keep,
                &p.workload,
                &p.geo,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::bench::report::store_text(&report));
            }
        }
        BenchCommand::Pipeline(a) => {
            let (json, skip_baseline) = (a.run.json, a.no_store_baseline);
            let p = prepare(settings, a.run).await?;
            let baseline = if skip_baseline {
                None
            } else {
                Some(
                    crate::bench::store::run(
                        &p.settings.store,
                        p.settings.worker_count,
                        p.keep,
                        &p.workload,
                        &p.geo,
                    )
                    .await?,
                )
            };
            let bench = PipelineBench {
                geo: p.geo.is_on(),
                settings: p.settings,
                keep: p.keep,
                baseline,
            };
            let report = crate::bench::pipeline::run(bench, &p.workload).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::bench::report::pipeline_text(&report));
            }
        }
    }
    Ok(())
}

/// The configuration with the flags applied, the geography and the generated workload.
struct Prepared {
    settings: Settings,
    geo: GeoSource,
    workload: Workload,
    keep: bool,
}

async fn prepare(mut settings: Settings, a: BenchRunArgs) -> Result<Prepared, CommandError> {
    if let Some(kind) = a.store {
        settings.store.kind = kind;
        settings.store.password = None;
    }
    if let Some(w) = a.workers {
        settings.worker_count = w;
    }
    let batch_size = a
        .batch_size
        .or_else(|| settings.enabled_endpoints().next().map(|e| e.batch_size))
        .unwrap_or(DEFAULT_BATCH_SIZE);
    // Geography off: the pipeline's workers must not open geodata either (nor warn twice
    // that there is none).
    let off = GeoSettings::default();
    let geo = match a.geo {
        Some(GeoSwitch::Off) => {
            settings.geo = off;
            GeoSource::Off
        }
        wanted => {
            let (geo, dir) = (settings.geo.clone(), settings.data_dir.clone());
            // Opening and mapping the databases is blocking file I/O.
            let lookup = tokio::task::spawn_blocking(move || crate::enrich::open(&geo, &dir))
                .await
                .map_err(BenchError::Task)??;
            match (lookup, wanted) {
                (AnyLookup::Disabled, Some(GeoSwitch::On)) => {
                    return Err(BenchError::NoGeodata.into())
                }
                (AnyLookup::Disabled, _) => {
                    settings.geo = off;
                    GeoSource::Off
                }
                (lookup, _) => GeoSource::Lookup(lookup),
            }
        }
    };
    let spec = WorkloadSpec {
        records: a.records,
        batch_size,
        distinct_ips: a.distinct_ips,
        repeat_ratio: a.repeat_ratio,
        cleanup_ratio: a.cleanup_ratio,
        types: a.types,
        seed: a.seed,
    };
    let workload = tokio::task::spawn_blocking(move || Workload::generate(spec))
        .await
        .map_err(BenchError::Task)?;
    Ok(Prepared {
        settings,
        geo,
        workload,
        keep: a.keep,
    })
}
