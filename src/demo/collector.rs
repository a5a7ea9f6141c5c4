//! An in-process collector serving the pull API from memory, for `botpipe demo` and for tests.
//!
//! It speaks both dialects of `docs/pull-protocol.md`: [`Flavor::Botpipe`] (epoch,
//! `global_max_seq_id`, idempotent `up_to_seq` confirms) and [`Flavor::Legacy`] (no epoch, no
//! `global_max_seq_id`, `records` duplicated, positional confirms of the N oldest unpulled
//! records). It also records every confirm so tests can check what was confirmed when, and, when
//! asked ([`DemoCollector::with_request_log`]), every pull and confirm in the order served with
//! the caller's `User-Agent`, so a test can check that two processes never interleaved their
//! pull-then-confirm cycles on one collector.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which collector dialect to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// botpipe's collector: epoch, `global_max_seq_id`, `up_to_seq` confirms.
    Botpipe,
    /// The legacy `c2_data_transport` server: positional confirms, no `global_max_seq_id`.
    Legacy,
}

/// One confirm the collector received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmCall {
    /// `count` of the request.
    pub count: u64,
    /// `up_to_seq` of the request, if sent.
    pub up_to_seq: Option<u64>,
    /// Seq ids this call marked as pulled.
    pub marked: Vec<u64>,
}

/// What a served request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A pull, and how many records it returned.
    Pull {
        /// Records returned.
        returned: usize,
    },
    /// A confirm, and how many records it marked.
    Confirm {
        /// Records marked as pulled.
        marked: usize,
    },
}

/// One request served, in serving order (requests are served one at a time under a lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRequest {
    /// Position in serving order, from 0.
    pub order: u64,
    /// The caller's `User-Agent` (botpipe sends its process name there).
    pub agent: String,
    /// What it was.
    pub kind: RequestKind,
}

#[derive(Debug)]
struct Row {
    record: Value,
    pulled: bool,
}

#[derive(Debug)]
struct State0 {
    rows: BTreeMap<u64, Row>,
    /// Rows marked pulled, kept as a count so a pull does not scan every row.
    pulled: usize,
    /// Every row below this seq is pulled: pulls and confirms start their scan here, so a
    /// collector holding a million rows answers in time independent of how many were pulled
    /// (`botpipe bench pipeline` serves whole workloads from it).
    low: u64,
    next_seq: u64,
    epoch: String,
    confirms: Vec<ConfirmCall>,
    pulls: u64,
    /// Every request served, when logging was asked for.
    log: Option<Vec<ServedRequest>>,
    served: u64,
    /// How long each pull waits before it is served (a slow collector, for tests).
    pull_delay: std::time::Duration,
}

impl State0 {
    fn served(&mut self, headers: &HeaderMap, kind: RequestKind) {
        let order = self.served;
        self.served += 1;
        if let Some(log) = &mut self.log {
            let agent = headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            log.push(ServedRequest { order, agent, kind });
        }
    }
}

/// A collector held in memory. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct DemoCollector {
    flavor: Flavor,
    api_key: Option<String>,
    state: Arc<Mutex<State0>>,
}

#[derive(Debug, Deserialize)]
struct PullQuery {
    limit: Option<String>,
    count: Option<String>,
    since_seq: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ConfirmBody {
    count: Option<u64>,
    up_to_seq: Option<u64>,
}

impl DemoCollector {
    /// An empty collector of the given dialect, requiring `api_key` when set.
    pub fn new(flavor: Flavor, api_key: Option<String>) -> Self {
        Self {
            flavor,
            api_key,
            state: Arc::new(Mutex::new(State0 {
                rows: BTreeMap::new(),
                pulled: 0,
                low: 1,
                next_seq: 1,
                epoch: uuid::Uuid::new_v4().to_string(),
                confirms: Vec::new(),
                pulls: 0,
                log: None,
                served: 0,
                pull_delay: std::time::Duration::ZERO,
            })),
        }
    }

    /// Keeps a log of every pull and confirm served from now on (see [`Self::request_log`]).
    #[must_use]
    pub fn with_request_log(self) -> Self {
        self.lock().log.get_or_insert_with(Vec::new);
        self
    }

    /// Makes every later pull wait `delay` before it is served (a slow or stalled collector).
    pub fn set_pull_delay(&self, delay: std::time::Duration) {
        self.lock().pull_delay = delay;
    }

    /// Every request served since [`Self::with_request_log`], in serving order.
    pub fn request_log(&self) -> Vec<ServedRequest> {
        self.lock().log.clone().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State0> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a record object (any JSON, valid or not); the collector stamps `seq_id`,
    /// `_cache_id` and `_seq_id` when it is an object. Returns its seq id.
    pub fn push(&self, mut record: Value) -> u64 {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        if let Value::Object(map) = &mut record {
            map.insert("seq_id".into(), json!(seq));
            map.insert("_cache_id".into(), json!(seq));
            map.insert("_seq_id".into(), json!(seq));
        }
        s.rows.insert(
            seq,
            Row {
                record,
                pulled: false,
            },
        );
        seq
    }

    /// Recreates the cache: all rows gone, seq restarts at 1, a new epoch.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.rows.clear();
        s.pulled = 0;
        s.low = 1;
        s.next_seq = 1;
        s.epoch = uuid::Uuid::new_v4().to_string();
    }

    /// Records not yet confirmed.
    pub fn unpulled(&self) -> usize {
        let s = self.lock();
        s.rows.len() - s.pulled
    }

    /// Records held (pulled or not).
    pub fn total(&self) -> usize {
        self.lock().rows.len()
    }

    /// Every confirm received so far.
    pub fn confirms(&self) -> Vec<ConfirmCall> {
        self.lock().confirms.clone()
    }

    /// Pull requests served so far.
    pub fn pulls(&self) -> u64 {
        self.lock().pulls
    }

    /// Serves the pull API on `listener` until `token` is cancelled.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        token: CancellationToken,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/api/pull", get(pull))
            .route("/pull", get(pull))
            .route("/api/confirm", post(confirm))
            .route("/confirm", post(confirm))
            .route(
                "/health",
                get(|| async { Json(json!({"status":"ok","service":"c2-data-server"})) }),
            )
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        given == Some(key.as_str())
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "Unauthorized"})),
    )
        .into_response()
}

async fn pull(
    State(c): State<DemoCollector>,
    headers: HeaderMap,
    Query(q): Query<PullQuery>,
) -> Response {
    if !c.authorized(&headers) {
        return unauthorized();
    }
    let delay = c.lock().pull_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let limit = match q.limit.or(q.count).map(|s| s.parse::<i64>()) {
        None => 1000,
        Some(Ok(n)) if n >= 1 => n.min(5000) as usize,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"success": false, "error": "bad limit"})),
            )
                .into_response()
        }
    };
    let mut s = c.lock();
    s.pulls += 1;
    let from = q.since_seq.unwrap_or(0).saturating_add(1).max(s.low);
    let data: Vec<Value> = s
        .rows
        .range(from..)
        .filter(|(_, r)| !r.pulled)
        .take(limit)
        .map(|(_, r)| r.record.clone())
        .collect();
    let max_seq = s
        .rows
        .range(from..)
        .filter(|(_, r)| !r.pulled)
        .take(limit)
        .map(|(k, _)| *k)
        .last()
        .unwrap_or(0);
    let global = s.rows.keys().next_back().copied().unwrap_or(0);
    let pulled = s.pulled;
    s.served(
        &headers,
        RequestKind::Pull {
            returned: data.len(),
        },
    );
    let mut body = json!({
        "success": true,
        "count": data.len(),
        "max_seq_id": max_seq,
        "stats": {"cached_records": s.rows.len(), "pulled_records": pulled,
                  "total_generated": s.rows.len(), "total_pulled": pulled, "cache_full": false},
    });
    if c.flavor == Flavor::Botpipe {
        body["global_max_seq_id"] = json!(global);
        body["epoch"] = json!(s.epoch);
    } else {
        body["records"] = json!(data.clone());
    }
    body["data"] = Value::Array(data);
    Json(body).into_response()
}

async fn confirm(
    State(c): State<DemoCollector>,
    headers: HeaderMap,
    Json(b): Json<ConfirmBody>,
) -> Response {
    if !c.authorized(&headers) {
        return unauthorized();
    }
    let count = b.count.unwrap_or(0);
    let mut s = c.lock();
    let low = s.low;
    let marked: Vec<u64> = match (c.flavor, b.up_to_seq) {
        (Flavor::Botpipe, Some(up_to)) if up_to < low => Vec::new(),
        (Flavor::Botpipe, Some(up_to)) => s
            .rows
            .range_mut(low..=up_to)
            .filter(|(_, r)| !r.pulled)
            .map(|(k, r)| {
                r.pulled = true;
                *k
            })
            .collect(),
        // Legacy (and botpipe without up_to_seq): the N oldest unpulled, whichever they are.
        _ => s
            .rows
            .range_mut(low..)
            .filter(|(_, r)| !r.pulled)
            .take(count as usize)
            .map(|(k, r)| {
                r.pulled = true;
                *k
            })
            .collect(),
    };
    let n = marked.len();
    s.pulled += n;
    while s.rows.get(&s.low).is_some_and(|r| r.pulled) {
        s.low += 1;
    }
    s.served(&headers, RequestKind::Confirm { marked: n });
    s.confirms.push(ConfirmCall {
        count,
        up_to_seq: b.up_to_seq,
        marked,
    });
    Json(json!({"success": true, "message": format!("confirmed {n} records"), "confirmed": n}))
        .into_response()
}
