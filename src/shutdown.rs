//! Shutdown: a root [`CancellationToken`] cancelled by SIGINT or SIGTERM. The app cancels its
//! components in the order of design invariant 6 (pullers, then workers, then HTTP) and bounds
//! the whole sequence with the grace period.

use tokio_util::sync::CancellationToken;

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                // Whichever signal loses the race is simply not awaited any more.
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops botpipe.");
                let _ctrl_c = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ctrl_c = tokio::signal::ctrl_c().await;
    }
}

/// A token cancelled on the first SIGINT or SIGTERM. The watcher task ends with the process.
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    // Detached on purpose: it lives as long as the process and only cancels a token.
    tokio::spawn(async move {
        signal().await;
        tracing::info!("Shutdown requested.");
        t.cancel();
    });
    token
}
