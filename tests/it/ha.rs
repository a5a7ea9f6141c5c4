//! Several `botpipe run` processes on one Redis (issue 14), as real child processes: the
//! endpoints spread across them, a `kill -9` hands the dead one's endpoints to the others within
//! the lease TTL plus one keeper round, and against legacy collectors (positional confirms)
//! nothing is lost, nothing stored twice, and no two processes' pull-then-confirm cycles on one
//! collector ever interleave.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use botpipe::demo::{DemoCollector, Flavor, RequestKind, ServedRequest};
use botpipe::pull::ownership::round_period;
use botpipe::queue::LeaseInfo;
use botpipe::store::Store;
use tokio_util::sync::CancellationToken;

use crate::helpers::bin::{spawn_run_with, RunningBotpipe};
use crate::helpers::db::{Backend, TestDb};
use crate::helpers::keyspace::{redis_url, TestRedis};
use crate::helpers::{spawn_collector, wait_until, wire, TestCollector};

/// Lease TTL of these tests: short, so failover is quick (the trade-off is documented in
/// operations.md); the config rule wants it at least twice the endpoints' timeout.
const TTL: Duration = Duration::from_secs(2);

struct Cluster {
    dir: tempfile::TempDir,
    redis: TestRedis,
    store_url: String,
    endpoints: Vec<(String, String)>,
    interval: &'static str,
    batch_size: u32,
    procs: BTreeMap<String, RunningBotpipe>,
}

impl Cluster {
    fn config(&self, name: &str) -> PathBuf {
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        let store = if self.store_url.is_empty() {
            format!("sqlite://{}", data.join("botpipe.sqlite").display())
        } else {
            self.store_url.clone()
        };
        let mut text = format!(
            "data_dir = {data:?}\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [botnet]\nallowed_types = [\"mozi\", \"ramnit\"]\n\
             [store]\nurl = {store:?}\nmigrate_on_start = {}\n\
             [queue]\nbackend = \"redis\"\nredis_url = {:?}\nredis_prefix = {:?}\ngroup = {:?}\n\
             lease_ttl = \"{}ms\"\nhandoff_deadline = \"100ms\"\n",
            self.store_url.is_empty(),
            redis_url(),
            self.redis.prefix,
            self.redis.group,
            TTL.as_millis(),
        );
        for (ep, url) in &self.endpoints {
            text.push_str(&format!(
                "[endpoints.{ep}]\nurl = {url:?}\ninterval = \"{}\"\nbatch_size = {}\ntimezone = \"UTC\"\n",
                self.interval, self.batch_size
            ));
        }
        let path = data.join("botpipe.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn start(&mut self, name: &str) {
        let config = self.config(name);
        let p = spawn_run_with(&config, &[("BOTPIPE_NAME", name)]);
        self.procs.insert(name.to_owned(), p);
    }

    /// Holder name per endpoint, from the leases in Redis.
    async fn holders(&self) -> BTreeMap<String, String> {
        let mut conn = self.redis.conn().await;
        let mut out = BTreeMap::new();
        for (ep, _) in &self.endpoints {
            let raw: Option<String> = redis::cmd("GET")
                .arg(format!("{}:lease:{ep}", self.redis.prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
            if let Some(info) = raw.as_deref().and_then(LeaseInfo::parse) {
                out.insert(ep.clone(), info.holder.name);
            }
        }
        out
    }

    /// Endpoints held per process name.
    async fn spread(&self) -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        for holder in self.holders().await.into_values() {
            *n.entry(holder).or_insert(0) += 1;
        }
        n
    }
}

/// Pairs of requests by two processes that interleaved on one collector: another process's
/// request served between a process's pull and its confirm.
fn interleaved_cycles(log: &[ServedRequest]) -> Vec<String> {
    let mut last_pull: BTreeMap<&str, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for (i, r) in log.iter().enumerate() {
        match r.kind {
            RequestKind::Pull { .. } => {
                last_pull.insert(&r.agent, i);
            }
            RequestKind::Confirm { .. } => match last_pull.get(r.agent.as_str()) {
                None => bad.push(format!(
                    "{}: confirm #{} with no pull before",
                    r.agent, r.order
                )),
                Some(&p) => {
                    for other in log[p + 1..i].iter().filter(|o| o.agent != r.agent) {
                        bad.push(format!(
                            "{} pulled #{} and confirmed #{}, but {} was served #{} in between",
                            r.agent, log[p].order, r.order, other.agent, other.order
                        ));
                    }
                }
            },
        }
    }
    bad
}

#[test]
fn the_interleaving_check_sees_an_overlap() {
    let req = |order, agent: &str, kind| ServedRequest {
        order,
        agent: agent.into(),
        kind,
    };
    let pull = RequestKind::Pull { returned: 5 };
    let confirm = RequestKind::Confirm { marked: 5 };
    let fine = [
        req(0, "a", pull),
        req(1, "a", confirm),
        req(2, "b", pull),
        req(3, "b", confirm),
    ];
    assert!(interleaved_cycles(&fine).is_empty());
    let overlap = [
        req(0, "a", pull),
        req(1, "b", pull),
        req(2, "a", confirm),
        req(3, "b", confirm),
    ];
    assert_eq!(interleaved_cycles(&overlap).len(), 2);
}

/// Pushes three unique valid records every 20 ms until stopped; returns how many.
fn produce(
    c: DemoCollector,
    first_octet: u32,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !stop.is_cancelled() {
            tick.tick().await;
            for _ in 0..3 {
                let ip = format!(
                    "{first_octet}.{}.{}.{}",
                    n % 200 + 1,
                    (n / 200) % 200 + 1,
                    n % 7 + 1
                );
                let ts = chrono::DateTime::from_timestamp(1_772_000_000 + n as i64, 0)
                    .unwrap()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string();
                let t = if n.is_multiple_of(2) {
                    "mozi"
                } else {
                    "ramnit"
                };
                c.push(wire(&ip, &ts, t, "online"));
                n += 1;
            }
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_endpoints_spread_three_or_four_per_process_and_survivors_take_a_dead_ones_within_ttl()
{
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let mut cluster = Cluster {
        dir: tempfile::tempdir().unwrap(),
        redis,
        store_url: String::new(),
        endpoints: (0..10).map(|i| (format!("e{i}"), tc.url.clone())).collect(),
        interval: "250ms",
        batch_size: 100,
        procs: BTreeMap::new(),
    };
    for p in ["p1", "p2", "p3"] {
        cluster.start(p);
    }
    wait_until(
        Duration::from_secs(30),
        "3–4 endpoints per process",
        || async {
            let s = cluster.spread().await;
            s.values().sum::<usize>() == 10
                && s.len() == 3
                && s.values().all(|n| (3..=4).contains(n))
        },
    )
    .await;
    // /api/status of any process names the holder of every endpoint.
    let http = cluster.procs["p1"].http;
    let holders = cluster.holders().await;
    wait_until(
        Duration::from_secs(10),
        "status shows every holder",
        || async {
            let s: serde_json::Value = reqwest::get(format!("http://{http}/api/status"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            s["endpoints"].as_array().unwrap().iter().all(|e| {
                e["owner"]["name"].as_str()
                    == holders.get(e["name"].as_str().unwrap()).map(String::as_str)
            })
        },
    )
    .await;

    let dead = cluster.procs.remove("p2").unwrap();
    dead.kill9();
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(20),
        "p1 and p3 hold all ten",
        || async {
            let s = cluster.spread().await;
            s.values().sum::<usize>() == 10 && !s.contains_key("p2")
        },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("failover of p2's endpoints took {took:?}");
    // TTL plus one keeper round, plus scheduling slack for a loaded 2-core test machine.
    assert!(
        took <= TTL + round_period(TTL) + Duration::from_millis(1500),
        "failover took {took:?}"
    );
    wait_until(
        Duration::from_secs(20),
        "five each once settled",
        || async { cluster.spread().await.values().all(|n| *n == 5) },
    )
    .await;
    for (_, mut p) in std::mem::take(&mut cluster.procs) {
        assert!(p.terminate().await.success());
    }
    assert!(cluster.holders().await.is_empty(), "every lease released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_three_processes_against_legacy_collectors_lose_nothing_through_kill_9_restart_and_stop(
) {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    if !Backend::Postgres.available() {
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    let store = db.open_migrated(&["mozi", "ramnit"]).await;
    let collectors: Vec<TestCollector> =
        futures::future::join_all((0..3).map(|_| spawn_collector(Flavor::Legacy, None))).await;
    let logged: Vec<DemoCollector> = collectors
        .iter()
        .map(|tc| tc.collector.clone().with_request_log())
        .collect();
    let stop = CancellationToken::new();
    let producers: Vec<_> = logged
        .iter()
        .zip([5u32, 23, 31])
        .map(|(c, octet)| produce(c.clone(), octet, stop.clone()))
        .collect();
    let mut cluster = Cluster {
        dir: tempfile::tempdir().unwrap(),
        redis,
        store_url: db.url.clone(),
        endpoints: collectors
            .iter()
            .enumerate()
            .map(|(i, tc)| (format!("legacy{i}"), tc.url.clone()))
            .collect(),
        interval: "200ms",
        batch_size: 50,
        procs: BTreeMap::new(),
    };
    for p in ["p1", "p2", "p3"] {
        cluster.start(p);
    }
    let stored = || async {
        store
            .counts()
            .await
            .map(|c| c.total_communications())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(30),
        "every endpoint held and records stored",
        || async { cluster.holders().await.len() == 3 && stored().await > 200 },
    )
    .await;

    // kill -9 the holder of legacy0 mid-run.
    let victim = cluster.holders().await["legacy0"].clone();
    cluster.procs.remove(&victim).unwrap().kill9();
    let killed = Instant::now();
    wait_until(Duration::from_secs(20), "legacy0 taken over", || async {
        cluster
            .holders()
            .await
            .get("legacy0")
            .is_some_and(|h| *h != victim)
    })
    .await;
    eprintln!("legacy0 taken over {:?} after the kill", killed.elapsed());
    let before = stored().await;
    wait_until(Duration::from_secs(20), "records keep flowing", || async {
        stored().await > before + 200
    })
    .await;

    // Start it again: it gets a share.
    cluster.start(&victim);
    wait_until(
        Duration::from_secs(30),
        "the restarted process holds an endpoint",
        || async { cluster.spread().await.get(&victim).copied().unwrap_or(0) >= 1 },
    )
    .await;

    // Stop another holder gracefully.
    let spread = cluster.spread().await;
    let leaving = spread
        .keys()
        .find(|p| **p != victim)
        .cloned()
        .expect("another process holds an endpoint");
    let mut p = cluster.procs.remove(&leaving).unwrap();
    assert!(p.terminate().await.success(), "{leaving} stops cleanly");
    wait_until(
        Duration::from_secs(20),
        "its endpoints taken by the others",
        || async {
            let h = cluster.holders().await;
            h.len() == 3 && !h.values().any(|n| *n == leaving)
        },
    )
    .await;

    // Let the rest drain.
    tokio::time::sleep(Duration::from_millis(500)).await; // keep producing a little after the stop
    stop.cancel();
    let mut produced = 0;
    for p in producers {
        produced += p.await.unwrap();
    }
    wait_until(Duration::from_secs(90), "every record stored", || async {
        logged.iter().all(|c| c.unpulled() == 0) && stored().await == produced
    })
    .await;
    for (_, mut p) in std::mem::take(&mut cluster.procs) {
        assert!(p.terminate().await.success());
    }

    let counts = store.counts().await.unwrap();
    assert_eq!(
        counts.total_communications(),
        produced,
        "every valid record exactly once"
    );
    assert_eq!(counts.total_dead_letters(), 0);
    for (i, c) in logged.iter().enumerate() {
        assert_eq!(c.unpulled(), 0, "collector {i} has nothing unconfirmed");
        let marked: usize = c.confirms().iter().map(|k| k.marked.len()).sum();
        assert_eq!(
            marked,
            c.total(),
            "collector {i}: each record confirmed once"
        );
        let log = c.request_log();
        let bad = interleaved_cycles(&log);
        assert!(
            bad.is_empty(),
            "collector {i}: {} interleavings: {:#?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        if i == 0 {
            let agents: std::collections::BTreeSet<&str> =
                log.iter().map(|r| r.agent.as_str()).collect();
            assert!(agents.len() >= 2, "legacy0 changed hands: {agents:?}");
        }
    }
}
