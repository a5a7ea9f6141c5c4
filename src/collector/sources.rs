//! Sources: how a log line or a table row becomes an event (an IP and a timestamp), and the
//! incremental reader of the cleanup tool's SQLite table. File tailing (which bytes to read) is
//! in [`super::tail`]; this file only interprets what was read.
//!
//! Every input has an [`Outcome`] from a closed set, counted per source, so a line that is
//! skipped is never silent. IPs go through [`NodeIp::parse`]: leading zeros are normalised and
//! private, loopback, link-local, CGNAT, multicast and reserved addresses are dropped.
//! Timestamps are normalised to `YYYY-MM-DDTHH:MM:SS` (naive local time of the C2 host; an
//! explicit offset is kept as `+HH:MM`), the form the pull API serves and the dedup key uses.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use rusqlite::{Connection, OpenFlags};

use super::config::{LineParser, TableSpec, TimestampFormats};
use crate::record::{InvalidIp, NodeIp};

/// What became of one line or row. The names are the `outcome` label of
/// `botpipe_collector_lines_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// A new record was stored.
    Stored,
    /// The record was already in the cache.
    Duplicate,
    /// The line did not match the source's format (e.g. an `[EXIST]` line).
    NoMatch,
    /// The IP text is not an address.
    BadIp,
    /// The IP is private, loopback, link-local, CGNAT, multicast or reserved.
    NonPublicIp,
    /// The timestamp did not parse.
    BadTimestamp,
    /// A table row whose status is not accepted.
    FilteredStatus,
    /// [`super::tail::MAX_CHUNK_BYTES`] without a newline, skipped.
    Oversized,
}

impl Outcome {
    /// Every outcome, for registering their counters.
    pub const ALL: [Self; 8] = [
        Self::Stored,
        Self::Duplicate,
        Self::NoMatch,
        Self::BadIp,
        Self::NonPublicIp,
        Self::BadTimestamp,
        Self::FilteredStatus,
        Self::Oversized,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::NoMatch => "no_match",
            Self::BadIp => "bad_ip",
            Self::NonPublicIp => "non_public_ip",
            Self::BadTimestamp => "bad_timestamp",
            Self::FilteredStatus => "filtered_status",
            Self::Oversized => "oversized",
        }
    }
}

/// One event read from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The normalised IP.
    pub ip: NodeIp,
    /// The normalised timestamp.
    pub timestamp: String,
}

/// Parses an IP field.
///
/// # Errors
/// [`Outcome::BadIp`] or [`Outcome::NonPublicIp`].
pub fn parse_ip(s: &str) -> Result<NodeIp, Outcome> {
    NodeIp::parse(s).map_err(|e| match e {
        InvalidIp::Syntax(_) => Outcome::BadIp,
        InvalidIp::NotPublic(_) => Outcome::NonPublicIp,
    })
}

/// Normalises a timestamp with the first format that parses it, to whole seconds.
pub fn normalise_timestamp(s: &str, formats: &TimestampFormats) -> Option<String> {
    let s = s.trim();
    for f in &formats.0 {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Some(n.format("%Y-%m-%dT%H:%M:%S").to_string());
        }
    }
    // Values with an explicit offset keep it: converting would need the C2's zone, which the
    // puller owns.
    DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z").ok())
        .map(|dt: DateTime<FixedOffset>| dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

impl LineParser {
    /// Parses one line (without its newline).
    ///
    /// # Errors
    /// Why the line does not yield an event.
    pub fn parse_line(&self, line: &str) -> Result<Event, Outcome> {
        let (ts, ip, formats) = match self {
            Self::Regex {
                regex,
                ip_group,
                timestamp_group,
                formats,
            } => {
                let caps = regex.captures(line).ok_or(Outcome::NoMatch)?;
                let ip = caps.get(*ip_group).ok_or(Outcome::NoMatch)?.as_str();
                let ts = caps.get(*timestamp_group).ok_or(Outcome::NoMatch)?.as_str();
                (ts, ip, formats)
            }
            Self::Csv { formats } => {
                let mut fields = line.split(',');
                let ts = fields.next().ok_or(Outcome::NoMatch)?;
                let ip = fields.next().ok_or(Outcome::NoMatch)?;
                (ts, ip, formats)
            }
        };
        let timestamp = normalise_timestamp(ts, formats).ok_or(Outcome::BadTimestamp)?;
        let ip = parse_ip(ip)?;
        Ok(Event { ip, timestamp })
    }
}

/// Why a table source could not be read this scan; it is tried again on the next one.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: reading {table} in {}: {error}", database.display())]
pub struct TableError {
    /// The source.
    pub source_name: String,
    /// The database file.
    pub database: PathBuf,
    /// The table.
    pub table: String,
    /// The SQLite error.
    #[source]
    pub error: rusqlite::Error,
}

/// One row of the reports table, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    /// Its id.
    pub id: i64,
    /// The parsed event, or why there is none.
    pub event: Result<Event, Outcome>,
}

/// Rows read from a table, and its largest id at the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableBatch {
    /// Rows after the cursor, in id order.
    pub rows: Vec<TableRow>,
    /// The table's largest id (`None` for an empty table): below the cursor means the table was
    /// recreated.
    pub max_id: Option<i64>,
}

/// Reads a table by increasing id. The database is opened read-only on each read, so the
/// cleanup tool replacing the file is harmless, and an absent file is simply "nothing yet".
#[derive(Debug)]
pub struct TableReader {
    source: String,
    spec: TableSpec,
    select: String,
    max_id: String,
}

impl TableReader {
    /// A reader for `spec`; the identifiers were validated by the configuration.
    pub fn new(source: &str, spec: TableSpec) -> Self {
        // Identifiers only (validated as [A-Za-z_][A-Za-z0-9_]*); values are bound parameters.
        let select = format!(
            "SELECT {id}, {ip}, {ts}, {status} FROM {table} WHERE {id} > ?1 ORDER BY {id} LIMIT ?2",
            id = spec.id_column,
            ip = spec.ip_column,
            ts = spec.timestamp_column,
            status = spec.status_column,
            table = spec.table,
        );
        let max_id = format!(
            "SELECT MAX({id}) FROM {table}",
            id = spec.id_column,
            table = spec.table
        );
        Self {
            source: source.to_owned(),
            spec,
            select,
            max_id,
        }
    }

    /// The database file.
    pub fn database(&self) -> &Path {
        &self.spec.database
    }

    fn err(&self, error: rusqlite::Error) -> Box<TableError> {
        Box::new(TableError {
            source_name: self.source.clone(),
            database: self.spec.database.clone(),
            table: self.spec.table.clone(),
            error,
        })
    }

    /// Up to `limit` rows with id above `after`, in id order, and the table's largest id.
    /// `None` when the database file does not exist yet.
    ///
    /// # Errors
    /// When the file exists but cannot be read.
    pub fn read_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Option<TableBatch>, Box<TableError>> {
        if !self.spec.database.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &self.spec.database,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.err(e))?;
        conn.busy_timeout(super::cache::BUSY_TIMEOUT)
            .map_err(|e| self.err(e))?;
        let max_id: Option<i64> = conn
            .query_row(&self.max_id, [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let mut stmt = conn.prepare(&self.select).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params![after, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    text(r.get_ref(1)?),
                    text(r.get_ref(2)?),
                    text(r.get_ref(3)?),
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let rows = rows
            .into_iter()
            .map(|(id, ip, ts, status)| TableRow {
                id,
                event: self.interpret(ip.as_deref(), ts.as_deref(), status.as_deref()),
            })
            .collect();
        Ok(Some(TableBatch { rows, max_id }))
    }

    fn interpret(
        &self,
        ip: Option<&str>,
        ts: Option<&str>,
        status: Option<&str>,
    ) -> Result<Event, Outcome> {
        if !self.spec.statuses.is_empty()
            && !status.is_some_and(|s| self.spec.statuses.iter().any(|a| a == s))
        {
            return Err(Outcome::FilteredStatus);
        }
        let timestamp = ts
            .and_then(|t| normalise_timestamp(t, &self.spec.formats))
            .ok_or(Outcome::BadTimestamp)?;
        let ip = parse_ip(ip.ok_or(Outcome::BadIp)?)?;
        Ok(Event { ip, timestamp })
    }
}

/// A TEXT (or BLOB holding UTF-8) cell; other types yield `None`.
fn text(v: rusqlite::types::ValueRef<'_>) -> Option<String> {
    match v {
        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
            std::str::from_utf8(t).ok().map(str::to_owned)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::config::FilePattern;
    use regex::Regex;

    /// The production online log's regex: it matches the `[JOIN ]` lines (a bot joined) and
    /// skips the `[EXIST]` ones.
    const JOIN_REGEX: &str = r"\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\] \[JOIN\s*\].*?([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})";

    fn join_parser() -> LineParser {
        LineParser::Regex {
            regex: Regex::new(JOIN_REGEX).unwrap(),
            ip_group: 2,
            timestamp_group: 1,
            formats: TimestampFormats::default(),
        }
    }

    #[test]
    fn join_lines_match_and_exist_lines_do_not() {
        let p = join_parser();
        let e = p
            .parse_line("[2026-03-03 16:36:49] [JOIN ] #bot   vn409   14.19.132.125")
            .unwrap();
        assert_eq!(e.ip.to_string(), "14.19.132.125");
        assert_eq!(e.timestamp, "2026-03-03T16:36:49");
        assert_eq!(
            p.parse_line("[2026-03-03 16:37:02] [EXIST] #bot   vn409   14.19.132.125"),
            Err(Outcome::NoMatch)
        );
    }

    #[test]
    fn csv_lines_of_the_legacy_generator_and_extra_fields() {
        let p = LineParser::Csv {
            formats: TimestampFormats::default(),
        };
        let e = p.parse_line("2026-01-16 16:39:55,203.0.113.7").unwrap();
        assert_eq!(e.timestamp, "2026-01-16T16:39:55");
        assert_eq!(e.ip.to_string(), "203.0.113.7");
        let e = p
            .parse_line("2025-10-29 14:22:11,45.33.12.88,infection,bot_version_v1.2")
            .unwrap();
        assert_eq!(e.ip.to_string(), "45.33.12.88");
        assert_eq!(p.parse_line("timestamp,ip"), Err(Outcome::BadTimestamp));
        assert_eq!(p.parse_line("garbage"), Err(Outcome::NoMatch));
        assert_eq!(
            p.parse_line("2026-01-16 16:39:55,1.2.3"),
            Err(Outcome::BadIp)
        );
    }

    #[test]
    fn ips_are_normalised_and_non_public_ones_dropped() {
        let p = LineParser::Csv {
            formats: TimestampFormats::default(),
        };
        let e = p.parse_line("2026-01-16 16:39:55,014.019.132.125").unwrap();
        assert_eq!(e.ip.to_string(), "14.19.132.125");
        for private in [
            "10.0.0.1",
            "192.168.1.5",
            "127.0.0.1",
            "100.64.1.1",
            "224.0.0.9",
        ] {
            assert_eq!(
                p.parse_line(&format!("2026-01-16 16:39:55,{private}")),
                Err(Outcome::NonPublicIp),
                "{private}"
            );
        }
    }

    #[test]
    fn ramnit_lines_with_a_custom_format() {
        let p = LineParser::Regex {
            regex: Regex::new(r"^(?P<timestamp>\S+ \S+) 新IP首次连接: (?P<ip>\S+)").unwrap(),
            ip_group: 2,
            timestamp_group: 1,
            formats: TimestampFormats(vec!["%Y/%m/%d %H:%M:%S".into()]),
        };
        let e = p
            .parse_line("2025/07/03 09:31:24 新IP首次连接: 180.254.163.108")
            .unwrap();
        assert_eq!(e.timestamp, "2025-07-03T09:31:24");
        assert_eq!(e.ip.to_string(), "180.254.163.108");
    }

    #[test]
    fn timestamps_normalise_to_seconds_and_keep_offsets() {
        let f = TimestampFormats::default();
        assert_eq!(
            normalise_timestamp("2026-03-03T16:38:34", &f).as_deref(),
            Some("2026-03-03T16:38:34")
        );
        assert_eq!(
            normalise_timestamp("2026-03-03 16:38:34.250", &f).as_deref(),
            Some("2026-03-03T16:38:34")
        );
        assert_eq!(
            normalise_timestamp("2026-03-03T16:38:34+08:00", &f).as_deref(),
            Some("2026-03-03T16:38:34+08:00")
        );
        assert_eq!(normalise_timestamp("yesterday", &f), None);
    }

    #[test]
    fn date_placeholders_become_globs_that_match_the_generator_names() {
        let p = FilePattern::parse("/logs/test_{datetime}.log").unwrap();
        let g = glob::Pattern::new(&p.glob).unwrap();
        assert!(g.matches("/logs/test_2026-01-16_16.log"));
        assert!(!g.matches("/logs/test_2026-01-16.log"));
        let p = FilePattern::parse("/logs/test_{date}.log").unwrap();
        let g = glob::Pattern::new(&p.glob).unwrap();
        assert!(g.matches("/logs/test_2026-01-16.log"));
        assert!(FilePattern::parse("/logs/[.log").is_err());
    }

    fn reports_db(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TABLE reports(id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT,
             client_ip TEXT, timestamp DATETIME, status TEXT)",
        )
        .unwrap();
        c
    }

    fn spec(db: &Path, statuses: &[&str]) -> TableSpec {
        TableSpec {
            database: db.to_path_buf(),
            table: "reports".into(),
            id_column: "id".into(),
            ip_column: "client_ip".into(),
            timestamp_column: "timestamp".into(),
            status_column: "status".into(),
            statuses: statuses.iter().map(|s| (*s).to_owned()).collect(),
            formats: TimestampFormats::default(),
        }
    }

    #[test]
    fn table_reader_reads_by_id_and_filters_status() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("reports.db");
        let reader = TableReader::new("cleanup", spec(&db, &["SUCCESS"]));
        assert!(reader.read_after(0, 10).unwrap().is_none(), "no file yet");
        let c = reports_db(&db);
        c.execute_batch(
            "INSERT INTO reports(device_id, client_ip, timestamp, status) VALUES
             ('d1', '14.19.132.125', '2026-03-03T16:38:34', 'SUCCESS'),
             ('d2', '45.33.12.88', '2026-03-03T16:38:35', 'FAILED'),
             ('d3', '10.1.1.1', '2026-03-03T16:38:36', 'SUCCESS'),
             ('d4', '45.33.12.89', 'soon', 'SUCCESS')",
        )
        .unwrap();
        let TableBatch { rows, max_id } = reader.read_after(0, 10).unwrap().unwrap();
        assert_eq!(max_id, Some(4));
        let outcomes: Vec<_> = rows.iter().map(|r| r.event.as_ref().err()).collect();
        assert_eq!(
            outcomes,
            [
                None,
                Some(&Outcome::FilteredStatus),
                Some(&Outcome::NonPublicIp),
                Some(&Outcome::BadTimestamp)
            ]
        );
        let rows = reader.read_after(1, 2).unwrap().unwrap().rows;
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 3]);

        let all = TableReader::new("cleanup", spec(&db, &[]));
        let rows = all.read_after(1, 1).unwrap().unwrap().rows;
        assert!(rows[0].event.is_ok(), "every status accepted");
    }
}
