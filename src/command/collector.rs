//! `botpipe collector`: load the collector's own file (its `--config`, or
//! `BOTPIPE_COLLECTOR_CONFIG`), apply `--listen`, build the [`Collector`] and run it until
//! SIGINT or SIGTERM.

use crate::cli::CollectorArgs;
use crate::collector::Collector;

use super::CommandError;

/// `botpipe collector`.
///
/// # Errors
/// A missing or invalid collector file (exit 2), an unreadable API key (exit 2), or a cache,
/// listener or reading-thread failure (exit 1).
pub async fn run(args: CollectorArgs) -> Result<(), CommandError> {
    let mut settings = crate::collector::config::load(args.config.as_deref())?;
    if let Some(addr) = args.listen {
        settings.listen = addr;
    }
    let collector = Collector::build(settings).await?;
    Ok(collector
        .run_until_stopped(crate::shutdown::token_on_signal())
        .await?)
}
