//! The HTTP surface of `botpipe run`: `/health` (liveness), `/ready` (dependencies),
//! `/metrics` (Prometheus text), `/api/status` (JSON) and `POST /api/data-push` (push ingest,
//! see [`crate::push`]). One axum router per process; handlers only read shared state and never
//! block on a dependency longer than [`PROBE_TIMEOUT`].
//!
//! `/api/status` serves the store's row counts as last sampled by a
//! [`StoreSampler`](crate::store::sampler::StoreSampler), never counting rows itself.
//!
//! `/ready` is 200 only when the store would take a write, the queue (or, with Redis, the spool)
//! answers, and every geodata file in use (configured or discovered) is readable; otherwise 503,
//! with the detail of each dependency in the JSON body either way. Until the store has come up
//! at start-up ([`StoreStartupWatch`]) it is reported with the reason start-up gave, without a
//! probe. The body also gives each geo database's build date and whether it is stale (older than
//! [`STALE_AFTER_DAYS`](crate::enrich::STALE_AFTER_DAYS) days), which does not make botpipe
//! unready: old geography is better than none.

mod status;

pub use status::{
    geodata_problems, live_status, live_store_state, open_geodata, status_snapshot, DepthStatus,
    GeoDatabaseStatus, GeodataStatus, ProcessInfo, ProcessStatus, StatusSnapshot, StatusSource,
    StoreHealth, StoreSampleInfo, StoreState, WorkersStatus, VERSION,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::config::GeoSettings;
use crate::enrich::{geo_files, unix_now, AnyLookup, GeoFiles};
use crate::pull::StatusBoard;
use crate::push::{PushIngest, Refusal};
use crate::queue::{Backpressure, Handoff, Queue};
use crate::store::sampler::StoreSamples;
use crate::store::startup::StoreStartupWatch;
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
    /// Whether the store has come up since start (answered and migrated).
    pub store_startup: StoreStartupWatch,
    /// The store's row counts as last sampled, for `/api/status`.
    pub store_counts: StoreSamples,
    /// Geo lookup, for readiness detail.
    pub lookup: AnyLookup,
    /// Backpressure gate.
    pub backpressure: Arc<Backpressure>,
    /// Prometheus renderer.
    pub prometheus: PrometheusHandle,
    /// `[geo]`, for readiness: the files in use are found by [`geo_files`].
    pub geo: GeoSettings,
    /// The data directory, where geodata is discovered when `[geo]` names no file.
    pub data_dir: PathBuf,
    /// Push ingest, when `[push]` is enabled.
    pub push: Option<Arc<PushIngest>>,
    /// The process itself, for `/api/status`: uptime, workers, depth rates.
    pub process: ProcessStatus,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/status", get(api_status))
        .route("/api/data-push", post(data_push))
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

/// One geodata file and whether it can be read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeoFileCheck {
    /// The file.
    pub path: PathBuf,
    /// Why it cannot be read, if so.
    pub error: Option<String>,
}

/// Checks that every geodata file in use exists, is a non-empty regular file and opens for
/// reading. Discovered-but-absent geodata is not an error: enrichment is then disabled.
pub async fn check_geodata(files: &GeoFiles) -> Vec<GeoFileCheck> {
    let mut out = Vec::new();
    for path in files.all() {
        out.push(GeoFileCheck {
            path: path.clone(),
            error: check_readable(path).await.err(),
        });
    }
    out
}

async fn check_readable(path: &Path) -> Result<(), String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("empty file".into());
    }
    tokio::fs::File::open(path)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn ready(State(s): State<HttpState>) -> Response {
    // A store still coming up is not probed again: start-up already says why it is not ready.
    let store = match s.store_startup.not_up_reason() {
        Some(reason) => Err(reason),
        None => probe(s.store.ping()).await,
    };
    let queue = probe(s.handoff.queue().depth()).await;
    let spool_ok = match s.handoff.spool() {
        Some(spool) => probe(spool.depth()).await.map(|_| ()),
        None => Ok(()),
    };
    let geo = check_geodata(&geo_files(&s.geo, &s.data_dir)).await;
    let geo_ok = geo.iter().all(|g| g.error.is_none());
    let now = unix_now();
    let databases: Vec<serde_json::Value> = s
        .lookup
        .database_info()
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "kind": d.kind,
                "built": crate::enrich::format_date(d.built),
                "build_timestamp": d.built,
                "age_days": d.age_days(now),
                "stale": d.is_stale(now),
            })
        })
        .collect();
    // The queue may be down while the spool takes over: that is degraded, not unready.
    let queue_ready = queue.is_ok() || (s.handoff.spool().is_some() && spool_ok.is_ok());
    let ok = store.is_ok() && queue_ready && geo_ok;
    let detail = |r: &Result<(), String>| match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let body = json!({
        "ready": ok,
        "store": detail(&store),
        "queue": detail(&queue.map(|_| ())),
        "spool": detail(&spool_ok),
        "geodata": {"ok": geo_ok, "mode": s.lookup.describe(), "files": geo, "databases": databases},
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn data_push(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    match &s.push {
        Some(push) => push.handle(&headers, body).await,
        None => {
            metrics::counter!(crate::telemetry::metrics::PUSH_REQUESTS_TOTAL, "outcome" => "disabled")
                .increment(1);
            Refusal::Disabled.into_response()
        }
    }
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::render_metrics(&s.prometheus),
    )
        .into_response()
}

async fn api_status(State(s): State<HttpState>) -> Json<StatusSnapshot> {
    Json(live_status(&s).await)
}
