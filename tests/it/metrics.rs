//! Metrics from zero (issue 16, item 2): every counter `docs/metrics.md` documents is exported
//! by a freshly started `botpipe run` (and `botpipe collector`) with the value 0, for every
//! configured endpoint (source) and every documented label value, so that a query or an alert
//! on it says 0 rather than "no data". The list is read from `docs/metrics.md` itself, so the
//! documentation and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::helpers::bin::{spawn_run, write_config};
use crate::helpers::collector::{CollectorProcess, KEY};
use crate::helpers::db::{Backend, TestDb};

/// One row of a metrics table in `docs/metrics.md`.
#[derive(Debug)]
struct Documented {
    name: String,
    kind: String,
    labels: BTreeSet<String>,
    meaning: String,
}

/// The rows of `docs/metrics.md`: those of `botpipe run` (before the "Collector" section) and
/// those of `botpipe collector`.
fn documented() -> (Vec<Documented>, Vec<Documented>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let text = std::fs::read_to_string(path).unwrap();
    let (mut run, mut collector) = (Vec::new(), Vec::new());
    let mut in_collector = false;
    for line in text.lines() {
        if line.starts_with("## Collector") {
            in_collector = true;
        }
        if !line.starts_with("| `") {
            continue;
        }
        // `| name | type | labels | meaning |`; no cell of this file holds a `|`.
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "a metrics row that is not 4 cells: {line}");
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        let d = Documented {
            name: cells[1].trim_matches('`').to_owned(),
            kind: cells[2].to_owned(),
            labels,
            meaning: cells[4].to_owned(),
        };
        if in_collector {
            collector.push(d);
        } else {
            run.push(d);
        }
    }
    assert!(
        run.len() > 30 && collector.len() > 5,
        "docs/metrics.md tables not found"
    );
    (run, collector)
}

/// One exported sample: its labels and value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of `name` (exactly that series name) in the exposition `text`.
fn samples(text: &str, name: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let (l, v) = r.split_once('}').unwrap();
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // a longer name with this prefix
        };
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push(Sample {
            labels,
            value: value.trim().parse().unwrap(),
        });
    }
    out
}

/// Checks every documented counter of `docs` in `text`: exported, 0, with the documented label
/// names, one series per configured `instances` value of `instance_label`, and label values the
/// documentation names. Histograms must be exported too (their count may already move).
/// Returns the problems found.
fn check(text: &str, docs: &[Documented], instance_label: &str, instances: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for d in docs {
        match d.kind.as_str() {
            "counter" => {}
            "histogram" => {
                if samples(text, &format!("{}_count", d.name)).is_empty() {
                    problems.push(format!("{}: histogram not exported at start", d.name));
                }
                continue;
            }
            _ => continue,
        }
        let found = samples(text, &d.name);
        if found.is_empty() {
            problems.push(format!("{}: not exported at start", d.name));
            continue;
        }
        let mut seen_instances = BTreeSet::new();
        for s in &found {
            if s.value != 0.0 {
                problems.push(format!("{}{:?} = {} at start", d.name, s.labels, s.value));
            }
            let names: BTreeSet<String> = s.labels.keys().cloned().collect();
            if names != d.labels {
                problems.push(format!(
                    "{}: labels {names:?}, documented {:?}",
                    d.name, d.labels
                ));
            }
            for (k, v) in &s.labels {
                if k == instance_label {
                    seen_instances.insert(v.clone());
                } else if !d.meaning.contains(&format!("`{v}`"))
                    && !d.meaning.contains(&format!("{k}={v}"))
                {
                    problems.push(format!(
                        "{}: label value {k}={v:?} is exported but not documented",
                        d.name
                    ));
                }
            }
        }
        if d.labels.contains(instance_label) {
            let want: BTreeSet<String> = instances.iter().map(|s| (*s).to_owned()).collect();
            if seen_instances != want {
                problems.push(format!(
                    "{}: series for {instance_label} {seen_instances:?}, configured {want:?}",
                    d.name
                ));
            }
        }
    }
    problems
}

async fn scrape(url: &str) -> String {
    let resp = reqwest::Client::new()
        .get(url)
        .header("X-API-Key", KEY)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

// Issue 16, item 2: a fresh `botpipe run` exports every documented counter at 0, per endpoint.
// PostgreSQL as the store, so that the counters labelled by `backend` are there too.
#[tokio::test]
async fn issue_16_every_documented_counter_is_exported_at_start_with_0() {
    if !Backend::Postgres.available() {
        return;
    }
    let db = TestDb::create(Backend::Postgres).await;
    // A collector that accepts connections and never answers: each endpoint's first pull hangs
    // well beyond the test, so no pull outcome is counted before the scrape.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "data_dir = {data:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = {db:?}\n\
             [endpoints.east]\nurl = {url:?}\ninterval = \"2m\"\ntimeout = \"90s\"\ntimezone = \"UTC\"\n\
             [endpoints.west]\nurl = {url:?}\ninterval = \"2m\"\ntimeout = \"90s\"\ntimezone = \"UTC\"\n",
            data = dir.path().display().to_string(),
            db = db.url,
        ),
    );
    let run = spawn_run(&config);
    let text = scrape(&format!("http://{}/metrics", run.http)).await;
    let (docs, _) = documented();
    let problems = check(&text, &docs, "endpoint", &["east", "west"]);
    assert!(problems.is_empty(), "{problems:#?}\n\n{text}");

    // The build and the process describe themselves.
    let build = samples(&text, "botpipe_build_info");
    assert_eq!(build.len(), 1, "{text}");
    assert_eq!(build[0].value, 1.0);
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(build[0].labels.contains_key("commit") && build[0].labels.contains_key("profile"));
    if cfg!(target_os = "linux") {
        for name in [
            "botpipe_process_cpu_seconds_total",
            "botpipe_process_resident_memory_bytes",
            "botpipe_process_open_fds",
            "botpipe_process_max_fds",
            "botpipe_process_start_time_seconds",
        ] {
            let s = samples(&text, name);
            assert!(s.len() == 1 && s[0].value > 0.0, "{name} at start: {s:?}");
        }
    }
    drop(silent);
}

// Issue 16, item 2: a fresh `botpipe collector` exports every documented collector counter at
// 0, per configured source.
#[tokio::test]
async fn issue_16_every_documented_collector_counter_is_exported_at_start_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\napi_key = \"{KEY}\"\ncache_path = {cache:?}\n\
             scan_interval = \"20ms\"\n\
             [[sources]]\nname = \"generator\"\nkind = \"csv\"\nbotnet_type = \"mozi\"\npath = {a:?}\n\
             [[sources]]\nname = \"second\"\nkind = \"csv\"\nbotnet_type = \"mozi\"\npath = {b:?}\n",
            cache = dir.path().join("cache.sqlite").display().to_string(),
            a = logs.join("a_{date}.log").display().to_string(),
            b = logs.join("b.log").display().to_string(),
        ),
    )
    .unwrap();
    let (collector, api) =
        CollectorProcess::start(&config, &dir.path().join("collector.log")).await;
    let text = scrape(&format!("{}/metrics", api.base)).await;
    let (_, docs) = documented();
    let problems = check(&text, &docs, "source", &["generator", "second"]);
    assert!(problems.is_empty(), "{problems:#?}\n\n{text}");
    assert_eq!(samples(&text, "botpipe_build_info").len(), 1, "{text}");
    collector.kill9();
}
