//! Wire JSON → [`Record`]. One borrowed pass per record: the raw text is kept only for rejects.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Batch, BotnetType, DeadLetter, LogType, NodeIp, Record, RejectReason, SeqId};

/// What a record needs to be interpreted: where it came from, the zone of its naive timestamps,
/// and the botnet types configuration allows.
#[derive(Debug, Clone)]
pub struct RecordContext {
    /// Endpoint name or `push:<relay>`, stored with dead letters.
    pub source: String,
    /// The collector's local zone, applied to timestamps without an offset.
    pub tz: Tz,
    /// Allowed botnet types; others become `unknown_botnet_type` dead letters.
    pub allowed: Arc<BTreeSet<BotnetType>>,
}

/// The fields botpipe reads; everything else (`date`, `log_hour`, `_cache_id`, …) is ignored.
#[derive(Deserialize)]
struct WireRecord<'a> {
    #[serde(borrow, default)]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    botnet_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    log_type: Option<Cow<'a, str>>,
    #[serde(default)]
    seq_id: Option<u64>,
}

/// Valid records and rejects of one batch.
#[derive(Debug, Default)]
pub struct ParsedBatch {
    /// Records that passed validation, in input order.
    pub records: Vec<Record>,
    /// Records that did not.
    pub dead_letters: Vec<DeadLetter>,
}

impl ParsedBatch {
    /// Turns the parse result into a batch for hand-off.
    pub fn into_batch(self, source: impl Into<String>) -> Batch {
        Batch::new(source, self.records, self.dead_letters)
    }
}

/// Parses every raw record; never fails as a whole.
pub fn parse_batch(raws: &[&RawValue], ctx: &RecordContext) -> ParsedBatch {
    let mut out = ParsedBatch {
        records: Vec::with_capacity(raws.len()),
        dead_letters: Vec::new(),
    };
    for raw in raws {
        match parse_record(raw.get(), ctx) {
            Ok(r) => out.records.push(r),
            Err(d) => out.dead_letters.push(d),
        }
    }
    out
}

/// Parses one record's JSON text.
///
/// # Errors
/// A [`DeadLetter`] carrying the raw text and the reason.
pub fn parse_record(raw: &str, ctx: &RecordContext) -> Result<Record, DeadLetter> {
    let reject = |reason: RejectReason, detail: String| DeadLetter {
        source: ctx.source.clone(),
        reason,
        detail,
        raw: raw.to_owned(),
        rejected_at: Utc::now(),
    };
    let wire: WireRecord<'_> =
        serde_json::from_str(raw).map_err(|e| reject(RejectReason::InvalidJson, e.to_string()))?;

    let ip = wire
        .ip
        .ok_or_else(|| reject(RejectReason::MissingField, "missing ip".into()))?;
    let ip = NodeIp::parse(&ip).map_err(|e| reject(RejectReason::BadIp, e.to_string()))?;

    let ts = wire
        .timestamp
        .ok_or_else(|| reject(RejectReason::MissingField, "missing timestamp".into()))?;
    let timestamp = parse_timestamp_checked(&ts, ctx.tz)
        .map_err(|e| reject(RejectReason::BadTimestamp, format!("timestamp {ts:?}: {e}")))?;

    let bt = wire
        .botnet_type
        .ok_or_else(|| reject(RejectReason::MissingField, "missing botnet_type".into()))?;
    let botnet_type = BotnetType::parse(&bt)
        .map_err(|e| reject(RejectReason::InvalidBotnetType, e.to_string()))?;
    if !ctx.allowed.contains(&botnet_type) {
        return Err(reject(
            RejectReason::UnknownBotnetType,
            format!("botnet type {botnet_type} is not in botnet.allowed_types"),
        ));
    }

    let log_type = match wire.log_type.as_deref() {
        None => LogType::Online,
        Some(s) => LogType::parse(s)
            .ok_or_else(|| reject(RejectReason::BadLogType, format!("log_type {s:?}")))?,
    };

    Ok(Record {
        ip,
        timestamp,
        botnet_type,
        log_type,
        seq_id: wire.seq_id.map(SeqId),
    })
}

/// Years outside this range are rejected: every backend's timestamp type holds them.
const YEAR_RANGE: std::ops::RangeInclusive<i32> = 1971..=2037;

/// Why a timestamp was rejected; the text goes into the dead letter's detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not in an accepted format.
    #[error("not YYYY-MM-DDTHH:MM:SS (or a space for T), with optional fractions and offset")]
    Format,
    /// A naive local time that does not exist in the zone.
    #[error("does not exist in {0} (a daylight-saving gap)")]
    Gap(Tz),
    /// A valid time outside [`YEAR_RANGE`].
    #[error("year {0} is outside the accepted {start}..={end} (what every backend's timestamp type holds)", start = YEAR_RANGE.start(), end = YEAR_RANGE.end())]
    OutOfRange(i32),
}

/// Parses `YYYY-MM-DDTHH:MM:SS` (or a space instead of `T`), with optional fractions, and with
/// or without an offset. Naive values are local time in `tz`; at a DST fold the earlier instant
/// wins, and a time inside a DST gap is rejected. See [`parse_timestamp_checked`] for why.
pub fn parse_timestamp(s: &str, tz: Tz) -> Option<DateTime<Utc>> {
    parse_timestamp_checked(s, tz).ok()
}

/// [`parse_timestamp`], saying why a timestamp is rejected.
///
/// # Errors
/// See [`TimestampError`].
pub fn parse_timestamp_checked(s: &str, tz: Tz) -> Result<DateTime<Utc>, TimestampError> {
    let s = s.trim();
    let utc = if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        dt.with_timezone(&Utc)
    } else if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        dt.with_timezone(&Utc)
    } else {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
            .map_err(|_| TimestampError::Format)?;
        tz.from_local_datetime(&naive)
            .earliest()
            .ok_or(TimestampError::Gap(tz))?
            .with_timezone(&Utc)
    };
    use chrono::{Datelike, Timelike};
    // Whole seconds: every backend's TIMESTAMP holds seconds, and MySQL would round fractions,
    // which would break the (ip, communication_time, event_type) dedup key across backends.
    // Cannot fail: 0 is a valid nanosecond.
    let utc = utc.with_nanosecond(0).unwrap_or(utc);
    if YEAR_RANGE.contains(&utc.year()) {
        Ok(utc)
    } else {
        Err(TimestampError::OutOfRange(utc.year()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RecordContext {
        RecordContext {
            source: "ep".into(),
            tz: chrono_tz::Asia::Shanghai,
            allowed: Arc::new(
                ["mozi", "utg_q_008"]
                    .iter()
                    .map(|t| BotnetType::parse(t).unwrap())
                    .collect(),
            ),
        }
    }

    #[test]
    fn parses_the_spec_sample() {
        let raw = r#"{"ip":"14.19.132.125","timestamp":"2026-03-03T16:36:49","date":"2026-03-03",
            "log_hour":"2026-03-03_16","botnet_type":"utg_q_008","log_type":"online",
            "seq_id":41,"_cache_id":41,"_seq_id":41}"#;
        let r = parse_record(raw, &ctx()).unwrap();
        assert_eq!(r.ip.to_string(), "14.19.132.125");
        assert_eq!(r.timestamp.to_rfc3339(), "2026-03-03T08:36:49+00:00");
        assert_eq!(r.log_type, LogType::Online);
        assert_eq!(r.seq_id, Some(SeqId(41)));
    }

    #[test]
    fn missing_log_type_means_online_and_offsets_are_honoured() {
        let raw =
            r#"{"ip":"1.2.3.4","timestamp":"2026-03-03T16:36:49.5+02:00","botnet_type":"mozi"}"#;
        let r = parse_record(raw, &ctx()).unwrap();
        assert_eq!(r.log_type, LogType::Online);
        assert_eq!(r.timestamp.to_rfc3339(), "2026-03-03T14:36:49+00:00");
        assert_eq!(r.seq_id, None);
    }

    #[test]
    fn each_defect_has_its_reason() {
        let cases = [
            (r#"[1,2]"#, RejectReason::InvalidJson),
            (r#"{"ip":5}"#, RejectReason::InvalidJson),
            (
                r#"{"timestamp":"2026-03-03T16:36:49","botnet_type":"mozi"}"#,
                RejectReason::MissingField,
            ),
            (
                r#"{"ip":"1.2.3.999","timestamp":"2026-03-03T16:36:49","botnet_type":"mozi"}"#,
                RejectReason::BadIp,
            ),
            (
                r#"{"ip":"10.1.1.1","timestamp":"2026-03-03T16:36:49","botnet_type":"mozi"}"#,
                RejectReason::BadIp,
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"yesterday","botnet_type":"mozi"}"#,
                RejectReason::BadTimestamp,
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"9999-03-03T16:36:49","botnet_type":"mozi"}"#,
                RejectReason::BadTimestamp,
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2026-03-03T16:36:49","botnet_type":"Mozi; DROP"}"#,
                RejectReason::InvalidBotnetType,
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2026-03-03T16:36:49","botnet_type":"conficker"}"#,
                RejectReason::UnknownBotnetType,
            ),
            (
                r#"{"ip":"1.2.3.4","timestamp":"2026-03-03T16:36:49","botnet_type":"mozi","log_type":"offline"}"#,
                RejectReason::BadLogType,
            ),
        ];
        for (raw, reason) in cases {
            let d = parse_record(raw, &ctx()).unwrap_err();
            assert_eq!(d.reason, reason, "{raw}");
            assert_eq!(d.raw, raw);
            assert_eq!(d.source, "ep");
        }
    }

    /// Issue 13: an out-of-range timestamp's dead letter said only the value, not why.
    #[test]
    fn issue_13_a_rejected_timestamp_says_why() {
        let detail = |ts: &str| {
            let raw = format!(r#"{{"ip":"1.2.3.4","timestamp":"{ts}","botnet_type":"mozi"}}"#);
            parse_record(&raw, &ctx()).unwrap_err().detail
        };
        let range = detail("9999-03-03T16:36:49");
        assert!(range.contains("9999-03-03T16:36:49"), "{range}");
        assert!(range.contains("year 9999 is outside"), "{range}");
        assert!(range.contains("1971..=2037"), "{range}");
        let early = detail("1970-01-01T08:00:00");
        assert!(early.contains("year 1970 is outside"), "{early}");
        let garbage = detail("yesterday");
        assert!(garbage.contains("not YYYY-MM-DD"), "{garbage}");
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(s in ".{0,200}") {
            let _ = parse_record(&s, &ctx());
        }
    }
}
