//! Process metrics (`botpipe_process_…`: CPU time, memory, file descriptors, threads, start
//! time), read from `/proc/self` on Linux when `/metrics` is scraped, so they are as fresh as the
//! scrape and cost nothing between scrapes. Elsewhere they are not exported.
//!
//! Why not the `metrics-process` crate: it brings `procfs` and per-OS crates for the handful of
//! numbers below, which three small `/proc` files give. A file that cannot be read (a hardened
//! `/proc`) leaves its gauges at their last value; a scrape never fails because of them.

use super::metrics as m;

/// Reads the process's figures and sets their gauges. Cheap (a few small `/proc` reads and one
/// directory listing), so it runs on the request that renders `/metrics`.
pub fn sample() {
    #[cfg(target_os = "linux")]
    linux::sample();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::OnceLock;

    use super::m;

    pub(super) fn sample() {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            if let Some(s) = parse_stat(&stat) {
                let cpu = (s.utime + s.stime) as f64 / USER_HZ;
                metrics::gauge!(m::PROCESS_CPU_SECONDS_TOTAL).set(cpu);
                metrics::gauge!(m::PROCESS_VIRTUAL_MEMORY_BYTES).set(s.vsize as f64);
                if let Some(boot) = boot_time() {
                    metrics::gauge!(m::PROCESS_START_TIME_SECONDS)
                        .set(boot as f64 + s.starttime as f64 / USER_HZ);
                }
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(kb) = status_value(&status, "VmRSS:") {
                metrics::gauge!(m::PROCESS_RESIDENT_MEMORY_BYTES).set((kb * 1024) as f64);
            }
            if let Some(n) = status_value(&status, "Threads:") {
                metrics::gauge!(m::PROCESS_THREADS).set(n as f64);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The listing's own descriptor is among them; as in other exporters, it counts.
            metrics::gauge!(m::PROCESS_OPEN_FDS).set(dir.count() as f64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            if let Some(n) = max_open_files(&limits) {
                metrics::gauge!(m::PROCESS_MAX_FDS).set(n as f64);
            }
        }
    }

    /// Clock ticks per second, the unit of `/proc/self/stat`'s times: the kernel's `USER_HZ`,
    /// which is 100 on every architecture botpipe runs on (Prometheus's own `procfs` library
    /// assumes the same), so no `sysconf` call (and no `libc` dependency) is needed.
    const USER_HZ: f64 = 100.0;

    /// The system's boot time, Unix seconds (`btime` of `/proc/stat`); it never changes.
    fn boot_time() -> Option<u64> {
        static BOOT: OnceLock<Option<u64>> = OnceLock::new();
        *BOOT.get_or_init(|| {
            let stat = std::fs::read_to_string("/proc/stat").ok()?;
            stat.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// The fields of `/proc/self/stat` used here.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Stat {
        pub utime: u64,
        pub stime: u64,
        pub starttime: u64,
        pub vsize: u64,
    }

    /// Parses `/proc/self/stat`. The second field (the command name in parentheses) may hold
    /// spaces and parentheses itself, so fields are counted from the last `)`.
    pub(super) fn parse_stat(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        // After the name: field 3 (state) is index 0, so field n is index n - 3.
        let f: Vec<&str> = rest.split_whitespace().collect();
        let at = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: at(14)?,
            stime: at(15)?,
            starttime: at(22)?,
            vsize: at(23)?,
        })
    }

    /// The number after `key` in `/proc/self/status` (`VmRSS:   1234 kB` → 1234).
    pub(super) fn status_value(text: &str, key: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// The soft limit of `Max open files` in `/proc/self/limits`.
    pub(super) fn max_open_files(text: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_fields_are_counted_after_the_command_name() {
            let text = "4242 (bot pipe) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                        250 75 0 0 20 0 12 0 987654 123456789 2048 18446744073709551615";
            assert_eq!(
                parse_stat(text),
                Some(Stat {
                    utime: 250,
                    stime: 75,
                    starttime: 987654,
                    vsize: 123456789,
                })
            );
            assert_eq!(parse_stat("garbage"), None);
        }

        #[test]
        fn status_and_limits_lines_are_read() {
            let status = "Name:\tbotpipe\nVmRSS:\t   20480 kB\nThreads:\t9\n";
            assert_eq!(status_value(status, "VmRSS:"), Some(20480));
            assert_eq!(status_value(status, "Threads:"), Some(9));
            let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                          Max open files            1024                 524288               files\n";
            assert_eq!(max_open_files(limits), Some(1024));
        }

        #[test]
        fn this_process_can_be_sampled() {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
            let s = parse_stat(&stat).unwrap();
            assert!(s.vsize > 0 && s.starttime > 0);
            assert!(boot_time().unwrap() > 1_500_000_000);
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            assert!(max_open_files(&limits).unwrap() > 0);
        }
    }
}
