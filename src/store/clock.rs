//! [`WallClock`]: the clock the platform tables' times are written in (`[store] timezone`).
//!
//! The legacy writer stored each event's naive collector time (Asia/Shanghai wall-clock) in
//! MySQL `TIMESTAMP` columns through a session in the server's default zone, and the dashboards
//! read them the same way. So that a replayed legacy event finds its row whatever the server's
//! zone, botpipe writes every time the same way: as the wall-clock of `[store] timezone`
//! (default Asia/Shanghai), through a session left in the server's default zone. PostgreSQL
//! `timestamptz` holds the instant and botpipe's sessions run in `[store] timezone`, so the same
//! wall-clock is what they print; SQLite stores the wall-clock as text. `docs/schema.md`,
//! "Timestamps", is the rule for operators.

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// The zone the platform's collectors log in, and so the legacy tables' wall-clock.
pub const DEFAULT_TIMEZONE: Tz = chrono_tz::Asia::Shanghai;

/// The text form of a stored time: `YYYY-MM-DD HH:MM:SS`.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Converts instants to the tables' wall-clock and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    tz: Tz,
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEZONE)
    }
}

impl WallClock {
    /// The wall-clock of `tz`.
    pub fn new(tz: Tz) -> Self {
        Self { tz }
    }

    /// The zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The wall-clock time of instant `t`, whole seconds.
    pub fn wall(&self, t: DateTime<Utc>) -> NaiveDateTime {
        let n = t.with_timezone(&self.tz).naive_local();
        n.with_nanosecond(0).unwrap_or(n)
    }

    /// The wall-clock time of `t` as stored text (`YYYY-MM-DD HH:MM:SS`), whose lexical order is
    /// its time order outside a daylight-saving fold.
    pub fn text(&self, t: DateTime<Utc>) -> String {
        self.wall(t).format(TIME_FORMAT).to_string()
    }

    /// The instant of wall-clock time `n`: in a daylight-saving fold the earlier one; a time in
    /// a gap (which botpipe never writes) is read as UTC.
    pub fn instant(&self, n: NaiveDateTime) -> DateTime<Utc> {
        self.tz
            .from_local_datetime(&n)
            .earliest()
            .map_or_else(|| n.and_utc(), |t| t.with_timezone(&Utc))
    }

    /// The instant of stored text, if it is a time.
    pub fn parse(&self, text: &str) -> Option<DateTime<Utc>> {
        NaiveDateTime::parse_from_str(text.trim(), TIME_FORMAT)
            .ok()
            .map(|n| self.instant(n))
    }
}

/// The zones a store's times involve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZones {
    /// The zone of the tables' wall-clock times (`[store] timezone`, or the one a SQLite file
    /// was created with).
    pub tables: Tz,
    /// The server's default zone (MySQL), which botpipe's sessions keep.
    pub server: Option<String>,
    /// botpipe's session zone, as the server reports it.
    pub session: Option<String>,
    /// The server's offset from UTC now, in minutes (MySQL: `NOW()` against `UTC_TIMESTAMP()`).
    pub server_offset_minutes: Option<i64>,
}

impl std::fmt::Display for TimeZones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "times are {} wall-clock", self.tables.name())?;
        if let Some(s) = &self.server {
            write!(f, "; server zone {s}")?;
        }
        if let Some(s) = &self.session {
            write!(f, "; session zone {s}")?;
        }
        Ok(())
    }
}

impl TimeZones {
    /// What an operator should know: sources logging in another zone than the tables', and a
    /// server whose `NOW()` is not the tables' clock. `sources` are `(name, zone)`.
    pub fn warnings(&self, sources: &[(String, Tz)]) -> Vec<String> {
        let mut out: Vec<String> = sources
            .iter()
            .filter(|(_, tz)| *tz != self.tables)
            .map(|(name, tz)| {
                format!(
                    "{name} logs in {}, the tables hold {} wall-clock: its times are converted, so they differ from what a legacy writer stored for the same events",
                    tz.name(),
                    self.tables.name()
                )
            })
            .collect();
        if let Some(server) = self.server_offset_minutes {
            let now = Utc::now();
            let ours = self
                .tables
                .offset_from_utc_datetime(&now.naive_utc())
                .fix()
                .local_minus_utc()
                / 60;
            if i64::from(ours) != server {
                out.push(format!(
                    "the server's NOW() is UTC{:+}:{:02}, the tables hold {} wall-clock (UTC{:+}:{:02}): queries comparing stored times with NOW() are off by the difference",
                    server / 60,
                    (server % 60).abs(),
                    self.tables.name(),
                    ours / 60,
                    (ours % 60).abs()
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shanghai_wall_clock_is_eight_hours_ahead_and_round_trips() {
        let c = WallClock::default();
        let t = DateTime::from_timestamp(1_700_000_000, 500_000_000).unwrap();
        // 2023-11-14 22:13:20 UTC.
        assert_eq!(c.text(t), "2023-11-15 06:13:20");
        assert_eq!(c.parse("2023-11-15 06:13:20"), t.with_nanosecond(0));
        assert_eq!(c.parse("not a time"), None);
        let utc = WallClock::new(Tz::UTC);
        assert_eq!(utc.text(t), "2023-11-14 22:13:20");
    }
}
