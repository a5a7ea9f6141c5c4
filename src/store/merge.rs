//! The merge rules of `docs/schema.md`, computed once per batch and shared by every backend.
//!
//! [`plan`] folds a batch into, per botnet type, one [`NodeDelta`] per IP (earliest and latest
//! online, latest cleanup, newest known geography) and the distinct communications. Backends then
//! apply each delta with `LEAST`/`GREATEST` semantics, so the result does not depend on how
//! events were batched, ordered or replayed. Node deltas are sorted by IP so concurrent writers
//! lock rows in the same order and cannot deadlock each other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::EnrichedBatch;
use crate::enrich::Geo;
use crate::record::{BotnetType, LogType, NodeIp};

/// The aggregated effect of a batch on one node row.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDelta<'a> {
    /// The node.
    pub ip: NodeIp,
    /// Earliest online event in the batch.
    pub first_online: Option<DateTime<Utc>>,
    /// Latest online event in the batch.
    pub last_online: Option<DateTime<Utc>>,
    /// Latest cleanup event in the batch.
    pub last_cleanup: Option<DateTime<Utc>>,
    /// Geography of the batch's latest event with a known lookup, if any.
    pub geo: Option<&'a Geo>,
}

impl NodeDelta<'_> {
    /// The status this delta alone implies (used for a fresh insert).
    pub fn status(&self) -> &'static str {
        derive_status(self.last_online, self.last_cleanup)
    }
}

/// One distinct communication row.
#[derive(Debug, Clone, PartialEq)]
pub struct Communication<'a> {
    /// The node.
    pub ip: NodeIp,
    /// The event time.
    pub time: DateTime<Utc>,
    /// Online or cleanup (gives `event_type` and `status`).
    pub log_type: LogType,
    /// The record's lookup result (possibly unknown).
    pub geo: &'a Geo,
}

/// Everything one batch does to the tables of one botnet type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypePlan<'a> {
    /// The type.
    pub botnet_type: BotnetType,
    /// One delta per IP, sorted by IP.
    pub nodes: Vec<NodeDelta<'a>>,
    /// Distinct communications, sorted by (IP, time, log type).
    pub communications: Vec<Communication<'a>>,
}

/// `cleaned` when the latest cleanup is at or after the latest online sighting, else `active`.
pub fn derive_status(
    last_seen: Option<DateTime<Utc>>,
    cleaned_time: Option<DateTime<Utc>>,
) -> &'static str {
    match (cleaned_time, last_seen) {
        (Some(c), Some(l)) if c >= l => "cleaned",
        (Some(_), None) => "cleaned",
        _ => "active",
    }
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Folds a batch into per-type plans, sorted by type.
pub fn plan(batch: &EnrichedBatch) -> Vec<TypePlan<'_>> {
    let unknown: &Geo = &UNKNOWN;
    struct Acc<'a> {
        delta: NodeDelta<'a>,
        geo_time: Option<DateTime<Utc>>,
    }
    type PerType<'a> = (
        BTreeMap<NodeIp, Acc<'a>>,
        BTreeMap<(NodeIp, DateTime<Utc>, LogType), &'a Geo>,
    );
    let mut by_type: BTreeMap<&BotnetType, PerType<'_>> = BTreeMap::new();
    for (i, r) in batch.batch.records.iter().enumerate() {
        let geo = batch.geo.get(i).unwrap_or(unknown);
        let (nodes, comms) = by_type.entry(&r.botnet_type).or_default();
        let acc = nodes.entry(r.ip).or_insert_with(|| Acc {
            delta: NodeDelta {
                ip: r.ip,
                first_online: None,
                last_online: None,
                last_cleanup: None,
                geo: None,
            },
            geo_time: None,
        });
        match r.log_type {
            LogType::Online => {
                acc.delta.first_online = min_opt(acc.delta.first_online, Some(r.timestamp));
                acc.delta.last_online = max_opt(acc.delta.last_online, Some(r.timestamp));
            }
            LogType::Cleanup => {
                acc.delta.last_cleanup = max_opt(acc.delta.last_cleanup, Some(r.timestamp));
            }
        }
        if geo.is_known() && acc.geo_time.is_none_or(|t| r.timestamp >= t) {
            acc.delta.geo = Some(geo);
            acc.geo_time = Some(r.timestamp);
        }
        let slot = comms.entry((r.ip, r.timestamp, r.log_type)).or_insert(geo);
        if !slot.is_known() && geo.is_known() {
            *slot = geo;
        }
    }
    by_type
        .into_iter()
        .map(|(t, (nodes, comms))| TypePlan {
            botnet_type: t.clone(),
            nodes: nodes.into_values().map(|a| a.delta).collect(),
            communications: comms
                .into_iter()
                .map(|((ip, time, log_type), geo)| Communication {
                    ip,
                    time,
                    log_type,
                    geo,
                })
                .collect(),
        })
        .collect()
}

static UNKNOWN: Geo = Geo {
    continent: None,
    country: None,
    province: None,
    city: None,
    isp: None,
    asn: None,
    longitude: None,
    latitude: None,
    is_china: false,
};

/// What the coordinate columns hold when the geodata has no coordinates for an IP: 0.0, as
/// the legacy writer stored. The platform's node list filters `longitude IS NOT NULL`, so a
/// NULL would hide an infected node from it while the aggregates still count it.
pub const UNKNOWN_COORDINATE: f64 = 0.0;

/// `(longitude, latitude)` as stored for lookup `g` (see [`UNKNOWN_COORDINATE`]).
pub fn stored_coordinates(g: Option<&Geo>) -> (f64, f64) {
    (
        g.and_then(|g| g.longitude).unwrap_or(UNKNOWN_COORDINATE),
        g.and_then(|g| g.latitude).unwrap_or(UNKNOWN_COORDINATE),
    )
}

/// The location columns, replaced together by a lookup that knows the country.
const LOCATION: [&str; 7] = [
    "country",
    "province",
    "city",
    "continent",
    "is_china",
    "longitude",
    "latitude",
];
/// The network columns: each a fact of its own (the ISP from the city database, the ASN from
/// the ASN table), kept until a lookup knows it.
const NETWORK: [&str; 2] = ["isp", "asn"];

/// The SQL assignments that merge a node's geography, for any dialect: `new(col)` names the
/// proposed value, `old(col)` the stored one. A lookup that knows the country replaces the
/// whole location, so a new country never keeps an old province, city or coordinates; a lookup
/// that does not keeps the stored location. The ISP and the ASN each take a known new value and
/// keep the stored one otherwise. Coordinates are never NULL (see [`UNKNOWN_COORDINATE`]); the
/// proposed ones are bound that way already.
pub fn place_assignments(new: impl Fn(&str) -> String, old: impl Fn(&str) -> String) -> String {
    let location = format!("{} IS NOT NULL", new("country"));
    let keep = |c: &str| {
        if c == "longitude" || c == "latitude" {
            format!("COALESCE({}, {UNKNOWN_COORDINATE:?})", old(c))
        } else {
            old(c)
        }
    };
    LOCATION
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN {location} THEN {} ELSE {} END",
                new(c),
                keep(c)
            )
        })
        .chain(
            NETWORK
                .iter()
                .map(|c| format!("{c} = COALESCE({}, {})", new(c), old(c))),
        )
        .collect::<Vec<_>>()
        .join(",\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Batch, Record};

    fn rec(ip: &str, secs: i64, log_type: LogType) -> Record {
        Record {
            ip: NodeIp::parse(ip).unwrap(),
            timestamp: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            botnet_type: BotnetType::parse("mozi").unwrap(),
            log_type,
            seq_id: None,
        }
    }

    #[test]
    fn status_rules() {
        let t = |s| DateTime::from_timestamp(s, 0);
        assert_eq!(derive_status(None, None), "active");
        assert_eq!(derive_status(t(5), None), "active");
        assert_eq!(derive_status(None, t(5)), "cleaned");
        assert_eq!(derive_status(t(5), t(5)), "cleaned");
        assert_eq!(derive_status(t(6), t(5)), "active");
    }

    #[test]
    fn plan_aggregates_per_ip_and_dedups_communications() {
        let records = vec![
            rec("1.1.1.1", 10, LogType::Online),
            rec("1.1.1.1", 5, LogType::Online),
            rec("1.1.1.1", 10, LogType::Online),
            rec("1.1.1.1", 7, LogType::Cleanup),
            rec("2.2.2.2", 1, LogType::Cleanup),
        ];
        let n = records.len();
        let b = EnrichedBatch {
            batch: Batch::new("t", records, vec![]),
            geo: vec![Geo::unknown(); n],
        };
        let plans = plan(&b);
        assert_eq!(plans.len(), 1);
        let p = &plans[0];
        assert_eq!(p.nodes.len(), 2);
        assert_eq!(p.nodes[0].first_online.unwrap().timestamp(), 1_700_000_005);
        assert_eq!(p.nodes[0].last_online.unwrap().timestamp(), 1_700_000_010);
        assert_eq!(p.nodes[0].status(), "active");
        assert_eq!(p.nodes[1].status(), "cleaned");
        assert_eq!(p.communications.len(), 4);
    }
}
