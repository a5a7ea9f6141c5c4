//! Logging and metrics setup. Logs go through `tracing` (pretty or JSON, filtered by `RUST_LOG`);
//! metrics go through the `metrics` facade into a Prometheus recorder that `/metrics` renders.
//! Every metric name lives in [`metrics`] as a constant with its description. A log line that
//! cannot be written is dropped and counted, never a panic ([`log_writer`]). Process metrics
//! are read when `/metrics` is rendered ([`process`]).
//!
//! Readable logs carry colour only when stderr is a terminal (and `NO_COLOR` is not set), so a
//! pipe, a file or journald gets plain text. PostgreSQL's notices (`relation … already exists,
//! skipping`, which sqlx logs at info) stay out of the default filter; the store also asks the
//! server not to send them (`client_min_messages`).

pub mod log_writer;
pub mod metrics;
pub mod process;

pub use log_writer::eprint_line;

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `default_level`. Calling it twice
/// is harmless (tests do). Lines go to stderr through [`log_writer::StderrLog`]: one that cannot
/// be written is dropped and counted.
pub fn init_logging(format: LogFormat, default_level: &str) {
    // The recorder first, so that a log line dropped from the very start is counted.
    let _handle = prometheus();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(default_level)));
    let ansi = format == LogFormat::Pretty
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(log_writer::StderrLog)
        // The writer never fails; this also keeps the subscriber's own `eprintln!` complaints,
        // which panic on a broken stderr, out of the way.
        .log_internal_errors(false);
    // try_init fails only when a subscriber is already set, which is fine.
    let _already_set = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The filter used when `RUST_LOG` is not set: `level` for everything, but the database
/// drivers' notices only from warnings up (PostgreSQL sends a NOTICE for every
/// `CREATE … IF NOT EXISTS` that finds the object, which is the normal case at each start).
fn default_filter(level: &str) -> String {
    format!("{level},sqlx::postgres::notice=warn")
}

/// The git commit botpipe was built from, when the build set `BOTPIPE_GIT_COMMIT` (e.g.
/// `BOTPIPE_GIT_COMMIT=$(git rev-parse --short HEAD) cargo build --release`); no build script
/// is involved, so a build without it says `unknown`.
pub const GIT_COMMIT: &str = match option_env!("BOTPIPE_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// `release` or `debug`: whether debug assertions were compiled in.
pub const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle; later calls return
/// the same handle. Metric descriptions are registered here.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(metrics::HISTOGRAM_BUCKETS)
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed (a test harness); the handle still renders.
            let _other_recorder = ::metrics::set_global_recorder(recorder);
            metrics::describe_all();
            ::metrics::gauge!(
                metrics::BUILD_INFO,
                "version" => env!("CARGO_PKG_VERSION"),
                "commit" => GIT_COMMIT,
                "profile" => PROFILE
            )
            .set(1.0);
            ::metrics::counter!(metrics::LOG_WRITE_ERRORS_TOTAL).increment(0);
            handle
        })
        .clone()
}

/// Displays an error with its whole `source()` chain (`outer: inner: root`), for log fields;
/// many library errors (reqwest, sqlx) keep the useful part in their sources.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = self.0.to_string();
        let mut cur = self.0.source();
        while let Some(e) = cur {
            // Errors that already end with their source's text (`#[error("…: {source}")]`)
            // would otherwise print it twice.
            let text = e.to_string();
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cur = e.source();
        }
        f.write_str(&out)
    }
}

/// `d` in milliseconds with at most 3 decimals, for log fields (`drift_ms = 1.234`): more
/// digits say nothing and make lines harder to read.
pub fn millis(d: std::time::Duration) -> f64 {
    rounded(d.as_secs_f64() * 1000.0, 3)
}

/// `x` rounded to `decimals` places, for ratios, rates and seconds in log fields.
pub fn rounded(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// Renders the Prometheus exposition of `handle` with fresh process metrics.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    process::sample();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[test]
    fn log_floats_are_rounded() {
        use std::time::Duration;
        assert_eq!(super::millis(Duration::from_nanos(1_234_567)), 1.235);
        assert_eq!(super::millis(Duration::from_millis(3)), 3.0);
        assert_eq!(super::rounded(2.0 / 3.0, 2), 0.67);
        assert_eq!(super::rounded(12.3456, 3), 12.346);
    }

    #[test]
    fn the_default_filter_keeps_postgres_notices_out() {
        let f = super::default_filter("info");
        assert_eq!(f, "info,sqlx::postgres::notice=warn");
        assert!(tracing_subscriber::EnvFilter::try_new(&f).is_ok());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}: {1}")]
    struct Repeats(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("opening the queue")]
    struct Wraps(#[source] Repeats);

    #[test]
    fn chain_shows_every_cause_once() {
        let e = Wraps(Repeats("q.sqlite", std::io::Error::other("disk on fire")));
        assert_eq!(
            Chain(&e).to_string(),
            "opening the queue: reading q.sqlite: disk on fire"
        );
    }
}
