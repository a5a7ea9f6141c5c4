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
    let report = store.migrate(&settings.allowed_types).await?;
    let counts = store.counts().await?;
    if report.applied.is_empty() {
        println!("Nothing to migrate: the schema was current.");
    } else {
        println!("Applied {} migration steps:", report.applied.len());
        for step in &report.applied {
            println!("  {step}");
        }
    }
    for (t, rows) in &report.contradictions {
        println!(
            "  {t}: {rows} nodes have a status that contradicts their times (left as they are; see docs/legacy.md)"
        );
    }
    let waiting = settings
        .allowed_types
        .len()
        .saturating_sub(report.types.len());
    println!(
        "Schema is current: {} botnet types with tables ({}), {waiting} more allowed, whose tables are created when their first record arrives; {} nodes, {} communications.",
        report.types.len(),
        if report.types.is_empty() { "none".to_owned() } else { report.types.join(", ") },
        counts.total_nodes(),
        counts.total_communications()
    );
    Ok(())
}
