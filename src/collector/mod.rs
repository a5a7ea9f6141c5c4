//! The collector: the C2-side service behind `botpipe collector`. It tails log files and reads
//! the cleanup tool's SQLite reports ([`sources`], [`tail`]), stores events as seq-numbered
//! records in a SQLite cache ([`cache`]) on a dedicated reading thread ([`ingest`]), and serves
//! them through the legacy-compatible pull API ([`api`]). Its configuration is its own file
//! ([`config`]).
//!
//! Boundary: this module uses only [`crate::record`] (IP and botnet type parsing),
//! [`crate::telemetry`], [`crate::transport`] (TLS and the accept loop) and the shared secret,
//! problem and listener types of [`crate::config`]; it never
//! imports the platform side (`pull`, `queue`, `store`, `enrich`), so it could become its own
//! binary without untangling.
//!
//! Lifecycle: [`Collector::build`] opens the cache, loads positions and binds the listener;
//! [`Collector::run_until_stopped`] serves until its token is cancelled, then stops the reading
//! thread between two transactions. Nothing in flight is lost: a chunk is either committed with
//! its position or read again on the next start.

pub mod api;
pub mod cache;
pub mod config;
pub mod ingest;
pub mod sources;
pub mod tail;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::api::ApiState;
use self::cache::{Cache, CacheError};
use self::config::CollectorSettings;
use self::ingest::Ingest;
use crate::config::ListenerLimits;
use crate::config::SecretError;

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The API key could not be read.
    #[error("collector API key: {0}")]
    Key(SecretError),
    /// The API key resolves to an empty value.
    #[error("collector API key: the API key is empty")]
    EmptyKey,
    /// The cache could not be opened or read at start.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The listen address could not be bound.
    #[error("binding the pull API to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("serving the pull API on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The reading thread could not start.
    #[error("starting the collector's reading thread: {0}")]
    Thread(std::io::Error),
    /// The reading thread ended on its own (a panic): the collector stops rather than serve
    /// a cache nobody fills.
    #[error("the collector's reading thread stopped unexpectedly")]
    IngestStopped,
    /// The listener's TLS files could not be used.
    #[error("collector TLS: {0}")]
    Tls(#[source] crate::transport::TlsError),
    /// A blocking start-up task could not complete.
    #[error("collector start-up task failed: {0}")]
    Startup(tokio::task::JoinError),
}

impl CollectorError {
    /// True for problems of the configuration (its API key) rather than of the host.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Key(_) | Self::EmptyKey | Self::Tls(_))
    }

    /// True when starting again later may succeed (a busy cache or port).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Cache(e) => e.is_retryable(),
            Self::Bind { .. } | Self::Serve { .. } => true,
            _ => false,
        }
    }
}

/// A collector ready to run: cache open, positions loaded, listener bound.
pub struct Collector {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    addr: SocketAddr,
    state: Arc<ApiState>,
    ingest: Ingest,
    wake_rx: Receiver<()>,
    stop: Arc<AtomicBool>,
}

/// Registers at 0 every collector counter whose label values are known at start (the
/// configured sources, the closed sets of outcomes, reasons and routes), so that queries and
/// alerts on them say 0 rather than "no data" (`docs/metrics.md`, "Collector").
fn register_metrics(settings: &CollectorSettings) {
    use crate::telemetry::metrics::{self as m, zero_counters, zero_histograms};
    let names: Vec<&str> = settings.sources.iter().map(|s| s.name.as_str()).collect();
    let outcomes = sources::Outcome::ALL.map(sources::Outcome::as_str);
    zero_counters(
        m::COLLECTOR_LINES_TOTAL,
        &[("source", names.as_slice()), ("outcome", &outcomes[..])],
    );
    zero_counters(
        m::COLLECTOR_SOURCE_ERRORS_TOTAL,
        &[("source", names.as_slice())],
    );
    for s in &settings.sources {
        // Files are read again when truncated or replaced; a table when its ids restart.
        let reasons: Vec<&str> = match s.kind {
            config::SourceKind::Lines { .. } => tail::Reset::ALL.map(tail::Reset::as_str).to_vec(),
            config::SourceKind::Table(_) => vec!["table_restarted"],
        };
        zero_counters(
            m::COLLECTOR_FILE_RESETS_TOTAL,
            &[
                ("source", &[s.name.as_str()][..]),
                ("reason", reasons.as_slice()),
            ],
        );
    }
    zero_counters(
        m::COLLECTOR_REQUESTS_TOTAL,
        &[("route", api::ROUTES), ("outcome", api::REQUEST_OUTCOMES)],
    );
    zero_counters(m::COLLECTOR_CONFIRMED_RECORDS_TOTAL, &[]);
    zero_counters(m::COLLECTOR_EXPIRED_RECORDS_TOTAL, &[]);
    zero_histograms(m::COLLECTOR_SCAN_DURATION_SECONDS, &[]);
}

impl Collector {
    /// Builds a collector from validated settings.
    ///
    /// # Errors
    /// When the key cannot be read, the cache cannot be opened or the address cannot be bound.
    pub async fn build(settings: CollectorSettings) -> Result<Self, CollectorError> {
        let key = settings.api_key.resolve().map_err(CollectorError::Key)?;
        if key.expose_secret().is_empty() {
            return Err(CollectorError::EmptyKey);
        }
        let key_digest = api::key_digest(key.expose_secret());
        drop(key);
        // The recorder first: counters registered before it would go nowhere.
        let _recorder = crate::telemetry::prometheus();
        register_metrics(&settings);
        let tls = match &settings.tls {
            Some(t) => Some(crate::transport::server_tls(t).map_err(CollectorError::Tls)?),
            None => None,
        };

        let paused = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (ingest_paused, ingest_stop) = (Arc::clone(&paused), Arc::clone(&stop));
        let opening = settings.clone();
        // The API connection first: it creates the file and the epoch if they are new.
        let (cache, ingest) = tokio::task::spawn_blocking(move || {
            let cache = Cache::open(&opening.cache_path)?;
            let ingest = Ingest::build(&opening, ingest_paused, ingest_stop)?;
            Ok::<_, CacheError>((cache, ingest))
        })
        .await
        .map_err(CollectorError::Startup)??;

        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| CollectorError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| CollectorError::Bind {
                addr: settings.listen,
                source,
            })?;
        // Capacity 1: a pending wake-up is enough, more would say nothing new.
        let (wake, wake_rx): (SyncSender<()>, Receiver<()>) = mpsc::sync_channel(1);
        let state = Arc::new(ApiState {
            epoch: cache.epoch().to_owned(),
            cache: Mutex::new(cache),
            key_digest,
            stats_require_key: settings.stats_require_key,
            health_require_key: settings.health_require_key,
            max_unpulled: settings.max_unpulled,
            reading_paused: paused,
            wake,
            prometheus: crate::telemetry::prometheus(),
        });
        Ok(Self {
            listener,
            tls,
            limits: settings.limits,
            addr,
            state,
            ingest,
            wake_rx,
            stop,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cache's epoch.
    pub fn epoch(&self) -> &str {
        &self.state.epoch
    }

    /// Reads and serves until `token` is cancelled, then stops both sides.
    ///
    /// # Errors
    /// When the server fails, or the reading thread stops on its own.
    pub async fn run_until_stopped(self, token: CancellationToken) -> Result<(), CollectorError> {
        let Self {
            listener,
            tls,
            limits,
            addr,
            state,
            ingest,
            wake_rx,
            stop,
        } = self;
        tracing::info!(%addr, epoch = %state.epoch, tls = tls.is_some(), "Collector listening.");

        // If the reading thread ends for any reason but a requested stop (a panic included),
        // this guard cancels the token so the whole collector stops instead of serving a cache
        // nobody fills.
        struct CancelOnDrop(CancellationToken);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.cancel();
            }
        }
        let guard = CancelOnDrop(token.clone());
        let thread = std::thread::Builder::new()
            .name("collector-ingest".into())
            .spawn(move || {
                let _guard = guard;
                ingest.run_until_stopped(wake_rx);
            })
            .map_err(CollectorError::Thread)?;

        let served = crate::transport::serve(
            listener,
            api::router(Arc::clone(&state)),
            limits,
            tls,
            token.clone(),
        )
        .await;

        let requested = token.is_cancelled() && !thread.is_finished();
        stop.store(true, Ordering::Relaxed);
        let _woken_or_already_pending = state.wake.try_send(());
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        // Closing the last connection checkpoints the WAL: file I/O, so not on the executor.
        let _closed = tokio::task::spawn_blocking(move || drop(state)).await;
        tracing::info!("Collector stopped.");
        served.map_err(|source| CollectorError::Serve { addr, source })?;
        match joined {
            Ok(Ok(())) if requested => Ok(()),
            _ => Err(CollectorError::IngestStopped),
        }
    }
}
