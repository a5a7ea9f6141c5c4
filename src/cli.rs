//! The command line: every subcommand and flag, documented here because these doc comments are
//! `botpipe --help`. Process knobs live here (with `BOTPIPE_…` mirrors); endpoints, store, queue
//! and geodata live in the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::StoreKind;
use crate::record::BotnetType;
use crate::telemetry::LogFormat;

/// Heading of the flags every command takes, listed apart from the command's own in `--help`.
pub const GLOBAL_HEADING: &str = "Global options";
/// Environment variable naming the collector's configuration file.
pub const COLLECTOR_CONFIG_ENV: &str = "BOTPIPE_COLLECTOR_CONFIG";

/// botpipe: pull botnet telemetry from collectors into the platform database.
#[derive(Debug, Parser)]
#[command(name = "botpipe", version, about, long_about = None)]
pub struct Cli {
    /// botpipe's configuration file (TOML). Without it botpipe runs on the embedded default
    /// under ./botpipe-data (SQLite store, embedded queue). `botpipe collector` takes its own
    /// file instead (see `botpipe collector --help`).
    #[arg(long, short = 'c', global = true, env = "BOTPIPE_CONFIG", value_name = "FILE", help_heading = GLOBAL_HEADING)]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "BOTPIPE_LOG_FORMAT", help_heading = GLOBAL_HEADING)]
    pub log_format: LogFormat,
    /// Default log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info", env = "BOTPIPE_LOG_LEVEL", help_heading = GLOBAL_HEADING)]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments like [`Parser::parse`] (exiting with clap's message on a
    /// usage error), except that `botpipe collector` never takes its file from
    /// `BOTPIPE_CONFIG`: that names botpipe's configuration, and clap hands a global flag's
    /// environment value to every subcommand, the collector's own `--config` included.
    pub fn parse_process_args() -> Self {
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let from_botpipe_env = matches
            .subcommand_matches("collector")
            .and_then(|m| m.value_source("config"))
            == Some(ValueSource::EnvVariable)
            && std::env::var_os(COLLECTOR_CONFIG_ENV).is_none();
        if let Command::Collector(args) = &mut cli.command {
            if from_botpipe_env {
                args.config = None;
                cli.config = None;
            }
        }
        cli
    }
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
    /// Show the running botpipe (found at [http] listen), else its files: endpoints, workers,
    /// queue, spool, store, geodata, dead letters and store rows.
    Status(StatusArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Inspect and replay dead letters.
    Dlq(DlqArgs),
    /// Self-contained demo: two in-process collectors, the whole pipeline on the embedded
    /// default in a temporary directory (removed afterwards), the geodata `run` would use, and a
    /// summary.
    Demo(DemoArgs),
    /// Print what each configured geo database says about IPs.
    Geoip(GeoipArgs),
    /// Measure write throughput on this deployment's store server with its configuration:
    /// `bench store` (the store's write path against its raw statements) and `bench pipeline`
    /// (collector to store, end to end). Writes only into fresh scratch databases.
    Bench(BenchArgs),
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
    /// This process's name, shown with the endpoints it holds (`botpipe status`, `/api/status`)
    /// and sent to collectors in the User-Agent. Default: host-pid.
    #[arg(long, env = "BOTPIPE_NAME")]
    pub name: Option<String>,
}

/// Flags of `collector`.
#[derive(Debug, Clone, Args)]
pub struct CollectorArgs {
    /// The collector's configuration file (TOML), required: its listen address, API key, cache
    /// and sources (collector.example.toml, docs/collector.md). Not botpipe's configuration,
    /// which `BOTPIPE_CONFIG` names and the collector does not read.
    // The same id as the global `--config`, so clap gives the collector this one (with its own
    // help) instead of botpipe's.
    #[arg(long, short = 'c', env = COLLECTOR_CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// Print JSON instead of a table (the /api/status document; null where a value is unknown).
    #[arg(long)]
    pub json: bool,
    /// Ask the running botpipe at this base URL (e.g. http://127.0.0.1:8080), and only it.
    /// Without it, status asks the one at the configuration's [http] listen address and reads
    /// the store and queue directly when none answers; the output says which it shows.
    #[arg(long)]
    pub url: Option<String>,
    /// Redraw every second until Ctrl-C, like top (on a terminal; otherwise one snapshot a
    /// second, separated by a blank line; with --json, one document per line).
    #[arg(long)]
    pub watch: bool,
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
    /// Count dead letters by reason and by source, then list the newest, one line each.
    List {
        /// How many rows (the counts cover every matching letter).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only this reason (e.g. bad_ip, unknown_botnet_type).
        #[arg(long)]
        reason: Option<String>,
        /// Only this source: an endpoint name, or push:<relay>.
        #[arg(long)]
        source: Option<String>,
        /// Print each row's whole detail and raw record under it, instead of a truncated
        /// detail.
        #[arg(long)]
        detail: bool,
        /// JSON lines, one whole letter each, instead of the counts and the table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter whole.
    Show {
        /// Its id.
        id: i64,
    },
    /// List the batches the queue set aside after too many failed deliveries or because they
    /// no longer decode (the Redis dead-letter stream, or the embedded queue's dead table),
    /// newest first.
    Batches {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move dead batches back into the queue, where workers deliver them afresh (the store
    /// absorbs records it already holds).
    ReplayBatches {
        /// Only these entries, comma-separated, as the ENTRY column of `dlq batches` shows them
        /// (a row id such as `7` with the embedded queue, a stream id such as
        /// `1712345678901-0` with Redis); all when omitted.
        #[arg(long, value_delimiter = ',', value_name = "ENTRY,…")]
        ids: Vec<String>,
        /// Show what would be replayed without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-validate dead letters with the current configuration and queue those that now pass.
    Replay {
        /// Only this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Only this source: an endpoint name, or push:<relay>.
        #[arg(long)]
        source: Option<String>,
        /// Only these ids, comma-separated, as the ID column of `dlq list` shows them (e.g.
        /// `--ids 12,15,40`); all matching letters when omitted.
        #[arg(long, value_delimiter = ',', value_name = "ID,…")]
        ids: Vec<i64>,
        /// Change nothing: print, per letter, whether it would be stored or fail again and why
        /// (the same checks as a replay), then the totals.
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
    /// Directory for the demo's SQLite store and queue, kept afterwards (default: a fresh
    /// temporary directory, removed at the end unless --keep). Geodata is not looked for here
    /// but as `run` finds it: `[geo]` of --config, else <data_dir>/geo of that configuration
    /// (./botpipe-data/geo by default).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the temporary data directory and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Pull interval of the demo endpoints.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Records per pull.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u32,
    /// Print the summary as JSON (for scripts and CI); progress still goes to stderr.
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

/// `bench` subcommands.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// What `bench` measures.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// The store's write path (the configured workers as concurrent writers, the configured batch
    /// size) and, in the same run, the raw capacity of the same statements from a bare loop,
    /// each on a fresh database: records/s every 10% against table size, the ratio to raw,
    /// batch p50/p99, retries and deadlocks.
    Store(BenchRunArgs),
    /// Collector → pull → queue → enrich → store in one process, with an in-process collector,
    /// the configured queue, workers and geodata, into a fresh database: records/s every 10%,
    /// the ratio to `bench store` on the same workload (run first), CPU time and RSS (anonymous
    /// and file-backed).
    Pipeline(BenchPipelineArgs),
}

/// Geography for `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GeoSwitch {
    /// Enrich from the configured or installed geodata (an error if there is none).
    On,
    /// Every IP without geography.
    Off,
}

/// Flags of `bench store` (and of `bench pipeline`).
#[derive(Debug, Clone, Args)]
pub struct BenchRunArgs {
    /// Store server to measure on: sqlite://path, postgres://… or mysql://… (default: the
    /// configured store). A fresh database `botpipe_bench_<uuid>` is created on that server
    /// (for SQLite, a file in a new directory beside the given path) and dropped afterwards.
    /// With a URL given, the configured store password is not used: put it in the URL.
    #[arg(long, value_parser = StoreKind::from_url)]
    pub store: Option<StoreKind>,
    /// Records to write.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// Records per batch (default: the first configured endpoint's batch_size, else 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::config::MAX_BATCH_SIZE)))]
    pub batch_size: Option<u32>,
    /// Concurrent writers (`bench store`) or workers (`bench pipeline`) (default: `worker.count`).
    #[arg(long, env = "BOTPIPE_WORKERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// At most this many distinct IPs; once reached every record repeats one (default: no cap).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub distinct_ips: Option<u64>,
    /// Share of records (0 to 1) repeating an IP seen earlier, so node upserts hit existing rows.
    #[arg(long, default_value_t = 0.3, value_parser = ratio)]
    pub repeat_ratio: f64,
    /// Share of records (0 to 1) that are cleanup events; the rest are online.
    #[arg(long, default_value_t = 0.1, value_parser = ratio)]
    pub cleanup_ratio: f64,
    /// Botnet types, comma-separated, picked uniformly per record.
    #[arg(long, value_delimiter = ',', default_values = ["mozi", "ramnit"], value_parser = BotnetType::parse)]
    pub types: Vec<BotnetType>,
    /// Geography from the configured or installed geodata (default: on when geodata is found).
    #[arg(long, value_enum)]
    pub geo: Option<GeoSwitch>,
    /// Seed of the workload generator (the same seed writes the same records).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the scratch databases (and for `pipeline` the queue directory) and print where.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON document instead of tables (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `bench pipeline`.
#[derive(Debug, Clone, Args)]
pub struct BenchPipelineArgs {
    /// Workload, store and output flags, as for `bench store`.
    #[command(flatten)]
    pub run: BenchRunArgs,
    /// Do not run `bench store` on the same workload first (no ratio to it is reported).
    #[arg(long)]
    pub no_store_baseline: bool,
}

/// A share between 0 and 1.
fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_collector_takes_its_own_config_before_or_after_its_name() {
        for argv in [
            ["botpipe", "collector", "--config", "c.toml"],
            ["botpipe", "--config", "c.toml", "collector"],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Collector(args) = cli.command else {
                panic!("not the collector: {argv:?}");
            };
            assert_eq!(args.config, Some(PathBuf::from("c.toml")), "{argv:?}");
        }
        let run = Cli::try_parse_from(["botpipe", "run", "-c", "b.toml"]).unwrap();
        assert_eq!(run.config, Some(PathBuf::from("b.toml")));
    }
}
