//! botpipe's integration tests: one binary, real components on random ports, real PostgreSQL,
//! MariaDB and Redis on this machine. `TEST_LOG=1` shows logs.

mod collector;
mod collector_e2e;
mod crash;
mod handoff_faults;
mod helpers;
mod pull;
mod queue_contract;
mod queue_redis;
