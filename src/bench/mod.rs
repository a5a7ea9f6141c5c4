//! `botpipe bench`: how fast this deployment writes, measured on its own store server with its
//! own configuration, so an operator can size workers, batches and hardware.
//!
//! - [`store`] applies a generated [`workload`] to a fresh database with the configured number
//!   of concurrent writers calling [`Store::apply`](crate::store::Store::apply), the real write
//!   path, and then the same batches through a bare loop of the same statements
//!   ([`AnyStore::apply_raw`](crate::store::AnyStore::apply_raw)) into another fresh database:
//!   the store's rate as a share of what the statements themselves allow.
//! - [`pipeline`] serves the same workload from an in-process collector to the real
//!   [`App`](crate::app::App) (pull, queue, enrich, store) and measures it end to end, with its
//!   CPU time and memory.
//!
//! Both cut the run into segments ([`stats`]) so a rate that falls as the tables grow is
//! visible, read retries and deadlocks off the process's own metrics ([`probe`]), write only
//! into scratch databases and directories ([`scratch`]) and print through [`report`]. Parsing
//! the command line and choosing defaults from the configuration is the `bench` command's part.

pub mod pipeline;
pub mod probe;
pub mod report;
pub mod scratch;
pub mod stats;
pub mod store;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::enrich::{AnyLookup, Geo, Lookup};
use crate::queue::QueueError;
use crate::record::Record;
use crate::store::StoreError;

/// How often a running benchmark prints its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Why a benchmark could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `--geo on` was asked for, but no geodata is configured or installed.
    #[error(
        "--geo on: no geodata configured or installed (see docs/geodata.md), or use --geo off"
    )]
    NoGeodata,
    /// A scratch database could not be created or dropped.
    #[error("creating or dropping a scratch database")]
    Admin(#[source] Box<StoreError>),
    /// The store failed during the run.
    #[error("{phase}")]
    Store {
        /// What the benchmark was doing.
        phase: &'static str,
        /// The cause (boxed: a store error is large, and this one is rare).
        #[source]
        source: Box<StoreError>,
    },
    /// The store URL could not be parsed.
    #[error("store URL {url}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// The cause.
        #[source]
        source: url::ParseError,
    },
    /// A scratch directory could not be created or removed.
    #[error("scratch directory {}", path.display())]
    Scratch {
        /// Which.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The in-process collector could not bind its listener.
    #[error("binding the bench collector on 127.0.0.1")]
    Bind(#[source] std::io::Error),
    /// The pipeline could not be built or stopped with an error.
    #[error("bench pipeline")]
    App(#[from] AppError),
    /// The queue could not be sampled or its scratch keys removed.
    #[error("bench queue")]
    Queue(#[from] QueueError),
    /// Redis scratch keys could not be removed.
    #[error("removing the bench's Redis keys under {prefix}")]
    Redis {
        /// The key prefix.
        prefix: String,
        /// The cause.
        #[source]
        source: Box<redis::RedisError>,
    },
    /// A writer or the pipeline task panicked.
    #[error("bench task")]
    Task(#[source] tokio::task::JoinError),
    /// The pipeline stopped making progress.
    #[error("bench pipeline stalled at {stored} of {total} records stored (nothing for {idle:?})")]
    Stalled {
        /// Records stored.
        stored: u64,
        /// Records served.
        total: u64,
        /// How long nothing moved.
        idle: Duration,
    },
}

impl BenchError {
    fn admin(e: StoreError) -> Self {
        Self::Admin(Box::new(e))
    }

    /// A store failure while `phase`.
    pub fn store(phase: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |source| Self::Store {
            phase,
            source: Box::new(source),
        }
    }

    /// True for problems of the command line or the configuration (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::NoGeodata | Self::Url { .. })
    }
}

/// Where the workload's geography comes from.
#[derive(Debug, Clone)]
pub enum GeoSource {
    /// The configured or installed geodata.
    Lookup(AnyLookup),
    /// Made-up geography for every IP ([`workload::synthetic_geo`]), so the geography columns
    /// are written without geodata files (`benches/`).
    Synthetic,
    /// None: every IP unknown.
    Off,
}

impl GeoSource {
    /// Whether records get geography.
    pub fn is_on(&self) -> bool {
        matches!(
            self,
            Self::Lookup(AnyLookup::Databases(_)) | Self::Synthetic
        )
    }

    /// The geography of one record.
    pub fn geo(&self, r: &Record) -> Geo {
        match self {
            Self::Lookup(l) => l.lookup(r.ip.addr()).0,
            Self::Synthetic => workload::synthetic_geo(r.ip),
            Self::Off => Geo::unknown(),
        }
    }
}

/// A progress line on stderr every [`PROGRESS_INTERVAL`]:
/// `bench store: 340,000 / 1,000,000 records, 14,210 records/s`.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: u64,
    last: (Instant, u64),
}

impl Progress {
    /// Progress of `label` towards `total` records, starting now.
    pub fn new(label: &'static str, total: u64) -> Self {
        Self {
            label,
            total,
            last: (Instant::now(), 0),
        }
    }

    /// Prints the line if [`PROGRESS_INTERVAL`] passed since the last; the rate is that of the
    /// interval, so a slowdown shows at once.
    pub fn tick(&mut self, done: u64) {
        let (at, before) = self.last;
        let elapsed = at.elapsed();
        if elapsed < PROGRESS_INTERVAL {
            return;
        }
        let rate = done.saturating_sub(before) as f64 / elapsed.as_secs_f64();
        eprintln!(
            "{}: {} / {} records, {} records/s",
            self.label,
            report::thousands(done as f64),
            report::thousands(self.total as f64),
            report::thousands(rate)
        );
        self.last = (Instant::now(), done);
    }
}
