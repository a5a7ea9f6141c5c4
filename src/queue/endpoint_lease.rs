//! [`EndpointLeases`]: the Redis side of endpoint ownership. Each endpoint is pulled by at most
//! one `botpipe run` process at a time; that process holds the endpoint's lease. This file owns
//! the keys and the atomic steps on them; when to take, renew or give up a lease, and what the
//! puller does meanwhile, is [`crate::pull::ownership`].
//!
//! Keys, under the queue's prefix `P`:
//! - `P:lease:<endpoint>`: the lease, `"<token>|<since_ms>|<holder JSON>"`, with a TTL. Taken only
//!   when absent (`SET … NX PX` inside the acquire script), renewed (`PEXPIRE`) and deleted only by
//!   a caller that presents the exact value it was given.
//! - `P:lease_token:<endpoint>`: the fencing counter, bumped on every acquisition and never
//!   expired, so a newer holder always has a larger token than any stale one.
//! - `P:members`: a hash of live processes, `instance → "<expires_ms>|<member JSON>"`, written by
//!   every process on each keeper round (its heartbeat) with the number of endpoints it holds;
//!   entries past their expiry are pruned by the next round of anyone. Balance reads it.
//!
//! Every step is one Lua script, so "check that I still hold it, then act" cannot interleave
//! with another process's takeover. Times inside scripts come from the Redis server's clock
//! (`TIME`), so hosts with skewed clocks agree on member expiry and on `since`.
//!
//! The fenced cursor write (the cursor is saved only while the writer's lease value is current)
//! is [`super::RedisStreamsQueue::save_cursor_fenced`], beside the other cursor code.

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use super::{Cursor, QueueError, RedisStreamsQueue};

/// Takes a free lease: `{1, value}` when taken, `{0, current}` when someone holds it.
const ACQUIRE_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token = redis.call('INCR', KEYS[2])
local v = token .. '|' .. now .. '|' .. ARGV[1]
redis.call('SET', KEYS[1], v, 'NX', 'PX', ARGV[2])
return {1, v}
";

/// Extends the lease when the caller's value is current: 1, else 0.
const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Deletes the lease when the caller's value is current: 1, else 0.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// One keeper round: heartbeat, prune dead members, read every lease of interest and renew the
/// caller's own. KEYS[1] members, KEYS[2..] leases; ARGV[1] instance, ARGV[2] member JSON,
/// ARGV[3] ttl ms, ARGV[4..] the caller's value per lease ('' where it holds none).
/// Returns `{live member JSONs, current lease values ('' when free)}`.
const ROUND_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], (now + ttl) .. '|' .. ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local sep = string.find(v, '|', 1, true)
  local exp = sep and tonumber(string.sub(v, 1, sep - 1))
  if (not exp) or exp < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    table.insert(live, string.sub(v, sep + 1))
  end
end
local leases = {}
for i = 2, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  local mine = ARGV[i + 2]
  if cur and mine ~= '' and cur == mine then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
  table.insert(leases, cur or '')
end
return {live, leases}
";

/// Who holds (or wants) leases: one running process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Random per process start, so a restarted process with the same name is another holder.
    pub instance: String,
    /// `--name` / `BOTPIPE_NAME`, default `host-pid`.
    pub name: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
}

impl Holder {
    /// This process, named `name` (or `host-pid` when `None`).
    pub fn this_process(name: Option<String>) -> Self {
        let host = host_name();
        let pid = std::process::id();
        Self {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            name: name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| format!("{host}-{pid}")),
            host,
            pid,
        }
    }
}

/// This machine's host name, for holders and logs.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into())
}

/// A lease as read from Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Fencing token: larger for every later acquisition of the endpoint.
    pub token: u64,
    /// When it was acquired (Redis server clock).
    pub since: DateTime<Utc>,
    /// Who holds it.
    pub holder: Holder,
}

impl LeaseInfo {
    /// Parses a stored value; `None` for anything this version did not write.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.splitn(3, '|');
        let token = parts.next()?.parse().ok()?;
        let since_ms: i64 = parts.next()?.parse().ok()?;
        let holder = serde_json::from_str(parts.next()?).ok()?;
        Some(Self {
            token,
            since: DateTime::from_timestamp_millis(since_ms)?,
            holder,
        })
    }
}

/// Proof of holding one endpoint's lease: the exact stored value, which every fenced step
/// compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The endpoint.
    pub endpoint: String,
    /// The stored value, token included.
    pub value: String,
    /// The lease it stands for.
    pub info: LeaseInfo,
}

impl Fence {
    /// The fencing token.
    pub fn token(&self) -> u64 {
        self.info.token
    }
}

/// What an acquisition attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease was free and is now ours.
    Won(Fence),
    /// Someone holds it (`None` when the value is not one this version wrote).
    Held(Option<LeaseInfo>),
}

/// A live process as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Who.
    pub holder: Holder,
    /// Endpoints it held at its last heartbeat.
    pub held: usize,
}

/// What one keeper round saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// Live processes, this one included.
    pub members: Vec<Member>,
    /// Per endpoint asked about, the current raw value (`None` when free).
    pub leases: Vec<Option<String>>,
}

/// Endpoint leases on the Redis of a [`RedisStreamsQueue`] (same link, same prefix).
#[derive(Debug, Clone)]
pub struct EndpointLeases {
    queue: RedisStreamsQueue,
    prefix: String,
    ttl: Duration,
    holder: Holder,
    holder_json: String,
    scripts: std::sync::Arc<Scripts>,
}

#[derive(Debug)]
struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
    round: Script,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn bulk(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        _ => None,
    }
}

impl EndpointLeases {
    /// Leases of `prefix` (the queue's key prefix) held for `ttl` by `holder`, reached through
    /// `queue`'s connections.
    pub(super) fn new(
        queue: RedisStreamsQueue,
        prefix: String,
        ttl: Duration,
        holder: Holder,
    ) -> Self {
        let holder_json = serde_json::to_string(&holder).unwrap_or_default();
        Self {
            queue,
            prefix,
            ttl,
            holder,
            holder_json,
            scripts: std::sync::Arc::new(Scripts {
                acquire: Script::new(ACQUIRE_LUA),
                renew: Script::new(RENEW_LUA),
                release: Script::new(RELEASE_LUA),
                round: Script::new(ROUND_LUA),
            }),
        }
    }

    /// The same leases for use from another tokio runtime (see
    /// [`RedisStreamsQueue::with_own_link`]).
    pub fn with_own_link(&self) -> Self {
        Self {
            queue: self.queue.with_own_link(),
            ..self.clone()
        }
    }

    /// This process.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// How long a lease lives without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key of `endpoint`'s lease.
    pub fn lease_key(&self, endpoint: &str) -> String {
        format!("{}:lease:{endpoint}", self.prefix)
    }

    fn token_key(&self, endpoint: &str) -> String {
        format!("{}:lease_token:{endpoint}", self.prefix)
    }

    fn members_key(&self) -> String {
        format!("{}:members", self.prefix)
    }

    fn unexpected(&self, op: &'static str) -> QueueError {
        QueueError::UnexpectedReply {
            op,
            addr: self.queue.addr().to_owned(),
        }
    }

    /// Takes `endpoint`'s lease if nobody holds it.
    ///
    /// # Errors
    /// When Redis does not answer within the command timeout, or answers nonsense.
    pub async fn try_acquire(&self, endpoint: &str) -> Result<Acquire, QueueError> {
        let (key, counter) = (self.lease_key(endpoint), self.token_key(endpoint));
        let (json, ttl, script) = (&self.holder_json, ms(self.ttl), &self.scripts.acquire);
        let reply: Value = self
            .queue
            .call("lease_acquire", |mut c| async move {
                script
                    .key(&key)
                    .key(&counter)
                    .arg(json)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let parts = array(reply).ok_or_else(|| self.unexpected("lease_acquire"))?;
        let (won, value) = match parts.as_slice() {
            [Value::Int(won), v] => (*won == 1, bulk(v)),
            _ => return Err(self.unexpected("lease_acquire")),
        };
        let value = value.ok_or_else(|| self.unexpected("lease_acquire"))?;
        if !won {
            return Ok(Acquire::Held(LeaseInfo::parse(&value)));
        }
        let info = LeaseInfo::parse(&value).ok_or_else(|| self.unexpected("lease_acquire"))?;
        Ok(Acquire::Won(Fence {
            endpoint: endpoint.to_owned(),
            value,
            info,
        }))
    }

    async fn fenced(
        &self,
        op: &'static str,
        script: &Script,
        fence: &Fence,
    ) -> Result<bool, QueueError> {
        let key = self.lease_key(&fence.endpoint);
        let (value, ttl) = (&fence.value, ms(self.ttl));
        let n: i64 = self
            .queue
            .call(op, |mut c| async move {
                script
                    .key(&key)
                    .arg(value)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Checks that `fence` is still the current lease and, if so, extends it by the TTL: one
    /// round trip. `Ok(false)` means the lease expired or another process holds it now.
    ///
    /// # Errors
    /// When Redis does not answer within the command timeout.
    pub async fn renew(&self, fence: &Fence) -> Result<bool, QueueError> {
        self.fenced("lease_renew", &self.scripts.renew, fence).await
    }

    /// Deletes the lease if `fence` is still current (a graceful hand-over: the next process
    /// need not wait for the TTL). `Ok(false)` when it was not ours any more.
    ///
    /// # Errors
    /// When Redis does not answer within the command timeout.
    pub async fn release(&self, fence: &Fence) -> Result<bool, QueueError> {
        self.fenced("lease_release", &self.scripts.release, fence)
            .await
    }

    /// One keeper round in one round trip: heartbeat (announcing `held`), prune dead members,
    /// read the leases of `endpoints` and renew those where `mine` holds the current value.
    ///
    /// # Errors
    /// When Redis does not answer within the command timeout, or answers nonsense.
    pub async fn round(
        &self,
        endpoints: &[String],
        mine: &[Option<&Fence>],
        held: usize,
    ) -> Result<Round, QueueError> {
        let member = serde_json::to_string(&Member {
            holder: self.holder.clone(),
            held,
        })
        .unwrap_or_default();
        let keys: Vec<String> = endpoints.iter().map(|e| self.lease_key(e)).collect();
        let members_key = self.members_key();
        let values: Vec<&str> = (0..endpoints.len())
            .map(|i| {
                mine.get(i)
                    .copied()
                    .flatten()
                    .map_or("", |f| f.value.as_str())
            })
            .collect();
        let (instance, ttl, script) = (&self.holder.instance, ms(self.ttl), &self.scripts.round);
        let reply: Value = self
            .queue
            .call("lease_round", |mut c| async move {
                let mut inv = script.key(&members_key);
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(instance).arg(&member).arg(ttl);
                for v in &values {
                    inv.arg(*v);
                }
                inv.invoke_async(&mut c).await
            })
            .await?;
        let mut parts = array(reply).ok_or_else(|| self.unexpected("lease_round"))?;
        if parts.len() != 2 {
            return Err(self.unexpected("lease_round"));
        }
        let leases = array(parts.pop().unwrap_or(Value::Nil))
            .ok_or_else(|| self.unexpected("lease_round"))?
            .iter()
            .map(|v| bulk(v).filter(|s| !s.is_empty()))
            .collect();
        let members = array(parts.pop().unwrap_or(Value::Nil))
            .ok_or_else(|| self.unexpected("lease_round"))?
            .iter()
            .filter_map(|v| serde_json::from_str(&bulk(v)?).ok())
            .collect();
        Ok(Round { members, leases })
    }

    /// Who holds each of `endpoints` now (for `botpipe status`), without touching anything.
    ///
    /// # Errors
    /// When Redis does not answer within the command timeout.
    pub async fn owners(&self, endpoints: &[String]) -> Result<Vec<Option<LeaseInfo>>, QueueError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = endpoints.iter().map(|e| self.lease_key(e)).collect();
        let values: Vec<Option<String>> = self
            .queue
            .call("lease_owners", |mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await
            })
            .await?;
        Ok(values
            .iter()
            .map(|v| v.as_deref().and_then(LeaseInfo::parse))
            .collect())
    }

    /// The shared cursor of `endpoint`, as a new holder resumes from it (reconciled with a
    /// cursor this process's spool may hold; see [`RedisStreamsQueue::load_cursor`]).
    ///
    /// # Errors
    /// When neither Redis nor the spool could be read.
    pub async fn load_cursor(&self, endpoint: &str) -> Result<Option<Cursor>, QueueError> {
        self.queue.load_cursor(endpoint).await
    }

    /// Removes this process's heartbeat (graceful shutdown), so the others rebalance at once.
    ///
    /// # Errors
    /// When Redis does not answer within the command timeout.
    pub async fn leave(&self) -> Result<(), QueueError> {
        let (key, instance) = (self.members_key(), &self.holder.instance);
        self.queue
            .call("lease_leave", |mut c| async move {
                redis::cmd("HDEL")
                    .arg(&key)
                    .arg(instance)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_value_parses_back() {
        let h = Holder::this_process(Some("p1".into()));
        let raw = format!("42|1764600000123|{}", serde_json::to_string(&h).unwrap());
        let info = LeaseInfo::parse(&raw).unwrap();
        assert_eq!(info.token, 42);
        assert_eq!(info.holder, h);
        assert_eq!(info.since.timestamp_millis(), 1_764_600_000_123);
        assert!(LeaseInfo::parse("garbage").is_none());
    }

    #[test]
    fn a_process_is_named_host_pid_by_default() {
        let h = Holder::this_process(None);
        assert_eq!(h.name, format!("{}-{}", h.host, std::process::id()));
        assert_eq!(Holder::this_process(Some(" ".into())).name, h.name);
        assert_ne!(Holder::this_process(None).instance, h.instance);
    }
}
