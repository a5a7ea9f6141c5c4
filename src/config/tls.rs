//! TLS and connection-limit settings shared by botpipe's HTTP listener (`[http]`), the
//! collector's listener, the pull client (`[endpoints.<name>]`) and Redis (`[queue]`). Validation
//! is pure like the rest of configuration: it checks which files are given together, never
//! opens them; [`crate::transport`] reads them when a component is built.

use std::path::PathBuf;
use std::time::Duration;

use super::Problems;

/// Default longest wait for a request's headers (and a TLS handshake), from the connection's
/// first byte or the end of the previous request: cuts off slowloris clients.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for a whole request body once its headers are in.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on connections a listener serves at once; further clients wait in the
/// kernel's accept queue until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// A listener serves TLS with this certificate chain and key; with `client_ca_file` it also
/// requires a client certificate signed by that CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `None` asks for none.
    pub client_ca_file: Option<PathBuf>,
}

/// How a listener bounds slow and numerous clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Longest wait for a request's headers (and the TLS handshake).
    pub header_timeout: Duration,
    /// Longest wait for a request body, once the headers are in.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// TLS options of a client (pull client, Redis): extra trust and an optional client
/// certificate. All `None` means system roots and no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsSettings {
    /// PEM CA certificates to trust (a private CA).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, with `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

impl ClientTlsSettings {
    /// True when nothing beyond the system roots is configured.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The raw listener fields of one section, as written (paths under `prefix`, e.g. `http`).
#[derive(Debug, Clone, Copy)]
pub struct RawListener<'a> {
    /// `tls_cert_file`.
    pub tls_cert_file: Option<&'a PathBuf>,
    /// `tls_key_file`.
    pub tls_key_file: Option<&'a PathBuf>,
    /// `tls_client_ca_file`.
    pub tls_client_ca_file: Option<&'a PathBuf>,
    /// `header_timeout`.
    pub header_timeout: Option<Duration>,
    /// `body_timeout`.
    pub body_timeout: Option<Duration>,
    /// `max_connections`.
    pub max_connections: Option<usize>,
}

/// Validates a listener's TLS and limit fields; `prefix` is the section path (`http`, or `""`
/// for the collector's top level).
pub fn validate_listener(
    prefix: &str,
    raw: RawListener<'_>,
    c: &mut Problems,
) -> (Option<ServerTlsSettings>, ListenerLimits) {
    let at = |f: &str| {
        if prefix.is_empty() {
            f.to_owned()
        } else {
            format!("{prefix}.{f}")
        }
    };
    let tls = match (raw.tls_cert_file, raw.tls_key_file) {
        (Some(cert), Some(key)) => Some(ServerTlsSettings {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_file: raw.tls_client_ca_file.cloned(),
        }),
        (Some(_), None) => {
            c.push(at("tls_key_file"), "required with tls_cert_file");
            None
        }
        (None, Some(_)) => {
            c.push(at("tls_cert_file"), "required with tls_key_file");
            None
        }
        (None, None) => {
            if raw.tls_client_ca_file.is_some() {
                c.push(
                    at("tls_client_ca_file"),
                    "needs tls_cert_file and tls_key_file (client certificates are checked only over TLS)",
                );
            }
            None
        }
    };
    let limits = ListenerLimits {
        header_timeout: raw.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT),
        body_timeout: raw.body_timeout.unwrap_or(DEFAULT_BODY_TIMEOUT),
        max_connections: raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
    };
    if limits.header_timeout < Duration::from_millis(100) {
        c.push(at("header_timeout"), "must be at least 100ms");
    }
    if limits.body_timeout < Duration::from_millis(100) {
        c.push(at("body_timeout"), "must be at least 100ms");
    }
    if limits.max_connections == 0 {
        c.push(at("max_connections"), "must be at least 1");
    }
    (tls, limits)
}

/// Validates a client's `ca_file`, `client_cert_file` and `client_key_file` (named with
/// `prefix`, e.g. `endpoints.east.` or `queue.redis_`).
pub fn validate_client_tls(
    prefix: &str,
    ca_file: Option<&PathBuf>,
    client_cert_file: Option<&PathBuf>,
    client_key_file: Option<&PathBuf>,
    c: &mut Problems,
) -> ClientTlsSettings {
    match (client_cert_file, client_key_file) {
        (Some(_), None) => c.push(
            format!("{prefix}client_key_file"),
            "required with client_cert_file",
        ),
        (None, Some(_)) => c.push(
            format!("{prefix}client_cert_file"),
            "required with client_key_file",
        ),
        _ => {}
    }
    ClientTlsSettings {
        ca_file: ca_file.cloned(),
        client_cert_file: client_cert_file.cloned(),
        client_key_file: client_key_file.cloned(),
    }
}
