//! The transport under botpipe's HTTP: TLS for both ends ([`tls`]) and the server loop both
//! listeners use ([`serve`]): `botpipe run`'s HTTP listener (health, metrics, status, push) and
//! the collector's pull API. Neither side of the boundary is imported here: it knows routers,
//! sockets and certificates, not records or queues, so the collector can use it too.
//!
//! Owned here: reading PEM files into rustls configurations (when a component is built, never
//! during validation), the TLS handshake, header and body read timeouts, and the bound on
//! connections served at once. Not owned: what a route does with a request.

pub mod serve;
pub mod tls;

pub use serve::serve;
pub use tls::{client_tls, server_tls, TlsError};
