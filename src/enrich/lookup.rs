//! [`DatabaseLookup`]: the configured city and ASN databases behind one atomically swappable
//! snapshot, with a small cache, and the polling that reopens files when they change on disk.
//!
//! Invariants:
//! - A lookup never waits. It loads the current snapshot (`arc-swap`: a few atomic operations,
//!   no lock) and keeps it until it returns, so a reload that swaps in new files mid-lookup is
//!   invisible to it, and the old mappings are unmapped only when the last lookup using them ends.
//! - A reload builds the new snapshot beside the old one and swaps it in whole, with a fresh cache,
//!   so no answer from an old file outlives the swap.
//! - A file that fails to open keeps its previous version in service; the failure is logged and
//!   counted once per change of the file, not once per poll.
//! - Non-public addresses (private, loopback, CGNAT, …) are unknown without asking any database,
//!   whatever a database may hold for them.
//!
//! The optional per-IP cache is `quick_cache` (moka measured slower than no cache at all: the raw
//! limits in `docs/performance.md`). It is off by default ([`DEFAULT_CACHE_CAPACITY`] is 0):
//! `benches/enrich.rs` shows it costs 40–50% more per batch of fresh IPs and saves at most about
//! 1 ms per 5,000 recurring ones, because the city databases already keep their decoded records
//! per thread (see [`super::city::CityDb`]), so what a per-IP hit still saves is only the tree
//! walk; figures in `docs/performance.md`, "Enrichment". When it is on, unknown answers are cached like any other.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use quick_cache::sync::Cache;
use tokio_util::sync::CancellationToken;

use super::asn::AsnDb;
use super::city::CityDb;
use super::merge::{MergePlan, MergeRules};
use super::mmdb::Fingerprint;
use super::{EnrichError, Geo, Lookup, LookupResult};
use crate::record::NodeIp;
use crate::telemetry::metrics as m;

/// Entries in the per-IP lookup cache of [`super::open`]: 0, no cache, because it does not pay
/// enough (module docs). [`DatabaseLookup::open`] takes another capacity for measuring.
pub const DEFAULT_CACHE_CAPACITY: usize = 0;

/// How often [`DatabaseLookup::watch_until_stopped`] checks the files (one `stat` each).
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The configured databases, hot-reloadable. Cloning is cheap and shares everything.
#[derive(Clone)]
pub struct DatabaseLookup {
    inner: Arc<Inner>,
}

struct Inner {
    city_paths: Vec<PathBuf>,
    asn_path: Option<PathBuf>,
    cache_capacity: usize,
    rules: MergeRules,
    current: ArcSwap<Snapshot>,
    /// The fingerprint last seen per file (city files in order, then the ASN file), whether or
    /// not that version opened. The mutex also serialises reloads.
    seen: Mutex<Vec<Option<Fingerprint>>>,
}

/// One consistent set of open databases and the cache of their answers.
struct Snapshot {
    city: Vec<Arc<CityDb>>,
    asn: Option<Arc<AsnDb>>,
    plan: MergePlan,
    cache: Option<Cache<IpAddr, Geo>>,
}

impl fmt::Debug for DatabaseLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseLookup")
            .field("city", &self.inner.city_paths)
            .field("asn", &self.inner.asn_path)
            .field("cache_capacity", &self.inner.cache_capacity)
            .finish()
    }
}

impl DatabaseLookup {
    /// Opens every file; answers are merged by `rules`. `cache_capacity` 0 disables the cache.
    ///
    /// # Errors
    /// The first file that cannot be opened, with its path.
    pub fn open(
        city: &[PathBuf],
        asn: Option<&Path>,
        rules: &MergeRules,
        cache_capacity: usize,
    ) -> Result<Self, EnrichError> {
        let city = city
            .iter()
            .map(|p| CityDb::open(p).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let asn = asn.map(|p| AsnDb::open(p).map(Arc::new)).transpose()?;
        Ok(Self::from_databases(city, asn, rules, cache_capacity))
    }

    /// Serves databases already open; they are reloaded from their paths when those change.
    pub fn from_databases(
        city: Vec<Arc<CityDb>>,
        asn: Option<Arc<AsnDb>>,
        rules: &MergeRules,
        cache_capacity: usize,
    ) -> Self {
        let seen = city
            .iter()
            .map(|d| Some(d.fingerprint()))
            .chain(asn.iter().map(|d| Some(d.fingerprint())))
            .collect();
        let city_paths = city.iter().map(|d| d.path().to_path_buf()).collect();
        let asn_path = asn.as_ref().map(|d| d.path().to_path_buf());
        let snapshot = Snapshot::new(city, asn, rules, cache_capacity);
        snapshot.record_build_dates();
        Self {
            inner: Arc::new(Inner {
                city_paths,
                asn_path,
                cache_capacity,
                rules: rules.clone(),
                current: ArcSwap::from_pointee(snapshot),
                seen: Mutex::new(seen),
            }),
        }
    }

    /// The city databases and the ASN database currently in service.
    pub fn databases(&self) -> (Vec<Arc<CityDb>>, Option<Arc<AsnDb>>) {
        let snap = self.inner.current.load();
        (snap.city.clone(), snap.asn.clone())
    }

    /// Reopens every file whose fingerprint (inode, size, modification time) changed since it was
    /// last seen, and swaps the new set in atomically. Cheap when nothing changed: one `stat` per
    /// file. Blocking while it reopens (a large CSV takes a fraction of a second), so async
    /// callers run it on the blocking pool, as [`Self::watch_until_stopped`] does.
    ///
    /// Returns whether a new snapshot was swapped in.
    ///
    /// # Errors
    /// The first file that changed but could not be opened; the files that did open are swapped
    /// in regardless, and the failed one keeps its previous version.
    pub fn reload_if_changed(&self) -> Result<bool, EnrichError> {
        let inner = &self.inner;
        let mut seen = inner
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let snap = inner.current.load_full();
        let mut city = snap.city.clone();
        let mut asn = snap.asn.clone();
        let mut swapped_any = false;
        let mut first_error = None;
        let paths = inner.city_paths.iter().chain(inner.asn_path.iter());
        for (slot, path) in paths.enumerate() {
            let now = Fingerprint::of(path).ok();
            if seen.get(slot).copied().flatten() == now {
                continue;
            }
            if let Some(s) = seen.get_mut(slot) {
                *s = now;
            }
            if now.is_none() {
                tracing::warn!(path = %path.display(),
                    "Geo database file is gone; the version already open stays in service.");
                metrics::counter!(m::ENRICH_RELOADS_TOTAL, "outcome" => "failed").increment(1);
                continue;
            }
            let reopened = if slot < city.len() {
                CityDb::open(path).map(|db| city[slot] = Arc::new(db))
            } else {
                AsnDb::open(path).map(|db| asn = Some(Arc::new(db)))
            };
            match reopened {
                Ok(()) => {
                    swapped_any = true;
                    tracing::info!(path = %path.display(), "Reloaded geo database.");
                    metrics::counter!(m::ENRICH_RELOADS_TOTAL, "outcome" => "ok").increment(1);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error,
                        "Geo database changed but cannot be opened; the previous version stays in service.");
                    metrics::counter!(m::ENRICH_RELOADS_TOTAL, "outcome" => "failed").increment(1);
                    first_error.get_or_insert(error);
                }
            }
        }
        if swapped_any {
            let next = Snapshot::new(city, asn, &inner.rules, inner.cache_capacity);
            next.record_build_dates();
            inner.current.store(Arc::new(next));
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(swapped_any),
        }
    }

    /// Polls the files every [`RELOAD_POLL_INTERVAL`] and reloads changed ones until `token` is
    /// cancelled.
    pub async fn watch_until_stopped(&self, token: CancellationToken) {
        self.watch_every(RELOAD_POLL_INTERVAL, token).await;
    }

    /// [`Self::watch_until_stopped`] with another poll interval.
    pub async fn watch_every(&self, every: Duration, token: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The first tick fires at once; the files were just opened.
        tick.tick().await;
        loop {
            tokio::select! {
                // Cancelled: the pending tick is dropped, nothing is half done.
                () = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let this = self.clone();
            // Errors were logged and counted by reload_if_changed; a failed file keeps serving.
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "Geo database reload task failed.");
                }
            }
        }
    }
}

impl Lookup for DatabaseLookup {
    fn lookup(&self, ip: IpAddr) -> (Geo, LookupResult) {
        let Ok(ip) = NodeIp::from_ip(ip) else {
            return (Geo::unknown(), LookupResult::Unknown);
        };
        let geo = self.inner.current.load().lookup(ip.addr());
        let result = if geo.is_known() {
            LookupResult::Hit
        } else {
            LookupResult::Unknown
        };
        (geo, result)
    }
}

impl Snapshot {
    fn new(
        city: Vec<Arc<CityDb>>,
        asn: Option<Arc<AsnDb>>,
        rules: &MergeRules,
        cache_capacity: usize,
    ) -> Self {
        Self {
            plan: MergePlan::new(rules, &city),
            city,
            asn,
            cache: (cache_capacity > 0).then(|| Cache::new(cache_capacity)),
        }
    }

    fn lookup(&self, ip: IpAddr) -> Geo {
        let Some(cache) = &self.cache else {
            return self.resolve(ip);
        };
        if let Some(geo) = cache.get(&ip) {
            return geo;
        }
        let geo = self.resolve(ip);
        cache.insert(ip, geo.clone());
        geo
    }

    /// The answers of all databases merged into one (see [`super::merge`]).
    fn resolve(&self, ip: IpAddr) -> Geo {
        let asn = self.asn.as_ref().and_then(|db| db.lookup(ip));
        self.plan.resolve(ip, &self.city, asn)
    }

    fn record_build_dates(&self) {
        let dates = self
            .city
            .iter()
            .map(|d| (d.name(), Some(d.build_epoch())))
            .chain(self.asn.iter().map(|d| (d.name(), d.build_epoch())));
        for (name, epoch) in dates {
            if let Some(epoch) = epoch {
                #[allow(clippy::cast_precision_loss)] // seconds since 1970 fit in f64 exactly
                metrics::gauge!(m::GEO_DATABASE_BUILD_TIMESTAMP_SECONDS, "database" => name.to_owned())
                    .set(epoch as f64);
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

    fn open(city: &[&str], asn: Option<&str>, cache: usize) -> DatabaseLookup {
        let city: Vec<PathBuf> = city.iter().map(|c| fixture(c)).collect();
        DatabaseLookup::open(
            &city,
            asn.map(fixture).as_deref(),
            &MergeRules::default(),
            cache,
        )
        .unwrap()
    }

    #[test]
    fn first_city_database_that_knows_wins_and_asn_completes_it() {
        let l = open(
            &[
                "geoip2-city.mmdb",
                "flat-city-ipv4.mmdb",
                "flat-city-ipv6.mmdb",
            ],
            Some("asn.csv"),
            0,
        );
        let (g, r) = l.lookup(ip("14.19.132.125"));
        assert_eq!(r, LookupResult::Hit);
        assert_eq!(g.city.as_deref(), Some("深圳"));
        assert_eq!(g.asn.as_deref(), Some("AS4134"));
        assert_eq!(g.isp.as_deref(), Some("Chinanet"));
        // Only the flat file knows Hong Kong's 61.244/16; the default `china = "greater"` view
        // stores it as 中国 / 香港 (issue 17).
        let (g, _) = l.lookup(ip("61.244.1.1"));
        assert_eq!(g.country.as_deref(), Some("中国"));
        assert_eq!(g.province.as_deref(), Some("香港"));
        assert!(g.is_china);
        assert_eq!(g.asn, None);
        // The flat IPv6 file answers what the GeoIP2 file does not.
        let (g, _) = l.lookup(ip("2001:4860::8888"));
        assert_eq!(g.country.as_deref(), Some("加拿大"));
    }

    #[test]
    fn awdb_isp_and_asn_are_kept_over_the_asn_database() {
        let l = open(&["awdb-city.awdb"], Some("geolite2-asn.mmdb"), 0);
        let (g, _) = l.lookup(ip("14.19.132.125"));
        assert_eq!(g.isp.as_deref(), Some("中国电信"));
        assert_eq!(g.asn.as_deref(), Some("AS4134"));
        // AWDB has an empty ISP for 1.1.1.0/24: the ASN database fills it.
        let (g, _) = l.lookup(ip("1.1.1.1"));
        assert_eq!(g.isp.as_deref(), Some("CLOUDFLARENET"));
    }

    #[test]
    fn unknown_and_private_ips_are_unknown() {
        let l = open(
            &["geoip2-city.mmdb", "flat-city-ipv4.mmdb"],
            Some("asn.csv"),
            16,
        );
        for s in ["9.9.9.9", "2a00:1450::1"] {
            assert_eq!(
                l.lookup(ip(s)),
                (Geo::unknown(), LookupResult::Unknown),
                "{s}"
            );
            // Cached unknowns stay unknown.
            assert_eq!(
                l.lookup(ip(s)),
                (Geo::unknown(), LookupResult::Unknown),
                "{s}"
            );
        }
        // Every fixture holds 10.0.0.0/8 (and the flat IPv6 one fd00::/8) on purpose.
        for s in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "::1",
        ] {
            assert_eq!(
                l.lookup(ip(s)),
                (Geo::unknown(), LookupResult::Unknown),
                "{s}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
        let l = open(&["flat-city-ipv4.mmdb"], None, 0);
        let (g, r) = l.lookup(ip("::ffff:14.19.132.125"));
        assert_eq!(r, LookupResult::Hit);
        assert_eq!(g.province.as_deref(), Some("广东"));
    }

    #[test]
    fn cached_answers_equal_uncached_ones() {
        let cached = open(&["geoip2-city.mmdb"], Some("asn.csv"), 1024);
        let plain = open(&["geoip2-city.mmdb"], Some("asn.csv"), 0);
        for s in [
            "14.19.132.125",
            "1.1.1.1",
            "9.9.9.9",
            "240e::1",
            "14.19.132.125",
        ] {
            assert_eq!(cached.lookup(ip(s)), plain.lookup(ip(s)), "{s}");
        }
    }

    #[test]
    fn reload_swaps_a_replaced_file_and_skips_unchanged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let city = dir.path().join("city.mmdb");
        std::fs::copy(fixture("flat-city-ipv4.mmdb"), &city).unwrap();
        let l = DatabaseLookup::open(
            std::slice::from_ref(&city),
            None,
            &MergeRules::default(),
            64,
        )
        .unwrap();
        assert_eq!(
            l.lookup(ip("14.19.1.1")).0.city.as_deref(),
            Some("Guangzhou")
        );
        assert!(!l.reload_if_changed().unwrap());

        let tmp = dir.path().join("city.mmdb.tmp");
        std::fs::copy(fixture("geoip2-city.mmdb"), &tmp).unwrap();
        std::fs::rename(&tmp, &city).unwrap();
        assert!(l.reload_if_changed().unwrap());
        // The cache went with the old snapshot.
        assert_eq!(l.lookup(ip("14.19.1.1")).0.city.as_deref(), Some("深圳"));
        assert!(!l.reload_if_changed().unwrap());
    }

    #[test]
    fn a_broken_replacement_keeps_the_old_version_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let city = dir.path().join("city.mmdb");
        std::fs::copy(fixture("flat-city-ipv4.mmdb"), &city).unwrap();
        let l = DatabaseLookup::open(std::slice::from_ref(&city), None, &MergeRules::default(), 0)
            .unwrap();
        let tmp = dir.path().join("city.mmdb.tmp");
        std::fs::write(&tmp, b"half a download").unwrap();
        std::fs::rename(&tmp, &city).unwrap();
        assert!(l.reload_if_changed().is_err());
        // Same broken file: not retried, not reported again.
        assert!(!l.reload_if_changed().unwrap());
        assert_eq!(
            l.lookup(ip("14.19.1.1")).0.city.as_deref(),
            Some("Guangzhou")
        );
        // Removed: still served from the open mapping.
        std::fs::remove_file(&city).unwrap();
        assert!(!l.reload_if_changed().unwrap());
        assert_eq!(
            l.lookup(ip("14.19.1.1")).0.city.as_deref(),
            Some("Guangzhou")
        );
        // Fixed: picked up.
        std::fs::copy(fixture("geoip2-city.mmdb"), &tmp).unwrap();
        std::fs::rename(&tmp, &city).unwrap();
        assert!(l.reload_if_changed().unwrap());
        assert_eq!(l.lookup(ip("14.19.1.1")).0.city.as_deref(), Some("深圳"));
    }
}
