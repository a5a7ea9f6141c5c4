//! `botpipe demo`: load the configuration (for its geodata only), run
//! [`crate::demo::run_demo`], print its summary (a table, or JSON with `--json`), and fail when
//! the store differs from what the generator expects.

use std::path::Path;

use crate::cli::DemoArgs;
use crate::demo::{run_demo, Summary};

use super::CommandError;

/// `botpipe demo`.
///
/// # Errors
/// A configuration that does not load (exit 2); when the pipeline cannot start or does not
/// drain in time ([`CommandError::Demo`]), or stores something other than what the generator
/// expects ([`CommandError::DemoMismatch`]).
pub async fn run(config: Option<&Path>, args: DemoArgs) -> Result<(), CommandError> {
    let configured = crate::config::load(config)?;
    let summary = run_demo(&args, &configured).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if summary.matches_expected {
        Ok(())
    } else {
        Err(CommandError::DemoMismatch)
    }
}

fn print_summary(s: &Summary) {
    println!("botpipe demo summary");
    println!("  records pulled       {:>10}", s.records_pulled);
    println!(
        "  communications stored{:>10}   (expected {})",
        s.communications_stored,
        s.expected.communications.values().sum::<u64>()
    );
    println!(
        "  dead-lettered        {:>10}   (expected {})",
        s.dead_lettered, s.expected.invalid
    );
    for (reason, n) in &s.dead_letters {
        println!("    {reason:<24}{n:>6}");
    }
    println!("  nodes per type and status:");
    for (t, by_status) in &s.nodes {
        let parts: Vec<String> = by_status
            .iter()
            .map(|(st, n)| format!("{st} {n}"))
            .collect();
        println!("    {t:<12} {}", parts.join(", "));
    }
    println!("  elapsed              {:>10.2} s", s.elapsed_seconds);
    println!(
        "  throughput           {:>10.0} records/s",
        s.records_per_second
    );
    match &s.data_dir {
        Some(dir) => println!("  data                 {}", dir.display()),
        None => println!("  data                 removed (a temporary directory; --keep keeps it)"),
    }
    println!("  geodata              {}", s.geodata);
    println!(
        "  check                {}",
        if s.matches_expected {
            "OK: stored rows equal what the generator expects"
        } else {
            "MISMATCH: see expected vs stored above"
        }
    );
}
