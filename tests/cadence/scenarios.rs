//! The cadence proof: with a collector producing records continuously and a fault injected
//! between botpipe and Redis (dead, hanging, slow, restarted) or in the store (held locked from
//! outside), every endpoint keeps its schedule (p99 drift ≤ 2% of the interval, no missed
//! ticks), memory stays bounded, and once the fault clears every record is stored exactly once
//! and the spool is empty. Everything runs with the default `queue.handoff_deadline`: a hanging
//! or slow Redis costs one slow cycle per outage (the hand-off bypass), not one per tick. And
//! with the default endpoint leases (issue 14): the process holds its endpoint through a Redis
//! lease, each confirm is preceded by the lease check, and a 5 s outage is far inside the lease
//! TTL, so no tick is lost to it.

use std::time::{Duration, Instant};

use botpipe::config::QueueBackend;
use botpipe::demo::{DemoCollector, Flavor};
use botpipe::queue::Queue;
use botpipe::store::Store;
use tokio_util::sync::CancellationToken;

use crate::harness::keyspace::{redis_addr, TestRedis};
use crate::harness::proxy::{FaultProxy, Mode};
use crate::harness::{endpoint, prom, spawn_app, spawn_collector, wait_until, wire};

/// The pull interval of every scenario.
const INTERVAL: Duration = Duration::from_millis(200);
/// How long each fault lasts.
const FAULT: Duration = Duration::from_secs(5);

/// Cadence is measured in milliseconds on a 2-core machine: the scenarios run one at a time so
/// they do not disturb each other's timers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy)]
enum Fault {
    RedisDead,
    RedisHanging,
    RedisSlow,
    RedisRestarted,
    StoreStalled,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Pushes a few unique records every 20 ms until stopped; returns how many it pushed.
fn spawn_producer(c: DemoCollector, stop: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !stop.is_cancelled() {
            tick.tick().await;
            for _ in 0..5 {
                let ip = format!("5.{}.{}.{}", n % 200 + 1, (n / 200) % 200 + 1, n % 7 + 1);
                let ts = chrono::DateTime::from_timestamp(1_772_000_000 + n as i64, 0)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string();
                c.push(wire(
                    &ip,
                    &ts,
                    if n.is_multiple_of(2) {
                        "mozi"
                    } else {
                        "ramnit"
                    },
                    if n.is_multiple_of(6) {
                        "cleanup"
                    } else {
                        "online"
                    },
                ));
                n += 1;
            }
        }
        n
    })
}

async fn run_scenario(fault: Fault) {
    let _serial = SERIAL.lock().await;
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let name = format!(
        "cadence-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let app = spawn_app(vec![endpoint(&name, &tc.url, INTERVAL, 1000)], |s| {
        s.queue.backend = QueueBackend::Redis(redis.settings(&proxy.redis_url()));
        // The hand-off deadline is the default (issue 12): not tuned down for the test.
        s.queue.lease_timeout = Duration::from_secs(3);
    })
    .await;
    let stop = CancellationToken::new();
    let producer = spawn_producer(tc.collector.clone(), stop.clone());
    let c = &tc.collector;

    // Healthy first: records flow end to end.
    wait_until(
        Duration::from_secs(30),
        "records stored before the fault",
        || async {
            app.store
                .counts()
                .await
                .map(|n| n.total_communications() > 50)
                .unwrap_or(false)
        },
    )
    .await;
    // Leases are on by default with Redis: this process pulls because it holds the endpoint.
    let status: serde_json::Value =
        reqwest::get(format!("http://{}/api/status", app.http.unwrap()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        status["endpoints"][0]["owner"]["this_process"], true,
        "{fault:?}: the endpoint is held through its lease: {status}"
    );
    let baseline_rss = rss_bytes();

    // The fault.
    let blocker = match fault {
        Fault::RedisDead => {
            proxy.set_mode(Mode::Refuse);
            None
        }
        Fault::RedisHanging => {
            proxy.set_mode(Mode::Hang);
            proxy.reset();
            None
        }
        Fault::RedisSlow => {
            proxy.set_mode(Mode::Delay(Duration::from_secs(2)));
            proxy.reset();
            None
        }
        Fault::RedisRestarted => {
            proxy.set_mode(Mode::Refuse);
            None
        }
        Fault::StoreStalled => {
            let conn = rusqlite::Connection::open(app.dir.path().join("botpipe.sqlite")).unwrap();
            conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
            Some(conn)
        }
    };
    let pulls_before = c.pulls();
    let fault_end = Instant::now()
        + if matches!(fault, Fault::RedisRestarted) {
            Duration::from_millis(600)
        } else {
            FAULT
        };
    let mut max_rss = baseline_rss;
    while Instant::now() < fault_end {
        max_rss = max_rss.max(rss_bytes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pulls_during = c.pulls() - pulls_before;
    proxy.set_mode(Mode::Pass);
    if let Some(conn) = blocker {
        conn.execute_batch("ROLLBACK").unwrap();
    }

    // Keep producing a little after the fault, then let everything drain.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let produced = producer.await.unwrap();
    wait_until(
        Duration::from_secs(90),
        "every record stored after the fault cleared",
        || async {
            let spool_empty = match app.handoff.spool() {
                Some(s) => s.depth().await.map(|d| d.total == 0).unwrap_or(false),
                None => true,
            };
            c.unpulled() == 0
                && spool_empty
                && app
                    .queue
                    .depth()
                    .await
                    .map(|d| d.total == 0)
                    .unwrap_or(false)
                && app
                    .store
                    .counts()
                    .await
                    .map(|n| n.total_communications() == produced)
                    .unwrap_or(false)
        },
    )
    .await;

    // Exactly once: rows equal distinct records, and counts equal rows.
    let counts = app.store.counts().await.unwrap();
    assert_eq!(
        counts.total_communications(),
        produced,
        "{fault:?}: every record exactly once"
    );
    assert_eq!(counts.total_dead_letters(), 0);

    // Cadence: pulls went on during the fault, p99 drift within 2% of the interval, no missed
    // tick.
    let expected_ticks = (FAULT.as_millis() / INTERVAL.as_millis()) as u64;
    if !matches!(fault, Fault::RedisRestarted) {
        assert!(
            pulls_during + 2 >= expected_ticks,
            "{fault:?}: only {pulls_during} pulls during the fault, want ~{expected_ticks}"
        );
    }
    // p99 needs enough ticks to mean more than "the maximum": keep pulling (the collector is
    // drained, so these are empty pulls on schedule) until there are at least 110.
    let drift = "botpipe_pull_schedule_drift_seconds";
    let count_name = format!("{drift}_count");
    wait_until(Duration::from_secs(60), "110 scheduled pulls", || async {
        let text = botpipe::telemetry::prometheus().render();
        prom::sample(&text, &count_name, &[("endpoint", &name)]).unwrap_or(0.0) >= 110.0
    })
    .await;
    let text = botpipe::telemetry::prometheus().render();
    let total = prom::sample(&text, &format!("{drift}_count"), &[("endpoint", &name)]).unwrap();
    let within = prom::sample(
        &text,
        &format!("{drift}_bucket"),
        &[("endpoint", &name), ("le", "0.004")],
    )
    .unwrap();
    let buckets: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{drift}_bucket")) && l.contains(&name))
        .map(str::to_owned)
        .collect();
    eprintln!("{fault:?}: {within} of {total} ticks started within 4 ms of their schedule");
    assert!(
        within >= 0.99 * total,
        "{fault:?}: p99 schedule drift above 4 ms (2% of 200 ms): {within} of {total} ticks within; {buckets:#?}"
    );
    let missed = prom::sample(
        &text,
        "botpipe_pull_missed_ticks_total",
        &[("endpoint", &name)],
    )
    .unwrap_or(0.0);
    assert_eq!(missed, 0.0, "{fault:?}: missed ticks");
    let lease_lost = prom::sample(
        &text,
        "botpipe_pull_lease_lost_ticks_total",
        &[("endpoint", &name)],
    )
    .unwrap_or(0.0);
    assert_eq!(lease_lost, 0.0, "{fault:?}: ticks skipped as lease_lost");

    // Memory stayed bounded during the fault (the process also runs other tests, hence the slack).
    assert!(
        max_rss < baseline_rss + 256 * 1024 * 1024,
        "{fault:?}: RSS grew from {baseline_rss} to {max_rss}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_keeps_cadence_and_loses_nothing_when_redis_is_dead() {
    run_scenario(Fault::RedisDead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_keeps_cadence_and_loses_nothing_when_redis_hangs() {
    run_scenario(Fault::RedisHanging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_keeps_cadence_and_loses_nothing_when_redis_is_slow() {
    run_scenario(Fault::RedisSlow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_keeps_cadence_and_loses_nothing_when_redis_restarts() {
    run_scenario(Fault::RedisRestarted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_keeps_cadence_and_loses_nothing_when_the_store_stalls() {
    run_scenario(Fault::StoreStalled).await;
}
