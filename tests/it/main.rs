//! botpipe's integration tests: one binary, real components on random ports, real PostgreSQL,
//! MariaDB and Redis on this machine. `TEST_LOG=1` shows logs.

mod cli;
mod collector;
mod collector_e2e;
mod crash;
mod enrich;
mod handoff_faults;
mod helpers;
mod http;
mod logging;
mod pull;
mod push;
mod queue_contract;
mod queue_redis;
mod store_contract;
