//! Issue 13: TLS on both ends, with a private CA generated per test. `botpipe run` pulls from a
//! collector serving HTTPS and requiring a client certificate; a relay pushes over mutual TLS;
//! a puller that does not trust the collector's CA fails with a clear error and confirms
//! nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use botpipe::collector::{Collector, CollectorError};
use botpipe::config::{SecretSource, ServerTlsSettings};
use botpipe::push::sign;
use botpipe::queue::{Queue, RedisStreamsQueue};
use botpipe::store::Store;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::collector::{append, csv_line, settings as collector_settings, KEY};
use crate::helpers::keyspace::{fast_options, redis_addr, TestRedis};
use crate::helpers::pki::Pki;
use crate::helpers::{endpoint, spawn_app, test_batch, wait_until, TestApp};

const WAIT: Duration = Duration::from_secs(30);
const PUSH_KEY: &str = "relay-key";
const PUSH_SECRET: &str = "relay-secret";

/// An in-process collector serving HTTPS with the PKI's server certificate and requiring a
/// client certificate from its CA, reading one CSV file.
struct TlsCollector {
    addr: SocketAddr,
    log: PathBuf,
    token: CancellationToken,
    task: JoinHandle<Result<(), CollectorError>>,
    _dir: tempfile::TempDir,
}

impl TlsCollector {
    async fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("generator.log");
        let body = format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\n\
             [[sources]]\nname = \"generator\"\nkind = \"csv\"\nbotnet_type = \"mozi\"\npath = {:?}\n",
            pki.server_cert, pki.server_key, pki.ca, log,
        );
        let collector = Collector::build(collector_settings(dir.path(), &body))
            .await
            .expect("TLS collector builds");
        let addr = collector.local_addr();
        let token = CancellationToken::new();
        let task = tokio::spawn(collector.run_until_stopped(token.clone()));
        Self {
            addr,
            log,
            token,
            task,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/", self.addr.port())
    }

    /// `/api/stats`, asked over mutual TLS.
    async fn stats(&self, pki: &Pki) -> Value {
        let resp = pki
            .client(true)
            .get(format!("{}api/stats", self.url()))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()
    }

    async fn stop(self) {
        self.token.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn communications(app: &TestApp) -> u64 {
    app.store
        .counts()
        .await
        .unwrap()
        .communications
        .get("mozi")
        .copied()
        .unwrap_or(0)
}

async fn endpoint_status(app: &TestApp) -> Value {
    let url = format!("http://{}/api/status", app.http.unwrap());
    let status: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    status["endpoints"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_run_pulls_from_a_collector_over_mutual_tls_with_a_private_ca() {
    let pki = Pki::new();
    let collector = TlsCollector::start(&pki).await;
    for i in 0..40 {
        append(&collector.log, &csv_line(i).0);
    }
    let mut e = endpoint("east", &collector.url(), Duration::from_secs(1), 1000);
    e.api_key = Some(SecretSource::Inline(KEY.to_owned().into()));
    e.tls.ca_file = Some(pki.ca.clone());
    e.tls.client_cert_file = Some(pki.client_cert.clone());
    e.tls.client_key_file = Some(pki.client_key.clone());
    let app = spawn_app(vec![e], |_| {}).await;

    wait_until(WAIT, "40 records stored over TLS", || async {
        communications(&app).await == 40
    })
    .await;
    // Confirmed over TLS as well: the collector's cache drains.
    wait_until(
        WAIT,
        "the collector sees every record confirmed",
        || async {
            let s = collector.stats(&pki).await;
            // `cached_records` counts the unpulled ones.
            s["cached_records"] == 0 && s["pulled_records"] == 40
        },
    )
    .await;

    // Without a client certificate the collector does not serve, key or not.
    let no_cert = pki
        .client(false)
        .get(format!("{}api/stats", collector.url()))
        .header("X-API-Key", KEY)
        .send()
        .await;
    assert!(no_cert.is_err(), "served without a client certificate");

    app.stop().await;
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_collector_signed_by_an_untrusted_ca_is_refused_clearly_and_nothing_confirmed() {
    let pki = Pki::new();
    let collector = TlsCollector::start(&pki).await;
    for i in 0..10 {
        append(&collector.log, &csv_line(i).0);
    }
    wait_until(WAIT, "the collector holds 10 records", || async {
        collector.stats(&pki).await["cached_records"] == 10
    })
    .await;
    let mut e = endpoint("east", &collector.url(), Duration::from_secs(1), 1000);
    e.api_key = Some(SecretSource::Inline(KEY.to_owned().into()));
    // The wrong CA: the collector's certificate does not chain to it (nor to the system roots).
    e.tls.ca_file = Some(pki.other_ca.clone());
    e.tls.client_cert_file = Some(pki.client_cert.clone());
    e.tls.client_key_file = Some(pki.client_key.clone());
    let app = spawn_app(vec![e], |_| {}).await;

    wait_until(WAIT, "a failed pull with its error", || async {
        endpoint_status(&app).await["last_error"].is_string()
    })
    .await;
    let status = endpoint_status(&app).await;
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "the error should say the certificate is not trusted: {error}"
    );
    // The outcome is the metric's label for a request that failed to connect.
    assert_eq!(status["last_outcome"], "http_error", "{status}");
    assert_eq!(communications(&app).await, 0);
    let stats = collector.stats(&pki).await;
    assert_eq!(stats["pulled_records"], 0, "nothing confirmed: {stats}");
    assert_eq!(stats["cached_records"], 10, "still unpulled: {stats}");

    app.stop().await;
    collector.stop().await;
}

/// A signed push envelope of one record, and its signature.
fn signed_push(nonce: &str) -> (Vec<u8>, String) {
    let now = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let body = serde_json::to_vec(&json!({
        "botnet_type": "mozi",
        "data": [{"ip": "1.2.3.4", "timestamp": "2026-01-01T12:00:00", "log_type": "online"}],
        "timestamp": now,
        "nonce": nonce,
    }))
    .unwrap();
    let sig = sign(PUSH_SECRET, &now, nonce, &body);
    (body, sig)
}

async fn push_over(
    client: &reqwest::Client,
    base: &str,
    nonce: &str,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let (body, sig) = signed_push(nonce);
    client
        .post(format!("{base}/api/data-push"))
        .header("X-API-Key", PUSH_KEY)
        .header("X-Signature", sig)
        .body(body)
        .send()
        .await
        .map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_push_over_mutual_tls_is_accepted_and_other_clients_are_not_served() {
    let pki = Pki::new();
    let app = spawn_app(vec![], |s| {
        s.push.enabled = true;
        s.push.api_key = Some(SecretSource::Inline(PUSH_KEY.to_owned().into()));
        s.push.secret = Some(SecretSource::Inline(PUSH_SECRET.to_owned().into()));
        s.http_tls = Some(ServerTlsSettings {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            client_ca_file: Some(pki.ca.clone()),
        });
    })
    .await;
    let base = format!("https://localhost:{}", app.http.unwrap().port());

    let code = push_over(&pki.client(true), &base, "n-tls-1")
        .await
        .unwrap();
    assert_eq!(code, 200);
    wait_until(WAIT, "the pushed record stored", || async {
        communications(&app).await == 1
    })
    .await;

    // No client certificate, a certificate from another CA, plain HTTP: none is served.
    let refused = push_over(&pki.client(false), &base, "n-tls-2").await;
    assert!(refused.is_err(), "{refused:?}");
    let mut pem = std::fs::read(&pki.other_client_cert).unwrap();
    pem.extend(std::fs::read(&pki.other_client_key).unwrap());
    let intruder = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let refused = push_over(&intruder, &base, "n-tls-3").await;
    assert!(refused.is_err(), "{refused:?}");
    let plain = format!("http://127.0.0.1:{}", app.http.unwrap().port());
    let refused = push_over(&reqwest::Client::new(), &plain, "n-tls-4").await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|c| *c != 200),
        "{refused:?}"
    );
    assert_eq!(communications(&app).await, 1);
    app.stop().await;
}

/// A TLS terminator in front of the local Redis (which has no TLS port): what a `rediss://`
/// server looks like, with the PKI's server certificate and, like `tls-auth-clients yes`, a
/// required client certificate.
async fn tls_redis_proxy(pki: &Pki) -> (SocketAddr, CancellationToken) {
    let acceptor = tokio_rustls::TlsAcceptor::from(
        botpipe::transport::server_tls(&ServerTlsSettings {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            client_ca_file: Some(pki.ca.clone()),
        })
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => break,
                },
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut redis) = tokio::net::TcpStream::connect(redis_addr()).await else {
                    return;
                };
                let _closed = tokio::io::copy_bidirectional(&mut tls, &mut redis).await;
            });
        }
    });
    (addr, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_the_queue_runs_over_rediss_with_a_private_ca_and_a_client_certificate() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let pki = Pki::new();
    let (addr, proxy) = tls_redis_proxy(&pki).await;
    let mut settings = redis.settings(&format!("rediss://localhost:{}/0", addr.port()));
    settings.tls.ca_file = Some(pki.ca.clone());
    settings.tls.client_cert_file = Some(pki.client_cert.clone());
    settings.tls.client_key_file = Some(pki.client_key.clone());
    let queue = RedisStreamsQueue::new(&settings, fast_options(Duration::from_secs(30), 5), None)
        .expect("a rediss:// URL builds a TLS client");
    let batch = test_batch("tls", 3);
    queue.append(&batch).await.expect("XADD over TLS");
    let lease = queue
        .lease("tls-consumer", Duration::from_secs(2))
        .await
        .unwrap()
        .expect("the batch comes back over TLS");
    assert_eq!(lease.batch.id, batch.id);
    queue.ack(&lease).await.unwrap();
    assert_eq!(redis.xlen("stream").await, 0, "acked and trimmed");

    // Trusting another CA: nothing is queued, and the error says why.
    let mut wrong = redis.settings(&format!("rediss://localhost:{}/0", addr.port()));
    wrong.tls.ca_file = Some(pki.other_ca.clone());
    wrong.tls.client_cert_file = Some(pki.client_cert.clone());
    wrong.tls.client_key_file = Some(pki.client_key.clone());
    let untrusted =
        RedisStreamsQueue::new(&wrong, fast_options(Duration::from_secs(30), 5), None).unwrap();
    let error = untrusted.append(&batch).await.unwrap_err();
    let text = botpipe::telemetry::Chain(&error).to_string();
    assert!(
        text.contains("UnknownIssuer") || text.contains("invalid peer certificate"),
        "{text}"
    );
    proxy.cancel();
}
