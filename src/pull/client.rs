//! The HTTP side of pulling: `GET /api/pull` and `POST /api/confirm` against one collector, with
//! connect and total timeouts, a body size cap, and tolerant decoding of legacy responses.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::config::{redact_url, EndpointSettings};
use crate::transport::{client_tls, TlsError};

/// Why a pull or confirm request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request could not be sent or timed out.
    #[error("endpoint {endpoint}: {op} request failed: {source}")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// `pull` or `confirm`.
        op: &'static str,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The collector answered with a non-success status.
    #[error("endpoint {endpoint}: {op} answered HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        endpoint: String,
        /// `pull` or `confirm`.
        op: &'static str,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The response body exceeded `max_body_bytes`.
    #[error("endpoint {endpoint}: pull response exceeds {limit} bytes")]
    BodyTooLarge {
        /// The endpoint.
        endpoint: String,
        /// The configured cap.
        limit: u64,
    },
    /// The body is not a pull response.
    #[error("endpoint {endpoint}: pull response is not valid JSON of the pull API: {source}")]
    InvalidResponse {
        /// The endpoint.
        endpoint: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The response said `success: false`.
    #[error("endpoint {endpoint}: collector reported failure: {message}")]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// Its error text.
        message: String,
    },
}

impl ClientError {
    /// Every value [`ClientError::outcome`] returns.
    pub const OUTCOMES: &[&str] = &[
        "timeout",
        "http_error",
        "auth",
        "http_status",
        "body_too_large",
        "invalid_json",
        "refused",
    ];

    /// A bounded label for `botpipe_pulls_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Http { source, .. } if source.is_timeout() => "timeout",
            Self::Http { .. } => "http_error",
            Self::Status {
                status: 401 | 403, ..
            } => "auth",
            Self::Status { .. } => "http_status",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::InvalidResponse { .. } => "invalid_json",
            Self::Refused { .. } => "refused",
        }
    }
}

/// A decoded pull response that borrows the body.
#[derive(Debug, Deserialize)]
pub struct PullResponse<'a> {
    /// `false` on legacy errors.
    #[serde(default)]
    pub success: Option<bool>,
    /// The records.
    #[serde(borrow, default)]
    pub data: Option<Vec<&'a RawValue>>,
    /// The legacy duplicate of `data`; used only when `data` is missing.
    #[serde(borrow, default)]
    pub records: Option<Vec<&'a RawValue>>,
    /// Largest seq in this response (0 when empty).
    #[serde(default)]
    pub max_seq_id: Option<u64>,
    /// Largest seq the collector holds (some legacy variants omit it).
    #[serde(default)]
    pub global_max_seq_id: Option<u64>,
    /// [ext] cache identity.
    #[serde(default)]
    pub epoch: Option<String>,
    /// Error text on failure.
    #[serde(default)]
    pub error: Option<String>,
    /// Cache statistics (legacy and botpipe collectors).
    #[serde(default)]
    pub stats: Option<PullStats>,
}

/// The `stats` object of a pull response; only the fields botpipe reads.
#[derive(Debug, Default, Deserialize)]
pub struct PullStats {
    /// Records in the cache, pulled or not.
    #[serde(default)]
    pub cached_records: Option<u64>,
    /// Records in the cache already confirmed.
    #[serde(default)]
    pub pulled_records: Option<u64>,
}

impl PullStats {
    /// Records the collector holds that are not yet confirmed, when it says so.
    pub fn unpulled(&self) -> Option<u64> {
        Some(self.cached_records?.saturating_sub(self.pulled_records?))
    }
}

impl<'a> PullResponse<'a> {
    /// The records, from `data` or else `records`.
    pub fn items(&self) -> &[&'a RawValue] {
        self.data
            .as_deref()
            .or(self.records.as_deref())
            .unwrap_or_default()
    }
}

/// An HTTP client for one endpoint.
#[derive(Debug, Clone)]
pub struct PullClient {
    http: reqwest::Client,
    name: String,
    pull_url: Url,
    confirm_url: Url,
    api_key: Option<SecretString>,
    batch_size: u32,
    max_body_bytes: u64,
    /// `User-Agent` naming this process, so a collector's access log says which process pulled.
    agent: Option<reqwest::header::HeaderValue>,
}

/// The length of error bodies kept in messages.
const ERROR_BODY_CHARS: usize = 200;

fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

/// `e` with the URL it names masked like every configured URL (a password in an endpoint URL
/// would otherwise be printed with each failed pull).
fn without_secrets(e: reqwest::Error) -> reqwest::Error {
    match e.url().map(|u| Url::parse(&redact_url(u.as_str()))) {
        Some(Ok(masked)) => e.with_url(masked),
        Some(Err(_)) => e.without_url(),
        None => e,
    }
}

impl PullClient {
    /// Builds the client; the key must already be resolved.
    ///
    /// # Errors
    /// When the endpoint's `ca_file` or client certificate cannot be read, or the TLS backend
    /// cannot be initialised.
    pub fn new(e: &EndpointSettings, api_key: Option<SecretString>) -> Result<Self, TlsError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(e.connect_timeout)
            .timeout(e.timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60));
        let http = client_tls(builder, &e.tls)?
            .build()
            .map_err(|source| TlsError::Client {
                setting: "url",
                source,
            })?;
        Ok(Self {
            http,
            name: e.name.clone(),
            pull_url: join(&e.url, "api/pull"),
            confirm_url: join(&e.url, "api/confirm"),
            api_key,
            batch_size: e.batch_size,
            max_body_bytes: e.max_body_bytes,
            agent: None,
        })
    }

    /// Sends `User-Agent: botpipe/<version> (<process>)`: with several processes pulling in
    /// turn, the collector's access log shows which one made each request.
    #[must_use]
    pub fn with_process_name(mut self, process: &str) -> Self {
        let agent = format!("botpipe/{} ({process})", env!("CARGO_PKG_VERSION"));
        self.agent = reqwest::header::HeaderValue::from_str(&agent).ok();
        self
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.agent {
            Some(a) => req.header(reqwest::header::USER_AGENT, a.clone()),
            None => req,
        };
        match &self.api_key {
            Some(k) => req.header("X-API-Key", k.expose_secret()),
            None => req,
        }
    }

    fn http_err(&self, op: &'static str) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
        move |source| ClientError::Http {
            endpoint: self.name.clone(),
            op,
            source: without_secrets(source),
        }
    }

    /// Fetches up to `batch_size` unconfirmed records after `since_seq`; returns the raw body.
    ///
    /// # Errors
    /// On transport errors, timeouts, non-200 answers and oversized bodies.
    pub async fn pull(&self, since_seq: Option<u64>) -> Result<Vec<u8>, ClientError> {
        let mut query: Vec<(&str, String)> = vec![
            ("limit", self.batch_size.to_string()),
            ("confirm", "false".into()),
        ];
        if let Some(s) = since_seq {
            query.push(("since_seq", s.to_string()));
        }
        let req = self.authed(self.http.get(self.pull_url.clone()).query(&query));
        let mut resp = req.send().await.map_err(self.http_err("pull"))?;
        let status = resp.status();
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body_bytes)
        {
            return Err(ClientError::BodyTooLarge {
                endpoint: self.name.clone(),
                limit: self.max_body_bytes,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(self.http_err("pull"))? {
            if (body.len() + chunk.len()) as u64 > self.max_body_bytes {
                return Err(ClientError::BodyTooLarge {
                    endpoint: self.name.clone(),
                    limit: self.max_body_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(ClientError::Status {
                endpoint: self.name.clone(),
                op: "pull",
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body)
                    .chars()
                    .take(ERROR_BODY_CHARS)
                    .collect(),
            });
        }
        Ok(body)
    }

    /// Decodes a pull body.
    ///
    /// # Errors
    /// When it is not a pull response or reports failure.
    pub fn decode<'a>(&self, body: &'a [u8]) -> Result<PullResponse<'a>, ClientError> {
        let resp: PullResponse<'a> =
            serde_json::from_slice(body).map_err(|source| ClientError::InvalidResponse {
                endpoint: self.name.clone(),
                source,
            })?;
        if resp.success == Some(false) {
            return Err(ClientError::Refused {
                endpoint: self.name.clone(),
                message: resp.error.clone().unwrap_or_default(),
            });
        }
        Ok(resp)
    }

    /// Checks that the collector answers the pull API with this key, changing nothing:
    /// `GET /api/pull?limit=1&confirm=false` (for `botpipe validate`). Every collector dialect
    /// serves it, unlike `/api/stats`, and it exercises the key.
    ///
    /// # Errors
    /// On transport errors, non-200 answers and bodies that are not pull responses.
    pub async fn probe(&self) -> Result<(), ClientError> {
        let query = [("limit", "1"), ("confirm", "false")];
        let resp = self
            .authed(self.http.get(self.pull_url.clone()).query(&query))
            .send()
            .await
            .map_err(self.http_err("probe"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(self.http_err("probe"))?;
        if !status.is_success() {
            return Err(ClientError::Status {
                endpoint: self.name.clone(),
                op: "probe",
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body)
                    .chars()
                    .take(ERROR_BODY_CHARS)
                    .collect(),
            });
        }
        self.decode(&body).map(|_| ())
    }

    /// Confirms `count` records up to `up_to_seq`. Any 200 is success (legacy collectors may omit
    /// `confirmed`).
    ///
    /// # Errors
    /// On transport errors and non-200 answers.
    pub async fn confirm(&self, count: usize, up_to_seq: Option<u64>) -> Result<(), ClientError> {
        let body = match up_to_seq {
            Some(s) => serde_json::json!({ "count": count, "up_to_seq": s }),
            None => serde_json::json!({ "count": count }),
        };
        let resp = self
            .authed(self.http.post(self.confirm_url.clone()).json(&body))
            .send()
            .await
            .map_err(self.http_err("confirm"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(ClientError::Status {
            endpoint: self.name.clone(),
            op: "confirm",
            status: status.as_u16(),
            body: text.chars().take(ERROR_BODY_CHARS).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_under_a_base_path() {
        let base = Url::parse("http://h:1/prefix/").unwrap();
        assert_eq!(
            join(&base, "api/pull").as_str(),
            "http://h:1/prefix/api/pull"
        );
        let base = Url::parse("http://h:1").unwrap();
        assert_eq!(
            join(&base, "api/confirm").as_str(),
            "http://h:1/api/confirm"
        );
    }

    #[test]
    fn legacy_response_with_only_records_decodes() {
        let body = br#"{"success":true,"count":1,"records":[{"ip":"1.2.3.4"}],"max_seq_id":7}"#;
        let r: PullResponse<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!(r.items().len(), 1);
        assert_eq!(r.global_max_seq_id, None);
    }
}
