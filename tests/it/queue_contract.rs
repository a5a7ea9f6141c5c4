//! The `Queue` contract, run for every backend (embedded SQLite and Redis Streams): delivery
//! at least once, redelivery after a lease expires or its consumer dies, fenced and idempotent
//! acks, dead-lettering after too many deliveries, depth, and no ordering assumption.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use botpipe::queue::{AnyQueue, Cursor, EmbeddedQueue, Queue, QueueDepth};
use rstest::rstest;

use crate::helpers::keyspace::{fast_options, redis_url, TestRedis};
use crate::helpers::{init_test_log, test_batch, wait_until};

#[derive(Debug, Clone, Copy)]
enum Backend {
    Embedded,
    Redis,
}

/// One backend's state for one test: a temp dir and a Redis key prefix, both cleaned up.
struct Harness {
    backend: Backend,
    dir: tempfile::TempDir,
    redis: TestRedis,
    lease_timeout: Duration,
    max_deliveries: u32,
}

impl Harness {
    /// The harness, or `None` when the backend's service is not running (the test is skipped).
    fn new(backend: Backend, lease_timeout: Duration, max_deliveries: u32) -> Option<Self> {
        init_test_log();
        let redis = match backend {
            Backend::Embedded => TestRedis::new(),
            Backend::Redis => TestRedis::require()?,
        };
        Some(Self {
            backend,
            dir: tempfile::tempdir().unwrap(),
            redis,
            lease_timeout,
            max_deliveries,
        })
    }

    /// The queue as a freshly started process sees it.
    fn open(&self) -> AnyQueue {
        match self.backend {
            Backend::Embedded => AnyQueue::Embedded(
                EmbeddedQueue::open(
                    &self.dir.path().join("queue.sqlite"),
                    self.lease_timeout,
                    self.max_deliveries,
                )
                .unwrap(),
            ),
            Backend::Redis => AnyQueue::Redis(self.redis.queue(
                &redis_url(),
                fast_options(self.lease_timeout, self.max_deliveries),
                None,
            )),
        }
    }
}

const LONG: Duration = Duration::from_secs(60);
const SHORT_LEASE: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(10);

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn appended_batch_is_leased_once_and_gone_after_ack(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, LONG, 5) else {
        return;
    };
    let q = h.open();
    let b = test_batch("contract", 3);
    q.append(&b).await.unwrap();
    let lease = q.lease("w1", WAIT).await.unwrap().expect("a lease");
    assert_eq!(lease.batch, b);
    assert_eq!(lease.deliveries, 1);
    assert!(
        q.lease("w2", Duration::ZERO).await.unwrap().is_none(),
        "a leased batch is not handed out twice while its lease runs"
    );
    q.ack(&lease).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    assert!(q.lease("w1", Duration::ZERO).await.unwrap().is_none());
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn unacked_batch_is_redelivered_after_lease_expiry(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, SHORT_LEASE, 5) else {
        return;
    };
    let q = h.open();
    let b = test_batch("contract", 2);
    q.append(&b).await.unwrap();
    let first = q.lease("w1", WAIT).await.unwrap().unwrap();
    let again = q.lease("w2", WAIT).await.unwrap().expect("redelivered");
    assert_eq!(again.batch.id, b.id);
    assert_eq!(again.deliveries, 2);
    assert_eq!(first.deliveries, 1);
    q.ack(&again).await.unwrap();
    assert_eq!(q.depth().await.unwrap().total, 0);
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn batch_held_by_a_dead_consumer_is_reclaimed_by_another_process(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, SHORT_LEASE, 5) else {
        return;
    };
    let b = test_batch("contract", 2);
    {
        let dying = h.open();
        dying.append(&b).await.unwrap();
        let held = dying.lease("w", WAIT).await.unwrap().unwrap();
        assert_eq!(held.batch.id, b.id);
        // The process dies holding the lease: no ack, no release.
    }
    let survivor = h.open();
    let reclaimed = survivor.lease("w", WAIT).await.unwrap().expect("reclaimed");
    assert_eq!(reclaimed.batch, b);
    assert_eq!(reclaimed.deliveries, 2);
    survivor.ack(&reclaimed).await.unwrap();
    assert_eq!(survivor.depth().await.unwrap().total, 0);
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn stale_lease_cannot_ack_a_redelivered_batch(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, SHORT_LEASE, 5) else {
        return;
    };
    let q = h.open();
    q.append(&test_batch("contract", 1)).await.unwrap();
    let stale = q.lease("slow", WAIT).await.unwrap().unwrap();
    let current = q.lease("fast", WAIT).await.unwrap().unwrap();
    q.ack(&stale).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap().total,
        1,
        "the stale ack must leave the entry for its current holder"
    );
    q.ack(&current).await.unwrap();
    assert_eq!(q.depth().await.unwrap().total, 0);
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn acking_twice_is_harmless(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, LONG, 5) else {
        return;
    };
    let q = h.open();
    q.append(&test_batch("contract", 1)).await.unwrap();
    q.append(&test_batch("contract", 1)).await.unwrap();
    let lease = q.lease("w", WAIT).await.unwrap().unwrap();
    q.ack(&lease).await.unwrap();
    q.ack(&lease).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap().total,
        1,
        "only the acked batch is gone"
    );
    let other = q.lease("w", WAIT).await.unwrap().unwrap();
    assert_ne!(other.batch.id, lease.batch.id);
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn batch_is_dead_lettered_after_max_deliveries(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, Duration::from_millis(200), 2) else {
        return;
    };
    let q = h.open();
    q.append(&test_batch("poison", 1)).await.unwrap();
    let one = q.lease("w", WAIT).await.unwrap().unwrap();
    let two = q.lease("w", WAIT).await.unwrap().unwrap();
    assert_eq!((one.deliveries, two.deliveries), (1, 2));
    // The third delivery would exceed the limit: the batch moves aside instead.
    wait_until(WAIT, "the batch to be dead-lettered", || async {
        q.lease("w", Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
            && q.dead_count().await.unwrap() == 1
    })
    .await;
    assert_eq!(q.depth().await.unwrap().total, 0);
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn depth_counts_waiting_and_leased_batches(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, LONG, 5) else {
        return;
    };
    let q = h.open();
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    for _ in 0..3 {
        q.append(&test_batch("contract", 1)).await.unwrap();
    }
    let lease = q.lease("w", WAIT).await.unwrap().unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            total: 3,
            pending: 1
        }
    );
    q.ack(&lease).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            total: 2,
            pending: 0
        }
    );
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn every_batch_reaches_concurrent_workers_in_any_order(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, LONG, 5) else {
        return;
    };
    let q = h.open();
    let mut sent = BTreeSet::new();
    for _ in 0..30 {
        let b = test_batch("contract", 2);
        sent.insert(b.id.0.clone());
        q.append(&b).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..3 {
        let (q, seen) = (q.clone(), Arc::clone(&seen));
        workers.push(tokio::spawn(async move {
            let name = format!("w{w}");
            while let Some(lease) = q.lease(&name, Duration::from_millis(300)).await.unwrap() {
                seen.lock().unwrap().push(lease.batch.id.0.clone());
                q.ack(&lease).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), sent);
    assert_eq!(
        seen.len(),
        sent.len(),
        "no batch delivered twice without a fault"
    );
    assert_eq!(q.depth().await.unwrap().total, 0);
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn waiting_lease_takes_a_batch_appended_later(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, LONG, 5) else {
        return;
    };
    let q = h.open();
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.lease("w", WAIT).await })
    };
    let b = test_batch("contract", 1);
    q.append(&b).await.unwrap();
    let lease = waiter.await.unwrap().unwrap().expect("the appended batch");
    assert_eq!(lease.batch.id, b.id);
}

#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn cursors_persist_across_processes(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, LONG, 5) else {
        return;
    };
    let c = Cursor {
        epoch: Some("e1".into()),
        seq: 42,
    };
    {
        let q = h.open();
        assert_eq!(q.load_cursor("east").await.unwrap(), None);
        q.save_cursor("east", &c).await.unwrap();
    }
    let q = h.open();
    assert_eq!(q.load_cursor("east").await.unwrap(), Some(c));
    assert_eq!(q.load_cursor("west").await.unwrap(), None);
}

/// Issue 12, item 2: a lease given back (the store was unreachable) is ready again at once and
/// does not count as a delivery, however often it happens; a stale lease gives back nothing.
#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn issue_12_released_lease_does_not_count_as_a_delivery(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, LONG, 2) else {
        return;
    };
    let q = h.open();
    let b = test_batch("release", 2);
    q.append(&b).await.unwrap();
    for _ in 0..5 {
        let lease = q.lease("w", WAIT).await.unwrap().unwrap();
        assert_eq!(lease.batch, b);
        assert_eq!(lease.deliveries, 1, "a released lease counts no delivery");
        q.release(&lease).await.unwrap();
        q.release(&lease).await.unwrap();
    }
    assert_eq!(q.dead_count().await.unwrap(), 0);
    let lease = q.lease("w", WAIT).await.unwrap().unwrap();
    q.ack(&lease).await.unwrap();
    assert_eq!(q.depth().await.unwrap().total, 0);
}

/// Issue 12, item 2: dead batches are listed and replayed (`botpipe dlq batches` and
/// `replay-batches`): a replayed batch leaves the dead letters and is delivered afresh.
#[rstest]
#[case::embedded(Backend::Embedded)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn issue_12_dead_batches_are_listed_and_replayed(#[case] backend: Backend) {
    let Some(h) = Harness::new(backend, Duration::from_millis(200), 1) else {
        return;
    };
    let q = h.open();
    let b = test_batch("poison", 3);
    q.append(&b).await.unwrap();
    let _first = q.lease("w", WAIT).await.unwrap().unwrap();
    wait_until(WAIT, "the batch to be dead-lettered", || async {
        q.lease("w", Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
            && q.dead_count().await.unwrap() == 1
    })
    .await;
    let dead = q.dead_batches(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].batch_id, b.id.0);
    assert_eq!(dead[0].source, "poison");
    // Redis says `max_deliveries`, the embedded queue `delivered 2 times without an ack`.
    assert!(dead[0].reason.contains("deliver"), "{}", dead[0].reason);
    assert_eq!(dead[0].records, Some(3));

    let dry = botpipe::command::dlq::replay_batches(&q, &[], true)
        .await
        .unwrap();
    assert_eq!((dry.examined, dry.replayed), (1, 1));
    assert_eq!(q.dead_count().await.unwrap(), 1, "a dry run moves nothing");

    let done = botpipe::command::dlq::replay_batches(&q, &[], false)
        .await
        .unwrap();
    assert_eq!((done.examined, done.replayed, done.missing), (1, 1, 0));
    assert_eq!(q.dead_count().await.unwrap(), 0);
    let again = q.lease("w", WAIT).await.unwrap().unwrap();
    assert_eq!(again.batch, b);
    assert_eq!(again.deliveries, 1, "delivered afresh");
    q.ack(&again).await.unwrap();
    assert!(
        !q.revive_dead(&dead[0].entry).await.unwrap(),
        "replayed once only"
    );
}
