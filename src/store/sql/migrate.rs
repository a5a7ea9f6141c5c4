//! The migration loop of the network stores: botpipe's own tables, then every step of
//! [`TypeStep`] not yet recorded for each type, inside the dialect's migration lock.
//!
//! Which change a legacy table needs is decided here, from the catalogue, the same way on every
//! database; how a change is written is the dialect's ([`Dialect::alter`] and friends).

use std::collections::{BTreeSet, HashMap};

use super::{sql_err, ColumnInfo, Conn, Dialect, IndexInfo, SqlConn};
use crate::record::BotnetType;
use crate::store::schema::{fill, TypeStep, BOTPIPE_SCOPE, BOTPIPE_VERSION, IP_WIDTH};
use crate::store::StoreError;

/// The default a time column is added with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDefault {
    /// No default (NULL).
    Null,
    /// The current time.
    Now,
}

/// One change to a table, written by the dialect.
#[derive(Debug, Clone)]
pub enum Change<'a> {
    /// Rename column `from` (as the catalogue describes it) to `to`, keeping its values and
    /// type; a time column gets `default`.
    Rename {
        /// The column as it is.
        from: &'a ColumnInfo,
        /// The new name.
        to: &'a str,
        /// Its default when it is a time column.
        default: TimeDefault,
    },
    /// Add time column `name`.
    AddTime {
        /// The column.
        name: &'a str,
        /// Its default.
        default: TimeDefault,
        /// A column whose type the new one copies, and which it follows.
        like: Option<&'a ColumnInfo>,
    },
    /// Widen `ip` to `VARCHAR(IP_WIDTH)`.
    WidenIp(&'a ColumnInfo),
    /// Drop a unique index (or its constraint).
    DropUnique(&'a IndexInfo),
    /// Add a unique key.
    AddUnique {
        /// Its name.
        name: String,
        /// Its columns, comma-separated.
        columns: &'a str,
    },
    /// Add a secondary index.
    AddIndex {
        /// Its name.
        name: String,
        /// Its columns, comma-separated.
        columns: &'a str,
    },
}

/// One secondary index of the current schema.
struct IndexSpec {
    on_nodes: bool,
    /// Its name where names are per table (MySQL, and the legacy schema).
    name: &'static str,
    /// Its name, before `_<type>`, where names are per schema (PostgreSQL).
    global: &'static str,
    columns: &'static str,
}

const INDEXES: &[IndexSpec] = &[
    IndexSpec {
        on_nodes: true,
        name: "idx_location",
        global: "idx_location",
        columns: "country,province,city",
    },
    IndexSpec {
        on_nodes: true,
        name: "idx_status",
        global: "idx_status",
        columns: "status",
    },
    IndexSpec {
        on_nodes: true,
        name: "idx_first_seen",
        global: "idx_first_seen",
        columns: "first_seen",
    },
    IndexSpec {
        on_nodes: true,
        name: "idx_last_seen",
        global: "idx_last_seen",
        columns: "last_seen",
    },
    IndexSpec {
        on_nodes: true,
        name: "idx_cleaned_time",
        global: "idx_cleaned_time",
        columns: "cleaned_time",
    },
    IndexSpec {
        on_nodes: true,
        name: "idx_is_china",
        global: "idx_is_china",
        columns: "is_china",
    },
    IndexSpec {
        on_nodes: false,
        name: "idx_node_id",
        global: "idx_node_id",
        columns: "node_id",
    },
    IndexSpec {
        on_nodes: false,
        name: "idx_communication_time",
        global: "idx_communication_time",
        columns: "communication_time",
    },
    IndexSpec {
        on_nodes: false,
        name: "idx_location",
        global: "idx_comm_location",
        columns: "country,province,city",
    },
];

/// The name of index `base` of type `t` in dialect `D`.
fn index_name<D: Dialect>(name: &str, global: &str, t: &BotnetType) -> String {
    if D::INDEX_NAMES_ARE_GLOBAL {
        format!("{global}_{t}")
    } else {
        name.to_owned()
    }
}

/// Creates botpipe's tables and brings every type of `types` to the current schema, recording
/// each step. The caller holds the migration lock and the transaction.
pub(super) async fn run<D: Dialect>(
    conn: &mut Conn<D>,
    target: &str,
    types: &BTreeSet<BotnetType>,
) -> Result<(), StoreError> {
    for ddl in D::BOTPIPE_SCHEMA {
        conn.run(ddl)
            .await
            .map_err(sql_err(target, "creating botpipe tables"))?;
    }
    record::<D>(
        conn,
        target,
        BOTPIPE_SCOPE,
        BOTPIPE_VERSION,
        "botpipe tables",
    )
    .await?;
    let done: HashMap<String, i64> = conn
        .text_counts(D::APPLIED_VERSIONS)
        .await
        .map_err(sql_err(target, "reading botpipe_schema_migrations"))?
        .into_iter()
        .collect();
    for t in types {
        let from = done.get(t.as_str()).copied().unwrap_or(0);
        for step in TypeStep::ALL
            .into_iter()
            .filter(|s| i64::from(s.version()) > from)
        {
            let what = format!(
                "migrating {}/{}: {}",
                t.nodes_table(),
                t.communications_table(),
                step.description()
            );
            for ddl in step_ddl::<D>(conn, t, step)
                .await
                .map_err(sql_err(target, &what))?
            {
                conn.run(&ddl).await.map_err(sql_err(target, &what))?;
            }
            record::<D>(conn, target, t.as_str(), step.version(), step.description()).await?;
            tracing::info!(botnet_type = %t, version = step.version(), step = step.description(), "Applied migration step.");
        }
    }
    Ok(())
}

async fn record<D: Dialect>(
    conn: &mut Conn<D>,
    target: &str,
    scope: &str,
    version: i32,
    description: &str,
) -> Result<(), StoreError> {
    conn.execute_with(D::RECORD_STEP, &[scope, description], &[i64::from(version)])
        .await
        .map(|_| ())
        .map_err(sql_err(target, "recording migration"))
}

async fn columns<D: Dialect>(
    conn: &mut Conn<D>,
    table: &str,
) -> Result<HashMap<String, ColumnInfo>, sqlx::Error> {
    Ok(conn
        .columns(D::COLUMNS, table)
        .await?
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect())
}

/// The DDL one step needs on the tables of `t`, decided from the catalogue: empty when the
/// tables already have the current shape.
async fn step_ddl<D: Dialect>(
    conn: &mut Conn<D>,
    t: &BotnetType,
    step: TypeStep,
) -> Result<Vec<String>, sqlx::Error> {
    let n = t.nodes_table();
    let c = t.communications_table();
    let mut ddl = Vec::new();
    match step {
        TypeStep::CreateTables => {
            ddl.push(fill(D::NODES_DDL, t));
            ddl.push(fill(D::COMMUNICATIONS_DDL, t));
        }
        TypeStep::RenameLogTime | TypeStep::RenameCreatedAt => {
            let (old, new, default) = if step == TypeStep::RenameLogTime {
                ("log_time", "active_time", TimeDefault::Null)
            } else {
                ("created_at", "created_time", TimeDefault::Now)
            };
            let cols = columns::<D>(conn, &n).await?;
            match (cols.get(old), cols.contains_key(new)) {
                (Some(from), false) => ddl.extend(D::alter(
                    &n,
                    &[Change::Rename {
                        from,
                        to: new,
                        default,
                    }],
                )),
                (None, false) => ddl.extend(D::alter(
                    &n,
                    &[Change::AddTime {
                        name: new,
                        default,
                        like: None,
                    }],
                )),
                (Some(_), true) => tracing::warn!(
                    table = %n, old, new,
                    "Both the legacy and the current column exist; keeping both, botpipe writes the current one."
                ),
                (None, true) => {}
            }
        }
        TypeStep::AddCleanedTime => {
            let cols = columns::<D>(conn, &n).await?;
            if !cols.contains_key("cleaned_time") {
                ddl.extend(D::alter(
                    &n,
                    &[Change::AddTime {
                        name: "cleaned_time",
                        default: TimeDefault::Null,
                        like: cols.get("last_seen"),
                    }],
                ));
            }
        }
        TypeStep::StatusAcceptsCleaned => {
            let cols = columns::<D>(conn, &n).await?;
            let Some(status) = cols.get("status") else {
                return Err(sqlx::Error::ColumnNotFound(format!("{n}.status")));
            };
            ddl.extend(D::status_ddl(conn, &n, status).await?);
        }
        TypeStep::WidenIp => {
            for table in [&n, &c] {
                let cols = columns::<D>(conn, table).await?;
                if let Some(ip) = cols.get("ip") {
                    if ip.max_len.is_some_and(|l| l < i64::from(IP_WIDTH)) {
                        ddl.extend(D::alter(table, &[Change::WidenIp(ip)]));
                    }
                }
            }
        }
        TypeStep::CommunicationKeyWithEventType => {
            let idx = conn.indexes(D::INDEXES, &c).await?;
            const KEY: &str = "ip,communication_time,event_type";
            let mut changes: Vec<Change<'_>> = idx
                .iter()
                .filter(|i| i.unique && i.columns == "ip,communication_time")
                .map(Change::DropUnique)
                .collect();
            if !idx.iter().any(|i| i.unique && i.columns == KEY) {
                let mut name =
                    index_name::<D>("idx_unique_communication", "idx_unique_communication", t);
                if idx
                    .iter()
                    .any(|i| i.name == name && i.columns != "ip,communication_time")
                {
                    name = format!("idx_unique_communication_{t}");
                }
                changes.push(Change::AddUnique { name, columns: KEY });
            }
            ddl.extend(D::alter(&c, &changes));
            let node_idx = conn.indexes(D::INDEXES, &n).await?;
            if !node_idx.iter().any(|i| i.unique && i.columns == "ip") {
                ddl.extend(D::alter(
                    &n,
                    &[Change::AddUnique {
                        name: index_name::<D>("idx_unique_ip", "idx_unique_ip", t),
                        columns: "ip",
                    }],
                ));
            }
        }
        TypeStep::Indexes => {
            for (table, on_nodes) in [(&n, true), (&c, false)] {
                let idx = conn.indexes(D::INDEXES, table).await?;
                let changes: Vec<Change<'_>> = INDEXES
                    .iter()
                    .filter(|s| s.on_nodes == on_nodes)
                    .map(|s| (index_name::<D>(s.name, s.global, t), s.columns))
                    .filter(|(name, cols)| {
                        !idx.iter().any(|i| {
                            i.name == *name
                                || i.columns == *cols
                                || i.columns.starts_with(&format!("{cols},"))
                        })
                    })
                    .map(|(name, columns)| Change::AddIndex { name, columns })
                    .collect();
                ddl.extend(D::alter(table, &changes));
            }
        }
    }
    Ok(ddl)
}
