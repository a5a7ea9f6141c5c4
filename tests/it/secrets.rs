//! Issue 13: a PostgreSQL URL password was printed in the INFO line "botpipe running.". Every
//! secret in configuration (passwords in the store, Redis and endpoint URLs, keys) must stay out
//! of the `Debug` of `Settings` and out of the log of a running botpipe.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::collector::KillOnDrop;
use crate::helpers::db::{Backend, TestDb};
use crate::helpers::services::{self, Service};
use crate::helpers::{bin::write_config, wait_until};

const STORE_PW: &str = "store-pw-4f1c9";
const REDIS_PW: &str = "redis-pw-77ab2";
const URL_PW: &str = "endpoint-url-pw-0d3e";
const KEY: &str = "endpoint-key-9a8b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_no_secret_reaches_the_log_of_a_running_botpipe() {
    if !services::available([Service::Postgres, Service::Redis]) {
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    let mut store_url = url::Url::parse(&db.url).unwrap();
    // Trust authentication: PostgreSQL accepts the connection whatever the password.
    store_url.set_password(Some(STORE_PW)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("botpipe-test-{}", uuid::Uuid::new_v4().simple());
    let config = write_config(
        dir.path(),
        &format!(
            r#"data_dir = {data:?}
[http]
listen = "127.0.0.1:0"
[store]
url = "{store_url}"
[queue]
backend = "redis"
redis_url = "redis://:{REDIS_PW}@127.0.0.1:6379/0"
redis_prefix = "{prefix}"
[endpoints.east]
url = "http://relay:{URL_PW}@127.0.0.1:9/"
api_key = "{KEY}"
interval = "1s"
"#,
            data = dir.path(),
        ),
    );
    let log = dir.path().join("botpipe.log");
    let child = Command::new(env!("CARGO_BIN_EXE_botpipe"))
        .args(["--log-format", "json", "--log-level", "debug", "--config"])
        .arg(&config)
        .arg("run")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // Up, and Redis (which refuses the password: it has none) or a pull has failed, each error
    // naming its URL's host. With Redis refusing, no process can hold the endpoint's lease, so
    // the lease round's failure is what shows.
    wait_until(
        Duration::from_secs(60),
        "botpipe running and a failure logged",
        || {
            let text = read();
            async move {
                text.contains("botpipe running.")
                    && (text.contains("Pull failed") || text.contains("Lease round failed"))
            }
        },
    )
    .await;
    let text = read();
    assert!(
        text.contains("postgres://"),
        "the store is described: {text}"
    );
    for secret in [STORE_PW, REDIS_PW, URL_PW, KEY] {
        assert!(!text.contains(secret), "{secret} is in the log:\n{text}");
    }
}
