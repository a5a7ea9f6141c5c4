//! Redis-specific behaviour of the queue beyond the shared contract: start-up without Redis,
//! bounded calls against a dead or hanging Redis, shared cursors with the spool as fallback,
//! undecodable entries, a Redis that lost its keys, consumer pruning, depth sampling, and one
//! link per runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use botpipe::config::{QueueBackend, QueueSettings};
use botpipe::queue::{
    self, AnyQueue, Backpressure, Cursor, DepthSampler, EmbeddedQueue, Queue, QueueError,
};
use rstest::rstest;

use crate::helpers::keyspace::{fast_options, redis_addr, redis_url, TestRedis};
use crate::helpers::proxy::{FaultProxy, Mode};
use crate::helpers::{init_test_log, test_batch, wait_until};

const LEASE: Duration = Duration::from_secs(60);

fn settings(redis: &TestRedis, url: &str, spool: PathBuf) -> QueueSettings {
    QueueSettings {
        backend: QueueBackend::Redis(redis.settings(url)),
        spool_path: spool,
        handoff_deadline: Duration::from_millis(200),
        lease_timeout: LEASE,
        lease_ttl: Duration::from_secs(30),
        endpoint_leases: false,
        max_deliveries: 5,
        high_watermark: 10,
        low_watermark: 5,
        spool_max_batches: 100,
    }
}

#[tokio::test]
async fn open_picks_the_backend_and_tolerates_a_dead_redis_but_not_a_bad_url() {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    proxy.set_mode(Mode::Refuse);
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.sqlite");
    let (q, spool) = queue::open(&settings(&redis, &proxy.redis_url(), spool_path.clone()))
        .await
        .unwrap();
    assert!(matches!(q, AnyQueue::Redis(_)));
    assert_eq!(spool.unwrap().path(), spool_path);

    let bad = settings(&redis, "redis://127.0.0.1:notaport", spool_path);
    assert!(matches!(
        queue::open(&bad).await,
        Err(QueueError::BadUrl { .. })
    ));

    let mut embedded = settings(&redis, "", dir.path().join("unused.sqlite"));
    embedded.backend = QueueBackend::Embedded {
        path: dir.path().join("queue.sqlite"),
    };
    let (q, spool) = queue::open(&embedded).await.unwrap();
    assert!(matches!(q, AnyQueue::Embedded(_)));
    assert!(
        spool.is_none(),
        "the embedded queue is already local and durable"
    );
}

#[rstest]
#[case::dead(Mode::Refuse)]
#[case::hanging(Mode::Hang)]
#[tokio::test]
async fn lease_returns_an_error_quickly_when_redis_fails(#[case] fault: Mode) {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let opts = fast_options(LEASE, 5);
    let bound = Duration::from_millis(500) + opts.command_timeout + opts.connect_timeout;
    let q = redis.queue(&proxy.redis_url(), opts, None);
    q.append(&test_batch("east", 1)).await.unwrap();
    let l = q.lease("w", Duration::from_secs(5)).await.unwrap().unwrap();
    q.ack(&l).await.unwrap();

    proxy.set_mode(fault);
    for _ in 0..3 {
        let started = Instant::now();
        let res = q.lease("w", Duration::from_millis(500)).await;
        let took = started.elapsed();
        assert!(
            res.is_err(),
            "lease against a failed Redis must fail, got {res:?}"
        );
        assert!(
            res.as_ref().unwrap_err().is_retryable(),
            "a worker should retry: {res:?}"
        );
        // The bound is wait + command timeout + dial timeout, plus scheduling slack.
        assert!(
            took < bound + Duration::from_millis(500),
            "lease took {took:?}"
        );
    }

    proxy.set_mode(Mode::Pass);
    let b = test_batch("east", 1);
    wait_until(
        Duration::from_secs(10),
        "Redis to take a batch again",
        || async { q.append(&b).await.is_ok() },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "a lease after recovery",
        || async { matches!(q.lease("w", Duration::from_millis(200)).await, Ok(Some(_))) },
    )
    .await;
}

/// The pullers run on a runtime of their own, and redis-rs drives a connection on the runtime that
/// dialled it. A handle from `with_own_link` dials its own connections, so shutting the other
/// runtime down leaves this one's queue working at the first call. (With one shared link, the
/// connection the other runtime dialled would die with it and the next call here would fail.)
#[tokio::test]
async fn a_handle_with_its_own_link_outlives_the_runtime_of_the_other() {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let q = redis.queue(&redis_url(), fast_options(LEASE, 5), None);
    let pull_side = q.with_own_link();
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pulled = test_batch("east", 3);
    let b = pulled.clone();
    other
        .spawn(async move { pull_side.append(&b).await })
        .await
        .unwrap()
        .unwrap();
    other.shutdown_background();

    let lease = q.lease("w", Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(lease.batch.id, pulled.id);
    q.ack(&lease).await.unwrap();
    q.append(&test_batch("east", 1)).await.unwrap();
}

#[tokio::test]
async fn cursors_fall_back_to_the_spool_and_fold_back_into_redis() {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = EmbeddedQueue::open(&dir.path().join("spool.sqlite"), LEASE, 5).unwrap();
    let opts = fast_options(LEASE, 5);
    let deadline = opts.cursor_deadline;
    let q = redis.queue(&proxy.redis_url(), opts, Some(spool.clone()));
    let at = |seq| Cursor {
        epoch: Some("e1".into()),
        seq,
    };

    q.save_cursor("east", &at(10)).await.unwrap();
    proxy.set_mode(Mode::Hang);
    let started = Instant::now();
    q.save_cursor("east", &at(20)).await.unwrap();
    assert!(
        started.elapsed() < deadline + Duration::from_millis(500),
        "cursor save took {:?}",
        started.elapsed()
    );
    // Dead rather than hanging from here on, so the held write is dropped and cannot reach
    // Redis late (which it may in production; the fold-back below handles that too).
    proxy.set_mode(Mode::Refuse);
    assert_eq!(spool.load_cursor("east").await.unwrap(), Some(at(20)));
    assert_eq!(q.load_cursor("east").await.unwrap(), Some(at(20)));

    proxy.set_mode(Mode::Pass);
    // Another process, which never saw the spool, still reads 10 from Redis until folded back.
    let other = redis.queue(&redis_url(), fast_options(LEASE, 5), None);
    assert_eq!(other.load_cursor("east").await.unwrap(), Some(at(10)));
    wait_until(
        Duration::from_secs(10),
        "the spool's cursor to fold into Redis",
        || async {
            q.load_cursor("east").await.ok() == Some(Some(at(20)))
                && spool.load_cursor("east").await.unwrap().is_none()
        },
    )
    .await;
    assert_eq!(other.load_cursor("east").await.unwrap(), Some(at(20)));

    // A save that reaches Redis clears an older spooled copy too.
    proxy.set_mode(Mode::Refuse);
    q.save_cursor("east", &at(30)).await.unwrap();
    proxy.set_mode(Mode::Pass);
    wait_until(Duration::from_secs(10), "a save to reach Redis", || async {
        q.save_cursor("east", &at(31)).await.is_ok()
            && spool.load_cursor("east").await.unwrap().is_none()
    })
    .await;
    assert_eq!(other.load_cursor("east").await.unwrap(), Some(at(31)));
}

#[tokio::test]
async fn undecodable_entries_are_dead_lettered() {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let q = redis.queue(&redis_url(), fast_options(LEASE, 5), None);
    q.ping().await.unwrap();
    let mut c = redis.conn().await;
    let _: String = redis::cmd("XADD")
        .arg(q.stream_key())
        .arg("*")
        .arg("batch")
        .arg("not json")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(q.stream_key())
        .arg("*")
        .arg("other")
        .arg("field")
        .query_async(&mut c)
        .await
        .unwrap();
    let good = test_batch("east", 1);
    q.append(&good).await.unwrap();
    let lease = q.lease("w", Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(
        lease.batch.id, good.id,
        "bad entries are skipped, not delivered"
    );
    q.ack(&lease).await.unwrap();
    assert_eq!(q.dead_count().await.unwrap(), 2);
    assert_eq!(redis.xlen("stream").await, 0);
}

#[tokio::test]
async fn queue_recovers_when_redis_lost_its_stream_and_group() {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let q = redis.queue(&redis_url(), fast_options(LEASE, 5), None);
    q.append(&test_batch("east", 1)).await.unwrap();
    let l = q.lease("w", Duration::from_secs(5)).await.unwrap().unwrap();
    q.ack(&l).await.unwrap();
    // As after a restart without persistence: the stream and its group are gone.
    let _: () = redis::cmd("DEL")
        .arg(q.stream_key())
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let b = test_batch("east", 1);
    q.append(&b).await.unwrap();
    let again = q.lease("w", Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(again.batch.id, b.id);
    q.ack(&again).await.unwrap();
    assert_eq!(q.depth().await.unwrap().total, 0);
}

#[tokio::test]
async fn consumers_without_pending_entries_are_pruned() {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let gone = redis.queue(&redis_url(), fast_options(LEASE, 5), None);
    gone.append(&test_batch("east", 1)).await.unwrap();
    let l = gone
        .lease("w", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    // A second consumer keeps an entry pending: it must survive the prune.
    gone.append(&test_batch("east", 1)).await.unwrap();
    let _held = gone
        .lease("busy", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    gone.ack(&l).await.unwrap();
    drop(gone);

    let q = redis.queue(&redis_url(), fast_options(LEASE, 5), None);
    let removed = q.prune_consumers(Duration::ZERO).await.unwrap();
    assert_eq!(removed, 1);
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(q.stream_key())
        .arg(&redis.group)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(consumers.len(), 1, "the consumer holding an entry stays");
}

#[tokio::test]
async fn depth_sampler_feeds_backpressure_and_survives_a_dead_redis() {
    init_test_log();
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = EmbeddedQueue::open(&dir.path().join("spool.sqlite"), LEASE, 5).unwrap();
    let q = AnyQueue::Redis(redis.queue(
        &proxy.redis_url(),
        fast_options(LEASE, 5),
        Some(spool.clone()),
    ));
    let gate = Arc::new(Backpressure::new(4, 2, 3));
    let mut sampler = DepthSampler::new(
        q.clone(),
        Some(spool.clone()),
        Arc::clone(&gate),
        Duration::from_millis(300),
    );
    for _ in 0..2 {
        q.append(&test_batch("east", 1)).await.unwrap();
    }
    let s = sampler.sample_once().await;
    assert_eq!(s.queue.unwrap().total, 2);
    assert_eq!(s.spool, Some(0));
    assert!(gate.allows_pull());

    proxy.set_mode(Mode::Hang);
    spool.append(&test_batch("east", 1)).await.unwrap();
    spool.append(&test_batch("east", 1)).await.unwrap();
    let started = Instant::now();
    let s = sampler.sample_once().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "sampling is bounded"
    );
    assert_eq!(s.queue, None, "a hanging Redis gives no figure");
    assert_eq!(s.spool, Some(2));
    assert!(
        !gate.allows_pull(),
        "last known queue depth 2 + spool 2 reaches the high mark"
    );
    assert_eq!(gate.last_depth(), 4);
}
