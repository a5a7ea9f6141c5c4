//! Wiring: [`App::build`] turns [`Settings`] into running parts (queue and spool, store,
//! lookup, pullers, workers, HTTP server); [`App::run_until_stopped`] runs them until the token
//! is cancelled and then shuts down in the order of design invariant 6:
//! pullers stop (a cycle in flight finishes its hand-off), workers finish their batch, the HTTP
//! server drains, all within the grace period.
//!
//! Nothing but the workers waits on the store: building opens it without connecting (network
//! stores connect lazily), and the store is pinged and migrated by a [`StoreStartup`] in the
//! background while HTTP serves and the pullers fill the queue; the workers start when it is
//! up. A store that hangs or refuses at start-up thus leaves botpipe running, unready.
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
use crate::http::{router, HttpState, ProcessStatus};
use crate::pull::scheduler::PullRuntime;
use crate::pull::{EndpointOwnership, LeaseKeeper, PullClient, Puller, StatusBoard};
use crate::push::{PushIngest, PushSetupError};
use crate::queue::{
    AnyQueue, Backpressure, DepthHistory, DepthSampler, EmbeddedQueue, Handoff, Holder, QueueError,
    SpoolDrainer,
};
use crate::record::RecordContext;
use crate::store::sampler::{StoreSampler, STORE_SAMPLE_INTERVAL, STORE_SAMPLE_TIMEOUT};
use crate::store::startup::StoreStartup;
use crate::store::{AnyStore, StoreError};
use crate::transport::TlsError;
use crate::worker::Worker;

/// How often queue and spool depth are sampled for gauges and backpressure.
const DEPTH_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How long HTTP waits for the store's first start-up attempt before serving anyway: a store
/// that answers is then ready from the first request, one that hangs delays HTTP this long.
const FIRST_STORE_ANSWER_WAIT: Duration = Duration::from_secs(2);

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
    /// Another `botpipe run` already works on this embedded queue.
    #[error("{} is locked by another botpipe run (pid {holder}); the embedded queue serves one process. Stop the other one, give this one another data_dir, or share the endpoints through queue.backend = \"redis\"", path.display())]
    Locked {
        /// The lock file.
        path: std::path::PathBuf,
        /// The pid written by the process holding it, as far as it can be read.
        holder: String,
    },
    /// The lock file of the embedded queue could not be created or locked.
    #[error("locking {}", path.display())]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
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
    /// This process's name for leases, status and the collectors' logs (`--name`).
    name: Option<String>,
    /// The exclusive lock on the embedded queue, held while this process runs.
    _data_lock: Option<std::fs::File>,
}

/// Takes the exclusive lock beside the embedded queue file (`<queue>.lock`), so a second
/// `botpipe run` on the same files refuses to start instead of pulling every endpoint twice.
/// The OS drops the lock when the process exits, `kill -9` included.
///
/// # Errors
/// [`AppError::Locked`] when another process holds it.
pub fn lock_embedded_queue(queue_path: &std::path::Path) -> Result<std::fs::File, AppError> {
    use std::io::{Read, Seek, Write};
    let mut name = queue_path.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| AppError::Lock {
            path: path.clone(),
            source,
        })?;
    }
    let lock_err = |source| AppError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _unreadable = file.read_to_string(&mut holder);
            let holder = holder.trim().to_owned();
            return Err(AppError::Locked {
                path,
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    // The pid is for the error message of the next process only; failing to write it is fine.
    let _pid_best_effort = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    Ok(file)
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

/// How long start-up waits for the store to say its time zones before going on without.
const TIME_ZONES_TIMEOUT: Duration = Duration::from_secs(5);

/// Logs the zones of the store's times, and a warning for each way they disagree with the
/// sources' zones (`docs/schema.md`, "Timestamps").
pub async fn log_time_zones(store: &AnyStore, sources: &[(String, chrono_tz::Tz)]) {
    match tokio::time::timeout(TIME_ZONES_TIMEOUT, store.time_zones()).await {
        Ok(Ok(zones)) => {
            tracing::info!(zones = %zones, "Store time zones.");
            for warning in zones.warnings(sources) {
                tracing::warn!("Time zones: {warning}.");
            }
        }
        Ok(Err(error)) => {
            tracing::warn!(error = %crate::telemetry::Chain(&error), "Could not read the store's time zones.");
        }
        Err(_) => tracing::warn!(
            "The store did not say its time zones within {TIME_ZONES_TIMEOUT:?}; going on."
        ),
    }
}

/// Opens the configured store (without migrating). A network store connects lazily, so a
/// server that is down is not an error here.
///
/// # Errors
/// When the password cannot be read, the URL is invalid or the SQLite file cannot be opened.
pub async fn open_store(settings: &Settings) -> Result<AnyStore, AppError> {
    Ok(crate::store::open(&settings.store).await?)
}

impl App {
    /// Opens every dependency and binds the HTTP listener. Does not wait for a network store to
    /// answer: it is pinged and migrated once running (see the module doc).
    ///
    /// # Errors
    /// When a dependency cannot be opened or the listener cannot be bound.
    pub async fn build(settings: Settings, mode: Mode) -> Result<Self, AppError> {
        let _ = crate::telemetry::prometheus();
        register_metrics(&settings, mode);
        let data_lock = match (&settings.queue.backend, mode) {
            (QueueBackend::Embedded { path }, Mode::Full) => Some(lock_embedded_queue(path)?),
            _ => None,
        };
        let (queue, spool) = open_queue(&settings).await?;
        let handoff = Handoff::new(queue, spool, settings.queue.handoff_deadline);
        let store = open_store(&settings).await?;
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
            name: None,
            _data_lock: data_lock,
        })
    }

    /// Names this process (`--name`); default `host-pid`.
    #[must_use]
    pub fn with_name(mut self, name: Option<String>) -> Self {
        self.name = name;
        self
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
        let started_at = chrono::Utc::now();
        let pull_token = CancellationToken::new();
        let work_token = CancellationToken::new();
        let aux_token = CancellationToken::new();
        let keeper_token = CancellationToken::new();
        let pullers = TaskTracker::new();
        let keeper = TaskTracker::new();
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
        let depths = DepthHistory::default();
        aux.spawn(
            DepthSampler::new(
                self.handoff.queue().clone(),
                self.handoff.spool().cloned(),
                Arc::clone(&self.backpressure),
                DEPTH_SAMPLE_INTERVAL,
            )
            .with_history(depths.clone())
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
            let holder = Holder::this_process(self.name.clone());
            // Several processes may share a Redis: each endpoint is pulled by its lease holder
            // (on by default with Redis; `queue.endpoint_leases = false` turns it off). These
            // leases use the pullers' link: only the pre-confirm check runs on them.
            let leases = match pull_handoff.queue() {
                AnyQueue::Redis(q) if self.settings.queue.endpoint_leases => {
                    Some(q.endpoint_leases(self.settings.queue.lease_ttl, holder.clone()))
                }
                _ => None,
            };
            let mut owned = Vec::new();
            let intervals: Vec<Duration> = self
                .settings
                .enabled_endpoints()
                .map(|e| e.interval)
                .collect();
            let phases = crate::pull::scheduler::spread_phases(&intervals);
            for (e, phase) in self.settings.enabled_endpoints().zip(phases) {
                let key = match &e.api_key {
                    Some(src) => Some(src.resolve().map_err(|source| AppError::Secret {
                        endpoint: e.name.clone(),
                        source,
                    })?),
                    None => None,
                };
                let client = PullClient::new(e, key)
                    .map_err(|source| AppError::Client {
                        endpoint: e.name.clone(),
                        source,
                    })?
                    .with_process_name(&holder.name);
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
                let mut puller = Puller::new(
                    client,
                    ctx,
                    pull_handoff
                        .with_deadline(self.settings.queue.handoff_deadline_for(e.interval)),
                    cursor,
                    e.batch_size,
                    self.board.clone(),
                );
                if let Some(leases) = &leases {
                    let ownership = EndpointOwnership::new(
                        &e.name,
                        leases.clone(),
                        e.timeout,
                        self.settings.queue.handoff_deadline,
                        self.board.clone(),
                    );
                    owned.push(ownership.clone());
                    puller = puller.with_ownership(ownership);
                }
                pullers.spawn_on(
                    crate::pull::scheduler::run_until_stopped(
                        puller,
                        e.interval,
                        phase,
                        Arc::clone(&self.backpressure),
                        self.board.clone(),
                        pull_token.clone(),
                    ),
                    pull_runtime.handle(),
                );
            }
            if let Some(leases) = leases {
                tracing::info!(process = %holder.name, ttl_ms = self.settings.queue.lease_ttl.as_millis() as u64, "Endpoints are shared through Redis leases: this process pulls those it holds.");
                // The keeper runs off the pull path: on this (main) runtime, on a Redis link of
                // its own, so that a round waiting on a hanging or slow Redis (up to the command
                // timeout) holds neither the pull thread nor the pullers' connection, and its
                // failed dials do not put the pullers' link into its fail-fast window.
                keeper.spawn(
                    LeaseKeeper::new(leases.with_own_link(), owned)
                        .run_until_stopped(keeper_token.clone()),
                );
            }
        }

        let base = Worker::new(
            format!("{}-w0", consumer_prefix()),
            self.handoff.queue().clone(),
            self.store.clone(),
            self.lookup.clone(),
        );
        let worker_pool = base.pool_view();
        let (startup, mut store_startup) = StoreStartup::new(
            self.store.clone(),
            Arc::clone(&self.settings.allowed_types),
            self.settings.store.migrate_on_start,
        );
        // The workers start only once the store is up; until then their batches wait in the
        // queue, leased by nobody. Spawned on the workers' tracker, so that shutdown waits for
        // the start-up like for a worker, and workers it spawns are tracked before it ends.
        let worker_count = self.settings.worker_count;
        let worker_tracker = workers.clone();
        let worker_token = work_token.clone();
        let zone_store = self.store.clone();
        let time_sources = self.settings.time_sources();
        workers.spawn(async move {
            if startup.run_until_up(worker_token.clone()).await {
                log_time_zones(&zone_store, &time_sources).await;
                for i in 0..worker_count {
                    let w = base.sibling(format!("{}-w{i}", consumer_prefix()));
                    worker_tracker.spawn(w.run_until_stopped(worker_token.clone()));
                }
            }
        });
        if self.listener.is_some() {
            store_startup.first_answer(FIRST_STORE_ANSWER_WAIT).await;
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
                store_startup: store_startup.clone(),
                store_counts,
                lookup: self.lookup.clone(),
                backpressure: Arc::clone(&self.backpressure),
                prometheus: crate::telemetry::prometheus(),
                geo: self.settings.geo.clone(),
                data_dir: self.settings.data_dir.clone(),
                push: self.push.clone(),
                process: {
                    let me = Holder::this_process(self.name.clone());
                    ProcessStatus {
                        name: me.name,
                        host: me.host,
                        pid: me.pid,
                        started_at,
                        depths,
                        workers: worker_pool,
                        worker_count: self.settings.worker_count as usize,
                        endpoint_leases: self.settings.queue.endpoint_leases
                            && matches!(self.handoff.queue(), AnyQueue::Redis(_)),
                    }
                },
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
        // Leases outlive the pullers (a cycle in flight still checks its lease), then are
        // released so the other processes take the endpoints at once.
        keeper.close();
        keeper_token.cancel();
        if tokio::time::timeout_at(deadline, keeper.wait())
            .await
            .is_err()
        {
            tracing::warn!("Endpoint leases were not released within the grace period; they expire by themselves.");
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

/// Registers at 0 every counter whose label values are known at start (the enabled endpoints
/// from the configuration, the closed sets of outcomes and reasons), so that queries and alerts
/// on them say 0 rather than "no data" until the first event (`docs/metrics.md`).
fn register_metrics(settings: &Settings, mode: Mode) {
    use crate::record::RejectReason;
    use crate::telemetry::metrics::{zero_counters, DEAD_LETTERS_TOTAL};
    let reasons = RejectReason::ALL.map(RejectReason::as_str);
    zero_counters(DEAD_LETTERS_TOTAL, &[("reason", &reasons[..])]);
    crate::worker::register_metrics();
    crate::queue::register_metrics(mode == Mode::Full);
    if mode == Mode::Full {
        for e in settings.enabled_endpoints() {
            crate::pull::register_metrics(&e.name);
        }
        crate::push::register_metrics();
    }
}

/// A consumer-name prefix unique to this process.
fn consumer_prefix() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "botpipe".into());
    format!("{host}-{}", std::process::id())
}
