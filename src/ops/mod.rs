//! The operator commands: [`status`] (what is the pipeline doing), [`validate`] (is this
//! configuration right and can it reach everything) and [`dlq`] (inspect and replay dead
//! letters).
//!
//! They run beside a `botpipe run` that may be working on the same files, so they open the
//! embedded queue with [`crate::app::attach_queue`] (leases stay with the running workers) and
//! never migrate or create the store behind the operator's back.

pub mod dlq;
pub mod status;
pub mod validate;

use std::path::Path;
use std::time::Duration;

use crate::config::StoreKind;
use crate::config::{QueueBackend, Settings};

/// How long a command waits for one dependency before reporting it unreachable.
pub const OPS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an operator command failed (configuration errors go through [`crate::app::AppError`]).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// `--url` could not be reached or did not answer with a status document.
    #[error("asking {url}: {message}")]
    Remote {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A file botpipe would read does not exist yet.
    #[error("{what} {path} does not exist; has botpipe run with this configuration?")]
    Missing {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
    },
    /// Some connectivity checks of `validate` failed (each is printed).
    #[error("{0} connectivity check(s) failed")]
    ChecksFailed(usize),
    /// No dead letter has this id.
    #[error("no dead letter with id {0}")]
    NoSuchDeadLetter(i64),
    /// A replayed batch could not be made durable; nothing of it was deleted.
    #[error("dlq replay: {0}")]
    Handoff(#[from] crate::queue::HandoffError),
    /// Output could not be encoded.
    #[error("encoding output: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Fails with [`OpsError::Missing`] when the embedded store or queue file of `settings` is not
/// there, so a status or replay does not create empty databases somewhere unexpected.
///
/// # Errors
/// See above.
pub fn require_embedded_files(settings: &Settings) -> Result<(), OpsError> {
    if let StoreKind::Sqlite(path) = &settings.store.kind {
        require(path, "store file")?;
    }
    if let QueueBackend::Embedded { path } = &settings.queue.backend {
        require(path, "queue file")?;
    }
    Ok(())
}

fn require(path: &Path, what: &'static str) -> Result<(), OpsError> {
    if path.exists() {
        Ok(())
    } else {
        Err(OpsError::Missing {
            what,
            path: path.display().to_string(),
        })
    }
}

/// Runs `f` with [`OPS_TIMEOUT`], turning errors and timeouts into text.
async fn bounded<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(OPS_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {OPS_TIMEOUT:?}")),
    }
}
