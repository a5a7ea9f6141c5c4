//! The command line: every subcommand and flag, documented here because these doc comments are
//! `botpipe --help`. Process knobs live here (with `BOTPIPE_…` mirrors); endpoints, store, queue
//! and geodata live in the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// botpipe: pull botnet telemetry from collectors into the platform database.
#[derive(Debug, Parser)]
#[command(name = "botpipe", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Without it botpipe runs on the embedded default under
    /// ./botpipe-data (SQLite store, embedded queue).
    #[arg(long, short = 'c', global = true, env = "BOTPIPE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "BOTPIPE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Default log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info", env = "BOTPIPE_LOG_LEVEL")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform side: pullers, push ingest, workers and the HTTP server, until SIGINT or
    /// SIGTERM.
    Run(RunArgs),
    /// Run workers only (scale-out: several processes share one Redis consumer group).
    Worker(RunArgs),
    /// Run the C2-side collector: tail sources into a seq-numbered cache and serve the pull API.
    Collector(CollectorArgs),
    /// Check the configuration (every problem at once), then connectivity to each dependency.
    Validate(ValidateArgs),
    /// Show endpoints, cursors, queue, spool, dead letters and store rows.
    Status(StatusArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Inspect and replay dead letters.
    Dlq(DlqArgs),
    /// Self-contained demo: an in-process collector, the whole pipeline on the embedded default,
    /// and a summary.
    Demo(DemoArgs),
    /// Print what each configured geo database says about IPs.
    Geoip(GeoipArgs),
}

/// Flags of `run` and `worker`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Workers in this process (overrides `worker.count`).
    #[arg(long, env = "BOTPIPE_WORKERS")]
    pub workers: Option<u32>,
    /// Longest graceful shutdown before botpipe exits anyway; unacked batches are redelivered.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "BOTPIPE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Duration,
    /// HTTP listen address (overrides `http.listen`); port 0 picks a free port.
    #[arg(long, env = "BOTPIPE_HTTP_LISTEN")]
    pub http_listen: Option<std::net::SocketAddr>,
}

/// Flags of `collector`.
#[derive(Debug, Clone, Args)]
pub struct CollectorArgs {
    /// HTTP listen address (overrides the collector config's `listen`).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

/// Flags of `validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Check the configuration only; do not contact endpoints, the store, Redis or open geodata.
    #[arg(long)]
    pub offline: bool,
}

/// Flags of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ask a running botpipe at this base URL (e.g. http://127.0.0.1:8080) instead of reading the
    /// store and queue directly.
    #[arg(long)]
    pub url: Option<String>,
}

/// `dlq` subcommands.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// What to do with dead letters.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// What to do with dead letters.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only this reason (e.g. bad_ip, unknown_botnet_type).
        #[arg(long)]
        reason: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter whole.
    Show {
        /// Its id.
        id: i64,
    },
    /// Re-validate dead letters with the current configuration and queue those that now pass.
    Replay {
        /// Only this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Only these ids.
        #[arg(long, value_delimiter = ',')]
        ids: Vec<i64>,
        /// Show what would be replayed without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Flags of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Records the demo collector generates (before duplicates and invalid ones are mixed in).
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// Directory for the demo's SQLite store and queue (default: a fresh `./botpipe-data/demo-<time>`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Pull interval of the demo endpoints.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Records per pull.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u32,
    /// Print the summary as JSON (for scripts and CI).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `geoip`.
#[derive(Debug, Clone, Args)]
pub struct GeoipArgs {
    /// IPv4 or IPv6 addresses.
    #[arg(required = true)]
    pub ips: Vec<String>,
}
