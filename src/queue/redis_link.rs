//! [`Link`]: the connections of one [`super::RedisStreamsQueue`] to Redis, (re)established
//! lazily so that no caller ever waits on Redis for longer than its own deadline.
//!
//! One link per tokio runtime: redis-rs drives each connection with a task on the runtime that
//! dialled it, so a link used from two runtimes would tie one runtime's commands to the other's
//! threads and lifetime. The pull runtime gets its own via
//! [`super::RedisStreamsQueue::with_own_link`] ([`Link::fresh`]).
//!
//! Two kinds of connection, because Redis serves one connection's commands in order and a
//! blocked `XREADGROUP … BLOCK` would stall every `XADD` queued behind it:
//! - one shared multiplexed connection for every non-blocking command (append, ack, reclaim,
//!   depth, cursors), pipelined by redis-rs;
//! - a small pool of dedicated connections for blocking reads, one per concurrent reader.
//!
//! Why not redis-rs's `ConnectionManager`: it reconnects only on errors it classes as "connection
//! dropped", and a response timeout is not one of them, so behind a black-holed socket every
//! command would time out forever until the kernel gives up on the TCP connection (minutes).
//! Here a command that times out, or is abandoned by its caller before its reply arrives, drops
//! the connection it used ([`InvalidateOnDrop`]); the next caller dials a fresh one.
//!
//! Invariants:
//! - At most one dial is in flight; it is a shared future, so callers that give up (their
//!   deadline passed) do not cancel it for the others.
//! - After a failed dial the link is `Down` for a short, growing pause (50 ms doubling to 1 s);
//!   calls in that window fail at once with [`QueueError::Unavailable`] instead of dialling
//!   again. That is what makes a hand-off spool immediately and a worker's `lease` return
//!   quickly while Redis is dead.
//! - The link logs when Redis stops or starts answering, once per change, never per attempt.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, RedisError};

use super::QueueError;
use crate::retry::Backoff;

/// Fail-fast window after failed dial number n (1-based): 50 ms doubling to 1 s; the cap bounds
/// how late a recovered Redis is noticed. Without jitter, because the window is not a sleep:
/// calls inside it fail (and hand-offs spool) at once, while calls outside it wait on a dial, so
/// a random, shorter window would make more hand-offs wait out their deadline on a hanging
/// Redis. Only one dial per link is in flight, so there is no herd within a process to spread.
const DOWN_PAUSE: Backoff =
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).without_jitter();
/// Idle blocking connections kept for reuse; more readers than this dial their own.
const MAX_IDLE_BLOCKING: usize = 64;

type Dial = Shared<BoxFuture<'static, Result<MultiplexedConnection, RedisError>>>;

enum Phase {
    /// No connection and no dial in flight.
    Idle,
    /// A dial is in flight.
    Connecting { generation: u64, dial: Dial },
    /// Connected.
    Ready {
        generation: u64,
        conn: MultiplexedConnection,
    },
    /// The last dial failed; calls fail fast until `until`.
    Down { until: Instant, error: RedisError },
}

struct State {
    phase: Phase,
    generation: u64,
    failures: u32,
    /// Whether Redis answered at the last state change (`None` before the first dial).
    up: Option<bool>,
}

/// Timeouts of a [`Link`].
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkTimeouts {
    /// One dial: TCP connect, handshake and the on-connect command.
    pub connect: Duration,
    /// The redis-rs response timeout of the shared connection.
    pub response: Duration,
    /// The redis-rs response timeout of blocking connections: above the longest `BLOCK`.
    pub blocking_response: Duration,
}

/// Lazily (re)connected links to one Redis server.
pub(super) struct Link {
    client: Client,
    addr: String,
    timeouts: LinkTimeouts,
    on_connect: Option<Cmd>,
    state: Mutex<State>,
    idle_blocking: Mutex<Vec<MultiplexedConnection>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("addr", &self.addr).finish()
    }
}

/// Whether an error means the connection itself is unusable (as opposed to a server error reply).
pub(super) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout()
}

fn timed_out(what: &str, after: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} did not finish within {after:?}"),
    ))
}

impl Link {
    /// A link that dials nothing until first used. `on_connect` runs after every dial of the
    /// shared connection (it creates the consumer group, which a restarted Redis may have lost);
    /// a `BUSYGROUP` reply to it is fine.
    pub(super) fn new(client: Client, timeouts: LinkTimeouts, on_connect: Option<Cmd>) -> Self {
        let addr = client.get_connection_info().addr().to_string();
        Self {
            client,
            addr,
            timeouts,
            on_connect,
            state: Mutex::new(State {
                phase: Phase::Idle,
                generation: 0,
                failures: 0,
                up: None,
            }),
            idle_blocking: Mutex::new(Vec::new()),
        }
    }

    /// A new, not yet connected link to the same server with the same settings; it shares no
    /// connection and no state with this one.
    pub(super) fn fresh(&self) -> Self {
        Self::new(self.client.clone(), self.timeouts, self.on_connect.clone())
    }

    /// The server address, without credentials, for errors and logs.
    pub(super) fn addr(&self) -> &str {
        &self.addr
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written: every update
        // is a single assignment.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dial(&self) -> Dial {
        let client = self.client.clone();
        let timeouts = self.timeouts;
        let on_connect = self.on_connect.clone();
        async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeouts.connect))
                .set_response_timeout(Some(timeouts.response));
            let work = async {
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                if let Some(cmd) = on_connect {
                    match cmd.query_async::<redis::Value>(&mut conn).await {
                        Ok(_) => {}
                        Err(e) if e.code() == Some("BUSYGROUP") => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(conn)
            };
            match tokio::time::timeout(timeouts.connect, work).await {
                Ok(r) => r,
                Err(_) => Err(timed_out("connecting to Redis", timeouts.connect)),
            }
        }
        .boxed()
        .shared()
    }

    /// The shared connection and its generation, dialling if needed.
    ///
    /// Returns at once with [`QueueError::Unavailable`] while the link is down after a failed dial.
    pub(super) async fn get(&self) -> Result<(u64, MultiplexedConnection), QueueError> {
        let (generation, dial) = {
            let mut st = self.lock();
            match &st.phase {
                Phase::Ready { generation, conn } => return Ok((*generation, conn.clone())),
                Phase::Down { until, error } if Instant::now() < *until => {
                    return Err(QueueError::Unavailable {
                        addr: self.addr.clone(),
                        source: error.clone(),
                    })
                }
                Phase::Connecting { generation, dial } => (*generation, dial.clone()),
                Phase::Idle | Phase::Down { .. } => {
                    st.generation += 1;
                    let generation = st.generation;
                    let dial = self.dial();
                    st.phase = Phase::Connecting {
                        generation,
                        dial: dial.clone(),
                    };
                    (generation, dial)
                }
            }
        };
        let result = dial.await;
        let mut st = self.lock();
        if matches!(&st.phase, Phase::Connecting { generation: g, .. } if *g == generation) {
            match &result {
                Ok(conn) => {
                    if st.up == Some(false) {
                        tracing::info!(addr = %self.addr, "Redis answers again.");
                    } else if st.up.is_none() {
                        tracing::debug!(addr = %self.addr, "Connected to Redis.");
                    }
                    st.up = Some(true);
                    st.failures = 0;
                    st.phase = Phase::Ready {
                        generation,
                        conn: conn.clone(),
                    };
                }
                Err(error) => {
                    if st.up != Some(false) {
                        tracing::warn!(addr = %self.addr, %error, "Redis does not answer; its callers fail fast and the connection is retried in the background.");
                    }
                    st.up = Some(false);
                    st.failures = st.failures.saturating_add(1);
                    let pause = DOWN_PAUSE.delay(st.failures.saturating_sub(1));
                    st.phase = Phase::Down {
                        until: Instant::now() + pause,
                        error: error.clone(),
                    };
                }
            }
        }
        drop(st);
        result
            .map(|conn| (generation, conn))
            .map_err(|source| QueueError::Redis {
                op: "connect",
                addr: self.addr.clone(),
                source,
            })
    }

    /// Drops the shared connection of `generation` (if it is still the current one), so the
    /// next call dials afresh.
    pub(super) fn invalidate(&self, generation: u64) {
        let mut st = self.lock();
        if matches!(&st.phase, Phase::Ready { generation: g, .. } if *g == generation) {
            tracing::debug!(addr = %self.addr, generation, "Dropping a Redis connection that failed or timed out.");
            st.phase = Phase::Idle;
        }
    }

    /// A guard that invalidates `generation` when dropped, unless disarmed: a command abandoned
    /// by its caller (deadline, cancellation) leaves its connection suspect.
    pub(super) fn invalidate_on_drop(&self, generation: u64) -> InvalidateOnDrop<'_> {
        InvalidateOnDrop {
            link: self,
            generation,
            armed: true,
        }
    }

    /// A connection for one blocking read: an idle one if any (`true`), else a fresh dial.
    ///
    /// Fails fast while the shared link is down, so a dead Redis is not dialled by every reader.
    pub(super) async fn take_blocking(&self) -> Result<(MultiplexedConnection, bool), QueueError> {
        let idle = self
            .idle_blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        if let Some(conn) = idle {
            return Ok((conn, true));
        }
        self.get().await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(Some(self.timeouts.blocking_response));
        let err = |source| QueueError::Redis {
            op: "connect",
            addr: self.addr.clone(),
            source,
        };
        match tokio::time::timeout(
            self.timeouts.connect,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => Ok((conn, false)),
            Ok(Err(e)) => Err(err(e)),
            Err(_) => Err(err(timed_out("connecting to Redis", self.timeouts.connect))),
        }
    }

    /// Returns a healthy blocking connection to the pool.
    pub(super) fn put_blocking(&self, conn: MultiplexedConnection) {
        let mut idle = self.idle_blocking.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_BLOCKING {
            idle.push(conn);
        }
    }

    /// Forgets every idle blocking connection (after one of them turned out dead, the others
    /// most likely are too).
    pub(super) fn clear_blocking(&self) {
        self.idle_blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// See [`Link::invalidate_on_drop`].
pub(super) struct InvalidateOnDrop<'a> {
    link: &'a Link,
    generation: u64,
    armed: bool,
}

impl InvalidateOnDrop<'_> {
    /// The command finished and the connection is fine.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.link.invalidate(self.generation);
        }
    }
}
