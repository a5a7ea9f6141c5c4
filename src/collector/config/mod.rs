//! The collector's own configuration file (`botpipe collector --config collector.toml`), separate
//! from botpipe's: a collector runs on a C2 host, next to the logs, and shares nothing with the
//! platform side but the secret and problem types of [`crate::config`].
//!
//! Two steps, as for the main configuration: [`CollectorConfig`] (`raw.rs`) is the file as people
//! write it, and [`CollectorSettings::try_from`] (`settings.rs`) validates it purely into typed
//! settings, collecting every problem with its field path. [`load`] reads the file and the
//! `BOTPIPE_COLLECTOR__…` overrides and does both.

mod raw;
mod settings;

pub use raw::{CollectorConfig, GroupRef, SourceConfig};
pub use settings::{
    CollectorSettings, FilePattern, LineParser, SourceKind, SourceSettings, TableSpec,
    TimestampFormats,
};

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;

use crate::config::Problem;

/// Why the collector configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CollectorConfigError {
    /// No `--config` was given.
    #[error("botpipe collector needs --config <collector.toml>; see collector.example.toml")]
    Missing,
    /// The file or an environment variable could not be read or parsed.
    #[error("reading collector configuration {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<figment::Error>,
    },
    /// The values parsed but are not valid; every problem is listed.
    #[error("invalid collector configuration {}:\n{}", .path.display(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem.
        problems: Vec<Problem>,
    },
}

/// Reads and validates the collector file; `BOTPIPE_COLLECTOR__<FIELD>` variables override its
/// top-level fields (e.g. `BOTPIPE_COLLECTOR__LISTEN`).
///
/// # Errors
/// When no path is given, the file is missing or malformed, or validation finds problems.
pub fn load(path: Option<&Path>) -> Result<CollectorSettings, CollectorConfigError> {
    let path = path.ok_or(CollectorConfigError::Missing)?;
    let load_err = |source| CollectorConfigError::Load {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    if !path.exists() {
        return Err(load_err(figment::Error::from(format!(
            "file {} does not exist",
            path.display()
        ))));
    }
    let raw: CollectorConfig = Figment::new()
        .merge(Toml::file_exact(path))
        .merge(Env::prefixed("BOTPIPE_COLLECTOR__").split("__"))
        .extract()
        .map_err(load_err)?;
    CollectorSettings::try_from(raw).map_err(|problems| CollectorConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_needs_a_path_and_an_existing_file() {
        assert!(matches!(load(None), Err(CollectorConfigError::Missing)));
        assert!(matches!(
            load(Some(Path::new("/nonexistent/collector.toml"))),
            Err(CollectorConfigError::Load { .. })
        ));
    }
}
