//! The foundation's end-to-end guarantees on the embedded default: legacy collectors, confirm
//! only after durability, collector resets, crash redelivery without double counting, and the
//! demo's own check.

use std::collections::BTreeMap;
use std::time::Duration;

use botpipe::demo::Flavor;
use botpipe::queue::Queue;
use botpipe::store::{Store, StoreCounts};

use crate::helpers::{endpoint, spawn_app, spawn_collector, wait_until, wire, TestApp};

const DRAIN: Duration = Duration::from_secs(60);

async fn drained(app: &TestApp, c: &botpipe::demo::DemoCollector) -> bool {
    c.unpulled() == 0
        && app
            .queue
            .depth()
            .await
            .map(|d| d.total == 0)
            .unwrap_or(false)
}

async fn counts(app: &TestApp) -> StoreCounts {
    app.store.counts().await.unwrap()
}

/// Pushes `n` distinct valid records (two types, repeated IPs) and returns them.
fn push_valid(c: &botpipe::demo::DemoCollector, n: usize, minute_offset: usize) -> usize {
    for i in 0..n {
        let ip = format!("1.{}.{}.{}", (i / 7) % 200 + 1, i % 7 + 1, (i % 13) + 1);
        let t = if i % 2 == 0 { "mozi" } else { "ramnit" };
        let log = if i % 5 == 0 { "cleanup" } else { "online" };
        let secs = (minute_offset + i) as i64;
        let ts = chrono::DateTime::from_timestamp(1_772_000_000 + secs, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        c.push(wire(&ip, &ts, t, log));
    }
    n
}

#[tokio::test]
async fn legacy_collector_every_valid_record_is_stored_once_and_invalid_ones_are_dead_letters() {
    let tc = spawn_collector(Flavor::Legacy, Some("k3y")).await;
    let c = &tc.collector;
    let valid = push_valid(c, 2300, 0);
    // Duplicates of already served records and invalid ones, interleaved.
    c.push(wire("1.1.1.1", "1960-01-01T00:00:00", "mozi", "online")); // out of range
    c.push(wire("10.0.0.1", "2026-03-03T00:00:00", "mozi", "online")); // private
    c.push(wire(
        "1.1.1.1",
        "2026-03-03T00:00:00",
        "conficker",
        "online",
    ));
    c.push(wire("1.1.1.1", "2026-03-03T00:00:00", "Bad;Type", "online"));
    c.push(wire("1.1.1.1", "2026-03-03T00:00:00", "mozi", "offline"));
    c.push(serde_json::json!("just a string"));
    c.push(serde_json::json!({"timestamp": "2026-03-03T00:00:00", "botnet_type": "mozi"}));
    let duplicates = push_valid(c, 100, 0);
    let total = c.total();

    let mut ep = endpoint("legacy", &tc.url, Duration::from_millis(100), 500);
    ep.api_key = Some(botpipe::config::SecretSource::Inline(
        "k3y".to_owned().into(),
    ));
    let app = spawn_app(vec![ep], |_| {}).await;
    wait_until(DRAIN, "legacy collector drained and stored", || {
        drained(&app, c)
    })
    .await;

    let got = counts(&app).await;
    assert_eq!(
        got.total_communications(),
        valid as u64,
        "each valid record exactly once"
    );
    let want_dl: BTreeMap<String, u64> = [
        ("bad_timestamp", 1),
        ("bad_ip", 1),
        ("unknown_botnet_type", 1),
        ("invalid_botnet_type", 1),
        ("bad_log_type", 1),
        ("invalid_json", 1),
        ("missing_field", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got.dead_letters, want_dl);
    let letters = app.store.dead_letters(100, None).await.unwrap();
    assert!(letters
        .iter()
        .all(|d| d.letter.source == "legacy" && !d.letter.raw.is_empty()));

    // Positional confirms: every record confirmed exactly once, each confirm covering exactly
    // the records of the pull it followed.
    let confirms = c.confirms();
    let marked: usize = confirms.iter().map(|x| x.marked.len()).sum();
    assert_eq!(marked, total);
    assert!(confirms.iter().all(|x| x.count as usize == x.marked.len()));
    assert_eq!(valid + duplicates + 7, total);
    app.stop().await;
}

#[tokio::test]
async fn nothing_is_confirmed_while_the_queue_cannot_make_a_batch_durable() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    let c = &tc.collector;
    let dir = tempfile::tempdir().unwrap();
    let queue_path = dir.path().join("queue.sqlite");
    let mut settings = crate::helpers::test_settings(dir.path());
    settings.endpoints = vec![endpoint("east", &tc.url, Duration::from_millis(100), 100)];
    settings.queue.handoff_deadline = Duration::from_millis(200);
    let app = crate::helpers::spawn_app_with(dir, settings).await;
    // Hold the queue file's write lock from outside: appends cannot commit.
    let blocker = rusqlite::Connection::open(&queue_path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let valid = push_valid(c, 300, 0);

    wait_until(DRAIN, "several pulls while the queue is locked", || async {
        c.pulls() >= 3
    })
    .await;
    assert!(
        c.confirms().is_empty(),
        "confirmed a batch that was not durable"
    );
    assert_eq!(c.unpulled(), valid);

    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    wait_until(DRAIN, "drained after the queue recovered", || {
        drained(&app, c)
    })
    .await;
    assert_eq!(counts(&app).await.total_communications(), valid as u64);
    app.stop().await;
}

#[tokio::test]
async fn collector_reset_is_detected_and_pulling_resumes() {
    for flavor in [Flavor::Botpipe, Flavor::Legacy] {
        let tc = spawn_collector(flavor, None).await;
        let c = &tc.collector;
        let first = push_valid(c, 40, 0);
        let app = spawn_app(
            vec![endpoint("ep", &tc.url, Duration::from_millis(50), 1000)],
            |_| {},
        )
        .await;
        wait_until(DRAIN, "first generation stored", || async {
            drained(&app, c).await && counts(&app).await.total_communications() == first as u64
        })
        .await;

        // The collector's cache is recreated: seq restarts at 1, below botpipe's cursor.
        c.reset();
        let second = push_valid(c, 25, 10_000);
        wait_until(
            DRAIN,
            "second generation stored after the reset",
            || async {
                drained(&app, c).await
                    && counts(&app).await.total_communications() == (first + second) as u64
            },
        )
        .await;
        app.stop().await;
    }
}

#[tokio::test]
async fn demo_summary_matches_what_the_generator_expects() {
    let dir = tempfile::tempdir().unwrap();
    let args = botpipe::cli::DemoArgs {
        records: 3000,
        data_dir: Some(dir.path().to_path_buf()),
        interval: Duration::from_millis(50),
        batch_size: 500,
        json: true,
        keep: false,
    };
    // Geodata from a data directory with none: the summary does not depend on the machine.
    let configured = botpipe::config::Settings::embedded_default().with_data_dir(dir.path());
    let s = botpipe::demo::run_demo(&args, &configured).await.unwrap();
    assert!(s.matches_expected, "{s:#?}");
    assert_eq!(s.records_pulled, 3000);
    assert_eq!(s.dead_lettered, s.expected.invalid);
    assert!(
        s.expected.invalid > 0,
        "the demo must include invalid records"
    );
    assert_eq!(
        s.communications_stored,
        s.expected.communications.values().sum::<u64>()
    );
    assert!(
        s.communications_stored < 3000 - s.expected.invalid,
        "the demo must include duplicates"
    );
    assert_eq!(s.nodes.len(), 4);
}
