//! [`CollectorSettings`]: the collector's validated configuration. `TryFrom<CollectorConfig>` is
//! pure (no file opened, no secret read): it applies defaults, checks every field, and returns
//! all problems at once with their field paths (`sources[1].regex`). Regexes are compiled here,
//! so a bad one is a config problem and not a runtime surprise.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use secrecy::SecretString;

use super::raw::{CollectorConfig, GroupRef, SourceConfig};
use crate::config::{
    validate_listener, ListenerLimits, Problem, Problems, RawListener, SecretSource,
    ServerTlsSettings,
};
use crate::record::{BotnetType, LogType};

/// Default listen address: the legacy C2 data server's port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8888";
/// Default cache file, relative to the working directory.
pub const DEFAULT_CACHE_PATH: &str = "collector-data/cache.sqlite";
/// Default retention of confirmed rows: the legacy collector's seven days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default cap on unpulled rows before reading pauses: about 100 MB of cache, days of backlog for
/// a busy C2.
pub const DEFAULT_MAX_UNPULLED: u64 = 1_000_000;
/// Default time between two scans of the sources.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Default lines (or table rows) per cache transaction.
pub const DEFAULT_READ_BATCH: u32 = 5000;
/// Largest `read_batch`: one transaction must stay short, because the pull API waits for it.
pub const MAX_READ_BATCH: u32 = 100_000;
/// The timestamp formats tried when a source gives none: ISO 8601 with `T` or a space, with
/// optional fractions.
pub const DEFAULT_TIMESTAMP_FORMATS: &[&str] = &["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
/// `{date}` in a file name: the legacy generator's daily files.
pub const DATE_PLACEHOLDER: &str = "{date}";
/// `{datetime}` in a file name: the legacy generator's hourly files (`%Y-%m-%d_%H`).
pub const DATETIME_PLACEHOLDER: &str = "{datetime}";
/// Glob that `{date}` stands for (`%Y-%m-%d`).
const DATE_GLOB: &str = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]";
/// Glob that `{datetime}` stands for (`%Y-%m-%d_%H`).
const DATETIME_GLOB: &str = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]_[0-9][0-9]";

/// The validated collector configuration.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS of the pull API; `None` serves plain HTTP.
    pub tls: Option<ServerTlsSettings>,
    /// Timeouts and connection bound of the pull API's listener.
    pub limits: ListenerLimits,
    /// The API key's source (read when the collector is built).
    pub api_key: SecretSource,
    /// `/api/stats` requires the key.
    pub stats_require_key: bool,
    /// `/health` and `/metrics` require the key.
    pub health_require_key: bool,
    /// Cache file.
    pub cache_path: PathBuf,
    /// Retention of confirmed rows.
    pub retention: Duration,
    /// Unpulled rows at which reading pauses.
    pub max_unpulled: u64,
    /// Unpulled rows below which reading resumes.
    pub resume_below: u64,
    /// Time between scans.
    pub scan_interval: Duration,
    /// Lines or rows per cache transaction.
    pub read_batch: u32,
    /// Sources, in file order.
    pub sources: Vec<SourceSettings>,
}

/// One validated source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Unique name.
    pub name: String,
    /// Stamped botnet type.
    pub botnet_type: BotnetType,
    /// Stamped log type.
    pub log_type: LogType,
    /// What is read, and how.
    pub kind: SourceKind,
}

/// What a source reads.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// Tailed line files.
    Lines {
        /// Which files.
        files: FilePattern,
        /// How a line becomes an IP and a timestamp.
        parser: LineParser,
        /// Untracked files older than this are ignored.
        ignore_older_than: Option<Duration>,
    },
    /// A SQLite table read by increasing id.
    Table(TableSpec),
}

/// A file name pattern: the configured text and the glob it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePattern {
    /// As configured, for logs.
    pub configured: String,
    /// The glob with `{date}`/`{datetime}` expanded; validated by `glob::Pattern`.
    pub glob: String,
}

impl FilePattern {
    /// Expands the date placeholders into globs.
    ///
    /// # Errors
    /// When the result is not a valid glob.
    pub fn parse(configured: &str) -> Result<Self, String> {
        let glob = configured
            .replace(DATETIME_PLACEHOLDER, DATETIME_GLOB)
            .replace(DATE_PLACEHOLDER, DATE_GLOB);
        glob::Pattern::new(&glob)
            .map_err(|e| format!("{configured:?} is not a valid glob: {e}"))?;
        Ok(Self {
            configured: configured.to_owned(),
            glob,
        })
    }
}

/// How a line is parsed.
#[derive(Debug, Clone)]
pub enum LineParser {
    /// A regex with an IP group and a timestamp group.
    Regex {
        /// The compiled regex.
        regex: Regex,
        /// Group of the IP.
        ip_group: usize,
        /// Group of the timestamp.
        timestamp_group: usize,
        /// Timestamp formats.
        formats: TimestampFormats,
    },
    /// `timestamp,ip[,…]` lines.
    Csv {
        /// Timestamp formats.
        formats: TimestampFormats,
    },
}

/// The chrono formats tried, in order, on a timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampFormats(pub Vec<String>);

impl Default for TimestampFormats {
    fn default() -> Self {
        Self(
            DEFAULT_TIMESTAMP_FORMATS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        )
    }
}

/// Where and how a SQLite source reads.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Database file.
    pub database: PathBuf,
    /// Table (a validated identifier).
    pub table: String,
    /// Increasing integer key column.
    pub id_column: String,
    /// IP column.
    pub ip_column: String,
    /// Timestamp column.
    pub timestamp_column: String,
    /// Status column.
    pub status_column: String,
    /// Accepted statuses; empty means every row.
    pub statuses: Vec<String>,
    /// Timestamp formats.
    pub formats: TimestampFormats,
}

impl TryFrom<CollectorConfig> for CollectorSettings {
    type Error = Vec<Problem>;

    fn try_from(raw: CollectorConfig) -> Result<Self, Self::Error> {
        let mut p = Problems::new();

        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text.parse().unwrap_or_else(|e| {
            p.push("listen", format!("{listen_text:?} is not host:port: {e}"));
            SocketAddr::from(([0, 0, 0, 0], 8888))
        });
        let (tls, limits) = validate_listener(
            "",
            RawListener {
                tls_cert_file: raw.tls_cert_file.as_ref(),
                tls_key_file: raw.tls_key_file.as_ref(),
                tls_client_ca_file: raw.tls_client_ca_file.as_ref(),
                header_timeout: raw.header_timeout,
                body_timeout: raw.body_timeout,
                max_connections: raw.max_connections,
            },
            &mut p,
        );

        let api_key = SecretSource::from_parts(
            "api_key",
            raw.api_key.as_ref(),
            raw.api_key_env.as_ref(),
            raw.api_key_file.as_ref(),
            &mut p,
        );
        if api_key.as_ref().is_some_and(SecretSource::is_empty_inline) {
            p.push("api_key", "is empty");
        }
        let api_key = api_key.unwrap_or_else(|| {
            p.push(
                "api_key",
                "required (api_key, api_key_env or api_key_file): pullers authenticate",
            );
            SecretSource::Inline(SecretString::from(String::new()))
        });

        let retention = raw.retention.unwrap_or(DEFAULT_RETENTION);
        if retention.is_zero() {
            p.push("retention", "must be above zero");
        }
        let max_unpulled = raw.max_unpulled.unwrap_or(DEFAULT_MAX_UNPULLED);
        if max_unpulled == 0 {
            p.push("max_unpulled", "must be at least 1");
        }
        let resume_below = raw.resume_below.unwrap_or(max_unpulled / 10 * 8);
        if resume_below >= max_unpulled && max_unpulled > 0 {
            p.push("resume_below", "must be below max_unpulled");
        }
        let scan_interval = raw.scan_interval.unwrap_or(DEFAULT_SCAN_INTERVAL);
        if scan_interval < Duration::from_millis(10) {
            p.push("scan_interval", "must be at least 10ms");
        }
        let read_batch = raw.read_batch.unwrap_or(DEFAULT_READ_BATCH);
        if !(1..=MAX_READ_BATCH).contains(&read_batch) {
            p.push("read_batch", format!("must be within 1..={MAX_READ_BATCH}"));
        }

        if raw.sources.is_empty() {
            p.push("sources", "at least one [[sources]] table is needed");
        }
        let mut names = BTreeSet::new();
        let sources = raw
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| validate_source(i, s, &mut names, &mut p))
            .collect();

        p.into_result(Self {
            listen,
            tls,
            limits,
            api_key,
            stats_require_key: raw.stats_require_key.unwrap_or(true),
            health_require_key: raw.health_require_key.unwrap_or(false),
            cache_path: raw
                .cache_path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_PATH)),
            retention,
            max_unpulled,
            resume_below,
            scan_interval,
            read_batch,
            sources,
        })
    }
}

/// Fields that only one family of kinds may set, for "does not apply" problems.
const FILE_ONLY: &[&str] = &["path", "ignore_older_than"];
const REGEX_ONLY: &[&str] = &["regex", "ip_group", "timestamp_group"];
const TABLE_ONLY: &[&str] = &[
    "database",
    "table",
    "id_column",
    "ip_column",
    "timestamp_column",
    "status_column",
    "statuses",
];

fn set_fields(s: &SourceConfig) -> Vec<&'static str> {
    let pairs: [(&'static str, bool); 12] = [
        ("path", s.path.is_some()),
        ("ignore_older_than", s.ignore_older_than.is_some()),
        ("regex", s.regex.is_some()),
        ("ip_group", s.ip_group.is_some()),
        ("timestamp_group", s.timestamp_group.is_some()),
        ("database", s.database.is_some()),
        ("table", s.table.is_some()),
        ("id_column", s.id_column.is_some()),
        ("ip_column", s.ip_column.is_some()),
        ("timestamp_column", s.timestamp_column.is_some()),
        ("status_column", s.status_column.is_some()),
        ("statuses", s.statuses.is_some()),
    ];
    pairs
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect()
}

fn validate_source(
    i: usize,
    s: &SourceConfig,
    names: &mut BTreeSet<String>,
    p: &mut Problems,
) -> Option<SourceSettings> {
    let at = |f: &str| format!("sources[{i}].{f}");
    let before = p.len();

    let name = match s.name.as_deref() {
        None => {
            p.push(at("name"), "required");
            String::new()
        }
        Some(n) => {
            if n.is_empty()
                || n.len() > 64
                || !n
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            {
                p.push(at("name"), "use 1 to 64 of a-z, 0-9, _ and -");
            }
            if !names.insert(n.to_owned()) {
                p.push(at("name"), format!("{n:?} is used by another source"));
            }
            n.to_owned()
        }
    };

    let botnet_type = match s.botnet_type.as_deref() {
        None => {
            p.push(at("botnet_type"), "required");
            None
        }
        Some(t) => BotnetType::parse(t)
            .map_err(|e| p.push(at("botnet_type"), e.to_string()))
            .ok(),
    };

    let kind = s.kind.as_deref().unwrap_or_default();
    let default_log_type = if kind == "sqlite" {
        LogType::Cleanup
    } else {
        LogType::Online
    };
    let log_type = match s.log_type.as_deref() {
        None => default_log_type,
        Some(l) => LogType::parse(l).unwrap_or_else(|| {
            p.push(
                at("log_type"),
                format!("{l:?} is not \"online\" or \"cleanup\""),
            );
            default_log_type
        }),
    };

    let formats = match s.timestamp_format.as_deref() {
        None => TimestampFormats::default(),
        Some(f) => {
            if f.is_empty() || chrono_format_has_error(f) {
                p.push(
                    at("timestamp_format"),
                    format!("{f:?} is not a chrono format"),
                );
            }
            TimestampFormats(vec![f.to_owned()])
        }
    };

    let set = set_fields(s);
    let not_for = |allowed: &[&[&str]], p: &mut Problems| {
        for f in &set {
            if !allowed.iter().any(|a| a.contains(f)) {
                p.push(at(f), format!("does not apply to kind {kind:?}"));
            }
        }
    };

    let source_kind = match kind {
        "regex" | "csv" => {
            not_for(
                if kind == "regex" {
                    &[FILE_ONLY, REGEX_ONLY]
                } else {
                    &[FILE_ONLY]
                },
                p,
            );
            let files = match s.path.as_deref() {
                None => {
                    p.push(at("path"), "required for file sources");
                    None
                }
                Some(path) => FilePattern::parse(path)
                    .map_err(|e| p.push(at("path"), e))
                    .ok(),
            };
            let parser = if kind == "regex" {
                validate_regex(s, formats, &at, p)
            } else {
                Some(LineParser::Csv { formats })
            };
            files.zip(parser).map(|(files, parser)| SourceKind::Lines {
                files,
                parser,
                ignore_older_than: s.ignore_older_than,
            })
        }
        "sqlite" => {
            not_for(&[TABLE_ONLY], p);
            let database = s.database.clone();
            if database.is_none() {
                p.push(at("database"), "required for sqlite sources");
            }
            let ident = |field: &str, v: &Option<String>, default: &str, p: &mut Problems| {
                let v = v.clone().unwrap_or_else(|| default.to_owned());
                if !is_identifier(&v) {
                    p.push(
                        at(field),
                        format!("{v:?} must be an SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"),
                    );
                }
                v
            };
            let table = ident("table", &s.table, "reports", p);
            let id_column = ident("id_column", &s.id_column, "id", p);
            let ip_column = ident("ip_column", &s.ip_column, "client_ip", p);
            let timestamp_column = ident("timestamp_column", &s.timestamp_column, "timestamp", p);
            let status_column = ident("status_column", &s.status_column, "status", p);
            database.map(|database| {
                SourceKind::Table(TableSpec {
                    database,
                    table,
                    id_column,
                    ip_column,
                    timestamp_column,
                    status_column,
                    statuses: s
                        .statuses
                        .clone()
                        .unwrap_or_else(|| vec!["SUCCESS".to_owned()]),
                    formats,
                })
            })
        }
        "" => {
            p.push(at("kind"), "required: \"regex\", \"csv\" or \"sqlite\"");
            None
        }
        other => {
            p.push(
                at("kind"),
                format!("{other:?} is not \"regex\", \"csv\" or \"sqlite\""),
            );
            None
        }
    };

    match (botnet_type, source_kind) {
        (Some(botnet_type), Some(kind)) if p.len() == before => Some(SourceSettings {
            name,
            botnet_type,
            log_type,
            kind,
        }),
        _ => None,
    }
}

fn validate_regex(
    s: &SourceConfig,
    formats: TimestampFormats,
    at: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<LineParser> {
    let Some(text) = s.regex.as_deref() else {
        p.push(at("regex"), "required for kind \"regex\"");
        return None;
    };
    let regex = match Regex::new(text) {
        Ok(r) => r,
        Err(e) => {
            p.push(at("regex"), format!("does not compile: {e}"));
            return None;
        }
    };
    let resolve =
        |field: &str, g: &Option<GroupRef>, name: &str, index: usize, p: &mut Problems| {
            let found = match g {
                Some(GroupRef::Name(n)) => {
                    regex.capture_names().position(|c| c == Some(n.as_str()))
                }
                Some(GroupRef::Index(i)) => (*i >= 1 && *i < regex.captures_len()).then_some(*i),
                None => regex
                    .capture_names()
                    .position(|c| c == Some(name))
                    .or_else(|| (index < regex.captures_len()).then_some(index)),
            };
            if found.is_none() {
                let which = g
                    .as_ref()
                    .map_or_else(|| format!("{name:?} or {index}"), ToString::to_string);
                p.push(at(field), format!("the regex has no group {which}"));
            }
            found
        };
    let ip_group = resolve("ip_group", &s.ip_group, "ip", 2, p);
    let timestamp_group = resolve("timestamp_group", &s.timestamp_group, "timestamp", 1, p);
    match (ip_group, timestamp_group) {
        (Some(ip_group), Some(timestamp_group)) => {
            if ip_group == timestamp_group {
                p.push(at("ip_group"), "must differ from timestamp_group");
            }
            Some(LineParser::Regex {
                regex,
                ip_group,
                timestamp_group,
                formats,
            })
        }
        _ => None,
    }
}

fn chrono_format_has_error(f: &str) -> bool {
    chrono::format::StrftimeItems::new(f).any(|i| matches!(i, chrono::format::Item::Error))
}

/// `[A-Za-z_][A-Za-z0-9_]*`: safe to put into SQL unquoted.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CollectorSettings, Vec<Problem>> {
        let raw: CollectorConfig = toml::from_str(text).unwrap();
        CollectorSettings::try_from(raw)
    }

    #[test]
    fn the_example_file_is_valid() {
        let s = parse(include_str!("../../../collector.example.toml")).unwrap();
        assert_eq!(s.listen.port(), 8888);
        assert!(s.sources.len() >= 3);
        assert!(s.stats_require_key);
        assert!(!s.health_require_key);
    }

    #[test]
    fn defaults_apply() {
        let s = parse(
            r#"
            api_key = "k"
            [[sources]]
            name = "gen"
            kind = "csv"
            botnet_type = "mozi"
            path = "/logs/test_{datetime}.log"
            [[sources]]
            name = "cleanup"
            kind = "sqlite"
            botnet_type = "mozi"
            database = "/c2/reports.db"
            "#,
        )
        .unwrap();
        assert_eq!(s.retention, DEFAULT_RETENTION);
        assert_eq!(s.max_unpulled, DEFAULT_MAX_UNPULLED);
        assert_eq!(s.resume_below, 800_000);
        assert_eq!(s.cache_path, PathBuf::from(DEFAULT_CACHE_PATH));
        assert_eq!(s.sources[0].log_type, LogType::Online);
        assert_eq!(s.sources[1].log_type, LogType::Cleanup);
        match &s.sources[0].kind {
            SourceKind::Lines { files, .. } => {
                assert_eq!(
                    files.glob,
                    "/logs/test_[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]_[0-9][0-9].log"
                );
            }
            other => panic!("{other:?}"),
        }
        match &s.sources[1].kind {
            SourceKind::Table(t) => {
                assert_eq!(t.table, "reports");
                assert_eq!(t.ip_column, "client_ip");
                assert_eq!(t.statuses, vec!["SUCCESS".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = parse(
            r#"
            listen = "nowhere"
            api_key = "k"
            api_key_env = "K"
            max_unpulled = 10
            resume_below = 20
            scan_interval = "1ms"
            read_batch = 0
            [[sources]]
            name = "Bad Name"
            kind = "regex"
            botnet_type = "Mozi"
            log_type = "offline"
            path = "/logs/[.log"
            regex = '(\d+'
            [[sources]]
            name = "x"
            kind = "regex"
            botnet_type = "mozi"
            path = "/logs/a.log"
            regex = '(?P<when>\S+) (\S+)'
            ip_group = "addr"
            timestamp_format = "%Q"
            [[sources]]
            name = "x"
            kind = "sqlite"
            botnet_type = "mozi"
            table = "reports; drop"
            regex = "y"
            [[sources]]
            name = "y"
            kind = "kafka"
            botnet_type = "mozi"
            "#,
        )
        .unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "listen",
            "api_key",
            "resume_below",
            "scan_interval",
            "read_batch",
            "sources[0].name",
            "sources[0].botnet_type",
            "sources[0].log_type",
            "sources[0].path",
            "sources[0].regex",
            "sources[1].ip_group",
            "sources[1].timestamp_format",
            "sources[2].name",
            "sources[2].database",
            "sources[2].table",
            "sources[2].regex",
            "sources[3].kind",
        ] {
            assert!(paths.contains(&want), "missing {want} in {problems:#?}");
        }
    }

    #[test]
    fn regex_groups_default_to_names_then_positions() {
        let s = parse(
            r#"
            api_key = "k"
            [[sources]]
            name = "named"
            kind = "regex"
            botnet_type = "mozi"
            path = "/a.log"
            regex = '(?P<ip>\S+) at (?P<timestamp>.+)'
            [[sources]]
            name = "positional"
            kind = "regex"
            botnet_type = "mozi"
            path = "/b.log"
            regex = '\[(.+?)\] (\S+)'
            "#,
        )
        .unwrap();
        let groups = |k: &SourceKind| match k {
            SourceKind::Lines {
                parser:
                    LineParser::Regex {
                        ip_group,
                        timestamp_group,
                        ..
                    },
                ..
            } => (*ip_group, *timestamp_group),
            other => panic!("{other:?}"),
        };
        assert_eq!(groups(&s.sources[0].kind), (1, 2));
        assert_eq!(groups(&s.sources[1].kind), (2, 1));
    }

    #[test]
    fn missing_key_and_sources_are_problems() {
        let problems = parse("").unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, vec!["api_key", "sources"]);
    }
}
