//! `botpipe run` (pullers, push ingest, workers and the HTTP server) and `botpipe worker`
//! (workers only): load the configuration, apply the process flags, build the [`App`] and run it
//! until SIGINT or SIGTERM.

use std::path::Path;

use crate::app::{App, Mode};
use crate::cli::RunArgs;

use super::CommandError;

/// `botpipe run`.
///
/// # Errors
/// On configuration, start-up or runtime failure.
pub async fn run(config: Option<&Path>, args: RunArgs) -> Result<(), CommandError> {
    run_mode(config, args, Mode::Full).await
}

/// `botpipe worker`.
///
/// # Errors
/// On configuration, start-up or runtime failure.
pub async fn worker(config: Option<&Path>, args: RunArgs) -> Result<(), CommandError> {
    run_mode(config, args, Mode::WorkersOnly).await
}

async fn run_mode(config: Option<&Path>, args: RunArgs, mode: Mode) -> Result<(), CommandError> {
    let mut settings = crate::config::load(config)?;
    if let Some(w) = args.workers {
        settings.worker_count = w.max(1);
    }
    if let Some(addr) = args.http_listen {
        settings.http_listen = addr;
    }
    let token = crate::shutdown::token_on_signal();
    let app = App::build(settings, mode).await?.with_name(args.name);
    Ok(app.run_until_stopped(token, args.shutdown_timeout).await?)
}
