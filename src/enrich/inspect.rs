//! [`inspect`]: what each configured database says about some IPs, and what botpipe stores as
//! a result; the report behind `botpipe geoip`, a diagnostic for operators choosing or checking
//! geodata. It opens the same files the worker would (configured, or discovered under
//! `<data_dir>/geo/`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use super::asn::AsnDb;
use super::city::CityDb;
use super::merge::MergeRules;
use super::{
    discovery_dir, geo_files, merge_rules, unix_now, DatabaseInfo, DatabaseLookup, EnrichError,
    Geo, Lookup,
};
use crate::config::GeoSettings;
use crate::record::NodeIp;

/// Opens every database of `settings` and reports, per IP, each database's answer and the merged
/// result botpipe would store. Blocking: it opens and maps files.
///
/// # Errors
/// [`EnrichError::NoDatabases`] when none is configured or installed. A database that fails to
/// open is reported in the text, not as an error, so the others can still be compared.
pub fn inspect(
    ips: &[IpAddr],
    settings: &GeoSettings,
    data_dir: &Path,
) -> Result<String, EnrichError> {
    let files = geo_files(settings, data_dir);
    if files.is_empty() {
        return Err(EnrichError::NoDatabases {
            dir: discovery_dir(settings, data_dir),
        });
    }
    let (city_paths, asn_path) = (files.city, files.asn);
    let city: Vec<_> = city_paths
        .iter()
        .map(|p| (p.clone(), CityDb::open(p).map(Arc::new)))
        .collect();
    let asn = asn_path.map(|p| {
        let db = AsnDb::open(&p).map(Arc::new);
        (p, db)
    });
    Ok(render(
        ips,
        &city,
        asn.as_ref(),
        &merge_rules(settings),
        unix_now(),
    ))
}

type Opened<T> = (std::path::PathBuf, Result<Arc<T>, EnrichError>);

/// The report text. Writing to a `String` cannot fail, hence the ignored `fmt::Result`s.
fn render(
    ips: &[IpAddr],
    city: &[Opened<CityDb>],
    asn: Option<&Opened<AsnDb>>,
    rules: &MergeRules,
    now: u64,
) -> String {
    let mut out = String::new();
    let width = city
        .iter()
        .map(|(p, _)| p)
        .chain(asn.map(|(p, _)| p))
        .map(|p| super::city::display_name(p).chars().count())
        .max()
        .unwrap_or(0)
        .max("botpipe stores".len());
    out.push_str("Databases:\n");
    for (path, db) in city {
        let _ = match db {
            Ok(db) => writeln!(
                out,
                "  {}: {}, type {:?}, {}",
                path.display(),
                db.layout(),
                db.database_type(),
                info_of(db.name(), path, Some(db.build_epoch())).freshness(now)
            ),
            Err(e) => writeln!(out, "  {}: NOT OPENED: {e}", path.display()),
        };
    }
    if let Some((path, db)) = asn {
        let _ = match db {
            Ok(db) => writeln!(
                out,
                "  {}: {}, {}",
                path.display(),
                db.kind(),
                info_of(db.name(), path, db.build_epoch()).freshness(now)
            ),
            Err(e) => writeln!(out, "  {}: NOT OPENED: {e}", path.display()),
        };
    }
    let opened_city: Vec<Arc<CityDb>> = city
        .iter()
        .filter_map(|(_, db)| db.as_ref().ok().cloned())
        .collect();
    let opened_asn = asn.and_then(|(_, db)| db.as_ref().ok().cloned());
    let plan = super::merge::MergePlan::new(rules, &opened_city);
    let order = |idx: &[usize]| {
        idx.iter()
            .map(|&i| opened_city[i].name().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "Merge: names from {}; coordinates from {}; ASN from {}; Hong Kong, Macao, Taiwan: {}",
        order(plan.names_order()),
        order(plan.coordinates_order()),
        opened_asn
            .as_ref()
            .map_or("the city databases", |a| a.name()),
        match rules.china {
            crate::config::ChinaView::Greater => "china = \"greater\" (country 中国)",
            crate::config::ChinaView::Mainland => "china = \"mainland\" (their own country)",
        }
    );
    let merged = DatabaseLookup::from_databases(opened_city, opened_asn, rules, 0);
    for ip in ips {
        let _ = writeln!(out, "\n{ip}");
        if NodeIp::from_ip(*ip).is_err() {
            let _ = writeln!(
                out,
                "  not a public address: botpipe stores it without geography"
            );
        }
        for (path, db) in city {
            if let Ok(db) = db {
                let answer = if ip.is_ipv6() && !db.has_ipv6() {
                    "(IPv4-only database)".to_owned()
                } else {
                    describe(db.lookup(*ip).as_ref())
                };
                let _ = writeln!(out, "  {:<width$}  {answer}", db.name());
            } else {
                let _ = writeln!(out, "  {:<width$}  (not opened)", path.display());
            }
        }
        if let Some((_, Ok(db))) = asn {
            let answer = match db.lookup(*ip) {
                Some(a) => format!("{} {}", a.label, a.organisation.as_deref().unwrap_or("")),
                None => "unknown".to_owned(),
            };
            let _ = writeln!(out, "  {:<width$}  {}", db.name(), answer.trim_end());
        }
        let (geo, result) = merged.lookup(*ip);
        let _ = writeln!(
            out,
            "  {:<width$}  {} ({})",
            "botpipe stores",
            describe(Some(&geo)),
            result.as_str()
        );
    }
    out
}

fn describe(geo: Option<&Geo>) -> String {
    let Some(geo) = geo.filter(|g| g.is_known()) else {
        return "unknown".to_owned();
    };
    let mut parts = Vec::new();
    let mut text = |k: &str, v: &Option<crate::enrich::ArcStr>| {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    };
    text("continent", &geo.continent);
    text("country", &geo.country);
    text("province", &geo.province);
    text("city", &geo.city);
    text("isp", &geo.isp);
    text("asn", &geo.asn);
    if let (Some(lon), Some(lat)) = (geo.longitude, geo.latitude) {
        parts.push(format!("lon={lon} lat={lat}"));
    }
    parts.push(format!("is_china={}", geo.is_china));
    parts.join(" ")
}

fn info_of(name: &str, path: &Path, built: Option<u64>) -> DatabaseInfo {
    DatabaseInfo {
        name: name.to_owned(),
        path: path.to_path_buf(),
        kind: String::new(),
        built,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geo")
            .join(name)
    }

    #[test]
    fn report_shows_each_database_and_the_stored_result() {
        let city: Vec<_> = ["awdb-city.awdb", "flat-city-ipv4.mmdb", "missing.mmdb"]
            .iter()
            .map(|f| {
                let p = fixture(f);
                let db = CityDb::open(&p).map(Arc::new);
                (p, db)
            })
            .collect();
        let asn_path = fixture("asn.csv");
        let asn = (asn_path.clone(), AsnDb::open(&asn_path).map(Arc::new));
        let ips: Vec<IpAddr> = ["14.19.132.125", "240e::1", "10.0.0.1", "9.9.9.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // 2026-03-01: the fixtures' build date (2026-01-01) is 59 days old.
        let out = render(
            &ips,
            &city,
            Some(&asn),
            &MergeRules::default(),
            1_772_323_200,
        );
        assert!(out.contains("ipplus360 AWDB city"), "{out}");
        assert!(out.contains("missing.mmdb: NOT OPENED"), "{out}");
        assert!(out.contains("built 2026-01-01 (59 days old)"), "{out}");
        assert!(
            out.contains("province=广东 city=深圳 isp=中国电信 asn=AS4134"),
            "{out}"
        );
        assert!(out.contains("province=广东 city=Guangzhou"), "{out}");
        assert!(out.contains("AS4134 Chinanet"), "{out}");
        assert!(out.contains("(IPv4-only database)"), "{out}");
        assert!(out.contains("not a public address"), "{out}");
        assert!(out.contains("unknown (unknown)"), "{out}");
        assert!(out.contains("(hit)"), "{out}");
    }
}
