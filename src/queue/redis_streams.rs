//! [`RedisStreamsQueue`]: the queue as one Redis stream read through a consumer group, so any
//! number of worker processes share the work and a dead worker's batches are reclaimed.
//!
//! Keys, all under the configured prefix `P`:
//! - `P:stream`: one entry per batch (`XADD`, fields `batch_id` and `batch` = [`Batch::encode`]).
//!   An entry stays until it is acked, then it is deleted (`XACK` + `XDEL`), so the stream length
//!   is the number of batches not yet stored. Nothing trims it: no `MAXLEN`, ever, because a
//!   trimmed entry that is still pending would be a lost batch.
//! - `P:dead`: the dead-letter stream. An entry delivered more than `max_deliveries` times, or
//!   one that no longer decodes, moves there with its fields plus `entry`, `reason` and
//!   `deliveries`; counted by `botpipe_queue_dead_lettered_total{reason}`. `botpipe dlq batches`
//!   lists it and `botpipe dlq replay-batches` moves entries back ([`RedisStreamsQueue::revive_dead`]).
//!
//! Deliveries count only attempts that said something about the batch. A worker whose store
//! is unreachable gives its lease back with [`RedisStreamsQueue::release`] (re-append + ack in
//! one script, so the count starts afresh) instead of letting it expire, so a long database
//! outage does not push healthy batches to the dead stream.
//! - `P:cursors`: a hash of the pullers' cursors, shared by every process (see below).
//!
//! Consumers: every process gets its own consumer name, `hostname-pid-random`, suffixed with the
//! worker name a caller passes to `lease`. A `lease` first tries to reclaim one entry that has
//! been pending longer than the lease timeout (`XAUTOCLAIM`, which also counts a delivery), then
//! reads a new one with `XREADGROUP … BLOCK` on a dedicated connection (see `redis_link.rs`).
//! The group is created with `MKSTREAM` from id `0` on every (re)connect, so entries appended
//! before any worker existed, or after Redis restarted empty, are still delivered.
//!
//! Fencing: a lease's token is `deliveries:consumer`. `ack` runs one Lua script that checks, in
//! the same atomic step, that the entry is still pending for that consumer with that delivery
//! count, and only then `XACK`s and `XDEL`s it. A reclaim changes the owner or bumps the count,
//! so a worker whose lease expired cannot ack (and delete) the entry another worker now holds:
//! the new holder acks it. What this does not give: the stale worker may still have written the
//! batch to the store, so a batch can be processed twice. That is the at-least-once contract,
//! and the store's merge rules make the second write a no-op.
//!
//! Bounded waits: every command runs under `command_timeout` (2 s by default) on top of the
//! redis-rs response timeout, which is set explicitly (redis-rs ≥ 1.0 defaults it to 500 ms, below
//! a `BLOCK`). While Redis is unreachable, calls fail at once (the link is down for up to 1 s
//! between dials), so:
//! - `append` (the hand-off) returns an error quickly and the caller spools;
//! - `lease` returns an error within `wait + command_timeout` at worst, usually at once, so a
//!   worker can back off with jitter instead of hanging.
//!
//! Durability: `XADD` returns once Redis holds the entry in memory; surviving a Redis crash
//! depends on the server's AOF setting (`appendfsync everysec` loses at most about a second).
//!
//! Cursors: [`RedisStreamsQueue::save_cursor`] writes the hash, bounded by `cursor_deadline`
//! (half the hand-off deadline: the puller awaits the save under that deadline). If Redis does
//! not answer in time the cursor goes to the local spool's cursor table instead, and stays there
//! only until Redis takes a write again. [`RedisStreamsQueue::load_cursor`] reads both; when
//! both hold a cursor for the endpoint it takes the higher seq if the epochs match and otherwise
//! the more recently written one, writes the winner back to Redis and clears the local copy.
//! When another process took the endpoint over while this one could not reach Redis, the local
//! copy it left is lost to the new owner; at worst that re-pulls records the collector already
//! handed over, which the merge rules absorb.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError, RedisResult, Script, Value};
use serde::{Deserialize, Serialize};

use super::endpoint_lease::{EndpointLeases, Fence, Holder};
use super::redis_link::{is_connection_error, Link, LinkTimeouts};
use super::{Cursor, DeadBatch, EmbeddedQueue, Lease, Queue, QueueDepth, QueueError};
use crate::config::{QueueSettings, RedisSettings};
use crate::record::Batch;
use crate::telemetry::metrics as m;

/// Default bound on one Redis dial (TCP connect plus handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on one Redis command (not counting a `BLOCK` wait).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest single `XREADGROUP … BLOCK`; between two, `lease` looks for stale entries to reclaim.
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// How often one process removes long-gone consumers (no pending entries) from the group.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Shortest idle time before an empty consumer is removed from the group.
const PRUNE_IDLE_MIN: Duration = Duration::from_secs(3600);
/// Reclaim attempts per `lease` round; each may dead-letter an entry instead of returning it.
const MAX_CLAIMS_PER_ROUND: usize = 16;

/// Stream entry field holding the encoded batch.
const FIELD_BATCH: &str = "batch";
/// Stream entry field holding the batch id, for operators reading the stream.
const FIELD_BATCH_ID: &str = "batch_id";
/// `XADD` id meaning "let Redis assign it".
const AUTO_ID: &str = "*";
/// `XREADGROUP` id meaning "entries never delivered to this group".
const NEW_ENTRIES: &str = ">";
/// `XAUTOCLAIM` cursor that starts a scan of the pending entries list.
const SCAN_START: &str = "0-0";

/// Claims one entry idle for at least ARGV[3] ms for consumer ARGV[2], dead-lettering it instead
/// when it has now been delivered more than ARGV[5] times.
/// Returns `{cursor}` (nothing), `{cursor, id, deliveries}` (dead-lettered) or
/// `{cursor, id, deliveries, fields}` (claimed).
const CLAIM_LUA: &str = r"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', 1)
local entry = r[2][1]
if entry == nil then return {r[1]} end
local id = entry[1]
local fields = entry[2]
if not fields then
  redis.call('XACK', KEYS[1], ARGV[1], id)
  return {r[1]}
end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
local deliveries = p[1][4]
if deliveries > tonumber(ARGV[5]) then
  redis.call('XADD', KEYS[2], '*', 'entry', id, 'reason', 'max_deliveries', 'deliveries', deliveries, unpack(fields))
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
  return {r[1], id, deliveries}
end
return {r[1], id, deliveries, fields}
";

/// Acks and deletes entry ARGV[2] only if it is pending for consumer ARGV[3] with delivery count
/// ARGV[4]. Returns 1 (acked), 0 (not pending: acked before, or dead-lettered), -1 (another
/// lease holds it).
const ACK_LUA: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[3] or p[1][4] ~= tonumber(ARGV[4]) then return -1 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// Moves entry ARGV[2] to the dead-letter stream with reason ARGV[3] and delivery count ARGV[4].
const BURY_LUA: &str = r"
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e > 0 then
  redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'reason', ARGV[3], 'deliveries', ARGV[4], unpack(e[1][2]))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return #e
";

/// Gives entry ARGV[2] back without counting a delivery, if it is still pending for consumer
/// ARGV[3] with delivery count ARGV[4]: its fields are appended as a new entry (never delivered,
/// so its count starts afresh) and the old one is acked and deleted, in one atomic step. Returns
/// 1 (given back), 0 (not pending any more), -1 (another lease holds it).
const RELEASE_LUA: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if p[1][2] ~= ARGV[3] or p[1][4] ~= tonumber(ARGV[4]) then return -1 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e > 0 then redis.call('XADD', KEYS[1], '*', unpack(e[1][2])) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// Moves dead entry ARGV[1] back to the main stream with its batch fields (the bookkeeping
/// fields `entry`, `reason` and `deliveries` stay behind), in one atomic step. Returns 1 (moved)
/// or 0 (no such dead entry: replayed before).
const REVIVE_LUA: &str = r"
local e = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
local keep = {}
for i = 1, #f, 2 do
  if f[i] ~= 'entry' and f[i] ~= 'reason' and f[i] ~= 'deliveries' then
    keep[#keep + 1] = f[i]
    keep[#keep + 1] = f[i + 1]
  end
end
redis.call('XADD', KEYS[1], '*', unpack(keep))
redis.call('XDEL', KEYS[2], ARGV[1])
return 1
";

/// Writes a cursor only while the writer's lease value is current: 1, else 0.
/// KEYS[1] lease, KEYS[2] cursors; ARGV[1] lease value, ARGV[2] endpoint, ARGV[3] cursor JSON.
const FENCED_CURSOR_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
";
/// Stream length and pending count; a missing group counts as nothing pending.
const DEPTH_LUA: &str = r"
local n = redis.call('XLEN', KEYS[1])
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if ok then return {n, p[1]} end
return {n, 0}
";

/// Removes consumers with no pending entries that have been idle for ARGV[2] ms.
const PRUNE_LUA: &str = r"
local ok, cs = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name and pending == 0 and idle and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    n = n + 1
  end
end
return n
";

/// Knobs of a [`RedisStreamsQueue`] that do not name Redis objects.
#[derive(Debug, Clone)]
pub struct RedisQueueOptions {
    /// Idle time after which a pending entry is reclaimed from its consumer.
    pub lease_timeout: Duration,
    /// Deliveries after which an entry moves to the dead-letter stream.
    pub max_deliveries: u32,
    /// Bound on one dial (TCP connect plus handshake).
    pub connect_timeout: Duration,
    /// Bound on one command, not counting a `BLOCK` wait.
    pub command_timeout: Duration,
    /// Bound on one cursor read or write before the local spool is used instead.
    pub cursor_deadline: Duration,
}

impl RedisQueueOptions {
    /// The options for `[queue]`: its lease timeout and deliveries, the default dial and command
    /// timeouts, and half the hand-off deadline for cursors. Half, because the puller awaits a
    /// cursor save under the whole hand-off deadline (`Handoff::save_cursor`), and the spool
    /// write after a Redis timeout must fit in what is left.
    pub fn from_settings(settings: &QueueSettings) -> Self {
        Self {
            lease_timeout: settings.lease_timeout,
            max_deliveries: settings.max_deliveries.max(1),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            cursor_deadline: settings.handoff_deadline / 2,
        }
    }
}

/// A cursor as stored in the shared hash, with when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredCursor {
    epoch: Option<String>,
    seq: u64,
    /// Milliseconds since the Unix epoch.
    at_ms: i64,
}

impl StoredCursor {
    fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch.clone(),
            seq: self.seq,
        }
    }
}

/// Picks the cursor to resume from when Redis and the local spool both hold one: the higher
/// seq within one epoch, else the more recent write.
fn reconcile(shared: StoredCursor, local: StoredCursor) -> StoredCursor {
    if shared.epoch == local.epoch {
        if local.seq > shared.seq {
            local
        } else {
            shared
        }
    } else if local.at_ms > shared.at_ms {
        local
    } else {
        shared
    }
}

/// A queue on one Redis stream with a consumer group. Cheap to clone; clones share connections
/// (see [`RedisStreamsQueue::with_own_link`] for a handle that does not).
#[derive(Debug, Clone)]
pub struct RedisStreamsQueue {
    inner: Arc<Inner>,
    /// The connections, per handle family rather than in `inner`: a connection is driven by a
    /// task on the runtime that dialled it, so each runtime gets its own link.
    link: Arc<Link>,
}

#[derive(Debug)]
struct Inner {
    /// The configured key prefix (endpoint leases live under it too).
    prefix: String,
    stream: String,
    dead: String,
    cursors: String,
    group: String,
    process: String,
    opts: RedisQueueOptions,
    claim_cursor: Mutex<String>,
    last_prune: Mutex<Option<Instant>>,
    cursor_fallback: Option<EmbeddedQueue>,
    /// Endpoints whose latest cursor sits in the spool because Redis did not take it.
    spooled_cursors: Mutex<HashSet<String>>,
    claim: Script,
    ack: Script,
    bury: Script,
    release: Script,
    revive: Script,
    depth: Script,
    fenced_cursor: Script,
    prune: Script,
}

/// This process's consumer-name stem: `hostname-pid-random`.
fn process_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn string(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => bytes(other).and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()),
    }
}

/// The value of `name` in an entry's fields (a flat RESP2 array or a RESP3 map).
fn field<'a>(fields: &'a Value, name: &str) -> Option<&'a [u8]> {
    match fields {
        Value::Array(flat) => flat
            .chunks_exact(2)
            .find(|kv| bytes(&kv[0]) == Some(name.as_bytes()))
            .and_then(|kv| bytes(&kv[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| bytes(k) == Some(name.as_bytes()))
            .and_then(|(_, v)| bytes(v)),
        _ => None,
    }
}

/// The first entry of an `XREADGROUP` reply: its id and fields.
fn first_read_entry(reply: Value) -> Option<(String, Value)> {
    let per_stream: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => return None,
    };
    per_stream.into_iter().find_map(|entries| match entries {
        Value::Array(entries) => entries.into_iter().find_map(|e| match e {
            Value::Array(mut parts) if parts.len() == 2 => {
                let fields = parts.pop()?;
                let id = string(&parts.pop()?)?;
                Some((id, fields))
            }
            _ => None,
        }),
        _ => None,
    })
}

/// A lease token's delivery count and consumer (`deliveries:consumer`).
fn parse_token(lease: &Lease) -> Result<(u32, &str), QueueError> {
    lease
        .token
        .split_once(':')
        .and_then(|(d, c)| Some((d.parse::<u32>().ok()?, c)))
        .ok_or_else(|| QueueError::BadLease {
            entry: lease.entry.clone(),
        })
}

fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.detail().is_some_and(|d| d.contains("NOGROUP"))
}

/// What one reclaim attempt found.
enum Claimed {
    Nothing,
    Buried,
    Lease(Lease),
}

/// A client for `settings`: `redis://`, or `rediss://` verified against the system roots or
/// `queue.redis_ca_file`, with the client certificate if one is configured. No connection is
/// made.
///
/// # Errors
/// [`QueueError::Tls`] when a certificate file cannot be used, [`QueueError::BadUrl`] when the
/// URL does not parse.
pub fn redis_client(settings: &RedisSettings) -> Result<Client, QueueError> {
    let certificates = crate::transport::tls::redis_tls(&settings.tls).map_err(QueueError::Tls)?;
    let url = settings.url.as_str();
    match certificates {
        None => Client::open(url),
        Some(certificates) => Client::build_with_tls(url, certificates),
    }
    .map_err(|source| QueueError::BadUrl {
        field: "queue.redis_url",
        source,
    })
}

impl RedisStreamsQueue {
    /// A queue on `settings` without touching the network: connections are made on first use,
    /// so this succeeds while Redis is down. Cursors fall back to `cursor_fallback` (the spool)
    /// when Redis does not answer.
    ///
    /// # Errors
    /// [`QueueError::BadUrl`] when the URL does not parse (or needs a feature not built in).
    pub fn new(
        settings: &RedisSettings,
        opts: RedisQueueOptions,
        cursor_fallback: Option<EmbeddedQueue>,
    ) -> Result<Self, QueueError> {
        let client = redis_client(settings)?;
        let stream = format!("{}:stream", settings.prefix);
        let mut create_group = redis::cmd("XGROUP");
        create_group
            .arg("CREATE")
            .arg(&stream)
            .arg(&settings.group)
            .arg(0)
            .arg("MKSTREAM");
        let link = Link::new(
            client,
            LinkTimeouts {
                connect: opts.connect_timeout,
                response: opts.command_timeout,
                blocking_response: RECLAIM_EVERY + opts.command_timeout,
            },
            Some(create_group),
        );
        Ok(Self {
            link: Arc::new(link),
            inner: Arc::new(Inner {
                dead: format!("{}:dead", settings.prefix),
                cursors: format!("{}:cursors", settings.prefix),
                prefix: settings.prefix.clone(),
                stream,
                group: settings.group.clone(),
                process: process_consumer_name(),
                opts,
                claim_cursor: Mutex::new(SCAN_START.to_owned()),
                last_prune: Mutex::new(None),
                cursor_fallback,
                spooled_cursors: Mutex::new(HashSet::new()),
                claim: Script::new(CLAIM_LUA),
                ack: Script::new(ACK_LUA),
                bury: Script::new(BURY_LUA),
                release: Script::new(RELEASE_LUA),
                revive: Script::new(REVIVE_LUA),
                depth: Script::new(DEPTH_LUA),
                fenced_cursor: Script::new(FENCED_CURSOR_LUA),
                prune: Script::new(PRUNE_LUA),
            }),
        })
    }

    /// The same queue (same stream, consumer stem, cursor state and spool fallback) on a link of
    /// its own: it dials its own connections, on first use, from the runtime that uses it.
    ///
    /// redis-rs drives a connection with a task spawned on the runtime that dialled it. A link
    /// shared by two runtimes would make the commands of one wait on the other's threads (a busy
    /// worker runtime delaying the pullers' hand-offs, or the other way round), and shutting one
    /// runtime down would kill the connection under the other. `App` therefore gives the pull
    /// runtime a handle of its own.
    pub fn with_own_link(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            link: Arc::new(self.link.fresh()),
        }
    }

    /// Endpoint leases on this Redis under this queue's prefix, held for `ttl` by `holder`.
    pub fn endpoint_leases(&self, ttl: Duration, holder: Holder) -> EndpointLeases {
        EndpointLeases::new(self.clone(), self.inner.prefix.clone(), ttl, holder)
    }

    /// This process's consumer-name stem (`hostname-pid-random`).
    pub fn consumer_base(&self) -> &str {
        &self.inner.process
    }

    /// The key of the main stream.
    pub fn stream_key(&self) -> &str {
        &self.inner.stream
    }

    /// The key of the dead-letter stream.
    pub fn dead_key(&self) -> &str {
        &self.inner.dead
    }

    /// The server address, without credentials.
    pub fn addr(&self) -> &str {
        self.link.addr()
    }

    /// How long an entry may stay pending before another consumer reclaims it.
    pub fn lease_timeout(&self) -> Duration {
        self.inner.opts.lease_timeout
    }

    fn consumer_name(&self, worker: &str) -> String {
        if worker.is_empty() {
            self.inner.process.clone()
        } else {
            format!("{}/{worker}", self.inner.process)
        }
    }

    fn redis_err(&self, op: &'static str) -> impl Fn(RedisError) -> QueueError + '_ {
        move |source| QueueError::Redis {
            op,
            addr: self.link.addr().to_owned(),
            source,
        }
    }

    /// Runs `f` on the shared connection under `command_timeout`. A connection error, a timeout
    /// or the caller dropping this future drops the connection so the next call dials afresh.
    pub(super) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let link = &self.link;
        let after = self.inner.opts.command_timeout;
        let attempt = async {
            let (generation, conn) = link.get().await?;
            let mut guard = link.invalidate_on_drop(generation);
            let res = f(conn).await;
            if !matches!(&res, Err(e) if is_connection_error(e)) {
                guard.disarm();
            }
            res.map_err(self.redis_err(op))
        };
        match tokio::time::timeout(after, attempt).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout { op, after }),
        }
    }

    /// Checks that Redis answers, within `command_timeout`.
    ///
    /// # Errors
    /// When it does not.
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.call("ping", |mut c| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        })
        .await
    }

    /// Creates the consumer group (and the stream) unless it exists.
    async fn ensure_group(&self) -> Result<(), QueueError> {
        let (stream, group) = (&self.inner.stream, &self.inner.group);
        let res = self
            .call("create_group", |mut c| async move {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream)
                    .arg(group)
                    .arg(0)
                    .arg("MKSTREAM")
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        match res {
            Err(QueueError::Redis { source, .. }) if source.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Entries moved to the dead-letter stream.
    ///
    /// # Errors
    /// When Redis does not answer in time.
    pub async fn dead_count(&self) -> Result<u64, QueueError> {
        let dead = &self.inner.dead;
        self.call("dead_count", |mut c| async move {
            redis::cmd("XLEN")
                .arg(dead)
                .query_async::<u64>(&mut c)
                .await
        })
        .await
    }

    /// Gives a lease back without counting it as a delivery (the store was unreachable, which
    /// says nothing about the batch): the entry is re-appended under a new id and the old one
    /// acked, atomically and only if this lease still holds it. A stale lease gives back nothing.
    ///
    /// # Errors
    /// When Redis does not answer in time; the entry then stays pending and is reclaimed after
    /// the lease timeout, which counts a delivery.
    pub async fn release(&self, lease: &Lease) -> Result<(), QueueError> {
        let entry = lease.entry.as_str();
        let res = self
            .run_lease_script("release", &self.inner.release, lease)
            .await;
        match res {
            Ok(1) => Ok(()),
            Ok(_) => {
                tracing::debug!(
                    entry,
                    "Release matched no lease of ours; nothing given back."
                );
                Ok(())
            }
            Err(QueueError::Redis { source, .. }) if is_nogroup(&source) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Up to `limit` entries of the dead-letter stream, newest first.
    ///
    /// # Errors
    /// When Redis does not answer in time.
    pub async fn dead_batches(&self, limit: u32) -> Result<Vec<DeadBatch>, QueueError> {
        let dead = &self.inner.dead;
        let reply: Value = self
            .call("dead_batches", |mut c| async move {
                redis::cmd("XREVRANGE")
                    .arg(dead)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit.max(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Value::Array(entries) = reply else {
            return Err(QueueError::UnexpectedReply {
                op: "dead_batches",
                addr: self.link.addr().to_owned(),
            });
        };
        Ok(entries
            .into_iter()
            .filter_map(|e| match e {
                Value::Array(mut parts) if parts.len() == 2 => {
                    let fields = parts.pop()?;
                    let id = string(&parts.pop()?)?;
                    let text = |name: &str| {
                        field(&fields, name)
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default()
                    };
                    let batch = field(&fields, FIELD_BATCH).and_then(|b| Batch::decode(b).ok());
                    Some(DeadBatch {
                        entry: id,
                        batch_id: text(FIELD_BATCH_ID),
                        source: batch.as_ref().map(|b| b.source.clone()).unwrap_or_default(),
                        reason: text("reason"),
                        deliveries: text("deliveries").parse().unwrap_or(0),
                        records: batch.map(|b| b.records.len()),
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Moves dead entry `entry` back to the main stream, where it is delivered afresh; `false`
    /// when there is no such dead entry (replayed before).
    ///
    /// # Errors
    /// When Redis does not answer in time.
    pub async fn revive_dead(&self, entry: &str) -> Result<bool, QueueError> {
        let inner = &self.inner;
        let n: i64 = self
            .call("revive_dead", |mut c| async move {
                inner
                    .revive
                    .key(&inner.stream)
                    .key(&inner.dead)
                    .arg(entry)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Removes consumers that hold no pending entries and have been idle for `idle_for`, left
    /// behind by processes that exited; returns how many.
    ///
    /// # Errors
    /// When Redis does not answer in time.
    pub async fn prune_consumers(&self, idle_for: Duration) -> Result<u64, QueueError> {
        let inner = &self.inner;
        let idle_ms = idle_for.as_millis() as u64;
        self.call("prune_consumers", |mut c| async move {
            inner
                .prune
                .key(&inner.stream)
                .arg(&inner.group)
                .arg(idle_ms)
                .invoke_async::<u64>(&mut c)
                .await
        })
        .await
    }

    async fn maybe_prune(&self) {
        let due = {
            let mut last = self
                .inner
                .last_prune
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let idle = PRUNE_IDLE_MIN.max(self.inner.opts.lease_timeout * 10);
            match self.prune_consumers(idle).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    removed = n,
                    "Removed idle consumers of exited processes from the consumer group."
                ),
                Err(error) => tracing::debug!(%error, "Could not prune idle consumers."),
            }
        }
    }

    /// Moves an entry to the dead-letter stream.
    async fn bury(&self, entry: &str, reason: &'static str, deliveries: u32) {
        let inner = &self.inner;
        let res = self
            .call("dead_letter", |mut c| async move {
                inner
                    .bury
                    .key(&inner.stream)
                    .key(&inner.dead)
                    .arg(&inner.group)
                    .arg(entry)
                    .arg(reason)
                    .arg(deliveries)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        match res {
            Ok(_) => {
                metrics::counter!(m::QUEUE_DEAD_LETTERED_TOTAL, "reason" => reason).increment(1);
                tracing::error!(entry, reason, deliveries, stream = %inner.stream, dead = %inner.dead, "Moved a queue entry to the dead-letter stream.");
            }
            // Left pending: it is reclaimed and buried again after the lease timeout.
            Err(error) => {
                tracing::warn!(entry, reason, %error, "Could not dead-letter a queue entry.")
            }
        }
    }

    /// Turns an entry's fields into a lease, or buries the entry when it does not decode.
    async fn to_lease(
        &self,
        entry: String,
        fields: &Value,
        consumer: &str,
        deliveries: u32,
    ) -> Option<Lease> {
        let decoded = field(fields, FIELD_BATCH).map(Batch::decode);
        match decoded {
            Some(Ok(batch)) => Some(Lease {
                token: format!("{deliveries}:{consumer}"),
                entry,
                deliveries,
                batch,
            }),
            Some(Err(error)) => {
                tracing::debug!(entry, %error, "Queue entry does not decode as a batch.");
                self.bury(&entry, "corrupt", deliveries).await;
                None
            }
            None => {
                self.bury(&entry, "corrupt", deliveries).await;
                None
            }
        }
    }

    /// One `XAUTOCLAIM` step for `consumer`.
    async fn try_claim_one(&self, consumer: &str) -> Result<Claimed, QueueError> {
        let inner = &self.inner;
        let cursor = inner
            .claim_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let min_idle = inner.opts.lease_timeout.as_millis() as u64;
        let reply = self
            .call("reclaim", |mut c| async move {
                inner
                    .claim
                    .key(&inner.stream)
                    .key(&inner.dead)
                    .arg(&inner.group)
                    .arg(consumer)
                    .arg(min_idle)
                    .arg(&cursor)
                    .arg(inner.opts.max_deliveries)
                    .invoke_async::<Value>(&mut c)
                    .await
            })
            .await;
        let reply = match reply {
            Ok(Value::Array(parts)) => parts,
            Ok(_) => {
                return Err(QueueError::UnexpectedReply {
                    op: "reclaim",
                    addr: self.link.addr().to_owned(),
                })
            }
            Err(QueueError::Redis { source, .. }) if is_nogroup(&source) => {
                self.ensure_group().await?;
                return Ok(Claimed::Nothing);
            }
            Err(e) => return Err(e),
        };
        if let Some(next) = reply.first().and_then(string) {
            *inner.claim_cursor.lock().unwrap_or_else(|p| p.into_inner()) = next;
        }
        let id = reply.get(1).and_then(string);
        let deliveries = reply
            .get(2)
            .and_then(int)
            .map(|d| d.clamp(0, i64::from(u32::MAX)) as u32);
        match (id, deliveries, reply.get(3)) {
            (None, _, _) => Ok(Claimed::Nothing),
            (Some(id), Some(deliveries), None) => {
                metrics::counter!(m::QUEUE_DEAD_LETTERED_TOTAL, "reason" => "max_deliveries")
                    .increment(1);
                tracing::error!(entry = %id, deliveries, stream = %inner.stream, dead = %inner.dead, "Moved a queue entry to the dead-letter stream after too many deliveries.");
                Ok(Claimed::Buried)
            }
            (Some(id), Some(deliveries), Some(fields)) => {
                tracing::debug!(entry = %id, deliveries, consumer, "Reclaimed a queue entry whose lease expired.");
                Ok(
                    match self.to_lease(id, fields, consumer, deliveries).await {
                        Some(lease) => Claimed::Lease(lease),
                        None => Claimed::Buried,
                    },
                )
            }
            (Some(_), None, _) => Err(QueueError::UnexpectedReply {
                op: "reclaim",
                addr: self.link.addr().to_owned(),
            }),
        }
    }

    /// Reads one never-delivered entry for `consumer`, blocking up to `block` on a dedicated
    /// connection.
    async fn read_new(&self, consumer: &str, block: Duration) -> Result<Option<Lease>, QueueError> {
        let inner = &self.inner;
        let link = &self.link;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&inner.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(1);
        if !block.is_zero() {
            // BLOCK 0 would mean "forever".
            cmd.arg("BLOCK").arg((block.as_millis() as u64).max(1));
        }
        cmd.arg("STREAMS").arg(&inner.stream).arg(NEW_ENTRIES);
        let after = block + inner.opts.command_timeout;
        for attempt in 0..2 {
            let (mut conn, reused) = link.take_blocking().await?;
            // If this future is dropped here, `conn` goes with it: its reply (possibly an
            // entry now pending for us) is never read, and the entry is reclaimed later.
            let res = match tokio::time::timeout(after, cmd.query_async::<Value>(&mut conn)).await {
                Ok(r) => r,
                Err(_) => return Err(QueueError::Timeout { op: "read", after }),
            };
            match res {
                Ok(reply) => {
                    link.put_blocking(conn);
                    let Some((id, fields)) = first_read_entry(reply) else {
                        return Ok(None);
                    };
                    return Ok(self.to_lease(id, &fields, consumer, 1).await);
                }
                Err(e) if is_nogroup(&e) => {
                    link.put_blocking(conn);
                    self.ensure_group().await?;
                }
                Err(e) if is_connection_error(&e) && reused && attempt == 0 => {
                    // A pooled connection died while idle (Redis restarted); try a fresh one.
                    link.clear_blocking();
                }
                Err(e) => return Err(self.redis_err("read")(e)),
            }
        }
        Ok(None)
    }

    async fn lease_impl(&self, worker: &str, wait: Duration) -> Result<Option<Lease>, QueueError> {
        let consumer = self.consumer_name(worker);
        let deadline = Instant::now() + wait;
        loop {
            for _ in 0..MAX_CLAIMS_PER_ROUND {
                match self.try_claim_one(&consumer).await? {
                    Claimed::Lease(lease) => return Ok(Some(lease)),
                    Claimed::Buried => continue,
                    Claimed::Nothing => break,
                }
            }
            // Only right after Redis answered, so a dead Redis never costs a lease this too.
            self.maybe_prune().await;
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(lease) = self.read_new(&consumer, left.min(RECLAIM_EVERY)).await? {
                return Ok(Some(lease));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Runs `script` (the ack or the release) on the entry of `lease`, guarded by the lease's
    /// consumer and delivery count: its answer, 1 when it acted on the entry.
    async fn run_lease_script(
        &self,
        op: &'static str,
        script: &Script,
        lease: &Lease,
    ) -> Result<i64, QueueError> {
        let inner = &self.inner;
        let (deliveries, consumer) = parse_token(lease)?;
        let entry = lease.entry.as_str();
        self.call(op, |mut c| async move {
            script
                .key(&inner.stream)
                .arg(&inner.group)
                .arg(entry)
                .arg(consumer)
                .arg(deliveries)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
    }

    async fn ack_impl(&self, lease: &Lease) -> Result<(), QueueError> {
        let entry = lease.entry.as_str();
        let (deliveries, _) = parse_token(lease)?;
        let res = self.run_lease_script("ack", &self.inner.ack, lease).await;
        match res {
            Ok(1) => Ok(()),
            Ok(0) => {
                tracing::debug!(entry, "Ack matched no pending entry; it was acked before.");
                Ok(())
            }
            Ok(_) => {
                // Another worker reclaimed it after our lease expired; it will ack it.
                tracing::debug!(
                    entry,
                    deliveries,
                    "Ack refused: the lease expired and the entry is leased again."
                );
                Ok(())
            }
            Err(QueueError::Redis { source, .. }) if is_nogroup(&source) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn depth_impl(&self) -> Result<QueueDepth, QueueError> {
        let inner = &self.inner;
        let (total, pending): (u64, u64) = self
            .call("depth", |mut c| async move {
                inner
                    .depth
                    .key(&inner.stream)
                    .arg(&inner.group)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(QueueDepth { total, pending })
    }

    async fn append_impl(&self, batch: &Batch) -> Result<(), QueueError> {
        let payload = batch.encode().map_err(|source| QueueError::Corrupt {
            entry: batch.id.to_string(),
            source,
        })?;
        let (stream, batch_id) = (&self.inner.stream, &batch.id.0);
        self.call("append", |mut c| async move {
            redis::cmd("XADD")
                .arg(stream)
                .arg(AUTO_ID)
                .arg(FIELD_BATCH_ID)
                .arg(batch_id)
                .arg(FIELD_BATCH)
                .arg(payload)
                .query_async::<String>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    /// Runs a cursor command under `cursor_deadline`.
    async fn cursor_call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let after = self.inner.opts.cursor_deadline;
        match tokio::time::timeout(after, self.call(op, f)).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Timeout { op, after }),
        }
    }

    async fn load_shared_cursor(&self, endpoint: &str) -> Result<Option<StoredCursor>, QueueError> {
        let key = &self.inner.cursors;
        let raw: Option<Vec<u8>> = self
            .cursor_call("load_cursor", |mut c| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(endpoint)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        raw.map(|r| serde_json::from_slice(&r))
            .transpose()
            .map_err(|source| QueueError::Corrupt {
                entry: format!("{key}[{endpoint}]"),
                source,
            })
    }

    async fn save_shared_cursor(
        &self,
        endpoint: &str,
        cursor: &StoredCursor,
    ) -> Result<(), QueueError> {
        let key = &self.inner.cursors;
        let value = serde_json::to_vec(cursor).map_err(|source| QueueError::Corrupt {
            entry: format!("{key}[{endpoint}]"),
            source,
        })?;
        self.cursor_call("save_cursor", |mut c| async move {
            redis::cmd("HSET")
                .arg(key)
                .arg(endpoint)
                .arg(value)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    fn mark_spooled_cursor(&self, endpoint: &str, spooled: bool) -> bool {
        let mut set = self
            .inner
            .spooled_cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if spooled {
            set.insert(endpoint.to_owned())
        } else {
            set.remove(endpoint)
        }
    }

    async fn forget_spooled_cursor(&self, spool: &EmbeddedQueue, endpoint: &str) {
        if let Err(error) = spool.delete_cursor(endpoint).await {
            // Harmless: the next load reconciles it with the newer cursor in Redis.
            tracing::warn!(endpoint, %error, "Could not clear a cursor from the spool after Redis took it.");
            self.mark_spooled_cursor(endpoint, true);
        }
    }

    /// Loads the cursor of `endpoint` from Redis, reconciled with a cursor the spool may hold
    /// from a time Redis did not answer (see the module doc).
    ///
    /// # Errors
    /// When neither Redis nor the spool could be read (or there is no spool and Redis failed).
    pub async fn load_cursor(&self, endpoint: &str) -> Result<Option<Cursor>, QueueError> {
        let Some(spool) = &self.inner.cursor_fallback else {
            return Ok(self.load_shared_cursor(endpoint).await?.map(|s| s.cursor()));
        };
        let (shared, local) = tokio::join!(
            self.load_shared_cursor(endpoint),
            spool.load_cursor_stamped(endpoint)
        );
        let local = match local {
            Ok(l) => l.map(|(cursor, at_ms)| StoredCursor {
                epoch: cursor.epoch,
                seq: cursor.seq,
                at_ms,
            }),
            Err(error) => {
                if shared.is_err() {
                    return Err(error);
                }
                tracing::warn!(endpoint, %error, "Could not read the spool's cursor; using the one in Redis.");
                None
            }
        };
        match (shared, local) {
            (Err(e), None) => Err(e),
            (Err(error), Some(local)) => {
                tracing::debug!(endpoint, %error, "Redis did not answer; resuming from the spool's cursor.");
                self.mark_spooled_cursor(endpoint, true);
                Ok(Some(local.cursor()))
            }
            (Ok(shared), None) => Ok(shared.map(|s| s.cursor())),
            (Ok(shared), Some(local)) => {
                let winner = match shared {
                    Some(shared) => reconcile(shared, local.clone()),
                    None => local.clone(),
                };
                let folded = if winner == local {
                    self.save_shared_cursor(endpoint, &winner).await.is_ok()
                } else {
                    true
                };
                if folded {
                    self.mark_spooled_cursor(endpoint, false);
                    self.forget_spooled_cursor(spool, endpoint).await;
                } else {
                    self.mark_spooled_cursor(endpoint, true);
                }
                Ok(Some(winner.cursor()))
            }
        }
    }

    /// Saves the cursor of `endpoint` in the spool without trying Redis (while the hand-off
    /// bypasses a Redis that timed out); the next save that Redis takes clears it, and a load
    /// reconciles both. Without a spool, the same as [`RedisStreamsQueue::save_cursor`].
    ///
    /// # Errors
    /// When the spool cannot be written.
    pub async fn save_cursor_locally(
        &self,
        endpoint: &str,
        cursor: &Cursor,
    ) -> Result<(), QueueError> {
        let Some(spool) = &self.inner.cursor_fallback else {
            return self.save_cursor(endpoint, cursor).await;
        };
        spool.save_cursor(endpoint, cursor).await?;
        self.mark_spooled_cursor(endpoint, true);
        Ok(())
    }

    /// Saves the cursor of `endpoint` in Redis within `cursor_deadline`, else in the spool.
    ///
    /// # Errors
    /// When neither took it.
    pub async fn save_cursor(&self, endpoint: &str, cursor: &Cursor) -> Result<(), QueueError> {
        self.save_cursor_impl(endpoint, cursor, None).await
    }

    /// Like [`Self::save_cursor`], but Redis takes the cursor only while `fence` is the
    /// endpoint's current lease, in the same atomic step: a process whose lease was taken over
    /// cannot move the new holder's cursor. When Redis does not answer the cursor goes to the
    /// local spool as usual (the caller checked its lease by its own clock).
    ///
    /// # Errors
    /// [`QueueError::Fenced`] when the lease is not `fence` any more; otherwise as
    /// [`Self::save_cursor`].
    pub async fn save_cursor_fenced(
        &self,
        endpoint: &str,
        cursor: &Cursor,
        fence: &Fence,
    ) -> Result<(), QueueError> {
        self.save_cursor_impl(endpoint, cursor, Some(fence)).await
    }

    async fn write_fenced_cursor(
        &self,
        endpoint: &str,
        cursor: &StoredCursor,
        fence: &Fence,
    ) -> Result<(), QueueError> {
        let key = &self.inner.cursors;
        let value = serde_json::to_vec(cursor).map_err(|source| QueueError::Corrupt {
            entry: format!("{key}[{endpoint}]"),
            source,
        })?;
        let lease_key = format!("{}:lease:{endpoint}", self.inner.prefix);
        let (script, lease_value) = (&self.inner.fenced_cursor, &fence.value);
        let n: i64 = self
            .cursor_call("save_cursor", |mut c| async move {
                script
                    .key(&lease_key)
                    .key(key)
                    .arg(lease_value)
                    .arg(endpoint)
                    .arg(value)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(QueueError::Fenced {
                endpoint: endpoint.to_owned(),
                token: fence.token(),
            })
        }
    }

    async fn save_cursor_impl(
        &self,
        endpoint: &str,
        cursor: &Cursor,
        fence: Option<&Fence>,
    ) -> Result<(), QueueError> {
        let stored = StoredCursor {
            epoch: cursor.epoch.clone(),
            seq: cursor.seq,
            at_ms: chrono::Utc::now().timestamp_millis(),
        };
        let shared = match fence {
            Some(f) => self.write_fenced_cursor(endpoint, &stored, f).await,
            None => self.save_shared_cursor(endpoint, &stored).await,
        };
        match (shared, &self.inner.cursor_fallback) {
            (Err(e @ QueueError::Fenced { .. }), _) => Err(e),
            (Ok(()), Some(spool)) => {
                if self.mark_spooled_cursor(endpoint, false) {
                    self.forget_spooled_cursor(spool, endpoint).await;
                }
                Ok(())
            }
            (Ok(()), None) => Ok(()),
            (Err(e), None) => Err(e),
            (Err(error), Some(spool)) => {
                tracing::debug!(endpoint, %error, "Redis did not take the cursor; saving it in the spool.");
                spool.save_cursor(endpoint, cursor).await?;
                self.mark_spooled_cursor(endpoint, true);
                Ok(())
            }
        }
    }
}

impl Queue for RedisStreamsQueue {
    async fn append(&self, batch: &Batch) -> Result<(), QueueError> {
        self.append_impl(batch).await
    }

    async fn lease(&self, consumer: &str, wait: Duration) -> Result<Option<Lease>, QueueError> {
        self.lease_impl(consumer, wait).await
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        self.ack_impl(lease).await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.depth_impl().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(epoch: Option<&str>, seq: u64, at_ms: i64) -> StoredCursor {
        StoredCursor {
            epoch: epoch.map(str::to_owned),
            seq,
            at_ms,
        }
    }

    #[test]
    fn reconcile_takes_higher_seq_within_an_epoch() {
        let r = reconcile(stored(Some("e"), 10, 5), stored(Some("e"), 12, 1));
        assert_eq!(r.seq, 12);
        let r = reconcile(stored(Some("e"), 10, 1), stored(Some("e"), 8, 5));
        assert_eq!(r.seq, 10);
    }

    #[test]
    fn reconcile_takes_newer_write_across_epochs() {
        let r = reconcile(stored(Some("old"), 900, 1), stored(Some("new"), 3, 2));
        assert_eq!(r.epoch.as_deref(), Some("new"));
        let r = reconcile(stored(Some("new"), 3, 2), stored(Some("old"), 900, 1));
        assert_eq!(r.epoch.as_deref(), Some("new"));
    }

    #[test]
    fn read_reply_parses_resp2_and_resp3_shapes() {
        let entry = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"batch_id".to_vec()),
                Value::BulkString(b"x".to_vec()),
                Value::BulkString(b"batch".to_vec()),
                Value::BulkString(b"{}".to_vec()),
            ]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"p:stream".to_vec()),
            Value::Array(vec![entry.clone()]),
        ])]);
        let (id, fields) = first_read_entry(resp2).unwrap();
        assert_eq!(id, "1-0");
        assert_eq!(field(&fields, FIELD_BATCH), Some(&b"{}"[..]));
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"p:stream".to_vec()),
            Value::Array(vec![entry]),
        )]);
        assert_eq!(first_read_entry(resp3).unwrap().0, "1-0");
        assert!(first_read_entry(Value::Nil).is_none());
    }

    #[test]
    fn consumer_stem_names_host_pid_and_a_random_part() {
        let a = process_consumer_name();
        let b = process_consumer_name();
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())));
    }
}
