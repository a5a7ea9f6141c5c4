//! Every metric botpipe exports: names follow `botpipe_<component>_<noun>_<unit>[_total]`.
//! Labels come from closed sets only: `endpoint` (configuration), `stage`, `outcome`, `reason`,
//! `result`. `docs/metrics.md` documents the same list; a test keeps them equal.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Histogram buckets in seconds, fine enough to see 1 ms drift on a 200 ms interval.
pub const HISTOGRAM_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0,
    10.0, 30.0,
];

/// Duration of one pull cycle (HTTP, hand-off and confirm), by `endpoint`.
pub const PULL_DURATION_SECONDS: &str = "botpipe_pull_duration_seconds";
/// How late each pull started relative to its schedule, by `endpoint`.
pub const PULL_SCHEDULE_DRIFT_SECONDS: &str = "botpipe_pull_schedule_drift_seconds";
/// Pull cycles by `endpoint` and `outcome` (`crate::pull::PullOutcomeLabel`).
pub const PULLS_TOTAL: &str = "botpipe_pulls_total";
/// Ticks skipped by backpressure, by `endpoint`.
pub const PULL_SKIPPED_TICKS_TOTAL: &str = "botpipe_pull_skipped_ticks_total";
/// Ticks missed because a pull overran its interval, by `endpoint`.
pub const PULL_MISSED_TICKS_TOTAL: &str = "botpipe_pull_missed_ticks_total";
/// The last confirmed cursor per `endpoint`.
pub const PULL_CURSOR: &str = "botpipe_pull_cursor";
/// Records the collector holds above the cursor as of the last pull, per `endpoint`; absent until
/// a collector has said (never a made-up 0).
pub const PULL_LAG_RECORDS: &str = "botpipe_pull_lag_records";
/// Collector resets detected, by `endpoint`.
pub const PULL_RESETS_TOTAL: &str = "botpipe_pull_resets_total";
/// Endpoint leases this process acquired, by `endpoint`.
pub const PULL_LEASE_ACQUISITIONS_TOTAL: &str = "botpipe_pull_lease_acquisitions_total";
/// Endpoint leases this process lost, by `endpoint` and `reason` (taken: Redis says another
/// process holds it or it expired there; expired: Redis did not answer in time).
pub const PULL_LEASE_LOSSES_TOTAL: &str = "botpipe_pull_lease_losses_total";
/// Endpoint leases this process gave back (balance or shutdown), by `endpoint`.
pub const PULL_LEASE_RELEASES_TOTAL: &str = "botpipe_pull_lease_releases_total";
/// Endpoints whose lease this process holds.
pub const PULL_ENDPOINTS_HELD: &str = "botpipe_pull_endpoints_held";
/// Ticks skipped because this process's lease could not be confirmed in time, by `endpoint`.
pub const PULL_LEASE_LOST_TICKS_TOTAL: &str = "botpipe_pull_lease_lost_ticks_total";
/// Records by `stage` (pull, push, queue, enrich, store, collector) and `outcome`.
pub const RECORDS_TOTAL: &str = "botpipe_records_total";
/// Dead letters by `reason`.
pub const DEAD_LETTERS_TOTAL: &str = "botpipe_dead_letters_total";
/// Batches waiting in the queue (ready + leased), sampled from the queue itself.
pub const QUEUE_DEPTH: &str = "botpipe_queue_depth";
/// Batches leased to workers and not yet acked.
pub const QUEUE_PENDING: &str = "botpipe_queue_pending";
/// Batches waiting in the local spool, sampled from the spool file.
pub const SPOOL_DEPTH: &str = "botpipe_spool_depth";
/// Batches the queue moved to its dead-letter area, by `reason` (max_deliveries, corrupt).
pub const QUEUE_DEAD_LETTERED_TOTAL: &str = "botpipe_queue_dead_lettered_total";
/// Batches the spool drainer moved from the spool into Redis.
pub const SPOOL_DRAINED_TOTAL: &str = "botpipe_spool_drained_total";
/// Hand-offs by `target` (queue, spool) and `outcome`.
pub const HANDOFF_TOTAL: &str = "botpipe_handoff_total";
/// Duration of one durable hand-off.
pub const HANDOFF_SECONDS: &str = "botpipe_handoff_seconds";
/// Geo lookups by `result` (hit, unknown, disabled).
pub const ENRICH_LOOKUPS_TOTAL: &str = "botpipe_enrich_lookups_total";
/// Build time of each open geo database (Unix seconds, from the file's metadata), by `database`
/// (the file's name); an ASN CSV, which has no metadata, reports its modification time, which
/// `scripts/fetch-geodata.sh` sets to the package's publication time.
pub const GEO_DATABASE_BUILD_TIMESTAMP_SECONDS: &str =
    "botpipe_geo_database_build_timestamp_seconds";
/// Geo database reloads after a file changed on disk, by `outcome` (ok, failed).
pub const ENRICH_RELOADS_TOTAL: &str = "botpipe_enrich_reloads_total";
/// Duration of one store transaction for a batch.
pub const STORE_BATCH_SECONDS: &str = "botpipe_store_batch_seconds";
/// Store batches by `outcome` (ok, retry, failed).
pub const STORE_BATCHES_TOTAL: &str = "botpipe_store_batches_total";
/// Transient store failures retried inside one batch, by `backend` (postgres, mysql).
pub const STORE_RETRIES_TOTAL: &str = "botpipe_store_retries_total";
/// Deadlocks the database reported to a store transaction, by `backend`. Partitioned writes
/// make them impossible between botpipe writers; a non-zero value means another writer.
pub const STORE_DEADLOCKS_TOTAL: &str = "botpipe_store_deadlocks_total";
/// Batches a worker finished, by `outcome`.
pub const WORKER_BATCHES_TOTAL: &str = "botpipe_worker_batches_total";
/// 1 while the workers can reach the store, 0 while it is known down and they wait for it.
pub const STORE_UP: &str = "botpipe_store_up";
/// 1 while hand-offs go straight to the spool because Redis timed out, 0 otherwise.
pub const HANDOFF_BYPASS: &str = "botpipe_handoff_bypass";
/// Lines and table rows a collector read, by `source` (configuration) and `outcome` (stored,
/// duplicate, no_match, bad_ip, non_public_ip, bad_timestamp, filtered_status, oversized).
pub const COLLECTOR_LINES_TOTAL: &str = "botpipe_collector_lines_total";
/// Files or tables a collector source read again from the start, by `source` and `reason`
/// (truncated, replaced, table_restarted).
pub const COLLECTOR_FILE_RESETS_TOTAL: &str = "botpipe_collector_file_resets_total";
/// Failed reads of a collector source (retried next scan), by `source`.
pub const COLLECTOR_SOURCE_ERRORS_TOTAL: &str = "botpipe_collector_source_errors_total";
/// Duration of one collector scan of all sources.
pub const COLLECTOR_SCAN_DURATION_SECONDS: &str = "botpipe_collector_scan_duration_seconds";
/// Records in the collector cache not yet confirmed, sampled from the cache.
pub const COLLECTOR_UNPULLED_RECORDS: &str = "botpipe_collector_unpulled_records";
/// Highest seq id the collector has assigned in its epoch.
pub const COLLECTOR_MAX_SEQ_ID: &str = "botpipe_collector_max_seq_id";
/// 1 while the collector's reading is paused because unpulled records reached the cap.
pub const COLLECTOR_READING_PAUSED: &str = "botpipe_collector_reading_paused";
/// Pull API requests, by `route` (pull, confirm, stats, health, metrics) and `outcome` (ok,
/// unauthorized, bad_request, unavailable).
pub const COLLECTOR_REQUESTS_TOTAL: &str = "botpipe_collector_requests_total";
/// Records a collector marked as pulled by confirms.
pub const COLLECTOR_CONFIRMED_RECORDS_TOTAL: &str = "botpipe_collector_confirmed_records_total";
/// Confirmed records a collector deleted after their retention period.
pub const COLLECTOR_EXPIRED_RECORDS_TOTAL: &str = "botpipe_collector_expired_records_total";

/// Push requests by `outcome` (ok, auth, bad_signature, body_too_large, body_timeout, invalid_body,
/// stale_timestamp, replayed_nonce, backpressure, not_durable, disabled).
pub const PUSH_REQUESTS_TOTAL: &str = "botpipe_push_requests_total";
/// Duration of one push request, from the first header to the answer (hand-off included).
pub const PUSH_DURATION_SECONDS: &str = "botpipe_push_duration_seconds";

/// Log lines that could not be written (stderr closed or full) and were dropped.
pub const LOG_WRITE_ERRORS_TOTAL: &str = "botpipe_log_write_errors_total";

/// Always 1; the labels say which build runs: `version`, `commit` (`BOTPIPE_GIT_COMMIT` at
/// build time, else `unknown`) and `profile` (`release` or `debug`).
pub const BUILD_INFO: &str = "botpipe_build_info";
/// CPU time of the process, user plus system, in seconds. A gauge in the exposition (the
/// metrics facade's counters are integers), used like a counter: `rate(…)`.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "botpipe_process_cpu_seconds_total";
/// Resident memory of the process.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "botpipe_process_resident_memory_bytes";
/// Virtual memory of the process.
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "botpipe_process_virtual_memory_bytes";
/// File descriptors the process holds open.
pub const PROCESS_OPEN_FDS: &str = "botpipe_process_open_fds";
/// The process's limit on open file descriptors (the soft limit).
pub const PROCESS_MAX_FDS: &str = "botpipe_process_max_fds";
/// OS threads of the process.
pub const PROCESS_THREADS: &str = "botpipe_process_threads";
/// When the process started, Unix seconds.
pub const PROCESS_START_TIME_SECONDS: &str = "botpipe_process_start_time_seconds";

/// Registers descriptions for every metric above.
pub fn describe_all() {
    describe_histogram!(
        PULL_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one pull cycle: HTTP, hand-off and confirm."
    );
    describe_histogram!(
        PULL_SCHEDULE_DRIFT_SECONDS,
        Unit::Seconds,
        "How late each pull started relative to its fixed-rate schedule."
    );
    describe_counter!(PULLS_TOTAL, "Pull cycles by endpoint and outcome.");
    describe_counter!(
        PULL_SKIPPED_TICKS_TOTAL,
        "Pull ticks skipped by backpressure."
    );
    describe_counter!(
        PULL_MISSED_TICKS_TOTAL,
        "Pull ticks missed because a pull overran its interval."
    );
    describe_gauge!(PULL_CURSOR, "Last confirmed seq cursor per endpoint.");
    describe_gauge!(
        PULL_LAG_RECORDS,
        "Records the collector holds above the cursor, as of the last pull, per endpoint."
    );
    describe_counter!(
        PULL_RESETS_TOTAL,
        "Collector resets detected (epoch change or seq below cursor)."
    );
    describe_counter!(
        PULL_LEASE_ACQUISITIONS_TOTAL,
        "Endpoint leases this process acquired."
    );
    describe_counter!(
        PULL_LEASE_LOSSES_TOTAL,
        "Endpoint leases this process lost, by reason (taken, expired)."
    );
    describe_counter!(
        PULL_LEASE_RELEASES_TOTAL,
        "Endpoint leases this process gave back (balance or shutdown)."
    );
    describe_gauge!(
        PULL_ENDPOINTS_HELD,
        "Endpoints whose lease this process holds."
    );
    describe_counter!(
        PULL_LEASE_LOST_TICKS_TOTAL,
        "Pull ticks skipped because the lease could not be confirmed in time."
    );
    describe_counter!(RECORDS_TOTAL, "Records by pipeline stage and outcome.");
    describe_counter!(DEAD_LETTERS_TOTAL, "Dead-lettered records by reason.");
    describe_gauge!(QUEUE_DEPTH, "Batches in the queue, ready plus leased.");
    describe_gauge!(
        QUEUE_PENDING,
        "Batches leased to workers and not yet acked."
    );
    describe_gauge!(SPOOL_DEPTH, "Batches in the local spool.");
    describe_counter!(
        QUEUE_DEAD_LETTERED_TOTAL,
        "Batches moved to the queue's dead-letter area, by reason."
    );
    describe_counter!(
        SPOOL_DRAINED_TOTAL,
        "Batches moved from the local spool into Redis."
    );
    describe_counter!(HANDOFF_TOTAL, "Durable hand-offs by target and outcome.");
    describe_histogram!(
        HANDOFF_SECONDS,
        Unit::Seconds,
        "Duration of one durable hand-off."
    );
    describe_counter!(ENRICH_LOOKUPS_TOTAL, "Geo lookups by result.");
    describe_gauge!(
        GEO_DATABASE_BUILD_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Build time of each open geo database, as Unix seconds."
    );
    describe_counter!(
        ENRICH_RELOADS_TOTAL,
        "Geo database reloads after a file changed, by outcome."
    );
    describe_histogram!(
        STORE_BATCH_SECONDS,
        Unit::Seconds,
        "Duration of one store transaction."
    );
    describe_counter!(STORE_BATCHES_TOTAL, "Store batch transactions by outcome.");
    describe_counter!(
        STORE_RETRIES_TOTAL,
        "Transient store failures (deadlock, serialization, lost connection) retried within a batch, by backend."
    );
    describe_counter!(
        STORE_DEADLOCKS_TOTAL,
        "Deadlocks the database reported to a store transaction, by backend."
    );
    describe_counter!(
        WORKER_BATCHES_TOTAL,
        "Batches processed by workers, by outcome."
    );
    describe_gauge!(
        STORE_UP,
        "1 while workers reach the store; 0 while it is down and they stop leasing and probe it."
    );
    describe_gauge!(
        HANDOFF_BYPASS,
        "1 while hand-offs skip Redis for the spool after a timeout, until a probe sees it answer."
    );
    describe_counter!(PUSH_REQUESTS_TOTAL, "Push requests by outcome.");
    describe_histogram!(
        PUSH_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one push request, durable hand-off included."
    );
    describe_counter!(
        LOG_WRITE_ERRORS_TOTAL,
        "Log lines dropped because they could not be written (stderr closed or full)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which build runs (version, commit, profile)."
    );
    describe_gauge!(
        PROCESS_CPU_SECONDS_TOTAL,
        Unit::Seconds,
        "CPU time of the process, user plus system (use rate() as for a counter)."
    );
    describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Resident memory of the process."
    );
    describe_gauge!(
        PROCESS_VIRTUAL_MEMORY_BYTES,
        Unit::Bytes,
        "Virtual memory of the process."
    );
    describe_gauge!(PROCESS_OPEN_FDS, "File descriptors the process holds open.");
    describe_gauge!(
        PROCESS_MAX_FDS,
        "The process's soft limit on open file descriptors."
    );
    describe_gauge!(PROCESS_THREADS, "OS threads of the process.");
    describe_gauge!(
        PROCESS_START_TIME_SECONDS,
        Unit::Seconds,
        "When the process started, Unix seconds."
    );
    describe_counter!(
        COLLECTOR_LINES_TOTAL,
        "Lines and table rows a collector read, by source and outcome."
    );
    describe_counter!(
        COLLECTOR_FILE_RESETS_TOTAL,
        "Files or tables a collector read again from the start, by source and reason."
    );
    describe_counter!(
        COLLECTOR_SOURCE_ERRORS_TOTAL,
        "Failed reads of a collector source, retried on the next scan."
    );
    describe_histogram!(
        COLLECTOR_SCAN_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one collector scan of all sources."
    );
    describe_gauge!(
        COLLECTOR_UNPULLED_RECORDS,
        "Records in the collector cache not yet confirmed."
    );
    describe_gauge!(
        COLLECTOR_MAX_SEQ_ID,
        "Highest seq id the collector has assigned in its epoch."
    );
    describe_gauge!(
        COLLECTOR_READING_PAUSED,
        "1 while collector reading is paused by the unpulled-records cap."
    );
    describe_counter!(
        COLLECTOR_REQUESTS_TOTAL,
        "Collector pull API requests by route and outcome."
    );
    describe_counter!(
        COLLECTOR_CONFIRMED_RECORDS_TOTAL,
        "Records a collector marked as pulled by confirms."
    );
    describe_counter!(
        COLLECTOR_EXPIRED_RECORDS_TOTAL,
        "Confirmed records a collector deleted after the retention period."
    );
}

/// Every metric name, for documentation checks.
pub const ALL: &[&str] = &[
    PULL_DURATION_SECONDS,
    PULL_SCHEDULE_DRIFT_SECONDS,
    PULLS_TOTAL,
    PULL_SKIPPED_TICKS_TOTAL,
    PULL_MISSED_TICKS_TOTAL,
    PULL_CURSOR,
    PULL_LAG_RECORDS,
    PULL_RESETS_TOTAL,
    PULL_LEASE_ACQUISITIONS_TOTAL,
    PULL_LEASE_LOSSES_TOTAL,
    PULL_LEASE_RELEASES_TOTAL,
    PULL_ENDPOINTS_HELD,
    PULL_LEASE_LOST_TICKS_TOTAL,
    RECORDS_TOTAL,
    DEAD_LETTERS_TOTAL,
    QUEUE_DEPTH,
    QUEUE_PENDING,
    SPOOL_DEPTH,
    QUEUE_DEAD_LETTERED_TOTAL,
    SPOOL_DRAINED_TOTAL,
    HANDOFF_TOTAL,
    HANDOFF_SECONDS,
    ENRICH_LOOKUPS_TOTAL,
    GEO_DATABASE_BUILD_TIMESTAMP_SECONDS,
    ENRICH_RELOADS_TOTAL,
    STORE_BATCH_SECONDS,
    STORE_BATCHES_TOTAL,
    STORE_RETRIES_TOTAL,
    STORE_DEADLOCKS_TOTAL,
    WORKER_BATCHES_TOTAL,
    STORE_UP,
    HANDOFF_BYPASS,
    PUSH_REQUESTS_TOTAL,
    PUSH_DURATION_SECONDS,
    LOG_WRITE_ERRORS_TOTAL,
    BUILD_INFO,
    PROCESS_CPU_SECONDS_TOTAL,
    PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_VIRTUAL_MEMORY_BYTES,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_THREADS,
    PROCESS_START_TIME_SECONDS,
    COLLECTOR_LINES_TOTAL,
    COLLECTOR_FILE_RESETS_TOTAL,
    COLLECTOR_SOURCE_ERRORS_TOTAL,
    COLLECTOR_SCAN_DURATION_SECONDS,
    COLLECTOR_UNPULLED_RECORDS,
    COLLECTOR_MAX_SEQ_ID,
    COLLECTOR_READING_PAUSED,
    COLLECTOR_REQUESTS_TOTAL,
    COLLECTOR_CONFIRMED_RECORDS_TOTAL,
    COLLECTOR_EXPIRED_RECORDS_TOTAL,
];

/// Registers `name` at 0 with every combination of `labels` (each a label name and its
/// possible values), so that a counter whose label values are known from the start is exported
/// before its first event: a query or an alert on it then says 0, not "no data".
pub fn zero_counters(name: &'static str, labels: &[(&'static str, &[&str])]) {
    for set in label_combinations(labels) {
        metrics::counter!(name, &set).increment(0);
    }
}

/// Registers the histogram `name` with every combination of `labels`, without a sample: it is
/// exported with a count of 0 from the start, like [`zero_counters`].
pub fn zero_histograms(name: &'static str, labels: &[(&'static str, &[&str])]) {
    for set in label_combinations(labels) {
        // Registering is enough: the exporter renders a registered histogram with zero counts.
        let _registered = metrics::histogram!(name, &set);
    }
}

/// Every combination of one value per label, in the order given.
fn label_combinations(labels: &[(&'static str, &[&str])]) -> Vec<Vec<(&'static str, String)>> {
    let mut sets: Vec<Vec<(&'static str, String)>> = vec![Vec::new()];
    for (label, values) in labels {
        sets = sets
            .into_iter()
            .flat_map(|set| {
                values.iter().map(move |v| {
                    let mut next = set.clone();
                    next.push((*label, (*v).to_owned()));
                    next
                })
            })
            .collect();
    }
    sets
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::ALL;

    fn doc(name: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `botpipe_…` names in `text`.
    fn names_in(text: &str) -> Vec<String> {
        let re = regex::Regex::new(r"botpipe_[a-z0-9_]+").unwrap();
        re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
    }

    /// The exported metric a series name belongs to (histograms add suffixes).
    fn family(series: &str) -> Option<&'static str> {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| series.strip_suffix(s))
            .filter(|b| ALL.contains(b))
            .unwrap_or(series);
        ALL.iter().copied().find(|m| *m == base)
    }

    #[test]
    fn label_combinations_cover_every_pair_once() {
        let sets = super::label_combinations(&[
            ("endpoint", &["a", "b"][..]),
            ("outcome", &["ok", "x", "y"][..]),
        ]);
        assert_eq!(sets.len(), 6);
        let unique: BTreeSet<_> = sets.iter().collect();
        assert_eq!(unique.len(), 6);
        assert!(sets.contains(&vec![
            ("endpoint", "b".to_owned()),
            ("outcome", "y".to_owned())
        ]));
        assert_eq!(super::label_combinations(&[]), vec![Vec::new()]);
        assert!(super::label_combinations(&[("source", &[] as &[&str])]).is_empty());
    }

    #[test]
    fn names_are_unique_and_follow_the_naming_rule() {
        let set: BTreeSet<_> = ALL.iter().collect();
        assert_eq!(set.len(), ALL.len(), "a metric is listed twice in ALL");
        for m in ALL {
            assert!(
                m.starts_with("botpipe_")
                    && m.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{m}: botpipe_<component>_<noun>_<unit>[_total], snake_case"
            );
            assert!(
                !m.ends_with("_ms") && !m.ends_with("_milliseconds") && !m.ends_with("_count"),
                "{m}: base units (seconds), and no suffix Prometheus adds itself"
            );
        }
    }

    #[test]
    fn docs_metrics_md_lists_exactly_the_exported_metrics() {
        let text = doc("metrics.md");
        let documented: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_owned)
            .collect();
        let documented_set: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
        assert_eq!(
            documented.len(),
            documented_set.len(),
            "a metric is documented twice"
        );
        let exported: BTreeSet<&str> = ALL.iter().copied().collect();
        let missing: Vec<_> = exported.difference(&documented_set).collect();
        let extra: Vec<_> = documented_set.difference(&exported).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/metrics.md is out of date: undocumented {missing:?}, not exported {extra:?}"
        );
    }

    #[test]
    fn grafana_dashboard_loads_and_queries_only_exported_metrics() {
        let dash: serde_json::Value = serde_json::from_str(&doc("grafana-dashboard.json"))
            .expect("docs/grafana-dashboard.json is not JSON");
        assert!(dash["title"].is_string());
        let panels = dash["panels"].as_array().expect("panels");
        let mut exprs = Vec::new();
        for p in panels.iter().filter(|p| p["type"] != "row") {
            let targets = p["targets"].as_array().expect("a panel without targets");
            assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
            for t in targets {
                exprs.push(
                    t["expr"]
                        .as_str()
                        .expect("a target without expr")
                        .to_owned(),
                );
            }
        }
        for v in dash["templating"]["list"].as_array().expect("templating") {
            if let Some(d) = v["definition"].as_str() {
                exprs.push(d.to_owned());
            }
        }
        let mut used = BTreeSet::new();
        for e in &exprs {
            let names = names_in(e);
            assert!(!names.is_empty(), "query names no botpipe metric: {e}");
            for n in names {
                let f = family(&n).unwrap_or_else(|| panic!("{n} in {e:?} is not exported"));
                used.insert(f);
            }
        }
        // What the dashboard is for: pull rate and drift, records by stage and outcome, queue and
        // spool depth, store latency, dead letters.
        for m in [
            super::PULLS_TOTAL,
            super::PULL_SCHEDULE_DRIFT_SECONDS,
            super::RECORDS_TOTAL,
            super::QUEUE_DEPTH,
            super::SPOOL_DEPTH,
            super::STORE_BATCH_SECONDS,
            super::DEAD_LETTERS_TOTAL,
        ] {
            assert!(used.contains(m), "the dashboard does not show {m}");
        }
    }
}
