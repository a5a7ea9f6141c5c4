//! botpipe's integration tests: one binary, real components on random ports, real PostgreSQL,
//! MariaDB and Redis on this machine. `TEST_LOG=1` shows logs.

mod crash;
mod helpers;
mod pull;
mod store_contract;
