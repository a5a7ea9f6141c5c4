//! The `it` binary's harness: the shared one in `tests/harness` (re-exported here, so tests say
//! `crate::helpers::…` for both), plus what only this binary needs: per-test databases, the
//! real binary as a child process, a scripted collector, test batches.
#![allow(dead_code, unused_imports)]

pub mod batch;
pub mod bin;
pub mod collector;
pub mod db;
pub mod pki;

pub use crate::harness::{
    app, endpoint, init_test_log, keyspace, prom, proxy, services, spawn_app, spawn_app_with,
    spawn_collector, test_settings, wait, wait_until, wire, TestApp, TestCollector,
};
pub use batch::test_batch;

/// A loopback address nothing listens on: a port bound and released at once.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Pushes `n` online mozi records to `c`, numbered from `first`: distinct IPs under
/// `first_octet` and distinct times, one second apart.
pub fn push_online_mozi(c: &botpipe::demo::DemoCollector, first_octet: u8, first: u32, n: u32) {
    for i in first..first + n {
        let ip = format!(
            "{first_octet}.{}.{}.{}",
            i / 10_000 + 1,
            (i / 100) % 100 + 1,
            i % 100 + 1
        );
        let ts = chrono::DateTime::from_timestamp(1_772_000_000 + i64::from(i), 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        c.push(wire(&ip, &ts, "mozi", "online"));
    }
}
