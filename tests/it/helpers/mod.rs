//! Shared test harness: waiting on conditions, per-test state, a TCP fault proxy.
#![allow(dead_code)]

pub mod batch;
pub mod keyspace;
pub mod proxy;
pub mod wait;

pub use batch::test_batch;
pub use wait::wait_until;

/// Turns on logs when `TEST_LOG` is set.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        botpipe::telemetry::init_logging(botpipe::telemetry::LogFormat::Pretty, "debug");
    }
}
