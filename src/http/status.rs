//! The `/api/status` document, also printed by `botpipe status`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::probe;
use crate::pull::{EndpointStatus, StatusBoard};
use crate::queue::{Backpressure, Handoff, Queue};
use crate::store::{AnyStore, Store};

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
    /// Dead letters by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Nodes per type and status.
    pub nodes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Communication rows per type.
    pub communications: BTreeMap<String, u64>,
    /// Errors reading the store, if any.
    pub store_error: Option<String>,
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

/// Collects the status document from live components.
pub async fn status_snapshot(
    board: &StatusBoard,
    handoff: &Handoff,
    store: &AnyStore,
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
    let (counts, store_error) = match probe(store.counts()).await {
        Ok(c) => (c, None),
        Err(e) => (Default::default(), Some(e)),
    };
    StatusSnapshot {
        endpoints: board.snapshot(),
        queue,
        spool,
        backpressure_paused: !backpressure.allows_pull(),
        dead_letters: counts.dead_letters,
        nodes: counts.nodes,
        communications: counts.communications,
        store_error,
    }
}
