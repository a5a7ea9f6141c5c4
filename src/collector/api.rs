//! The pull API (`docs/pull-protocol.md`), wire-compatible with the legacy C2 data server:
//! `/api/pull` (`/pull`), `/api/confirm` (`/confirm`), `/api/stats` (`/stats`), `/health`
//! (`/api/health`), plus `/metrics`.
//!
//! Responses carry every legacy field (`data` and its `records` copy, `_cache_id`, `_seq_id`,
//! `date`, `log_hour`, `max_seq_id`, `global_max_seq_id`, `stats`) and the extensions `epoch`
//! and `up_to_seq`. Unlike the legacy servers, bad parameters get a 400 and an unavailable cache
//! a 503 (its cause logged once, never sent). Keys are compared in constant time, as SHA-256
//! digests so not even their length leaks, and never logged. Every cache call, and the JSON
//! encoding of a pull, runs on the blocking pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics::counter;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::cache::{Cache, CacheError, CacheStats, CachedRecord, ConfirmScope, PullFilter};
use crate::telemetry::metrics as m;

/// Records per pull when the puller gives no `limit`.
pub const DEFAULT_PULL_LIMIT: u32 = 1000;
/// Largest `limit` honoured; larger values are clamped.
pub const MAX_PULL_LIMIT: u32 = 5000;
/// The `service` name legacy health checks expect.
pub const SERVICE_NAME: &str = "c2-data-server";
/// Header carrying the key (the alternative is `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";

/// What the handlers share.
pub struct ApiState {
    /// The API's cache connection, used on the blocking pool only.
    pub cache: Mutex<Cache>,
    /// The epoch, for responses.
    pub epoch: String,
    /// SHA-256 of the API key.
    pub key_digest: [u8; 32],
    /// `/api/stats` requires the key.
    pub stats_require_key: bool,
    /// `/health` and `/metrics` require the key.
    pub health_require_key: bool,
    /// Unpulled rows at which reading pauses, for `cache_full`.
    pub max_unpulled: u64,
    /// Set by the ingest thread while reading is paused.
    pub reading_paused: Arc<AtomicBool>,
    /// Wakes the ingest thread after a confirm, so a paused reader resumes at once.
    pub wake: SyncSender<()>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
}

impl ApiState {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // With a Bearer header, only that header counts, as with the legacy servers.
        let presented = match bearer {
            Some(token) => Some(token.as_bytes()),
            None => headers.get(API_KEY_HEADER).map(HeaderValue::as_bytes),
        };
        presented.is_some_and(|k| {
            let digest: [u8; 32] = Sha256::digest(k).into();
            bool::from(digest.ct_eq(&self.key_digest))
        })
    }
}

/// SHA-256 of a key, the form [`ApiState`] keeps.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The router with every route and alias.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/pull", get(pull))
        .route("/pull", get(pull))
        .route("/api/confirm", post(confirm))
        .route("/confirm", post(confirm))
        .route("/api/stats", get(stats))
        .route("/stats", get(stats))
        .route("/health", get(health))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// A failed request, answered as `docs/pull-protocol.md` says.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    BadRequest(String),
    Unavailable(String),
}

impl ApiError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::BadRequest(_) => "bad_request",
            Self::Unavailable(_) => "unavailable",
        }
    }

    fn from_cache(route: &'static str, e: &CacheError) -> Self {
        tracing::error!(route, error = %e, "Collector cache unavailable.");
        Self::Unavailable("the collector cache is unavailable".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "Unauthorized"})),
            )
                .into_response(),
            Self::BadRequest(msg) => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"success": false, "error": msg, "error_type": "bad_request"})),
            )
                .into_response(),
            Self::Unavailable(msg) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"success": false, "error": msg, "error_type": "unavailable"})),
            )
                .into_response(),
        }
    }
}

/// Every `route` of `botpipe_collector_requests_total`.
pub const ROUTES: &[&str] = &["pull", "confirm", "stats", "health", "metrics"];
/// Every `outcome` of `botpipe_collector_requests_total`: `ok` and [`ApiError::outcome`]'s.
pub const REQUEST_OUTCOMES: &[&str] = &["ok", "unauthorized", "bad_request", "unavailable"];

/// Counts the request and turns the result into a response.
fn finish(route: &'static str, result: Result<Response, ApiError>) -> Response {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    counter!(m::COLLECTOR_REQUESTS_TOTAL, "route" => route, "outcome" => outcome).increment(1);
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Runs `f` with the API's cache connection on the blocking pool.
async fn with_cache<T, F>(state: &Arc<ApiState>, route: &'static str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut Cache) -> Result<T, CacheError> + Send + 'static,
{
    let state = Arc::clone(state);
    let joined = tokio::task::spawn_blocking(move || {
        let mut cache = state.cache.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut cache)
    })
    .await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::from_cache(route, &e)),
        Err(e) => {
            tracing::error!(route, error = %e, "Collector cache task failed.");
            Err(ApiError::Unavailable(
                "the collector cache is unavailable".into(),
            ))
        }
    }
}

/// Query parameters of a pull, as text: each is checked by hand to answer a precise 400.
#[derive(Debug, Default, Deserialize)]
struct PullParams {
    limit: Option<String>,
    count: Option<String>,
    since_seq: Option<String>,
    since_ts: Option<String>,
    since: Option<String>,
    confirm: Option<String>,
}

/// A validated pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PullRequest {
    limit: u32,
    filter: PullFilter,
    confirm: bool,
}

fn parse_pull(p: &PullParams) -> Result<PullRequest, String> {
    let limit = match p.limit.as_deref().or(p.count.as_deref()) {
        None => DEFAULT_PULL_LIMIT,
        Some(s) => {
            let n: i64 = s
                .trim()
                .parse()
                .map_err(|_| format!("limit must be an integer, got {s:?}"))?;
            if n < 1 {
                return Err(format!("limit must be at least 1, got {n}"));
            }
            n.min(i64::from(MAX_PULL_LIMIT)) as u32
        }
    };
    let filter = match (
        p.since_seq.as_deref(),
        p.since_ts.as_deref().or(p.since.as_deref()),
    ) {
        (Some(s), _) => {
            let n: i64 = s
                .trim()
                .parse()
                .map_err(|_| format!("since_seq must be an integer, got {s:?}"))?;
            if n < 0 {
                return Err(format!("since_seq must not be negative, got {n}"));
            }
            PullFilter::SinceSeq(n)
        }
        // The legacy servers treat an empty since_ts as absent.
        (None, Some(ts)) if !ts.is_empty() => PullFilter::SinceTimestamp(ts.to_owned()),
        _ => PullFilter::All,
    };
    let confirm = match p.confirm.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => return Err(format!("confirm must be true or false, got {other:?}")),
    };
    Ok(PullRequest {
        limit,
        filter,
        confirm,
    })
}

/// One record on the wire, with the legacy duplicates of `seq_id` and the derived date fields.
#[derive(Debug, Serialize)]
struct WireRecord<'a> {
    ip: &'a str,
    timestamp: &'a str,
    date: &'a str,
    log_hour: String,
    botnet_type: &'a str,
    log_type: &'a str,
    seq_id: i64,
    _cache_id: i64,
    _seq_id: i64,
}

impl<'a> WireRecord<'a> {
    fn new(r: &'a CachedRecord) -> Self {
        let date = r.timestamp.get(..10).unwrap_or(&r.timestamp);
        let hour = r.timestamp.get(11..13).unwrap_or("00");
        Self {
            ip: &r.ip,
            timestamp: &r.timestamp,
            date,
            log_hour: format!("{date}_{hour}"),
            botnet_type: &r.botnet_type,
            log_type: &r.log_type,
            seq_id: r.seq_id,
            _cache_id: r.seq_id,
            _seq_id: r.seq_id,
        }
    }
}

/// The legacy `stats` object.
#[derive(Debug, Serialize)]
struct StatsBody {
    cached_records: u64,
    pulled_records: u64,
    total_generated: u64,
    total_pulled: u64,
    cache_full: bool,
}

impl StatsBody {
    fn new(s: &CacheStats, max_unpulled: u64) -> Self {
        Self {
            cached_records: s.unpulled,
            pulled_records: s.pulled,
            total_generated: s.total_generated,
            total_pulled: s.total_pulled,
            cache_full: s.unpulled >= max_unpulled,
        }
    }
}

#[derive(Debug, Serialize)]
struct PullResponse<'a> {
    success: bool,
    count: usize,
    data: &'a [WireRecord<'a>],
    /// The legacy copy of `data`.
    records: &'a [WireRecord<'a>],
    max_seq_id: i64,
    global_max_seq_id: i64,
    stats: StatsBody,
    epoch: &'a str,
}

fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn pull(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<PullParams>, QueryRejection>,
) -> Response {
    finish("pull", try_pull(&state, &headers, params).await)
}

async fn try_pull(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    params: Result<Query<PullParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    if !state.authorized(headers) {
        return Err(ApiError::Unauthorized);
    }
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let req = parse_pull(&params).map_err(ApiError::BadRequest)?;
    let epoch = state.epoch.clone();
    let max_unpulled = state.max_unpulled;
    let body = with_cache(state, "pull", move |cache| {
        let (rows, stats) = cache.pull(&req.filter, req.limit, req.confirm)?;
        let wire: Vec<WireRecord<'_>> = rows.iter().map(WireRecord::new).collect();
        let resp = PullResponse {
            success: true,
            count: wire.len(),
            data: &wire,
            records: &wire,
            max_seq_id: rows.last().map_or(0, |r| r.seq_id),
            global_max_seq_id: stats.max_seq_id,
            stats: StatsBody::new(&stats, max_unpulled),
            epoch: &epoch,
        };
        // Encoding 5,000 records takes about a millisecond: it belongs off the executor too.
        Ok(serde_json::to_vec(&resp))
    })
    .await?
    .map_err(|e| {
        tracing::error!(error = %e, "Encoding a pull response failed.");
        ApiError::Unavailable("the response could not be encoded".into())
    })?;
    if req.confirm {
        let _woken_or_already_pending = state.wake.try_send(());
    }
    Ok(json_response(body))
}

/// The confirm body; numbers may also arrive as strings (legacy clients).
#[derive(Debug, Default, Deserialize)]
struct ConfirmBody {
    count: Option<serde_json::Value>,
    up_to_seq: Option<serde_json::Value>,
}

fn non_negative(field: &str, v: &serde_json::Value) -> Result<i64, String> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{field} must be an integer, got {v}"))?;
    if n < 0 {
        return Err(format!("{field} must not be negative, got {n}"));
    }
    Ok(n)
}

fn parse_confirm(body: &[u8]) -> Result<ConfirmScope, String> {
    let b: ConfirmBody = serde_json::from_slice(body)
        .map_err(|e| format!("the body must be a JSON object like {{\"count\": N}}: {e}"))?;
    let count = b
        .count
        .as_ref()
        .map(|v| non_negative("count", v))
        .transpose()?;
    let up_to = b
        .up_to_seq
        .as_ref()
        .map(|v| non_negative("up_to_seq", v))
        .transpose()?;
    match (count, up_to) {
        (_, Some(s)) => Ok(ConfirmScope::UpToSeq(s)),
        (Some(n), None) => Ok(ConfirmScope::Oldest(n as u64)),
        (None, None) => Err("count or up_to_seq is required".into()),
    }
}

async fn confirm(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    finish("confirm", try_confirm(&state, &headers, &body).await)
}

async fn try_confirm(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !state.authorized(headers) {
        return Err(ApiError::Unauthorized);
    }
    let scope = parse_confirm(body).map_err(ApiError::BadRequest)?;
    let confirmed = with_cache(state, "confirm", move |cache| cache.confirm(scope)).await?;
    counter!(m::COLLECTOR_CONFIRMED_RECORDS_TOTAL).increment(confirmed);
    let _woken_or_already_pending = state.wake.try_send(());
    Ok(axum::Json(json!({
        "success": true,
        "message": format!("Confirmed {confirmed} records"),
        "confirmed": confirmed,
    }))
    .into_response())
}

async fn stats(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    finish("stats", try_stats(&state, &headers).await)
}

async fn try_stats(state: &Arc<ApiState>, headers: &HeaderMap) -> Result<Response, ApiError> {
    if state.stats_require_key && !state.authorized(headers) {
        return Err(ApiError::Unauthorized);
    }
    let s = with_cache(state, "stats", |cache| cache.stats()).await?;
    let body = StatsBody::new(&s, state.max_unpulled);
    Ok(axum::Json(json!({
        "success": true,
        "cached_records": body.cached_records,
        "pulled_records": body.pulled_records,
        "total_generated": body.total_generated,
        "total_pulled": body.total_pulled,
        "cache_full": body.cache_full,
        "reading_paused": state.reading_paused.load(Ordering::Relaxed),
        "max_unpulled": state.max_unpulled,
        "global_max_seq_id": s.max_seq_id,
        "epoch": state.epoch,
    }))
    .into_response())
}

async fn health(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let result = if state.health_require_key && !state.authorized(&headers) {
        Err(ApiError::Unauthorized)
    } else {
        Ok(axum::Json(json!({"status": "ok", "service": SERVICE_NAME})).into_response())
    };
    finish("health", result)
}

async fn metrics_text(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let result = if state.health_require_key && !state.authorized(&headers) {
        Err(ApiError::Unauthorized)
    } else {
        Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            crate::telemetry::render_metrics(&state.prometheus),
        )
            .into_response())
    };
    finish("metrics", result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_outcome_is_registered_at_start() {
        for e in [
            ApiError::Unauthorized,
            ApiError::BadRequest(String::new()),
            ApiError::Unavailable(String::new()),
        ] {
            assert!(REQUEST_OUTCOMES.contains(&e.outcome()), "{e:?}");
        }
    }

    fn params(pairs: &[(&str, &str)]) -> PullParams {
        let mut p = PullParams::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "limit" => p.limit = v,
                "count" => p.count = v,
                "since_seq" => p.since_seq = v,
                "since_ts" => p.since_ts = v,
                "since" => p.since = v,
                "confirm" => p.confirm = v,
                _ => unreachable!(),
            }
        }
        p
    }

    #[test]
    fn pull_parameters_default_clamp_and_alias() {
        let r = parse_pull(&params(&[])).unwrap();
        assert_eq!(
            r,
            PullRequest {
                limit: 1000,
                filter: PullFilter::All,
                confirm: false
            }
        );
        assert_eq!(
            parse_pull(&params(&[("limit", "99999")])).unwrap().limit,
            5000
        );
        assert_eq!(parse_pull(&params(&[("count", "7")])).unwrap().limit, 7);
        let r = parse_pull(&params(&[("since_seq", "5"), ("since_ts", "2026")])).unwrap();
        assert_eq!(r.filter, PullFilter::SinceSeq(5), "since_seq wins");
        let r = parse_pull(&params(&[("since", "2026-01-01"), ("confirm", "TRUE")])).unwrap();
        assert_eq!(r.filter, PullFilter::SinceTimestamp("2026-01-01".into()));
        assert!(r.confirm);
        assert_eq!(
            parse_pull(&params(&[("since_ts", "")])).unwrap().filter,
            PullFilter::All
        );
    }

    #[test]
    fn bad_pull_parameters_are_rejected() {
        for bad in [
            ("limit", "ten"),
            ("limit", "0"),
            ("limit", "-1"),
            ("count", "1.5"),
            ("since_seq", "x"),
            ("since_seq", "-3"),
            ("confirm", "maybe"),
        ] {
            assert!(parse_pull(&params(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn confirm_bodies() {
        assert_eq!(
            parse_confirm(br#"{"count": 5}"#).unwrap(),
            ConfirmScope::Oldest(5)
        );
        assert_eq!(
            parse_confirm(br#"{"count": "5"}"#).unwrap(),
            ConfirmScope::Oldest(5)
        );
        assert_eq!(
            parse_confirm(br#"{"count": 5, "up_to_seq": 42}"#).unwrap(),
            ConfirmScope::UpToSeq(42)
        );
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"count": -1}"#,
            br#"{"count": 1.5}"#,
            br#"{"count": 1, "up_to_seq": "x"}"#,
        ] {
            assert!(
                parse_confirm(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn wire_record_has_every_legacy_field() {
        let r = CachedRecord {
            seq_id: 41,
            ip: "14.19.132.125".into(),
            timestamp: "2026-03-03T16:36:49".into(),
            botnet_type: "utg_q_008".into(),
            log_type: "online".into(),
        };
        let v = serde_json::to_value(WireRecord::new(&r)).unwrap();
        assert_eq!(
            v,
            json!({"ip":"14.19.132.125","timestamp":"2026-03-03T16:36:49","date":"2026-03-03",
                   "log_hour":"2026-03-03_16","botnet_type":"utg_q_008","log_type":"online",
                   "seq_id":41,"_cache_id":41,"_seq_id":41})
        );
    }
}
