//! ASN databases: a GeoLite2-ASN `.mmdb` (memory-mapped) or the `@ip-location-db/asn` CSV ranges
//! (`start,end,asn,"org"`, IPv4 and IPv6 rows, no header) loaded into a sorted range table.
//!
//! The range table keeps one sorted vector per IP family with the AS labels (`AS4134`) and
//! organisation names interned as [`ArcStr`]s, so a lookup is one binary search and no
//! allocation: the answer shares the table's strings. The IPv4
//! table (6.6 MB for the free file) is too big for the CPU cache, so each of a plain binary
//! search's 19 probes would miss; a 256 KB index by the address's top 16 bits narrows the search
//! to the few ranges of one /16 first (about 5× faster in `benches/enrich.rs`; figures in
//! `docs/performance.md`). Loading the
//! full free CSV (about 400k IPv4 and 100k IPv6 ranges) takes a fraction of a second and happens
//! only at start and when the file changes. Ranges are expected not to overlap (the published
//! files do not); overlaps are counted at load and logged, and a lookup inside an overlap answers
//! with the range that starts last.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use arcstr::ArcStr;
use maxminddb::{Mmap, Reader};
use serde::Deserialize;

use super::city::display_name;
use super::mmdb::{self, Fingerprint};
use super::EnrichError;

/// One ASN answer: the number, its label and the organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsnInfo {
    /// AS number.
    pub number: u32,
    /// The number as the platform stores it, `AS4134`.
    pub label: ArcStr,
    /// AS organisation, when the database has one.
    pub organisation: Option<ArcStr>,
}

/// How an ASN database is stored.
pub enum AsnSource {
    /// A GeoLite2-ASN layout `.mmdb`.
    Mmdb(Reader<Mmap>),
    /// CSV ranges loaded into memory.
    Ranges(RangeTable),
}

/// One opened ASN database.
pub struct AsnDb {
    path: PathBuf,
    name: String,
    source: AsnSource,
    fingerprint: Fingerprint,
}

impl fmt::Debug for AsnDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsnDb")
            .field("path", &self.path)
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

impl AsnDb {
    /// Opens `path`: `.csv` files (any case) as ranges, anything else as a MaxMind-DB file.
    ///
    /// # Errors
    /// When the file cannot be read or parsed; CSV errors name the line.
    pub fn open(path: &Path) -> Result<Self, EnrichError> {
        let fingerprint = Fingerprint::of(path).map_err(|source| EnrichError::Io {
            path: path.to_path_buf(),
            op: "reading metadata of",
            source,
        })?;
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let source = if is_csv {
            let text = std::fs::read_to_string(path).map_err(|source| EnrichError::Io {
                path: path.to_path_buf(),
                op: "reading",
                source,
            })?;
            let table = RangeTable::parse(&text).map_err(|(line, detail)| EnrichError::Csv {
                path: path.to_path_buf(),
                line,
                detail,
            })?;
            // Debug, not info or warn: the published free file has one harmless overlap, and a
            // line about it on every start would train operators to ignore the log.
            if table.overlaps > 0 {
                tracing::debug!(path = %path.display(), overlaps = table.overlaps,
                    "ASN ranges overlap; lookups inside an overlap use the range that starts last.");
            }
            AsnSource::Ranges(table)
        } else {
            let (reader, _) = mmdb::open(path)?;
            AsnSource::Mmdb(reader)
        };
        Ok(Self {
            name: display_name(path),
            path: path.to_path_buf(),
            source,
            fingerprint,
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

    /// A short description of the storage, for `botpipe geoip`.
    pub fn kind(&self) -> String {
        match &self.source {
            AsnSource::Mmdb(r) => format!("ASN mmdb ({})", r.metadata().database_type),
            AsnSource::Ranges(t) => {
                format!("ASN CSV ranges ({} IPv4, {} IPv6)", t.v4.len(), t.v6.len())
            }
        }
    }

    /// Build time (Unix seconds): the metadata's build epoch, or the file's modification time for
    /// a CSV, which has none.
    pub fn build_epoch(&self) -> Option<u64> {
        match &self.source {
            AsnSource::Mmdb(r) => Some(r.metadata().build_epoch),
            AsnSource::Ranges(_) => self.fingerprint.modified_unix_seconds(),
        }
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The AS that announces `ip`, if known.
    pub fn lookup(&self, ip: IpAddr) -> Option<AsnInfo> {
        match &self.source {
            AsnSource::Ranges(t) => t.lookup(ip),
            AsnSource::Mmdb(r) => {
                if ip.is_ipv6() && r.metadata().ip_version != 6 {
                    return None;
                }
                let rec = r.lookup(ip).ok()?.decode::<AsnRecord<'_>>().ok()??;
                let number = rec.autonomous_system_number?;
                Some(AsnInfo {
                    number,
                    label: number_label(number),
                    organisation: rec
                        .autonomous_system_organization
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(ArcStr::from),
                })
            }
        }
    }
}

/// Sorted, non-overlapping address ranges with their AS, per family.
#[derive(Debug, Default)]
pub struct RangeTable {
    v4: Vec<Range<u32>>,
    /// `v4_index[p]`: the first IPv4 range starting at or after `p << 16`; 65,537 entries.
    v4_index: Vec<u32>,
    v6: Vec<Range<u128>>,
    /// Distinct AS numbers with their labels; `Range::asn` indexes it.
    asns: Vec<(u32, ArcStr)>,
    organisations: Vec<ArcStr>,
    overlaps: usize,
}

#[derive(Debug, Clone, Copy)]
struct Range<T> {
    start: T,
    end: T,
    /// Index into `asns`.
    asn: u32,
    /// Index into `organisations`; `u32::MAX` for none.
    organisation: u32,
}

const NO_ORGANISATION: u32 = u32::MAX;
/// Number of /16 prefixes in IPv4.
const PREFIXES: u64 = 1 << 16;

impl RangeTable {
    /// Parses CSV text; on error returns the 1-based line number and what is wrong with it.
    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut table = Self::default();
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut asn_index: HashMap<u32, u32> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |detail: String| (i + 1, detail);
            let fields = split_csv(line).map_err(|e| err(e.to_owned()))?;
            let [start, end, asn, org] = match fields.as_slice() {
                [s, e, a, o, ..] => [&**s, &**e, &**a, &**o],
                [s, e, a] => [&**s, &**e, &**a, ""],
                _ => return Err(err(format!("expected start,end,asn,org, got {line:?}"))),
            };
            // A header line, if a file has one.
            if i == 0 && start.eq_ignore_ascii_case("start") {
                continue;
            }
            let parse_ip = |s: &str| {
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| err(format!("{s:?} is not an IP address")))
            };
            let asn: u32 = asn
                .trim()
                .trim_start_matches("AS")
                .parse()
                .map_err(|_| err(format!("{asn:?} is not an AS number")))?;
            let next = u32::try_from(table.asns.len())
                .map_err(|_| err("too many AS numbers".to_owned()))?;
            let asn = *asn_index.entry(asn).or_insert_with(|| {
                table.asns.push((asn, number_label(asn)));
                next
            });
            let organisation = match org.trim() {
                "" => NO_ORGANISATION,
                org => {
                    let next = u32::try_from(table.organisations.len())
                        .map_err(|_| err("too many organisations".to_owned()))?;
                    *interned.entry(org.to_owned()).or_insert_with(|| {
                        table.organisations.push(ArcStr::from(org));
                        next
                    })
                }
            };
            match (parse_ip(start)?, parse_ip(end)?) {
                (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => table.v4.push(Range {
                    start: u32::from(s),
                    end: u32::from(e),
                    asn,
                    organisation,
                }),
                (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => table.v6.push(Range {
                    start: u128::from(s),
                    end: u128::from(e),
                    asn,
                    organisation,
                }),
                _ => return Err(err(format!("{start}..{end} is not an address range"))),
            }
        }
        table.v4.sort_unstable_by_key(|r| r.start);
        table.v6.sort_unstable_by_key(|r| r.start);
        table.overlaps = overlaps(&table.v4) + overlaps(&table.v6);
        table.v4_index = (0..=PREFIXES)
            .map(|p| {
                let first = table.v4.partition_point(|r| u64::from(r.start) < p << 16);
                u32::try_from(first).map_err(|_| (0, "too many IPv4 ranges".to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(table)
    }

    /// The last IPv4 range starting at or before `ip`, searched within `ip`'s /16 only: ranges
    /// starting before the /16 can only be the one just before it.
    fn find_v4(&self, ip: u32) -> Option<(u32, u32)> {
        let prefix = (ip >> 16) as usize;
        let at = |p: usize| self.v4_index.get(p).map(|&i| i as usize);
        let lo = at(prefix)?.saturating_sub(1);
        let hi = at(prefix + 1)?;
        let slice = self.v4.get(lo..hi)?;
        find(slice, ip)
    }

    fn lookup(&self, ip: IpAddr) -> Option<AsnInfo> {
        let (asn, organisation) = match ip {
            IpAddr::V4(v4) => self.find_v4(u32::from(v4)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
        }?;
        let (number, label) = self.asns.get(asn as usize)?;
        Some(AsnInfo {
            number: *number,
            label: label.clone(),
            organisation: self.organisations.get(organisation as usize).cloned(),
        })
    }
}

/// `AS4134` for 4134.
fn number_label(number: u32) -> ArcStr {
    arcstr::format!("AS{number}")
}

/// The AS and organisation indexes of the range holding `ip`.
fn find<T: Ord + Copy>(ranges: &[Range<T>], ip: T) -> Option<(u32, u32)> {
    let after = ranges.partition_point(|r| r.start <= ip);
    let candidate = ranges.get(after.checked_sub(1)?)?;
    (ip <= candidate.end).then_some((candidate.asn, candidate.organisation))
}

fn overlaps<T: Ord>(ranges: &[Range<T>]) -> usize {
    ranges.windows(2).filter(|w| w[1].start <= w[0].end).count()
}

/// Splits one CSV line: fields separated by commas, optionally double-quoted with `""` for a
/// literal quote.
fn split_csv(line: &str) -> Result<Vec<std::borrow::Cow<'_, str>>, &'static str> {
    use std::borrow::Cow;
    let mut fields = Vec::with_capacity(4);
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if quoted[i + 1..].starts_with('"') {
                        value.push('"');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end.ok_or("unterminated quoted field")?;
            fields.push(Cow::Owned(value));
            rest = &quoted[end..];
            match rest.strip_prefix(',') {
                Some(r) => rest = r,
                None if rest.is_empty() => return Ok(fields),
                None => return Err("text after a quoted field"),
            }
        } else {
            match rest.split_once(',') {
                Some((field, r)) => {
                    fields.push(Cow::Borrowed(field));
                    rest = r;
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return Ok(fields);
                }
            }
        }
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

    #[test]
    fn csv_ranges_answer_ipv4_and_ipv6() {
        let db = AsnDb::open(&fixture("asn.csv")).unwrap();
        let a = db.lookup(ip("14.19.132.125")).unwrap();
        assert_eq!(
            (a.number, a.label.as_str(), a.organisation.as_deref()),
            (4134, "AS4134", Some("Chinanet"))
        );
        let a = db.lookup(ip("1.1.1.1")).unwrap();
        assert_eq!(
            (a.number, a.organisation.as_deref()),
            (13335, Some("Cloudflare, Inc."))
        );
        let a = db.lookup(ip("81.2.69.1")).unwrap();
        assert_eq!(
            a.organisation.as_deref(),
            Some("Andrews \"A&A\" Arnold Ltd")
        );
        let a = db.lookup(ip("2400:cb00:1::1")).unwrap();
        assert_eq!(a.number, 13335);
        let a = db
            .lookup(ip("240e:fff:ffff:ffff:ffff:ffff:ffff:ffff"))
            .unwrap();
        assert_eq!(a.number, 4134);
        // Range edges, a gap and unknown space.
        assert_eq!(db.lookup(ip("1.1.1.0")).unwrap().number, 13335);
        assert_eq!(db.lookup(ip("1.1.1.255")).unwrap().number, 13335);
        assert!(db.lookup(ip("1.1.2.0")).is_none());
        assert!(db.lookup(ip("0.0.0.1")).is_none());
        assert!(db.lookup(ip("255.255.255.255")).is_none());
        assert!(db.lookup(ip("2a00::1")).is_none());
        assert!(db.kind().contains("5 IPv4, 2 IPv6"), "{}", db.kind());
    }

    #[test]
    fn mmdb_asn_answers_ipv4_and_ipv6() {
        let db = AsnDb::open(&fixture("geolite2-asn.mmdb")).unwrap();
        let a = db.lookup(ip("14.19.132.125")).unwrap();
        assert_eq!(
            (a.number, a.label.as_str(), a.organisation.as_deref()),
            (4134, "AS4134", Some("CHINANET-BACKBONE"))
        );
        assert_eq!(db.lookup(ip("2400:cb00::1")).unwrap().number, 13335);
        assert!(db.lookup(ip("9.9.9.9")).is_none());
        assert_eq!(db.build_epoch(), Some(1_767_225_600));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(&path, "1.0.0.0,1.0.0.255,13335,ok\n1.0.1.0,nope,1,x\n").unwrap();
        let err = AsnDb::open(&path).unwrap_err();
        assert!(matches!(err, EnrichError::Csv { line: 2, .. }), "{err}");
        std::fs::write(&path, "2.0.0.0,1.0.0.0,1,backwards\n").unwrap();
        assert!(AsnDb::open(&path).is_err());
        std::fs::write(&path, "1.0.0.0,1::,1,mixed\n").unwrap();
        assert!(AsnDb::open(&path).is_err());
    }

    #[test]
    fn csv_fields_split_with_quotes() {
        let f = split_csv(r#"a,"b, c","d ""e""",f"#).unwrap();
        assert_eq!(f, vec!["a", "b, c", "d \"e\"", "f"]);
        assert_eq!(split_csv("a,b").unwrap(), vec!["a", "b"]);
        assert_eq!(split_csv(r#"a,"""#).unwrap(), vec!["a", ""]);
        assert!(split_csv(r#"a,"b"#).is_err());
        assert!(split_csv(r#""a"b,c"#).is_err());
    }

    #[test]
    fn the_prefix_index_agrees_with_a_plain_binary_search() {
        let mut csv = String::new();
        // Ranges that end inside, span and start on /16 boundaries, with gaps between.
        for (i, (s, e)) in [
            ("1.0.0.0", "1.0.0.255"),
            ("1.0.255.0", "1.2.0.10"),
            ("1.2.0.11", "1.2.0.11"),
            ("1.3.0.0", "1.3.255.255"),
            ("9.0.0.0", "11.255.255.255"),
            ("255.255.0.0", "255.255.255.255"),
        ]
        .iter()
        .enumerate()
        {
            csv.push_str(&format!("{s},{e},{i},org{i}\n"));
        }
        let t = RangeTable::parse(&csv).unwrap();
        let probes = [
            "0.0.0.0",
            "1.0.0.0",
            "1.0.0.255",
            "1.0.1.0",
            "1.0.255.1",
            "1.1.0.0",
            "1.1.200.3",
            "1.2.0.10",
            "1.2.0.11",
            "1.2.0.12",
            "1.3.0.0",
            "1.3.255.255",
            "1.4.0.0",
            "8.255.255.255",
            "9.0.0.0",
            "10.10.10.10",
            "11.255.255.255",
            "12.0.0.0",
            "255.254.255.255",
            "255.255.0.0",
            "255.255.255.255",
        ];
        for p in probes {
            let ip: std::net::Ipv4Addr = p.parse().unwrap();
            let ip = u32::from(ip);
            assert_eq!(t.find_v4(ip), find(&t.v4, ip), "{p}");
        }
        assert_eq!(
            t.find_v4(u32::from(std::net::Ipv4Addr::new(10, 1, 2, 3)))
                .map(|r| t.asns[r.0 as usize].0),
            Some(4)
        );
    }

    #[test]
    fn overlaps_are_counted_and_unsorted_input_is_sorted() {
        let t =
            RangeTable::parse("5.0.0.0,5.0.0.9,2,b\n1.0.0.0,1.0.0.9,1,a\n1.0.0.5,1.0.0.20,3,c\n")
                .unwrap();
        assert_eq!(t.overlaps, 1);
        assert_eq!(t.lookup(ip("5.0.0.3")).unwrap().number, 2);
        assert_eq!(t.lookup(ip("1.0.0.2")).unwrap().number, 1);
        assert_eq!(t.lookup(ip("1.0.0.15")).unwrap().number, 3);
    }
}
