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

use crate::config::{extract_all, ExtractProblems, Problem};

/// Why the collector configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CollectorConfigError {
    /// No `--config` was given.
    #[error("botpipe collector needs --config <collector.toml> (or BOTPIPE_COLLECTOR_CONFIG); see collector.example.toml")]
    Missing,
    /// The file does not exist.
    #[error("reading collector configuration: {} does not exist", .0.display())]
    NotFound(PathBuf),
    /// Fields that do not parse and fields that are not valid; every problem is listed, with
    /// its path, in one report (printed once: no `source` repeats it).
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
    if !path.exists() {
        return Err(CollectorConfigError::NotFound(path.to_path_buf()));
    }
    let figment = Figment::new()
        .merge(Toml::file_exact(path))
        .merge(Env::prefixed("BOTPIPE_COLLECTOR__").split("__"));
    let invalid = |problems| CollectorConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    match extract_all::<CollectorConfig>(&figment) {
        Ok(raw) => CollectorSettings::try_from(raw).map_err(invalid),
        // The fields that parsed are validated too, so one report lists everything.
        Err(ExtractProblems { mut problems, rest }) => {
            if let Some(Err(more)) = rest.map(CollectorSettings::try_from) {
                problems.extend(more);
            }
            Err(invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_needs_a_path_and_an_existing_file() {
        assert!(matches!(load(None), Err(CollectorConfigError::Missing)));
        assert!(matches!(
            load(Some(Path::new("/nonexistent/collector.toml"))),
            Err(CollectorConfigError::NotFound(_))
        ));
    }
}
