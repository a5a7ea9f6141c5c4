//! The `Store` contract, run against SQLite, PostgreSQL and MariaDB on this machine: the merge
//! rules (as examples and as a property, compared row for row with SQLite), concurrent
//! writers, refused rows, in-place upgrades of the legacy shapes, lost connections, and
//! `botpipe migrate` from the command line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use botpipe::enrich::Geo;
use botpipe::record::{Batch, BotnetType, DeadLetter, LogType, NodeIp, Record, RejectReason};
use botpipe::store::{AnyStore, EnrichedBatch, Store};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rand::{Rng, SeedableRng};
use sqlx::Executor;

use crate::helpers::db::{type_set, Backend, TestDb};
use crate::helpers::services::{self, Service};

/// 2024-01-01T00:00:00Z: every test time is an offset in seconds from it.
const T0: i64 = 1_704_067_200;
/// Property cases per backend: enough to hit the interesting interleavings, few enough for CI.
const PROPERTY_CASES: u32 = 24;

/// Runs `$test(Backend)` once per listed backend, as `$test::sqlite`, `$test::postgres`, ….
/// Each is skipped where its server does not run, unless marked `no_server` (the test needs
/// none).
macro_rules! on_backends {
    ($test:ident: $($backend:ident => $variant:ident),+) => {
        on_backends!(@ $test, true, $($backend => $variant),+);
    };
    (no_server $test:ident: $($backend:ident => $variant:ident),+) => {
        on_backends!(@ $test, false, $($backend => $variant),+);
    };
    (@ $test:ident, $needs_server:expr, $($backend:ident => $variant:ident),+) => {
        mod $test {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $backend() {
                    if $needs_server && !super::Backend::$variant.available() {
                        return;
                    }
                    crate::helpers::init_test_log();
                    super::$test(super::Backend::$variant).await
                }
            )+
        }
    };
}

fn ts(offset: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + offset, 0).unwrap()
}

/// The stored text of time `offset`: the wall-clock of `[store] timezone` (Asia/Shanghai by
/// default) on every backend.
fn text(offset: i64) -> String {
    ts(offset)
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn rec(t: &str, ip: &str, offset: i64, log_type: LogType) -> Record {
    Record {
        ip: NodeIp::parse(ip).unwrap(),
        timestamp: ts(offset),
        botnet_type: BotnetType::parse(t).unwrap(),
        log_type,
        seq_id: None,
    }
}

/// The same known geography for every lookup of `ip`; floats exact in f32, as MySQL's FLOAT
/// stores them.
fn place_of(ip: &NodeIp) -> Geo {
    let k = ip.to_string().bytes().map(u32::from).sum::<u32>() % 7;
    let china = k % 2 == 0;
    Geo {
        continent: Some(if china { "亚洲" } else { "Europe" }.into()),
        country: Some(if china { "中国" } else { "Germany" }.into()),
        province: Some(format!("province{k}").into()),
        city: Some(format!("city{k}").into()),
        isp: Some(format!("isp {k}").into()),
        asn: Some(format!("AS{}", 4000 + k).into()),
        longitude: Some(100.5 + f64::from(k)),
        latitude: Some(20.25 + f64::from(k)),
        is_china: china,
    }
}

/// Whether the lookup of this event "succeeded": a fixed function of the event, so that which
/// geography a communication row keeps does not depend on the order of replays.
fn lookup_succeeds(r: &Record) -> bool {
    let h = r.ip.to_string().len() as i64 + r.timestamp.timestamp() / 60 + r.log_type as i64;
    h % 3 != 0
}

fn enriched(records: Vec<Record>) -> EnrichedBatch {
    let geo = records
        .iter()
        .map(|r| {
            if lookup_succeeds(r) {
                place_of(&r.ip)
            } else {
                Geo::unknown()
            }
        })
        .collect();
    EnrichedBatch {
        batch: Batch::new("test", records, vec![]),
        geo,
    }
}

/// `n` "mozi" records over the IPs of `pool`, a share `online` of them online, at one of
/// `slots` times 10 s apart.
fn random_records(
    rng: &mut rand::rngs::StdRng,
    pool: &[String],
    n: usize,
    online: f64,
    slots: i64,
) -> Vec<Record> {
    (0..n)
        .map(|_| {
            let ip = &pool[rng.random_range(0..pool.len())];
            let log = if rng.random_bool(online) {
                LogType::Online
            } else {
                LogType::Cleanup
            };
            rec("mozi", ip, rng.random_range(0..slots) * 10, log)
        })
        .collect()
}

async fn apply(store: &AnyStore, records: Vec<Record>) {
    store.apply(&enriched(records)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The merge rules, by example.

on_backends!(merge_rules_hold_for_the_named_cases: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn merge_rules_hold_for_the_named_cases(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let a = "1.0.0.1";

    // A cleanup before its node exists creates the node, cleaned.
    apply(&store, vec![rec("mozi", a, 100, LogType::Cleanup)]).await;
    let d = db.dump("mozi").await;
    let n = d.node(a);
    assert_eq!(n.status.as_deref(), Some("cleaned"));
    assert_eq!(n.cleaned_time, Some(text(100)));
    assert_eq!((n.first_seen.as_ref(), n.last_seen.as_ref()), (None, None));
    // The count is of online rows, as the legacy writer kept it: a cleanup is stored, not
    // counted.
    assert_eq!(n.communication_count, Some(0));

    // An online event older than the cleanup does not reactivate it.
    apply(&store, vec![rec("mozi", a, 50, LogType::Online)]).await;
    let after_old_online = db.dump("mozi").await;
    let n = after_old_online.node(a);
    assert_eq!(n.status.as_deref(), Some("cleaned"));
    assert_eq!(n.first_seen, Some(text(50)));
    assert_eq!(n.last_seen, Some(text(50)));
    assert_eq!(n.communication_count, Some(1));

    // Replaying it changes nothing, not even the count.
    apply(&store, vec![rec("mozi", a, 50, LogType::Online)]).await;
    assert_eq!(db.dump("mozi").await, after_old_online);

    // Online after the cleanup reactivates.
    apply(&store, vec![rec("mozi", a, 200, LogType::Online)]).await;
    let reactivated = db.dump("mozi").await;
    let n = reactivated.node(a);
    assert_eq!(n.status.as_deref(), Some("active"));
    assert_eq!(n.first_seen, Some(text(50)));
    assert_eq!(n.last_seen, Some(text(200)));
    assert_eq!(n.active_time, Some(text(200)));
    assert_eq!(n.cleaned_time, Some(text(100)));
    assert_eq!(n.communication_count, Some(2));

    // A replayed older online event and the old cleanup, together, still change nothing.
    apply(
        &store,
        vec![
            rec("mozi", a, 100, LogType::Cleanup),
            rec("mozi", a, 50, LogType::Online),
        ],
    )
    .await;
    assert_eq!(db.dump("mozi").await, reactivated);

    // Online and cleanup in the same second are two communications; the cleanup wins the tie.
    let b = "2.0.0.2";
    apply(
        &store,
        vec![
            rec("mozi", b, 300, LogType::Online),
            rec("mozi", b, 300, LogType::Cleanup),
        ],
    )
    .await;
    let d = db.dump("mozi").await;
    assert_eq!(d.node(b).status.as_deref(), Some("cleaned"));
    assert_eq!(d.node(b).communication_count, Some(1));
    let b_events: Vec<_> = d
        .comms
        .iter()
        .filter(|c| c.ip == b)
        .map(|c| (c.event_type.clone(), c.status.clone()))
        .collect();
    assert_eq!(
        b_events,
        [
            (Some("cleanup".into()), Some("cleaned".into())),
            (Some("remote_upload".into()), Some("active".into()))
        ]
    );
    d.assert_counts_match_rows();

    // A failed lookup never erases known geography.
    let c = "8.8.4.4";
    let known = place_of(&NodeIp::parse(c).unwrap());
    let mut with_geo = enriched(vec![rec("mozi", c, 10, LogType::Online)]);
    with_geo.geo = vec![known.clone()];
    store.apply(&with_geo).await.unwrap();
    let mut without = enriched(vec![rec("mozi", c, 20, LogType::Online)]);
    without.geo = vec![Geo::unknown()];
    store.apply(&without).await.unwrap();
    let d = db.dump("mozi").await;
    assert_eq!(d.node(c).place.city.as_deref(), known.city.as_deref());
    assert_eq!(d.node(c).place.longitude, known.longitude);
    assert!(d.node(c).place.is_china == known.is_china);
}

// ---------------------------------------------------------------------------------------------
// The merge rules, as a property: any order, any batching, any number of replays.

/// IPs the events draw from: a few, so that events collide; one IPv6.
const IPS: [&str; 4] = ["1.0.0.1", "9.9.9.9", "2400:cb00::1", "14.19.132.125"];

/// An event: IP index, minute slot (events in one slot share the second), online or cleanup.
type Event = (usize, i64, bool);

#[derive(Debug, Clone)]
struct Scenario {
    events: Vec<Event>,
    /// Each pass applies every event once, in its own order, cut into batches of these sizes.
    passes: Vec<(Vec<Event>, Vec<usize>)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    prop::collection::vec((0..IPS.len(), 0..5i64, any::<bool>()), 1..14).prop_flat_map(|events| {
        let n = events.len();
        let pass = (
            Just(events.clone()).prop_shuffle(),
            prop::collection::vec(1..=n, 0..4),
        );
        (Just(events), prop::collection::vec(pass, 1..=3))
            .prop_map(|(events, passes)| Scenario { events, passes })
    })
}

fn records_of(t: &str, events: &[Event]) -> Vec<Record> {
    events
        .iter()
        .map(|&(ip, slot, online)| {
            let log = if online {
                LogType::Online
            } else {
                LogType::Cleanup
            };
            rec(t, IPS[ip], slot * 60, log)
        })
        .collect()
}

fn merge_property(backend: Backend) {
    crate::helpers::init_test_log();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, reference) = rt.block_on(async {
        (
            TestDb::create(backend).await,
            TestDb::create(Backend::Sqlite).await,
        )
    });
    let (store, reference_store) = rt.block_on(async {
        (
            db.open_migrated(&[]).await,
            reference.open_migrated(&[]).await,
        )
    });
    let case = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: PROPERTY_CASES,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&scenario(), |sc| {
            // A fresh botnet type per case: fresh tables, no cleanup between cases.
            let t = format!("p{}", case.fetch_add(1, Ordering::Relaxed));
            rt.block_on(async {
                reference_store
                    .apply(&enriched(records_of(&t, &sc.events)))
                    .await
                    .unwrap();
                for (order, cuts) in &sc.passes {
                    let records = records_of(&t, order);
                    let mut rest = records.as_slice();
                    for &size in cuts {
                        let (head, tail) = rest.split_at(size.min(rest.len()));
                        if !head.is_empty() {
                            store.apply(&enriched(head.to_vec())).await.unwrap();
                        }
                        rest = tail;
                    }
                    if !rest.is_empty() {
                        store.apply(&enriched(rest.to_vec())).await.unwrap();
                    }
                }
                let expected = reference.dump(&t).await;
                let got = db.dump(&t).await;
                expected.assert_counts_match_rows();
                prop_assert_eq!(got, expected);
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap();
}

mod merge_rules_are_order_and_batch_independent {
    #[test]
    fn sqlite() {
        super::merge_property(super::Backend::Sqlite)
    }
    #[test]
    fn postgres() {
        if super::Backend::Postgres.available() {
            super::merge_property(super::Backend::Postgres)
        }
    }
    #[test]
    fn mysql() {
        if super::Backend::Mysql.available() {
            super::merge_property(super::Backend::Mysql)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

on_backends!(concurrent_workers_neither_deadlock_nor_lose_updates: postgres => Postgres, mysql => Mysql, sqlite => Sqlite);

async fn concurrent_workers_neither_deadlock_nor_lose_updates(backend: Backend) {
    const WORKERS: usize = 4;
    const BATCHES: usize = 8;
    const RECORDS: usize = 250;
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let pool: Vec<String> = (0..150)
        .map(|i| format!("{}.{}.{}.1", 11 + i % 50, i / 50, i % 7))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let work: Vec<Vec<Vec<Record>>> = (0..WORKERS)
        .map(|_| {
            (0..BATCHES)
                .map(|_| random_records(&mut rng, &pool, RECORDS, 0.85, 400))
                .collect()
        })
        .collect();
    let all: Vec<Record> = work.iter().flatten().flatten().cloned().collect();

    let store = Arc::new(store);
    let tasks: Vec<_> = work
        .into_iter()
        .map(|batches| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for records in batches {
                    store.apply(&enriched(records)).await?;
                }
                Ok::<(), botpipe::store::StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    let reference = TestDb::create(Backend::Sqlite).await;
    reference
        .open_migrated(&["mozi"])
        .await
        .apply(&enriched(all.clone()))
        .await
        .unwrap();
    let expected = reference.dump("mozi").await;
    let got = db.dump("mozi").await;
    got.assert_counts_match_rows();
    assert_eq!(got.nodes.len(), expected.nodes.len());
    assert_eq!(got, expected);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.total_communications(), expected.comms.len() as u64);
    assert_eq!(counts.total_nodes(), expected.nodes.len() as u64);
}

// ---------------------------------------------------------------------------------------------
// Rows the database refuses.

on_backends!(refused_row_is_dead_lettered_and_the_rest_commits: postgres => Postgres, mysql => Mysql);

async fn refused_row_is_dead_lettered_and_the_rest_commits(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let ips = [
        "3.0.0.1", "3.0.0.2", "3.0.0.3", "3.0.0.4", "3.0.0.5", "3.0.0.6",
    ];
    let records: Vec<Record> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| rec("mozi", ip, i as i64, LogType::Online))
        .collect();
    let mut batch = enriched(records);
    // A longitude no REAL/FLOAT column holds. (Over-long names no longer count: the store cuts
    // them to their columns, see `over_long_geography_is_cut_to_its_columns`.)
    batch.geo[1] = Geo {
        longitude: Some(1e300),
        ..place_of(&batch.batch.records[1].ip)
    };
    let mut refused = vec![ips[1]];
    if backend == Backend::Mysql {
        // Beyond MySQL's TIMESTAMP range (2038-01-19); PostgreSQL's timestamptz holds it.
        batch.batch.records[3].timestamp = "2040-06-01T00:00:00Z".parse().unwrap();
        refused.push(ips[3]);
    }
    batch.batch.dead_letters.push(DeadLetter {
        source: "test".into(),
        reason: RejectReason::BadIp,
        detail: "\"nope\" is not an IP address".into(),
        raw: r#"{"ip":"nope","timestamp":"2024-01-01 00:00:00","botnet_type":"mozi"}"#.into(),
        rejected_at: Utc::now(),
    });

    let out = store.apply(&batch).await.unwrap();
    assert_eq!(out.dead_letters, 1 + refused.len() as u64);
    assert_eq!(
        out.communications_inserted,
        (ips.len() - refused.len()) as u64
    );

    let d = db.dump("mozi").await;
    let stored: Vec<&str> = d.nodes.iter().map(|n| n.ip.as_str()).collect();
    let expected: Vec<&str> = ips
        .iter()
        .copied()
        .filter(|ip| !refused.contains(ip))
        .collect();
    assert_eq!(stored, expected);
    d.assert_counts_match_rows();

    let letters = store.dead_letters(10, None).await.unwrap();
    assert_eq!(letters.len(), 1 + refused.len());
    let mut rejected_ips: Vec<String> = letters
        .iter()
        .filter(|l| l.letter.reason == RejectReason::StoreRejected)
        .map(|l| {
            // The detail names the table that refused the row, or the range it is outside.
            let d = &l.letter.detail;
            assert!(
                d.contains("botnet_nodes_mozi") || d.contains("TIMESTAMP"),
                "{d}"
            );
            let r: Record = serde_json::from_str(&l.letter.raw).unwrap();
            r.ip.to_string()
        })
        .collect();
    rejected_ips.sort();
    assert_eq!(rejected_ips, refused);
    assert!(letters
        .iter()
        .any(|l| l.letter.reason == RejectReason::BadIp && l.letter.raw.contains("nope")));
    // Newest first, and paging by id works.
    assert!(letters.windows(2).all(|w| w[0].id > w[1].id));
    let older = store.dead_letters(10, Some(letters[0].id)).await.unwrap();
    assert_eq!(older.len(), letters.len() - 1);

    let counts = store.counts().await.unwrap();
    assert_eq!(counts.dead_letters.get("bad_ip"), Some(&1));
    assert_eq!(
        counts.dead_letters.get("store_rejected"),
        Some(&(refused.len() as u64))
    );
    assert_eq!(counts.total_nodes(), expected.len() as u64);

    // Replaying the same batch is a no-op for the rows, and refuses the same records again.
    let again = store.apply(&batch).await.unwrap();
    assert_eq!(again.communications_inserted, 0);
    assert_eq!(db.dump("mozi").await, d);
}

// ---------------------------------------------------------------------------------------------
// Every record is accounted for (the pipeline benchmark counts on it).

on_backends!(every_record_is_inserted_duplicate_or_refused: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn every_record_is_inserted_duplicate_or_refused(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let a = rec("mozi", "5.0.0.1", 10, LogType::Online);
    // The same event twice in one batch is one row; the second record is a duplicate.
    let batch = enriched(vec![
        a.clone(),
        a.clone(),
        rec("mozi", "5.0.0.2", 10, LogType::Online),
    ]);
    let out = store.apply(&batch).await.unwrap();
    assert_eq!(
        (out.communications_inserted, out.communications_duplicate),
        (2, 1)
    );
    let again = store.apply(&batch).await.unwrap();
    assert_eq!(
        (
            again.communications_inserted,
            again.communications_duplicate
        ),
        (0, 3)
    );
}

// ---------------------------------------------------------------------------------------------
// Geography that fits its columns: a geodata name longer than its column used to cost its record.

/// 59 characters, from DB-IP City Lite: longer than the legacy `VARCHAR(50)`.
const LONG_CITY: &str = "Norfolk (Joint Expeditionary Base Little Creek-Fort Story)";

on_backends!(over_long_geography_is_cut_to_its_columns: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn over_long_geography_is_cut_to_its_columns(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let ips = ["4.0.0.1", "4.0.0.2", "4.0.0.3"];
    let records: Vec<Record> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| rec("mozi", ip, i as i64, LogType::Online))
        .collect();
    let mut batch = enriched(records);
    let province = "内蒙古自治区".repeat(10);
    for g in &mut batch.geo {
        *g = Geo {
            city: Some(LONG_CITY.into()),
            province: Some(province.as_str().into()),
            isp: Some("i".repeat(300).into()),
            asn: Some(format!("AS{}", "4".repeat(60)).into()),
            ..place_of(&NodeIp::parse("4.0.0.1").unwrap())
        };
    }
    let out = store.apply(&batch).await.unwrap();
    assert_eq!(out.dead_letters, 0);
    assert_eq!(out.communications_inserted, 3);
    let d = db.dump("mozi").await;
    assert_eq!(d.nodes.len(), 3);
    let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    for row in d
        .nodes
        .iter()
        .map(|n| &n.place)
        .chain(d.comms.iter().map(|c| &c.place))
    {
        assert_eq!(row.city.as_deref(), Some(cut(LONG_CITY, 50).as_str()));
        assert_eq!(row.province.as_deref(), Some(cut(&province, 50).as_str()));
        assert_eq!(row.isp.as_deref().map(str::len), Some(255));
        assert_eq!(row.asn.as_deref().map(|s| s.chars().count()), Some(50));
    }
    assert!(store.dead_letters(10, None).await.unwrap().is_empty());
}

on_backends!(issue_17_ipdb_geography_is_cut_to_its_columns: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

/// The new source (an IPDB file) holds a city of 60 and an ISP of 300 characters for 4.0.0.0/24
/// (fixture): enriched by the real lookup, the record lands with both cut, on every backend.
async fn issue_17_ipdb_geography_is_cut_to_its_columns(backend: Backend) {
    use botpipe::enrich::{DatabaseLookup, Lookup, MergeRules};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geo");
    let lookup = DatabaseLookup::open(
        &[fixtures.join("qqwry.ipdb")],
        Some(&fixtures.join("asn.csv")),
        &MergeRules::default(),
        0,
    )
    .unwrap();
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let records: Vec<Record> = ["4.0.0.1", "4.0.0.2"]
        .iter()
        .enumerate()
        .map(|(i, ip)| rec("mozi", ip, i as i64, LogType::Online))
        .collect();
    let geo: Vec<Geo> = records
        .iter()
        .map(|r| lookup.lookup(r.ip.addr()).0)
        .collect();
    assert_eq!(geo[0].city.as_deref().map(|c| c.chars().count()), Some(60));
    assert_eq!(geo[0].isp.as_deref().map(|c| c.chars().count()), Some(300));
    let batch = EnrichedBatch {
        batch: Batch::new("test", records, vec![]),
        geo,
    };
    let out = store.apply(&batch).await.unwrap();
    assert_eq!(out.dead_letters, 0);
    let d = db.dump("mozi").await;
    assert_eq!(d.nodes.len(), 2);
    for row in d
        .nodes
        .iter()
        .map(|n| &n.place)
        .chain(d.comms.iter().map(|c| &c.place))
    {
        assert_eq!(row.country.as_deref(), Some("中国"));
        assert_eq!(row.province.as_deref(), Some("广西"));
        assert_eq!(row.city.as_deref(), Some("南宁".repeat(25).as_str()));
        assert_eq!(
            row.isp.as_deref(),
            Some(
                "电信"
                    .repeat(150)
                    .chars()
                    .take(255)
                    .collect::<String>()
                    .as_str()
            )
        );
        assert!(row.is_china);
    }
}

// ---------------------------------------------------------------------------------------------
// Overlapping writers never deadlock: workers writing overlapping IPs used to deadlock on
// PostgreSQL and MariaDB (the `issue_18_…` regression tests).

/// Deadlocks the server has counted for this test's database (PostgreSQL) or in all (MariaDB
/// keeps one global counter). On PostgreSQL, call it once the store's connections are closed.
async fn server_deadlocks(db: &TestDb) -> i64 {
    match db.backend {
        Backend::Postgres => {
            // Backends flush their statistics when they exit: wait until the store's
            // connections are gone, so every deadlock they saw is counted.
            crate::helpers::wait::wait_until(
                std::time::Duration::from_secs(20),
                "the store's connections to close",
                || {
                    let url = db.url.clone();
                    async move {
                        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                            .await
                            .unwrap();
                        let others: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        )
                        .fetch_one(&mut c)
                        .await
                        .unwrap();
                        others == 0
                    }
                },
            )
            .await;
            let mut c = db.pg().await;
            sqlx::query_scalar(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
        Backend::Mysql => {
            let mut c = db.mysql().await;
            let (_, n): (String, String) =
                sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            n.parse().unwrap()
        }
        Backend::Sqlite => 0,
    }
}

on_backends!(issue_18_two_overlapping_writers_never_deadlock: postgres => Postgres, mysql => Mysql);
on_backends!(issue_18_four_overlapping_writers_never_deadlock: postgres => Postgres, mysql => Mysql);

async fn issue_18_two_overlapping_writers_never_deadlock(backend: Backend) {
    overlapping_writers_never_deadlock(backend, 2).await;
}

async fn issue_18_four_overlapping_writers_never_deadlock(backend: Backend) {
    overlapping_writers_never_deadlock(backend, 4).await;
}

/// `workers` tasks apply batches over one pool of IPs, each batch in its own random order, with
/// real-world geography (some names longer than their columns): the server counts no deadlock,
/// no apply fails, and the rows equal one SQLite application of everything.
async fn overlapping_writers_never_deadlock(backend: Backend, workers: usize) {
    const BATCHES: usize = 12;
    const RECORDS: usize = 600;
    let db = TestDb::create(backend).await;
    // PostgreSQL counts per database, and this one is new.
    let before = match backend {
        Backend::Postgres => 0,
        _ => server_deadlocks(&db).await,
    };
    let store = db.open_migrated(&["mozi"]).await;
    let pool: Vec<String> = (0..300)
        .map(|i| format!("{}.{}.{}.9", 21 + i % 60, i / 60, i % 11))
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(18 + workers as u64);
    let work: Vec<Vec<EnrichedBatch>> = (0..workers)
        .map(|_| {
            (0..BATCHES)
                .map(|_| {
                    let mut batch = enriched(random_records(&mut rng, &pool, RECORDS, 0.8, 300));
                    for (r, g) in batch.batch.records.iter().zip(&mut batch.geo) {
                        if g.is_known() && r.ip.to_string().ends_with(".3.9") {
                            g.city = Some(LONG_CITY.into());
                        }
                    }
                    batch
                })
                .collect()
        })
        .collect();
    let all: Vec<EnrichedBatch> = work.iter().flatten().cloned().collect();

    let store = Arc::new(store);
    let tasks: Vec<_> = work
        .into_iter()
        .map(|batches| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for b in batches {
                    store.apply(&b).await?;
                }
                Ok::<(), botpipe::store::StoreError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = db.dump("mozi").await;
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
    let deadlocks = server_deadlocks(&db).await - before;

    let reference = TestDb::create(Backend::Sqlite).await;
    let r = reference.open_migrated(&["mozi"]).await;
    for b in &all {
        r.apply(b).await.unwrap();
    }
    let expected = reference.dump("mozi").await;
    got.assert_counts_match_rows();
    assert_eq!(got, expected);
    assert_eq!(deadlocks, 0, "the server counted {deadlocks} deadlocks");
}

// ---------------------------------------------------------------------------------------------
// In-place upgrades of the legacy shapes.

/// Which legacy traits a fixture table has.
#[derive(Debug, Clone, Copy, Default)]
struct Legacy {
    /// `status` without `cleaned`.
    enum_without_cleaned: bool,
    /// No `cleaned_time` column.
    no_cleaned_time: bool,
    /// `log_time` and `created_at` instead of `active_time` and `created_time`.
    old_names: bool,
    /// Communications unique on `(ip, communication_time)`.
    old_key: bool,
}

const ALL_LEGACY: Legacy = Legacy {
    enum_without_cleaned: true,
    no_cleaned_time: true,
    old_names: true,
    old_key: true,
};

/// The legacy fixtures: one type per trait, and one with all of them.
const LEGACY_TYPES: [(&str, Legacy); 5] = [
    ("asruex", ALL_LEGACY),
    (
        "mozi",
        Legacy {
            enum_without_cleaned: true,
            no_cleaned_time: false,
            old_names: false,
            old_key: false,
        },
    ),
    (
        "andromeda",
        Legacy {
            enum_without_cleaned: false,
            no_cleaned_time: true,
            old_names: false,
            old_key: false,
        },
    ),
    (
        "moobot",
        Legacy {
            enum_without_cleaned: false,
            no_cleaned_time: false,
            old_names: true,
            old_key: false,
        },
    ),
    (
        "ramnit",
        Legacy {
            enum_without_cleaned: false,
            no_cleaned_time: false,
            old_names: false,
            old_key: true,
        },
    ),
];

fn legacy_ddl(backend: Backend, t: &str, l: Legacy) -> Vec<String> {
    let (n, c) = (
        format!("botnet_nodes_{t}"),
        format!("botnet_communications_{t}"),
    );
    let active = if l.old_names {
        "log_time"
    } else {
        "active_time"
    };
    let created = if l.old_names {
        "created_at"
    } else {
        "created_time"
    };
    let statuses = if l.enum_without_cleaned {
        "'active','inactive'"
    } else {
        "'active','inactive','cleaned'"
    };
    let key = if l.old_key {
        "ip, communication_time"
    } else {
        "ip, communication_time, event_type"
    };
    let mut out = Vec::new();
    match backend {
        Backend::Mysql => {
            let cleaned = if l.no_cleaned_time {
                ""
            } else {
                "cleaned_time TIMESTAMP NULL DEFAULT NULL,"
            };
            out.push(format!(
                "CREATE TABLE {n} (
                    id INT AUTO_INCREMENT PRIMARY KEY,
                    ip VARCHAR(15) NOT NULL,
                    longitude FLOAT, latitude FLOAT,
                    country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
                    isp VARCHAR(255), asn VARCHAR(50),
                    status ENUM({statuses}) DEFAULT 'active',
                    {active} TIMESTAMP NULL DEFAULT NULL,
                    first_seen TIMESTAMP NULL DEFAULT NULL,
                    last_seen TIMESTAMP NULL DEFAULT NULL,
                    {cleaned}
                    communication_count INT DEFAULT 0,
                    {created} TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    updated_at TIMESTAMP NULL DEFAULT NULL,
                    is_china BOOLEAN DEFAULT FALSE,
                    INDEX idx_location (country, province, city), INDEX idx_status (status),
                    UNIQUE KEY idx_unique_ip (ip)
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
            ));
            out.push(format!(
                "CREATE TABLE {c} (
                    id BIGINT AUTO_INCREMENT PRIMARY KEY,
                    node_id INT NOT NULL,
                    ip VARCHAR(15) NOT NULL,
                    communication_time TIMESTAMP NOT NULL,
                    received_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
                    longitude FLOAT, latitude FLOAT,
                    country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
                    isp VARCHAR(255), asn VARCHAR(50),
                    event_type VARCHAR(50),
                    status VARCHAR(50) DEFAULT 'active',
                    is_china BOOLEAN DEFAULT FALSE,
                    UNIQUE KEY idx_unique_communication ({key}),
                    INDEX idx_node_id (node_id),
                    CONSTRAINT fk_node_{t} FOREIGN KEY (node_id) REFERENCES {n}(id) ON DELETE RESTRICT
                ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
            ));
        }
        Backend::Postgres => {
            let cleaned = if l.no_cleaned_time {
                ""
            } else {
                "cleaned_time TIMESTAMP,"
            };
            // One fixture uses a PostgreSQL enum type, the others a CHECK.
            let status = if l.enum_without_cleaned && t == "asruex" {
                out.push(format!("CREATE TYPE {t}_status AS ENUM ({statuses})"));
                format!("status {t}_status DEFAULT 'active'")
            } else {
                format!("status VARCHAR(16) DEFAULT 'active' CHECK (status IN ({statuses}))")
            };
            out.push(format!(
                "CREATE TABLE {n} (
                    id SERIAL PRIMARY KEY,
                    ip VARCHAR(15) NOT NULL,
                    longitude REAL, latitude REAL,
                    country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
                    isp VARCHAR(255), asn VARCHAR(50),
                    {status},
                    {active} TIMESTAMP,
                    first_seen TIMESTAMP,
                    last_seen TIMESTAMP,
                    {cleaned}
                    communication_count INT DEFAULT 0,
                    {created} TIMESTAMP DEFAULT now(),
                    updated_at TIMESTAMP,
                    is_china BOOLEAN DEFAULT FALSE,
                    CONSTRAINT {t}_ip_key UNIQUE (ip)
                )"
            ));
            out.push(format!(
                "CREATE TABLE {c} (
                    id BIGSERIAL PRIMARY KEY,
                    node_id INT NOT NULL REFERENCES {n}(id),
                    ip VARCHAR(15) NOT NULL,
                    communication_time TIMESTAMP NOT NULL,
                    received_at TIMESTAMP DEFAULT now(),
                    longitude REAL, latitude REAL,
                    country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
                    isp VARCHAR(255), asn VARCHAR(50),
                    event_type VARCHAR(50),
                    status VARCHAR(50) DEFAULT 'active',
                    is_china BOOLEAN DEFAULT FALSE,
                    CONSTRAINT {t}_comm_key UNIQUE ({key})
                )"
            ));
            if l.old_key {
                // A legacy key that is a bare unique index, not a constraint.
                out.pop();
                out.push(format!(
                    "CREATE TABLE {c} (
                        id BIGSERIAL PRIMARY KEY,
                        node_id INT NOT NULL REFERENCES {n}(id),
                        ip VARCHAR(15) NOT NULL,
                        communication_time TIMESTAMP NOT NULL,
                        received_at TIMESTAMP DEFAULT now(),
                        longitude REAL, latitude REAL,
                        country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
                        isp VARCHAR(255), asn VARCHAR(50),
                        event_type VARCHAR(50),
                        status VARCHAR(50) DEFAULT 'active',
                        is_china BOOLEAN DEFAULT FALSE
                    )"
                ));
                out.push(format!("CREATE UNIQUE INDEX {t}_comm_key ON {c} ({key})"));
            }
        }
        Backend::Sqlite => unreachable!("SQLite has no legacy deployments"),
    }
    // Two legacy nodes with history: one 'inactive' (a value botpipe never writes), one active.
    out.push(format!(
        "INSERT INTO {n} (ip, country, city, longitude, latitude, status, {active}, first_seen,
            last_seen, communication_count, {created}, updated_at, is_china)
         VALUES ('1.2.3.4', '中国', '深圳', 113.5, 22.5, 'inactive', '{a}', '{f}', '{a}', 2, '{cr}', '{a}', TRUE),
                ('5.6.7.8', 'Germany', 'Berlin', 13.5, 52.5, 'active', '{f}', '{f}', '{f}', 1, '{cr}', '{f}', FALSE)",
        a = text(-3600),
        f = text(-7200),
        cr = "2023-06-01 00:00:00",
    ));
    out.push(format!(
        "INSERT INTO {c} (node_id, ip, communication_time, country, city, event_type, status, is_china)
         SELECT id, ip, first_seen, country, city, 'remote_upload', 'active', is_china FROM {n}"
    ));
    out.push(format!(
        "INSERT INTO {c} (node_id, ip, communication_time, country, city, event_type, status, is_china)
         SELECT id, ip, last_seen, country, city, 'remote_upload', 'active', is_china FROM {n}
         WHERE ip = '1.2.3.4'"
    ));
    out
}

on_backends!(legacy_tables_are_upgraded_in_place_without_losing_rows: postgres => Postgres, mysql => Mysql);

async fn legacy_tables_are_upgraded_in_place_without_losing_rows(backend: Backend) {
    let db = TestDb::create(backend).await;
    for (t, l) in LEGACY_TYPES {
        let ddl = legacy_ddl(backend, t, l);
        db.exec(&ddl.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
    }
    let types: Vec<&str> = LEGACY_TYPES
        .iter()
        .map(|(t, _)| *t)
        .chain(["fodcha"])
        .collect();

    // Two processes start at once: the lock serialises them, both succeed.
    let (a, b) = (db.open().await, db.open().await);
    let set = type_set(&types);
    let (ra, rb) = tokio::join!(a.migrate(&set), b.migrate(&set));
    ra.unwrap();
    rb.unwrap();
    // And again: nothing left to do.
    a.migrate(&set).await.unwrap();

    let recorded = db
        .query_strings(match backend {
            Backend::Postgres => {
                "SELECT scope || ':' || COUNT(*)::text FROM botpipe_schema_migrations
                 GROUP BY scope ORDER BY scope"
            }
            _ => {
                "SELECT CONCAT(scope, ':', COUNT(*)) FROM botpipe_schema_migrations
                 GROUP BY scope ORDER BY scope"
            }
        })
        .await;
    // The legacy types are upgraded; fodcha, allowed but never seen, gets no tables yet.
    let mut expected: Vec<String> = types
        .iter()
        .filter(|t| **t != "fodcha")
        .map(|t| format!("{t}:9"))
        .collect();
    expected.push("botpipe:2".into());
    expected.sort();
    assert_eq!(recorded, expected);
    assert!(!a.counts().await.unwrap().nodes.contains_key("fodcha"));

    for t in &types {
        let legacy = *t != "fodcha";
        if !legacy {
            continue;
        }
        let d = db.dump(t).await;
        // Rows intact, legacy values under their current names.
        assert_eq!(d.nodes.len(), 2, "{t}");
        assert_eq!(d.comms.len(), 3, "{t}");
        let n = d.node("1.2.3.4");
        assert_eq!(n.status.as_deref(), Some("inactive"), "{t}");
        assert_eq!(n.active_time, Some(text(-3600)), "{t}");
        assert_eq!(n.first_seen, Some(text(-7200)), "{t}");
        assert_eq!(n.cleaned_time, None, "{t}");
        assert_eq!(n.communication_count, Some(2), "{t}");
        assert_eq!(n.place.city.as_deref(), Some("深圳"), "{t}");
        assert_eq!(n.place.longitude, Some(113.5), "{t}");
        let created = match backend {
            Backend::Postgres => {
                db.query_strings(&format!(
                    "SELECT to_char(created_time, 'YYYY-MM-DD') FROM botnet_nodes_{t} WHERE ip = '1.2.3.4'"
                ))
                .await
            }
            _ => {
                db.query_strings(&format!(
                    "SELECT DATE_FORMAT(created_time, '%Y-%m-%d') FROM botnet_nodes_{t} WHERE ip = '1.2.3.4'"
                ))
                .await
            }
        };
        assert_eq!(created, ["2023-06-01"], "{t}");
        assert_schema_is_current(&db, t).await;
    }

    // New batches on the upgraded tables: a cleanup (needs the new status value and
    // cleaned_time), an online and a cleanup in the same second (needs the new key), an IPv6
    // node (needs the wider ip column).
    let v6 = "2400:cb00:2048:1::6810:1234";
    for t in &types {
        apply(
            &a,
            vec![
                rec(t, "1.2.3.4", 10, LogType::Online),
                rec(t, "5.6.7.8", 20, LogType::Online),
                rec(t, "5.6.7.8", 20, LogType::Cleanup),
                rec(t, v6, 30, LogType::Online),
            ],
        )
        .await;
        let d = db.dump(t).await;
        let legacy = *t != "fodcha";
        let n = d.node("1.2.3.4");
        assert_eq!(n.status.as_deref(), Some("active"), "{t}");
        assert_eq!(n.last_seen, Some(text(10)), "{t}");
        if legacy {
            assert_eq!(n.first_seen, Some(text(-7200)), "{t}");
            // Online rows only, as the legacy writer counted: 2 + 1, and 1 + 1 (its cleanup
            // is stored, not counted).
            assert_eq!(n.communication_count, Some(3), "{t}");
            assert_eq!(d.node("5.6.7.8").communication_count, Some(2), "{t}");
        }
        let m = d.node("5.6.7.8");
        assert_eq!(m.status.as_deref(), Some("cleaned"), "{t}");
        assert_eq!(m.cleaned_time, Some(text(20)), "{t}");
        assert_eq!(d.node(v6).communication_count, Some(1), "{t}");
        d.assert_counts_match_rows();
    }
}

async fn assert_schema_is_current(db: &TestDb, t: &str) {
    let n = format!("botnet_nodes_{t}");
    let c = format!("botnet_communications_{t}");
    let (cols_sql, ip_len_sql) = match db.backend {
        Backend::Postgres => (
            format!(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = '{n}' ORDER BY 1"
            ),
            format!(
                "SELECT table_name::text || ':' || character_maximum_length::text
                 FROM information_schema.columns WHERE table_schema = current_schema()
                 AND table_name IN ('{n}', '{c}') AND column_name = 'ip' ORDER BY 1"
            ),
        ),
        _ => (
            format!(
                "SELECT CAST(column_name AS CHAR) FROM information_schema.columns
                 WHERE table_schema = DATABASE() AND table_name = '{n}' ORDER BY 1"
            ),
            format!(
                "SELECT CONCAT(table_name, ':', character_maximum_length)
                 FROM information_schema.columns WHERE table_schema = DATABASE()
                 AND table_name IN ('{n}', '{c}') AND column_name = 'ip' ORDER BY 1"
            ),
        ),
    };
    let cols = db.query_strings(&cols_sql).await;
    for want in [
        "active_time",
        "created_time",
        "cleaned_time",
        "status",
        "updated_at",
    ] {
        assert!(cols.iter().any(|c| c == want), "{n} lacks {want}: {cols:?}");
    }
    for gone in ["log_time", "created_at"] {
        assert!(!cols.iter().any(|c| c == gone), "{n} still has {gone}");
    }
    assert_eq!(
        db.query_strings(&ip_len_sql).await,
        [format!("{c}:45"), format!("{n}:45")]
    );
    let uniques = match db.backend {
        Backend::Postgres => {
            db.query_strings(&format!(
                "SELECT string_agg(a.attname::text, ',' ORDER BY k.ord)
                 FROM pg_index x
                 CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                 WHERE x.indrelid = '{c}'::regclass AND x.indisunique AND NOT x.indisprimary
                 GROUP BY x.indexrelid"
            ))
            .await
        }
        _ => {
            db.query_strings(&format!(
                "SELECT CAST(GROUP_CONCAT(column_name ORDER BY seq_in_index) AS CHAR)
                 FROM information_schema.statistics
                 WHERE table_schema = DATABASE() AND table_name = '{c}' AND non_unique = 0
                   AND index_name <> 'PRIMARY'
                 GROUP BY index_name"
            ))
            .await
        }
    };
    assert_eq!(uniques, ["ip,communication_time,event_type"], "{c}");
}

// ---------------------------------------------------------------------------------------------
// Transient failures.

on_backends!(batches_still_apply_after_the_server_kills_every_connection: postgres => Postgres, mysql => Mysql);

async fn batches_still_apply_after_the_server_kills_every_connection(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    apply(&store, vec![rec("mozi", "4.0.0.1", 0, LogType::Online)]).await;
    match backend {
        Backend::Postgres => {
            let mut admin = db.pg().await;
            admin
                .execute(
                    format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = '{}' AND pid <> pg_backend_pid()",
                        db.name
                    )
                    .as_str(),
                )
                .await
                .unwrap();
        }
        _ => {
            let mut admin = db.mysql().await;
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT CAST(id AS SIGNED) FROM information_schema.processlist
                 WHERE db = DATABASE() AND id <> CONNECTION_ID()",
            )
            .fetch_all(&mut admin)
            .await
            .unwrap();
            assert!(!ids.is_empty(), "the store holds a connection");
            for id in ids {
                admin.execute(format!("KILL {id}").as_str()).await.unwrap();
            }
        }
    }
    apply(&store, vec![rec("mozi", "4.0.0.1", 60, LogType::Online)]).await;
    let d = db.dump("mozi").await;
    assert_eq!(d.node("4.0.0.1").communication_count, Some(2));
    store.ping().await.unwrap();
}

on_backends!(no_server an_unreachable_server_is_a_retryable_error: postgres => Postgres, mysql => Mysql);

async fn an_unreachable_server_is_a_retryable_error(backend: Backend) {
    // A port nothing listens on: bind one, then close it.
    let port = crate::helpers::free_addr().port();
    let settings = botpipe::config::StoreSettings {
        kind: match backend {
            Backend::Postgres => botpipe::config::StoreKind::Postgres(
                format!("postgres://postgres@127.0.0.1:{port}/x").into(),
            ),
            _ => {
                botpipe::config::StoreKind::Mysql(format!("mysql://root@127.0.0.1:{port}/x").into())
            }
        },
        password: None,
        migrate_on_start: true,
        max_connections: 1,
        timezone: botpipe::store::clock::DEFAULT_TIMEZONE,
    };
    let store = botpipe::store::open(&settings).await.unwrap();
    let e = store.ping().await.unwrap_err();
    assert!(e.is_retryable(), "{e:#?}");
    assert!(e.to_string().contains(&port.to_string()), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Configuration and the command line.

#[tokio::test]
async fn mysql_password_comes_from_the_secret_source() {
    if !Backend::Mysql.available() {
        return;
    }
    let db = TestDb::create(Backend::Mysql).await;
    let user = format!("bp_{}", &db.name[db.name.len() - 12..]);
    let password = "s3cret-for-test";
    db.exec(&[
        &format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
        &format!("CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'"),
        &format!("GRANT ALL ON {}.* TO '{user}'@'%'", db.name),
        &format!("GRANT ALL ON {}.* TO '{user}'@'localhost'", db.name),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, format!("{password}\n")).unwrap();
    let url = format!("mysql://{user}@127.0.0.1:3306/{}", db.name);
    let mut settings = db.settings();
    settings.kind = botpipe::config::StoreKind::Mysql(url.clone().into());
    settings.password = Some(botpipe::config::SecretSource::File(secret));
    let store = botpipe::store::open(&settings).await.unwrap();
    let result = store.migrate(&type_set(&["mozi"])).await;

    settings.password = None;
    let without = botpipe::store::open(&settings).await.unwrap();
    let denied = without.ping().await.unwrap_err();
    db.exec(&[
        &format!("DROP USER '{user}'@'%'"),
        &format!("DROP USER '{user}'@'localhost'"),
    ])
    .await;
    result.unwrap();
    assert!(!denied.to_string().contains(password));
}

/// Issue 15: `botpipe migrate` creates botpipe's own tables but no per-type table (the legacy
/// aggregator treats an empty table as a failure); the first record of a type creates its
/// tables.
#[tokio::test]
async fn issue_15_botpipe_migrate_creates_no_type_tables_until_a_type_is_seen() {
    if !services::available([Service::MariaDb, Service::Postgres]) {
        return;
    }
    for backend in [Backend::Mysql, Backend::Postgres] {
        let db = TestDb::create(backend).await;
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .arg("migrate")
            .env("BOTPIPE_STORE__URL", &db.url)
            .env("BOTPIPE_BOTNET__ALLOWED_TYPES", r#"["mozi", "fodcha"]"#)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Applied"), "{backend}: {stdout}");
        assert!(
            stdout.contains("created when their first record arrives"),
            "{backend}: {stdout}"
        );
        let store = db.open().await;
        assert!(store.counts().await.unwrap().nodes.is_empty(), "{backend}");
        apply(&store, vec![rec("mozi", "1.2.3.4", 0, LogType::Online)]).await;
        let counts = store.counts().await.unwrap();
        assert_eq!(
            counts.nodes.keys().cloned().collect::<Vec<_>>(),
            ["mozi"],
            "{backend}"
        );
        // Run again: nothing to apply, and only the existing type's tables are upgraded.
        let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_botpipe"))
            .arg("migrate")
            .env("BOTPIPE_STORE__URL", &db.url)
            .env("BOTPIPE_BOTNET__ALLOWED_TYPES", r#"["mozi", "fodcha"]"#)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&again.stdout);
        assert!(stdout.contains("Nothing to migrate"), "{backend}: {stdout}");
        assert!(
            stdout.contains("1 botnet types with tables (mozi)"),
            "{backend}: {stdout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy semantics and geography (issues 12, 13 and 15).

on_backends!(issue_15_migrate_on_an_empty_database_creates_no_type_tables: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn issue_15_migrate_on_an_empty_database_creates_no_type_tables(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open().await;
    let report = store.migrate(&type_set(&["mozi", "fodcha"])).await.unwrap();
    assert!(report.types.is_empty(), "{report:?}");
    assert!(store.counts().await.unwrap().nodes.is_empty());
    apply(&store, vec![rec("fodcha", "1.2.3.4", 0, LogType::Online)]).await;
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.nodes.keys().cloned().collect::<Vec<_>>(), ["fodcha"]);
    // A process that starts later upgrades the existing type and still creates no other.
    let report = db
        .open()
        .await
        .migrate(&type_set(&["mozi", "fodcha"]))
        .await
        .unwrap();
    assert_eq!(report.types, ["fodcha"]);
    assert!(report.applied.is_empty(), "{report:?}");
}

on_backends!(issue_15_unknown_coordinates_are_stored_as_zero_so_the_node_stays_listed: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn issue_15_unknown_coordinates_are_stored_as_zero_so_the_node_stays_listed(
    backend: Backend,
) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let ip = "1.0.0.1";
    let with = |geo: Geo, offset: i64| EnrichedBatch {
        batch: Batch::new(
            "test",
            vec![rec("mozi", ip, offset, LogType::Online)],
            vec![],
        ),
        geo: vec![geo],
    };
    store.apply(&with(Geo::unknown(), 0)).await.unwrap();
    let d = db.dump("mozi").await;
    let coords = |p: &crate::helpers::db::Place| (p.longitude, p.latitude);
    assert_eq!(coords(&d.node(ip).place), (Some(0.0), Some(0.0)));
    assert!(d
        .comms
        .iter()
        .all(|c| coords(&c.place) == (Some(0.0), Some(0.0))));
    // A known lookup replaces them; a later unknown one keeps them.
    let known = place_of(&NodeIp::parse(ip).unwrap());
    store.apply(&with(known.clone(), 10)).await.unwrap();
    store.apply(&with(Geo::unknown(), 20)).await.unwrap();
    let d = db.dump("mozi").await;
    assert_eq!(coords(&d.node(ip).place), (known.longitude, known.latitude));
}

on_backends!(issue_13_a_known_lookup_replaces_the_whole_location: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn issue_13_a_known_lookup_replaces_the_whole_location(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let ip = "1.0.0.1";
    let berlin = Geo {
        continent: Some("欧洲".into()),
        country: Some("德国".into()),
        province: Some("Berlin".into()),
        city: Some("Berlin".into()),
        isp: Some("Telekom".into()),
        asn: Some("AS3320".into()),
        longitude: Some(13.5),
        latitude: Some(52.5),
        is_china: false,
    };
    // The IP moved: the new lookup knows the country and province but no city, ISP or ASN.
    let guangdong = Geo {
        continent: Some("亚洲".into()),
        country: Some("中国".into()),
        province: Some("广东".into()),
        city: None,
        isp: None,
        asn: None,
        longitude: None,
        latitude: None,
        is_china: true,
    };
    for (geo, offset) in [(berlin, 0), (guangdong, 10)] {
        let batch = EnrichedBatch {
            batch: Batch::new(
                "test",
                vec![rec("mozi", ip, offset, LogType::Online)],
                vec![],
            ),
            geo: vec![geo],
        };
        store.apply(&batch).await.unwrap();
    }
    let n = db.dump("mozi").await.node(ip).place.clone();
    assert_eq!(n.country.as_deref(), Some("中国"));
    assert_eq!(n.province.as_deref(), Some("广东"));
    assert_eq!(n.city, None, "a new country must not keep the old city");
    assert_eq!((n.longitude, n.latitude), (Some(0.0), Some(0.0)));
    assert!(n.is_china);
    // The ISP and the ASN are facts of their own: kept until a lookup knows them.
    assert_eq!(n.isp.as_deref(), Some("Telekom"));
    assert_eq!(n.asn.as_deref(), Some("AS3320"));
}

on_backends!(issue_15_active_time_never_falls_below_last_seen: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn issue_15_active_time_never_falls_below_last_seen(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let ip = "1.0.0.1";
    apply(&store, vec![rec("mozi", ip, 100, LogType::Online)]).await;
    // A migrated legacy row: active_time NULL beside a known last_seen.
    db.exec(&["UPDATE botnet_nodes_mozi SET active_time = NULL"])
        .await;
    apply(&store, vec![rec("mozi", ip, 50, LogType::Online)]).await;
    let n = db.dump("mozi").await.node(ip).clone();
    assert_eq!(n.last_seen, Some(text(100)));
    assert_eq!(
        n.active_time,
        Some(text(100)),
        "a replayed old event set it below last_seen"
    );
}

on_backends!(issue_12_replayed_batch_writes_its_dead_letters_once: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

async fn issue_12_replayed_batch_writes_its_dead_letters_once(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    let mut batch = enriched(vec![rec("mozi", "1.0.0.1", 0, LogType::Online)]);
    for i in 0..3 {
        batch.batch.dead_letters.push(DeadLetter {
            source: "test".into(),
            reason: RejectReason::BadIp,
            detail: format!("bad ip {i}"),
            raw: format!(r#"{{"ip":"nope{i}"}}"#),
            rejected_at: Utc::now(),
        });
    }
    // A hand-off that timed out and committed later, then drained again from the spool: the
    // same batch (same id) twice, and a third time in another process.
    store.apply(&batch).await.unwrap();
    store.apply(&batch).await.unwrap();
    db.open_migrated(&["mozi"])
        .await
        .apply(&batch)
        .await
        .unwrap();
    let letters = store.dead_letters(100, None).await.unwrap();
    assert_eq!(letters.len(), 3, "{letters:#?}");
    // Another batch with the same letters is other letters.
    let mut other = batch.clone();
    other.batch.id = botpipe::record::BatchId::new();
    store.apply(&other).await.unwrap();
    assert_eq!(store.dead_letters(100, None).await.unwrap().len(), 6);
}

on_backends!(issue_16_dead_letters_are_counted_per_source_and_reason: sqlite => Sqlite, postgres => Postgres, mysql => Mysql);

/// `botpipe dlq list` counts every dead letter by source and reason in the database, and
/// `dlq replay` asks the store first whether it could hold a record at all.
async fn issue_16_dead_letters_are_counted_per_source_and_reason(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = db.open_migrated(&["mozi"]).await;
    assert_eq!(store.dead_letter_counts().await.unwrap(), Vec::new());
    for (source, reason, n) in [
        ("east", RejectReason::BadIp, 3),
        ("east", RejectReason::UnknownBotnetType, 2),
        ("push:relay", RejectReason::BadIp, 1),
    ] {
        let mut batch = enriched(Vec::new());
        batch.batch.source = source.into();
        for i in 0..n {
            batch.batch.dead_letters.push(DeadLetter {
                source: source.into(),
                reason,
                detail: format!("letter {i}"),
                raw: "{}".into(),
                rejected_at: Utc::now(),
            });
        }
        store.apply(&batch).await.unwrap();
    }
    let mut counts: Vec<(String, String, u64)> = store
        .dead_letter_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.source, c.reason, c.count))
        .collect();
    counts.sort();
    let want = |s: &str, r: &str, n: u64| (s.to_owned(), r.to_owned(), n);
    assert_eq!(
        counts,
        [
            want("east", "bad_ip", 3),
            want("east", "unknown_botnet_type", 2),
            want("push:relay", "bad_ip", 1),
        ]
    );

    let late = rec("mozi", "1.0.0.1", 20 * 365 * 86_400, LogType::Online);
    let refusal = store.refusal(&late);
    assert_eq!(refusal.is_some(), backend == Backend::Mysql, "{refusal:?}");
    assert_eq!(
        store.refusal(&rec("mozi", "1.0.0.1", 0, LogType::Online)),
        None
    );
}
