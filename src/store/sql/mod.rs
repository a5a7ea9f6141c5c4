//! [`SqlStore`]: the platform schema on a network database, one generic store over a small
//! [`Dialect`] trait with two implementations, [`super::postgres::Postgres`] and
//! [`super::mysql::Mysql`].
//!
//! What is the same on every network database lives here: the pool, retries, the per-type
//! statement cache, partitioned write transactions, the isolation of rows the database refuses,
//! the migration loop and its bookkeeping, counts and dead letters. A dialect supplies only what
//! differs: its SQL text (DDL in `.sql` files beside the dialect), the write of one type's rows,
//! the dead-letter insert, the locks, and how a legacy table is altered.
//!
//! **Partitioned writes: no deadlocks by construction.** A batch's node deltas and
//! communications are split by a stable hash of their IP into [`WRITE_PARTITIONS`] partitions,
//! and a transaction writes a partition's rows only while it holds that partition's
//! database-wide lock (PostgreSQL `pg_advisory_xact_lock`, MySQL `GET_LOCK`). Two transactions
//! that could touch the same node or communication row therefore never run at once, in this
//! process or any other botpipe process on the same database. A transaction takes partition
//! locks only without waiting (skipping busy ones), until it has [`TX_TARGET_RECORDS`] records;
//! only when every pending partition is busy does it wait, for one, while holding none. A
//! transaction that waits holds nothing, so no cycle of waits can form. Two workers thus split
//! the partitions between them instead of queueing on the same rows. Retrying a failed
//! transaction stays as a safety net (a writer outside botpipe, a lost connection), not as the
//! normal path.
//!
//! A batch is thus one transaction or a few (a 1,000-record batch is usually one, a 5,000-record
//! batch two). It is acknowledged only after all of them committed; if botpipe dies in between,
//! the batch is delivered again and the merge rules make the partitions already written a no-op.

mod conn;
mod migrate;
mod partition;

pub use conn::{Affected, ColumnInfo, IndexInfo, SqlConn};
pub use migrate::{Change, TimeDefault};
pub use partition::{partition_of, TX_TARGET_RECORDS, WRITE_PARTITIONS};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use futures::future::BoxFuture;
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Acquire, Database, Pool};

use super::clock::WallClock;
use super::columns::fit_batch;
use super::merge::{plan, TypePlan};
use super::recovery::{self, Isolation};
use super::{
    Accuracy, ApplyOutcome, CountSample, DeadLetterCount, EnrichedBatch, MigrationReport, Store,
    StoreCounts, StoreError, StoredDeadLetter,
};
use crate::record::{BotnetType, DeadLetter, NodeIp, RejectReason};
use crate::telemetry::metrics::DEAD_LETTERS_TOTAL;
use partition::Part;

/// How long a batch waits for a pooled connection before the attempt counts as transient.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Dead-letter ids per `DELETE … IN (…)`, far below every bind limit.
const DELETE_CHUNK: usize = 1000;
/// The largest table (bytes on disk) that status sampling counts row by row when the catalogue
/// has no estimate for it yet: a few hundred milliseconds of reading at most.
const EXACT_COUNT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// [`Dialect::ESTIMATE_ROWS`] kind: the row count is the catalogue's estimate.
pub const ESTIMATED: &str = "estimate";
/// [`Dialect::ESTIMATE_ROWS`] kind: no estimate, and small enough to count.
pub const SMALL: &str = "small";

/// What a dialect method returns when it fails with the database's own error.
pub type SqlFuture<'a, T> = BoxFuture<'a, Result<T, sqlx::Error>>;
/// What a dialect method returns when it fails with a store error (with its context).
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// The connection type of a dialect's database.
pub type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
/// The connect options of a dialect's database.
pub type ConnectOptions<D> = <Conn<D> as sqlx::Connection>::Options;

/// What differs between PostgreSQL and MySQL/MariaDB.
pub trait Dialect: Debug + Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Db: Database<Connection: SqlConn>;
    /// The prepared statement texts of one botnet type.
    type Statements: for<'t> From<&'t BotnetType> + Debug + Send + Sync + 'static;

    /// Backend label for metrics and logs.
    const BACKEND: &'static str;
    /// Statements run on every new connection.
    const SESSION_SETUP: &'static [&'static str];
    /// The nodes table of a type, if missing: a template for [`fill`](crate::store::schema).
    const NODES_DDL: &'static str;
    /// The communications table of a type, if missing: a template likewise.
    const COMMUNICATIONS_DDL: &'static str;
    /// botpipe's own tables (`botpipe_schema_migrations`, `botpipe_dead_letters`).
    const BOTPIPE_SCHEMA: &'static [&'static str];
    /// Whether index names are unique per schema (PostgreSQL) rather than per table (MySQL).
    const INDEX_NAMES_ARE_GLOBAL: bool;
    /// Every table name in the current schema or database.
    const LIST_TABLES: &'static str;
    /// `(status, count)` of the nodes table `{table}`.
    const COUNT_BY_STATUS: &'static str;
    /// `(reason, count)` of the dead letters.
    const COUNT_DEAD_LETTERS: &'static str;
    /// `('rows', count)` of the table `{table}`.
    const COUNT_ROWS: &'static str;
    /// `(kind, rows)` of the table `{table}` from the catalogue, without reading the table:
    /// kind [`ESTIMATED`] with the estimate, [`SMALL`] when the catalogue has none but the table
    /// takes at most `{small_bytes}` bytes (count it), anything else when there is no number.
    const ESTIMATE_ROWS: &'static str;
    /// A page of dead letters, newest first: binds `before`, `limit`; `rejected_at` as
    /// [`TIME_FORMAT`](super::clock::TIME_FORMAT) text of the tables' wall-clock.
    const DEAD_LETTER_PAGE: &'static str;
    /// Records a migration step: binds scope, description, version.
    const RECORD_STEP: &'static str;
    /// `(scope, highest version)` of the recorded steps.
    const APPLIED_VERSIONS: &'static str;
    /// Rewrites the bare numeric ASNs of table `{table}` as `AS<number>`.
    const NUMERIC_ASN: &'static str;
    /// The columns of a table: binds the table name (see [`SqlConn::columns`]).
    const COLUMNS: &'static str;
    /// The non-primary indexes of a table: binds the table name (see [`SqlConn::indexes`]).
    const INDEXES: &'static str;

    /// `opts` with `password` (given apart from the URL).
    fn with_password(opts: ConnectOptions<Self>, password: &str) -> ConnectOptions<Self>;

    /// The session options botpipe needs on top of the URL's, and the dialect for them, writing
    /// times in `clock`'s wall-clock.
    fn configure(opts: ConnectOptions<Self>, clock: WallClock) -> (Self, ConnectOptions<Self>);

    /// The wall-clock the tables' times are written in.
    fn clock(&self) -> WallClock;

    /// Statements run on every new connection after [`Self::SESSION_SETUP`], for settings
    /// that depend on the configuration.
    fn session_statements(&self) -> Vec<String> {
        Vec::new()
    }

    /// `host:port/database` with the backend name, for messages (never the password).
    fn target(&self) -> &str;

    /// `n` bind placeholders separated by commas.
    fn placeholders(n: usize) -> String;

    /// The DDL for one [`Change`] set on `table`.
    fn alter(table: &str, changes: &[Change<'_>]) -> Vec<String>;

    /// The DDL that lets the legacy `status` column of `table` take `'cleaned'`, if it cannot.
    fn status_ddl<'a>(
        conn: &'a mut Conn<Self>,
        table: &'a str,
        status: &'a ColumnInfo,
    ) -> SqlFuture<'a, Vec<String>>;

    /// Takes the migration lock for the transaction or session of `conn`.
    fn lock_migrations<'a>(
        &'a self,
        conn: &'a mut Conn<Self>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Releases the migration lock if it outlives the transaction.
    fn unlock_migrations<'a>(
        &'a self,
        conn: &'a mut Conn<Self>,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// Takes write partition `p`'s lock inside the open transaction of `conn`: without waiting
    /// (`false` when another transaction holds it), or waiting up to a bound. A transaction may
    /// hold several.
    fn lock_partition<'a>(
        &'a self,
        conn: &'a mut Conn<Self>,
        p: u32,
        wait: bool,
    ) -> BoxFuture<'a, Result<bool, sqlx::Error>>;

    /// Releases the partition locks of `conn` after its transaction ended, if they outlive it.
    fn unlock_partitions<'a>(&'a self, conn: &'a mut Conn<Self>) -> SqlFuture<'a, ()>;

    /// Writes one type's node deltas and communications inside the caller's transaction;
    /// returns the number of communications inserted.
    fn write_type<'a>(
        &'a self,
        conn: &'a mut Conn<Self>,
        w: Write<'a, Self>,
    ) -> StoreFuture<'a, u64>;

    /// Inserts dead letters inside the caller's transaction.
    fn insert_letters<'a>(
        &'a self,
        conn: &'a mut Conn<Self>,
        l: Letters<'a>,
    ) -> StoreFuture<'a, ()>;

    /// `batch` without the records this database cannot hold at all (dead letters of the
    /// returned batch); `None` when every record can be stored.
    fn screen(_batch: &EnrichedBatch) -> Option<EnrichedBatch> {
        None
    }
}

/// One type's share of a batch, for [`Dialect::write_type`].
#[derive(Debug)]
pub struct Write<'a, D: Dialect> {
    /// The type's statements.
    pub sql: &'a D::Statements,
    /// The node deltas and communications.
    pub plan: &'a TypePlan<'a>,
    /// The transaction's time (`updated_at`, `received_at`), whole seconds.
    pub now: DateTime<Utc>,
}

/// Dead letters of one batch, for [`Dialect::insert_letters`]. A letter is keyed by its batch
/// and its position there, so a replayed batch's letters are skipped.
#[derive(Debug, Clone, Copy)]
pub struct Letters<'a> {
    /// The letters.
    pub letters: &'a [DeadLetter],
    /// `positions[i]` is the position of `letters[i]` in its batch: the batch's own dead
    /// letters first, then its records (see [`letter_position`]).
    pub positions: &'a [u32],
    /// The batch they came with.
    pub batch_id: &'a str,
}

/// The position that keys the dead letter of record `index` of `batch`: after the batch's own
/// dead letters, which take `0..n`.
pub fn letter_position(batch: &EnrichedBatch, index: usize) -> u32 {
    u32::try_from(batch.batch.dead_letters.len() + index).unwrap_or(u32::MAX)
}

/// The positions `0..n` of a batch's own dead letters.
fn own_positions(batch: &EnrichedBatch) -> Vec<u32> {
    (0..batch.batch.dead_letters.len())
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect()
}

/// What every transaction of one batch works from: the batch, its partitions still to write,
/// the batch's time, and whether its own dead letters are still to write.
#[derive(Clone, Copy)]
struct Round<'r, 'a> {
    batch: &'a EnrichedBatch,
    pending: &'r [Part<'a>],
    now: DateTime<Utc>,
    letters: bool,
}

/// A pooled connection that goes back to the pool only once its user says the work on it
/// finished ([`Checkout::done`]); dropped before that, it is closed instead. A caller's timeout
/// (the worker's bound on a write, a probe's, a sampler's) drops the work mid-statement, and
/// sqlx would test such a connection with a ping on its way back to the pool: on a black-holed
/// server the ping never returns, and the pool slot with it (issue 12). Closing is bounded by
/// sqlx (5 s) and frees the slot. A `?` between acquiring and `done` closes the connection too,
/// which costs a reconnect on an error path only.
struct Checkout<DB: Database> {
    conn: PoolConnection<DB>,
    done: bool,
}

impl<DB: Database> Checkout<DB> {
    /// The work on the connection finished (either way): back to the pool with it.
    fn done(mut self) {
        self.done = true;
    }
}

impl<DB: Database> std::ops::Deref for Checkout<DB> {
    type Target = PoolConnection<DB>;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> std::ops::DerefMut for Checkout<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB: Database> Drop for Checkout<DB> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// A store on a network database. Cheap to clone; clones share the pool.
#[derive(Debug)]
pub struct SqlStore<D: Dialect> {
    pool: Pool<D::Db>,
    dialect: Arc<D>,
    /// Types whose tables are migrated in this process, with their statements.
    types: Arc<Mutex<HashMap<BotnetType, Arc<D::Statements>>>>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            dialect: Arc::clone(&self.dialect),
            types: Arc::clone(&self.types),
        }
    }
}

/// Timestamps are stored to the second on every backend (MySQL's `TIMESTAMP` has no fraction
/// here and would round where SQLite truncates), so that every backend holds the same rows and
/// a replay compares equal.
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// How messages name a database: `backend host:port/database` (never the password).
pub fn describe(backend: &str, host: &str, port: u16, database: Option<&str>) -> String {
    format!("{backend} {host}:{port}/{}", database.unwrap_or(""))
}

fn letters_of<'a>(
    batch: &'a EnrichedBatch,
    letters: &'a [DeadLetter],
    positions: &'a [u32],
) -> Letters<'a> {
    Letters {
        letters,
        positions,
        batch_id: &batch.batch.id.0,
    }
}

/// The error for `op` on `target`.
pub fn sql_err(target: &str, op: impl std::fmt::Display) -> impl FnOnce(sqlx::Error) -> StoreError {
    let op = format!("{target}: {op}");
    move |source| StoreError::Sqlx { op, source }
}

impl<D: Dialect> SqlStore<D> {
    /// A pool for `url`, with `password` if the URL has none, writing times in `clock`'s
    /// wall-clock. Connects lazily: an unreachable server shows up as a retryable error on
    /// first use, not here.
    ///
    /// # Errors
    /// When the URL is not one of this dialect's.
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        max_connections: u32,
        clock: WallClock,
    ) -> Result<Self, StoreError> {
        let mut opts: ConnectOptions<D> = url.parse().map_err(|source| StoreError::Sqlx {
            op: format!("parsing the {} URL in store.url", D::BACKEND),
            source,
        })?;
        if let Some(p) = password {
            opts = D::with_password(opts, p);
        }
        let (dialect, opts) = D::configure(opts, clock);
        crate::store::recovery::register_metrics(D::BACKEND);
        let session: Arc<Vec<String>> = Arc::new(dialect.session_statements());
        let pool = PoolOptions::<D::Db>::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let session = Arc::clone(&session);
                Box::pin(async move {
                    for s in D::SESSION_SETUP {
                        conn.run(s).await?;
                    }
                    for s in session.iter() {
                        conn.run(s).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(opts);
        Ok(Self {
            pool,
            dialect: Arc::new(dialect),
            types: Arc::default(),
        })
    }

    /// The pool, for tools that inspect the database (tests, benchmarks).
    pub fn pool(&self) -> &Pool<D::Db> {
        &self.pool
    }

    /// The wall-clock the tables' times are written in.
    pub fn clock(&self) -> WallClock {
        self.dialect.clock()
    }

    fn err(&self, op: impl std::fmt::Display) -> impl FnOnce(sqlx::Error) -> StoreError {
        sql_err(self.dialect.target(), op)
    }

    fn statements(&self, t: &BotnetType) -> Result<Arc<D::Statements>, StoreError> {
        self.types
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(t)
            .cloned()
            .ok_or_else(|| StoreError::Schema {
                table: t.nodes_table(),
                problem: "not migrated".into(),
            })
    }

    /// A connection from the pool, returned to it only through [`Checkout::done`].
    async fn acquire(&self, why: &str) -> Result<Checkout<D::Db>, StoreError> {
        let conn = self.pool.acquire().await.map_err(self.err(why))?;
        Ok(Checkout { conn, done: false })
    }

    /// Migrates the types of `batch` that this process has not migrated yet: a type is created
    /// when first seen.
    async fn ensure_types(&self, batch: &EnrichedBatch) -> Result<(), StoreError> {
        let missing: BTreeSet<BotnetType> = {
            let known = self.types.lock().unwrap_or_else(|p| p.into_inner());
            batch
                .batch
                .records
                .iter()
                .map(|r| &r.botnet_type)
                .filter(|t| !known.contains_key(*t))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        recovery::with_retries(D::BACKEND, || self.migrate_locked(&missing, true)).await?;
        self.register(missing.iter());
        Ok(())
    }

    /// Marks `types` as migrated in this process.
    fn register<'t>(&self, types: impl Iterator<Item = &'t BotnetType>) {
        let mut known = self.types.lock().unwrap_or_else(|p| p.into_inner());
        for t in types {
            known
                .entry(t.clone())
                .or_insert_with(|| Arc::new(D::Statements::from(t)));
        }
    }

    /// Writes every partition of `batch`: each transaction takes the partitions it can lock
    /// without waiting, up to [`TX_TARGET_RECORDS`] records, writes them and commits, until none
    /// is left. The batch's own dead letters go with the first transaction (or alone, if the
    /// batch has no records).
    async fn apply_partitioned(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        let plans = plan(batch);
        let now = whole_seconds(Utc::now());
        let mut pending: Vec<Part<'_>> = partition::split(batch, &plans);
        let mut out = ApplyOutcome::default();
        let mut letters = !batch.batch.dead_letters.is_empty();
        if pending.is_empty() {
            if letters {
                out +=
                    recovery::with_retries(D::BACKEND, || self.write_letters_only(batch)).await?;
            }
            return Ok(out);
        }
        while !pending.is_empty() {
            let round = Round {
                batch,
                pending: &pending,
                now,
                letters,
            };
            let (done, taken) =
                recovery::with_retries(D::BACKEND, || self.apply_some(round)).await?;
            out += done;
            letters = false;
            pending.retain(|p| !taken.contains(&p.id));
        }
        Ok(out)
    }

    async fn write_letters_only(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        let mut conn = self.acquire("beginning dead-letter transaction").await?;
        let pooled: &mut PoolConnection<D::Db> = &mut conn;
        let mut tx = pooled
            .begin()
            .await
            .map_err(self.err("beginning dead-letter transaction"))?;
        let positions = own_positions(batch);
        self.dialect
            .insert_letters(
                &mut *tx,
                letters_of(batch, &batch.batch.dead_letters, &positions),
            )
            .await?;
        tx.commit()
            .await
            .map_err(self.err(format_args!("committing batch {}", batch.batch.id)))?;
        conn.done();
        Ok(ApplyOutcome {
            dead_letters: batch.batch.dead_letters.len() as u64,
            ..ApplyOutcome::default()
        })
    }

    /// One transaction over some of the `pending` partitions (see [`Self::attempt_in_tx`]);
    /// when the database refuses a row, once more with the refused rows isolated. Returns what
    /// it wrote and the partitions it wrote.
    async fn apply_some(
        &self,
        round: Round<'_, '_>,
    ) -> Result<(ApplyOutcome, Vec<u32>), StoreError> {
        let mut conn = self.acquire("beginning batch transaction").await?;
        let mut result = self.attempt(&mut conn, round, false).await;
        if matches!(&result, Err(e) if e.is_row_rejection()) {
            result = self.attempt(&mut conn, round, true).await;
        }
        conn.done();
        result
    }

    /// One transaction, then its partition locks released (session locks outlive the
    /// transaction on MySQL). A connection whose locks could not be released is closed, which
    /// releases them.
    async fn attempt(
        &self,
        conn: &mut PoolConnection<D::Db>,
        round: Round<'_, '_>,
        isolate: bool,
    ) -> Result<(ApplyOutcome, Vec<u32>), StoreError> {
        let result = self.attempt_in_tx(conn, round, isolate).await;
        if let Err(error) = self.dialect.unlock_partitions(conn).await {
            tracing::warn!(backend = D::BACKEND, %error, "Releasing write partition locks failed; closing the connection.");
            conn.close_on_drop();
        }
        result
    }

    /// Locks partitions in the order of `pending` without waiting, skipping busy ones, until
    /// the transaction has [`TX_TARGET_RECORDS`] records; if every one is busy, waits for the
    /// first while holding nothing else. Waiting only with no lock held means no cycle of waits
    /// can form. Then writes what it locked and commits.
    async fn attempt_in_tx(
        &self,
        conn: &mut PoolConnection<D::Db>,
        round: Round<'_, '_>,
        isolate: bool,
    ) -> Result<(ApplyOutcome, Vec<u32>), StoreError> {
        let Round {
            batch,
            pending,
            now,
            letters,
        } = round;
        let mut tx = conn
            .begin()
            .await
            .map_err(self.err("beginning batch transaction"))?;
        let mut taken: Vec<&Part<'_>> = Vec::new();
        let mut records = 0usize;
        for part in pending {
            if records >= TX_TARGET_RECORDS {
                break;
            }
            let locked = self
                .dialect
                .lock_partition(&mut *tx, part.id, false)
                .await
                .map_err(self.err(format_args!("locking write partition {}", part.id)))?;
            if locked {
                records += part.records.len();
                taken.push(part);
            }
        }
        if taken.is_empty() {
            let Some(first) = pending.first() else {
                return Ok((ApplyOutcome::default(), Vec::new()));
            };
            let locked = self
                .dialect
                .lock_partition(&mut *tx, first.id, true)
                .await
                .map_err(self.err(format_args!("waiting for write partition {}", first.id)))?;
            if !locked {
                return Err(StoreError::PartitionBusy {
                    partition: first.id,
                });
            }
            taken.push(first);
        }
        let ids: Vec<u32> = taken.iter().map(|p| p.id).collect();
        let mut out = if isolate {
            let mut indexes: Vec<usize> = taken
                .iter()
                .flat_map(|p| p.records.iter().copied())
                .collect();
            indexes.sort_unstable();
            self.write_isolating(&mut tx, batch, &indexes, now, letters)
                .await?
        } else {
            let plans = partition::merge(&taken);
            self.write_plans(&mut *tx, &plans, now).await?
        };
        if letters && !isolate {
            let positions = own_positions(batch);
            self.dialect
                .insert_letters(
                    &mut *tx,
                    letters_of(batch, &batch.batch.dead_letters, &positions),
                )
                .await?;
            out.dead_letters += batch.batch.dead_letters.len() as u64;
        }
        tx.commit()
            .await
            .map_err(self.err(format_args!("committing batch {}", batch.batch.id)))?;
        Ok((out, ids))
    }

    async fn write_plans(
        &self,
        conn: &mut Conn<D>,
        plans: &[TypePlan<'_>],
        now: DateTime<Utc>,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut out = ApplyOutcome::default();
        for p in plans {
            if p.nodes.is_empty() {
                continue;
            }
            let sql = self.statements(&p.botnet_type)?;
            let w = Write {
                sql: sql.as_ref(),
                plan: p,
                now,
            };
            let added = self.dialect.write_type(conn, w).await?;
            let planned = p.communications.len() as u64;
            out.nodes += p.nodes.len() as u64;
            out.communications_inserted += added;
            out.communications_duplicate += planned - added.min(planned);
        }
        Ok(out)
    }

    /// The slow path after a row rejection, inside the partition's transaction: see
    /// [`super::recovery`].
    async fn write_isolating(
        &self,
        tx: &mut sqlx::Transaction<'_, D::Db>,
        batch: &EnrichedBatch,
        records: &[usize],
        now: DateTime<Utc>,
        letters: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut out = ApplyOutcome::default();
        let mut nodes: HashSet<(BotnetType, NodeIp)> = HashSet::new();
        let mut rejected: Vec<DeadLetter> = Vec::new();
        let mut rejected_at: Vec<u32> = Vec::new();
        let mut iso = Isolation::new(records.len());
        while let Some(slice) = iso.next_slice() {
            let indexes = records.get(slice.clone()).unwrap_or_default();
            let sub = recovery::sub_batch(batch, indexes);
            let plans = plan(&sub);
            let mut sp = tx.begin().await.map_err(self.err("creating savepoint"))?;
            match self.write_plans(&mut *sp, &plans, now).await {
                Ok(done) => {
                    sp.commit().await.map_err(self.err("releasing savepoint"))?;
                    out.communications_inserted += done.communications_inserted;
                    out.communications_duplicate += done.communications_duplicate;
                    nodes.extend(
                        sub.batch
                            .records
                            .iter()
                            .map(|r| (r.botnet_type.clone(), r.ip)),
                    );
                }
                Err(e) if e.is_row_rejection() => {
                    sp.rollback()
                        .await
                        .map_err(self.err("rolling back to savepoint"))?;
                    if let Some(i) = iso.refused(slice) {
                        if let Some(&record) = records.get(i) {
                            rejected.push(recovery::rejected_letter(batch, record, &e.to_string()));
                            rejected_at.push(letter_position(batch, record));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let mut all: Vec<DeadLetter> = Vec::new();
        let mut positions: Vec<u32> = Vec::new();
        if letters {
            all.extend(batch.batch.dead_letters.iter().cloned());
            positions = own_positions(batch);
        }
        all.extend(rejected.iter().cloned());
        positions.extend(rejected_at);
        self.dialect
            .insert_letters(&mut **tx, letters_of(batch, &all, &positions))
            .await?;
        out.nodes = nodes.len() as u64;
        out.dead_letters = all.len() as u64;
        metrics::counter!(DEAD_LETTERS_TOTAL, "reason" => RejectReason::StoreRejected.as_str())
            .increment(rejected.len() as u64);
        tracing::warn!(
            backend = D::BACKEND,
            batch = %batch.batch.id,
            rejected = rejected.len(),
            "The database refused some records; they are dead letters and the rest of the batch is committed."
        );
        Ok(out)
    }

    /// The store's statements for `batch` from a bare loop: one transaction, no partitions, no
    /// retries, no isolation of refused rows. What `botpipe bench store` compares the store
    /// with. Geography is still cut to its columns: that is a property of the data the
    /// statements need, not overhead of the store.
    ///
    /// # Errors
    /// Whatever the database reports.
    pub async fn apply_raw(&self, batch: &EnrichedBatch) -> Result<u64, StoreError> {
        let fitted = fit_batch(batch);
        self.ensure_types(&fitted).await?;
        let plans = plan(&fitted);
        let now = whole_seconds(Utc::now());
        let mut tx = self.pool.begin().await.map_err(self.err("beginning"))?;
        let out = self.write_plans(&mut *tx, &plans, now).await?;
        tx.commit().await.map_err(self.err("committing"))?;
        Ok(out.communications_inserted)
    }

    async fn migrate_locked(
        &self,
        types: &BTreeSet<BotnetType>,
        create: bool,
    ) -> Result<MigrationReport, StoreError> {
        let mut conn = self.acquire("connecting to migrate").await?;
        let result = self.migrate_in_tx(&mut conn, types, create).await;
        if let Err(error) = self.dialect.unlock_migrations(&mut conn).await {
            tracing::warn!(%error, "Releasing the migration lock failed; closing the connection.");
            conn.close_on_drop();
        }
        conn.done();
        result
    }

    async fn migrate_in_tx(
        &self,
        conn: &mut PoolConnection<D::Db>,
        types: &BTreeSet<BotnetType>,
        create: bool,
    ) -> Result<MigrationReport, StoreError> {
        let mut tx = conn
            .begin()
            .await
            .map_err(self.err("beginning migration"))?;
        self.dialect.lock_migrations(&mut *tx).await?;
        let report = migrate::run::<D>(&mut *tx, self.dialect.target(), types, create).await?;
        tx.commit()
            .await
            .map_err(self.err("committing migration"))?;
        Ok(report)
    }
}

impl<D: Dialect> Store for SqlStore<D> {
    async fn migrate(&self, types: &BTreeSet<BotnetType>) -> Result<MigrationReport, StoreError> {
        let report =
            recovery::with_retries(D::BACKEND, || self.migrate_locked(types, false)).await?;
        let existing: BTreeSet<&str> = report.types.iter().map(String::as_str).collect();
        self.register(types.iter().filter(|t| existing.contains(t.as_str())));
        Ok(report)
    }

    async fn apply(&self, batch: &EnrichedBatch) -> Result<ApplyOutcome, StoreError> {
        let fitted = fit_batch(batch);
        let screened = D::screen(&fitted);
        let batch: &EnrichedBatch = match &screened {
            Some(b) => b,
            None => fitted.as_ref(),
        };
        self.ensure_types(batch).await?;
        let mut out = self.apply_partitioned(batch).await?;
        // Every record that was not refused is either a new communication or a duplicate (a
        // replay, or a repeat inside the batch, which planning folded into one row).
        let refused = out
            .dead_letters
            .saturating_sub(batch.batch.dead_letters.len() as u64);
        out.communications_duplicate = (batch.batch.records.len() as u64)
            .saturating_sub(refused)
            .saturating_sub(out.communications_inserted);
        Ok(out)
    }

    async fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.count_rows(false).await.map(|s| s.counts)
    }

    async fn sample_counts(&self) -> Result<CountSample, StoreError> {
        self.count_rows(true).await
    }

    async fn dead_letters(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let mut conn = self.acquire("listing botpipe_dead_letters").await?;
        let page = conn
            .dead_letters(
                D::DEAD_LETTER_PAGE,
                before.unwrap_or(i64::MAX),
                i64::from(limit),
                self.dialect.clock(),
            )
            .await
            .map_err(self.err("reading botpipe_dead_letters"));
        conn.done();
        page
    }

    async fn dead_letter_counts(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        let op = "counting botpipe_dead_letters per source";
        let mut conn = self.acquire(op).await?;
        let tables = conn
            .texts(D::LIST_TABLES)
            .await
            .map_err(self.err("listing tables"))?;
        if !tables.iter().any(|t| t == "botpipe_dead_letters") {
            return Ok(Vec::new());
        }
        // The same text on both dialects: `reason` is a VARCHAR and COUNT(*) a 64-bit integer.
        let rows = conn
            .text_pair_counts(
                "SELECT source, reason, COUNT(*) FROM botpipe_dead_letters GROUP BY source, reason",
            )
            .await
            .map_err(self.err(op))?;
        Ok(rows
            .into_iter()
            .map(|(source, reason, n)| DeadLetterCount {
                source,
                reason,
                count: n.max(0) as u64,
            })
            .collect())
    }

    async fn delete_dead_letters(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let mut conn = self.acquire("deleting from botpipe_dead_letters").await?;
        let mut deleted = 0;
        for chunk in ids.chunks(DELETE_CHUNK) {
            let sql = format!(
                "DELETE FROM botpipe_dead_letters WHERE id IN ({})",
                D::placeholders(chunk.len())
            );
            deleted += conn
                .execute_with(&sql, &[], chunk)
                .await
                .map_err(self.err("deleting from botpipe_dead_letters"))?;
        }
        conn.done();
        Ok(deleted)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.acquire("ping").await?;
        let answer = conn.run("SELECT 1").await.map_err(self.err("ping"));
        conn.done();
        answer
    }
}

impl<D: Dialect> SqlStore<D> {
    /// Row counts; each type's communication rows counted exactly or, with `estimate`, taken
    /// from the catalogue where it has a number (see [`Dialect::ESTIMATE_ROWS`]).
    async fn count_rows(&self, estimate: bool) -> Result<CountSample, StoreError> {
        let mut conn = self.acquire("counting rows").await?;
        let mut out = CountSample::default();
        let tables: BTreeSet<String> = conn
            .texts(D::LIST_TABLES)
            .await
            .map_err(self.err("listing tables"))?
            .into_iter()
            .collect();
        for table in &tables {
            let Some(t) = table
                .strip_prefix("botnet_nodes_")
                .and_then(|t| BotnetType::parse(t).ok())
            else {
                continue;
            };
            let count = |sql: &str, table: &str| sql.replace("{table}", table);
            let by_status = conn
                .text_counts(&count(D::COUNT_BY_STATUS, table))
                .await
                .map_err(self.err(format_args!("counting {table}")))?
                .into_iter()
                .map(|(status, n)| (status, n.max(0) as u64))
                .collect();
            out.counts.nodes.insert(t.to_string(), by_status);
            let c = t.communications_table();
            let (rows, accuracy) = if tables.contains(&c) {
                self.count_table(&mut conn, &c, estimate).await?
            } else {
                (Some(0), Accuracy::Exact)
            };
            if let Some(n) = rows {
                out.counts.communications.insert(t.to_string(), n);
            }
            out.communications.insert(t.to_string(), accuracy);
        }
        if tables.contains("botpipe_dead_letters") {
            out.counts.dead_letters = conn
                .text_counts(D::COUNT_DEAD_LETTERS)
                .await
                .map_err(self.err("counting botpipe_dead_letters"))?
                .into_iter()
                .map(|(reason, n)| (reason, n.max(0) as u64))
                .collect();
        }
        conn.done();
        Ok(out)
    }

    /// The rows of `table`: the catalogue's estimate if `estimate` and it has one, else an
    /// exact count unless the catalogue says the table is too large to count.
    async fn count_table(
        &self,
        conn: &mut Conn<D>,
        table: &str,
        estimate: bool,
    ) -> Result<(Option<u64>, Accuracy), StoreError> {
        if estimate {
            let sql = D::ESTIMATE_ROWS
                .replace("{table}", table)
                .replace("{small_bytes}", &EXACT_COUNT_MAX_BYTES.to_string());
            let row = conn
                .text_counts(&sql)
                .await
                .map_err(self.err(format_args!("estimating the rows of {table}")))?;
            match row.first() {
                Some((kind, n)) if kind == ESTIMATED => {
                    return Ok((Some((*n).max(0) as u64), Accuracy::Estimate))
                }
                Some((kind, _)) if kind == SMALL => {}
                _ => return Ok((None, Accuracy::Unknown)),
            }
        }
        let n = conn
            .text_counts(&D::COUNT_ROWS.replace("{table}", table))
            .await
            .map_err(self.err(format_args!("counting {table}")))?
            .first()
            .map_or(0, |(_, n)| *n);
        Ok((Some(n.max(0) as u64), Accuracy::Exact))
    }
}

/// Adds up outcomes of several transactions.
impl std::ops::AddAssign for ApplyOutcome {
    fn add_assign(&mut self, o: Self) {
        self.nodes += o.nodes;
        self.communications_inserted += o.communications_inserted;
        self.communications_duplicate += o.communications_duplicate;
        self.dead_letters += o.dead_letters;
    }
}
