//! The `/api/status` document, also printed by `botpipe status`.
//!
//! The store's numbers come from the latest [`SampledCounts`] (see [`crate::store::sampler`]),
//! never from counting during the request: they carry the time they were sampled, and are
//! `null` until the first sample rather than zero.
//!
//! The same document is made in two places: by a running botpipe ([`live_status`], `source`
//! `live`), and by `botpipe status` from the files when no botpipe answers (`source` `files`).
//! Read from the files, everything that lives only in a running process (its uptime, workers,
//! per-endpoint pulls, outcomes, lag, rates and drift) is `null`: unknown, never 0.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{check_geodata, probe, HttpState};
use crate::enrich::{geo_files, unix_now, AnyLookup};
use crate::pull::EndpointStatus;
use crate::queue::{Backpressure, DepthHistory, Handoff, Queue};
use crate::store::sampler::SampledCounts;
use crate::store::startup::{StartupState, StoreStartupWatch};
use crate::store::Accuracy;
use crate::worker::WorkerPoolView;

/// botpipe's version, as in `botpipe --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything an operator asks first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusSnapshot {
    /// Where this document comes from: a running botpipe (`live`) or its files (`files`).
    #[serde(default)]
    pub source: StatusSource,
    /// How `botpipe status` came to show this source: the URL it asked, or why it fell back to
    /// the files. Set by the command, `null` in `/api/status`.
    #[serde(default)]
    pub source_detail: Option<String>,
    /// Version of the botpipe that made this document.
    #[serde(default)]
    pub version: Option<String>,
    /// The process answering; `null` read from the files.
    #[serde(default)]
    pub process: Option<ProcessInfo>,
    /// Per endpoint: owner, last pull, outcome, failures, cursor, lag, records/s, drift.
    pub endpoints: Vec<EndpointStatus>,
    /// Queue depth and pending, or the error reading them.
    pub queue: DepthStatus,
    /// Spool depth, when a spool is configured.
    pub spool: Option<DepthStatus>,
    /// Whether pullers are paused by backpressure.
    pub backpressure_paused: bool,
    /// The process's workers; `null` read from the files.
    #[serde(default)]
    pub workers: Option<WorkersStatus>,
    /// Whether the store takes writes.
    #[serde(default)]
    pub store: Option<StoreState>,
    /// Geodata in use.
    #[serde(default)]
    pub geodata: Option<GeodataStatus>,
    /// Dead letters by reason (exact); `None` until the store was first sampled.
    pub dead_letters: Option<BTreeMap<String, u64>>,
    /// Nodes per type and status (exact); `None` until the store was first sampled.
    pub nodes: Option<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Communication rows per type, exact or estimated as `store_sample` says (a type whose
    /// count is unknown is absent); `None` until the store was first sampled.
    pub communications: Option<BTreeMap<String, u64>>,
    /// When the three maps above were sampled and how each number was obtained; `None` until
    /// the first sample.
    pub store_sample: Option<StoreSampleInfo>,
    /// Why the latest sample of the store failed, if it did (the numbers are then older).
    pub store_error: Option<String>,
}

/// Where a [`StatusSnapshot`] comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusSource {
    /// A running botpipe's `/api/status`.
    #[default]
    Live,
    /// The store and queue files (or servers) read by `botpipe status`, with no botpipe
    /// answering.
    Files,
}

impl StatusSource {
    /// `live` or `files`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Files => "files",
        }
    }
}

/// The running process that made a live document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessInfo {
    /// Its name (`--name`, default `host-pid`).
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// When it started running.
    pub started_at: DateTime<Utc>,
    /// Seconds since then.
    pub uptime_seconds: f64,
    /// Whether endpoints are shared through Redis leases (`owner` per endpoint); without, this
    /// process pulls every enabled endpoint.
    pub endpoint_leases: bool,
}

/// The workers of a running process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkersStatus {
    /// Workers configured (`[worker] count`).
    pub configured: usize,
    /// Workers running: 0 until the store has come up at start.
    pub running: usize,
    /// Workers holding a batch.
    pub busy: usize,
    /// Workers running and waiting for a batch.
    pub idle: usize,
}

/// Whether the store takes writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreState {
    /// `up`; `starting` (the first attempt at start is under way); `unavailable` (it cannot be
    /// reached or migrated: workers have not started); `down` (it was up, and the workers now
    /// find it unreachable and probe it).
    pub state: StoreHealth,
    /// Why, when it is not up.
    pub error: Option<String>,
}

/// The states of [`StoreState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreHealth {
    /// It takes writes.
    Up,
    /// The first attempt at start is under way.
    Starting,
    /// It cannot be reached or migrated.
    Unavailable,
    /// It was up; workers now find it unreachable.
    Down,
}

impl StoreHealth {
    /// The state's name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Starting => "starting",
            Self::Unavailable => "unavailable",
            Self::Down => "down",
        }
    }
}

/// Geodata in use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GeodataStatus {
    /// What enrichment uses (`databases: …`, or `disabled: …`); read from the files, the files
    /// that a botpipe started now would open.
    pub mode: String,
    /// Each open database with its build date; empty read from the files (not opened there).
    pub databases: Vec<GeoDatabaseStatus>,
    /// Geodata files in use that cannot be read, each with why.
    pub problems: Vec<String>,
}

/// One open geo database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GeoDatabaseStatus {
    /// File name.
    pub name: String,
    /// Layout or kind.
    pub kind: String,
    /// Build date, `YYYY-MM-DD`, when known.
    pub built: Option<String>,
    /// Whole days since the build, when known.
    pub age_days: Option<u64>,
    /// Older than `STALE_AFTER_DAYS`.
    pub stale: bool,
}

/// When and how the store's numbers in a [`StatusSnapshot`] were taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreSampleInfo {
    /// When the sample started.
    pub sampled_at: DateTime<Utc>,
    /// Seconds from `sampled_at` to this document.
    pub age_seconds: f64,
    /// How the node counts were obtained (always exact).
    pub nodes: Accuracy,
    /// How the dead-letter counts were obtained (always exact).
    pub dead_letters: Accuracy,
    /// How each type's communication rows were obtained.
    pub communications: BTreeMap<String, Accuracy>,
}

/// A depth reading.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DepthStatus {
    /// Entries not yet acked.
    pub depth: Option<u64>,
    /// Entries leased and not acked.
    pub pending: Option<u64>,
    /// How fast `depth` changed over the last minute, in batches per second (negative while
    /// it shrinks); `null` read from the files or in a process's first seconds.
    #[serde(default)]
    pub change_per_second: Option<f64>,
    /// Why the reading failed.
    pub error: Option<String>,
}

/// What a running botpipe knows about itself for the status, beyond the endpoint board.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    /// Its name, host and pid (as in its leases).
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// When it started running.
    pub started_at: DateTime<Utc>,
    /// The depth sampler's last minute, for the rates.
    pub depths: DepthHistory,
    /// The worker pool.
    pub workers: WorkerPoolView,
    /// Workers configured.
    pub worker_count: usize,
    /// Whether endpoints are shared through leases.
    pub endpoint_leases: bool,
}

/// Reads the depth of the queue and, when there is one, the spool.
async fn depths(handoff: &Handoff) -> (DepthStatus, Option<DepthStatus>) {
    let reading = |r: Result<crate::queue::QueueDepth, String>| match r {
        Ok(d) => DepthStatus {
            depth: Some(d.total),
            pending: Some(d.pending),
            ..DepthStatus::default()
        },
        Err(e) => DepthStatus {
            error: Some(e),
            ..DepthStatus::default()
        },
    };
    let queue = reading(probe(handoff.queue().depth()).await);
    let spool = match handoff.spool() {
        None => None,
        Some(s) => Some(reading(probe(s.depth()).await)),
    };
    (queue, spool)
}

/// Collects the status document from the endpoints, the queue and the latest store sample;
/// the process's own fields are left `null` for the caller to fill ([`live_status`]).
pub async fn status_snapshot(
    source: StatusSource,
    endpoints: Vec<EndpointStatus>,
    handoff: &Handoff,
    store: SampledCounts,
    backpressure: &Backpressure,
) -> StatusSnapshot {
    let (queue, spool) = depths(handoff).await;
    let (mut dead_letters, mut nodes, mut communications, mut store_sample) =
        (None, None, None, None);
    if let Some(taken) = store.latest {
        let age = Utc::now() - taken.at;
        store_sample = Some(StoreSampleInfo {
            sampled_at: taken.at,
            age_seconds: age.num_milliseconds().max(0) as f64 / 1000.0,
            nodes: Accuracy::Exact,
            dead_letters: Accuracy::Exact,
            communications: taken.counts.communications,
        });
        let counts = taken.counts.counts;
        dead_letters = Some(counts.dead_letters);
        nodes = Some(counts.nodes);
        communications = Some(counts.communications);
    }
    StatusSnapshot {
        source,
        source_detail: None,
        version: Some(VERSION.to_owned()),
        process: None,
        endpoints,
        queue,
        spool,
        backpressure_paused: !backpressure.allows_pull(),
        workers: None,
        store: None,
        geodata: None,
        dead_letters,
        nodes,
        communications,
        store_sample,
        store_error: store.error,
    }
}

/// The store's state in a running process: its start-up, then what the workers see.
pub fn live_store_state(startup: &StoreStartupWatch, workers: &WorkerPoolView) -> StoreState {
    let (state, error) = match startup.state() {
        StartupState::Starting => (StoreHealth::Starting, None),
        StartupState::Waiting(reason) => (StoreHealth::Unavailable, Some(reason)),
        StartupState::Up if workers.store_down() => (
            StoreHealth::Down,
            Some(
                "workers find it unreachable and probe it with backoff; batches wait in the queue"
                    .into(),
            ),
        ),
        StartupState::Up => (StoreHealth::Up, None),
    };
    StoreState { state, error }
}

/// Geodata as a running process uses it: the open databases, and files it can no longer read.
pub fn open_geodata(lookup: &AnyLookup, problems: Vec<String>) -> GeodataStatus {
    let now = unix_now();
    GeodataStatus {
        mode: lookup.describe(),
        databases: lookup
            .database_info()
            .iter()
            .map(|d| GeoDatabaseStatus {
                name: d.name.clone(),
                kind: d.kind.clone(),
                built: d.built.map(|b| crate::enrich::format_date(Some(b))),
                age_days: d.age_days(now),
                stale: d.is_stale(now),
            })
            .collect(),
        problems,
    }
}

/// `path: why` of each geodata file in `checks` that cannot be read.
pub fn geodata_problems(checks: &[super::GeoFileCheck]) -> Vec<String> {
    checks
        .iter()
        .filter_map(|c| {
            c.error
                .as_ref()
                .map(|e| format!("{}: {e}", c.path.display()))
        })
        .collect()
}

/// The whole document as a running botpipe serves it on `/api/status`.
pub async fn live_status(s: &HttpState) -> StatusSnapshot {
    let mut snap = status_snapshot(
        StatusSource::Live,
        s.board.snapshot(),
        &s.handoff,
        s.store_counts.latest(),
        &s.backpressure,
    )
    .await;
    let p = &s.process;
    snap.queue.change_per_second = p.depths.queue_rate();
    if let Some(spool) = snap.spool.as_mut() {
        spool.change_per_second = p.depths.spool_rate();
    }
    let now = Utc::now();
    snap.process = Some(ProcessInfo {
        name: p.name.clone(),
        host: p.host.clone(),
        pid: p.pid,
        started_at: p.started_at,
        uptime_seconds: (now - p.started_at).num_milliseconds().max(0) as f64 / 1000.0,
        endpoint_leases: p.endpoint_leases,
    });
    let (running, busy) = (p.workers.running(), p.workers.busy());
    snap.workers = Some(WorkersStatus {
        configured: p.worker_count,
        running,
        busy,
        idle: running.saturating_sub(busy),
    });
    snap.store = Some(live_store_state(&s.store_startup, &p.workers));
    let checks = check_geodata(&geo_files(&s.geo, &s.data_dir)).await;
    snap.geodata = Some(open_geodata(&s.lookup, geodata_problems(&checks)));
    snap
}
