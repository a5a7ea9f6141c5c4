//! Fresh places for a benchmark to write into, removed afterwards unless kept: a
//! [`ScratchStore`] (a new database `botpipe_bench_<uuid>` on the server of a PostgreSQL or
//! MySQL URL, or a new SQLite file beside the configured one) and a [`ScratchDir`] (for the
//! pipeline's embedded queue and spool).
//!
//! A benchmark never writes into the configured database itself: its rows would mix with real
//! ones, and a table that is already large measures something else than the run asked for.

use std::path::{Path, PathBuf};

use crate::config::{StoreKind, StoreSettings};
use crate::store::{AnyStore, StoreError};

use super::BenchError;

/// Prefix of every database, directory and Redis key prefix a benchmark creates.
pub const SCRATCH_PREFIX: &str = "botpipe_bench_";
/// File name of the SQLite store inside its scratch directory.
const SQLITE_FILE: &str = "bench.sqlite";

/// A fresh name with [`SCRATCH_PREFIX`]: a valid SQL identifier without quoting.
pub fn scratch_name() -> String {
    format!("{SCRATCH_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// A new directory, removed by [`ScratchDir::remove`].
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    /// The parent, when it did not exist before: removed too if nothing else came into it.
    new_parent: Option<PathBuf>,
}

impl ScratchDir {
    /// Creates `<parent>/botpipe_bench_<uuid>` (and `parent` if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn create(parent: &Path) -> Result<Self, BenchError> {
        let path = parent.join(scratch_name());
        let new_parent = (!parent.exists()).then(|| parent.to_path_buf());
        std::fs::create_dir_all(&path).map_err(|source| BenchError::Scratch {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, new_parent })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the directory and everything in it, and its parent if [`ScratchDir::create`]
    /// made it and it is empty now.
    ///
    /// # Errors
    /// When it cannot be deleted.
    pub fn remove(self) -> Result<(), BenchError> {
        std::fs::remove_dir_all(&self.path).map_err(|source| BenchError::Scratch {
            path: self.path.clone(),
            source,
        })?;
        if let Some(parent) = self.new_parent {
            // `remove_dir` refuses a directory that is not empty: whatever came into it since
            // (another run, an operator) stays.
            let _not_empty = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Place {
    Sqlite(ScratchDir),
    Server { admin: StoreSettings, name: String },
}

/// A fresh, empty database on the server (or beside the file) of a store's settings.
#[derive(Debug)]
pub struct ScratchStore {
    place: Place,
    settings: StoreSettings,
}

impl ScratchStore {
    /// Creates the database. `base` names the server (its URL's database is only the one the
    /// `CREATE DATABASE` is sent on) or, for SQLite, the directory.
    ///
    /// # Errors
    /// When the server refuses or the directory cannot be created.
    pub async fn create(base: &StoreSettings) -> Result<Self, BenchError> {
        let mut settings = base.clone();
        settings.migrate_on_start = true;
        let place = match &base.kind {
            StoreKind::Sqlite(path) => {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let dir = ScratchDir::create(parent)?;
                settings.kind = StoreKind::Sqlite(dir.path().join(SQLITE_FILE));
                Place::Sqlite(dir)
            }
            StoreKind::Postgres(url) | StoreKind::Mysql(url) => {
                let name = scratch_name();
                let mut u = url::Url::parse(url).map_err(|source| BenchError::Url {
                    url: crate::config::redact_url(url),
                    source,
                })?;
                u.set_path(&format!("/{name}"));
                settings.kind = match base.kind {
                    StoreKind::Postgres(_) => StoreKind::Postgres(u.to_string().into()),
                    _ => StoreKind::Mysql(u.to_string().into()),
                };
                let admin = base.clone();
                let create = match base.kind {
                    StoreKind::Postgres(_) => format!("CREATE DATABASE {name}"),
                    _ => format!(
                        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                    ),
                };
                execute(&admin, &create).await?;
                Place::Server { admin, name }
            }
        };
        Ok(Self { place, settings })
    }

    /// Settings that open the scratch database.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Where the database is, for the report and for `--keep`.
    pub fn location(&self) -> String {
        match &self.settings.kind {
            StoreKind::Sqlite(p) => p.display().to_string(),
            StoreKind::Postgres(u) | StoreKind::Mysql(u) => crate::config::redact_url(u),
        }
    }

    /// Drops the database (or deletes the SQLite directory). Close every pool on it first.
    ///
    /// # Errors
    /// When the server refuses or the directory cannot be deleted.
    pub async fn remove(self) -> Result<(), BenchError> {
        match self.place {
            Place::Sqlite(dir) => dir.remove(),
            Place::Server { admin, name } => {
                let drop = match admin.kind {
                    StoreKind::Postgres(_) => {
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                    }
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                execute(&admin, &drop).await
            }
        }
    }
}

/// Runs one administrative statement on the server of `settings`, through a one-connection
/// store pool (which resolves the configured password the same way the store does).
async fn execute(settings: &StoreSettings, sql: &str) -> Result<(), BenchError> {
    let admin = StoreSettings {
        max_connections: 1,
        ..settings.clone()
    };
    let store = crate::store::open(&admin)
        .await
        .map_err(BenchError::admin)?;
    let result = match &store {
        AnyStore::Postgres(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
        AnyStore::Mysql(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
        AnyStore::Sqlite(_) => Ok(()),
    };
    store.close().await;
    result.map_err(|source| {
        BenchError::admin(StoreError::Sqlx {
            op: sql.to_owned(),
            source,
        })
    })
}
