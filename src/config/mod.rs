//! Configuration: defaults → TOML file (`--config`) → `BOTPIPE_…` environment overrides, read
//! into [`RawConfig`] and validated purely into [`Settings`], collecting every problem with its
//! field path. Nothing here connects to anything; secrets are resolved when components are built.

mod problem;
mod raw;
mod secret;
mod settings;

pub use problem::{Problem, Problems};
pub use raw::{
    BotnetConfig, EndpointConfig, GeoConfig, HttpConfig, PushConfig, QueueConfig, RawConfig,
    StoreConfig, WorkerConfig,
};
pub use secret::{SecretError, SecretSource};
pub use settings::{redact_url, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
pub use settings::{
    ChinaView, EndpointSettings, GeoSettings, PushSettings, QueueBackend, QueueSettings,
    RedisSettings, Settings, StoreKind, StoreSettings, UnknownStoreUrl,
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

/// Why configuration could not be loaded or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or parsed.
    #[error("reading configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// The values parsed but are not valid; every problem is listed.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Reads the layered raw configuration. A missing `path` means defaults plus environment.
///
/// # Errors
/// [`ConfigError::Load`] when the file is missing, unreadable or has unknown fields.
pub fn load_raw(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
    let mut fig = Figment::new();
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::Load(Box::new(figment::Error::from(format!(
                "config file {} does not exist",
                path.display()
            )))));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed("BOTPIPE_").split("__").filter(|k| {
        let first = k.as_str().split('.').next().unwrap_or_default();
        ENV_SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
    }));
    fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))
}

/// Loads and validates.
///
/// # Errors
/// See [`load_raw`] and [`Settings::try_from`].
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    Settings::try_from(load_raw(path)?).map_err(ConfigError::Invalid)
}
