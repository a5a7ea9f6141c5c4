//! The migration steps of the network stores, shared by PostgreSQL and MySQL/MariaDB so that
//! `botpipe_schema_migrations` means the same on both.
//!
//! Each botnet type has its own history (scope = the type name), because types appear over time.
//! Every step is guarded by introspection: it changes a table only when the table still has the
//! legacy shape, so it is safe on a fresh table, a legacy table, or a table an earlier,
//! interrupted migration half-upgraded. A step is recorded once it has run; recorded steps are
//! skipped. Steps only ever add or rename, never drop a row. New steps are appended with the
//! next version; versions are never reused.

/// The scope of botpipe's own tables in `botpipe_schema_migrations`.
pub(crate) const BOTPIPE_SCOPE: &str = "botpipe";
/// Version of botpipe's own tables (`botpipe_schema_migrations`, `botpipe_dead_letters`): 1
/// created them, 2 keyed dead letters by batch and position.
pub(crate) const BOTPIPE_VERSION: i32 = 2;

/// One upgrade of the two tables of a botnet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeStep {
    /// Create the node and communication tables if missing (legacy tables are kept as they are).
    CreateTables,
    /// Legacy `log_time` is now `active_time`.
    RenameLogTime,
    /// Legacy `created_at` is now `created_time`.
    RenameCreatedAt,
    /// Legacy tables have no `cleaned_time` (nor its index).
    AddCleanedTime,
    /// Legacy `status` does not accept `cleaned`.
    StatusAcceptsCleaned,
    /// Legacy `ip` is `VARCHAR(15)`: IPv6 needs 45.
    WidenIp,
    /// Legacy communications are unique on `(ip, communication_time)`, so an online and a
    /// cleanup event in the same second collide: the key gains `event_type`.
    CommunicationKeyWithEventType,
    /// Secondary indexes of the current schema that legacy tables may lack.
    Indexes,
    /// Legacy rows hold provinces with their suffix (广东省) and bare ASNs (4837) beside
    /// botpipe's 广东 and AS4837: one form in every row, so the dashboards group them as one.
    NormaliseNames,
}

impl TypeStep {
    /// Every step in order.
    pub(crate) const ALL: [TypeStep; 9] = [
        Self::CreateTables,
        Self::RenameLogTime,
        Self::RenameCreatedAt,
        Self::AddCleanedTime,
        Self::StatusAcceptsCleaned,
        Self::WidenIp,
        Self::CommunicationKeyWithEventType,
        Self::Indexes,
        Self::NormaliseNames,
    ];

    /// The recorded version: position in [`Self::ALL`], from 1.
    pub(crate) fn version(self) -> i32 {
        match self {
            Self::CreateTables => 1,
            Self::RenameLogTime => 2,
            Self::RenameCreatedAt => 3,
            Self::AddCleanedTime => 4,
            Self::StatusAcceptsCleaned => 5,
            Self::WidenIp => 6,
            Self::CommunicationKeyWithEventType => 7,
            Self::Indexes => 8,
            Self::NormaliseNames => 9,
        }
    }

    /// The recorded description.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Self::CreateTables => "create node and communication tables",
            Self::RenameLogTime => "rename log_time to active_time",
            Self::RenameCreatedAt => "rename created_at to created_time",
            Self::AddCleanedTime => "add cleaned_time",
            Self::StatusAcceptsCleaned => "status accepts cleaned",
            Self::WidenIp => "widen ip to VARCHAR(45)",
            Self::CommunicationKeyWithEventType => {
                "communications unique on (ip, communication_time, event_type)"
            }
            Self::Indexes => "secondary indexes",
            Self::NormaliseNames => "provinces and ASNs in botpipe's form",
        }
    }
}

/// The width botpipe gives `ip` columns: the longest textual IPv6 address.
pub(crate) const IP_WIDTH: u32 = 45;

/// A DDL template (a `.sql` file under `src/store/ddl/`) for type `t`: `{nodes}`,
/// `{communications}` and `{type}` replaced by its table names and its name.
pub(crate) fn fill(template: &str, t: &crate::record::BotnetType) -> String {
    template
        .replace("{nodes}", &t.nodes_table())
        .replace("{communications}", &t.communications_table())
        .replace("{type}", t.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_positions() {
        for (i, s) in TypeStep::ALL.iter().enumerate() {
            assert_eq!(s.version(), i as i32 + 1);
        }
    }

    #[test]
    fn templates_name_the_type_tables() {
        let t = crate::record::BotnetType::parse("mozi").unwrap();
        let ddl = fill(
            "CREATE TABLE {communications} (x REFERENCES {nodes}(id)) -- {type}",
            &t,
        );
        assert_eq!(
            ddl,
            "CREATE TABLE botnet_communications_mozi (x REFERENCES botnet_nodes_mozi(id)) -- mozi"
        );
    }
}
