//! Wiring: [`App::build`] turns [`Settings`] into running parts (queue and spool, store,
//! lookup, pullers, workers, HTTP server); [`App::run_until_stopped`] runs them until the token
//! is cancelled and then shuts down in the order of design invariant 6:
//! pullers stop (a cycle in flight finishes its hand-off), workers finish their batch, the HTTP
//! server drains, all within the grace period.
//!
//! Only wiring lives here: the commands that load configuration and start an [`App`] (`run`,
//! `worker`, `demo`) are in [`crate::command`], which also maps [`AppError`] to an exit code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{QueueBackend, SecretError, Settings};
use crate::enrich::{AnyLookup, EnrichError};
use crate::http::{router, HttpState};
use crate::pull::scheduler::PullRuntime;
use crate::pull::{PullClient, Puller, StatusBoard};
use crate::push::{PushIngest, PushSetupError};
use crate::queue::{
    AnyQueue, Backpressure, DepthSampler, EmbeddedQueue, Handoff, QueueError, SpoolDrainer,
};
use crate::record::RecordContext;
use crate::store::sampler::{StoreSampler, STORE_SAMPLE_INTERVAL, STORE_SAMPLE_TIMEOUT};
use crate::store::{AnyStore, Store, StoreError};
use crate::transport::TlsError;
use crate::worker::Worker;

/// How often queue and spool depth are sampled for gauges and backpressure.
const DEPTH_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Why botpipe could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An endpoint's API key could not be resolved.
    #[error("endpoint {endpoint}: resolving its secret")]
    Secret {
        /// Which endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: SecretError,
    },
    /// The queue (or the spool) could not be opened.
    #[error("opening the queue")]
    Queue(#[from] QueueError),
    /// The store could not be opened.
    #[error("opening the store")]
    Store(#[from] StoreError),
    /// The store could not be migrated at start (`store.migrate_on_start`).
    #[error("migrating the store")]
    Migrate(#[source] StoreError),
    /// A configured or discovered geo database could not be opened.
    #[error("opening geodata")]
    Geo(#[from] EnrichError),
    /// The HTTP listener could not be bound.
    #[error("binding the HTTP listener on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP client could not be built (its TLS files included).
    #[error("endpoint {endpoint}: building the HTTP client")]
    Client {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: TlsError,
    },
    /// The HTTP listener's TLS files could not be used.
    #[error("http: TLS of the HTTP listener")]
    Tls(#[source] TlsError),
    /// A push secret could not be resolved.
    #[error("push ingest")]
    Push(#[from] PushSetupError),
    /// The pullers' runtime thread could not be started.
    #[error("starting the pull runtime thread")]
    PullRuntime(#[source] std::io::Error),
}

impl AppError {
    /// True for problems of the configuration (a secret that cannot be read) rather than of a
    /// dependency or the host.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Secret { .. } | Self::Push(_) | Self::Tls(_) | Self::Client { .. }
        )
    }
}

/// Which parts `run_until_stopped` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pullers, workers and HTTP (`botpipe run`).
    Full,
    /// Workers only (`botpipe worker`).
    WorkersOnly,
}

/// A built, not yet running botpipe.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    mode: Mode,
    handoff: Handoff,
    store: AnyStore,
    lookup: AnyLookup,
    board: StatusBoard,
    backpressure: Arc<Backpressure>,
    push: Option<Arc<PushIngest>>,
    listener: Option<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    http_addr: Option<SocketAddr>,
    store_sample_interval: Duration,
}

/// Opens the configured queue and, for Redis, the spool (see [`crate::queue::open`]).
///
/// # Errors
/// When a queue file cannot be opened or the Redis URL is unusable; a Redis that does not answer
/// is not an error (hand-offs go to the spool until it does).
pub async fn open_queue(
    settings: &Settings,
) -> Result<(AnyQueue, Option<EmbeddedQueue>), QueueError> {
    crate::queue::open(&settings.queue).await
}

/// Opens the configured queue beside a botpipe that may be running on it, for `status` and
/// `dlq replay`: the embedded queue keeps its leases (see [`EmbeddedQueue::attach`]).
///
/// # Errors
/// When the queue cannot be opened.
pub async fn attach_queue(
    settings: &Settings,
) -> Result<(AnyQueue, Option<EmbeddedQueue>), QueueError> {
    let q = &settings.queue;
    match &q.backend {
        QueueBackend::Embedded { path } => Ok((
            AnyQueue::Embedded(EmbeddedQueue::attach(
                path,
                q.lease_timeout,
                q.max_deliveries,
            )?),
            None,
        )),
        QueueBackend::Redis(_) => open_queue(settings).await,
    }
}

/// Opens the configured store (without migrating).
///
/// # Errors
/// When the database cannot be opened.
pub async fn open_store(settings: &Settings) -> Result<AnyStore, AppError> {
    Ok(crate::store::open(&settings.store).await?)
}

impl App {
    /// Opens every dependency, migrates the store (unless disabled) and binds the HTTP listener.
    ///
    /// # Errors
    /// When a dependency cannot be opened or the listener cannot be bound.
    pub async fn build(settings: Settings, mode: Mode) -> Result<Self, AppError> {
        let _ = crate::telemetry::prometheus();
        let (queue, spool) = open_queue(&settings).await?;
        let handoff = Handoff::new(queue, spool, settings.queue.handoff_deadline);
        let store = open_store(&settings).await?;
        if settings.store.migrate_on_start {
            store
                .migrate(&settings.allowed_types)
                .await
                .map_err(AppError::Migrate)?;
        }
        let lookup = crate::enrich::open(&settings.geo, &settings.data_dir)?;
        let tls = match (&settings.http_tls, mode) {
            (Some(t), Mode::Full) => Some(crate::transport::server_tls(t).map_err(AppError::Tls)?),
            _ => None,
        };
        let (listener, http_addr) = if mode == Mode::Full {
            let l = TcpListener::bind(settings.http_listen)
                .await
                .map_err(|source| AppError::Bind {
                    addr: settings.http_listen,
                    source,
                })?;
            let addr = l.local_addr().map_err(|source| AppError::Bind {
                addr: settings.http_listen,
                source,
            })?;
            (Some(l), Some(addr))
        } else {
            (None, None)
        };
        let q = &settings.queue;
        let backpressure = Arc::new(Backpressure::new(
            q.high_watermark,
            q.low_watermark,
            q.spool_max_batches,
        ));
        let push = if mode == Mode::Full {
            PushIngest::build(
                &settings.push,
                Arc::clone(&settings.allowed_types),
                handoff.clone(),
                Arc::clone(&backpressure),
            )?
            .map(Arc::new)
        } else {
            None
        };
        Ok(Self {
            settings,
            mode,
            handoff,
            store,
            lookup,
            board: StatusBoard::default(),
            backpressure,
            push,
            listener,
            tls,
            http_addr,
            store_sample_interval: STORE_SAMPLE_INTERVAL,
        })
    }

    /// Samples the store's row counts for `/api/status` every `every` instead of
    /// [`STORE_SAMPLE_INTERVAL`] (tests that wait for numbers to show).
    #[must_use]
    pub fn sample_store_every(mut self, every: Duration) -> Self {
        self.store_sample_interval = every;
        self
    }

    /// The bound HTTP address (port 0 resolved), in `Full` mode.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The store (for summaries and tests).
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// Queue and spool.
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// The pull status board.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Runs until `token` is cancelled, then shuts down within `grace`.
    ///
    /// # Errors
    /// When an endpoint's key or client cannot be set up.
    pub async fn run_until_stopped(
        self,
        token: CancellationToken,
        grace: Duration,
    ) -> Result<(), AppError> {
        let pull_token = CancellationToken::new();
        let work_token = CancellationToken::new();
        let aux_token = CancellationToken::new();
        let pullers = TaskTracker::new();
        // Only where there are pullers. Dropped at the end of this function (also on an early
        // error return), after the workers and auxiliaries stopped.
        let pull_runtime = match self.mode {
            Mode::Full => Some(PullRuntime::start().map_err(AppError::PullRuntime)?),
            Mode::WorkersOnly => None,
        };
        let workers = TaskTracker::new();
        let aux = TaskTracker::new();

        let geo_watch = self.lookup.clone();
        let geo_token = aux_token.clone();
        aux.spawn(async move { geo_watch.watch_until_stopped(geo_token).await });
        aux.spawn(
            DepthSampler::new(
                self.handoff.queue().clone(),
                self.handoff.spool().cloned(),
                Arc::clone(&self.backpressure),
                DEPTH_SAMPLE_INTERVAL,
            )
            .run_until_stopped(aux_token.clone()),
        );
        if let Some(spool) = self.handoff.spool() {
            // Stopped with the auxiliaries, after the workers: a step in flight finishes first.
            aux.spawn(
                SpoolDrainer::new(spool.clone(), self.handoff.queue().clone())
                    .run_until_stopped(aux_token.clone()),
            );
        }

        if self.mode == Mode::Full && self.settings.enabled_endpoints().next().is_none() {
            tracing::warn!("No enabled endpoints are configured: nothing will be pulled. Add [endpoints.<name>] sections (see botpipe.example.toml), or try `botpipe demo`.");
        }
        if let Some(pull_runtime) = &pull_runtime {
            // The pullers' Redis connections are dialled, and so driven, by the pull runtime;
            // everything else here (workers, push, drainer, depth sampler, the cursor loads
            // below) keeps the main runtime's. Neither runtime then waits on the other's
            // threads, and dropping the pull runtime leaves the workers' connections alone.
            let pull_handoff = self.handoff.with_own_link();
            for e in self.settings.enabled_endpoints() {
                let key = match &e.api_key {
                    Some(src) => Some(src.resolve().map_err(|source| AppError::Secret {
                        endpoint: e.name.clone(),
                        source,
                    })?),
                    None => None,
                };
                let client = PullClient::new(e, key).map_err(|source| AppError::Client {
                    endpoint: e.name.clone(),
                    source,
                })?;
                let cursor = match self.handoff.load_cursor(&e.name).await {
                    Ok(c) => c,
                    Err(err) => {
                        tracing::warn!(endpoint = %e.name, error = %err, "Could not load the cursor; starting without one (the collector returns only unconfirmed records).");
                        None
                    }
                };
                let ctx = RecordContext {
                    source: e.name.clone(),
                    tz: e.timezone,
                    allowed: Arc::clone(&self.settings.allowed_types),
                };
                let puller = Puller::new(
                    client,
                    ctx,
                    pull_handoff.clone(),
                    cursor,
                    e.batch_size,
                    self.board.clone(),
                );
                pullers.spawn_on(
                    crate::pull::scheduler::run_until_stopped(
                        puller,
                        e.interval,
                        Arc::clone(&self.backpressure),
                        self.board.clone(),
                        pull_token.clone(),
                    ),
                    pull_runtime.handle(),
                );
            }
        }

        let base = Worker::new(
            format!("{}-w0", consumer_prefix()),
            self.handoff.queue().clone(),
            self.store.clone(),
            self.lookup.clone(),
        );
        for i in 0..self.settings.worker_count {
            let w = base.sibling(format!("{}-w{i}", consumer_prefix()));
            workers.spawn(w.run_until_stopped(work_token.clone()));
        }

        if let Some(listener) = self.listener {
            // Only where there is an `/api/status` to serve the counts.
            let (sampler, store_counts) = StoreSampler::new(
                self.store.clone(),
                self.store_sample_interval,
                STORE_SAMPLE_TIMEOUT,
            );
            aux.spawn(sampler.run_until_stopped(aux_token.clone()));
            let state = HttpState {
                board: self.board.clone(),
                handoff: self.handoff.clone(),
                store: self.store.clone(),
                store_counts,
                lookup: self.lookup.clone(),
                backpressure: Arc::clone(&self.backpressure),
                prometheus: crate::telemetry::prometheus(),
                geo: self.settings.geo.clone(),
                push: self.push.clone(),
            };
            let http_token = aux_token.clone();
            if let Some(addr) = self.http_addr {
                tracing::info!(
                    %addr,
                    push = self.push.is_some(),
                    tls = self.tls.is_some(),
                    "HTTP server listening."
                );
            }
            let (limits, tls) = (self.settings.http_limits, self.tls);
            aux.spawn(async move {
                let serve =
                    crate::transport::serve(listener, router(state), limits, tls, http_token);
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTP server failed.");
                }
            });
        }
        tracing::info!(
            endpoints = self.settings.enabled_endpoints().count(),
            workers = self.settings.worker_count,
            store = ?self.settings.store.kind,
            "botpipe running."
        );

        token.cancelled().await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "Shutting down: stopping pullers."
        );
        let deadline = tokio::time::Instant::now() + grace;
        pullers.close();
        workers.close();
        aux.close();
        pull_token.cancel();
        if tokio::time::timeout_at(deadline, pullers.wait())
            .await
            .is_err()
        {
            tracing::warn!("Pullers did not stop within the grace period; unconfirmed batches will be pulled again.");
        }
        work_token.cancel();
        if tokio::time::timeout_at(deadline, workers.wait())
            .await
            .is_err()
        {
            tracing::warn!("Workers did not finish within the grace period; their batches will be redelivered.");
        }
        aux_token.cancel();
        let _ = tokio::time::timeout_at(deadline, aux.wait()).await;
        drop(pull_runtime);
        tracing::info!("botpipe stopped.");
        Ok(())
    }
}

/// A consumer-name prefix unique to this process.
fn consumer_prefix() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "botpipe".into());
    format!("{host}-{}", std::process::id())
}
