//! [`StoreStartup`]: bringing the store up without botpipe waiting on it. `botpipe run` serves
//! HTTP and pulls into the queue from its first second; only the workers need the store, so
//! with `store.migrate_on_start` they start once it has answered a ping and been migrated.
//! Without it there is nothing to wait for: the workers start at once and retry a failing store
//! themselves, as they do while running.
//!
//! Until then the store is retried with full-jitter [`Backoff`], each ping bounded by
//! [`PING_TIMEOUT`], so a store that hangs costs the same as one that refuses. It logs once per
//! change of state (the first failure, a different kind of failure, success), never once per
//! attempt, and publishes why it is waiting on a [`StoreStartupWatch`] that `/ready` reads
//! instead of probing a store known to be down. Once up, it is done: failures of a running
//! store are the workers' concern (see [`crate::worker`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AnyStore, MigrationReport, Store, StoreError};
use crate::record::BotnetType;
use crate::retry::Backoff;
use crate::telemetry::Chain;

/// Longest one start-up ping waits for the store. Beyond it the store counts as unreachable
/// and is tried again after a pause.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between start-up attempts: full jitter under a ceiling of 250 ms doubling to 10 s.
pub const STARTUP_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(250), Duration::from_secs(10));

/// Why the store is not up yet.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The ping failed.
    #[error("store not reachable: {}", Chain(.0))]
    Unreachable(#[source] StoreError),
    /// The ping got no answer in time.
    #[error("store not reachable: no answer within {0:?}")]
    NoAnswer(Duration),
    /// The store answered, but migrating it failed.
    #[error("store not migrated: {}", Chain(.0))]
    Migration(#[source] StoreError),
}

impl StartupError {
    /// Whether `other` is the same kind of failure (for logging state changes only).
    fn same_kind(&self, other: &Self) -> bool {
        matches!(
            (self, other),
            (
                Self::Unreachable(_) | Self::NoAnswer(_),
                Self::Unreachable(_) | Self::NoAnswer(_)
            ) | (Self::Migration(_), Self::Migration(_))
        )
    }
}

/// Where the store's start-up stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupState {
    /// The first attempt is under way.
    Starting,
    /// An attempt failed, for this reason; another follows.
    Waiting(String),
    /// The store answered and is migrated: the workers run.
    Up,
}

/// The reading side of a [`StoreStartup`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreStartupWatch(watch::Receiver<StartupState>);

impl StoreStartupWatch {
    /// A watch that says the store is up (for callers without a start-up phase).
    pub fn up() -> Self {
        Self(watch::channel(StartupState::Up).1)
    }

    /// The current state.
    pub fn state(&self) -> StartupState {
        self.0.borrow().clone()
    }

    /// Why the store is not usable yet, or `None` once it is up.
    pub fn not_up_reason(&self) -> Option<String> {
        match &*self.0.borrow() {
            StartupState::Up => None,
            StartupState::Starting => {
                Some("store not reachable yet: first attempt under way".into())
            }
            StartupState::Waiting(reason) => Some(reason.clone()),
        }
    }

    /// Waits until the first attempt has finished (either way) or `within` has passed; false
    /// when it had not finished by then (it goes on in the background).
    pub async fn first_answer(&mut self, within: Duration) -> bool {
        let answered = self.0.wait_for(|s| *s != StartupState::Starting);
        matches!(tokio::time::timeout(within, answered).await, Ok(Ok(_)))
    }
}

/// Says what a start-up migration did: the steps it applied, or that the schema was current;
/// with the types whose tables exist either way.
fn log_migration(report: &MigrationReport) {
    let types = if report.types.is_empty() {
        "none".to_owned()
    } else {
        report.types.join(", ")
    };
    if report.applied.is_empty() {
        tracing::info!(types = %types, "Store schema is current; nothing to migrate.");
    } else {
        tracing::info!(
            steps = report.applied.len(),
            applied = %report.applied.join("; "),
            types = %types,
            "Migrated the store schema."
        );
    }
}

/// Brings the store up: ping, then migrate (unless disabled), retried until it works.
#[derive(Debug)]
pub struct StoreStartup {
    store: AnyStore,
    types: Arc<BTreeSet<BotnetType>>,
    migrate: bool,
    tx: watch::Sender<StartupState>,
}

impl StoreStartup {
    /// A start-up of `store` that migrates `types` when `migrate` is set, and the watch that
    /// reads its state.
    pub fn new(
        store: AnyStore,
        types: Arc<BTreeSet<BotnetType>>,
        migrate: bool,
    ) -> (Self, StoreStartupWatch) {
        let (tx, rx) = watch::channel(StartupState::Starting);
        (
            Self {
                store,
                types,
                migrate,
                tx,
            },
            StoreStartupWatch(rx),
        )
    }

    /// One attempt: a bounded ping, then the migration if enabled (which has its own retries and no
    /// overall bound: a large legacy table may take a while to alter, and cutting it short
    /// would only start it again).
    ///
    /// # Errors
    /// When the store does not answer or cannot be migrated.
    pub async fn try_start_one(&self) -> Result<(), StartupError> {
        match tokio::time::timeout(PING_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartupError::Unreachable(e)),
            Err(_) => return Err(StartupError::NoAnswer(PING_TIMEOUT)),
        }
        if self.migrate {
            let report = self
                .store
                .migrate(&self.types)
                .await
                .map_err(StartupError::Migration)?;
            log_migration(&report);
        }
        Ok(())
    }

    /// Tries until the store is up (true) or `token` is cancelled first (false). Up at once
    /// when there is no migration to run.
    pub async fn run_until_up(self, token: CancellationToken) -> bool {
        if !self.migrate {
            self.tx.send_replace(StartupState::Up);
            return true;
        }
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut last: Option<StartupError> = None;
        loop {
            // The losing branch: an attempt cut short by shutdown is dropped; a migration
            // transaction in flight rolls back.
            let result = tokio::select! {
                () = token.cancelled() => return false,
                r = self.try_start_one() => r,
            };
            let error = match result {
                Ok(()) => {
                    self.tx.send_replace(StartupState::Up);
                    tracing::info!(
                        attempts = attempt + 1,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "Store ready; starting workers."
                    );
                    return true;
                }
                Err(e) => e,
            };
            let reason = error.to_string();
            if last.as_ref().is_some_and(|l| l.same_kind(&error)) {
                tracing::debug!(error = %reason, attempt, "Store still not ready.");
            } else {
                tracing::error!(error = %reason, "Store not ready; workers wait for it, pulls go on into the queue. Retrying with backoff.");
            }
            self.tx.send_replace(StartupState::Waiting(reason));
            last = Some(error);
            let nap = STARTUP_BACKOFF.delay(attempt);
            attempt = attempt.saturating_add(1);
            // The losing branch: a cancelled nap ends the start-up.
            tokio::select! {
                () = token.cancelled() => return false,
                () = tokio::time::sleep(nap) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn failures_of_one_kind_log_once() {
        let a = StartupError::NoAnswer(PING_TIMEOUT);
        let b = StartupError::Unreachable(StoreError::Closed);
        let c = StartupError::Migration(StoreError::Closed);
        assert!(a.same_kind(&b));
        assert!(!a.same_kind(&c));
        assert!(c.same_kind(&StartupError::Migration(StoreError::Closed)));
        assert!(a
            .to_string()
            .starts_with("store not reachable: no answer within"));
        assert_eq!(
            b.to_string(),
            "store not reachable: store worker thread stopped"
        );
    }

    #[tokio::test]
    async fn a_store_that_answers_is_up_after_the_first_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::Sqlite(SqliteStore::open(&dir.path().join("s.sqlite")).unwrap());
        let types = Arc::new([BotnetType::parse("mozi").unwrap()].into_iter().collect());
        let (startup, mut watch) = StoreStartup::new(store, types, true);
        assert_eq!(watch.state(), StartupState::Starting);
        assert!(watch
            .not_up_reason()
            .unwrap()
            .starts_with("store not reachable"));
        assert!(startup.run_until_up(CancellationToken::new()).await);
        watch.first_answer(Duration::from_secs(1)).await;
        assert_eq!(watch.state(), StartupState::Up);
        assert_eq!(watch.not_up_reason(), None);
    }

    #[tokio::test]
    async fn without_migration_on_start_the_store_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let store = AnyStore::Sqlite(SqliteStore::open(&path).unwrap());
        // Another process holds the write lock: a ping would fail.
        let blocker = rusqlite::Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let (startup, watch) = StoreStartup::new(store, Arc::default(), false);
        assert!(startup.run_until_up(CancellationToken::new()).await);
        assert_eq!(watch.state(), StartupState::Up);
    }
}
