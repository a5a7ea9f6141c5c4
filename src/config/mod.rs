//! Configuration: defaults → TOML file (`--config`) → `BOTPIPE_…` environment overrides, read
//! into [`RawConfig`] and validated purely into [`Settings`], collecting every problem with its
//! field path. Nothing here connects to anything; secrets are resolved when components are built.

mod layers;
mod problem;
mod raw;
mod redact;
mod secret;
mod settings;
mod tls;

pub use layers::{extract_all, ExtractProblems};
pub use problem::{Problem, Problems};
pub use raw::{
    BotnetConfig, EndpointConfig, GeoConfig, HttpConfig, PushConfig, QueueConfig, RawConfig,
    StoreConfig, WorkerConfig,
};
pub use redact::{redact_url, RedactedUrl};
pub use secret::{SecretError, SecretSource};
pub use settings::{
    ChinaView, EndpointSettings, GeoSettings, PushSettings, QueueBackend, QueueSettings,
    RedisSettings, Settings, StoreKind, StoreSettings, UnknownStoreUrl,
};
pub use settings::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
pub use tls::{
    validate_client_tls, validate_listener, ClientTlsSettings, ListenerLimits, RawListener,
    ServerTlsSettings, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;

/// Top-level sections that `BOTPIPE_<SECTION>__…` variables may override. Other `BOTPIPE_`
/// variables belong to the CLI (`BOTPIPE_CONFIG`, `BOTPIPE_LOG_FORMAT`, …).
const ENV_SECTIONS: &[&str] = &[
    "data_dir",
    "http",
    "botnet",
    "store",
    "queue",
    "geo",
    "worker",
    "endpoints",
    "push",
];

/// Why configuration could not be loaded or validated. Each is printed once, whole: neither
/// carries a `source` that would repeat its text in an error chain.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error("reading configuration: config file {} does not exist", .0.display())]
    Missing(std::path::PathBuf),
    /// Fields that do not parse, and fields that parse but are not valid; every problem is
    /// listed with its path, in one report.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Reads the layered raw configuration. A missing `path` means defaults plus environment.
///
/// # Errors
/// [`ConfigError::Missing`] when the file does not exist; [`ConfigError::Invalid`] with every
/// field that does not parse (unknown, wrong type) when it is unreadable.
pub fn load_raw(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
    extract_all(&figment(path)?).map_err(|e| ConfigError::Invalid(e.problems))
}

fn figment(path: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut fig = Figment::new();
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed("BOTPIPE_").split("__").filter(|k| {
        let first = k.as_str().split('.').next().unwrap_or_default();
        ENV_SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
    }));
    Ok(fig)
}

/// Loads and validates.
///
/// # Errors
/// See [`load_raw`] and [`Settings::try_from`].
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    match extract_all::<RawConfig>(&figment(path)?) {
        Ok(raw) => Settings::try_from(raw).map_err(ConfigError::Invalid),
        // The fields that parsed are validated too, so one report lists everything.
        Err(ExtractProblems { mut problems, rest }) => {
            if let Some(Err(more)) = rest.map(Settings::try_from) {
                problems.extend(more);
            }
            Err(ConfigError::Invalid(problems))
        }
    }
}
