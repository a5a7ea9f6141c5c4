//! [`StoreSampler`]: the row counts that `/api/status` serves, taken on a timer off the request
//! path, so that a status request never counts rows itself and never waits for the store.
//!
//! A request reads the latest [`SampledCounts`]: the last successful [`CountSample`] with the
//! time it was taken, and the error of the latest attempt if that one failed (the numbers are
//! then the older ones, and their time says how old). Before the first sample there are no
//! numbers at all, never zeros. Whether each number is exact or an estimate is said per number
//! ([`super::Accuracy`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AnyStore, CountSample, Store};

/// The pause between two samples of the store's row counts for `/api/status` in `botpipe run`:
/// a sample reads every nodes table, too much per request on a large database. Status numbers
/// are at most this old plus the time one sample takes.
pub const STORE_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);
/// Longest one sample may take before it counts as failed; the previous numbers stay.
pub const STORE_SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One successful sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSample {
    /// When the sample started (its numbers are at least this old).
    pub at: DateTime<Utc>,
    /// The numbers and how each was obtained.
    pub counts: CountSample,
}

/// What status output shows of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampledCounts {
    /// The last successful sample; `None` until the first one.
    pub latest: Option<TakenSample>,
    /// Why the latest attempt failed, if it did.
    pub error: Option<String>,
}

/// The reading side of a [`StoreSampler`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreSamples(watch::Receiver<SampledCounts>);

impl StoreSamples {
    /// The latest published state.
    pub fn latest(&self) -> SampledCounts {
        self.0.borrow().clone()
    }
}

/// Samples the store's row counts on a fixed period and publishes them to its
/// [`StoreSamples`].
#[derive(Debug)]
pub struct StoreSampler {
    store: AnyStore,
    every: Duration,
    deadline: Duration,
    tx: watch::Sender<SampledCounts>,
}

impl StoreSampler {
    /// A sampler of `store` every `every`, each sample bounded by `deadline`, and the handle
    /// that reads what it publishes.
    pub fn new(store: AnyStore, every: Duration, deadline: Duration) -> (Self, StoreSamples) {
        let (tx, rx) = watch::channel(SampledCounts::default());
        (
            Self {
                store,
                every,
                deadline,
                tx,
            },
            StoreSamples(rx),
        )
    }

    /// Takes one sample, publishes it (keeping the previous numbers if it failed) and returns
    /// what is now published.
    pub async fn sample_once(&self) -> SampledCounts {
        let at = Utc::now();
        let result = match tokio::time::timeout(self.deadline, self.store.sample_counts()).await {
            Ok(Ok(counts)) => Ok(counts),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.deadline)),
        };
        self.tx.send_modify(|s| match result {
            Ok(counts) => {
                s.latest = Some(TakenSample { at, counts });
                s.error = None;
            }
            Err(error) => {
                // Once per outage, not once per sample.
                if s.error.is_none() {
                    tracing::warn!(%error, "Could not sample the store's row counts; status shows the previous sample.");
                }
                s.error = Some(error);
            }
        });
        self.tx.borrow().clone()
    }

    /// Samples until `token` is cancelled: at once, then `every` after each sample ends.
    ///
    /// A pause after each sample rather than a fixed rate: on a large database a sample can take
    /// a while, and the next one should still leave the database `every` of rest.
    pub async fn run_until_stopped(self, token: CancellationToken) {
        loop {
            // Losing to the token drops the sample in flight or the pause; both only read.
            tokio::select! {
                () = token.cancelled() => break,
                _ = self.sample_once() => {}
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::record::{Batch, DeadLetter, RejectReason};
    use crate::store::{Accuracy, EnrichedBatch, SqliteStore};

    #[tokio::test]
    async fn nothing_before_the_first_sample_then_exact_sqlite_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.sqlite")).unwrap();
        store.migrate(&BTreeSet::new()).await.unwrap();
        let letter = DeadLetter {
            source: "ep".into(),
            reason: RejectReason::BadIp,
            detail: "d".into(),
            raw: "{}".into(),
            rejected_at: Utc::now(),
        };
        let batch = Batch::new("ep", vec![], vec![letter]);
        store
            .apply(&EnrichedBatch { batch, geo: vec![] })
            .await
            .unwrap();
        let (sampler, samples) = StoreSampler::new(
            AnyStore::Sqlite(store),
            Duration::from_millis(10),
            STORE_SAMPLE_TIMEOUT,
        );
        assert_eq!(samples.latest(), SampledCounts::default());

        let published = sampler.sample_once().await;
        assert_eq!(published, samples.latest());
        let taken = published.latest.unwrap();
        assert_eq!(taken.counts.counts.dead_letters.get("bad_ip"), Some(&1));
        assert!(taken
            .counts
            .communications
            .values()
            .all(|a| *a == Accuracy::Exact));
        assert!(published.error.is_none());

        let token = CancellationToken::new();
        let run = tokio::spawn(sampler.run_until_stopped(token.clone()));
        token.cancel();
        run.await.unwrap();
    }
}
