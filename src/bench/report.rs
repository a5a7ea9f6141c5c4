//! What `botpipe bench` reports: [`StoreReport`] and [`PipelineReport`] (serialized as is for
//! `--json`) and their human form, a markdown table per run with one row per segment followed
//! by summary lines.

use std::fmt::Write as _;

use serde::Serialize;

use super::probe::Rss;
use super::stats::RunStats;
use super::workload::{Workload, WorkloadSpec};
use crate::config::StoreKind;

/// The workload as generated.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// What was asked for.
    #[serde(flatten)]
    pub spec: WorkloadSpec,
    /// Distinct IPs among the records.
    pub distinct_ips_generated: u64,
}

impl WorkloadReport {
    /// The report of `w`.
    pub fn of(w: &Workload) -> Self {
        Self {
            spec: w.spec().clone(),
            distinct_ips_generated: w.distinct_ips(),
        }
    }
}

/// Rows in the store after a run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rows {
    /// Communication rows of every type.
    pub communications: u64,
    /// Node rows of every type.
    pub nodes: u64,
}

impl std::fmt::Display for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} communications, {} nodes",
            thousands(self.communications as f64),
            thousands(self.nodes as f64)
        )
    }
}

/// The result of `bench store`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: &'static str,
    /// The workload.
    pub workload: WorkloadReport,
    /// Concurrent writers of the store phase.
    pub workers: u32,
    /// Whether records carried geography from geodata.
    pub geo: bool,
    /// The store's write path (`Store::apply`, `workers` writers).
    pub store: RunStats,
    /// The same statements from a bare loop (one writer).
    pub raw: RunStats,
    /// `store.records_per_second / raw.records_per_second`.
    pub ratio_to_raw: f64,
    /// Transient failures retried inside a batch, both phases.
    pub retries: u64,
    /// Deadlocks the database reported, both phases.
    pub deadlocks: u64,
    /// Rows after the store phase.
    pub rows: Rows,
}

/// Resident memory of `bench pipeline`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RssReport {
    /// Highest sampled while the pipeline ran.
    pub peak: Rss,
    /// Just before the pipeline started: the generated workload and the in-process collector
    /// holding it, which the pipeline's own memory is on top of.
    pub before: Rss,
}

/// The result of `bench pipeline`.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: &'static str,
    /// `embedded` or `redis`.
    pub queue: &'static str,
    /// The workload.
    pub workload: WorkloadReport,
    /// Workers of the pipeline.
    pub workers: u32,
    /// Whether the workers enriched from geodata.
    pub geo: bool,
    /// Collector to store, end to end. Batch percentiles are histogram bucket bounds.
    pub pipeline: RunStats,
    /// Rows after the run.
    pub rows: Rows,
    /// Transient store failures retried inside a batch.
    pub retries: u64,
    /// Deadlocks the database reported.
    pub deadlocks: u64,
    /// Resident memory, when the platform reports it.
    pub rss: Option<RssReport>,
    /// `bench store` on the same workload in the same invocation (unless skipped).
    pub store_baseline: Option<StoreReport>,
    /// `pipeline.records_per_second / store_baseline.store.records_per_second`.
    pub ratio_to_store: Option<f64>,
}

/// The backend label of a store.
pub fn backend(kind: &StoreKind) -> &'static str {
    match kind {
        StoreKind::Sqlite(_) => "sqlite",
        StoreKind::Postgres(_) => "postgres",
        StoreKind::Mysql(_) => "mysql",
    }
}

/// `12345.6` → `12,346`.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn workload_line(w: &WorkloadReport, backend: &str, workers: u32, geo: bool) -> String {
    let s = &w.spec;
    let types: Vec<&str> = s.types.iter().map(|t| t.as_str()).collect();
    format!(
        "{backend}, {} records in batches of {}, {workers} worker(s), {} repeated IPs ({} distinct), {} cleanup, types {}, geography {}",
        thousands(s.records as f64),
        thousands(f64::from(s.batch_size)),
        pct(s.repeat_ratio),
        thousands(w.distinct_ips_generated as f64),
        pct(s.cleanup_ratio),
        types.join(","),
        if geo { "on" } else { "off" },
    )
}

/// One table row per segment of `run`; with `raw`, two more columns comparing each segment
/// with the raw run's segment of the same index.
fn segment_table(out: &mut String, run: &RunStats, raw: Option<&RunStats>, bound: &str) {
    let (head, rule) = match raw {
        Some(_) => (
            "| records | table rows | records/s | raw records/s | % of raw | batch p50 | batch p99 |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ),
        None => (
            "| records | table rows | records/s | batch p50 | batch p99 |",
            "|---:|---:|---:|---:|---:|",
        ),
    };
    let _ = writeln!(out, "{head}\n{rule}");
    for (i, s) in run.segments.iter().enumerate() {
        let compare = raw.map(|r| match r.segments.get(i) {
            Some(rs) => format!(
                " {} | {} |",
                thousands(rs.records_per_second),
                pct(super::store::ratio(
                    s.records_per_second,
                    rs.records_per_second
                ))
            ),
            None => " | |".to_owned(),
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} |{} {bound}{:.1} ms | {bound}{:.1} ms |",
            thousands(s.records as f64),
            thousands(s.table_rows as f64),
            thousands(s.records_per_second),
            compare.unwrap_or_default(),
            s.batch_p50_ms,
            s.batch_p99_ms,
        );
    }
}

fn cpu(run: &RunStats) -> String {
    match run.cpu_seconds {
        Some(c) if run.total.seconds > 0.0 => {
            format!(
                "{c:.2} s ({:.0}% of one core)",
                100.0 * c / run.total.seconds
            )
        }
        _ => "n/a".to_owned(),
    }
}

/// The human form of a `bench store` report.
pub fn store_text(r: &StoreReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench store: {}\n",
        workload_line(&r.workload, r.backend, r.workers, r.geo)
    );
    segment_table(&mut out, &r.store, Some(&r.raw), "");
    let _ = writeln!(
        out,
        "\n  store        {:>10} records/s   ({} records in {:.2} s, {} writer(s))",
        thousands(r.store.total.records_per_second),
        thousands(r.store.total.records as f64),
        r.store.total.seconds,
        r.workers
    );
    let _ = writeln!(
        out,
        "  raw          {:>10} records/s   (same statements, bare loop, 1 writer)",
        thousands(r.raw.total.records_per_second)
    );
    let _ = writeln!(out, "  ratio        {:>10} of raw", pct(r.ratio_to_raw));
    let _ = writeln!(
        out,
        "  batch        p50 {:.1} ms, p99 {:.1} ms   (raw p50 {:.1} ms, p99 {:.1} ms)",
        r.store.total.batch_p50_ms,
        r.store.total.batch_p99_ms,
        r.raw.total.batch_p50_ms,
        r.raw.total.batch_p99_ms
    );
    let _ = writeln!(out, "  retries      {:>10}", r.retries);
    let _ = writeln!(out, "  deadlocks    {:>10}", r.deadlocks);
    let _ = writeln!(
        out,
        "  CPU          {}   (raw {}; this process only)",
        cpu(&r.store),
        cpu(&r.raw)
    );
    let _ = writeln!(out, "  rows         {}", r.rows);
    out
}

/// The human form of a `bench pipeline` report.
pub fn pipeline_text(r: &PipelineReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench pipeline: {}, {} queue\n",
        workload_line(&r.workload, r.backend, r.workers, r.geo),
        r.queue
    );
    segment_table(&mut out, &r.pipeline, None, "≤ ");
    let p = &r.pipeline;
    let _ = writeln!(
        out,
        "\n  pipeline     {:>10} records/s   ({} records in {:.2} s, collector to store)",
        thousands(p.total.records_per_second),
        thousands(p.total.records as f64),
        p.total.seconds
    );
    if let (Some(base), Some(ratio)) = (&r.store_baseline, r.ratio_to_store) {
        let _ = writeln!(
            out,
            "  bench store  {:>10} records/s   (same workload; raw {})",
            thousands(base.store.total.records_per_second),
            thousands(base.raw.total.records_per_second)
        );
        let _ = writeln!(out, "  ratio        {:>10} of bench store", pct(ratio));
    }
    let _ = writeln!(
        out,
        "  batch        p50 ≤ {:.1} ms, p99 ≤ {:.1} ms (store time per batch)",
        p.total.batch_p50_ms, p.total.batch_p99_ms
    );
    let _ = writeln!(out, "  retries      {:>10}", r.retries);
    let _ = writeln!(out, "  deadlocks    {:>10}", r.deadlocks);
    let _ = writeln!(
        out,
        "  CPU          {}   (this process: collector, pull, queue, enrich, store client)",
        cpu(p)
    );
    if let Some(rss) = &r.rss {
        let _ = writeln!(
            out,
            "  RSS          anon {:.0} MiB, file {:.0} MiB (peak; before the pipeline: anon {:.0} MiB, file {:.0} MiB)",
            rss.peak.anon_mib, rss.peak.file_mib, rss.before.anon_mib, rss.before.file_mib
        );
    }
    let _ = writeln!(out, "  rows         {}", r.rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }
}
