//! The `botpipe` subcommands: [`dispatch`] runs the one the command line names, and every
//! command fails with a [`CommandError`], whose [`CommandError::exit_code`] is the process exit
//! code (0 ok, 1 runtime failure, 2 configuration or usage).
//!
//! One file per command. A command reads its configuration, calls into the components and
//! prints; what is reusable stays in the component (the pipeline's wiring in [`crate::app`], the
//! demo collector and its summary in [`crate::demo`], the geodata report in [`crate::enrich`],
//! the status document in [`crate::http`]). Adding a command takes a variant of
//! [`crate::cli::Command`], a file here with its `run`, and its `mod` line and arm in
//! [`dispatch`].
//!
//! The operator commands ([`status`], [`validate`], [`dlq`]) run beside a `botpipe run` that may
//! be working on the same files, so they open the embedded queue with
//! [`crate::app::attach_queue`] (leases stay with the running workers) and never migrate or
//! create the store behind the operator's back.

pub mod bench;
pub mod collector;
pub mod demo;
pub mod dlq;
pub mod geoip;
pub mod migrate;
pub mod run;
pub mod status;
pub mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::AppError;
use crate::bench::BenchError;
use crate::cli::{Cli, Command};
use crate::collector::config::CollectorConfigError;
use crate::collector::CollectorError;
use crate::config::{ConfigError, QueueBackend, Settings, StoreKind};
use crate::demo::DemoError;
use crate::enrich::EnrichError;
use crate::queue::{HandoffError, QueueError};
use crate::store::StoreError;

/// How long an operator command waits for one dependency before reporting it unreachable.
pub const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// botpipe's configuration is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The collector's configuration is missing, unreadable or invalid.
    #[error(transparent)]
    CollectorConfig(#[from] CollectorConfigError),
    /// The pipeline could not be built or started.
    #[error(transparent)]
    App(#[from] AppError),
    /// The collector could not start or stopped with an error.
    #[error(transparent)]
    Collector(#[from] CollectorError),
    /// The demo could not run to the end.
    #[error(transparent)]
    Demo(#[from] DemoError),
    /// The demo ran, but the store holds something else than the generator expects.
    #[error("demo: stored rows differ from what the generator expects")]
    DemoMismatch,
    /// The store could not be read or written.
    #[error("store")]
    Store(#[from] StoreError),
    /// The queue could not be opened.
    #[error("opening the queue")]
    Queue(#[from] QueueError),
    /// Geodata could not be opened.
    #[error(transparent)]
    Geo(#[from] EnrichError),
    /// A command-line argument is not an IP address (`geoip`).
    #[error("{0:?} is not an IP address")]
    BadIp(String),
    /// `status --url` could not be reached.
    #[error("asking {url}")]
    Remote {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// `status --url` answered with an error status.
    #[error("asking {url}: HTTP {status}")]
    RemoteStatus {
        /// The URL asked.
        url: String,
        /// Its answer.
        status: reqwest::StatusCode,
    },
    /// `status --url` answered with something that is not a status document.
    #[error("asking {url}: not a status document")]
    NotStatus {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// `status` found no running botpipe, and reading the files failed too.
    #[error("{live}; reading the files instead")]
    StatusFromFiles {
        /// Why no running botpipe was asked or answered.
        live: String,
        /// Why the files could not be read. Boxed: the error is recursive.
        #[source]
        source: Box<CommandError>,
    },
    /// A file botpipe would read does not exist yet.
    #[error("{what} {} does not exist; has botpipe run with this configuration?", path.display())]
    Missing {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// Some connectivity checks of `validate` failed (each is printed).
    #[error("{0} connectivity check(s) failed")]
    ChecksFailed(usize),
    /// No dead letter has this id.
    #[error("no dead letter with id {0}")]
    NoSuchDeadLetter(i64),
    /// A replayed batch could not be made durable; nothing of it was deleted. Boxed: the
    /// hand-off error is large and rare.
    #[error("dlq replay")]
    Replay(#[source] Box<HandoffError>),
    /// A benchmark could not run to the end.
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// Output could not be encoded.
    #[error("encoding output")]
    Encode(#[from] serde_json::Error),
}

impl From<HandoffError> for CommandError {
    fn from(e: HandoffError) -> Self {
        Self::Replay(Box::new(e))
    }
}

impl CommandError {
    /// The process exit code: 2 for configuration and usage problems, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::CollectorConfig(_) | Self::BadIp(_) => 2,
            Self::App(e) if e.is_config() => 2,
            Self::Collector(e) if e.is_config() => 2,
            Self::Bench(e) if e.is_usage() => 2,
            _ => 1,
        }
    }
}

/// The default log level of `cli`'s command when `--log-level` was left at `info`: the demo and
/// the benchmarks print progress lines and a summary that per-batch info logs would drown (and
/// a benchmark's large batches and `DROP DATABASE` trip sqlx's slow-statement warning, which
/// says nothing there).
pub fn log_level(cli: &Cli) -> &str {
    match cli.command {
        Command::Demo(_) if cli.log_level == "info" => "warn",
        Command::Bench(_) if cli.log_level == "info" => "warn,sqlx::query=error",
        _ => cli.log_level.as_str(),
    }
}

/// Runs the command `cli` names.
///
/// # Errors
/// See [`CommandError`]; each command's `run` says which.
pub async fn dispatch(cli: Cli) -> Result<(), CommandError> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Run(args) => run::run(config, args).await,
        Command::Worker(args) => run::worker(config, args).await,
        Command::Collector(args) => collector::run(args).await,
        Command::Validate(args) => validate::run(config, args).await,
        Command::Status(args) => status::run(config, args).await,
        Command::Migrate => migrate::run(config).await,
        Command::Dlq(args) => dlq::run(config, args).await,
        Command::Demo(args) => demo::run(config, args).await,
        Command::Geoip(args) => geoip::run(config, args).await,
        Command::Bench(args) => bench::run(config, args).await,
    }
}

/// Fails with [`CommandError::Missing`] when the embedded store or queue file of `settings` is
/// not there, so a status or replay does not create empty databases somewhere unexpected.
///
/// # Errors
/// See above.
pub fn require_embedded_files(settings: &Settings) -> Result<(), CommandError> {
    if let StoreKind::Sqlite(path) = &settings.store.kind {
        require(path, "store file")?;
    }
    if let QueueBackend::Embedded { path } = &settings.queue.backend {
        require(path, "queue file")?;
    }
    Ok(())
}

fn require(path: &Path, what: &'static str) -> Result<(), CommandError> {
    if path.exists() {
        Ok(())
    } else {
        Err(CommandError::Missing {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// Runs `f` with [`DEPENDENCY_TIMEOUT`], turning errors and timeouts into the text a report line
/// shows.
async fn bounded<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(DEPENDENCY_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {DEPENDENCY_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn code(e: CommandError) -> u8 {
        e.exit_code()
    }

    #[test]
    fn configuration_and_usage_problems_exit_2_everything_else_1() {
        assert_eq!(code(ConfigError::Invalid(Vec::new()).into()), 2);
        assert_eq!(code(CollectorConfigError::Missing.into()), 2);
        assert_eq!(code(CommandError::BadIp("x".into())), 2);
        assert_eq!(code(CollectorError::EmptyKey.into()), 2);
        let secret = crate::config::SecretError::MissingEnv("K".into());
        let app = AppError::Secret {
            endpoint: "east".into(),
            source: secret,
        };
        assert_eq!(code(app.into()), 2);
        assert_eq!(code(CommandError::ChecksFailed(1)), 1);
        assert_eq!(code(CommandError::NoSuchDeadLetter(7)), 1);
        assert_eq!(code(CommandError::DemoMismatch), 1);
        assert_eq!(code(BenchError::NoGeodata.into()), 2);
        let stalled = BenchError::Stalled {
            stored: 1,
            total: 2,
            idle: Duration::from_secs(60),
        };
        assert_eq!(code(stalled.into()), 1);
        let bind = std::io::Error::other("busy");
        assert_eq!(code(AppError::PullRuntime(bind).into()), 1);
    }

    #[test]
    fn the_demo_logs_warnings_only_unless_told_otherwise() {
        let demo = Cli::parse_from(["botpipe", "demo"]);
        assert_eq!(log_level(&demo), "warn");
        let loud = Cli::parse_from(["botpipe", "--log-level", "debug", "demo"]);
        assert_eq!(log_level(&loud), "debug");
        let bench = Cli::parse_from(["botpipe", "bench", "store"]);
        assert_eq!(log_level(&bench), "warn,sqlx::query=error");
        let run = Cli::parse_from(["botpipe", "run"]);
        assert_eq!(log_level(&run), "info");
    }
}
