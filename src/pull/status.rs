//! The per-endpoint status board that pullers write and `/api/status` reads. Plain data behind a
//! std `RwLock` held only for a copy, never across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What `/api/status` shows for one endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointStatus {
    /// Endpoint name.
    pub name: String,
    /// When the last pull started.
    pub last_pull_at: Option<DateTime<Utc>>,
    /// Outcome label of the last pull.
    pub last_outcome: Option<String>,
    /// Last error message, if the last pull failed.
    pub last_error: Option<String>,
    /// Confirmed cursor.
    pub cursor: Option<u64>,
    /// Collector epoch, when known.
    pub epoch: Option<String>,
    /// `global_max_seq_id - cursor` when the collector reports it.
    pub lag: Option<u64>,
    /// Drift of the last pull start from its schedule, in seconds.
    pub last_drift_seconds: f64,
    /// Records pulled since start (valid and invalid).
    pub records_pulled: u64,
    /// Records dead-lettered at the pull stage since start.
    pub records_rejected: u64,
    /// Pulls since start.
    pub pulls: u64,
    /// Ticks skipped by backpressure since start.
    pub skipped_ticks: u64,
    /// Ticks missed because a pull overran since start.
    pub missed_ticks: u64,
    /// Batches that went to the spool since start.
    pub spooled_batches: u64,
    /// The process holding this endpoint's lease (Redis backend), as last seen; `None` with
    /// the embedded queue, or while nobody holds it.
    #[serde(default)]
    pub owner: Option<LeaseOwner>,
    /// Ticks skipped since start because this process's lease could not be confirmed in time
    /// (Redis unreachable).
    #[serde(default)]
    pub lease_lost_ticks: u64,
}

/// Who holds an endpoint's lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseOwner {
    /// Process name (`--name`, default `host-pid`).
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// When it acquired the lease.
    pub since: DateTime<Utc>,
    /// The lease's fencing token.
    pub token: u64,
    /// Whether that is the process answering.
    pub this_process: bool,
}

/// Shared board of every endpoint's status.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BTreeMap<String, EndpointStatus>>>,
}

impl StatusBoard {
    /// Applies `f` to the status of `endpoint`, creating it if needed.
    pub fn update(&self, endpoint: &str, f: impl FnOnce(&mut EndpointStatus)) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(endpoint.to_owned())
            .or_insert_with(|| EndpointStatus {
                name: endpoint.to_owned(),
                ..EndpointStatus::default()
            });
        f(entry);
    }

    /// A copy of every endpoint's status, sorted by name.
    pub fn snapshot(&self) -> Vec<EndpointStatus> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// A copy of one endpoint's status.
    pub fn get(&self, endpoint: &str) -> Option<EndpointStatus> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.get(endpoint).cloned()
    }
}
