//! [`EmbeddedQueue`]: a queue in one SQLite file (WAL, `synchronous=FULL`), used as the default
//! queue and as the spool when Redis does not answer.
//!
//! Every call runs on the blocking pool against one connection, so SQLite never blocks the async
//! executor. An entry is a row; a lease sets `leased_until` and a fresh fencing token; an ack
//! deletes the row if the token still matches. On open, all leases are released, so batches a
//! crashed process held are delivered again at once. An entry delivered `max_deliveries` times,
//! or one that no longer decodes, moves to `botpipe_queue_dead` instead of looping forever;
//! `botpipe dlq replay-batches` moves rows back ([`EmbeddedQueue::revive_dead`]). A delivery
//! that failed only because the store was unreachable is given back ([`EmbeddedQueue::release`])
//! and does not count, so a long database outage moves nothing to the dead table.
//! The file also holds the pull cursors (`botpipe_cursors`), which the puller writes after every
//! confirm: they live beside the queue the puller already depends on, not in the store, which
//! may be stalled.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;

use super::{DeadBatch, Lease, Queue, QueueDepth, QueueError};
use crate::record::Batch;
use crate::telemetry::metrics as m;

/// How long SQLite waits on a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS botpipe_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
    source TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    leased_until_ms INTEGER,
    lease_token TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS botpipe_queue_dead (
    id INTEGER PRIMARY KEY,
    batch_id TEXT NOT NULL,
    source TEXT NOT NULL,
    payload BLOB NOT NULL,
    deliveries INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS botpipe_cursors (
    endpoint TEXT PRIMARY KEY,
    epoch TEXT,
    seq INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
";

/// A pull cursor: the last confirmed seq of an endpoint within a collector epoch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The collector's epoch when the cursor was saved (botpipe collectors only).
    pub epoch: Option<String>,
    /// Highest confirmed seq id.
    pub seq: u64,
}

/// A SQLite-file queue. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    ready: Notify,
    poisoned: AtomicBool,
    lease_timeout: Duration,
    max_deliveries: u32,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A seq as SQLite stores it: its 64 bits as a signed INTEGER. Collector seqs are `u64`; a
/// plain cast and a clamp on read used to turn any seq at or above 2^63 into cursor 0 (issue 13),
/// so the endpoint was pulled from the start again. The bits round-trip unchanged; botpipe never
/// compares seqs in SQL.
fn seq_to_sql(seq: u64) -> i64 {
    seq.cast_signed()
}

/// The inverse of [`seq_to_sql`].
fn seq_from_sql(stored: i64) -> u64 {
    stored.cast_unsigned()
}

impl EmbeddedQueue {
    /// Opens or creates the queue file, creating its directory, and releases stale leases.
    ///
    /// # Errors
    /// When the file cannot be opened or its schema created.
    pub fn open(
        path: &Path,
        lease_timeout: Duration,
        max_deliveries: u32,
    ) -> Result<Self, QueueError> {
        Self::open_with(path, lease_timeout, max_deliveries, true)
    }

    /// Opens the queue file beside a botpipe that may be running on it (`botpipe status`,
    /// `botpipe dlq replay`): unlike [`EmbeddedQueue::open`] it leaves leases alone, so the
    /// running workers' batches are not handed out twice.
    ///
    /// # Errors
    /// When the file cannot be opened or its schema created.
    pub fn attach(
        path: &Path,
        lease_timeout: Duration,
        max_deliveries: u32,
    ) -> Result<Self, QueueError> {
        Self::open_with(path, lease_timeout, max_deliveries, false)
    }

    fn open_with(
        path: &Path,
        lease_timeout: Duration,
        max_deliveries: u32,
        release_leases: bool,
    ) -> Result<Self, QueueError> {
        let err = |source| QueueError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("creating directory {}: {e}", dir.display())),
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a commit is fsynced before append returns, which is what lets the puller confirm.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        if release_leases {
            conn.execute(
                "UPDATE botpipe_queue SET leased_until_ms = NULL, lease_token = NULL WHERE leased_until_ms IS NOT NULL",
                [],
            )
            .map_err(err)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
                ready: Notify::new(),
                poisoned: AtomicBool::new(false),
                lease_timeout,
                max_deliveries: max_deliveries.max(1),
            }),
        })
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How long a lease lasts before the entry is delivered again.
    pub fn lease_timeout(&self) -> Duration {
        self.inner.lease_timeout
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Connection) -> Result<T, QueueError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&inner, &mut conn)
        })
        .await
        .map_err(|_| QueueError::Closed)?
    }

    fn sqlite_err(inner: &Inner) -> impl Fn(rusqlite::Error) -> QueueError + '_ {
        move |source| QueueError::Sqlite {
            path: inner.path.display().to_string(),
            source,
        }
    }

    /// Loads the saved cursor of `endpoint`.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub async fn load_cursor(&self, endpoint: &str) -> Result<Option<Cursor>, QueueError> {
        let endpoint = endpoint.to_owned();
        self.with_conn(move |inner, conn| {
            conn.query_row(
                "SELECT epoch, seq FROM botpipe_cursors WHERE endpoint = ?1",
                params![endpoint],
                |r| {
                    Ok(Cursor {
                        epoch: r.get(0)?,
                        seq: seq_from_sql(r.get(1)?),
                    })
                },
            )
            .optional()
            .map_err(Self::sqlite_err(inner))
        })
        .await
    }

    /// Waits until a batch is appended (or a lease released), or `max` passes.
    pub async fn wait_for_append(&self, max: Duration) {
        // Timing out is the normal idle case, not an error.
        tokio::time::timeout(max, self.inner.ready.notified())
            .await
            .ok();
    }

    /// Loads the saved cursor of `endpoint` with when it was written (ms since the Unix epoch),
    /// for reconciling with the Redis copy.
    pub(crate) async fn load_cursor_stamped(
        &self,
        endpoint: &str,
    ) -> Result<Option<(Cursor, i64)>, QueueError> {
        let endpoint = endpoint.to_owned();
        self.with_conn(move |inner, conn| {
            conn.query_row(
                "SELECT epoch, seq, updated_at_ms FROM botpipe_cursors WHERE endpoint = ?1",
                params![endpoint],
                |r| {
                    Ok((
                        Cursor {
                            epoch: r.get(0)?,
                            seq: seq_from_sql(r.get(1)?),
                        },
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(Self::sqlite_err(inner))
        })
        .await
    }

    /// Forgets the cursor of `endpoint` (after Redis took a newer one).
    pub(crate) async fn delete_cursor(&self, endpoint: &str) -> Result<(), QueueError> {
        let endpoint = endpoint.to_owned();
        self.with_conn(move |inner, conn| {
            conn.execute(
                "DELETE FROM botpipe_cursors WHERE endpoint = ?1",
                params![endpoint],
            )
            .map(drop)
            .map_err(Self::sqlite_err(inner))
        })
        .await
    }

    /// Gives a lease back without counting it as a delivery, so the entry is ready again at once
    /// and keeps its place (the spool drainer uses this when Redis refuses the batch, a worker
    /// when the store is unreachable). A stale lease releases nothing.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let id: i64 = lease.entry.parse().map_err(|_| QueueError::BadLease {
            entry: lease.entry.clone(),
        })?;
        let token = lease.token.clone();
        self.with_conn(move |inner, conn| {
            conn.execute(
                "UPDATE botpipe_queue SET leased_until_ms = NULL, lease_token = NULL,
                 deliveries = MAX(deliveries - 1, 0) WHERE id = ?1 AND lease_token = ?2",
                params![id, token],
            )
            .map(drop)
            .map_err(Self::sqlite_err(inner))
        })
        .await?;
        self.inner.ready.notify_waiters();
        Ok(())
    }

    /// Saves the cursor of `endpoint` in one durable transaction.
    ///
    /// # Errors
    /// When the write fails.
    pub async fn save_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), QueueError> {
        let endpoint = endpoint.to_owned();
        let cursor = cursor.clone();
        self.with_conn(move |inner, conn| {
            conn.execute(
                "INSERT INTO botpipe_cursors (endpoint, epoch, seq, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(endpoint) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq,
                 updated_at_ms = excluded.updated_at_ms",
                params![endpoint, cursor.epoch, seq_to_sql(cursor.seq), now_ms()],
            )
            .map_err(Self::sqlite_err(inner))?;
            Ok(())
        })
        .await
    }

    /// Entries moved aside after too many deliveries or because they no longer decode.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub async fn dead_count(&self) -> Result<u64, QueueError> {
        self.with_conn(|inner, conn| {
            conn.query_row("SELECT COUNT(*) FROM botpipe_queue_dead", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(Self::sqlite_err(inner))
        })
        .await
    }

    /// Up to `limit` rows of `botpipe_queue_dead`, newest first.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub async fn dead_batches(&self, limit: u32) -> Result<Vec<DeadBatch>, QueueError> {
        self.with_conn(move |inner, conn| {
            let err = Self::sqlite_err(inner);
            let mut stmt = conn
                .prepare(
                    "SELECT id, batch_id, source, reason, deliveries, payload FROM botpipe_queue_dead
                     ORDER BY id DESC LIMIT ?1",
                )
                .map_err(&err)?;
            let rows = stmt
                .query_map(params![i64::from(limit)], |r| {
                    let payload: Vec<u8> = r.get(5)?;
                    Ok(DeadBatch {
                        entry: r.get::<_, i64>(0)?.to_string(),
                        batch_id: r.get(1)?,
                        source: r.get(2)?,
                        reason: r.get(3)?,
                        deliveries: r.get::<_, i64>(4)?.max(0) as u64,
                        records: Batch::decode(&payload).ok().map(|b| b.records.len()),
                    })
                })
                .map_err(&err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(&err)
        })
        .await
    }

    /// Moves dead row `entry` back into the queue, where it is delivered afresh, in one
    /// transaction; `false` when there is no such row (replayed before).
    ///
    /// # Errors
    /// When the file cannot be written, or `entry` is not a row id.
    pub async fn revive_dead(&self, entry: &str) -> Result<bool, QueueError> {
        let id: i64 = entry.parse().map_err(|_| QueueError::BadLease {
            entry: entry.to_owned(),
        })?;
        let moved = self
            .with_conn(move |inner, conn| {
                let err = Self::sqlite_err(inner);
                let tx = conn.transaction().map_err(&err)?;
                let n = tx
                    .execute(
                        "INSERT INTO botpipe_queue (batch_id, source, payload, enqueued_at_ms)
                         SELECT batch_id, source, payload, ?2 FROM botpipe_queue_dead WHERE id = ?1",
                        params![id, now_ms()],
                    )
                    .map_err(&err)?;
                tx.execute("DELETE FROM botpipe_queue_dead WHERE id = ?1", params![id])
                    .map_err(&err)?;
                tx.commit().map_err(&err)?;
                Ok(n == 1)
            })
            .await?;
        if moved {
            self.inner.ready.notify_waiters();
        }
        Ok(moved)
    }

    /// One attempt to lease a ready entry; `None` when nothing is ready.
    fn try_lease_one(inner: &Inner, conn: &mut Connection) -> Result<Option<Lease>, QueueError> {
        let err = Self::sqlite_err(inner);
        loop {
            let now = now_ms();
            let token = uuid::Uuid::new_v4().to_string();
            let leased_until = now + inner.lease_timeout.as_millis() as i64;
            let row = conn
                .query_row(
                    "UPDATE botpipe_queue SET leased_until_ms = ?1, lease_token = ?2, deliveries = deliveries + 1
                     WHERE id = (SELECT id FROM botpipe_queue
                                 WHERE leased_until_ms IS NULL OR leased_until_ms <= ?3
                                 ORDER BY id LIMIT 1)
                     RETURNING id, payload, deliveries",
                    params![leased_until, token, now],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()
                .map_err(&err)?;
            let Some((id, payload, deliveries)) = row else {
                return Ok(None);
            };
            let deliveries = deliveries.max(0) as u32;
            let (label, reason) = if deliveries > inner.max_deliveries {
                (
                    "max_deliveries",
                    format!("delivered {deliveries} times without an ack"),
                )
            } else {
                match Batch::decode(&payload) {
                    Ok(batch) => {
                        return Ok(Some(Lease {
                            entry: id.to_string(),
                            token,
                            deliveries,
                            batch,
                        }))
                    }
                    Err(e) => ("corrupt", format!("corrupt entry: {e}")),
                }
            };
            {
                tracing::error!(entry = id, path = %inner.path.display(), %reason, "Moving queue entry to botpipe_queue_dead.");
                let tx = conn.transaction().map_err(&err)?;
                tx.execute(
                    "INSERT INTO botpipe_queue_dead (id, batch_id, source, payload, deliveries, reason, dead_at_ms)
                     SELECT id, batch_id, source, payload, deliveries, ?2, ?3 FROM botpipe_queue WHERE id = ?1",
                    params![id, reason, now],
                )
                .map_err(&err)?;
                tx.execute("DELETE FROM botpipe_queue WHERE id = ?1", params![id])
                    .map_err(&err)?;
                tx.commit().map_err(&err)?;
                metrics::counter!(m::QUEUE_DEAD_LETTERED_TOTAL, "reason" => label).increment(1);
            }
        }
    }
}

/// SQLite result codes after which the file's durability is in doubt.
fn is_durability_failure(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::SystemIoFailure)
            | Some(rusqlite::ErrorCode::DiskFull)
            | Some(rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

impl Queue for EmbeddedQueue {
    async fn append(&self, batch: &Batch) -> Result<(), QueueError> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(QueueError::Poisoned {
                path: self.inner.path.display().to_string(),
            });
        }
        let payload = batch.encode().map_err(|source| QueueError::Corrupt {
            entry: batch.id.to_string(),
            source,
        })?;
        let batch_id = batch.id.0.clone();
        let source = batch.source.clone();
        self.with_conn(move |inner, conn| {
            let res = conn.execute(
                "INSERT INTO botpipe_queue (batch_id, source, payload, enqueued_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![batch_id, source, payload, now_ms()],
            );
            match res {
                Ok(_) => Ok(()),
                Err(e) => {
                    if is_durability_failure(&e) {
                        inner.poisoned.store(true, Ordering::Release);
                    }
                    Err(Self::sqlite_err(inner)(e))
                }
            }
        })
        .await?;
        self.inner.ready.notify_waiters();
        Ok(())
    }

    async fn lease(&self, _consumer: &str, wait: Duration) -> Result<Option<Lease>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before looking, so an append between the look and the wait
            // still wakes us.
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lease) = self.with_conn(Self::try_lease_one).await? {
                return Ok(Some(lease));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // Also wake periodically: a lease held by a dead worker expires without a notify.
            let nap = left.min(Duration::from_millis(250));
            // The losing branch is the timer or the notification; both are simply dropped.
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let id: i64 = lease.entry.parse().map_err(|_| QueueError::BadLease {
            entry: lease.entry.clone(),
        })?;
        let token = lease.token.clone();
        self.with_conn(move |inner, conn| {
            let n = conn
                .execute(
                    "DELETE FROM botpipe_queue WHERE id = ?1 AND lease_token = ?2",
                    params![id, token],
                )
                .map_err(Self::sqlite_err(inner))?;
            if n == 0 {
                // Already acked, or the lease expired and another worker holds the entry now:
                // that worker will ack it. Harmless with idempotent writes.
                tracing::debug!(
                    entry = id,
                    "Ack matched no entry; the lease was stale or already acked."
                );
            }
            Ok(())
        })
        .await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.with_conn(|inner, conn| {
            conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(leased_until_ms IS NOT NULL AND leased_until_ms > ?1), 0) FROM botpipe_queue",
                params![now_ms()],
                |r| {
                    Ok(QueueDepth {
                        total: r.get::<_, i64>(0)?.max(0) as u64,
                        pending: r.get::<_, i64>(1)?.max(0) as u64,
                    })
                },
            )
            .map_err(Self::sqlite_err(inner))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BotnetType, LogType, NodeIp, Record};

    fn batch(n: usize) -> Batch {
        let records = (0..n)
            .map(|i| Record {
                ip: NodeIp::parse(&format!("1.2.3.{}", i + 1)).unwrap(),
                timestamp: chrono::Utc::now(),
                botnet_type: BotnetType::parse("mozi").unwrap(),
                log_type: LogType::Online,
                seq_id: None,
            })
            .collect();
        Batch::new("test", records, vec![])
    }

    #[tokio::test]
    async fn append_lease_ack_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let q =
            EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_secs(60), 5).unwrap();
        let b = batch(3);
        q.append(&b).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                total: 1,
                pending: 0
            }
        );
        let lease = q.lease("w", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(lease.batch, b);
        assert_eq!(lease.deliveries, 1);
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                total: 1,
                pending: 1
            }
        );
        assert!(q.lease("w", Duration::ZERO).await.unwrap().is_none());
        q.ack(&lease).await.unwrap();
        q.ack(&lease).await.unwrap();
        assert_eq!(q.depth().await.unwrap().total, 0);
    }

    #[tokio::test]
    async fn unacked_lease_is_redelivered_after_timeout_and_stale_ack_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let q =
            EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_millis(1), 5).unwrap();
        q.append(&batch(1)).await.unwrap();
        let first = q.lease("a", Duration::ZERO).await.unwrap().unwrap();
        let second = q.lease("b", Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(second.deliveries, 2);
        q.ack(&first).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap().total,
            1,
            "stale ack must not remove the entry"
        );
        q.ack(&second).await.unwrap();
        assert_eq!(q.depth().await.unwrap().total, 0);
    }

    #[tokio::test]
    async fn reopening_releases_leases_of_a_dead_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        {
            let q = EmbeddedQueue::open(&path, Duration::from_secs(3600), 5).unwrap();
            q.append(&batch(2)).await.unwrap();
            let _held = q.lease("a", Duration::ZERO).await.unwrap().unwrap();
        }
        let q = EmbeddedQueue::open(&path, Duration::from_secs(3600), 5).unwrap();
        let again = q.lease("b", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(again.batch.records.len(), 2);
    }

    #[tokio::test]
    async fn lease_wakes_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let q =
            EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_secs(60), 5).unwrap();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.lease("w", Duration::from_secs(30)).await });
        q.append(&batch(1)).await.unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert!(got.is_some());
    }

    #[tokio::test]
    async fn poison_batches_move_aside_after_max_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let q =
            EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_millis(1), 2).unwrap();
        q.append(&batch(1)).await.unwrap();
        for _ in 0..2 {
            let _ = q.lease("w", Duration::from_secs(5)).await.unwrap().unwrap();
        }
        assert!(q
            .lease("w", Duration::from_millis(50))
            .await
            .unwrap()
            .is_none());
        assert_eq!(q.dead_count().await.unwrap(), 1);
        assert_eq!(q.depth().await.unwrap().total, 0);
    }

    #[tokio::test]
    async fn released_lease_is_ready_again_without_counting_a_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let q =
            EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_secs(60), 5).unwrap();
        let first = batch(1);
        q.append(&first).await.unwrap();
        q.append(&batch(1)).await.unwrap();
        let lease = q.lease("d", Duration::ZERO).await.unwrap().unwrap();
        q.release(&lease).await.unwrap();
        let again = q.lease("d", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(again.batch.id, first.id, "it keeps its place");
        assert_eq!(again.deliveries, 1);
        q.release(&lease).await.unwrap();
        assert_eq!(
            q.depth().await.unwrap().pending,
            1,
            "a stale release is ignored"
        );
    }

    #[tokio::test]
    async fn stamped_cursor_can_be_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let q =
            EmbeddedQueue::open(&dir.path().join("q.sqlite"), Duration::from_secs(60), 5).unwrap();
        let c = Cursor {
            epoch: None,
            seq: 7,
        };
        q.save_cursor("east", &c).await.unwrap();
        let (got, at_ms) = q.load_cursor_stamped("east").await.unwrap().unwrap();
        assert_eq!(got, c);
        assert!(at_ms > 0);
        q.delete_cursor("east").await.unwrap();
        assert_eq!(q.load_cursor("east").await.unwrap(), None);
    }

    #[tokio::test]
    async fn cursors_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let q = EmbeddedQueue::open(&path, Duration::from_secs(60), 5).unwrap();
        assert_eq!(q.load_cursor("east").await.unwrap(), None);
        let c = Cursor {
            epoch: Some("e1".into()),
            seq: 42,
        };
        q.save_cursor("east", &c).await.unwrap();
        drop(q);
        let q = EmbeddedQueue::open(&path, Duration::from_secs(60), 5).unwrap();
        assert_eq!(q.load_cursor("east").await.unwrap(), Some(c));
    }

    /// Issue 13: a seq at or above 2^63 was saved as cursor 0.
    #[tokio::test]
    async fn issue_13_a_seq_above_i64_max_is_saved_and_loaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sqlite");
        let q = EmbeddedQueue::open(&path, Duration::from_secs(60), 5).unwrap();
        for seq in [1u64 << 63, (1u64 << 63) + 12_345, u64::MAX, i64::MAX as u64] {
            let c = Cursor {
                epoch: Some("e1".into()),
                seq,
            };
            q.save_cursor("east", &c).await.unwrap();
            assert_eq!(q.load_cursor("east").await.unwrap(), Some(c.clone()));
            let (stamped, _) = q.load_cursor_stamped("east").await.unwrap().unwrap();
            assert_eq!(stamped, c);
        }
    }
}
