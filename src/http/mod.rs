//! The HTTP surface of `botpipe run`: `/health` (liveness), `/ready` (dependencies),
//! `/metrics` (Prometheus text) and `/api/status` (JSON). One axum router per process; handlers
//! only read shared state and never block on a dependency longer than [`PROBE_TIMEOUT`].

mod status;

pub use status::{status_snapshot, StatusSnapshot};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::enrich::AnyLookup;
use crate::pull::StatusBoard;
use crate::queue::{Backpressure, Handoff, Queue};
use crate::store::{AnyStore, Store};

/// Longest a readiness or status probe waits for one dependency.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Pull status per endpoint.
    pub board: StatusBoard,
    /// Queue and spool.
    pub handoff: Handoff,
    /// The store.
    pub store: AnyStore,
    /// Geo lookup, for readiness detail.
    pub lookup: AnyLookup,
    /// Backpressure gate.
    pub backpressure: Arc<Backpressure>,
    /// Prometheus renderer.
    pub prometheus: PrometheusHandle,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/status", get(api_status))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "service": "botpipe"}))
}

async fn probe<F, T, E>(f: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(PROBE_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

async fn ready(State(s): State<HttpState>) -> Response {
    let store = probe(s.store.ping()).await;
    let queue = probe(s.handoff.queue().depth()).await;
    let spool_ok = match s.handoff.spool() {
        Some(spool) => probe(spool.depth()).await.map(|_| ()),
        None => Ok(()),
    };
    // The queue may be down while the spool takes over: that is degraded, not unready.
    let queue_ready = queue.is_ok() || (s.handoff.spool().is_some() && spool_ok.is_ok());
    let ok = store.is_ok() && queue_ready;
    let detail = |r: &Result<(), String>| match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let body = json!({
        "ready": ok,
        "store": detail(&store),
        "queue": detail(&queue.map(|_| ())),
        "spool": detail(&spool_ok),
        "geodata": {"ok": true, "mode": s.lookup.describe()},
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.prometheus.render(),
    )
        .into_response()
}

async fn api_status(State(s): State<HttpState>) -> Json<StatusSnapshot> {
    Json(status_snapshot(&s.board, &s.handoff, &s.store, &s.backpressure).await)
}
