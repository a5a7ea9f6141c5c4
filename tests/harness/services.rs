//! Whether the machine's PostgreSQL, MariaDB and Redis answer, asked once per process.
//!
//! A test that needs one of them calls [`available`] (or a constructor built on it, such as
//! `TestRedis::require`) before touching it and returns early when told no: the test then
//! passes without having checked anything, and when the process exits one line per missing
//! service says so, with the number of tests it skipped. With `BOTPIPE_REQUIRE_SERVICES=1` (set
//! by `.ci/run`) a missing service fails each test that needs it instead, naming the service, so
//! CI never skips silently.
//!
//! The probe is a TCP connect to the address the tests use: it tells "nothing listens here" from
//! "something answers", which is the difference between skipping and a real failure. Wrong
//! credentials on a running server are a real failure and are left to the test to report.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;

use super::keyspace::REDIS_ADDR;

/// The variable that turns a missing service into a test failure (`1` to set it).
pub const REQUIRE_VAR: &str = "BOTPIPE_REQUIRE_SERVICES";
/// How long one probe may wait for a TCP connection: a local server answers in microseconds,
/// a dropped SYN must not hold the suite for long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Admin connection to PostgreSQL (trust auth for 127.0.0.1, as `scripts/services.sh` sets it).
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Admin connection to MariaDB (root without password over TCP; see `TestDb` for the fallback).
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306/mysql";

/// An external service some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PostgreSQL, for the PostgreSQL store.
    Postgres,
    /// MariaDB, for the MySQL-dialect store.
    MariaDb,
    /// Redis, for the Redis Streams queue.
    Redis,
}

impl Service {
    const ALL: [Service; 3] = [Service::Postgres, Service::MariaDb, Service::Redis];

    /// The product name, as the skip line prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::MariaDb => "MariaDB",
            Self::Redis => "Redis",
        }
    }

    /// The admin URL tests connect with: `BOTPIPE_TEST_PG` / `BOTPIPE_TEST_MYSQL` override the
    /// databases' defaults; Redis is always the local server.
    pub fn admin_url(self) -> String {
        let (var, default) = match self {
            Self::Postgres => ("BOTPIPE_TEST_PG", PG_ADMIN),
            Self::MariaDb => ("BOTPIPE_TEST_MYSQL", MYSQL_ADMIN),
            Self::Redis => return format!("redis://{REDIS_ADDR}"),
        };
        std::env::var(var).unwrap_or_else(|_| default.to_owned())
    }

    /// `host:port` of [`Service::admin_url`].
    pub fn address(self) -> String {
        let url = url::Url::parse(&self.admin_url()).expect("admin URL");
        let default_port = match self {
            Self::Postgres => 5432,
            Self::MariaDb => 3306,
            Self::Redis => 6379,
        };
        format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(default_port)
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What this process knows about one service.
struct Seen {
    reachable: OnceLock<bool>,
    skipped: AtomicUsize,
}

static SEEN: [Seen; 3] = [const {
    Seen {
        reachable: OnceLock::new(),
        skipped: AtomicUsize::new(0),
    }
}; 3];
static REPORT_AT_EXIT: Once = Once::new();

fn reachable(service: Service) -> bool {
    *SEEN[service.index()].reachable.get_or_init(|| {
        let address = service.address();
        address.to_socket_addrs().is_ok_and(|mut addrs| {
            addrs.any(|a| TcpStream::connect_timeout(&a, PROBE_TIMEOUT).is_ok())
        })
    })
}

fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// True when every service in `needs` answers. Otherwise the calling test should return at
/// once: each missing service has counted it as skipped and will say so when the process
/// exits.
///
/// # Panics
///
/// When a service is missing and `BOTPIPE_REQUIRE_SERVICES=1`, with the service's name and
/// address.
pub fn available(needs: impl IntoIterator<Item = Service>) -> bool {
    let mut all = true;
    for service in needs {
        if reachable(service) {
            continue;
        }
        assert!(
            !required(),
            "{} not reachable at {} and {REQUIRE_VAR}=1 forbids skipping: start it \
             (scripts/services.sh) or unset the variable",
            service.name(),
            service.address()
        );
        all = false;
        SEEN[service.index()]
            .skipped
            .fetch_add(1, Ordering::Relaxed);
        // SAFETY: `atexit` with a plain function that never unwinds, registered once.
        REPORT_AT_EXIT.call_once(|| unsafe {
            atexit(report_skips);
        });
    }
    all
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// Runs when the test process exits (after libtest's summary): one line per skipping service.
/// Written straight to stderr, because libtest captures what tests print.
extern "C" fn report_skips() {
    let mut err = std::io::stderr().lock();
    for service in Service::ALL {
        let n = SEEN[service.index()].skipped.load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(
                err,
                "{} not reachable at {}: {n} test{} skipped; see README, Tests",
                service.name(),
                service.address(),
                if n == 1 { "" } else { "s" }
            );
        }
    }
}
