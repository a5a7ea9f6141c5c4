//! Wiring: builds the queue, store, lookup, pullers, workers and HTTP server from [`Settings`]
//! and runs them until the shutdown token fires.

use std::path::Path;

use crate::cli::RunArgs;

/// Why botpipe could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Not yet built in this version.
    #[error("{0} is not built yet")]
    NotBuilt(&'static str),
    /// Geodata could not be opened or queried.
    #[error(transparent)]
    Enrich(#[from] crate::enrich::EnrichError),
}

impl AppError {
    /// Process exit code: 2 for configuration and usage problems, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Enrich(e) if e.is_usage() => 2,
            _ => 1,
        }
    }
}

/// `botpipe run`.
///
/// # Errors
/// On configuration, start-up or runtime failure.
pub async fn run(_config: Option<&Path>, _args: RunArgs) -> Result<(), AppError> {
    Err(AppError::NotBuilt("run"))
}

/// `botpipe worker`.
///
/// # Errors
/// On configuration, start-up or runtime failure.
pub async fn run_workers_only(_config: Option<&Path>, _args: RunArgs) -> Result<(), AppError> {
    Err(AppError::NotBuilt("worker"))
}

/// `botpipe migrate`.
///
/// # Errors
/// On configuration or database failure.
pub async fn migrate(_config: Option<&Path>) -> Result<(), AppError> {
    Err(AppError::NotBuilt("migrate"))
}
