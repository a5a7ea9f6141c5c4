//! Crashes: a worker dying mid-batch (before or after its store commit) and a `kill -9` of the
//! whole process. Redelivery must lose nothing and count nothing twice.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use botpipe::enrich::{AnyLookup, Geo};
use botpipe::queue::{AnyQueue, EmbeddedQueue, Queue};
use botpipe::record::{Batch, BotnetType, LogType, NodeIp, Record};
use botpipe::store::{AnyStore, EnrichedBatch, SqliteStore, Store};
use botpipe::worker::{Outcome, Worker};

use crate::helpers::{spawn_collector, wait_until, wire};

/// ip, first_seen, last_seen, cleaned_time, status, communication_count.
type NodeRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
);

fn batch() -> Batch {
    let records = (0..200)
        .map(|i| Record {
            ip: NodeIp::parse(&format!("2.2.{}.{}", i % 20, i % 7 + 1)).unwrap(),
            timestamp: chrono::DateTime::from_timestamp(1_772_000_000 + (i % 50), 0).unwrap(),
            botnet_type: BotnetType::parse("mozi").unwrap(),
            log_type: if i % 3 == 0 {
                LogType::Cleanup
            } else {
                LogType::Online
            },
            seq_id: None,
        })
        .collect();
    Batch::new("crash-test", records, vec![])
}

/// Node rows as comparable tuples, without wall-clock columns.
fn node_rows(path: &std::path::Path) -> Vec<NodeRow> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT ip, first_seen, last_seen, cleaned_time, status, communication_count FROM botnet_nodes_mozi ORDER BY ip")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

async fn reference_rows(b: &Batch) -> Vec<NodeRow> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    let types = [BotnetType::parse("mozi").unwrap()].into_iter().collect();
    store.migrate(&types).await.unwrap();
    let n = b.records.len();
    store
        .apply(&EnrichedBatch {
            batch: b.clone(),
            geo: vec![Geo::unknown(); n],
        })
        .await
        .unwrap();
    node_rows(&path)
}

#[tokio::test]
async fn worker_killed_after_commit_before_ack_is_redelivered_without_double_counting() {
    for commit_before_crash in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let qpath = dir.path().join("queue.sqlite");
        let spath = dir.path().join("botpipe.sqlite");
        let store = SqliteStore::open(&spath).unwrap();
        store
            .migrate(&[BotnetType::parse("mozi").unwrap()].into_iter().collect())
            .await
            .unwrap();
        let b = batch();
        {
            let q = EmbeddedQueue::open(&qpath, Duration::from_secs(3600), 5).unwrap();
            q.append(&b).await.unwrap();
            // The doomed worker leases the batch, maybe commits it, and dies before its ack.
            let lease = q.lease("doomed", Duration::ZERO).await.unwrap().unwrap();
            if commit_before_crash {
                let n = lease.batch.records.len();
                store
                    .apply(&EnrichedBatch {
                        batch: lease.batch.clone(),
                        geo: vec![Geo::unknown(); n],
                    })
                    .await
                    .unwrap();
            }
        }
        // Restart: the queue file is reopened and the batch comes back.
        let q = EmbeddedQueue::open(&qpath, Duration::from_secs(3600), 5).unwrap();
        let worker = Worker::new(
            "survivor",
            AnyQueue::Embedded(q.clone()),
            AnyStore::Sqlite(store.clone()),
            AnyLookup::Disabled,
        );
        match worker.try_process_one(Duration::from_secs(5)).await {
            Outcome::Stored { records, .. } => assert_eq!(records, 200),
            other => panic!("expected the batch to be redelivered, got {other:?}"),
        }
        assert_eq!(q.depth().await.unwrap().total, 0);
        assert_eq!(
            node_rows(&spath),
            reference_rows(&b).await,
            "commit_before_crash={commit_before_crash}"
        );
    }
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_botpipe(config: &std::path::Path) -> ChildGuard {
    let log = if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .args(["--config", config.to_str().unwrap(), "run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn communications(path: &std::path::Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(path) else {
        return 0;
    };
    ["mozi", "ramnit"]
        .iter()
        .map(|t| {
            conn.query_row(
                &format!("SELECT COUNT(*) FROM botnet_communications_{t}"),
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
        })
        .sum()
}

#[tokio::test]
async fn kill_9_mid_run_then_restart_loses_nothing_and_counts_nothing_twice() {
    let tc = spawn_collector(botpipe::demo::Flavor::Botpipe, None).await;
    let c = &tc.collector;
    let mut distinct = HashSet::new();
    for i in 0..20_000u32 {
        let ip = format!("3.{}.{}.{}", i % 100 + 1, (i / 100) % 50 + 1, i % 9 + 1);
        let t = if i % 2 == 0 { "mozi" } else { "ramnit" };
        let log = if i % 4 == 0 { "cleanup" } else { "online" };
        let ts = chrono::DateTime::from_timestamp(1_772_000_000 + i64::from(i % 3000), 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        distinct.insert((ip.clone(), ts.clone(), t, log));
        c.push(wire(&ip, &ts, t, log));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("botpipe.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[botnet]\nallowed_types = [\"mozi\", \"ramnit\"]\n\
         [endpoints.east]\nurl = {:?}\ninterval = \"50ms\"\nbatch_size = 500\ntimezone = \"UTC\"\n",
        dir.path().display().to_string(),
        tc.url
    )
    .unwrap();
    let store = dir.path().join("botpipe.sqlite");

    let child = spawn_botpipe(&config);
    wait_until(
        Duration::from_secs(60),
        "some batches stored before the kill",
        || async { communications(&store) > 2000 },
    )
    .await;
    drop(child); // SIGKILL
    let stored_at_kill = communications(&store);
    assert!(
        stored_at_kill < distinct.len() as i64,
        "the kill came too late to mean anything"
    );

    let _child = spawn_botpipe(&config);
    wait_until(
        Duration::from_secs(120),
        "everything stored after the restart",
        || async { c.unpulled() == 0 && communications(&store) == distinct.len() as i64 },
    )
    .await;
    let conn = rusqlite::Connection::open(&store).unwrap();
    for t in ["mozi", "ramnit"] {
        let (sum_counts, rows): (i64, i64) = conn
            .query_row(
                // The count is of online rows (the legacy count).
                &format!("SELECT (SELECT SUM(communication_count) FROM botnet_nodes_{t}), (SELECT COUNT(*) FROM botnet_communications_{t} WHERE event_type = 'remote_upload')"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            sum_counts, rows,
            "communication_count double-counted in {t}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_worker_process_holding_pending_entries_then_another_consumer_reclaims_them() {
    use crate::helpers::keyspace::{fast_options, redis_url, TestRedis};
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("botpipe.sqlite");
    let store = SqliteStore::open(&store_path).unwrap();
    let types = [BotnetType::parse("mozi").unwrap()].into_iter().collect();
    store.migrate(&types).await.unwrap();

    // Ten batches of overlapping records in Redis.
    let producer = redis.queue(&redis_url(), fast_options(Duration::from_secs(2), 5), None);
    let mut distinct = HashSet::new();
    for b in 0..10 {
        let mut batch = batch();
        for (i, r) in batch.records.iter_mut().enumerate() {
            r.timestamp =
                chrono::DateTime::from_timestamp(1_772_000_000 + (b * 37 + i as i64) % 400, 0)
                    .unwrap();
            distinct.insert((r.ip, r.timestamp, r.log_type));
        }
        producer.append(&batch).await.unwrap();
    }

    // The store is held locked, so the worker process leases batches and cannot finish them.
    let blocker = rusqlite::Connection::open(&store_path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[botnet]\nallowed_types = [\"mozi\"]\n[store]\nmigrate_on_start = false\n[queue]\nbackend = \"redis\"\n\
             redis_url = {:?}\nredis_prefix = {:?}\ngroup = {:?}\nlease_timeout = \"2s\"\n",
            dir.path().display().to_string(),
            redis_url(),
            redis.prefix,
            redis.group
        ),
    )
    .unwrap();
    let log = if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "worker",
                "--workers",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_until(
        Duration::from_secs(30),
        "the worker process holds pending entries",
        || async {
            producer
                .depth()
                .await
                .map(|d| d.pending >= 2)
                .unwrap_or(false)
        },
    )
    .await;
    drop(child); // kill -9 while it holds its leases
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    // Another consumer (another "process") reclaims the dead consumer's entries after the lease
    // timeout and stores everything once.
    let survivor_queue = redis.queue(&redis_url(), fast_options(Duration::from_secs(2), 5), None);
    let survivor = Worker::new(
        "survivor",
        AnyQueue::Redis(survivor_queue),
        AnyStore::Sqlite(store.clone()),
        AnyLookup::Disabled,
    );
    let token = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(survivor.run_until_stopped(token.clone()));
    wait_until(
        Duration::from_secs(60),
        "every batch reclaimed and stored",
        || async {
            producer
                .depth()
                .await
                .map(|d| d.total == 0)
                .unwrap_or(false)
        },
    )
    .await;
    token.cancel();
    running.await.unwrap();

    let conn = rusqlite::Connection::open(&store_path).unwrap();
    let (sum_counts, rows, online): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT SUM(communication_count) FROM botnet_nodes_mozi),
                    (SELECT COUNT(*) FROM botnet_communications_mozi),
                    (SELECT COUNT(*) FROM botnet_communications_mozi WHERE event_type = 'remote_upload')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(rows, distinct.len() as i64, "nothing lost");
    // The count is of online rows (the legacy count).
    assert_eq!(sum_counts, online, "nothing double-counted");
}
