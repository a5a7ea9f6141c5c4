//! Fault injection between the hand-off and Redis, through the TCP fault proxy: a dead, hanging
//! or slow (2 s replies) Redis never holds a hand-off past its deadline, the batch is durable
//! in the spool instead, and the drainer moves every spooled batch into Redis once it heals.
//! Redis "restarting" mid-run (every connection reset) loses nothing either.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use botpipe::queue::{
    AnyQueue, DrainError, DrainStep, EmbeddedQueue, Handoff, HandoffTarget, Queue, SpoolDrainer,
};
use rstest::rstest;
use tokio_util::sync::CancellationToken;

use crate::helpers::keyspace::{fast_options, redis_addr, TestRedis};
use crate::helpers::proxy::{FaultProxy, Mode};
use crate::helpers::{init_test_log, test_batch, wait_until};

/// The hand-off deadline in these tests.
const DEADLINE: Duration = Duration::from_millis(200);
/// Allowance above the deadline for the spool's own durable write on a busy test machine; the
/// faults themselves last 2 s or forever.
const SLACK: Duration = Duration::from_millis(600);
const LEASE: Duration = Duration::from_secs(60);

struct Rig {
    redis: TestRedis,
    proxy: FaultProxy,
    _dir: tempfile::TempDir,
    spool: EmbeddedQueue,
    queue: AnyQueue,
    handoff: Handoff,
}

impl Rig {
    /// The rig, or `None` when Redis is not running (the test is skipped).
    async fn start() -> Option<Self> {
        init_test_log();
        let redis = TestRedis::require()?;
        let proxy = FaultProxy::start(redis_addr()).await;
        let dir = tempfile::tempdir().unwrap();
        let spool = EmbeddedQueue::open(&dir.path().join("spool.sqlite"), LEASE, 5).unwrap();
        let queue = AnyQueue::Redis(redis.queue(
            &proxy.redis_url(),
            fast_options(LEASE, 5),
            Some(spool.clone()),
        ));
        let handoff = Handoff::new(queue.clone(), Some(spool.clone()), DEADLINE);
        Some(Self {
            redis,
            proxy,
            _dir: dir,
            spool,
            queue,
            handoff,
        })
    }

    async fn spooled(&self) -> u64 {
        self.spool.depth().await.unwrap().total
    }
}

#[rstest]
#[case::dead(Mode::Refuse)]
#[case::hanging(Mode::Hang)]
#[case::slow(Mode::Delay(Duration::from_secs(2)))]
#[tokio::test]
async fn handoff_spools_within_its_deadline_and_the_drainer_refills_redis(#[case] fault: Mode) {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let mut sent = Vec::new();
    let warm = test_batch("east", 10);
    assert_eq!(
        rig.handoff.handoff(&warm).await.unwrap(),
        HandoffTarget::Queue
    );
    sent.push(warm.id.0.clone());

    rig.proxy.set_mode(fault);
    for _ in 0..5 {
        let b = test_batch("east", 10);
        let started = Instant::now();
        let target = rig.handoff.handoff(&b).await.unwrap();
        let took = started.elapsed();
        assert_eq!(target, HandoffTarget::Spool);
        assert!(
            took < DEADLINE + SLACK,
            "hand-off took {took:?} under {fault:?}"
        );
        sent.push(b.id.0.clone());
    }
    assert_eq!(
        rig.spooled().await,
        5,
        "every refused batch is in the spool"
    );

    rig.proxy.set_mode(Mode::Pass);
    let token = CancellationToken::new();
    let drainer = tokio::spawn(
        SpoolDrainer::new(rig.spool.clone(), rig.queue.clone()).run_until_stopped(token.clone()),
    );
    wait_until(
        Duration::from_secs(20),
        "the spool to drain into Redis",
        || async { rig.spooled().await == 0 },
    )
    .await;
    token.cancel();
    drainer.await.unwrap();

    let in_redis: BTreeSet<String> = rig.redis.stream_batch_ids().await.into_iter().collect();
    for id in &sent {
        assert!(in_redis.contains(id), "batch {id} lost under {fault:?}");
    }
    if fault == Mode::Refuse {
        // Nothing reached Redis while it was dead, so nothing is there twice.
        assert_eq!(rig.redis.xlen("stream").await, sent.len() as u64);
    }
}

#[tokio::test]
async fn drainer_moves_spooled_batches_oldest_first_and_keeps_them_while_redis_is_down() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let mut sent = Vec::new();
    for _ in 0..4 {
        let b = test_batch("east", 3);
        rig.spool.append(&b).await.unwrap();
        sent.push(b.id.0.clone());
    }
    let drainer = SpoolDrainer::new(rig.spool.clone(), rig.queue.clone());

    rig.proxy.set_mode(Mode::Refuse);
    for _ in 0..3 {
        match drainer.try_drain_one().await {
            Err(DrainError::Queue { .. }) => {}
            other => panic!("expected the queue to refuse, got {other:?}"),
        }
    }
    assert_eq!(rig.spooled().await, 4, "a refused batch stays in the spool");

    rig.proxy.set_mode(Mode::Pass);
    let mut moved = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while moved < 4 {
        assert!(Instant::now() < end, "drain did not finish");
        match drainer.try_drain_one().await {
            Ok(DrainStep::Moved) => moved += 1,
            Ok(DrainStep::Empty) => panic!("spool emptied early"),
            // The link may still be in its short down pause after the refusals.
            Err(DrainError::Queue { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(drainer.try_drain_one().await.unwrap(), DrainStep::Empty);
    assert_eq!(
        rig.redis.stream_batch_ids().await,
        sent,
        "oldest first, each once"
    );
}

#[tokio::test]
async fn redis_restarting_mid_run_loses_no_batch() {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let token = CancellationToken::new();
    let drainer = tokio::spawn(
        SpoolDrainer::new(rig.spool.clone(), rig.queue.clone()).run_until_stopped(token.clone()),
    );
    // A worker in another process, reaching Redis through the same proxy. A reset can swallow
    // the reply to its XREADGROUP: that entry is then pending under "w" and comes back only by
    // reclaim after the lease timeout, so the lease here is short.
    let worker_queue = rig.redis.queue(
        &rig.proxy.redis_url(),
        fast_options(Duration::from_secs(2), 20),
        None,
    );
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let worker = {
        let (seen, token) = (Arc::clone(&seen), token.clone());
        tokio::spawn(async move {
            while !token.is_cancelled() {
                match worker_queue.lease("w", Duration::from_millis(200)).await {
                    Ok(Some(lease)) => {
                        seen.lock().unwrap().insert(lease.batch.id.0.clone());
                        // A failed ack means a redelivery later, which is fine.
                        worker_queue.ack(&lease).await.ok();
                    }
                    Ok(None) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
    };

    let mut sent = BTreeSet::new();
    for i in 0..40 {
        let b = test_batch("east", 5);
        rig.handoff.handoff(&b).await.unwrap();
        sent.insert(b.id.0.clone());
        if i % 10 == 9 {
            rig.proxy.reset();
        }
    }
    wait_until(
        Duration::from_secs(30),
        "every batch to reach the worker",
        || async { seen.lock().unwrap().is_superset(&sent) },
    )
    .await;
    wait_until(Duration::from_secs(10), "the spool to be empty", || async {
        rig.spooled().await == 0
    })
    .await;
    token.cancel();
    drainer.await.unwrap();
    worker.await.unwrap();
    assert!(rig.proxy.accepted() > 2, "the resets forced reconnections");
}

#[rstest]
#[case::dead(Mode::Refuse)]
#[case::hanging(Mode::Hang)]
#[tokio::test]
async fn cursor_save_in_the_pull_cycle_falls_back_to_the_spool_within_the_deadline(
    #[case] fault: Mode,
) {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let at = |seq| botpipe::queue::Cursor {
        epoch: Some("e1".into()),
        seq,
    };
    rig.handoff.save_cursor("east", &at(1)).await.unwrap();
    rig.proxy.set_mode(fault);
    let started = Instant::now();
    rig.handoff.save_cursor("east", &at(2)).await.unwrap();
    let took = started.elapsed();
    assert!(took <= DEADLINE + SLACK, "cursor save took {took:?}");
    assert_eq!(rig.spool.load_cursor("east").await.unwrap(), Some(at(2)));
    assert_eq!(rig.handoff.load_cursor("east").await.unwrap(), Some(at(2)));
}

/// Issue 12, item 4: once a hand-off to a hanging or slow Redis has timed out, the following
/// hand-offs and cursor saves go straight to the spool (one slow cycle per outage, not one per
/// tick), and when Redis answers again a background probe sends hand-offs back to it.
#[rstest]
#[case::hanging(Mode::Hang)]
#[case::slow(Mode::Delay(Duration::from_secs(2)))]
#[tokio::test]
async fn issue_12_after_one_handoff_timed_out_the_next_go_straight_to_the_spool(
    #[case] fault: Mode,
) {
    let Some(rig) = Rig::start().await else {
        return;
    };
    let warm = test_batch("east", 3);
    assert_eq!(
        rig.handoff.handoff(&warm).await.unwrap(),
        HandoffTarget::Queue
    );
    rig.proxy.set_mode(fault);
    rig.proxy.reset();

    // The one slow cycle of this outage.
    let first = test_batch("east", 3);
    assert_eq!(
        rig.handoff.handoff(&first).await.unwrap(),
        HandoffTarget::Spool
    );

    // The next cycles, paced like pull ticks (between them the Redis link redials, so each
    // one would find a dial in flight or start one): a hand-off and a cursor save each, none
    // waiting for Redis.
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let mut took = Vec::new();
    for seq in 1..=8 {
        ticks.tick().await;
        let started = Instant::now();
        let target = rig.handoff.handoff(&test_batch("east", 3)).await.unwrap();
        assert_eq!(target, HandoffTarget::Spool);
        let cursor = botpipe::queue::Cursor { epoch: None, seq };
        rig.handoff.save_cursor("east", &cursor).await.unwrap();
        took.push(started.elapsed());
    }
    // A spool write is an fsync; allow one to be slow on a busy machine, not more.
    let slow = took.iter().filter(|t| **t >= DEADLINE).count();
    assert!(
        slow <= 1,
        "{fault:?}: cycles after the first timeout still waited on Redis: {took:?}"
    );
    assert_eq!(
        rig.spool.load_cursor("east").await.unwrap().map(|c| c.seq),
        Some(8)
    );

    // Redis heals: the probe notices, and hand-offs go to Redis again.
    rig.proxy.set_mode(Mode::Pass);
    let back = Arc::new(Mutex::new(None));
    wait_until(
        Duration::from_secs(20),
        "a hand-off reaching Redis again",
        || async {
            let b = test_batch("east", 1);
            let target = rig.handoff.handoff(&b).await.unwrap();
            if target == HandoffTarget::Queue {
                *back.lock().unwrap() = Some(b.id.0.clone());
            }
            target == HandoffTarget::Queue
        },
    )
    .await;
    let id = back.lock().unwrap().clone().unwrap();
    assert!(rig.redis.stream_batch_ids().await.contains(&id));
}
