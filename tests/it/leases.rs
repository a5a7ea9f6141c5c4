//! Endpoint leases against the real Redis (issue 14): exclusive under contention, renewed,
//! released on shutdown, taken over after expiry; a holder whose lease was stolen neither
//! confirms nor moves the cursor; a holder cut off from Redis pulls until its lease would have
//! expired by its own clock and then skips ticks as `lease_lost`; the embedded queue takes one
//! `botpipe run` only.

use std::sync::Arc;
use std::time::Duration;

use botpipe::config::QueueBackend;
use botpipe::demo::Flavor;
use botpipe::pull::ownership::safety_margin;
use botpipe::pull::{EndpointOwnership, LeaseKeeper, PullClient, PullOutcome, Puller, StatusBoard};
use botpipe::queue::{
    Acquire, AnyQueue, Cursor, EmbeddedQueue, EndpointLeases, Fence, Handoff, HandoffTarget,
    Holder, LeaseInfo, QueueError, RedisQueueOptions, RedisStreamsQueue,
};
use botpipe::record::RecordContext;
use rstest::rstest;

use crate::helpers::keyspace::{fast_options, redis_addr, redis_url, TestRedis};
use crate::helpers::proxy::{FaultProxy, Mode};
use crate::helpers::{endpoint, spawn_app, spawn_collector, wait_until, wire};

fn queue(redis: &TestRedis) -> RedisStreamsQueue {
    redis.queue(&redis_url(), fast_options(Duration::from_secs(30), 5), None)
}

fn leases(redis: &TestRedis, name: &str, ttl: Duration) -> EndpointLeases {
    queue(redis).endpoint_leases(ttl, Holder::this_process(Some(name.to_owned())))
}

/// Tries to take `endpoint` until it is free (polling, with a deadline).
async fn acquire_within(leases: &EndpointLeases, endpoint: &str, within: Duration) -> Fence {
    let end = tokio::time::Instant::now() + within;
    loop {
        if let Acquire::Won(f) = leases.try_acquire(endpoint).await.unwrap() {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{endpoint} not free within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn current(redis: &TestRedis, endpoint: &str) -> Option<LeaseInfo> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(format!("{}:lease:{endpoint}", redis.prefix))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    raw.as_deref().and_then(LeaseInfo::parse)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_lease_has_one_holder_under_contention() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let contenders: Vec<EndpointLeases> = (0..24)
        .map(|i| leases(&redis, &format!("p{i}"), Duration::from_secs(10)))
        .collect();
    let attempts = contenders.iter().map(|l| l.try_acquire("east"));
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results
        .iter()
        .filter_map(|r| match r.as_ref().unwrap() {
            Acquire::Won(f) => Some(f.clone()),
            Acquire::Held(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one holder: {results:?}");
    let held = current(&redis, "east").await.unwrap();
    assert_eq!(held, winners[0].info);
    assert_eq!(held.token, 1, "the first acquisition gets fencing token 1");
    for r in &results {
        if let Acquire::Held(info) = r.as_ref().unwrap() {
            assert_eq!(info.as_ref(), Some(&held), "losers see the holder");
        }
    }
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_ttl_and_a_stale_one_is_taken_over_with_a_larger_token() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let ttl = Duration::from_millis(400);
    let (a, b) = (leases(&redis, "a", ttl), leases(&redis, "b", ttl));
    let Acquire::Won(fa) = a.try_acquire("east").await.unwrap() else {
        panic!("a free lease is taken");
    };
    // Renewed every third of the TTL for five TTLs: b never gets it.
    for _ in 0..15 {
        assert!(a.renew(&fa).await.unwrap(), "the holder renews");
        assert!(matches!(
            b.try_acquire("east").await.unwrap(),
            Acquire::Held(Some(ref i)) if i.holder.name == "a"
        ));
        tokio::time::sleep(ttl / 3).await;
    }
    // a stops renewing (paused, partitioned, dead): b takes over after the TTL.
    let fb = acquire_within(&b, "east", Duration::from_secs(5)).await;
    assert!(fb.token() > fa.token(), "fencing token grows on takeover");
    assert!(
        !a.renew(&fa).await.unwrap(),
        "the stale holder cannot renew"
    );
    assert!(!a.release(&fa).await.unwrap(), "nor delete the new lease");
    assert_eq!(current(&redis, "east").await.unwrap().holder.name, "b");

    // The cursor is written only under the current lease.
    let q = queue(&redis);
    let cursor = |seq| Cursor { epoch: None, seq };
    q.save_cursor_fenced("east", &cursor(10), &fb)
        .await
        .unwrap();
    let stale = q.save_cursor_fenced("east", &cursor(99), &fa).await;
    assert!(
        matches!(stale, Err(QueueError::Fenced { token, .. }) if token == fa.token()),
        "{stale:?}"
    );
    assert_eq!(q.load_cursor("east").await.unwrap(), Some(cursor(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_botpipe_holds_its_endpoints_and_releases_them_on_shutdown() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let names = ["east", "west"];
    let eps = names
        .iter()
        .map(|n| endpoint(n, &tc.url, Duration::from_millis(100), 100))
        .collect();
    let app = spawn_app(eps, |s| {
        s.queue.backend = QueueBackend::Redis(redis.settings(&redis_url()));
        s.queue.lease_ttl = Duration::from_secs(3);
    })
    .await;
    for n in names {
        wait_until(Duration::from_secs(10), "the endpoint is held", || async {
            current(&redis, n).await.is_some()
        })
        .await;
    }
    tc.collector
        .push(wire("8.8.8.8", "2026-01-16T00:00:00", "mozi", "online"));
    wait_until(Duration::from_secs(10), "the holder pulls", || async {
        tc.collector.unpulled() == 0
    })
    .await;
    // /api/status names the holder.
    let url = format!("http://{}/api/status", app.http.unwrap());
    let status: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let owner = &status["endpoints"][0]["owner"];
    assert_eq!(owner["pid"], std::process::id(), "{status}");
    assert_eq!(owner["this_process"], true, "{status}");
    let members_key = format!("{}:members", redis.prefix);
    let members: u64 = redis::cmd("HLEN")
        .arg(&members_key)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(members, 1, "the process announces itself");

    // Graceful stop: the leases and the heartbeat are gone at once, not after the TTL.
    app.stop().await;
    for n in names {
        assert!(current(&redis, n).await.is_none(), "{n} released");
    }
    let members: u64 = redis::cmd("HLEN")
        .arg(&members_key)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(members, 0, "the heartbeat is removed");
}

/// A puller of endpoint "east" at `url` whose pulls go through `handoff` and whose lease is in
/// `leases`, with a keeper working through `keeper_leases` (no scheduler, no keeper task).
fn leased_puller(
    handoff: Handoff,
    leases: &EndpointLeases,
    keeper_leases: EndpointLeases,
    deadline: Duration,
    url: &str,
) -> (Puller, LeaseKeeper, EndpointOwnership) {
    let e = endpoint("east", url, Duration::from_secs(10), 100);
    let board = StatusBoard::default();
    let ownership =
        EndpointOwnership::new("east", leases.clone(), e.timeout, deadline, board.clone());
    let ctx = RecordContext {
        source: "east".into(),
        tz: chrono_tz::UTC,
        allowed: Arc::new(crate::helpers::db::type_set(&["mozi"])),
    };
    let puller = Puller::new(
        PullClient::new(&e, None).unwrap(),
        ctx,
        handoff,
        None,
        100,
        board,
    )
    .with_ownership(ownership.clone());
    let keeper = LeaseKeeper::new(keeper_leases, vec![ownership.clone()]);
    (puller, keeper, ownership)
}

/// A puller on `url` with its lease on `redis`, driven by hand (no scheduler, no keeper task).
async fn hand_driven_puller(
    redis: &TestRedis,
    url: &str,
    name: &str,
    ttl: Duration,
) -> (Puller, LeaseKeeper, EndpointOwnership) {
    let q = queue(redis);
    let deadline = Duration::from_millis(500);
    let handoff = Handoff::new(AnyQueue::Redis(q.clone()), None, deadline);
    let leases = q.endpoint_leases(ttl, Holder::this_process(Some(name.to_owned())));
    leased_puller(handoff, &leases, leases.clone(), deadline, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_holder_whose_lease_was_stolen_during_a_pause_does_not_confirm() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let tc = spawn_collector(Flavor::Legacy, None).await;
    let c = &tc.collector;
    for i in 0..10 {
        c.push(wire(
            &format!("8.8.8.{}", i + 1),
            "2026-01-16T00:00:00",
            "mozi",
            "online",
        ));
    }
    let ttl = Duration::from_secs(1);
    let (mut a, mut keeper_a, own_a) = hand_driven_puller(&redis, &tc.url, "a", ttl).await;
    keeper_a.try_round_one().await;
    let fa = own_a.fence().expect("a holds the endpoint");

    // a's pull stalls longer than the TTL (a paused process, a slow network), and its keeper
    // does not run meanwhile: the lease expires and b takes it.
    c.set_pull_delay(ttl + Duration::from_millis(800));
    let b = leases(&redis, "b", ttl);
    let steal = acquire_within(&b, "east", Duration::from_secs(5));
    let (outcome, fb) = tokio::join!(a.try_pull_one(), steal);
    assert!(fb.token() > fa.token());
    assert_eq!(outcome, PullOutcome::LeaseLost, "a must not confirm");
    assert!(
        c.confirms().is_empty(),
        "nothing confirmed: {:?}",
        c.confirms()
    );
    assert_eq!(c.unpulled(), 10, "the collector keeps every record");
    assert!(own_a.fence().is_none(), "a knows it lost the lease");
    assert!(a.cursor().is_none(), "a's cursor did not move");
    assert!(
        !a.may_pull(),
        "a does not pull again until it holds the lease"
    );
    assert_eq!(a.try_pull_one().await, PullOutcome::NotOwner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_holder_cut_off_from_redis_pulls_until_its_lease_would_expire_then_skips() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let c = &tc.collector;
    let ttl = Duration::from_secs(2);
    let name = format!("cut-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = spawn_app(
        vec![endpoint(&name, &tc.url, Duration::from_millis(100), 100)],
        |s| {
            s.queue.backend = QueueBackend::Redis(redis.settings(&proxy.redis_url()));
            s.queue.handoff_deadline = Duration::from_millis(100);
            s.queue.lease_ttl = ttl;
        },
    )
    .await;
    wait_until(Duration::from_secs(10), "the endpoint is held", || async {
        current(&redis, &name).await.is_some()
    })
    .await;
    let mut n = 0u32;
    let mut push = |k: u32| {
        for _ in 0..k {
            n += 1;
            c.push(wire(
                &format!("9.{}.{}.1", n / 200 + 1, n % 200 + 1),
                "2026-01-16T00:00:00",
                "mozi",
                "online",
            ));
        }
    };
    push(5);
    wait_until(
        Duration::from_secs(10),
        "pulled while Redis answers",
        || async { c.unpulled() == 0 },
    )
    .await;

    // Redis goes away. Pulls (spooled hand-offs, confirms) go on for a while…
    proxy.set_mode(Mode::Refuse);
    proxy.reset();
    let cut = tokio::time::Instant::now();
    push(5);
    wait_until(
        Duration::from_secs(3),
        "pulled and confirmed via the spool",
        || async { c.unpulled() == 0 },
    )
    .await;
    assert!(cut.elapsed() < ttl, "that happened within the TTL");
    // …until the lease would have expired by this process's clock: then ticks are skipped.
    let board_url = format!("http://{}/api/status", app.http.unwrap());
    let lost_ticks = || async {
        let s: serde_json::Value = reqwest::get(&board_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        s["endpoints"][0]["lease_lost_ticks"].as_u64().unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(5),
        "ticks skipped as lease_lost",
        || async { lost_ticks().await > 3 },
    )
    .await;
    assert!(
        cut.elapsed() >= ttl - safety_margin(ttl) - Duration::from_millis(700),
        "not before the lease could have expired (renewed at most a round before the cut)"
    );
    push(5);
    let pulls = c.pulls();
    tokio::time::sleep(Duration::from_millis(500)).await; // a span of ticks, not a wait for a condition
    assert_eq!(
        c.pulls(),
        pulls,
        "no pulls while the lease is not confirmed"
    );
    assert_eq!(c.unpulled(), 5, "the collector keeps the data");
    let text = botpipe::telemetry::prometheus().render();
    assert!(
        crate::helpers::prom::sample(
            &text,
            "botpipe_pull_lease_lost_ticks_total",
            &[("endpoint", &name)]
        )
        .unwrap_or(0.0)
            > 0.0
    );

    // Redis answers again: the process takes its endpoint back and drains the collector.
    proxy.set_mode(Mode::Pass);
    wait_until(
        Duration::from_secs(15),
        "pulling again after Redis returned",
        || async { c.unpulled() == 0 },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn issue_14_a_second_run_on_the_same_embedded_queue_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::helpers::test_settings(dir.path());
    let first = botpipe::app::App::build(settings.clone(), botpipe::app::Mode::Full)
        .await
        .unwrap();
    let second = botpipe::app::App::build(settings.clone(), botpipe::app::Mode::Full).await;
    let err = second.expect_err("a second run on the same data dir must not start");
    let text = format!("{err:#}");
    assert!(
        matches!(err, botpipe::app::AppError::Locked { .. }),
        "{text}"
    );
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    // Operator commands and workers-only processes are not blocked.
    botpipe::app::App::build(settings.clone(), botpipe::app::Mode::WorkersOnly)
        .await
        .unwrap();
    // The lock goes with the process holding it.
    drop(first);
    botpipe::app::App::build(settings, botpipe::app::Mode::Full)
        .await
        .unwrap();
}

/// The hand-off deadline of the cycle-budget tests below: long, so that a cycle that waited on
/// Redis for one deadline and one that waited for two are far apart even on a loaded machine.
const CYCLE_DEADLINE: Duration = Duration::from_millis(500);
/// What a cycle may take above one deadline for its own work: the request, the spool's durable
/// write (an fsync) and the confirm, on a busy 2-core machine.
const CYCLE_SLACK: Duration = Duration::from_millis(300);

/// A hand-driven puller holding its lease on a Redis behind `proxy`, with a spool, hand-off
/// deadline [`CYCLE_DEADLINE`] and production-like Redis timeouts (dials and commands longer than
/// the deadline, so only the deadline bounds what a cycle waits). Its keeper has its own link,
/// as in `App`, and has run one round: the puller holds the endpoint.
async fn leased_puller_behind(
    redis: &TestRedis,
    proxy: &FaultProxy,
    dir: &std::path::Path,
    url: &str,
) -> (Puller, LeaseKeeper, EndpointOwnership) {
    let spool = EmbeddedQueue::open(&dir.join("spool.sqlite"), Duration::from_secs(60), 5).unwrap();
    let opts = RedisQueueOptions {
        lease_timeout: Duration::from_secs(60),
        max_deliveries: 5,
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        cursor_deadline: CYCLE_DEADLINE,
    };
    let q = redis.queue(&proxy.redis_url(), opts, Some(spool.clone()));
    let handoff = Handoff::new(AnyQueue::Redis(q.clone()), Some(spool), CYCLE_DEADLINE);
    let leases = q.endpoint_leases(
        Duration::from_secs(30),
        Holder::this_process(Some("solo".into())),
    );
    let (puller, mut keeper, ownership) = leased_puller(
        handoff,
        &leases,
        leases.with_own_link(),
        CYCLE_DEADLINE,
        url,
    );
    keeper.try_round_one().await;
    assert!(ownership.fence().is_some(), "the keeper took the lease");
    (puller, keeper, ownership)
}

/// Issue 14, "Performance": with leases on, a hanging or slow Redis (every connection cut, as
/// in the cadence proof) costs a pull cycle at most one hand-off deadline of waiting on Redis:
/// the hand-off and the pre-confirm lease check share it, and once the check has timed out the
/// cursor save and the next cycles do not ask Redis again. Before, the check had a deadline of
/// its own and the cursor save waited out another: one cycle of three deadlines' worth at a
/// 200 ms interval, the cadence proof's missed ticks.
#[rstest]
#[case::hanging(Mode::Hang)]
#[case::slow(Mode::Delay(Duration::from_secs(2)))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_leased_cycle_waits_on_a_hanging_or_slow_redis_for_one_handoff_deadline_at_most(
    #[case] fault: Mode,
) {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let c = &tc.collector;
    let dir = tempfile::tempdir().unwrap();
    let (mut puller, _keeper, ownership) =
        leased_puller_behind(&redis, &proxy, dir.path(), &tc.url).await;
    let mut n = 0u32;
    let mut push3 = || {
        for _ in 0..3 {
            n += 1;
            c.push(wire(
                &format!("7.7.{}.{}", n / 200 + 1, n % 200 + 1),
                "2026-01-16T00:00:00",
                "mozi",
                "online",
            ));
        }
    };
    push3();
    assert!(
        matches!(
            puller.try_pull_one().await,
            PullOutcome::Confirmed {
                target: HandoffTarget::Queue,
                ..
            }
        ),
        "a healthy cycle goes to Redis"
    );

    proxy.set_mode(fault);
    proxy.reset();
    let mut took = Vec::new();
    for _ in 0..6 {
        push3();
        let started = std::time::Instant::now();
        let outcome = puller.try_pull_one().await;
        took.push(started.elapsed());
        assert!(
            matches!(
                outcome,
                PullOutcome::Confirmed {
                    target: HandoffTarget::Spool,
                    ..
                }
            ),
            "{fault:?}: the lease still holds by this process's clock, so the spooled batch is confirmed: {outcome:?}"
        );
    }
    eprintln!("{fault:?}: leased cycles took {took:?}");
    assert!(
        took.iter().all(|t| *t < CYCLE_DEADLINE + CYCLE_SLACK),
        "{fault:?}: a leased cycle waited on Redis for more than one hand-off deadline ({CYCLE_DEADLINE:?}): {took:?}"
    );
    assert_eq!(c.unpulled(), 0, "every record pulled and confirmed");
    assert!(ownership.fence().is_some(), "the lease is still held");
    assert_eq!(
        puller.cursor().map(|c| c.seq),
        Some(u64::from(n)),
        "the cursor moved with every confirm"
    );
}

/// Issue 14: a tick never waits on the keeper's Redis calls. While the keeper gives a lease
/// back (balance, shutdown) to a Redis that hangs, a cycle that starts meanwhile ends at once
/// as `not_owner` instead of waiting for the release's round trip to time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_cycle_does_not_wait_for_the_keeper_releasing_the_lease_to_a_hanging_redis() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut puller, keeper, ownership) =
        leased_puller_behind(&redis, &proxy, dir.path(), &tc.url).await;
    assert_eq!(puller.try_pull_one().await, PullOutcome::Empty);

    // Redis hangs (open connections stay open, nothing comes back).
    proxy.set_mode(Mode::Hang);
    let token = tokio_util::sync::CancellationToken::new();
    token.cancel();
    // A stopped keeper runs a last round (it times out), then releases every lease it holds:
    // here into the hanging Redis, which takes the release's whole bound (500 ms) to give up on.
    let keeper = tokio::spawn(keeper.run_until_stopped(token));
    // Polled closely (not with `wait_until`'s backoff), so the cycle below starts while the
    // release is still in flight.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while ownership.fence().is_some() {
        assert!(
            std::time::Instant::now() < end,
            "the keeper did not forget the lease"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = std::time::Instant::now();
    assert_eq!(puller.try_pull_one().await, PullOutcome::NotOwner);
    let took = started.elapsed();
    eprintln!("a cycle during the keeper's release took {took:?}");
    assert!(
        took < Duration::from_millis(250),
        "the cycle waited {took:?} for the keeper's Redis call"
    );
    assert!(!keeper.is_finished(), "the release was still in flight");
    keeper.await.unwrap();
}

/// Issue 14 with leases on by default: `botpipe status` beside a running botpipe on Redis names
/// the process holding each endpoint, read from the leases in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_status_names_the_holder_of_each_endpoint_with_the_default_leases() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut settings = crate::helpers::test_settings(&data);
    settings.endpoints = vec![endpoint("east", &tc.url, Duration::from_millis(100), 100)];
    settings.queue.backend = QueueBackend::Redis(redis.settings(&redis_url()));
    assert!(settings.queue.endpoint_leases, "leases are on by default");
    let app = crate::helpers::spawn_app_with(dir, settings).await;
    wait_until(Duration::from_secs(10), "the endpoint is held", || async {
        current(&redis, "east").await.is_some()
    })
    .await;
    let config = crate::helpers::bin::write_config(
        &data,
        &format!(
            "data_dir = {:?}\n[queue]\nbackend = \"redis\"\nredis_url = {:?}\nredis_prefix = {:?}\ngroup = {:?}\n\
             [endpoints.east]\nurl = {:?}\ntimezone = \"UTC\"\n",
            data.display().to_string(),
            redis_url(),
            redis.prefix,
            redis.group,
            tc.url,
        ),
    );
    let out = crate::helpers::bin::run_botpipe(Some(&config), &["status", "--json"]).await;
    let (stdout, stderr) = crate::helpers::bin::text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let owner = &status["endpoints"][0]["owner"];
    assert_eq!(owner["pid"], std::process::id(), "{status}");
    assert_eq!(owner["this_process"], false, "{status}");
    assert!(owner["token"].as_u64().is_some_and(|t| t >= 1), "{status}");
    app.stop().await;
}
