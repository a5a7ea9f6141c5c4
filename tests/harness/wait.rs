//! Poll a condition with a deadline instead of sleeping a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `cond` with backoff (5 ms doubling to 200 ms) until it returns true or `deadline`
/// elapses; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    let mut nap = Duration::from_millis(5);
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(nap).await;
        nap = (nap * 2).min(Duration::from_millis(200));
    }
}
