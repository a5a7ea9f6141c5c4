//! Per-test Redis state: a random key prefix and consumer group on the shared local server,
//! with every key under the prefix deleted on drop (omniqueue's `RedisStreamDrop`). Tests get
//! one through [`TestRedis::require`], which skips them when Redis is not running.

use std::net::SocketAddr;
use std::time::Duration;

use botpipe::config::RedisSettings;
use botpipe::queue::{RedisQueueOptions, RedisStreamsQueue};

use super::services::{available, Service};

/// The local Redis server every test shares.
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

/// The local Redis server's URL.
pub fn redis_url() -> String {
    format!("redis://{REDIS_ADDR}")
}

/// The local Redis server's address.
pub fn redis_addr() -> SocketAddr {
    REDIS_ADDR.parse().unwrap()
}

/// One `XRANGE` entry: id and field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// A test's own slice of Redis.
pub struct TestRedis {
    /// Prefix of every key this test uses.
    pub prefix: String,
    /// Consumer group name.
    pub group: String,
}

impl TestRedis {
    /// A fresh random prefix, or `None` when Redis is not running and the calling test should
    /// return at once (see [`super::services`]).
    pub fn require() -> Option<Self> {
        available([Service::Redis]).then(Self::new)
    }

    /// A fresh random prefix, without checking that Redis runs: for tests that hold one
    /// without using it (an embedded-backend case of a shared fixture).
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            prefix: format!("bptest-{}", &id[..12]),
            group: "workers".into(),
        }
    }

    /// Settings pointing at `url` (the server itself or a proxy in front of it).
    pub fn settings(&self, url: &str) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            tls: Default::default(),
            prefix: self.prefix.clone(),
            group: self.group.clone(),
        }
    }

    /// A queue (a new "process": its own consumer stem) reaching Redis through `url`.
    pub fn queue(
        &self,
        url: &str,
        opts: RedisQueueOptions,
        spool: Option<botpipe::queue::EmbeddedQueue>,
    ) -> RedisStreamsQueue {
        RedisStreamsQueue::new(&self.settings(url), opts, spool).unwrap()
    }

    /// A direct connection for assertions.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Length of the stream `{prefix}:{name}`.
    pub async fn xlen(&self, name: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(format!("{}:{name}", self.prefix))
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    /// Batch ids of every entry in the main stream.
    pub async fn stream_batch_ids(&self) -> Vec<String> {
        let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
            .arg(format!("{}:stream", self.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        entries
            .into_iter()
            .filter_map(|(_, fields)| {
                fields
                    .into_iter()
                    .find(|(k, _)| k == "batch_id")
                    .map(|(_, v)| String::from_utf8(v).unwrap())
            })
            .collect()
    }
}

/// Options with short timeouts so fault tests finish quickly.
pub fn fast_options(lease_timeout: Duration, max_deliveries: u32) -> RedisQueueOptions {
    RedisQueueOptions {
        lease_timeout,
        max_deliveries,
        connect_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_secs(1),
        cursor_deadline: Duration::from_millis(100),
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut c) = client.get_connection() else {
            return;
        };
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query::<(u64, Vec<String>)>(&mut c)
            else {
                return;
            };
            if !keys.is_empty() {
                redis::cmd("DEL").arg(&keys).query::<()>(&mut c).ok();
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}
