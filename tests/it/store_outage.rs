//! Issue 12, item 2: a database outage longer than `lease_timeout × max_deliveries` must not
//! move queued batches to the queue's dead letters. PostgreSQL sits behind the TCP fault proxy
//! for twice that product while a collector keeps producing, either refusing every connection
//! or black-holing them (accepted, swallowed, never answered; the connections that lived
//! through it stay dead, as after a failover). Afterwards every record is stored exactly once,
//! nothing is in the dead stream or table, and meanwhile `/ready` said the store was not ok and
//! backpressure held the pullers back. The fault starts while a worker is inside a statement.
//! Run for both queue backends.

use std::time::{Duration, Instant};

use botpipe::config::QueueBackend;
use botpipe::demo::{DemoCollector, Flavor};
use botpipe::queue::Queue;
use botpipe::store::Store;
use rstest::rstest;
use sqlx::{Connection, Executor};
use tokio_util::sync::CancellationToken;

use crate::helpers::db::{Backend, TestDb};
use crate::helpers::keyspace::{redis_url, TestRedis};
use crate::helpers::proxy::{FaultProxy, Mode};
use crate::helpers::{endpoint, prom, spawn_app, spawn_collector, wait_until, wire};

/// Shortened so that the outage below is several times `LEASE × MAX_DELIVERIES`; long enough
/// that a worker's bound on a write (three quarters of it) leaves room to give the batch back on
/// a busy test machine.
const LEASE: Duration = Duration::from_secs(2);
const MAX_DELIVERIES: u32 = 2;
/// How long PostgreSQL is out: twice `LEASE × MAX_DELIVERIES`.
const OUTAGE: Duration = Duration::from_secs(8);
/// How long the pipeline has to catch up after the outage.
const RECOVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
enum QueueKind {
    Embedded,
    Redis,
}

/// Pushes a few unique records every 20 ms until stopped; returns how many it pushed.
fn spawn_producer(c: DemoCollector, stop: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !stop.is_cancelled() {
            tick.tick().await;
            for _ in 0..4 {
                let ip = format!("6.{}.{}.{}", n % 200 + 1, (n / 200) % 200 + 1, n % 5 + 1);
                let ts = chrono::DateTime::from_timestamp(1_772_000_000 + n as i64, 0)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string();
                c.push(wire(&ip, &ts, "mozi", "online"));
                n += 1;
            }
        }
        n
    })
}

#[rstest]
#[case::embedded_queue(QueueKind::Embedded)]
#[case::redis_queue(QueueKind::Redis)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_store_outage_longer_than_lease_times_deliveries_dead_letters_nothing(
    #[case] kind: QueueKind,
) {
    ride_out_store_outage(kind, Mode::Refuse).await;
}

/// A store that hangs instead of refusing returns no error at all: a worker stuck in a write
/// must not hold its batch past the lease (which would count a delivery), the workers must stop
/// leasing (the store gate), and the connections stuck on the dead link must not keep the pool
/// from reaching the store once it is back.
#[rstest]
#[case::embedded_queue(QueueKind::Embedded)]
#[case::redis_queue(QueueKind::Redis)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_black_holed_store_for_longer_than_lease_times_deliveries_dead_letters_nothing(
    #[case] kind: QueueKind,
) {
    ride_out_store_outage(kind, Mode::BlackHole).await;
}

/// `/ready` answers 503 with the store not ok.
async fn store_not_ready(http: std::net::SocketAddr) -> bool {
    let Ok(resp) = reqwest::Client::new()
        .get(format!("http://{http}/ready"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    else {
        return false;
    };
    let code = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    code == 503 && body["store"]["ok"] == false
}

/// The scenario of both tests: ingest, `fault` on PostgreSQL for [`OUTAGE`], then healed.
async fn ride_out_store_outage(kind: QueueKind, fault: Mode) {
    if !Backend::Postgres.available() {
        return;
    }
    let redis = match kind {
        QueueKind::Embedded => None,
        QueueKind::Redis => match TestRedis::require() {
            Some(r) => Some(r),
            None => return,
        },
    };
    let db = TestDb::create(Backend::Postgres).await;
    let mut pg_url = url::Url::parse(&db.url).unwrap();
    let pg_addr = format!(
        "{}:{}",
        pg_url.host_str().unwrap(),
        pg_url.port().unwrap_or(5432)
    );
    let proxy = FaultProxy::start(pg_addr.parse().unwrap()).await;
    pg_url.set_port(Some(proxy.addr().port())).unwrap();
    let mut store = db.settings();
    store.kind = botpipe::config::StoreKind::Postgres(pg_url.to_string().into());

    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let name = format!("outage-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = spawn_app(
        vec![endpoint(&name, &tc.url, Duration::from_millis(100), 50)],
        |s| {
            s.store = store;
            s.queue.lease_timeout = LEASE;
            s.queue.max_deliveries = MAX_DELIVERIES;
            s.queue.high_watermark = 6;
            s.queue.low_watermark = 3;
            if let Some(redis) = &redis {
                s.queue.backend = QueueBackend::Redis(redis.settings(&redis_url()));
            }
        },
    )
    .await;
    let stop = CancellationToken::new();
    let producer = spawn_producer(tc.collector.clone(), stop.clone());

    wait_until(
        Duration::from_secs(30),
        "records stored before the outage",
        || async {
            app.store
                .counts()
                .await
                .map(|n| n.total_communications() > 40)
                .unwrap_or(false)
        },
    )
    .await;

    // The fault must find the workers inside a statement, not between batches (a write takes
    // milliseconds, so it usually would not): a session of the test's own, straight to the
    // server, locks the nodes table, and the fault comes once a worker waits on that lock.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    blocker
        .execute("BEGIN; LOCK TABLE botnet_nodes_mozi IN EXCLUSIVE MODE")
        .await
        .unwrap();
    // Polled here rather than with `wait_until`: the query needs the blocker mutably.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks
             WHERE relation = 'botnet_nodes_mozi'::regclass AND NOT granted",
        )
        .fetch_one(&mut blocker)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no worker waited on the locked nodes table"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_mode(fault);
    // The workers' statements go on at the server now; their answers meet the fault.
    blocker.execute("ROLLBACK").await.unwrap();
    blocker.close().await.unwrap();
    let outage_end = Instant::now() + OUTAGE;
    let http = app.http.unwrap();
    wait_until(OUTAGE, "/ready to say the store is not ok", || {
        store_not_ready(http)
    })
    .await;
    while Instant::now() < outage_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = botpipe::telemetry::prometheus().render();
    let skipped = prom::sample(
        &text,
        "botpipe_pull_skipped_ticks_total",
        &[("endpoint", &name)],
    )
    .unwrap_or(0.0);
    proxy.set_mode(Mode::Pass);

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let produced = producer.await.unwrap();
    let c = &tc.collector;
    wait_until(RECOVERY, "every record stored after the outage", || async {
        c.unpulled() == 0
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
                .map(|n| n.total_communications() >= produced)
                .unwrap_or(false)
    })
    .await;

    let counts = app.store.counts().await.unwrap();
    assert_eq!(
        counts.total_communications(),
        produced,
        "{kind:?} {fault:?}: every record exactly once"
    );
    assert_eq!(
        counts.total_dead_letters(),
        0,
        "{kind:?} {fault:?}: no dead records"
    );
    let dead_batches = app.handoff.queue().dead_count().await.unwrap();
    assert_eq!(
        dead_batches, 0,
        "{kind:?} {fault:?}: no batch in the dead stream/table"
    );
    if let Some(spool) = app.handoff.spool() {
        assert_eq!(
            spool.dead_count().await.unwrap(),
            0,
            "{kind:?} {fault:?}: spool dead table"
        );
    }
    assert!(
        skipped > 0.0,
        "{kind:?} {fault:?}: backpressure never held the puller back during the outage"
    );
    app.stop().await;
    drop(redis);
}
