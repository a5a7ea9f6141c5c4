//! Push ingest (`POST /api/data-push`) against the real app: authentication order, signature,
//! freshness, replay, size limit, bad records, and 200 only after the batch is durable, down to a
//! `kill -9` of the real binary right after the answer; a push answered 503 and sent again is
//! stored once.

use std::time::Duration;

use botpipe::config::{QueueBackend, SecretSource};
use botpipe::push::sign;
use botpipe::queue::Queue;
use botpipe::store::Store;
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::helpers::bin::{spawn_run, write_config};
use crate::helpers::keyspace::{redis_addr, TestRedis};
use crate::helpers::proxy::{FaultProxy, Mode};
use crate::helpers::{spawn_app, wait_until, TestApp};

const KEY: &str = "relay-key-1";
const SECRET: &str = "relay-secret-1";
const TZ: Tz = chrono_tz::Asia::Shanghai;
const WAIT: Duration = Duration::from_secs(60);

async fn push_app(tweak: impl FnOnce(&mut botpipe::config::Settings)) -> TestApp {
    spawn_app(vec![], |s| {
        s.push.enabled = true;
        s.push.api_key = Some(SecretSource::Inline(KEY.to_owned().into()));
        s.push.secret = Some(SecretSource::Inline(SECRET.to_owned().into()));
        s.push.timezone = TZ;
        tweak(s);
    })
    .await
}

/// Now as a relay writes it: naive local time with microseconds.
fn local_now() -> String {
    chrono::Utc::now()
        .with_timezone(&TZ)
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

fn envelope(records: Vec<Value>, nonce: &str) -> Value {
    json!({
        "botnet_type": "mozi",
        "data": records,
        "timestamp": local_now(),
        "nonce": nonce,
        "relay_server_id": "relay-001",
    })
}

fn rec(ip: &str, secs: i64) -> Value {
    let ts = chrono::DateTime::from_timestamp(1_772_000_000 + secs, 0)
        .unwrap()
        .with_timezone(&TZ)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    json!({"ip": ip, "timestamp": ts, "log_type": "online"})
}

/// Posts `body` with `key` and a signature made with `secret` over the body's own timestamp
/// and nonce.
async fn post(base: &str, body: &[u8], key: Option<&str>, secret: &str) -> (u16, Value) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let ts = v["timestamp"].as_str().unwrap_or("");
    let nonce = v["nonce"].as_str().unwrap_or("");
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/data-push"))
        .header("Content-Type", "application/json")
        .header("X-Signature", sign(secret, ts, nonce, body))
        .body(body.to_vec());
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// Posts `body` with `Transfer-Encoding: chunked` (no Content-Length) and the right key; returns
/// the status code.
async fn post_chunked(addr: std::net::SocketAddr, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/data-push HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\nX-Signature: 00\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1000) {
        // The server may answer and close before the body ends; later writes may then fail.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || s.write_all(chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"))
}

/// The JSON body of an envelope of `records` with `nonce`.
fn envelope_json(records: Vec<Value>, nonce: &str) -> Vec<u8> {
    serde_json::to_vec(&envelope(records, nonce)).unwrap()
}

/// Pushes `records` to `app` as the relay does: right key and secret, fresh timestamp.
async fn push(app: &TestApp, records: Vec<Value>, nonce: &str) -> (u16, Value) {
    post(
        &base(app),
        &envelope_json(records, nonce),
        Some(KEY),
        SECRET,
    )
    .await
}

/// Waits until `app` has stored `n` mozi communications.
async fn wait_stored(app: &TestApp, n: u64, what: &str) {
    wait_until(WAIT, what, || async {
        communications(app, "mozi").await == n
    })
    .await;
}

fn base(app: &TestApp) -> String {
    format!("http://{}", app.http.unwrap())
}

async fn communications(app: &TestApp, t: &str) -> u64 {
    app.store
        .counts()
        .await
        .unwrap()
        .communications
        .get(t)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn signed_push_is_answered_with_the_legacy_keys_and_stored() {
    let app = push_app(|_| {}).await;
    let records = vec![
        rec("1.2.3.4", 0),
        rec("1.2.3.5", 1),
        rec("1.2.3.4", 0), // the same event twice
    ];
    let (code, r) = push(&app, records, "n-accepted").await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["success"], true);
    assert_eq!(r["received_count"], 3);
    assert_eq!(r["processed_count"], 3);
    assert_eq!(r["duplicate_count"], 1);
    assert_eq!(r["error_count"], 0);
    for k in ["message", "timestamp", "processing_time_ms"] {
        assert!(!r[k].is_null(), "missing {k} in {r}");
    }
    wait_stored(&app, 2, "pushed records stored").await;
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401_before_the_body_is_looked_at() {
    let app = push_app(|_| {}).await;
    // Not even JSON: with a wrong key the answer is still 401, never a 400 about the body.
    for (key, body) in [
        (None, b"garbage".to_vec()),
        (Some("wrong"), b"garbage".to_vec()),
        (
            Some("wrong"),
            envelope_json(vec![rec("1.2.3.4", 0)], "n-key"),
        ),
    ] {
        let (code, r) = post(&base(&app), &body, key, SECRET).await;
        assert_eq!(code, 401, "{key:?}: {r}");
        assert_eq!(r["error_type"], "auth");
        assert_eq!(r["error"], "Unauthorized");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_bad_signature_is_401() {
    let app = push_app(|_| {}).await;
    let body = envelope_json(vec![rec("1.2.3.4", 0)], "n-sig");
    let (code, r) = post(&base(&app), &body, Some(KEY), "another-secret").await;
    assert_eq!(code, 401, "{r}");
    assert_eq!(r["error_type"], "bad_signature");

    // A signature over the body is not enough: it must cover timestamp and nonce too.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/data-push", base(&app)))
        .header("X-API-Key", KEY)
        .header("X-Signature", sign(SECRET, "", "", &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // No signature header at all.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/data-push", base(&app)))
        .header("X-API-Key", KEY)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(communications(&app, "mozi").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_stale_timestamp_is_400_and_naive_times_are_the_relays_local_time() {
    let app = push_app(|_| {}).await;
    let mut env = envelope(vec![rec("1.2.3.4", 0)], "n-stale");
    let old = (chrono::Utc::now() - chrono::TimeDelta::seconds(301))
        .with_timezone(&TZ)
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string();
    env["timestamp"] = json!(old);
    let (code, r) = post(
        &base(&app),
        &serde_json::to_vec(&env).unwrap(),
        Some(KEY),
        SECRET,
    )
    .await;
    assert_eq!(code, 400, "{r}");
    assert_eq!(r["error_type"], "stale_timestamp");

    // UTC "now" written naively is eight hours off in Asia/Shanghai.
    env["timestamp"] = json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string());
    env["nonce"] = json!("n-stale-2");
    let (code, _) = post(
        &base(&app),
        &serde_json::to_vec(&env).unwrap(),
        Some(KEY),
        SECRET,
    )
    .await;
    assert_eq!(code, 400);

    // An explicit offset is honoured.
    env["timestamp"] = json!(chrono::Utc::now().to_rfc3339());
    env["nonce"] = json!("n-stale-3");
    let (code, r) = post(
        &base(&app),
        &serde_json::to_vec(&env).unwrap(),
        Some(KEY),
        SECRET,
    )
    .await;
    assert_eq!(code, 200, "{r}");
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_nonce_is_400_and_unsigned_requests_do_not_burn_nonces() {
    let app = push_app(|_| {}).await;
    let body = envelope_json(vec![rec("1.2.3.4", 0)], "n-replay");
    // A forged request with the nonce first: refused, and the nonce is not recorded.
    let (code, _) = post(&base(&app), &body, Some(KEY), "forged").await;
    assert_eq!(code, 401);
    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(code, 200, "{r}");
    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(code, 400, "{r}");
    assert_eq!(r["error_type"], "replayed_nonce");
    // A fresh nonce, as the relay sends on a retry, is fine.
    let (code, _) = push(&app, vec![rec("1.2.3.4", 0)], "n-replay-2").await;
    assert_eq!(code, 200);
    app.stop().await;
}

/// Issue 13: a push without a nonce skipped the replay guard, so it could be replayed for the
/// whole freshness window.
#[tokio::test]
async fn issue_13_a_push_without_a_nonce_is_400() {
    let app = push_app(|_| {}).await;
    for nonce in [None, Some("")] {
        let mut env = envelope(vec![rec("1.2.3.4", 0)], "unused");
        match nonce {
            None => {
                env.as_object_mut().unwrap().remove("nonce");
            }
            Some(n) => env["nonce"] = json!(n),
        }
        let body = serde_json::to_vec(&env).unwrap();
        // Twice: the second would be a replay if the first had been taken.
        for _ in 0..2 {
            let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
            assert_eq!(code, 400, "{nonce:?}: {r}");
            assert_eq!(r["error_type"], "invalid_body", "{r}");
            assert!(
                r["error"].as_str().unwrap().contains("missing nonce"),
                "{r}"
            );
        }
    }
    // A fresh nonce goes through.
    let (code, r) = push(&app, vec![rec("1.2.3.4", 0)], "n-present").await;
    assert_eq!(code, 200, "{r}");
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_413_declared_or_streamed() {
    let app = push_app(|s| s.push.max_body_bytes = 4096).await;
    let records = (0..200).map(|i| rec("1.2.3.4", i)).collect();
    let body = envelope_json(records, "n-big");
    assert!(body.len() > 4096);
    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(code, 413, "{r}");
    assert_eq!(r["error_type"], "body_too_large");

    // Without a Content-Length (chunked), the limit applies while reading.
    assert_eq!(post_chunked(app.http.unwrap(), &body).await, 413);

    // Within the limit it goes through.
    let (code, _) = push(&app, vec![rec("1.2.3.4", 0)], "n-small").await;
    assert_eq!(code, 200);
    app.stop().await;
}

#[tokio::test]
async fn invalid_envelopes_are_400_once_signed() {
    let app = push_app(|_| {}).await;
    let mut no_data = envelope(vec![], "n-empty");
    let (code, r) = post(
        &base(&app),
        &serde_json::to_vec(&no_data).unwrap(),
        Some(KEY),
        SECRET,
    )
    .await;
    assert_eq!(
        (code, r["error_type"].as_str()),
        (400, Some("invalid_body")),
        "{r}"
    );
    no_data["data"] = json!((0..5001).map(|i| rec("1.2.3.4", i)).collect::<Vec<_>>());
    no_data["nonce"] = json!("n-toomany");
    let (code, _) = post(
        &base(&app),
        &serde_json::to_vec(&no_data).unwrap(),
        Some(KEY),
        SECRET,
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = post(&base(&app), b"[1,2,3]", Some(KEY), SECRET).await;
    assert_eq!(code, 400);
    app.stop().await;
}

#[tokio::test]
async fn unknown_botnet_types_and_bad_records_are_dead_letters_and_the_rest_is_kept() {
    let app = push_app(|_| {}).await;
    let mut odd = rec("1.2.3.7", 2);
    odd["botnet_type"] = json!("conficker");
    let records = vec![
        rec("1.2.3.4", 0),
        rec("1.2.3.5", 1),
        odd,
        rec("10.1.1.1", 3), // private address
    ];
    let (code, r) = push(&app, records, "n-mixed").await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["received_count"], 4);
    assert_eq!(r["processed_count"], 2);
    assert_eq!(r["error_count"], 2);
    wait_until(
        WAIT,
        "valid records stored, rejects dead-lettered",
        || async {
            let c = app.store.counts().await.unwrap();
            c.communications.get("mozi") == Some(&2) && c.total_dead_letters() == 2
        },
    )
    .await;
    let c = app.store.counts().await.unwrap();
    assert_eq!(c.dead_letters.get("unknown_botnet_type"), Some(&1));
    assert_eq!(c.dead_letters.get("bad_ip"), Some(&1));
    let letters = app.store.dead_letters(10, None).await.unwrap();
    assert!(letters.iter().all(|d| d.letter.source == "push:relay-001"));
    // The private-IP record had no type of its own: its dead letter carries the envelope's, so a
    // replay can judge it whole.
    let bad_ip = letters
        .iter()
        .find(|d| d.letter.reason.as_str() == "bad_ip")
        .unwrap();
    assert!(
        bad_ip.letter.raw.contains("\"botnet_type\":\"mozi\""),
        "{}",
        bad_ip.letter.raw
    );
    app.stop().await;
}

#[tokio::test]
async fn push_is_503_and_not_claimed_while_the_batch_cannot_be_made_durable() {
    let app = push_app(|s| s.queue.handoff_deadline = Duration::from_millis(200)).await;
    let blocker = rusqlite::Connection::open(app.dir.path().join("queue.sqlite")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (code, r) = push(&app, vec![rec("1.2.3.4", 0)], "n-durable").await;
    assert_eq!(code, 503, "{r}");
    assert_eq!(r["success"], false);
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    // The relay retries with a fresh nonce.
    let (code, r) = push(&app, vec![rec("1.2.3.4", 0)], "n-durable-2").await;
    assert_eq!(code, 200, "{r}");
    wait_stored(&app, 1, "the retried batch stored").await;
    app.stop().await;
}

/// What the issue 12 resend tests push: 10 IPs seen online twice each (20 communications),
/// one of them repeated, and two private addresses (dead letters).
const RESEND_IPS: usize = 10;
const RESEND_VALID: u64 = 20;
const RESEND_REJECTS: u64 = 2;

fn resend_records() -> Vec<Value> {
    let mut records: Vec<Value> = (0..RESEND_IPS)
        .flat_map(|i| {
            let ip = format!("8.12.5.{}", i + 1);
            [rec(&ip, i as i64), rec(&ip, 1000 + i as i64)]
        })
        .collect();
    records.push(rec("8.12.5.1", 0)); // repeated within the push
    records.push(rec("10.12.5.1", 1)); // private: bad_ip
    records.push(rec("192.168.12.5", 2)); // private: bad_ip
    records
}

/// Node rows and the sum of their `communication_count` in the embedded store.
fn node_totals(app: &TestApp) -> (i64, i64) {
    let conn = rusqlite::Connection::open(app.dir.path().join("botpipe.sqlite")).unwrap();
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(communication_count), 0) FROM botnet_nodes_mozi",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Waits until the first copy of the resend batch is stored: rows and dead letters.
async fn wait_first_copy(app: &TestApp, extra: u64, what: &str) {
    wait_until(WAIT, what, || async {
        let c = app.store.counts().await.unwrap();
        c.communications.get("mozi") == Some(&(RESEND_VALID + extra))
            && c.total_dead_letters() == RESEND_REJECTS
    })
    .await;
}

/// Waits until queue and spool are empty (every copy acked, so stored), then checks that the
/// resend batch is stored exactly once: rows, node counts, dead letters. `extra` is the
/// communications of other pushes of the test, one per node of its own.
async fn assert_resend_stored_once(app: &TestApp, extra: u64) {
    wait_until(WAIT, "every copy processed and acked", || async {
        let queued = app.queue.depth().await.map(|d| d.total).unwrap_or(1);
        let spooled = match app.handoff.spool() {
            Some(s) => s.depth().await.map(|d| d.total).unwrap_or(1),
            None => 0,
        };
        queued == 0 && spooled == 0
    })
    .await;
    let c = app.store.counts().await.unwrap();
    assert_eq!(
        c.communications.get("mozi"),
        Some(&(RESEND_VALID + extra)),
        "each record once"
    );
    assert_eq!(
        c.total_dead_letters(),
        RESEND_REJECTS,
        "each dead letter once: {:?}",
        c.dead_letters
    );
    assert_eq!(c.dead_letters.get("bad_ip"), Some(&RESEND_REJECTS));
    assert_eq!(
        node_totals(app),
        (
            RESEND_IPS as i64 + extra as i64,
            (RESEND_VALID + extra) as i64
        ),
        "node rows and their communication_count"
    );
}

/// Issue 12, item 5: a push answered 503 `not_durable` whose batch became durable anyway (the
/// queue write finished after the hand-off deadline), then sent again unchanged by its relay,
/// same nonce: the resend is taken (200, not 400 `replayed_nonce`, which a relay takes as
/// final although nothing may have been stored), and the records, node counts and dead letters
/// are stored once.
#[tokio::test]
async fn issue_12_a_push_answered_503_and_sent_again_is_stored_once_embedded_queue() {
    let app = push_app(|s| s.queue.handoff_deadline = Duration::from_millis(200)).await;
    let body = envelope_json(resend_records(), "n-resend-embedded");
    let blocker = rusqlite::Connection::open(app.dir.path().join("queue.sqlite")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(code, 503, "{r}");
    assert_eq!(r["error_type"], "not_durable", "{r}");
    // The queue write that missed the deadline is still waiting on the lock; it commits once
    // the lock is gone, so the batch answered 503 is durable after all, and stored.
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    wait_first_copy(&app, 0, "the batch answered 503 stored anyway").await;

    // The relay sends the very same request again.
    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(code, 200, "the resend after a 503 must be taken: {r}");
    assert_eq!(r["processed_count"], RESEND_VALID + 1);
    assert_eq!(r["error_count"], RESEND_REJECTS);
    assert_resend_stored_once(&app, 0).await;
    // Taken once, the request is a replay again.
    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(
        (code, r["error_type"].as_str()),
        (400, Some("replayed_nonce"))
    );
    app.stop().await;
}

/// Issue 12, item 5, on Redis: the `XADD` of a push reaches Redis but its reply comes after the
/// hand-off deadline (a slow link), and the spool cannot take the batch either (locked), so the
/// push is answered 503 `not_durable` although the batch is in the stream. The relay sends the
/// same request again: it is taken, and the two copies (one straight from Redis, one through
/// the spool or Redis) leave every record, node count and dead letter once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_push_answered_503_and_sent_again_is_stored_once_redis_queue() {
    let Some(redis) = TestRedis::require() else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr()).await;
    let app = push_app(|s| {
        s.queue.handoff_deadline = Duration::from_millis(200);
        s.queue.backend = QueueBackend::Redis(redis.settings(&proxy.redis_url()));
        // A worker's ack lost to the slow link leaves its entry pending until reclaimed.
        s.queue.lease_timeout = Duration::from_secs(2);
    })
    .await;
    // A first push goes to Redis: the link is up before it turns slow.
    let (code, r) = push(&app, vec![rec("8.12.6.1", 0)], "n-resend-warm").await;
    assert_eq!(code, 200, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .ends_with("durable in the queue."),
        "{r}"
    );

    let body = envelope_json(resend_records(), "n-resend-redis");
    let blocker = rusqlite::Connection::open(app.dir.path().join("spool.sqlite")).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    proxy.set_mode(Mode::Delay(Duration::from_secs(2)));
    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(code, 503, "{r}");
    assert_eq!(r["error_type"], "not_durable", "{r}");
    proxy.set_mode(Mode::Pass);
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    // The XADD went up at once; only its reply was late: the batch is in Redis and is stored.
    wait_first_copy(&app, 1, "the batch answered 503 stored from Redis anyway").await;

    let (code, r) = post(&base(&app), &body, Some(KEY), SECRET).await;
    assert_eq!(code, 200, "the resend after a 503 must be taken: {r}");
    assert_resend_stored_once(&app, 1).await;
    app.stop().await;
    drop(redis);
}

#[tokio::test]
async fn push_is_404_when_disabled() {
    let app = spawn_app(vec![], |_| {}).await;
    let (code, r) = push(&app, vec![rec("1.2.3.4", 0)], "n-off").await;
    assert_eq!(code, 404, "{r}");
    app.stop().await;
}

fn stored(store: &std::path::Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(store) else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM botnet_communications_mozi", [], |r| {
        r.get(0)
    })
    .unwrap_or(0)
}

/// Records in the entries of the queue file, read without leasing anything.
fn queued(queue: &std::path::Path) -> usize {
    let conn = rusqlite::Connection::open(queue).unwrap();
    let mut stmt = conn.prepare("SELECT payload FROM botpipe_queue").unwrap();
    let payloads: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    payloads
        .iter()
        .map(|p| botpipe::record::Batch::decode(p).unwrap().records.len())
        .sum()
}

#[tokio::test]
async fn kill_9_right_after_the_200_loses_nothing_that_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [push]\nenabled = true\napi_key = {KEY:?}\nsecret = {SECRET:?}\ntimezone = \"Asia/Shanghai\"\n",
            dir.path().display().to_string()
        ),
    );
    let store = dir.path().join("botpipe.sqlite");
    let queue = dir.path().join("queue.sqlite");
    let n = 2000;
    let records: Vec<Value> = (0..n)
        .map(|i| rec(&format!("7.{}.{}.1", i / 200 + 1, i % 200 + 1), i))
        .collect();
    let body = envelope_json(records, "n-kill");

    let bp = spawn_run(&config);
    let (code, r) = post(&format!("http://{}", bp.http), &body, Some(KEY), SECRET).await;
    bp.kill9(); // at once: the worker has had no time to matter
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["processed_count"], n);

    // On disk right now: the batch is in the queue file, or already stored (a stored batch whose
    // ack was lost is still in the queue too, and is absorbed on redelivery).
    let in_store = stored(&store);
    let in_queue = queued(&queue);
    assert!(
        in_queue == n as usize || in_store == n,
        "acknowledged batch not durable: {in_queue} queued, {in_store} stored"
    );

    // A restart finishes the job.
    let _bp = spawn_run(&config);
    wait_until(
        WAIT,
        "the pushed batch stored after the restart",
        || async { stored(&store) == n },
    )
    .await;
}

#[tokio::test]
async fn push_is_503_under_backpressure_and_accepted_again_when_it_lifts() {
    // No workers: accepted batches stay queued and push the depth over the high watermark.
    let app = push_app(|s| {
        s.worker_count = 0;
        s.queue.high_watermark = 2;
        s.queue.low_watermark = 1;
    })
    .await;
    for i in 0..2 {
        let (code, r) = push(&app, vec![rec("1.2.3.4", i)], &format!("n-bp-{i}")).await;
        assert_eq!(code, 200, "{r}");
    }
    let mut i = 10;
    wait_until(WAIT, "push refused with 503 backpressure", || {
        i += 1;
        let body = envelope_json(vec![rec("1.2.3.4", i)], &format!("n-bp-{i}"));
        let app = &app;
        async move {
            let (code, r) = post(&base(app), &body, Some(KEY), SECRET).await;
            code == 503 && r["error_type"] == "backpressure"
        }
    })
    .await;

    // A worker drains the queue (as `botpipe worker` would) and pushes are accepted again.
    let worker = botpipe::worker::Worker::new(
        "drain",
        app.queue.clone(),
        app.store.clone(),
        botpipe::enrich::AnyLookup::Disabled,
    );
    while let botpipe::worker::Outcome::Stored { .. } =
        worker.try_process_one(Duration::from_millis(100)).await
    {}
    let mut j = 100;
    wait_until(WAIT, "push accepted after the queue drained", || {
        j += 1;
        let body = envelope_json(vec![rec("1.2.3.4", j)], &format!("n-bp-{j}"));
        let app = &app;
        async move { post(&base(app), &body, Some(KEY), SECRET).await.0 == 200 }
    })
    .await;
    app.stop().await;
}
