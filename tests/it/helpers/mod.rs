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
