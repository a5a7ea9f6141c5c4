//! Records as they cross botpipe: parsed exactly once from collector or push JSON into types that
//! are valid by construction ("parse, don't validate").
//!
//! A [`Record`] inside the system always has a routable IP, a UTC timestamp, an allowed
//! [`BotnetType`] and a [`LogType`]. Anything that fails to parse becomes a [`DeadLetter`] with a
//! [`RejectReason`] from a closed set, and never fails the batch it came in.

mod batch;
mod parse;

pub use batch::{Batch, BatchId, DeadLetter, RejectReason};
pub use parse::{
    parse_batch, parse_record, parse_timestamp, parse_timestamp_checked, ParsedBatch,
    RecordContext, TimestampError,
};

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest botnet type name: it becomes part of a table name, and MySQL limits those to 64 bytes.
pub const BOTNET_TYPE_MAX_LEN: usize = 32;

/// A botnet family name such as `mozi` or `utg_q_008`; it matches `^[a-z][a-z0-9_]{0,31}$`, so it
/// is safe to put into a table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BotnetType(String);

/// Why a string is not a valid [`BotnetType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("botnet type {0:?} must match ^[a-z][a-z0-9_]{{0,31}}$")]
pub struct InvalidBotnetType(pub String);

impl BotnetType {
    /// Validates a botnet type name.
    ///
    /// # Errors
    /// When the name does not match `^[a-z][a-z0-9_]{0,31}$`.
    pub fn parse(s: &str) -> Result<Self, InvalidBotnetType> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && s.len() <= BOTNET_TYPE_MAX_LEN {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidBotnetType(s.to_owned()))
        }
    }

    /// The name, safe to embed in an identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `botnet_nodes_<t>`.
    pub fn nodes_table(&self) -> String {
        format!("botnet_nodes_{}", self.0)
    }

    /// `botnet_communications_<t>`.
    pub fn communications_table(&self) -> String {
        format!("botnet_communications_{}", self.0)
    }
}

impl TryFrom<String> for BotnetType {
    type Error = InvalidBotnetType;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<BotnetType> for String {
    fn from(t: BotnetType) -> Self {
        t.0
    }
}

impl FromStr for BotnetType {
    type Err = InvalidBotnetType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for BotnetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the event is an infection sighting or a disinfection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    /// The IP was seen talking to the C2 (`event_type` `remote_upload`, status `active`).
    Online,
    /// The cleanup tool disinfected the IP (`event_type` `cleanup`, status `cleaned`).
    Cleanup,
}

impl LogType {
    /// Parses `online` or `cleanup`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Self::Online),
            "cleanup" => Some(Self::Cleanup),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Cleanup => "cleanup",
        }
    }

    /// The legacy `event_type` column value for this log type.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Online => "remote_upload",
            Self::Cleanup => "cleanup",
        }
    }

    /// The legacy communication `status` column value for this log type.
    pub fn communication_status(self) -> &'static str {
        match self {
            Self::Online => "active",
            Self::Cleanup => "cleaned",
        }
    }
}

/// A collector's sequence number: a positive integer, increasing within one collector epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeqId(pub u64);

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A public, normalised IP address of an infected node (v4 or v6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeIp(IpAddr);

/// Why a string is not a usable node IP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIp {
    /// Not an IPv4 or IPv6 address at all.
    #[error("{0:?} is not an IP address")]
    Syntax(String),
    /// A private, loopback, link-local, CGNAT, multicast or reserved address.
    #[error("{0} is not a public address")]
    NotPublic(IpAddr),
}

impl NodeIp {
    /// Parses an address, accepting IPv4 octets with leading zeros (`010.001.002.003`), which
    /// legacy collectors emit, and rejecting non-public ranges.
    ///
    /// # Errors
    /// [`InvalidIp::Syntax`] for garbage, [`InvalidIp::NotPublic`] for non-routable ranges.
    pub fn parse(s: &str) -> Result<Self, InvalidIp> {
        let s = s.trim();
        let ip = match s.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => parse_v4_leading_zeros(s).ok_or_else(|| InvalidIp::Syntax(s.to_owned()))?,
        };
        Self::from_ip(ip)
    }

    /// Wraps an address after checking that it is public.
    ///
    /// # Errors
    /// [`InvalidIp::NotPublic`] for non-routable ranges.
    pub fn from_ip(ip: IpAddr) -> Result<Self, InvalidIp> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if is_public(ip) {
            Ok(Self(ip))
        } else {
            Err(InvalidIp::NotPublic(ip))
        }
    }

    /// The address.
    pub fn addr(self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for NodeIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn parse_v4_leading_zeros(s: &str) -> Option<IpAddr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::from(octets))
}

/// True for globally routable unicast addresses. `std`'s `is_global` is unstable, so the ranges
/// botpipe treats as non-public (`docs/pull-protocol.md`, record fields) are listed here.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00
                || (seg0 & 0xffc0) == 0xfe80
                || seg0 == 0x2001 && v6.segments()[1] == 0xdb8)
        }
    }
}

/// One valid event: an IP of a botnet type seen online or cleaned at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Record {
    /// The node's address.
    pub ip: NodeIp,
    /// When the collector logged the event, in UTC.
    pub timestamp: DateTime<Utc>,
    /// The botnet family; it selects the tables.
    pub botnet_type: BotnetType,
    /// Online or cleanup.
    pub log_type: LogType,
    /// The collector's sequence number, when the record came from a pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<SeqId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn botnet_type_accepts_legacy_names_and_rejects_sql() {
        for ok in ["mozi", "utg_q_008", "a", "abcdefghijklmnopqrstuvwxyz012345"] {
            assert!(BotnetType::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Mozi",
            "1abc",
            "mozi;drop",
            "a-b",
            "abcdefghijklmnopqrstuvwxyz0123456",
        ] {
            assert!(BotnetType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_parse_normalises_leading_zeros() {
        assert_eq!(
            NodeIp::parse("014.019.132.125").unwrap().to_string(),
            "14.19.132.125"
        );
        assert_eq!(NodeIp::parse(" 1.2.3.4 ").unwrap().to_string(), "1.2.3.4");
    }

    #[test]
    fn ip_parse_rejects_non_public_ranges() {
        for bad in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(
                matches!(NodeIp::parse(bad), Err(InvalidIp::NotPublic(_))),
                "{bad}"
            );
        }
        assert!(matches!(NodeIp::parse("1.2.3"), Err(InvalidIp::Syntax(_))));
        assert!(matches!(
            NodeIp::parse("1.2.3.256"),
            Err(InvalidIp::Syntax(_))
        ));
        assert!(NodeIp::parse("2400:cb00::1").is_ok());
    }

    #[test]
    fn ipv4_mapped_v6_becomes_v4() {
        assert_eq!(
            NodeIp::parse("::ffff:1.2.3.4").unwrap().to_string(),
            "1.2.3.4"
        );
    }
}
