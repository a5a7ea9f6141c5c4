//! The test harness both test binaries share (`tests/it` and `tests/cadence`): starting botpipe
//! and a collector on random ports, a Redis key prefix per test, a TCP fault proxy, waiting on
//! conditions, reading `/metrics`, and the service check that skips a test when PostgreSQL,
//! MariaDB or Redis is not running. What only `tests/it` needs lives in `tests/it/helpers`.
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod keyspace;
pub mod prom;
pub mod proxy;
pub mod services;
pub mod wait;

pub use app::{
    endpoint, spawn_app, spawn_app_with, spawn_collector, test_settings, TestApp, TestCollector,
};
pub use wait::wait_until;

/// Turns on logs when `TEST_LOG` is set.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        botpipe::telemetry::init_logging(botpipe::telemetry::LogFormat::Pretty, "debug");
    }
}

/// A record object as a collector serves it.
pub fn wire(ip: &str, ts: &str, botnet_type: &str, log_type: &str) -> serde_json::Value {
    serde_json::json!({"ip": ip, "timestamp": ts, "botnet_type": botnet_type, "log_type": log_type})
}
