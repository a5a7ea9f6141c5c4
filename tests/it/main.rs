//! botpipe's integration tests: one binary, real components on random ports, real PostgreSQL,
//! MariaDB and Redis on this machine; a test whose service is not running is skipped
//! (`harness::services`, README "Tests"). `TEST_LOG=1` shows logs.

mod bench;
mod cli;
mod collector;
mod collector_e2e;
mod crash;
mod demo;
mod enrich;
mod fault_proxy;
mod ha;
mod handoff_faults;
#[path = "../harness/mod.rs"]
mod harness;
mod help;
mod helpers;
mod http;
mod leases;
mod logging;
mod metrics;
mod pull;
mod push;
mod queue_contract;
mod queue_redis;
mod secrets;
mod slow_clients;
mod status;
mod store_contract;
mod store_outage;
mod store_startup;
mod tls;
