//! Logging and metrics setup. Logs go through `tracing` (pretty or JSON, filtered by `RUST_LOG`);
//! metrics go through the `metrics` facade into a Prometheus recorder that `/metrics` renders.
//! Every metric name lives in [`metrics`] as a constant with its description. A log line that
//! cannot be written is dropped and counted, never a panic ([`log_writer`]). Process metrics
//! are read when `/metrics` is rendered ([`process`]).

pub mod log_writer;
pub mod metrics;
pub mod process;

pub use log_writer::eprint_line;

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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

/// Renders the Prometheus exposition of `handle` with fresh process metrics.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    process::sample();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::Chain;

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
