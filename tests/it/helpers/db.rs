//! Per-test databases on the machine's real servers, and a backend-neutral dump of the legacy
//! tables so that stores can be compared row for row.
//!
//! Every [`TestDb`] owns a fresh database (`botpipe_test_<random>` on PostgreSQL or MariaDB) or a
//! temporary directory (SQLite) and drops it when it goes out of scope, also when the test
//! panics. `BOTPIPE_TEST_PG` and `BOTPIPE_TEST_MYSQL` override the admin URLs.

use std::collections::BTreeSet;
use std::fmt;

use botpipe::config::{StoreKind, StoreSettings};
use botpipe::record::BotnetType;
use botpipe::store::{AnyStore, Store};
use sqlx::{Connection, Executor, Row};

/// Admin connection to PostgreSQL (trust auth on this machine).
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Admin connection to MariaDB (root without password over TCP on this machine).
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306/mysql";

fn pg_admin() -> String {
    std::env::var("BOTPIPE_TEST_PG").unwrap_or_else(|_| PG_ADMIN.to_owned())
}

fn mysql_admin() -> String {
    std::env::var("BOTPIPE_TEST_MYSQL").unwrap_or_else(|_| MYSQL_ADMIN.to_owned())
}

/// Replaces the database (path) of an admin URL.
fn with_database(admin: &str, db: &str) -> String {
    let mut url = url::Url::parse(admin).expect("admin URL");
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in a tempdir.
    Sqlite,
    /// The local PostgreSQL.
    Postgres,
    /// The local MariaDB.
    Mysql,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        })
    }
}

/// A database of its own for one test; dropped on drop.
pub struct TestDb {
    /// The backend.
    pub backend: Backend,
    /// The store URL (`sqlite://…`, `postgres://…/botpipe_test_x`, `mysql://…/botpipe_test_x`).
    pub url: String,
    /// The database name (or file path for SQLite).
    pub name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates an empty database.
    pub async fn create(backend: Backend) -> Self {
        let name = format!("botpipe_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("store.sqlite");
                Self {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    name: path.display().to_string(),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let mut admin = sqlx::PgConnection::connect(&pg_admin()).await.unwrap();
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                Self {
                    backend,
                    url: with_database(&pg_admin(), &name),
                    name,
                    _dir: None,
                }
            }
            Backend::Mysql => {
                let mut admin = sqlx::MySqlConnection::connect(&mysql_admin())
                    .await
                    .unwrap();
                admin
                    .execute(
                        format!(
                            "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                        )
                        .as_str(),
                    )
                    .await
                    .unwrap();
                Self {
                    backend,
                    url: with_database(&mysql_admin(), &name),
                    name,
                    _dir: None,
                }
            }
        }
    }

    /// Store settings pointing at this database.
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            kind: match self.backend {
                Backend::Sqlite => StoreKind::Sqlite(self.name.clone().into()),
                Backend::Postgres => StoreKind::Postgres(self.url.clone()),
                Backend::Mysql => StoreKind::Mysql(self.url.clone()),
            },
            password: None,
            migrate_on_start: true,
            max_connections: 4,
        }
    }

    /// Opens a store on this database through `botpipe::store::open`, without migrating.
    pub async fn open(&self) -> AnyStore {
        botpipe::store::open(&self.settings()).await.unwrap()
    }

    /// Opens a store and migrates `types`.
    pub async fn open_migrated(&self, types: &[&str]) -> AnyStore {
        let store = self.open().await;
        store.migrate(&type_set(types)).await.unwrap();
        store
    }

    /// Runs SQL statements directly (legacy fixtures, sabotage).
    pub async fn exec(&self, statements: &[&str]) {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(&self.name).unwrap();
                for s in statements {
                    conn.execute_batch(s).unwrap();
                }
            }
            Backend::Postgres => {
                let mut c = self.pg().await;
                for s in statements {
                    c.execute(*s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
            Backend::Mysql => {
                let mut c = self.mysql().await;
                for s in statements {
                    c.execute(*s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
                }
            }
        }
    }

    /// One text value from a query (schema checks).
    pub async fn query_strings(&self, sql: &str) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(&self.name).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
                rows.map(Result::unwrap).collect()
            }
            Backend::Postgres => sqlx::query_scalar(sql)
                .fetch_all(&mut self.pg().await)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Backend::Mysql => sqlx::query_scalar(sql)
                .fetch_all(&mut self.mysql().await)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// A direct PostgreSQL session in UTC.
    pub async fn pg(&self) -> sqlx::PgConnection {
        let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
        c.execute("SET TIME ZONE 'UTC'").await.unwrap();
        c
    }

    /// A direct MariaDB session in UTC.
    pub async fn mysql(&self) -> sqlx::MySqlConnection {
        let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
        c.execute("SET time_zone = '+00:00'").await.unwrap();
        c
    }

    /// Every node and communication row of type `t`, without the wall-clock columns (`id`,
    /// `created_time`, `updated_at`, `received_at`), sorted.
    pub async fn dump(&self, t: &str) -> Dump {
        let t = BotnetType::parse(t).unwrap();
        let (n, c) = (t.nodes_table(), t.communications_table());
        let mut dump = match self.backend {
            Backend::Sqlite => self.dump_sqlite(&n, &c),
            Backend::Postgres => {
                let ts = |col: &str| format!("to_char({col}, 'YYYY-MM-DD HH24:MI:SS')");
                let nodes_sql = format!(
                    "SELECT ip::text, status::text, {}, {}, {}, {}, communication_count::bigint,
                        country::text, province::text, city::text, continent::text, isp::text,
                        asn::text, longitude::float8, latitude::float8, is_china
                     FROM {n}",
                    ts("first_seen"),
                    ts("last_seen"),
                    ts("active_time"),
                    ts("cleaned_time")
                );
                let comms_sql = format!(
                    "SELECT c.ip::text, n.ip::text, {}, c.event_type::text, c.status::text,
                        c.country::text, c.province::text, c.city::text, c.continent::text,
                        c.isp::text, c.asn::text, c.longitude::float8, c.latitude::float8, c.is_china
                     FROM {c} c LEFT JOIN {n} n ON n.id = c.node_id",
                    ts("c.communication_time")
                );
                let mut conn = self.pg().await;
                let nodes = sqlx::query(&nodes_sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| NodeRow {
                        ip: r.get(0),
                        status: r.get(1),
                        first_seen: r.get(2),
                        last_seen: r.get(3),
                        active_time: r.get(4),
                        cleaned_time: r.get(5),
                        communication_count: r.get(6),
                        place: Place {
                            country: r.get(7),
                            province: r.get(8),
                            city: r.get(9),
                            continent: r.get(10),
                            isp: r.get(11),
                            asn: r.get(12),
                            longitude: r.get(13),
                            latitude: r.get(14),
                            is_china: r.get(15),
                        },
                    })
                    .collect();
                let comms = sqlx::query(&comms_sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| CommRow {
                        ip: r.get(0),
                        node_ip: r.get(1),
                        communication_time: r.get(2),
                        event_type: r.get(3),
                        status: r.get(4),
                        place: Place {
                            country: r.get(5),
                            province: r.get(6),
                            city: r.get(7),
                            continent: r.get(8),
                            isp: r.get(9),
                            asn: r.get(10),
                            longitude: r.get(11),
                            latitude: r.get(12),
                            is_china: r.get(13),
                        },
                    })
                    .collect();
                Dump { nodes, comms }
            }
            Backend::Mysql => {
                let ts = |col: &str| format!("DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s')");
                let nodes_sql = format!(
                    "SELECT ip, CAST(status AS CHAR), {}, {}, {}, {},
                        CAST(communication_count AS SIGNED),
                        country, province, city, continent, isp, asn,
                        CAST(longitude AS DOUBLE), CAST(latitude AS DOUBLE), CAST(is_china AS SIGNED)
                     FROM {n}",
                    ts("first_seen"),
                    ts("last_seen"),
                    ts("active_time"),
                    ts("cleaned_time")
                );
                let comms_sql = format!(
                    "SELECT c.ip, n.ip, {}, c.event_type, c.status, c.country, c.province, c.city,
                        c.continent, c.isp, c.asn, CAST(c.longitude AS DOUBLE),
                        CAST(c.latitude AS DOUBLE), CAST(c.is_china AS SIGNED)
                     FROM {c} c LEFT JOIN {n} n ON n.id = c.node_id",
                    ts("c.communication_time")
                );
                let mut conn = self.mysql().await;
                let nodes = sqlx::query(&nodes_sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| NodeRow {
                        ip: r.get(0),
                        status: r.get(1),
                        first_seen: r.get(2),
                        last_seen: r.get(3),
                        active_time: r.get(4),
                        cleaned_time: r.get(5),
                        communication_count: r.get(6),
                        place: Place {
                            country: r.get(7),
                            province: r.get(8),
                            city: r.get(9),
                            continent: r.get(10),
                            isp: r.get(11),
                            asn: r.get(12),
                            longitude: r.get(13),
                            latitude: r.get(14),
                            is_china: r.get::<Option<i64>, _>(15).unwrap_or(0) != 0,
                        },
                    })
                    .collect();
                let comms = sqlx::query(&comms_sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| CommRow {
                        ip: r.get(0),
                        node_ip: r.get(1),
                        communication_time: r.get(2),
                        event_type: r.get(3),
                        status: r.get(4),
                        place: Place {
                            country: r.get(5),
                            province: r.get(6),
                            city: r.get(7),
                            continent: r.get(8),
                            isp: r.get(9),
                            asn: r.get(10),
                            longitude: r.get(11),
                            latitude: r.get(12),
                            is_china: r.get::<Option<i64>, _>(13).unwrap_or(0) != 0,
                        },
                    })
                    .collect();
                Dump { nodes, comms }
            }
        };
        dump.nodes.sort_by(|a, b| a.ip.cmp(&b.ip));
        dump.comms.sort_by(|a, b| {
            (&a.ip, &a.communication_time, &a.event_type).cmp(&(
                &b.ip,
                &b.communication_time,
                &b.event_type,
            ))
        });
        dump
    }

    fn dump_sqlite(&self, n: &str, c: &str) -> Dump {
        let conn = rusqlite::Connection::open(&self.name).unwrap();
        let place = |r: &rusqlite::Row<'_>, at: usize| -> Place {
            Place {
                country: r.get(at).unwrap(),
                province: r.get(at + 1).unwrap(),
                city: r.get(at + 2).unwrap(),
                continent: r.get(at + 3).unwrap(),
                isp: r.get(at + 4).unwrap(),
                asn: r.get(at + 5).unwrap(),
                longitude: r.get(at + 6).unwrap(),
                latitude: r.get(at + 7).unwrap(),
                is_china: r.get::<_, i64>(at + 8).unwrap() != 0,
            }
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT ip, status, first_seen, last_seen, active_time, cleaned_time,
                    communication_count, country, province, city, continent, isp, asn,
                    longitude, latitude, is_china FROM {n}"
            ))
            .unwrap();
        let nodes = stmt
            .query_map([], |r| {
                Ok(NodeRow {
                    ip: r.get(0)?,
                    status: r.get(1)?,
                    first_seen: r.get(2)?,
                    last_seen: r.get(3)?,
                    active_time: r.get(4)?,
                    cleaned_time: r.get(5)?,
                    communication_count: r.get(6)?,
                    place: place(r, 7),
                })
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT c.ip, n.ip, c.communication_time, c.event_type, c.status, c.country,
                    c.province, c.city, c.continent, c.isp, c.asn, c.longitude, c.latitude,
                    c.is_china
                 FROM {c} c LEFT JOIN {n} n ON n.id = c.node_id"
            ))
            .unwrap();
        let comms = stmt
            .query_map([], |r| {
                Ok(CommRow {
                    ip: r.get(0)?,
                    node_ip: r.get(1)?,
                    communication_time: r.get(2)?,
                    event_type: r.get(3)?,
                    status: r.get(4)?,
                    place: place(r, 5),
                })
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        Dump { nodes, comms }
    }

    async fn drop_database(backend: Backend, name: String) {
        match backend {
            Backend::Sqlite => {}
            Backend::Postgres => {
                let mut admin = sqlx::PgConnection::connect(&pg_admin()).await.unwrap();
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .unwrap();
            }
            Backend::Mysql => {
                let mut admin = sqlx::MySqlConnection::connect(&mysql_admin())
                    .await
                    .unwrap();
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
                    .await
                    .unwrap();
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend == Backend::Sqlite {
            return;
        }
        let (backend, name) = (self.backend, self.name.clone());
        // A fresh runtime on a fresh thread: Drop cannot await, and may run inside a runtime.
        let joined = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Self::drop_database(backend, name))
        })
        .join();
        if joined.is_err() && !std::thread::panicking() {
            panic!("dropping test database {} failed", self.name);
        }
    }
}

/// A set of botnet types.
pub fn type_set(types: &[&str]) -> BTreeSet<BotnetType> {
    types
        .iter()
        .map(|t| BotnetType::parse(t).unwrap())
        .collect()
}

/// Geography columns as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub country: Option<String>,
    pub province: Option<String>,
    pub city: Option<String>,
    pub continent: Option<String>,
    pub isp: Option<String>,
    pub asn: Option<String>,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
    pub is_china: bool,
}

/// A node row without its wall-clock columns; times as `YYYY-MM-DD HH:MM:SS` UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub ip: String,
    pub status: Option<String>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub active_time: Option<String>,
    pub cleaned_time: Option<String>,
    pub communication_count: Option<i64>,
    pub place: Place,
}

/// A communication row without its wall-clock columns, with its node's IP instead of its id.
#[derive(Debug, Clone, PartialEq)]
pub struct CommRow {
    pub ip: String,
    pub node_ip: Option<String>,
    pub communication_time: String,
    pub event_type: Option<String>,
    pub status: Option<String>,
    pub place: Place,
}

/// All rows of one botnet type.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump {
    pub nodes: Vec<NodeRow>,
    pub comms: Vec<CommRow>,
}

impl Dump {
    /// The node with `ip`.
    pub fn node(&self, ip: &str) -> &NodeRow {
        self.nodes
            .iter()
            .find(|n| n.ip == ip)
            .unwrap_or_else(|| panic!("no node {ip} in {:#?}", self.nodes))
    }

    /// Asserts that every node's `communication_count` equals its communication rows.
    pub fn assert_counts_match_rows(&self) {
        for n in &self.nodes {
            let rows = self.comms.iter().filter(|c| c.ip == n.ip).count() as i64;
            assert_eq!(n.communication_count, Some(rows), "count of {}", n.ip);
        }
    }
}
