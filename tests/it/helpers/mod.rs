//! Shared test harness: starting components, waiting on conditions, per-test state, a TCP
//! fault proxy.
#![allow(dead_code, unused_imports)]

pub mod app;
pub mod batch;
pub mod bin;
pub mod collector;
pub mod db;
pub mod keyspace;
pub mod prom;
pub mod proxy;
pub mod wait;

pub use app::{
    endpoint, spawn_app, spawn_app_with, spawn_collector, test_settings, TestApp, TestCollector,
};
pub use batch::test_batch;
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
