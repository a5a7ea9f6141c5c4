//! Starting botpipe's real `App` and an in-process collector on random ports, each test with
//! its own temporary data directory.

use std::net::SocketAddr;
use std::time::Duration;

use botpipe::app::{App, AppError, Mode};
use botpipe::config::{EndpointSettings, Settings};
use botpipe::demo::{DemoCollector, Flavor};
use botpipe::queue::{AnyQueue, Handoff};
use botpipe::store::AnyStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a test app samples its store for `/api/status`: often, so that tests waiting for
/// numbers to show do not wait the production interval.
pub const TEST_STORE_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// A collector serving on a random port until dropped.
pub struct TestCollector {
    pub collector: DemoCollector,
    pub url: String,
    token: CancellationToken,
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts an in-memory collector of `flavor`.
pub async fn spawn_collector(flavor: Flavor, api_key: Option<&str>) -> TestCollector {
    let collector = DemoCollector::new(flavor, api_key.map(str::to_owned));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let token = CancellationToken::new();
    tokio::spawn(collector.clone().serve(listener, token.clone()));
    TestCollector {
        collector,
        url,
        token,
    }
}

/// Endpoint settings for a test collector.
pub fn endpoint(name: &str, url: &str, interval: Duration, batch_size: u32) -> EndpointSettings {
    EndpointSettings {
        name: name.to_owned(),
        url: url::Url::parse(url).unwrap().into(),
        tls: Default::default(),
        api_key: None,
        interval,
        batch_size,
        connect_timeout: Duration::from_millis(500),
        timeout: interval.mul_f64(0.9),
        timezone: chrono_tz::UTC,
        max_body_bytes: 16 * 1024 * 1024,
        enabled: true,
    }
}

/// A running botpipe.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub http: Option<SocketAddr>,
    pub store: AnyStore,
    pub queue: AnyQueue,
    pub handoff: Handoff,
    pub token: CancellationToken,
    pub handle: Option<JoinHandle<Result<(), AppError>>>,
}

impl TestApp {
    /// Cancels and waits for a clean stop.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Default test settings under `dir`: embedded store and queue, HTTP on a random port.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::embedded_default().with_data_dir(dir);
    s.http_listen = ([127, 0, 0, 1], 0).into();
    s.worker_count = 2;
    s
}

/// Builds and starts the app with `settings` (already pointing into `dir`).
pub async fn spawn_app_with(dir: tempfile::TempDir, settings: Settings) -> TestApp {
    super::init_test_log();
    let app = App::build(settings, Mode::Full)
        .await
        .unwrap()
        .sample_store_every(TEST_STORE_SAMPLE_INTERVAL);
    let http = app.http_addr();
    let store = app.store().clone();
    let handoff = app.handoff().clone();
    let queue = handoff.queue().clone();
    let token = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(token.clone(), Duration::from_secs(10)));
    TestApp {
        dir,
        http,
        store,
        queue,
        handoff,
        token,
        handle: Some(handle),
    }
}

/// Starts botpipe pulling `endpoints`, with `tweak` applied to the default test settings.
pub async fn spawn_app(
    endpoints: Vec<EndpointSettings>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.endpoints = endpoints;
    tweak(&mut settings);
    spawn_app_with(dir, settings).await
}
