//! The migration loop of the network stores: botpipe's own tables, then every step of
//! [`TypeStep`] not yet recorded for each type, inside the dialect's migration lock.
//!
//! Which change a legacy table needs is decided here, from the catalogue, the same way on every
//! database; how a change is written is the dialect's ([`Dialect::alter`] and friends).

use std::collections::{BTreeSet, HashMap};

use super::{sql_err, ColumnInfo, Conn, Dialect, IndexInfo, SqlConn};
use crate::record::BotnetType;
use crate::store::schema::{fill, TypeStep, BOTPIPE_SCOPE, BOTPIPE_VERSION, IP_WIDTH};
use crate::store::{MigrationReport, StoreError};

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
        /// The comment of the key it replaces, kept.
        comment: Option<&'a str>,
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

/// Creates botpipe's tables and brings the types of `types` to the current schema, recording
/// each step: those whose tables exist, and with `create` the others too (a type is created
/// when first seen: the legacy aggregator treats an empty table as a failure). The caller holds
/// the migration lock and the transaction.
pub(super) async fn run<D: Dialect>(
    conn: &mut Conn<D>,
    target: &str,
    types: &BTreeSet<BotnetType>,
    create: bool,
) -> Result<MigrationReport, StoreError> {
    let mut report = MigrationReport::default();
    for ddl in D::BOTPIPE_SCHEMA {
        conn.run(ddl)
            .await
            .map_err(sql_err(target, "creating botpipe tables"))?;
    }
    let done: HashMap<String, i64> = conn
        .text_counts(D::APPLIED_VERSIONS)
        .await
        .map_err(sql_err(target, "reading botpipe_schema_migrations"))?
        .into_iter()
        .collect();
    let botpipe_from = done.get(BOTPIPE_SCOPE).copied().unwrap_or(0);
    for ddl in dead_letter_key_ddl::<D>(conn)
        .await
        .map_err(sql_err(target, "keying botpipe_dead_letters"))?
    {
        conn.run(&ddl)
            .await
            .map_err(sql_err(target, "keying botpipe_dead_letters"))?;
    }
    for (version, description) in [
        (1, "botpipe tables"),
        (BOTPIPE_VERSION, "dead letters keyed by batch and position"),
    ] {
        if i64::from(version) > botpipe_from {
            record::<D>(conn, target, BOTPIPE_SCOPE, version, description).await?;
            report
                .applied
                .push(format!("{BOTPIPE_SCOPE} v{version}: {description}"));
        }
    }
    let tables: BTreeSet<String> = conn
        .texts(D::LIST_TABLES)
        .await
        .map_err(sql_err(target, "listing tables"))?
        .into_iter()
        .collect();
    for t in types {
        if !create && !tables.contains(&t.nodes_table()) {
            continue;
        }
        report.types.push(t.to_string());
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
            if step == TypeStep::NormaliseNames {
                normalise_names::<D>(conn, t)
                    .await
                    .map_err(sql_err(target, &what))?;
                let n = contradicting_status::<D>(conn, t)
                    .await
                    .map_err(sql_err(target, &what))?;
                if n > 0 {
                    tracing::warn!(
                        table = %t.nodes_table(),
                        rows = n,
                        "Rows whose status contradicts the status rule (cleaned although seen online after cleaned_time, or active although cleaned since): left as they are; the next event of each IP corrects it."
                    );
                    report.contradictions.insert(t.to_string(), n);
                }
            }
            for ddl in step_ddl::<D>(conn, t, step)
                .await
                .map_err(sql_err(target, &what))?
            {
                conn.run(&ddl).await.map_err(sql_err(target, &what))?;
            }
            record::<D>(conn, target, t.as_str(), step.version(), step.description()).await?;
            tracing::info!(botnet_type = %t, version = step.version(), step = step.description(), "Applied migration step.");
            report
                .applied
                .push(format!("{t} v{}: {}", step.version(), step.description()));
        }
    }
    Ok(report)
}

/// Rewrites legacy provinces (广东省) and bare ASNs (4837) of `t`'s tables into botpipe's form
/// (广东, AS4837): one `UPDATE` per table and form, whatever the number of names.
async fn normalise_names<D: Dialect>(
    conn: &mut Conn<D>,
    t: &BotnetType,
) -> Result<(), sqlx::Error> {
    for table in [t.nodes_table(), t.communications_table()] {
        let provinces = conn
            .texts(&format!(
                "SELECT DISTINCT province FROM {table} WHERE province IS NOT NULL"
            ))
            .await?;
        let renames: Vec<(String, String)> = provinces
            .iter()
            .filter_map(|p| {
                let short = crate::enrich::names::normalise_province(p);
                (short != p).then(|| (p.clone(), short.to_owned()))
            })
            .collect();
        if !renames.is_empty() {
            let marks = D::placeholders(renames.len() * 3);
            let mut marks = marks.split(',');
            let mut next = || marks.next().unwrap_or("?").to_owned();
            let cases: Vec<String> = renames
                .iter()
                .map(|_| format!("WHEN {} THEN {}", next(), next()))
                .collect();
            let list: Vec<String> = renames.iter().map(|_| next()).collect();
            let sql = format!(
                "UPDATE {table} SET province = CASE province {} END WHERE province IN ({})",
                cases.join(" "),
                list.join(",")
            );
            let mut binds: Vec<&str> = Vec::with_capacity(renames.len() * 3);
            for (from, to) in &renames {
                binds.push(from);
                binds.push(to);
            }
            binds.extend(renames.iter().map(|(from, _)| from.as_str()));
            conn.execute_with(&sql, &binds, &[]).await?;
        }
        conn.run(&D::NUMERIC_ASN.replace("{table}", &table)).await?;
    }
    Ok(())
}

/// Nodes of `t` whose stored status contradicts the status rule.
async fn contradicting_status<D: Dialect>(
    conn: &mut Conn<D>,
    t: &BotnetType,
) -> Result<u64, sqlx::Error> {
    let filtered = format!(
        "{} WHERE
            (status = 'cleaned' AND (cleaned_time IS NULL
                OR (last_seen IS NOT NULL AND cleaned_time < last_seen)))
         OR (status = 'active' AND cleaned_time IS NOT NULL
                AND (last_seen IS NULL OR cleaned_time >= last_seen))",
        t.nodes_table()
    );
    let sql = D::COUNT_ROWS.replace("{table}", &filtered);
    Ok(conn
        .text_counts(&sql)
        .await?
        .first()
        .map_or(0, |(_, n)| (*n).max(0) as u64))
}

/// The DDL that keys dead letters by (batch, position), so that a replayed batch's letters are
/// skipped: empty when the table has the key. Older rows keep a NULL position, which no key
/// compares equal.
async fn dead_letter_key_ddl<D: Dialect>(conn: &mut Conn<D>) -> Result<Vec<String>, sqlx::Error> {
    const TABLE: &str = "botpipe_dead_letters";
    let mut ddl = Vec::new();
    if !columns::<D>(conn, TABLE)
        .await?
        .contains_key("batch_position")
    {
        ddl.push(format!(
            "ALTER TABLE {TABLE} ADD COLUMN batch_position INTEGER"
        ));
    }
    if !conn
        .indexes(D::INDEXES, TABLE)
        .await?
        .iter()
        .any(|i| i.unique && i.columns == "batch_id,batch_position")
    {
        ddl.push(format!(
            "CREATE UNIQUE INDEX idx_botpipe_dead_letters_key ON {TABLE} (batch_id, batch_position)"
        ));
    }
    Ok(ddl)
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
            let comment = idx
                .iter()
                .filter(|i| i.unique && i.columns == "ip,communication_time")
                .find_map(|i| i.comment.as_deref());
            if !idx.iter().any(|i| i.unique && i.columns == KEY) {
                let mut name =
                    index_name::<D>("idx_unique_communication", "idx_unique_communication", t);
                if idx
                    .iter()
                    .any(|i| i.name == name && i.columns != "ip,communication_time")
                {
                    name = format!("idx_unique_communication_{t}");
                }
                changes.push(Change::AddUnique {
                    name,
                    columns: KEY,
                    comment,
                });
            }
            ddl.extend(D::alter(&c, &changes));
            let node_idx = conn.indexes(D::INDEXES, &n).await?;
            if !node_idx.iter().any(|i| i.unique && i.columns == "ip") {
                ddl.extend(D::alter(
                    &n,
                    &[Change::AddUnique {
                        name: index_name::<D>("idx_unique_ip", "idx_unique_ip", t),
                        columns: "ip",
                        comment: None,
                    }],
                ));
            }
        }
        // Data, not DDL: see `normalise_names`.
        TypeStep::NormaliseNames => {}
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
