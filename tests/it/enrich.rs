//! Enrichment end to end without the worker: the fixture databases opened through
//! `botpipe::enrich::open`, a batch enriched record by record, applied by the real SQLite store,
//! and the stored node and communication rows checked for Chinese and English names. Also: files
//! replaced on disk while lookups run are swapped in by the watch loop with no failed lookup.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use botpipe::config::GeoSettings;
use botpipe::enrich::{self, AnyLookup, Geo, Lookup, LookupResult};
use botpipe::record::{Batch, BotnetType, LogType, NodeIp, Record};
use botpipe::store::{EnrichedBatch, SqliteStore, Store};
use chrono::{TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use crate::helpers::{init_test_log, wait_until};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geo")
        .join(name)
}

fn record(ip: &str, minute: u32, log_type: LogType) -> Record {
    Record {
        ip: NodeIp::parse(ip).unwrap(),
        timestamp: Utc.with_ymd_and_hms(2026, 3, 3, 16, minute, 0).unwrap(),
        botnet_type: BotnetType::parse("mozi").unwrap(),
        log_type,
        seq_id: None,
    }
}

/// (country, province, city, continent, isp, asn, longitude, latitude, is_china)
type GeoRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
    bool,
);

fn geo_row(conn: &rusqlite::Connection, table: &str, ip: &str) -> Vec<GeoRow> {
    let sql = format!(
        "SELECT country, province, city, continent, isp, asn, longitude, latitude, is_china
         FROM {table} WHERE ip = ?1 ORDER BY id"
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    stmt.query_map([ip], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get::<_, i64>(8)? != 0,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[tokio::test]
async fn enriched_batch_lands_with_chinese_and_english_names() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    // GeoIP2 first (Chinese names), then the flat files for what it does not know, then ASN.
    let settings = GeoSettings {
        city: vec![
            fixture("geoip2-city.mmdb"),
            fixture("flat-city-ipv4.mmdb"),
            fixture("flat-city-ipv6.mmdb"),
        ],
        asn: Some(fixture("asn.csv")),
        discovered: false,
        ..GeoSettings::default()
    };
    let lookup = enrich::open(&settings, dir.path()).unwrap();
    assert!(matches!(lookup, AnyLookup::Databases(_)));

    let records = vec![
        record("14.19.132.125", 1, LogType::Online),
        record("14.19.132.125", 2, LogType::Online),
        record("110.16.0.7", 3, LogType::Cleanup),
        record("8.8.8.8", 4, LogType::Online),
        record("61.244.5.5", 5, LogType::Online),
        record("240e:3a1::1", 6, LogType::Online),
        record("9.9.9.9", 7, LogType::Online),
    ];
    let batch = Batch::new("geo-test", records, Vec::new());
    let (geo, results): (Vec<Geo>, Vec<LookupResult>) = batch
        .records
        .iter()
        .map(|r| lookup.lookup(r.ip.addr()))
        .unzip();
    assert_eq!(
        results.iter().filter(|r| **r == LookupResult::Hit).count(),
        6
    );
    assert_eq!(results[6], LookupResult::Unknown);

    let db_path = dir.path().join("store.sqlite");
    let store = SqliteStore::open(&db_path).unwrap();
    let types: BTreeSet<BotnetType> = [BotnetType::parse("mozi").unwrap()].into();
    store.migrate(&types).await.unwrap();
    let outcome = store.apply(&EnrichedBatch { batch, geo }).await.unwrap();
    assert_eq!(outcome.communications_inserted, 7);

    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let nodes = "botnet_nodes_mozi";
    let comms = "botnet_communications_mozi";

    let shenzhen: GeoRow = (
        s("中国"),
        s("广东"),
        s("深圳"),
        s("亚洲"),
        s("Chinanet"),
        s("AS4134"),
        Some(114.0683),
        Some(22.5455),
        true,
    );
    assert_eq!(
        geo_row(&conn, nodes, "14.19.132.125"),
        vec![shenzhen.clone()]
    );
    assert_eq!(
        geo_row(&conn, comms, "14.19.132.125"),
        vec![shenzhen.clone(), shenzhen]
    );

    // 内蒙古自治区 / 呼和浩特 from GeoIP2, normalised; a cleanup creates the node too.
    let hohhot = geo_row(&conn, nodes, "110.16.0.7");
    assert_eq!(
        (
            hohhot[0].0.as_deref(),
            hohhot[0].1.as_deref(),
            hohhot[0].2.as_deref()
        ),
        (Some("中国"), Some("内蒙古"), Some("呼和浩特"))
    );
    assert_eq!(hohhot[0].5.as_deref(), Some("AS4837"));
    assert_eq!(geo_row(&conn, comms, "110.16.0.7"), hohhot);

    // No zh-CN names in the database: English.
    let google = geo_row(&conn, nodes, "8.8.8.8");
    assert_eq!(
        (
            google[0].0.as_deref(),
            google[0].1.as_deref(),
            google[0].2.as_deref(),
            google[0].3.as_deref(),
            google[0].8
        ),
        (
            Some("United States"),
            Some("California"),
            Some("Mountain View"),
            Some("North America"),
            false
        )
    );
    assert_eq!(geo_row(&conn, comms, "8.8.8.8"), google);

    // Only the flat file knows it (country HK, English district "Kowloon"): stored the
    // platform's way by default, `[geo] china = "greater"` (issue 17).
    let hk = geo_row(&conn, comms, "61.244.5.5");
    assert_eq!(
        (
            hk[0].0.as_deref(),
            hk[0].1.as_deref(),
            hk[0].3.as_deref(),
            hk[0].8
        ),
        (Some("中国"), Some("香港"), Some("亚洲"), true)
    );

    // IPv6 from GeoIP2 with the ASN CSV's IPv6 ranges.
    let v6 = geo_row(&conn, nodes, "240e:3a1::1");
    assert_eq!(
        (
            v6[0].1.as_deref(),
            v6[0].2.as_deref(),
            v6[0].5.as_deref(),
            v6[0].8
        ),
        (Some("北京"), Some("北京"), Some("AS4134"), true)
    );

    // Unknown: names NULL, coordinates 0.0 (so the node stays in the platform's node list),
    // not China.
    let unknown: GeoRow = (
        None,
        None,
        None,
        None,
        None,
        None,
        Some(0.0),
        Some(0.0),
        false,
    );
    assert_eq!(geo_row(&conn, nodes, "9.9.9.9"), vec![unknown.clone()]);
    assert_eq!(geo_row(&conn, comms, "9.9.9.9"), vec![unknown]);
}

#[tokio::test]
async fn awdb_batch_lands_with_its_chinese_isp() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let settings = GeoSettings {
        city: vec![fixture("awdb-city.awdb")],
        asn: Some(fixture("geolite2-asn.mmdb")),
        discovered: false,
        ..GeoSettings::default()
    };
    let lookup = enrich::open(&settings, dir.path()).unwrap();
    let batch = Batch::new(
        "geo-test",
        vec![record("14.19.132.125", 1, LogType::Online)],
        Vec::new(),
    );
    let geo = batch
        .records
        .iter()
        .map(|r| lookup.lookup(r.ip.addr()).0)
        .collect();
    let db_path = dir.path().join("store.sqlite");
    let store = SqliteStore::open(&db_path).unwrap();
    store
        .migrate(&[BotnetType::parse("mozi").unwrap()].into())
        .await
        .unwrap();
    store.apply(&EnrichedBatch { batch, geo }).await.unwrap();
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let want: GeoRow = (
        s("中国"),
        s("广东"),
        s("深圳"),
        s("亚洲"),
        s("中国电信"),
        s("AS4134"),
        Some(114.057868),
        Some(22.543099),
        true,
    );
    assert_eq!(
        geo_row(&conn, "botnet_nodes_mozi", "14.19.132.125"),
        vec![want.clone()]
    );
    assert_eq!(
        geo_row(&conn, "botnet_communications_mozi", "14.19.132.125"),
        vec![want]
    );
}

/// Replaces `path` the way fetch-geodata.sh does: write beside it, then rename over it.
fn replace(src: &Path, path: &Path) {
    let tmp = path.with_extension("tmp");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_replaced_while_lookups_run_are_swapped_in_without_a_failed_lookup() {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.csv");
    std::fs::copy(fixture("flat-city-ipv4.mmdb"), &city).unwrap();
    std::fs::copy(fixture("asn.csv"), &asn).unwrap();
    let settings = GeoSettings {
        city: vec![city.clone()],
        asn: Some(asn.clone()),
        discovered: false,
        ..GeoSettings::default()
    };
    let AnyLookup::Databases(lookup) = enrich::open(&settings, dir.path()).unwrap() else {
        panic!("expected databases");
    };

    let stop = Arc::new(AtomicBool::new(false));
    let guangzhou = Arc::new(AtomicU64::new(0));
    let shenzhen = Arc::new(AtomicU64::new(0));
    let target: IpAddr = "14.19.132.125".parse().unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (lookup, stop) = (lookup.clone(), stop.clone());
            let (guangzhou, shenzhen) = (guangzhou.clone(), shenzhen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (geo, result) = lookup.lookup(target);
                    assert_eq!(result, LookupResult::Hit, "a lookup failed mid-reload");
                    assert!(geo.asn.is_some(), "ASN lost mid-reload: {geo:?}");
                    match geo.city.as_deref() {
                        Some("Guangzhou") => guangzhou.fetch_add(1, Ordering::Relaxed),
                        Some("深圳") => shenzhen.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected city {other:?}"),
                    };
                }
            })
        })
        .collect();

    let token = CancellationToken::new();
    let watcher = {
        let (lookup, token) = (lookup.clone(), token.clone());
        tokio::spawn(async move { lookup.watch_every(Duration::from_millis(20), token).await })
    };

    let city_is = |want: &'static str| {
        let lookup = lookup.clone();
        move || {
            let lookup = lookup.clone();
            async move { lookup.lookup(target).0.city.as_deref() == Some(want) }
        }
    };
    wait_until(Duration::from_secs(5), "readers running", || {
        let n = guangzhou.load(Ordering::Relaxed);
        async move { n > 100 }
    })
    .await;
    replace(&fixture("geoip2-city.mmdb"), &city);
    wait_until(
        Duration::from_secs(10),
        "the GeoIP2 file swapped in",
        city_is("深圳"),
    )
    .await;
    let seen = shenzhen.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(5), "readers on the new file", || {
        let n = shenzhen.load(Ordering::Relaxed);
        async move { n > seen + 100 }
    })
    .await;
    // Both files at once: the city file back, and a new release of the ASN ranges.
    let new_asn = dir.path().join("new-asn.csv");
    std::fs::write(&new_asn, "14.0.0.0,14.255.255.255,4134,Chinanet 2026-02\n").unwrap();
    replace(&fixture("flat-city-ipv4.mmdb"), &city);
    replace(&new_asn, &asn);
    wait_until(
        Duration::from_secs(10),
        "the flat file swapped back",
        city_is("Guangzhou"),
    )
    .await;
    wait_until(Duration::from_secs(10), "the ASN file swapped", || {
        let lookup = lookup.clone();
        async move { lookup.lookup(target).0.isp.as_deref() == Some("Chinanet 2026-02") }
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a reader thread saw a failed lookup");
    }
    token.cancel();
    watcher.await.unwrap();
    assert!(guangzhou.load(Ordering::Relaxed) > 0 && shenzhen.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn the_running_pipeline_fills_geography_end_to_end() {
    let tc = crate::helpers::spawn_collector(botpipe::demo::Flavor::Botpipe, None).await;
    for (ip, minute) in [("14.19.132.125", 1), ("8.8.8.8", 2), ("9.9.9.9", 3)] {
        tc.collector.push(crate::helpers::wire(
            ip,
            &format!("2026-03-03T16:0{minute}:00"),
            "mozi",
            "online",
        ));
    }
    let ep = crate::helpers::endpoint("geo", &tc.url, Duration::from_millis(100), 100);
    let app = crate::helpers::spawn_app(vec![ep], |s| {
        s.geo = GeoSettings {
            city: vec![fixture("geoip2-city.mmdb"), fixture("flat-city-ipv4.mmdb")],
            asn: Some(fixture("asn.csv")),
            discovered: false,
            ..GeoSettings::default()
        };
    })
    .await;
    let db_path = app.dir.path().join("botpipe.sqlite");
    wait_until(
        Duration::from_secs(30),
        "three geolocated nodes stored",
        || async {
            app.store
                .counts()
                .await
                .map(|c| c.total_communications() == 3)
                .unwrap_or(false)
        },
    )
    .await;
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let shenzhen = geo_row(&conn, "botnet_nodes_mozi", "14.19.132.125");
    assert_eq!(shenzhen[0].0.as_deref(), Some("中国"));
    assert_eq!(shenzhen[0].1.as_deref(), Some("广东"));
    assert_eq!(shenzhen[0].2.as_deref(), Some("深圳"));
    assert!(shenzhen[0].8, "is_china");
    let google = geo_row(&conn, "botnet_nodes_mozi", "8.8.8.8");
    assert!(
        google[0].0.is_some() && !google[0].8,
        "a foreign IP gets a country and is_china false: {google:?}"
    );
    let unknown = geo_row(&conn, "botnet_communications_mozi", "9.9.9.9");
    assert_eq!(unknown[0].0, None, "unknown IPs stay NULL");
    app.stop().await;
}
