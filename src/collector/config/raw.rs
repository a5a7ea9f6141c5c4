//! [`CollectorConfig`]: the collector's file as people write it. serde with unknown fields
//! rejected, every field optional so that validation (`settings.rs`) can report each
//! missing one with its path. These doc comments are the reference; `collector.example.toml`
//! mirrors them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// The collector file. Every field is optional except the API key and at least one source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Listen address of the pull API (`host:port`). Default `0.0.0.0:8888`; `--listen`
    /// overrides it.
    pub listen: Option<String>,
    /// The API key pullers must send (`X-API-Key` or `Authorization: Bearer`). Prefer
    /// `api_key_env` or `api_key_file`; exactly one of the three is required.
    pub api_key: Option<SecretString>,
    /// Name of an environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// File holding the API key (a trailing newline is ignored).
    pub api_key_file: Option<PathBuf>,
    /// Serve the pull API over HTTPS with this PEM certificate chain (leaf first); needs
    /// `tls_key_file`. Default: plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: with it, only pullers presenting a client certificate signed by this
    /// CA are served (mutual TLS, on top of the API key). Needs `tls_cert_file`.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Longest wait for a request's headers (and the TLS handshake); slower clients are
    /// disconnected. Default `10s`.
    #[serde(default, with = "humantime_serde::option")]
    pub header_timeout: Option<Duration>,
    /// Longest wait for a whole request body once its headers are in. Default `30s`.
    #[serde(default, with = "humantime_serde::option")]
    pub body_timeout: Option<Duration>,
    /// Connections served at once; further clients wait to be accepted. Default 256.
    pub max_connections: Option<usize>,
    /// Whether `/api/stats` requires the key. Default `true` (legacy collectors left it open).
    pub stats_require_key: Option<bool>,
    /// Whether `/health` and `/metrics` require the key. Default `false`.
    pub health_require_key: Option<bool>,
    /// The cache file (SQLite, WAL). Default `collector-data/cache.sqlite`. Deleting it starts a
    /// new epoch: pullers then drop their cursors.
    pub cache_path: Option<PathBuf>,
    /// How long confirmed rows stay in the cache before they are deleted. Default `7d`.
    #[serde(default, with = "humantime_serde::option")]
    pub retention: Option<Duration>,
    /// Unpulled rows at which reading pauses (read-side backpressure: the logs keep the data).
    /// Default 1000000.
    pub max_unpulled: Option<u64>,
    /// Unpulled rows below which reading resumes after a pause. Default 80% of `max_unpulled`.
    pub resume_below: Option<u64>,
    /// Time between two scans of all sources. Default `1s`; at least `10ms`.
    #[serde(default, with = "humantime_serde::option")]
    pub scan_interval: Option<Duration>,
    /// Lines or table rows per cache transaction, 1..=100000. Default 5000.
    pub read_batch: Option<u32>,
    /// The sources, as `[[sources]]` tables. At least one.
    pub sources: Vec<SourceConfig>,
}

/// `[[sources]]`: one log file set or one SQLite table, stamping one botnet type and log type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Unique name, `a-z 0-9 _ -`: the key of the source's saved positions and its metric label.
    /// Renaming a source makes it start again from the beginning of its files.
    pub name: Option<String>,
    /// `regex` (line files parsed by a regex), `csv` (`timestamp,ip[,…]` lines) or `sqlite` (a
    /// table read incrementally by id). Required.
    pub kind: Option<String>,
    /// Botnet type stamped on every record, e.g. `utg_q_008`. Required.
    pub botnet_type: Option<String>,
    /// `online` or `cleanup`. Default `online` for files, `cleanup` for `sqlite`.
    pub log_type: Option<String>,
    /// Files (`regex`, `csv`): a path, a glob (`/var/log/c2/*.log`) or a dated name with
    /// `{date}` (`%Y-%m-%d`) or `{datetime}` (`%Y-%m-%d_%H`), e.g. `/logs/test_{datetime}.log`.
    /// Every matching file is tailed; new files are picked up on the next scan.
    pub path: Option<String>,
    /// `regex` only: the line regex. Lines that do not match are skipped.
    pub regex: Option<String>,
    /// `regex` only: the group holding the IP, by name or number. Default: the group named `ip`,
    /// else group 2.
    pub ip_group: Option<GroupRef>,
    /// `regex` only: the group holding the timestamp, by name or number. Default: the group
    /// named `timestamp`, else group 1.
    pub timestamp_group: Option<GroupRef>,
    /// chrono format of the timestamp, e.g. `%Y/%m/%d %H:%M:%S`. Default: ISO 8601 with `T` or a
    /// space and optional fractions (`2026-03-03 16:36:49`, `2026-03-03T16:38:34`).
    pub timestamp_format: Option<String>,
    /// Files only: files not yet tracked whose last change is older than this are ignored
    /// (e.g. `2d`, so a first start does not ingest months of old logs). Default: none.
    #[serde(default, with = "humantime_serde::option")]
    pub ignore_older_than: Option<Duration>,
    /// `sqlite` only: the database file written by the cleanup tool. Opened read-only.
    pub database: Option<PathBuf>,
    /// `sqlite` only: the table. Default `reports`.
    pub table: Option<String>,
    /// `sqlite` only: the increasing integer key read incrementally. Default `id`.
    pub id_column: Option<String>,
    /// `sqlite` only: the IP column. Default `client_ip`.
    pub ip_column: Option<String>,
    /// `sqlite` only: the timestamp column. Default `timestamp`.
    pub timestamp_column: Option<String>,
    /// `sqlite` only: the status column. Default `status`.
    pub status_column: Option<String>,
    /// `sqlite` only: statuses that become records. Default `["SUCCESS"]`; `[]` takes every row.
    pub statuses: Option<Vec<String>>,
}

/// A regex capture group, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GroupRef {
    /// Group number (1 is the first group).
    Index(usize),
    /// Group name.
    Name(String),
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(i) => write!(f, "{i}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<CollectorConfig>("lisen = \"x\"").is_err());
        assert!(toml::from_str::<CollectorConfig>("[[sources]]\nnmae = \"x\"").is_err());
    }
}
