//! Logging and metrics setup. Logs go through `tracing` (pretty or JSON, filtered by `RUST_LOG`);
//! metrics go through the `metrics` facade into a Prometheus recorder that `/metrics` renders.
//! Every metric name lives in [`metrics`] as a constant with its description.

pub mod metrics;

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
/// is harmless (tests do).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init fails only when a subscriber is already set, which is fine.
    let _already_set = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

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
            handle
        })
        .clone()
}

/// Displays an error with its whole `source()` chain (`outer: inner: root`), for log fields;
/// many library errors (reqwest, sqlx) keep the useful part in their sources.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}
