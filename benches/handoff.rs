//! Hand-off throughput: batches of 1,000 records made durable in Redis (XADD through
//! `Handoff`) and, with Redis unreachable, in the local spool (SQLite, `synchronous=FULL`);
//! plus the spool drainer's rate and a raw `XADD` baseline measured in the same run, as
//! `docs/performance.md` asks. Needs the local Redis at 127.0.0.1:6379.
//!
//! Run: `cargo bench --bench handoff` (optionally `BENCH_SECS=5`). Prints one Markdown table row
//! per case: batches/s, records/s, p50 and p99 latency of one hand-off.

use std::time::{Duration, Instant};

use botpipe::config::RedisSettings;
use botpipe::queue::{
    AnyQueue, DrainStep, EmbeddedQueue, Handoff, HandoffTarget, Queue, RedisQueueOptions,
    RedisStreamsQueue, SpoolDrainer,
};
use botpipe::record::{Batch, BotnetType, LogType, NodeIp, Record, SeqId};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const RECORDS: usize = 1000;
const DEADLINE: Duration = Duration::from_millis(500);

fn batch() -> Batch {
    let now = chrono::Utc::now();
    let mozi = BotnetType::parse("mozi").expect("valid type");
    let records = (0..RECORDS)
        .map(|i| Record {
            ip: NodeIp::parse(&format!(
                "1.{}.{}.{}",
                2 + i / 62_500,
                (i / 250) % 250,
                i % 250 + 1
            ))
            .expect("valid ip"),
            timestamp: now,
            botnet_type: mozi.clone(),
            log_type: LogType::Online,
            seq_id: Some(SeqId(i as u64 + 1)),
        })
        .collect();
    Batch::new("bench", records, vec![])
}

struct Stats {
    name: String,
    batches: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn row(mut self) -> String {
        self.latencies.sort();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies.get(i).copied().unwrap_or_default()
        };
        let per_s = self.batches as f64 / self.elapsed.as_secs_f64();
        format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
            self.name,
            self.batches,
            per_s,
            per_s * RECORDS as f64,
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        )
    }
}

/// Runs `concurrency` loops of `op` for `secs`, timing each call.
async fn measure<F, Fut>(name: &str, secs: Duration, concurrency: usize, op: F) -> Stats
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let end = started + secs;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                op().await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("bench task"));
    }
    Stats {
        name: name.to_owned(),
        batches: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

fn options() -> RedisQueueOptions {
    RedisQueueOptions {
        lease_timeout: Duration::from_secs(60),
        max_deliveries: 5,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(2),
        cursor_deadline: DEADLINE,
    }
}

async fn delete_prefix(prefix: &str) {
    let client = redis::Client::open(REDIS_URL).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    for suffix in ["stream", "dead", "cursors", "raw"] {
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}:{suffix}"))
            .query_async(&mut c)
            .await
            .expect("DEL");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    let prefix = format!("bpbench-{:08x}", rand::random::<u32>());
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = batch();
    let encoded = sample.encode().expect("encode");
    println!(
        "batch: {RECORDS} records, {} bytes encoded; {}s per case",
        encoded.len(),
        secs.as_secs()
    );
    println!("| case | batches | batches/s | records/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");

    // What every hand-off pays before any I/O: encoding the batch.
    let stats = measure("encode only (serde_json), 1 at a time", secs, 1, {
        let b = sample.clone();
        move || {
            let b = b.clone();
            async move {
                std::hint::black_box(b.encode().expect("encode"));
            }
        }
    })
    .await;
    println!("{}", stats.row());

    // Baseline: raw XADD of the same encoded payload, one connection, one at a time.
    let client = redis::Client::open(REDIS_URL).expect("url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let raw_key = format!("{prefix}:raw");
    let stats = measure("raw XADD (redis-rs, pre-encoded), 1 at a time", secs, 1, {
        let (conn, key, payload) = (conn.clone(), raw_key.clone(), encoded.clone());
        move || {
            let (mut conn, key, payload) = (conn.clone(), key.clone(), payload.clone());
            async move {
                let _: String = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("batch")
                    .arg(payload)
                    .query_async(&mut conn)
                    .await
                    .expect("XADD");
            }
        }
    })
    .await;
    println!("{}", stats.row());
    let _: () = redis::cmd("DEL")
        .arg(&raw_key)
        .query_async(&mut conn.clone())
        .await
        .expect("DEL");

    // Hand-off to Redis (encode + XADD), 1 and 4 pullers at a time.
    let settings = RedisSettings {
        url: REDIS_URL.into(),
        tls: Default::default(),
        prefix: prefix.clone(),
        group: "bench".into(),
    };
    let spool = EmbeddedQueue::open(&dir.path().join("spool.sqlite"), Duration::from_secs(60), 5)
        .expect("spool");
    let redis_q =
        AnyQueue::Redis(RedisStreamsQueue::new(&settings, options(), None).expect("queue"));
    let to_redis = Handoff::new(redis_q.clone(), Some(spool.clone()), DEADLINE);
    for concurrency in [1, 4] {
        let stats = measure(
            &format!("hand-off to Redis, {concurrency} at a time"),
            secs,
            concurrency,
            {
                let (h, b) = (to_redis.clone(), sample.clone());
                move || {
                    let (h, b) = (h.clone(), b.clone());
                    async move {
                        let t = h.handoff(&b).await.expect("hand-off");
                        assert_eq!(t, HandoffTarget::Queue, "Redis should take it");
                    }
                }
            },
        )
        .await;
        println!("{}", stats.row());
        delete_prefix(&prefix).await;
    }

    // Hand-off with Redis unreachable: nothing listens on the port, so every batch goes to
    // the spool after a fast failure.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dead = RedisSettings {
        url: format!("redis://127.0.0.1:{dead_port}").into(),
        ..settings.clone()
    };
    let dead_q = AnyQueue::Redis(RedisStreamsQueue::new(&dead, options(), None).expect("queue"));
    let to_spool = Handoff::new(dead_q, Some(spool.clone()), DEADLINE);
    for concurrency in [1, 4] {
        let stats = measure(
            &format!("hand-off through the spool (Redis down), {concurrency} at a time"),
            secs,
            concurrency,
            {
                let (h, b) = (to_spool.clone(), sample.clone());
                move || {
                    let (h, b) = (h.clone(), b.clone());
                    async move {
                        let t = h.handoff(&b).await.expect("hand-off");
                        assert_eq!(t, HandoffTarget::Spool, "Redis is down");
                    }
                }
            },
        )
        .await;
        println!("{}", stats.row());
    }

    // Drain what was spooled back into Redis.
    let spooled = spool.depth().await.expect("depth").total;
    let drainer = SpoolDrainer::new(spool.clone(), redis_q.clone());
    let started = Instant::now();
    let mut latencies = Vec::new();
    loop {
        let t = Instant::now();
        match drainer.try_drain_one().await.expect("drain") {
            DrainStep::Moved => latencies.push(t.elapsed()),
            DrainStep::Empty => break,
        }
    }
    let stats = Stats {
        name: format!("spool drain into Redis ({spooled} batches)"),
        batches: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    };
    println!("{}", stats.row());
    delete_prefix(&prefix).await;
}
