//! The `/api/status` document, also printed by `botpipe status`.
//!
//! The store's numbers come from the latest [`SampledCounts`] (see [`crate::store::sampler`]),
//! never from counting during the request: they carry the time they were sampled, and are
//! `null` until the first sample rather than zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::probe;
use crate::pull::{EndpointStatus, StatusBoard};
use crate::queue::{Backpressure, Handoff, Queue};
use crate::store::sampler::SampledCounts;
use crate::store::Accuracy;

/// Everything an operator asks first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusSnapshot {
    /// Per endpoint: last pull, outcome, cursor, lag, drift.
    pub endpoints: Vec<EndpointStatus>,
    /// Queue depth and pending, or the error reading them.
    pub queue: DepthStatus,
    /// Spool depth, when a spool is configured.
    pub spool: Option<DepthStatus>,
    /// Whether pullers are paused by backpressure.
    pub backpressure_paused: bool,
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
    /// Why the reading failed.
    pub error: Option<String>,
}

/// Collects the status document from live components and the latest store sample.
pub async fn status_snapshot(
    board: &StatusBoard,
    handoff: &Handoff,
    store: SampledCounts,
    backpressure: &Backpressure,
) -> StatusSnapshot {
    let queue = match probe(handoff.queue().depth()).await {
        Ok(d) => DepthStatus {
            depth: Some(d.total),
            pending: Some(d.pending),
            error: None,
        },
        Err(e) => DepthStatus {
            error: Some(e),
            ..DepthStatus::default()
        },
    };
    let spool = match handoff.spool() {
        None => None,
        Some(s) => Some(match probe(s.depth()).await {
            Ok(d) => DepthStatus {
                depth: Some(d.total),
                pending: Some(d.pending),
                error: None,
            },
            Err(e) => DepthStatus {
                error: Some(e),
                ..DepthStatus::default()
            },
        }),
    };
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
        endpoints: board.snapshot(),
        queue,
        spool,
        backpressure_paused: !backpressure.allows_pull(),
        dead_letters,
        nodes,
        communications,
        store_sample,
        store_error: store.error,
    }
}
