//! botpipe: pulls botnet telemetry from collectors, hands it durably to a queue, enriches each IP
//! with geolocation and ASN, and writes it idempotently into the platform database.
//!
//! Layout, one line per component (see `docs/architecture.md`):
//! - [`config`]: the TOML file and `BOTPIPE_…` overrides, validated into [`config::Settings`].
//! - [`record`]: wire records parsed once into valid [`record::Record`]s, or dead letters.
//! - [`pull`]: one task per collector endpoint: schedule, HTTP, hand-off, confirm, cursor.
//! - [`queue`]: the durable [`queue::Queue`] between pullers and workers (embedded SQLite, Redis).
//! - [`worker`]: lease a batch, enrich, write one store transaction, ack.
//! - [`enrich`]: the geo [`enrich::Lookup`] seam.
//! - [`store`]: the platform schema and its merge rules behind [`store::Store`].
//! - [`http`]: `/health`, `/ready`, `/metrics`, `/api/status`, and the push route.
//! - [`push`]: HMAC-signed push ingest from relays, answered only after the durable hand-off.
//! - [`demo`]: an in-process demo collector and its summary, for `botpipe demo`.
//! - [`bench`]: `botpipe bench`: store and end-to-end throughput on this deployment's servers.
//! - [`collector`]: `botpipe collector`, the C2-side service: sources → seq-numbered cache →
//!   pull API.
//! - [`app`]: wires the components together; [`shutdown`]: signals and grace period.
//! - [`retry`]: the one backoff policy every retrying layer uses.
//! - [`command`]: one file per subcommand, [`command::dispatch`] and the exit codes.
//! - [`cli`]: the command line (`botpipe --help`).
//! - [`telemetry`]: tracing setup and every metric name.
//! - [`transport`]: TLS for both ends and the HTTP accept loop (timeouts, connection bound).
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]
#![warn(missing_docs)]

pub mod app;
pub mod bench;
pub mod cli;
pub mod collector;
pub mod command;
pub mod config;
pub mod demo;
pub mod enrich;
pub mod http;
pub mod pull;
pub mod push;
pub mod queue;
pub mod record;
pub mod retry;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod worker;
