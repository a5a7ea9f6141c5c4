//! `botpipe validate`: first the configuration (every problem at once, each with its field
//! path, exit code 2), then the secrets (each variable or file readable), then, unless
//! `--offline`, connectivity to each enabled endpoint, the store, the queue (Redis or the
//! embedded file) and every configured geodata file (exit code 1 if any fails).
//!
//! Nothing is created or migrated: a SQLite file that does not exist yet only needs a directory
//! botpipe can create it in.

use std::path::{Path, PathBuf};

use futures::future::join_all;
use secrecy::ExposeSecret;

use crate::cli::ValidateArgs;
use crate::config::{
    ConfigError, Problem, QueueBackend, RedisSettings, SecretSource, Settings, StoreKind,
};
use crate::pull::PullClient;
use crate::queue::{EmbeddedQueue, Queue};
use crate::store::clock::WallClock;
use crate::store::{AnyStore, SqliteStore, Store};
use crate::telemetry::Chain;

use super::{bounded, CommandError};

/// One connectivity check and its result (`Ok` carries a short note).
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked, e.g. `endpoint east (http://…)`.
    pub what: String,
    /// The outcome.
    pub result: Result<String, String>,
}

/// `botpipe validate`.
///
/// # Errors
/// [`CommandError::Config`] (exit 2) listing every configuration or secret problem;
/// [`CommandError::ChecksFailed`] (exit 1) when a dependency cannot be reached.
pub async fn run(config: Option<&Path>, args: ValidateArgs) -> Result<(), CommandError> {
    let settings = crate::config::load(config)?;
    let problems = resolve_secrets(&settings);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems).into());
    }
    println!("{}", describe(&settings));
    if args.offline {
        println!("Connectivity not checked (--offline).");
        return Ok(());
    }
    let checks = check_connectivity(&settings).await;
    let mut failed = 0;
    for c in &checks {
        match &c.result {
            Ok(note) => println!("  ok    {}: {note}", c.what),
            Err(err) => {
                failed += 1;
                println!("  FAIL  {}: {err}", c.what);
            }
        }
    }
    if failed > 0 {
        return Err(CommandError::ChecksFailed(failed));
    }
    println!("All {} checks passed.", checks.len());
    Ok(())
}

fn describe(s: &Settings) -> String {
    let store = match &s.store.kind {
        StoreKind::Sqlite(p) => format!("sqlite {}", p.display()),
        StoreKind::Postgres(u) | StoreKind::Mysql(u) => crate::config::redact_url(u),
    };
    let queue = match &s.queue.backend {
        QueueBackend::Embedded { path } => format!("embedded {}", path.display()),
        QueueBackend::Redis(r) => format!("redis {}", crate::config::redact_url(&r.url)),
    };
    let files = crate::enrich::geo_files(&s.geo, &s.data_dir);
    let names: Vec<String> = files.all().map(|p| p.display().to_string()).collect();
    let geo = match (&files.discovered_in, names.is_empty()) {
        (Some(dir), true) => format!("none installed in {}", dir.display()),
        (None, true) => "none ([geo] configures no file)".into(),
        (Some(dir), false) => format!("found in {}: {}", dir.display(), names.join(", ")),
        (None, false) => format!("configured: {}", names.join(", ")),
    };
    format!(
        "Configuration OK: {} endpoint(s) ({} enabled), {} botnet types, store {store}, queue {queue}, push {}, geodata {geo}.",
        s.endpoints.len(),
        s.enabled_endpoints().count(),
        s.allowed_types.len(),
        if s.push.enabled { "enabled" } else { "disabled" },
    )
}

/// Reads every secret the configuration names; a problem per unreadable or empty one.
pub fn resolve_secrets(s: &Settings) -> Vec<Problem> {
    let mut sources: Vec<(String, &SecretSource)> = Vec::new();
    for e in &s.endpoints {
        if let Some(k) = &e.api_key {
            sources.push((format!("endpoints.{}.api_key", e.name), k));
        }
    }
    if let Some(p) = &s.store.password {
        sources.push(("store.password".into(), p));
    }
    if let Some(k) = &s.push.api_key {
        sources.push(("push.api_key".into(), k));
    }
    if let Some(k) = &s.push.secret {
        sources.push(("push.secret".into(), k));
    }
    sources
        .into_iter()
        .filter_map(|(path, src)| match src.resolve() {
            Ok(v) if v.expose_secret().is_empty() => Some(Problem {
                path,
                message: "resolves to an empty value".into(),
            }),
            Ok(_) => None,
            Err(e) => Some(Problem {
                path,
                message: e.to_string(),
            }),
        })
        .collect()
}

/// Checks every dependency of `settings`, endpoints concurrently.
pub async fn check_connectivity(s: &Settings) -> Vec<Check> {
    let endpoints = join_all(s.enabled_endpoints().map(|e| async move {
        let what = format!("endpoint {} ({})", e.name, e.url);
        let key = match e.api_key.as_ref().map(SecretSource::resolve).transpose() {
            Ok(k) => k,
            Err(err) => {
                return Check {
                    what,
                    result: Err(err.to_string()),
                }
            }
        };
        let result = match PullClient::new(e, key) {
            Ok(client) => client
                .probe()
                .await
                .map(|()| "answers the pull API with this key".to_owned())
                .map_err(|err| Chain(&err).to_string()),
            Err(err) => Err(Chain(&err).to_string()),
        };
        Check { what, result }
    }))
    .await;
    let mut checks = endpoints;
    checks.extend(check_store(s).await);
    checks.extend(check_queue(s).await);
    checks.extend(check_geodata(s).await);
    checks
}

/// Opens every geodata file `run` would open (configured, or discovered by the same rule) and
/// reports its kind and build date, warning when it is stale; a file that does not open fails.
async fn check_geodata(s: &Settings) -> Vec<Check> {
    let files = crate::enrich::geo_files(&s.geo, &s.data_dir);
    if files.is_empty() {
        let result = match &files.discovered_in {
            Some(dir) => format!(
                "none installed in {}; enrichment is disabled (scripts/fetch-geodata.sh installs the free databases there)",
                dir.display()
            ),
            None => "[geo] configures none; enrichment is disabled".into(),
        };
        return vec![Check {
            what: "geodata".into(),
            result: Ok(result),
        }];
    }
    let probed = match tokio::task::spawn_blocking(move || crate::enrich::probe_files(&files)).await
    {
        Ok(p) => p,
        Err(e) => {
            return vec![Check {
                what: "geodata".into(),
                result: Err(format!("checking the files failed: {e}")),
            }]
        }
    };
    let now = crate::enrich::unix_now();
    probed
        .into_iter()
        .map(|(path, info)| Check {
            what: format!("geodata {}", path.display()),
            result: info
                .map(|i| format!("{}, {}", i.kind, i.freshness(now)))
                .map_err(|e| e.to_string()),
        })
        .collect()
}

/// The store answers (or, for SQLite, can be created), and the zones of its times, with a
/// warning line for each way they disagree with the sources' zones.
async fn check_store(s: &Settings) -> Vec<Check> {
    let (what, opened) = match &s.store.kind {
        StoreKind::Sqlite(path) => {
            let what = format!("store {}", path.display());
            if !path.exists() {
                let zones = Check {
                    what: "store time zone".into(),
                    result: Ok(format!(
                        "a new file; times will be {} wall-clock",
                        s.store.timezone.name()
                    )),
                };
                return vec![
                    Check {
                        what,
                        result: creatable(path),
                    },
                    zones,
                ];
            }
            let opened = SqliteStore::open_in(path, WallClock::new(s.store.timezone))
                .map(AnyStore::Sqlite)
                .map_err(|e| e.to_string());
            (what, opened)
        }
        StoreKind::Postgres(u) | StoreKind::Mysql(u) => (
            format!("store {}", crate::config::redact_url(u)),
            bounded(crate::store::open(&s.store)).await,
        ),
    };
    let store = match opened {
        Ok(store) => store,
        Err(e) => {
            return vec![Check {
                what,
                result: Err(e),
            }]
        }
    };
    let note = match &store {
        AnyStore::Sqlite(_) => "opens and takes the write lock",
        _ => "answers",
    };
    let mut checks = vec![Check {
        what,
        result: bounded(store.ping()).await.map(|()| note.into()),
    }];
    if checks.iter().all(|c| c.result.is_ok()) {
        match bounded(store.time_zones()).await {
            Ok(zones) => {
                checks.push(Check {
                    what: "store time zone".into(),
                    result: Ok(zones.to_string()),
                });
                checks.extend(
                    zones
                        .warnings(&s.time_sources())
                        .into_iter()
                        .map(|w| Check {
                            what: "store time zone".into(),
                            result: Ok(format!("warning: {w}")),
                        }),
                );
            }
            Err(e) => checks.push(Check {
                what: "store time zone".into(),
                result: Err(e),
            }),
        }
    }
    checks
}

async fn check_queue(s: &Settings) -> Vec<Check> {
    let q = &s.queue;
    match &q.backend {
        QueueBackend::Embedded { path } => vec![Check {
            what: format!("queue {}", path.display()),
            result: embedded_ok(path, s).await,
        }],
        QueueBackend::Redis(r) => {
            let redis = Check {
                what: format!("redis {}", crate::config::redact_url(&r.url)),
                result: bounded(redis_ping(r)).await.map(|()| "answers PING".into()),
            };
            let spool = Check {
                what: format!("spool {}", q.spool_path.display()),
                result: embedded_ok(&q.spool_path, s).await,
            };
            vec![redis, spool]
        }
    }
}

async fn embedded_ok(path: &Path, s: &Settings) -> Result<String, String> {
    if !path.exists() {
        return creatable(path);
    }
    let q = EmbeddedQueue::attach(path, s.queue.lease_timeout, s.queue.max_deliveries)
        .map_err(|e| e.to_string())?;
    bounded(q.depth())
        .await
        .map(|d| format!("opens; {} batches waiting", d.total))
}

async fn redis_ping(settings: &RedisSettings) -> Result<(), String> {
    let client = crate::queue::redis_client(settings).map_err(|e| Chain(&e).to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A file that does not exist yet is fine when its nearest existing ancestor is a directory
/// (botpipe creates the rest).
fn creatable(path: &Path) -> Result<String, String> {
    let mut dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    loop {
        let probe = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.clone()
        };
        match std::fs::metadata(&probe) {
            Ok(m) if m.is_dir() && !m.permissions().readonly() => {
                return Ok(format!(
                    "does not exist yet; will be created under {}",
                    probe.display()
                ))
            }
            Ok(m) if m.is_dir() => return Err(format!("{} is read-only", probe.display())),
            Ok(_) => return Err(format!("{} is not a directory", probe.display())),
            Err(_) => match dir.parent() {
                Some(p) => dir = p.to_path_buf(),
                None => return Err("no existing parent directory".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_needs_an_existing_directory_above_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(creatable(&dir.path().join("a/b/c.sqlite")).is_ok());
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(creatable(&file.join("c.sqlite")).is_err());
    }

    #[test]
    fn unreadable_secrets_are_problems_with_their_paths() {
        let mut s = Settings::embedded_default();
        s.push.api_key = Some(SecretSource::Env("BOTPIPE_TEST_SURELY_UNSET_1".into()));
        s.push.secret = Some(SecretSource::File("/nonexistent/secret".into()));
        s.store.password = Some(SecretSource::Inline(String::new().into()));
        let paths: Vec<String> = resolve_secrets(&s).into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["store.password", "push.api_key", "push.secret"]);
    }
}
