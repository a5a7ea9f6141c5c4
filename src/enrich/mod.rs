//! IP enrichment: the geo [`Lookup`] seam between workers and geolocation/ASN databases.
//!
//! A lookup is synchronous and takes about a microsecond; an unknown IP is a normal result
//! ([`Geo::unknown`]) and is never retried. With no databases configured, [`AnyLookup::Disabled`]
//! is a real mode: every IP is unknown, the store leaves geography NULL and `is_china` false, and
//! the worker does not know the difference.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the databases know about one IP. `None` fields are unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    /// Continent name (Chinese where the database has it).
    pub continent: Option<String>,
    /// Country name (中国 for China).
    pub country: Option<String>,
    /// Province or state, normalised (广东, not 广东省).
    pub province: Option<String>,
    /// City.
    pub city: Option<String>,
    /// ISP or AS organisation.
    pub isp: Option<String>,
    /// AS number, e.g. `AS4134`.
    pub asn: Option<String>,
    /// WGS84 longitude.
    pub longitude: Option<f64>,
    /// WGS84 latitude.
    pub latitude: Option<f64>,
    /// True when the country is China.
    pub is_china: bool,
}

impl Geo {
    /// The result for an IP no database knows.
    pub fn unknown() -> Self {
        Self::default()
    }

    /// True when any field is known; only known results may overwrite stored geography.
    pub fn is_known(&self) -> bool {
        self.country.is_some()
            || self.province.is_some()
            || self.city.is_some()
            || self.continent.is_some()
            || self.isp.is_some()
            || self.asn.is_some()
            || self.longitude.is_some()
            || self.latitude.is_some()
    }
}

/// Outcome label of one lookup for `botpipe_enrich_lookups_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// Some database knew the IP.
    Hit,
    /// No database knew it.
    Unknown,
    /// No database is configured.
    Disabled,
}

impl LookupResult {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Unknown => "unknown",
            Self::Disabled => "disabled",
        }
    }
}

/// Resolves IPs to geography.
pub trait Lookup: Send + Sync {
    /// Looks up one IP. Never fails: an unknown IP is [`Geo::unknown`].
    fn lookup(&self, ip: IpAddr) -> (Geo, LookupResult);
}

/// The configured lookup.
#[derive(Debug, Clone, Default)]
pub enum AnyLookup {
    /// No geodata configured: every IP is unknown.
    #[default]
    Disabled,
}

impl AnyLookup {
    /// A short description for readiness and status output.
    pub fn describe(&self) -> String {
        match self {
            Self::Disabled => "disabled: no geodata configured".into(),
        }
    }
}

impl Lookup for AnyLookup {
    fn lookup(&self, _ip: IpAddr) -> (Geo, LookupResult) {
        match self {
            Self::Disabled => (Geo::unknown(), LookupResult::Disabled),
        }
    }
}
