//! `botpipe migrate`: create or upgrade the store's schema, print what it holds, and exit.

use std::path::Path;

use crate::app::open_store;
use crate::store::Store;

use super::CommandError;

/// `botpipe migrate`.
///
/// # Errors
/// On configuration or database failure.
pub async fn run(config: Option<&Path>) -> Result<(), CommandError> {
    let settings = crate::config::load(config)?;
    let store = open_store(&settings).await?;
    store.migrate(&settings.allowed_types).await?;
    let counts = store.counts().await?;
    println!(
        "Schema is current: {} botnet types, {} nodes, {} communications.",
        settings.allowed_types.len(),
        counts.total_nodes(),
        counts.total_communications()
    );
    Ok(())
}
