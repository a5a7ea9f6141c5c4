//! Per-test databases on the machine's real servers, and a backend-neutral dump of the legacy
//! tables so that stores can be compared row for row.
//!
//! Every [`TestDb`] owns a fresh database (`botpipe_test_<random>` on PostgreSQL or MariaDB) or a
//! temporary directory (SQLite) and drops it when it goes out of scope, also when the test
//! panics. `BOTPIPE_TEST_PG` and `BOTPIPE_TEST_MYSQL` override the admin URLs. On MariaDB, when
//! root may not log in over TCP (Debian's default: root uses the socket), the tests use the
//! `botpipe_test` user that `scripts/services.sh` creates instead.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use botpipe::config::{StoreKind, StoreSettings};
use botpipe::record::BotnetType;
use botpipe::store::{AnyStore, Store};
use sqlx::{Connection, Decode, Executor, Row, Type};

use crate::helpers::services::{self, Service};

/// The MariaDB user `scripts/services.sh` creates where root may not log in over TCP.
const MARIADB_FALLBACK_USER: &str = "botpipe_test";

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

impl Backend {
    /// The server this backend needs; none for SQLite.
    pub fn service(self) -> Option<Service> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(Service::Postgres),
            Self::Mysql => Some(Service::MariaDb),
        }
    }

    /// True when this backend's server runs; otherwise the calling test should return at once
    /// (see [`services::available`]).
    pub fn available(self) -> bool {
        services::available(self.service())
    }

    /// The admin URL of this backend's server (`None` for SQLite). For MariaDB it is root over
    /// TCP where root may log in that way, else the fallback user; decided once per process.
    async fn admin_url(self) -> Option<String> {
        static MARIADB_ADMIN: OnceLock<String> = OnceLock::new();
        let service = self.service()?;
        let configured = service.admin_url();
        if service != Service::MariaDb || std::env::var_os("BOTPIPE_TEST_MYSQL").is_some() {
            return Some(configured);
        }
        if let Some(url) = MARIADB_ADMIN.get() {
            return Some(url.clone());
        }
        let url = match sqlx::MySqlConnection::connect(&configured).await {
            Ok(_) => configured,
            Err(root_refused) => {
                let mut fallback = url::Url::parse(&configured).expect("admin URL");
                fallback
                    .set_username(MARIADB_FALLBACK_USER)
                    .expect("a URL with a host");
                if let Err(e) = sqlx::MySqlConnection::connect(fallback.as_str()).await {
                    panic!(
                        "MariaDB refused {configured} ({root_refused}) and {fallback} ({e}): \
                         run scripts/services.sh, or set BOTPIPE_TEST_MYSQL"
                    );
                }
                fallback.to_string()
            }
        };
        Some(MARIADB_ADMIN.get_or_init(|| url).clone())
    }

    /// Runs one statement as admin on this backend's server.
    async fn admin_execute(self, sql: &str) {
        let url = self.admin_url().await.expect("a server backend");
        let done = match self {
            Self::Sqlite => unreachable!("SQLite has no server"),
            Self::Postgres => match sqlx::PgConnection::connect(&url).await {
                Ok(mut c) => c.execute(sql).await.map(drop),
                Err(e) => Err(e),
            },
            Self::Mysql => match sqlx::MySqlConnection::connect(&url).await {
                Ok(mut c) => c.execute(sql).await.map(drop),
                Err(e) => Err(e),
            },
        };
        done.unwrap_or_else(|e| panic!("{self} admin at {url}: {sql}: {e}"));
    }
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
    /// Creates an empty database. A test calls [`Backend::available`] first, so that it is
    /// skipped rather than failed where the server is not running.
    pub async fn create(backend: Backend) -> Self {
        let name = format!("botpipe_test_{}", uuid::Uuid::new_v4().simple());
        let Some(admin) = backend.admin_url().await else {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store.sqlite");
            return Self {
                backend,
                url: format!("sqlite://{}", path.display()),
                name: path.display().to_string(),
                _dir: Some(dir),
            };
        };
        backend
            .admin_execute(&match backend {
                Backend::Mysql => format!(
                    "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                ),
                _ => format!("CREATE DATABASE {name}"),
            })
            .await;
        Self {
            backend,
            url: with_database(&admin, &name),
            name,
            _dir: None,
        }
    }

    /// Store settings pointing at this database.
    pub fn settings(&self) -> StoreSettings {
        StoreSettings {
            kind: match self.backend {
                Backend::Sqlite => StoreKind::Sqlite(self.name.clone().into()),
                Backend::Postgres => StoreKind::Postgres(self.url.clone().into()),
                Backend::Mysql => StoreKind::Mysql(self.url.clone().into()),
            },
            password: None,
            migrate_on_start: true,
            max_connections: 4,
            timezone: botpipe::store::clock::DEFAULT_TIMEZONE,
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

    /// A direct PostgreSQL session in the store's default zone (Asia/Shanghai), so that times
    /// read as the wall-clock the store writes on every backend.
    pub async fn pg(&self) -> sqlx::PgConnection {
        let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
        c.execute("SET TIME ZONE 'Asia/Shanghai'").await.unwrap();
        c
    }

    /// A direct MariaDB session in the server's default zone, as the legacy writer's and
    /// botpipe's: times read back as the wall-clock the store wrote.
    pub async fn mysql(&self) -> sqlx::MySqlConnection {
        let mut opts: sqlx::mysql::MySqlConnectOptions = self.url.parse().unwrap();
        opts = opts.timezone(None);
        sqlx::MySqlConnection::connect_with(&opts).await.unwrap()
    }

    /// Every node and communication row of type `t`, without the wall-clock columns (`id`,
    /// `created_time`, `updated_at`, `received_at`), sorted.
    pub async fn dump(&self, t: &str) -> Dump {
        let t = BotnetType::parse(t).unwrap();
        let (n, c) = (t.nodes_table(), t.communications_table());
        let nodes_sql = format!(
            "SELECT {} FROM {n}",
            select_list(self.backend, &NODE_COLUMNS, "")
        );
        let comms_sql = format!(
            "SELECT {} FROM {c} c LEFT JOIN {n} n ON n.id = c.node_id",
            select_list(self.backend, &COMM_COLUMNS, "c.")
        );
        let mut dump = match self.backend {
            Backend::Sqlite => self.dump_sqlite(&nodes_sql, &comms_sql),
            Backend::Postgres => {
                let mut conn = self.pg().await;
                let nodes = sqlx::query(&nodes_sql).fetch_all(&mut conn).await.unwrap();
                let comms = sqlx::query(&comms_sql).fetch_all(&mut conn).await.unwrap();
                Dump::from_rows(&nodes, &comms)
            }
            Backend::Mysql => {
                let mut conn = self.mysql().await;
                let nodes = sqlx::query(&nodes_sql).fetch_all(&mut conn).await.unwrap();
                let comms = sqlx::query(&comms_sql).fetch_all(&mut conn).await.unwrap();
                Dump::from_rows(&nodes, &comms)
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

    fn dump_sqlite(&self, nodes_sql: &str, comms_sql: &str) -> Dump {
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
        let mut stmt = conn.prepare(nodes_sql).unwrap();
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
        let mut stmt = conn.prepare(comms_sql).unwrap();
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
                backend
                    .admin_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            }
            Backend::Mysql => {
                backend
                    .admin_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await
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

/// How a dumped column is selected so that every server returns the same Rust type.
#[derive(Debug, Clone, Copy)]
enum Col {
    /// Text (`Option<String>`); enums and inet values as text.
    Text,
    /// A count (`Option<i64>`).
    Int,
    /// A coordinate (`Option<f64>`).
    Float,
    /// A boolean as 0/1 (`Option<i64>`).
    Flag,
    /// A timestamp as `YYYY-MM-DD HH:MM:SS` UTC text.
    Time,
}

impl Col {
    /// The select expression for column `name` on `backend` (SQLite: the column as stored).
    fn select(self, backend: Backend, name: &str) -> String {
        match (backend, self) {
            (Backend::Sqlite, _) => name.to_owned(),
            (Backend::Postgres, Col::Text) => format!("{name}::text"),
            (Backend::Postgres, Col::Int) => format!("{name}::bigint"),
            (Backend::Postgres, Col::Float) => format!("{name}::float8"),
            (Backend::Postgres, Col::Flag) => format!("{name}::int::bigint"),
            (Backend::Postgres, Col::Time) => format!("to_char({name}, 'YYYY-MM-DD HH24:MI:SS')"),
            (Backend::Mysql, Col::Text) => format!("CAST({name} AS CHAR)"),
            (Backend::Mysql, Col::Int | Col::Flag) => format!("CAST({name} AS SIGNED)"),
            (Backend::Mysql, Col::Float) => format!("CAST({name} AS DOUBLE)"),
            (Backend::Mysql, Col::Time) => format!("DATE_FORMAT({name}, '%Y-%m-%d %H:%i:%s')"),
        }
    }
}

/// The select list of `own` columns followed by the place columns (prefixed).
fn select_list(backend: Backend, own: &[(&str, Col)], place_prefix: &str) -> String {
    let place = PLACE_COLUMNS
        .iter()
        .map(|(name, kind)| kind.select(backend, &format!("{place_prefix}{name}")));
    own.iter()
        .map(|(name, kind)| kind.select(backend, name))
        .chain(place)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A node row's own columns, in [`NodeRow`]'s order; the place columns follow.
const NODE_COLUMNS: [(&str, Col); 7] = [
    ("ip", Col::Text),
    ("status", Col::Text),
    ("first_seen", Col::Time),
    ("last_seen", Col::Time),
    ("active_time", Col::Time),
    ("cleaned_time", Col::Time),
    ("communication_count", Col::Int),
];
/// A communication row's own columns (`c` the communication, `n` its node), in [`CommRow`]'s
/// order; the place columns follow.
const COMM_COLUMNS: [(&str, Col); 5] = [
    ("c.ip", Col::Text),
    ("n.ip", Col::Text),
    ("c.communication_time", Col::Time),
    ("c.event_type", Col::Text),
    ("c.status", Col::Text),
];
/// The geography columns, in [`Place`]'s order.
const PLACE_COLUMNS: [(&str, Col); 9] = [
    ("country", Col::Text),
    ("province", Col::Text),
    ("city", Col::Text),
    ("continent", Col::Text),
    ("isp", Col::Text),
    ("asn", Col::Text),
    ("longitude", Col::Float),
    ("latitude", Col::Float),
    ("is_china", Col::Flag),
];

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
    /// Reads rows selected with the [`Col`] expressions of a server backend.
    fn from_rows<R: Row>(nodes: &[R], comms: &[R]) -> Self
    where
        usize: sqlx::ColumnIndex<R>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    {
        let place = |r: &R, at: usize| Place {
            country: r.get(at),
            province: r.get(at + 1),
            city: r.get(at + 2),
            continent: r.get(at + 3),
            isp: r.get(at + 4),
            asn: r.get(at + 5),
            longitude: r.get(at + 6),
            latitude: r.get(at + 7),
            is_china: r.get::<Option<i64>, _>(at + 8).unwrap_or(0) != 0,
        };
        Self {
            nodes: nodes
                .iter()
                .map(|r| NodeRow {
                    ip: r.get(0),
                    status: r.get(1),
                    first_seen: r.get(2),
                    last_seen: r.get(3),
                    active_time: r.get(4),
                    cleaned_time: r.get(5),
                    communication_count: r.get(6),
                    place: place(r, 7),
                })
                .collect(),
            comms: comms
                .iter()
                .map(|r| CommRow {
                    ip: r.get(0),
                    node_ip: r.get(1),
                    communication_time: r.get(2),
                    event_type: r.get(3),
                    status: r.get(4),
                    place: place(r, 5),
                })
                .collect(),
        }
    }

    /// The node with `ip`.
    pub fn node(&self, ip: &str) -> &NodeRow {
        self.nodes
            .iter()
            .find(|n| n.ip == ip)
            .unwrap_or_else(|| panic!("no node {ip} in {:#?}", self.nodes))
    }

    /// Asserts that every node's `communication_count` equals its online communication rows
    /// (the legacy count: cleanups are stored, not counted) and that its `active_time` follows
    /// `last_seen`.
    pub fn assert_counts_match_rows(&self) {
        for n in &self.nodes {
            let rows = self
                .comms
                .iter()
                .filter(|c| c.ip == n.ip && c.event_type.as_deref() == Some("remote_upload"))
                .count() as i64;
            assert_eq!(n.communication_count, Some(rows), "count of {}", n.ip);
            assert_eq!(n.active_time, n.last_seen, "active_time of {}", n.ip);
        }
    }
}
