//! The platform database: the legacy per-botnet-type tables and botpipe's own `botpipe_*`
//! tables, behind the [`Store`] seam.
//!
//! Two implementations: [`SqliteStore`] (embedded, rusqlite, one writer) and the generic
//! [`sql::SqlStore`] over a [`sql::Dialect`], with [`postgres::Postgres`] and [`mysql::Mysql`].
//! Every backend applies the merge rules of `docs/schema.md`, computed once in [`merge`], so
//! replays and reorderings leave the same rows, and cuts geography to its columns first
//! ([`columns`]). A backend decides per error whether it is retryable
//! ([`StoreError::is_retryable`]); a retryable failure leaves the batch unacked in the queue.
//!
//! Row counts come two ways: [`Store::counts`] is exact (the demo summary, `botpipe migrate`,
//! tests), and [`Store::sample_counts`] is as cheap as the backend allows, with every number
//! labelled exact or estimated ([`Accuracy`]); [`sampler`] takes the latter off the request path
//! of `/api/status`. [`startup`] brings the store up after botpipe is already running, so that
//! a store that is down at start-up stops only the workers.

pub mod clock;
pub mod columns;
pub mod merge;
pub mod mysql;
pub mod postgres;
mod recovery;
pub mod sampler;
mod schema;
pub mod sql;
mod sqlite;
pub mod startup;

pub use sqlite::SqliteStore;

/// The PostgreSQL store.
pub type PostgresStore = sql::SqlStore<postgres::Postgres>;
/// The MySQL/MariaDB store.
pub type MysqlStore = sql::SqlStore<mysql::Mysql>;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use serde::Serialize;

use crate::enrich::Geo;
use crate::record::{Batch, BotnetType, DeadLetter, RejectReason};

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
    /// Records that added no row: already stored (replays) or repeated inside the batch. With
    /// `communications_inserted` and the refused records, this accounts for every record.
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

/// How a number in a [`CountSample`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accuracy {
    /// Counted row by row.
    Exact,
    /// Read from the database's catalogue (PostgreSQL `pg_class.reltuples` scaled to the
    /// table's current size, MySQL `information_schema.tables.table_rows`).
    Estimate,
    /// The catalogue has no estimate yet and the table is too large to count: no number.
    Unknown,
}

/// Row counts for status output, as cheap as the backend allows: node and dead-letter counts
/// are exact (a `GROUP BY` on an indexed column), communication rows may be estimates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CountSample {
    /// The numbers; a type whose communications are [`Accuracy::Unknown`] has no entry in
    /// `counts.communications`.
    pub counts: StoreCounts,
    /// How each type's communication rows were counted.
    pub communications: BTreeMap<String, Accuracy>,
}

impl CountSample {
    /// Exact counts, labelled so.
    pub fn exact(counts: StoreCounts) -> Self {
        let communications = counts
            .communications
            .keys()
            .map(|t| (t.clone(), Accuracy::Exact))
            .collect();
        Self {
            counts,
            communications,
        }
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
    /// A communication row appeared between botpipe's existence check and its insert: a writer
    /// outside botpipe's lock order touched the table. Retrying re-reads the table.
    #[error("{table}: communication inserted concurrently by another writer")]
    Conflict {
        /// The communications table.
        table: String,
    },
    /// A write partition stayed locked by another writer for longer than the lock wait.
    #[error("write partition {partition} stayed busy")]
    PartitionBusy {
        /// The partition.
        partition: u32,
    },
    /// Another botpipe process held the migration lock for too long.
    #[error("waiting for the migration lock {lock}: timed out")]
    MigrationLockTimeout {
        /// The lock name.
        lock: String,
    },
    /// The schema cannot be upgraded automatically.
    #[error("migrating {table}: {problem}")]
    Schema {
        /// The table.
        table: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The store password could not be read.
    #[error("store password: {0}")]
    Secret(#[from] crate::config::SecretError),
    /// The blocking thread serving the store is gone.
    #[error("store worker thread stopped")]
    Closed,
    /// The store did not finish `op` in time: it hangs, or the network to it drops packets.
    /// Nothing says the data is at fault.
    #[error("{op}: no answer from the store within {after:?}")]
    NoAnswer {
        /// What was being done.
        op: String,
        /// How long it was given.
        after: std::time::Duration,
    },
}

/// MySQL/MariaDB error numbers that a retry may cure: deadlock, lock wait timeout, too many
/// connections, server shutdown, connection killed, query interrupted or timed out, network errors.
const MYSQL_TRANSIENT: &[u16] = &[
    1040, 1053, 1158, 1159, 1160, 1161, 1205, 1213, 1317, 1927, 1969, 2006, 2013, 3024, 4031,
];

/// MySQL/MariaDB error numbers that reject a value of one row: out of range (1264, 1690), data
/// truncated (1265), bad datetime (1292), bad string or number (1366, 1367, 1411), too long
/// (1406), NULL into NOT NULL (1048).
const MYSQL_ROW_REJECTION: &[u16] = &[1048, 1264, 1265, 1292, 1366, 1367, 1406, 1411, 1690];

impl StoreError {
    /// Whether the same batch may succeed later (busy, locked, connection lost, deadlock,
    /// serialization failure), as opposed to a defect of the data or the schema.
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
            Self::Sqlx { source, .. } => sqlx_is_transient(source),
            Self::Conflict { .. }
            | Self::PartitionBusy { .. }
            | Self::MigrationLockTimeout { .. }
            | Self::Closed
            | Self::NoAnswer { .. } => true,
            Self::Schema { .. } | Self::Secret(_) => false,
        }
    }

    /// Whether the database broke a deadlock by failing this transaction (PostgreSQL 40P01,
    /// MySQL 1213).
    pub fn is_deadlock(&self) -> bool {
        match self {
            Self::Sqlx {
                source: sqlx::Error::Database(db),
                ..
            } => match db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                Some(my) => my.number() == 1213,
                None => db.code().is_some_and(|c| c == "40P01"),
            },
            _ => false,
        }
    }

    /// Whether the database refused a value of the data itself (a timestamp out of range, an
    /// over-long string): retrying cannot help, but the rest of the batch can still commit once
    /// the offending record is set aside as a dead letter.
    pub fn is_row_rejection(&self) -> bool {
        match self {
            Self::Sqlx {
                source: sqlx::Error::Database(db),
                ..
            } => {
                if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                    MYSQL_ROW_REJECTION.contains(&my.number())
                        || my.code().is_some_and(|c| c.starts_with("22"))
                } else {
                    // PostgreSQL class 22: data exception.
                    db.code().is_some_and(|c| c.starts_with("22"))
                }
            }
            _ => false,
        }
    }
}

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                MYSQL_TRANSIENT.contains(&my.number())
            } else {
                // PostgreSQL: serialization failure, deadlock, lock not available, query
                // cancelled (statement timeout), connection exceptions (08), insufficient
                // resources (53), operator intervention such as a restart (57P).
                db.code().is_some_and(|c| {
                    c == "40001"
                        || c == "40P01"
                        || c == "55P03"
                        || c == "57014"
                        || c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57P")
                })
            }
        }
        _ => false,
    }
}

/// How many dead letters one source has for one reason (`botpipe dlq list`'s summary).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DeadLetterCount {
    /// Endpoint name or `push:<relay>`.
    pub source: String,
    /// The reason as stored.
    pub reason: String,
    /// Letters with both.
    pub count: u64,
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

impl StoredDeadLetter {
    /// A dead letter from its stored columns, the same way on every backend: a reason this
    /// version does not know reads as [`RejectReason::StoreRejected`] and an unreadable
    /// `rejected_at` as the Unix epoch, each said in the detail rather than hidden.
    pub fn from_columns(
        id: i64,
        source: String,
        reason: &str,
        detail: String,
        raw: String,
        rejected_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Self {
        let mut notes = Vec::new();
        let parsed = RejectReason::parse(reason).unwrap_or_else(|| {
            notes.push(format!(
                "stored reason {reason:?} is unknown to this botpipe"
            ));
            RejectReason::StoreRejected
        });
        let at = rejected_at.unwrap_or_else(|| {
            notes.push("stored rejected_at is unreadable".to_owned());
            chrono::DateTime::UNIX_EPOCH
        });
        let detail = if notes.is_empty() {
            detail
        } else {
            format!("[{}] {detail}", notes.join("; "))
        };
        Self {
            id,
            letter: DeadLetter {
                source,
                reason: parsed,
                detail,
                raw,
                rejected_at: at,
            },
        }
    }
}

/// What one migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// The steps applied now, as `<scope> v<version>: <description>`; empty when the schema was
    /// current.
    pub applied: Vec<String>,
    /// The types whose tables exist (each now current). The other allowed types get their
    /// tables when their first record arrives.
    pub types: Vec<String>,
    /// Per type, node rows whose stored status contradicts the status rule, found when the
    /// legacy names were normalised (reported, not changed).
    pub contradictions: BTreeMap<String, u64>,
}

/// The platform database.
pub trait Store: Send + Sync {
    /// Creates or upgrades botpipe's own tables and upgrades the existing tables of the types
    /// of `types`. Tables of a type are created when its first record is applied, not here: the
    /// legacy aggregator treats an empty table as a failure.
    fn migrate(
        &self,
        types: &BTreeSet<BotnetType>,
    ) -> impl Future<Output = Result<MigrationReport, StoreError>> + Send;

    /// Applies a batch and its dead letters in one transaction with the merge rules.
    fn apply(
        &self,
        batch: &EnrichedBatch,
    ) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// Exact row counts per type, status and dead-letter reason.
    fn counts(&self) -> impl Future<Output = Result<StoreCounts, StoreError>> + Send;

    /// Row counts for status output: exact where counting is cheap or the only way, catalogue
    /// estimates for communication rows where the database keeps them (see [`CountSample`]).
    /// Never waits behind the store's own writes.
    fn sample_counts(&self) -> impl Future<Output = Result<CountSample, StoreError>> + Send;

    /// Dead letters, newest first, after id `before` if given.
    fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> impl Future<Output = Result<Vec<StoredDeadLetter>, StoreError>> + Send;

    /// Dead letters counted per source and reason, in no particular order; none when the
    /// table does not exist yet.
    fn dead_letter_counts(
        &self,
    ) -> impl Future<Output = Result<Vec<DeadLetterCount>, StoreError>> + Send;

    /// Deletes the dead letters with these ids (after `botpipe dlq replay` re-queued them, so a
    /// second replay finds nothing to duplicate); returns how many rows went. Unknown ids are
    /// ignored.
    fn delete_dead_letters(
        &self,
        ids: &[i64],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Readiness check: the database answers and would accept a write now (for SQLite: the
    /// write lock can be taken), within a short timeout.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The configured store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PostgresStore),
    /// MySQL or MariaDB.
    Mysql(MysqlStore),
}

/// Opens the configured store: the SQLite file, or a connection pool with the password resolved
/// from its [`SecretSource`](crate::config::SecretSource). Does not migrate; call
/// [`Store::migrate`] with the allowed types (`botpipe migrate`, or at start unless
/// `store.migrate_on_start = false`).
///
/// # Errors
/// When the password cannot be read, the URL is invalid or the database is unreachable.
pub async fn open(settings: &crate::config::StoreSettings) -> Result<AnyStore, StoreError> {
    use crate::config::StoreKind;
    use secrecy::ExposeSecret;
    let password = settings
        .password
        .as_ref()
        .map(|p| p.resolve())
        .transpose()?;
    let password = password.as_ref().map(|p| p.expose_secret());
    let clock = clock::WallClock::new(settings.timezone);
    match &settings.kind {
        StoreKind::Sqlite(path) => SqliteStore::open_in(path, clock).map(AnyStore::Sqlite),
        StoreKind::Postgres(url) => {
            PostgresStore::connect(url, password, settings.max_connections, clock)
                .await
                .map(AnyStore::Postgres)
        }
        StoreKind::Mysql(url) => {
            MysqlStore::connect(url, password, settings.max_connections, clock)
                .await
                .map(AnyStore::Mysql)
        }
    }
}

/// Dispatches one call to the configured backend.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Self::Sqlite($s) => $call,
            Self::Postgres($s) => $call,
            Self::Mysql($s) => $call,
        }
    };
}

impl AnyStore {
    /// The zones the stored times involve, asked from the database (`validate`, start-up).
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn time_zones(&self) -> Result<clock::TimeZones, StoreError> {
        use sqlx::Row;
        let err = |what: &str| {
            let op = format!("reading the {what} time zone");
            move |source| StoreError::Sqlx { op, source }
        };
        match self {
            Self::Sqlite(s) => Ok(clock::TimeZones {
                tables: s.clock().tz(),
                server: None,
                session: None,
                server_offset_minutes: None,
            }),
            Self::Postgres(s) => {
                let row = sqlx::query(
                    "SELECT current_setting('TimeZone'),
                            (EXTRACT(TIMEZONE FROM now()) / 60)::int8",
                )
                .fetch_one(s.pool())
                .await
                .map_err(err("PostgreSQL"))?;
                Ok(clock::TimeZones {
                    tables: s.clock().tz(),
                    server: None,
                    session: Some(row.try_get(0).map_err(err("PostgreSQL"))?),
                    server_offset_minutes: None,
                })
            }
            Self::Mysql(s) => {
                let row = sqlx::query(
                    "SELECT CAST(@@global.time_zone AS CHAR), CAST(@@system_time_zone AS CHAR),
                            CAST(@@session.time_zone AS CHAR),
                            CAST(TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW()) AS SIGNED)",
                )
                .fetch_one(s.pool())
                .await
                .map_err(err("MySQL"))?;
                let get = |i: usize| -> Result<String, StoreError> {
                    row.try_get::<String, _>(i).map_err(err("MySQL"))
                };
                let name = |zone: String, system: &str| {
                    if zone == "SYSTEM" {
                        format!("SYSTEM ({system})")
                    } else {
                        zone
                    }
                };
                let system = get(1)?;
                Ok(clock::TimeZones {
                    tables: s.clock().tz(),
                    server: Some(name(get(0)?, &system)),
                    session: Some(name(get(2)?, &system)),
                    server_offset_minutes: Some(row.try_get(3).map_err(err("MySQL"))?),
                })
            }
        }
    }

    /// Why this store would refuse `record` whatever its other rows (a MySQL `TIMESTAMP` cannot
    /// hold its time), or `None`; the store applies the same rule when it writes. For
    /// `botpipe dlq replay`, which leaves such letters where they are.
    pub fn refusal(&self, record: &crate::record::Record) -> Option<String> {
        match self {
            Self::Sqlite(_) | Self::Postgres(_) => None,
            Self::Mysql(_) => mysql::unstorable_time(&record.timestamp),
        }
    }

    /// Closes the connections of a network store (waiting for those in use to come back);
    /// nothing to do for SQLite.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(_) => {}
            Self::Postgres(s) => s.pool().close().await,
            Self::Mysql(s) => s.pool().close().await,
        }
    }

    /// The backend's write statements for `batch` from a bare loop, without the store around
    /// them (see [`sql::SqlStore::apply_raw`]); SQLite has no other path than
    /// [`Store::apply`]. For `botpipe bench` and `benches/`.
    ///
    /// # Errors
    /// Whatever the database reports.
    pub async fn apply_raw(&self, batch: &EnrichedBatch) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.apply(batch).await.map(|o| o.communications_inserted),
            Self::Postgres(s) => s.apply_raw(batch).await,
            Self::Mysql(s) => s.apply_raw(batch).await,
        }
    }
}

impl Store for AnyStore {
    async fn migrate(&self, types: &BTreeSet<BotnetType>) -> Result<MigrationReport, StoreError> {
        dispatch!(self, s => s.migrate(types).await)
    }
    async fn apply(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        dispatch!(self, s => s.apply(batch).await)
    }
    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        dispatch!(self, s => s.counts().await)
    }
    async fn sample_counts(&self) -> Result<CountSample, StoreError> {
        dispatch!(self, s => s.sample_counts().await)
    }
    async fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        dispatch!(self, s => s.dead_letters(limit, before).await)
    }
    async fn dead_letter_counts(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        dispatch!(self, s => s.dead_letter_counts().await)
    }
    async fn delete_dead_letters(&self, ids: &[i64]) -> Result<u64, StoreError> {
        dispatch!(self, s => s.delete_dead_letters(ids).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_errors_are_retryable() {
        let e = StoreError::Sqlx {
            op: "x".into(),
            source: sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(e.is_retryable());
        assert!(!e.is_row_rejection());
        let e = StoreError::Sqlx {
            op: "x".into(),
            source: sqlx::Error::PoolTimedOut,
        };
        assert!(e.is_retryable());
        let e = StoreError::Sqlx {
            op: "x".into(),
            source: sqlx::Error::RowNotFound,
        };
        assert!(!e.is_retryable());
        assert!(StoreError::Conflict { table: "t".into() }.is_retryable());
        assert!(StoreError::PartitionBusy { partition: 3 }.is_retryable());
        assert!(StoreError::NoAnswer {
            op: "storing batch b".into(),
            after: std::time::Duration::from_secs(1),
        }
        .is_retryable());
        assert!(!StoreError::Schema {
            table: "t".into(),
            problem: "p".into()
        }
        .is_retryable());
    }
}

#[cfg(test)]
mod dead_letter_tests {
    use super::*;

    #[test]
    fn unknown_reasons_and_times_read_back_the_same_everywhere_and_say_so() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0);
        let ok =
            StoredDeadLetter::from_columns(1, "s".into(), "bad_ip", "d".into(), "r".into(), at);
        assert_eq!(ok.letter.reason, RejectReason::BadIp);
        assert_eq!(ok.letter.detail, "d");
        let odd = StoredDeadLetter::from_columns(
            2,
            "s".into(),
            "from_the_future",
            "d".into(),
            "r".into(),
            None,
        );
        assert_eq!(odd.letter.reason, RejectReason::StoreRejected);
        assert!(
            odd.letter.detail.contains("\"from_the_future\" is unknown"),
            "{}",
            odd.letter.detail
        );
        assert!(odd.letter.detail.contains("rejected_at is unreadable"));
        assert!(odd.letter.detail.ends_with("] d"));
    }
}
