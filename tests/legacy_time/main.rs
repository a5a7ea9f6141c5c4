//! Drop-in on a live legacy database (issue 15): botpipe writes its times the way the legacy
//! writer did, so that a replayed legacy event finds its rows and new events land with the
//! wall-clock the legacy would have written, whatever the MariaDB server's zone.
//!
//! In its own test binary because it changes the server's global `time_zone`, which every new
//! connection inherits: cargo runs test binaries one after another, so no other test opens a
//! connection meanwhile, and the tests here run one at a time. The zone is put back afterwards,
//! also when a test fails.

#[path = "../harness/mod.rs"]
mod harness;

use std::collections::BTreeSet;

use botpipe::config::{StoreKind, StoreSettings};
use botpipe::enrich::Geo;
use botpipe::record::{Batch, BotnetType, LogType, NodeIp, Record};
use botpipe::store::{EnrichedBatch, Store};
use chrono::{NaiveDateTime, TimeZone};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor, Row};

use harness::services::{self, Service};

/// The collectors' zone, and so the legacy tables' wall-clock.
const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
/// The MariaDB user `scripts/services.sh` creates where root may not log in over TCP.
const FALLBACK_USER: &str = "botpipe_test";

/// One test at a time: they change the server's global zone.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The legacy schema of one type (the platform's DDL before botpipe: `VARCHAR(15)` IPs, status
/// without `cleaned`, no `cleaned_time`, communications unique on `(ip, communication_time)`).
const LEGACY_DDL: [&str; 2] = [
    "CREATE TABLE botnet_nodes_mozi (
        id INT AUTO_INCREMENT PRIMARY KEY,
        ip VARCHAR(15) NOT NULL COMMENT 'node IP',
        longitude FLOAT, latitude FLOAT,
        country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
        isp VARCHAR(255), asn VARCHAR(50),
        status ENUM('active','inactive') DEFAULT 'active' COMMENT 'infection status',
        active_time TIMESTAMP NULL DEFAULT NULL,
        first_seen TIMESTAMP NULL DEFAULT NULL,
        last_seen TIMESTAMP NULL DEFAULT NULL,
        communication_count INT DEFAULT 0,
        created_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP NULL DEFAULT NULL,
        is_china BOOLEAN DEFAULT FALSE,
        INDEX idx_location (country, province, city), INDEX idx_status (status),
        INDEX idx_first_seen (first_seen), INDEX idx_last_seen (last_seen),
        INDEX idx_is_china (is_china),
        UNIQUE KEY idx_unique_ip (ip)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
    "CREATE TABLE botnet_communications_mozi (
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
        UNIQUE KEY idx_unique_communication (ip, communication_time) COMMENT 'one row per event',
        INDEX idx_node_id (node_id), INDEX idx_communication_time (communication_time),
        INDEX idx_location (country, province, city),
        CONSTRAINT fk_node_mozi FOREIGN KEY (node_id) REFERENCES botnet_nodes_mozi(id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
];

/// Online events as the collectors logged them: IP and naive Asia/Shanghai time.
const EVENTS: [(&str, &str); 5] = [
    ("1.0.0.1", "2026-11-30 08:00:00"),
    ("1.0.0.1", "2026-11-30 09:30:00"),
    ("2.0.0.2", "2026-11-30 23:59:59"),
    ("3.0.0.3", "2026-12-01 00:00:01"),
    ("2.0.0.2", "2026-12-01 06:15:00"),
];

/// The admin URL: root over TCP where root may log in that way, else the fallback user.
async fn admin_url() -> String {
    let configured = Service::MariaDb.admin_url();
    if MySqlConnection::connect(&configured).await.is_ok() {
        return configured;
    }
    let mut fallback = url::Url::parse(&configured).expect("admin URL");
    fallback
        .set_username(FALLBACK_USER)
        .expect("a URL with a host");
    fallback.to_string()
}

fn with_database(admin: &str, db: &str) -> String {
    let mut url = url::Url::parse(admin).expect("admin URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// A session in the server's default zone, as the legacy writer and the dashboards open one.
async fn default_session(url: &str) -> MySqlConnection {
    let opts: MySqlConnectOptions = url.parse().expect("URL");
    MySqlConnection::connect_with(&opts.timezone(None))
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Sets the server's global zone for the life of the value, and puts the old one back.
struct GlobalZone {
    admin: String,
    previous: String,
}

impl GlobalZone {
    async fn set(admin: &str, zone: &str) -> Self {
        let mut c = default_session(admin).await;
        let previous: String = sqlx::query_scalar("SELECT CAST(@@global.time_zone AS CHAR)")
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.execute(format!("SET GLOBAL time_zone = '{zone}'").as_str())
            .await
            .unwrap_or_else(|e| panic!("SET GLOBAL time_zone needs SUPER on {admin}: {e}"));
        Self {
            admin: admin.to_owned(),
            previous,
        }
    }
}

impl Drop for GlobalZone {
    fn drop(&mut self) {
        let (admin, previous) = (self.admin.clone(), self.previous.clone());
        let zone = previous.clone();
        // Drop cannot await: restore on a runtime of its own, on a thread of its own.
        let restored = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut c = default_session(&admin).await;
                c.execute(format!("SET GLOBAL time_zone = '{previous}'").as_str())
                    .await
                    .map(drop)
            })
        })
        .join();
        if !matches!(restored, Ok(Ok(()))) {
            eprintln!("could not restore the MariaDB global time_zone to {zone}");
        }
    }
}

/// A database of its own, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    async fn create(admin: &str) -> Self {
        let name = format!("botpipe_test_{}", uuid::Uuid::new_v4().simple());
        let mut c = default_session(admin).await;
        c.execute(
            format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                .as_str(),
        )
        .await
        .unwrap();
        Self {
            admin: admin.to_owned(),
            url: with_database(admin, &name),
            name,
        }
    }

    async fn drop_now(self) {
        let mut c = default_session(&self.admin).await;
        let _ = c
            .execute(format!("DROP DATABASE IF EXISTS {}", self.name).as_str())
            .await;
    }
}

/// botpipe's store on `db` with the default `[store] timezone` (Asia/Shanghai).
async fn open_store(db: &Database) -> botpipe::store::AnyStore {
    let settings = StoreSettings {
        kind: StoreKind::Mysql(db.url.clone().into()),
        password: None,
        migrate_on_start: true,
        max_connections: 2,
        timezone: botpipe::store::clock::DEFAULT_TIMEZONE,
    };
    botpipe::store::open(&settings).await.unwrap()
}

/// Fills the legacy tables the way the legacy writer did: each event's naive collector time,
/// bound as text through a session in the server's default zone; 0.0 for unknown coordinates;
/// the count of online events.
async fn legacy_write(c: &mut MySqlConnection, ip: &str, at: &str) {
    sqlx::query(
        "INSERT INTO botnet_nodes_mozi (ip, longitude, latitude, status, active_time, first_seen,
            last_seen, communication_count, updated_at)
         VALUES (?, 0.0, 0.0, 'active', ?, ?, ?, 1, NOW())
         ON DUPLICATE KEY UPDATE status = 'active', active_time = VALUES(active_time),
            last_seen = VALUES(last_seen), communication_count = communication_count + 1,
            updated_at = NOW()",
    )
    .bind(ip)
    .bind(at)
    .bind(at)
    .bind(at)
    .execute(&mut *c)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO botnet_communications_mozi (node_id, ip, communication_time, longitude,
            latitude, event_type, status)
         SELECT id, ip, ?, 0.0, 0.0, 'remote_upload', 'active' FROM botnet_nodes_mozi WHERE ip = ?",
    )
    .bind(at)
    .bind(ip)
    .execute(&mut *c)
    .await
    .unwrap();
}

/// Every node row except `id` and `updated_at`, times as the default session reads them.
async fn nodes(c: &mut MySqlConnection) -> Vec<Vec<Option<String>>> {
    let cols = "ip, CAST(status AS CHAR), DATE_FORMAT(first_seen, '%Y-%m-%d %H:%i:%s'),
        DATE_FORMAT(last_seen, '%Y-%m-%d %H:%i:%s'), DATE_FORMAT(active_time, '%Y-%m-%d %H:%i:%s'),
        DATE_FORMAT(cleaned_time, '%Y-%m-%d %H:%i:%s'), CAST(communication_count AS CHAR),
        CAST(longitude AS CHAR), CAST(latitude AS CHAR), country, province, city, isp, asn,
        DATE_FORMAT(created_time, '%Y-%m-%d %H:%i:%s')";
    sqlx::query(&format!("SELECT {cols} FROM botnet_nodes_mozi ORDER BY ip"))
        .fetch_all(c)
        .await
        .unwrap()
        .iter()
        .map(|r| (0..15).map(|i| r.get::<Option<String>, _>(i)).collect())
        .collect()
}

/// Every communication as `(ip, time, event type)`, times as the default session reads them.
async fn communications(c: &mut MySqlConnection) -> Vec<(String, String, String)> {
    sqlx::query(
        "SELECT ip, DATE_FORMAT(communication_time, '%Y-%m-%d %H:%i:%s'), event_type
         FROM botnet_communications_mozi ORDER BY ip, communication_time, event_type",
    )
    .fetch_all(c)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// The record botpipe parses from a collector line with naive Asia/Shanghai time `at`.
fn record(ip: &str, at: &str, log_type: LogType) -> Record {
    let naive = NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S").expect("time");
    Record {
        ip: NodeIp::parse(ip).expect("IP"),
        timestamp: SHANGHAI
            .from_local_datetime(&naive)
            .single()
            .expect("a Shanghai time")
            .to_utc(),
        botnet_type: BotnetType::parse("mozi").expect("type"),
        log_type,
        seq_id: None,
    }
}

fn batch(records: Vec<Record>) -> EnrichedBatch {
    let n = records.len();
    EnrichedBatch {
        batch: Batch::new("legacy-replay", records, vec![]),
        geo: vec![Geo::unknown(); n],
    }
}

/// The whole scenario with the server's global zone set to `zone`.
async fn replayed_legacy_events_change_nothing_and_new_ones_land_on_the_legacy_clock(zone: &str) {
    if !services::available([Service::MariaDb]) {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let admin = admin_url().await;
    let _zone = GlobalZone::set(&admin, zone).await;
    let db = Database::create(&admin).await;
    let mut legacy = default_session(&db.url).await;
    for ddl in LEGACY_DDL {
        legacy.execute(ddl).await.unwrap();
    }
    for (ip, at) in EVENTS {
        legacy_write(&mut legacy, ip, at).await;
    }

    // botpipe, with its default `[store] timezone` (Asia/Shanghai), upgrades the tables.
    let store = open_store(&db).await;
    let types: BTreeSet<BotnetType> = [BotnetType::parse("mozi").unwrap()].into();
    store.migrate(&types).await.unwrap();
    let zones = store.time_zones().await.unwrap();
    assert_eq!(
        zones.session, zones.server,
        "botpipe's session keeps the server's zone"
    );
    let before_nodes = nodes(&mut legacy).await;
    let before_comms = communications(&mut legacy).await;
    assert_eq!(before_comms.len(), EVENTS.len());

    // The same events, replayed through botpipe: no new rows, nodes unchanged but updated_at.
    let replay: Vec<Record> = EVENTS
        .iter()
        .map(|(ip, at)| record(ip, at, LogType::Online))
        .collect();
    store.apply(&batch(replay)).await.unwrap();
    assert_eq!(
        communications(&mut legacy).await,
        before_comms,
        "server zone {zone}"
    );
    assert_eq!(nodes(&mut legacy).await, before_nodes, "server zone {zone}");

    // New events land with the wall-clock the legacy writer would have written.
    store
        .apply(&batch(vec![
            record("1.0.0.1", "2026-12-01 10:00:00", LogType::Online),
            record("4.0.0.4", "2026-12-01 10:05:00", LogType::Online),
            record("3.0.0.3", "2026-12-01 10:10:00", LogType::Cleanup),
        ]))
        .await
        .unwrap();
    let comms = communications(&mut legacy).await;
    for expected in [
        ("1.0.0.1", "2026-12-01 10:00:00", "remote_upload"),
        ("4.0.0.4", "2026-12-01 10:05:00", "remote_upload"),
        ("3.0.0.3", "2026-12-01 10:10:00", "cleanup"),
    ] {
        let expected = (
            expected.0.to_owned(),
            expected.1.to_owned(),
            expected.2.to_owned(),
        );
        assert!(
            comms.contains(&expected),
            "server zone {zone}: {expected:?} not in {comms:#?}"
        );
    }
    let after = nodes(&mut legacy).await;
    let node = |ip: &str| {
        after
            .iter()
            .find(|n| n[0].as_deref() == Some(ip))
            .unwrap_or_else(|| panic!("no node {ip}"))
            .clone()
    };
    let one = node("1.0.0.1");
    assert_eq!(
        one[2].as_deref(),
        Some("2026-11-30 08:00:00"),
        "first_seen kept"
    );
    assert_eq!(one[3].as_deref(), Some("2026-12-01 10:00:00"), "last_seen");
    assert_eq!(
        one[4].as_deref(),
        Some("2026-12-01 10:00:00"),
        "active_time"
    );
    assert_eq!(
        one[6].as_deref(),
        Some("3"),
        "online count: legacy 2, plus one"
    );
    let three = node("3.0.0.3");
    assert_eq!(three[1].as_deref(), Some("cleaned"));
    assert_eq!(
        three[5].as_deref(),
        Some("2026-12-01 10:10:00"),
        "cleaned_time"
    );
    assert_eq!(three[6].as_deref(), Some("1"), "a cleanup is not counted");
    store.close().await;
    db.drop_now().await;
}

#[tokio::test]
async fn issue_15_legacy_rows_replayed_with_the_server_in_utc() {
    replayed_legacy_events_change_nothing_and_new_ones_land_on_the_legacy_clock("+00:00").await;
}

#[tokio::test]
async fn issue_15_legacy_rows_replayed_with_the_server_in_shanghai() {
    replayed_legacy_events_change_nothing_and_new_ones_land_on_the_legacy_clock("+08:00").await;
}

/// `migrate` rewrites legacy provinces and ASNs once, keeps the legacy comments, and reports
/// rows whose status contradicts the status rule.
#[tokio::test]
async fn issue_15_migrate_normalises_legacy_names_and_keeps_comments() {
    if !services::available([Service::MariaDb]) {
        return;
    }
    let _one_at_a_time = SERIAL.lock().await;
    let admin = admin_url().await;
    let db = Database::create(&admin).await;
    let mut legacy = default_session(&db.url).await;
    for ddl in LEGACY_DDL {
        legacy.execute(ddl).await.unwrap();
    }
    legacy
        .execute(
            "INSERT INTO botnet_nodes_mozi (ip, country, province, asn, status, last_seen)
             VALUES ('1.0.0.1', '中国', '广东省', '4837', 'active', '2026-11-30 08:00:00'),
                    ('2.0.0.2', '中国', '广西壮族自治区', 'AS4134', 'active', '2026-11-30 08:00:00'),
                    ('3.0.0.3', '中国', '广东', '9808', 'active', '2026-11-30 08:00:00')",
        )
        .await
        .unwrap();
    let store = open_store(&db).await;
    let types: BTreeSet<BotnetType> = [BotnetType::parse("mozi").unwrap()].into();
    let report = store.migrate(&types).await.unwrap();
    assert!(
        report
            .applied
            .iter()
            .any(|s| s.contains("provinces and ASNs")),
        "{report:?}"
    );
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT province, asn FROM botnet_nodes_mozi WHERE province IS NOT NULL ORDER BY ip",
    )
    .fetch_all(&mut legacy)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("广东".to_owned(), "AS4837".to_owned()),
            ("广西".to_owned(), "AS4134".to_owned()),
            ("广东".to_owned(), "AS9808".to_owned()),
        ]
    );
    let comments: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR), CAST(column_comment AS CHAR)
         FROM information_schema.columns
         WHERE table_schema = DATABASE() AND table_name = 'botnet_nodes_mozi'
           AND column_comment <> '' ORDER BY column_name",
    )
    .fetch_all(&mut legacy)
    .await
    .unwrap();
    assert_eq!(
        comments,
        [
            ("ip".to_owned(), "node IP".to_owned()),
            ("status".to_owned(), "infection status".to_owned()),
        ],
        "MODIFY must restate the legacy comments"
    );
    let key_comment: Option<String> = sqlx::query_scalar(
        "SELECT CAST(MAX(index_comment) AS CHAR) FROM information_schema.statistics
         WHERE table_schema = DATABASE() AND table_name = 'botnet_communications_mozi'
           AND column_name = 'event_type'",
    )
    .fetch_one(&mut legacy)
    .await
    .unwrap();
    assert_eq!(key_comment.as_deref(), Some("one row per event"));
    store.close().await;

    // The contradiction is found by a fresh migration of a legacy table that has one.
    let db2 = Database::create(&admin).await;
    let mut legacy2 = default_session(&db2.url).await;
    for ddl in LEGACY_DDL {
        legacy2.execute(ddl).await.unwrap();
    }
    legacy2
        .execute("ALTER TABLE botnet_nodes_mozi MODIFY status ENUM('active','inactive','cleaned') DEFAULT 'active', ADD COLUMN cleaned_time TIMESTAMP NULL DEFAULT NULL")
        .await
        .unwrap();
    legacy2
        .execute(
            "INSERT INTO botnet_nodes_mozi (ip, status, last_seen, cleaned_time)
             VALUES ('9.0.0.9', 'cleaned', '2026-11-30 08:00:00', '2026-11-29 08:00:00'),
                    ('8.0.0.8', 'cleaned', '2026-11-28 08:00:00', '2026-11-29 08:00:00')",
        )
        .await
        .unwrap();
    let store2 = open_store(&db2).await;
    let report = store2.migrate(&types).await.unwrap();
    assert_eq!(report.contradictions.get("mozi"), Some(&1), "{report:?}");
    store2.close().await;
    db.drop_now().await;
    db2.drop_now().await;
}
