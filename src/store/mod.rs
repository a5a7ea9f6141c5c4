//! The platform database: the legacy per-botnet-type tables and botpipe's own `botpipe_*`
//! tables, behind the [`Store`] seam.
//!
//! Every backend applies a batch in **one transaction** using the merge rules of
//! `shared/spec/platform-schema.md`, computed once in [`merge`]: replays and reorderings leave the
//! same rows. A backend decides per error whether it is retryable ([`StoreError::is_retryable`]);
//! a retryable failure leaves the batch unacked in the queue.

pub mod merge;
mod sqlite;

pub use sqlite::SqliteStore;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use serde::Serialize;

use crate::enrich::Geo;
use crate::record::{Batch, BotnetType, DeadLetter};

/// A batch with one geo result per record (same order as `batch.records`).
#[derive(Debug, Clone)]
pub struct EnrichedBatch {
    /// The batch as leased.
    pub batch: Batch,
    /// `geo[i]` belongs to `batch.records[i]`.
    pub geo: Vec<Geo>,
}

/// What one applied batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ApplyOutcome {
    /// Distinct (type, IP) node rows inserted or updated.
    pub nodes: u64,
    /// Communication rows newly inserted.
    pub communications_inserted: u64,
    /// Communications that were already stored (replays and in-batch duplicates).
    pub communications_duplicate: u64,
    /// Dead letters written.
    pub dead_letters: u64,
}

/// Row counts for status output and the demo summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Nodes per botnet type and status.
    pub nodes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Communication rows per botnet type.
    pub communications: BTreeMap<String, u64>,
    /// Dead letters per reason.
    pub dead_letters: BTreeMap<String, u64>,
}

impl StoreCounts {
    /// Nodes of all types and statuses.
    pub fn total_nodes(&self) -> u64 {
        self.nodes.values().flat_map(|m| m.values()).sum()
    }
    /// Communication rows of all types.
    pub fn total_communications(&self) -> u64 {
        self.communications.values().sum()
    }
    /// Dead letters of all reasons.
    pub fn total_dead_letters(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error while doing `op`.
    #[error("sqlite store {path}: {op}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What was being done, with the table.
        op: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A network database reported an error while doing `op`.
    #[error("{op}: {source}")]
    Sqlx {
        /// What was being done, with the table.
        op: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The blocking thread serving the store is gone.
    #[error("store worker thread stopped")]
    Closed,
}

impl StoreError {
    /// Whether the same batch may succeed later (busy, locked, connection lost, deadlock), as
    /// opposed to a defect of the data or the schema.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::CannotOpen
                )
            ),
            Self::Sqlx { source, .. } => match source {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                    // PostgreSQL: serialization failure, deadlock, connection and resource classes.
                    // MySQL: deadlock (1213), lock wait timeout (1205), server gone (2006/2013).
                    c == "40001"
                        || c == "40P01"
                        || c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57P")
                        || c == "1213"
                        || c == "1205"
                }),
                _ => false,
            },
            Self::Closed => true,
        }
    }
}

/// A dead letter as stored, for `botpipe dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredDeadLetter {
    /// Row id.
    pub id: i64,
    /// The letter.
    #[serde(flatten)]
    pub letter: DeadLetter,
}

/// The platform database.
pub trait Store: Send + Sync {
    /// Creates or upgrades botpipe's tables and the tables of every allowed type.
    fn migrate(
        &self,
        types: &BTreeSet<BotnetType>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Applies a batch and its dead letters in one transaction with the merge rules.
    fn apply(
        &self,
        batch: &EnrichedBatch,
    ) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// Row counts per type, status and dead-letter reason.
    fn counts(&self) -> impl Future<Output = Result<StoreCounts, StoreError>> + Send;

    /// Dead letters, newest first, after id `before` if given.
    fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> impl Future<Output = Result<Vec<StoredDeadLetter>, StoreError>> + Send;

    /// Cheap liveness check of the connection.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The configured store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
}

impl Store for AnyStore {
    async fn migrate(&self, types: &BTreeSet<BotnetType>) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.migrate(types).await,
        }
    }
    async fn apply(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        match self {
            Self::Sqlite(s) => s.apply(batch).await,
        }
    }
    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        match self {
            Self::Sqlite(s) => s.counts().await,
        }
    }
    async fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        match self {
            Self::Sqlite(s) => s.dead_letters(limit, before).await,
        }
    }
    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.ping().await,
        }
    }
}
