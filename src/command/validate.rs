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
use crate::store::{SqliteStore, Store};
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
    format!(
        "Configuration OK: {} endpoint(s) ({} enabled), {} botnet types, store {store}, queue {queue}, push {}.",
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
    checks.push(check_store(s).await);
    checks.extend(check_queue(s).await);
    for g in crate::http::check_geodata(&s.geo).await {
        checks.push(Check {
            what: format!("geodata {}", g.path.display()),
            result: match g.error {
                None => Ok("readable".into()),
                Some(e) => Err(e),
            },
        });
    }
    if s.geo.city.is_empty() && s.geo.asn.is_none() {
        checks.push(Check {
            what: "geodata".into(),
            result: Ok("none configured; enrichment is disabled".into()),
        });
    }
    checks
}

async fn check_store(s: &Settings) -> Check {
    match &s.store.kind {
        StoreKind::Sqlite(path) => Check {
            what: format!("store {}", path.display()),
            result: if path.exists() {
                match SqliteStore::open(path) {
                    Ok(store) => bounded(store.ping())
                        .await
                        .map(|()| "opens and takes the write lock".into()),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                creatable(path)
            },
        },
        StoreKind::Postgres(u) | StoreKind::Mysql(u) => Check {
            what: format!("store {}", crate::config::redact_url(u)),
            result: match bounded(crate::store::open(&s.store)).await {
                Ok(store) => bounded(store.ping()).await.map(|()| "answers".into()),
                Err(e) => Err(e),
            },
        },
    }
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
