//! Push ingest, `POST /api/data-push` (`docs/operations.md`, "Push ingest"): relays that cannot be
//! pulled send signed batches, and botpipe answers 200 only once the batch is durable.
//!
//! Order of checks, each refusing before any later work is done:
//! 1. `X-API-Key` (401) before a byte of the body is read, so nothing about the schema leaks to
//!    a caller without the key; then backpressure and the cap on requests in flight (503 with
//!    `Retry-After`);
//! 2. the body, read up to `push.max_body_bytes` (413) within `http.body_timeout` (408);
//! 3. the signature over `timestamp + nonce + raw_body` (401), with `timestamp` and `nonce`
//!    taken from the body as sent (missing ones count as empty);
//! 4. only then the schema (400), the ±300 s freshness (400), and the nonce, which is required
//!    (400 when missing or empty) and recorded only now, after the signature verified (400 on a
//!    replay);
//! 5. records are parsed one by one: bad ones become dead letters inside the batch, the rest go
//!    on (invariant 5);
//! 6. the batch goes through [`Handoff::handoff`], queue within the deadline or else spool; only
//!    its `Ok` produces the 200 with the legacy response keys (invariant 2). Otherwise 503
//!    `not_durable`, and the nonce is forgotten again, so the relay may retry with the same
//!    request or a fresh nonce.
//!
//! A batch answered with 503 may still have become durable (a queue write that finished after
//! the deadline, an `XADD` whose reply came late). Its id is derived from the relay, the type
//! and the records, so the retry is the same batch: the store writes its rows and dead letters
//! once (dead letters are keyed by batch id and position).

pub mod auth;
pub mod nonce;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono_tz::Tz;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::config::{PushSettings, SecretError};
use crate::queue::{Backpressure, Handoff};
use crate::record::{parse_record, Batch, BatchId, BotnetType, RecordContext};
use crate::telemetry::metrics as m;
use crate::telemetry::Chain;
use crate::transport::serve::BodyTimeout;

pub use auth::{sign, Credentials};
pub use nonce::NonceCache;

/// Records one push may carry (the push format's `1..=5000`).
pub const MAX_RECORDS: usize = 5000;
/// Longest accepted nonce, so the nonce cache stays small in bytes too.
pub const MAX_NONCE_LEN: usize = 256;
/// Longest accepted `relay_server_id`; it becomes part of the batch source.
pub const MAX_RELAY_ID_LEN: usize = 64;
/// Push requests processed at once. Each may buffer up to `push.max_body_bytes`, so this bounds
/// push memory (invariant 4); a request beyond it gets 503 `backpressure` and the relay retries.
pub const MAX_CONCURRENT_PUSHES: usize = 8;
/// How long a relay is asked to wait when botpipe is under backpressure or not durable.
const RETRY_AFTER_SECS: u64 = 5;
/// At most one warning per refusal kind in this interval; the rest go to debug.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why push could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct PushSetupError {
    /// The config field of the secret.
    pub field: &'static str,
    /// The cause.
    #[source]
    pub source: SecretError,
}

/// Why a request was refused; each maps to one status and one `error_type` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `[push]` is not enabled.
    Disabled,
    /// Missing or wrong `X-API-Key`.
    Auth,
    /// Missing or wrong `X-Signature`.
    BadSignature,
    /// Body above `push.max_body_bytes`.
    BodyTooLarge,
    /// The body did not arrive whole within `http.body_timeout`.
    BodyTimeout,
    /// The body is not a push envelope; the text says which part.
    Invalid(String),
    /// The timestamp is more than 300 s from now.
    Stale,
    /// The nonce was used in the last 600 s.
    Replay,
    /// Queue and spool are at their limits; retry later.
    Backpressure,
    /// Neither queue nor spool accepted the batch; retry later.
    NotDurable,
}

/// Registers at 0 the push counters (requests by outcome, records by outcome) and the
/// duration histogram, so that they are exported from the start, push enabled or not.
pub fn register_metrics() {
    use crate::telemetry::metrics::{zero_counters, zero_histograms};
    let outcomes: Vec<&str> = std::iter::once("ok")
        .chain(Refusal::LABELS.iter().copied())
        .collect();
    zero_counters(m::PUSH_REQUESTS_TOTAL, &[("outcome", outcomes.as_slice())]);
    zero_histograms(m::PUSH_DURATION_SECONDS, &[]);
    zero_counters(
        m::RECORDS_TOTAL,
        &[
            ("stage", &["push"][..]),
            ("outcome", &["valid", "rejected"][..]),
        ],
    );
}

impl Refusal {
    /// Every value [`Refusal::label`] returns.
    pub const LABELS: &[&str] = &[
        "disabled",
        "auth",
        "bad_signature",
        "body_too_large",
        "body_timeout",
        "invalid_body",
        "stale_timestamp",
        "replayed_nonce",
        "backpressure",
        "not_durable",
    ];

    /// The `error_type` and `botpipe_push_requests_total{outcome}` label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Auth => "auth",
            Self::BadSignature => "bad_signature",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::Invalid(_) => "invalid_body",
            Self::Stale => "stale_timestamp",
            Self::Replay => "replayed_nonce",
            Self::Backpressure => "backpressure",
            Self::NotDurable => "not_durable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Disabled => StatusCode::NOT_FOUND,
            Self::Auth | Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Invalid(_) | Self::Stale | Self::Replay => StatusCode::BAD_REQUEST,
            Self::Backpressure | Self::NotDurable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Disabled => "push ingest is disabled".into(),
            Self::Auth | Self::BadSignature => "Unauthorized".into(),
            Self::BodyTooLarge => "request body too large".into(),
            Self::BodyTimeout => "request body not received within http.body_timeout".into(),
            Self::Invalid(what) => format!("invalid body: {what}"),
            Self::Stale => "timestamp is more than 300 s from the server's time".into(),
            Self::Replay => "nonce already used".into(),
            Self::Backpressure => "busy; retry later".into(),
            // 5xx: opaque; the cause is logged.
            Self::NotDurable => "temporarily unavailable; retry later".into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(json!({
            "success": false,
            "error": self.message(),
            "error_type": self.label(),
        }));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            (
                status,
                [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
                body,
            )
                .into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// The envelope fields the signature covers, read leniently before the signature is checked.
#[derive(Deserialize)]
struct SignedFields<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    nonce: Option<Cow<'a, str>>,
}

/// The whole envelope, read after the signature verified.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    botnet_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    nonce: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    relay_server_id: Option<Cow<'a, str>>,
}

/// Whether a record carries its own `botnet_type`.
#[derive(Deserialize)]
struct TypeProbe<'a> {
    #[serde(borrow, default)]
    botnet_type: Option<&'a RawValue>,
}

/// The push endpoint's state: credentials, limits, replay cache and the hand-off.
#[derive(Debug)]
pub struct PushIngest {
    creds: Credentials,
    tz: Tz,
    max_body_bytes: u64,
    nonces: NonceCache,
    allowed: Arc<BTreeSet<BotnetType>>,
    handoff: Handoff,
    backpressure: Arc<Backpressure>,
    /// Bounds requests in flight (see [`MAX_CONCURRENT_PUSHES`]).
    in_flight: tokio::sync::Semaphore,
    /// Set while hand-offs fail, so the failure is logged on the change, not per request.
    not_durable: AtomicBool,
    last_warn: Mutex<Vec<(&'static str, Instant)>>,
}

impl PushIngest {
    /// Resolves the secrets; `None` when push is disabled.
    ///
    /// # Errors
    /// When a secret's variable or file cannot be read.
    pub fn build(
        settings: &PushSettings,
        allowed: Arc<BTreeSet<BotnetType>>,
        handoff: Handoff,
        backpressure: Arc<Backpressure>,
    ) -> Result<Option<Self>, PushSetupError> {
        if !settings.enabled {
            return Ok(None);
        }
        let (Some(key), Some(secret)) = (&settings.api_key, &settings.secret) else {
            // Validation guarantees both when enabled; stay closed if it ever does not.
            return Ok(None);
        };
        let key = key.resolve().map_err(|source| PushSetupError {
            field: "push.api_key",
            source,
        })?;
        let secret = secret.resolve().map_err(|source| PushSetupError {
            field: "push.secret",
            source,
        })?;
        Ok(Some(Self {
            creds: Credentials::new(&key, secret),
            tz: settings.timezone,
            max_body_bytes: settings.max_body_bytes,
            nonces: NonceCache::new(settings.nonce_cache_size, nonce::NONCE_TTL),
            allowed,
            handoff,
            backpressure,
            in_flight: tokio::sync::Semaphore::new(MAX_CONCURRENT_PUSHES),
            not_durable: AtomicBool::new(false),
            last_warn: Mutex::new(Vec::new()),
        }))
    }

    /// Handles one request; every outcome is counted and timed.
    pub async fn handle(&self, headers: &HeaderMap, body: Body) -> Response {
        let started = Instant::now();
        let result = self.try_handle(headers, body, started).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(r) => r.label(),
        };
        metrics::counter!(m::PUSH_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
        metrics::histogram!(m::PUSH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => r,
            Err(refusal) => {
                self.log_refusal(&refusal);
                refusal.into_response()
            }
        }
    }

    fn log_refusal(&self, refusal: &Refusal) {
        if matches!(refusal, Refusal::NotDurable) {
            return; // Logged on the state change in `try_handle`.
        }
        let label = refusal.label();
        let now = Instant::now();
        let loud = {
            let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
            match last.iter_mut().find(|(l, _)| *l == label) {
                Some((_, at)) if now.duration_since(*at) < WARN_EVERY => false,
                Some((_, at)) => {
                    *at = now;
                    true
                }
                None => {
                    last.push((label, now));
                    true
                }
            }
        };
        if loud {
            tracing::warn!(
                error_type = label,
                "Push request refused (similar refusals in the next 10 s are logged at debug)."
            );
        } else {
            tracing::debug!(error_type = label, "Push request refused.");
        }
    }

    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Refusal> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(Refusal::BodyTooLarge);
        }
        let cap = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(cap));
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let e = e.into_inner();
                if e.is::<BodyTimeout>() {
                    Refusal::BodyTimeout
                } else {
                    Refusal::Invalid(format!("reading the body: {e}"))
                }
            })?;
            if out.len() + chunk.len() > cap {
                return Err(Refusal::BodyTooLarge);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn try_handle(
        &self,
        headers: &HeaderMap,
        body: Body,
        started: Instant,
    ) -> Result<Response, Refusal> {
        // 1. The key, before the body is touched.
        let key = headers.get("x-api-key").ok_or(Refusal::Auth)?;
        if !self.creds.key_matches(key.as_bytes()) {
            return Err(Refusal::Auth);
        }
        if !self.backpressure.allows_pull() {
            return Err(Refusal::Backpressure);
        }
        // Held until the answer: the body buffer lives no longer than the permit.
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| Refusal::Backpressure)?;

        // 2. The body, bounded.
        let raw = self.read_body(headers, body).await?;

        // 3. The signature, over the envelope's own timestamp and nonce.
        let signed = serde_json::from_slice::<SignedFields<'_>>(&raw).ok();
        let ts = signed
            .as_ref()
            .and_then(|s| s.timestamp.as_deref())
            .unwrap_or("");
        let nonce = signed
            .as_ref()
            .and_then(|s| s.nonce.as_deref())
            .unwrap_or("");
        let sig = headers.get("x-signature").ok_or(Refusal::BadSignature)?;
        if !self
            .creds
            .signature_matches(sig.as_bytes(), ts, nonce, &raw)
        {
            return Err(Refusal::BadSignature);
        }

        // 4. Schema, freshness, replay: only for signed requests.
        let env: Envelope<'_> = serde_json::from_slice(&raw)
            .map_err(|e| Refusal::Invalid(format!("not a push envelope: {e}")))?;
        let timestamp = env
            .timestamp
            .as_deref()
            .ok_or_else(|| Refusal::Invalid("missing timestamp".into()))?;
        match auth::check_fresh(timestamp, self.tz, chrono::Utc::now()) {
            Ok(()) => {}
            Err(auth::Freshness::Stale) => return Err(Refusal::Stale),
            Err(auth::Freshness::Unparseable) => {
                return Err(Refusal::Invalid(format!("timestamp {timestamp:?}")))
            }
        }
        let botnet_type = env
            .botnet_type
            .as_deref()
            .ok_or_else(|| Refusal::Invalid("missing botnet_type".into()))?;
        let data = env
            .data
            .as_deref()
            .ok_or_else(|| Refusal::Invalid("missing data".into()))?;
        if data.is_empty() || data.len() > MAX_RECORDS {
            return Err(Refusal::Invalid(format!(
                "data holds {} records, not 1..={MAX_RECORDS}",
                data.len()
            )));
        }
        let relay = match env.relay_server_id.as_deref() {
            None | Some("") => "unknown",
            Some(r) if valid_relay_id(r) => r,
            Some(_) => {
                return Err(Refusal::Invalid(format!(
                    "relay_server_id must be 1..={MAX_RELAY_ID_LEN} of A-Z a-z 0-9 . _ : -"
                )))
            }
        };
        // Required (issue 13): without a nonce the replay guard had nothing to remember, so a
        // captured request could be replayed for the whole freshness window.
        let nonce = env
            .nonce
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Refusal::Invalid(
                    "missing nonce: every push needs a fresh, non-empty nonce (replay guard)"
                        .into(),
                )
            })?;
        if nonce.len() > MAX_NONCE_LEN {
            return Err(Refusal::Invalid(format!(
                "nonce longer than {MAX_NONCE_LEN} bytes"
            )));
        }
        let recorded_at = Instant::now();
        if !self.nonces.check_and_insert(nonce, recorded_at) {
            return Err(Refusal::Replay);
        }
        // Forgotten again unless the push is taken: after a 503 (or a relay that hung up while
        // the hand-off ran) the relay may send the very same request again (issue 12).
        let mut hold = NonceHold {
            nonces: &self.nonces,
            nonce,
            at: recorded_at,
            taken: false,
        };
        let answer = self.take(data, botnet_type, relay, started).await;
        hold.taken = answer.is_ok();
        answer
    }

    /// Steps 5 and 6 for a push whose signature, freshness and nonce checked out.
    async fn take(
        &self,
        data: &[&RawValue],
        botnet_type: &str,
        relay: &str,
        started: Instant,
    ) -> Result<Response, Refusal> {
        // 5. Records, one by one.
        let source = format!("push:{relay}");
        let ctx = RecordContext {
            source: source.clone(),
            tz: self.tz,
            allowed: Arc::clone(&self.allowed),
        };
        let type_json = serde_json::to_string(botnet_type)
            .map_err(|e| Refusal::Invalid(format!("botnet_type: {e}")))?;
        let mut records = Vec::with_capacity(data.len());
        let mut dead_letters = Vec::new();
        for item in data {
            match parse_record(&with_batch_type(item.get(), &type_json), &ctx) {
                Ok(r) => records.push(r),
                Err(d) => dead_letters.push(d),
            }
        }
        let received = data.len();
        let valid = records.len();
        let rejected = dead_letters.len();
        let duplicates = {
            let mut seen = HashSet::with_capacity(valid);
            records.iter().filter(|r| !seen.insert(*r)).count()
        };
        metrics::counter!(m::RECORDS_TOTAL, "stage" => "push", "outcome" => "valid")
            .increment(valid as u64);
        if rejected > 0 {
            metrics::counter!(m::RECORDS_TOTAL, "stage" => "push", "outcome" => "rejected")
                .increment(rejected as u64);
        }
        for d in &dead_letters {
            metrics::counter!(m::DEAD_LETTERS_TOTAL, "reason" => d.reason.as_str()).increment(1);
        }
        let mut batch = Batch::new(source, records, dead_letters);
        // The same push sent again (after a 503, or a lost answer) is the same batch.
        batch.id = BatchId::derived(
            [relay.as_bytes(), type_json.as_bytes()]
                .into_iter()
                .chain(data.iter().map(|item| item.get().as_bytes())),
        );

        // 6. Durable, then answer.
        let target = match self.handoff.handoff(&batch).await {
            Ok(t) => {
                if self.not_durable.swap(false, Ordering::AcqRel) {
                    tracing::info!("Push hand-offs succeed again.");
                }
                t
            }
            Err(error) => {
                if !self.not_durable.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %Chain(&error), relay, "Push batch not durable; answering 503 so the relay retries. Logged once until hand-offs succeed again.");
                } else {
                    tracing::debug!(error = %Chain(&error), relay, "Push batch still not durable.");
                }
                return Err(Refusal::NotDurable);
            }
        };
        let took = started.elapsed();
        tracing::info!(
            relay,
            batch = %batch.id,
            count = received,
            valid,
            rejected,
            duplicates,
            durable_in = target.as_str(),
            duration_ms = took.as_millis() as u64,
            "Accepted pushed batch."
        );
        let ms = (took.as_secs_f64() * 100_000.0).round() / 100.0;
        Ok(Json(json!({
            "success": true,
            "message": format!("Received {received} records; {valid} valid, {rejected} dead-lettered; durable in the {}.", target.as_str()),
            "received_count": received,
            "processed_count": valid,
            "duplicate_count": duplicates,
            "error_count": rejected,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "processing_time_ms": ms,
            "batch_id": batch.id.0,
        }))
        .into_response())
    }
}

/// A nonce recorded for a push in progress: forgotten when dropped unless the push was taken.
/// A drop guard rather than a call after the hand-off, so that a request cut short (the relay
/// hung up and axum dropped the handler) frees its nonce too; resending it then is harmless,
/// because the batch id is derived from the records and the store absorbs a second copy.
struct NonceHold<'a> {
    nonces: &'a NonceCache,
    nonce: &'a str,
    at: Instant,
    taken: bool,
}

impl Drop for NonceHold<'_> {
    fn drop(&mut self) {
        if !self.taken {
            self.nonces.forget(self.nonce, self.at);
        }
    }
}

fn valid_relay_id(r: &str) -> bool {
    r.len() <= MAX_RELAY_ID_LEN
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The record's JSON text, with the envelope's `botnet_type` (already JSON-quoted) added when the
/// record has none of its own. The text is what a dead letter keeps, so a replay sees the type.
fn with_batch_type<'a>(raw: &'a str, type_json: &str) -> Cow<'a, str> {
    let has_own = match serde_json::from_str::<TypeProbe<'_>>(raw) {
        Ok(p) => p.botnet_type.is_some(),
        // Not an object: leave it for parse_record to reject as invalid_json.
        Err(_) => return Cow::Borrowed(raw),
    };
    if has_own {
        return Cow::Borrowed(raw);
    }
    let Some(rest) = raw.trim_start().strip_prefix('{') else {
        return Cow::Borrowed(raw);
    };
    if rest.trim_start().starts_with('}') {
        Cow::Owned(format!("{{\"botnet_type\":{type_json}}}"))
    } else {
        Cow::Owned(format!("{{\"botnet_type\":{type_json},{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_label_is_registered_at_start() {
        let all = [
            Refusal::Disabled,
            Refusal::Auth,
            Refusal::BadSignature,
            Refusal::BodyTooLarge,
            Refusal::BodyTimeout,
            Refusal::Invalid(String::new()),
            Refusal::Stale,
            Refusal::Replay,
            Refusal::Backpressure,
            Refusal::NotDurable,
        ];
        let labels: Vec<&str> = all.iter().map(Refusal::label).collect();
        assert_eq!(labels, Refusal::LABELS);
    }

    #[test]
    fn the_envelope_type_is_added_only_to_records_without_one() {
        let t = "\"mozi\"";
        assert_eq!(
            with_batch_type(r#"{"ip":"1.2.3.4"}"#, t),
            r#"{"botnet_type":"mozi","ip":"1.2.3.4"}"#
        );
        assert_eq!(with_batch_type(r#" { } "#, t), r#"{"botnet_type":"mozi"}"#);
        assert_eq!(
            with_batch_type(r#"{"botnet_type":"ramnit","ip":"1.2.3.4"}"#, t),
            r#"{"botnet_type":"ramnit","ip":"1.2.3.4"}"#
        );
        assert_eq!(with_batch_type(r#""text""#, t), r#""text""#);
        assert_eq!(with_batch_type(r#"[1]"#, t), r#"[1]"#);
    }

    #[test]
    fn relay_ids_are_bounded_and_plain() {
        assert!(valid_relay_id("relay-001"));
        assert!(valid_relay_id("10.0.0.5:relay_a"));
        assert!(!valid_relay_id("relay 1"));
        assert!(!valid_relay_id("relay\n"));
        assert!(!valid_relay_id(&"r".repeat(65)));
    }
}
