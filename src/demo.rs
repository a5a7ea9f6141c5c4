//! `botpipe demo`: an in-process demo collector and the whole pipeline on the embedded default.

use crate::app::AppError;
use crate::cli::DemoArgs;

/// Runs the demo.
///
/// # Errors
/// On start-up or runtime failure.
pub async fn run(_args: DemoArgs) -> Result<(), AppError> {
    Err(AppError::NotBuilt("demo"))
}
