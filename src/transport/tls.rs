//! TLS material, read from PEM files when a component is built:
//!
//! - [`server_tls`]: a rustls acceptor for a listener (`tls_cert_file`, `tls_key_file`, and with
//!   `tls_client_ca_file` a required client certificate). ALPN offers only `http/1.1`, so the
//!   header timeout of [`super::serve`] applies to every request.
//! - [`client_tls`]: the TLS options of the pull client: system roots (`/etc/ssl/certs` through
//!   rustls-native-certs) plus an endpoint's `ca_file`, and an optional client certificate.
//! - [`redis_tls`]: the same for `rediss://`, in the form the redis crate takes.
//!
//! rustls with the ring provider is the only TLS stack in the build (no OpenSSL); with one
//! provider compiled in, rustls selects it without a process-wide install.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::{ClientTlsSettings, ServerTlsSettings};

/// Why TLS could not be set up. Every variant names the file and the setting it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{setting} {path}: {source}")]
    Read {
        /// The setting, e.g. `tls_cert_file`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{setting} {path}: {what}")]
    Pem {
        /// The setting.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. "no PEM certificate".
        what: String,
    },
    /// rustls refused the material (a key that does not match the certificate, a bad CA).
    #[error("{setting}: {source}")]
    Rustls {
        /// The setting.
        setting: &'static str,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA file.
    #[error("tls_client_ca_file {path}: {source}")]
    ClientVerifier {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The HTTP client refused the material.
    #[error("{setting}: {source}")]
    Client {
        /// The setting.
        setting: &'static str,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_err(setting: &'static str, path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Pem {
        setting,
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(setting, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(setting, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn private_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(setting, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        pem_err(
            setting,
            path,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })
}

/// The configuration of a TLS listener, for [`super::serve`].
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not match the certificate.
pub fn server_tls(s: &ServerTlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates("tls_cert_file", &s.cert_file)?;
    let key = private_key("tls_key_file", &s.key_file)?;
    let builder = rustls::ServerConfig::builder();
    let builder = match &s.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("tls_client_ca_file", path)? {
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    setting: "tls_client_ca_file",
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            setting: "tls_key_file",
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `builder` with rustls, the system roots, `ca_file` added to them and the client
/// certificate, if configured.
///
/// # Errors
/// When a file cannot be read or is not PEM of the expected kind.
pub fn client_tls(
    builder: reqwest::ClientBuilder,
    s: &ClientTlsSettings,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut builder = builder.use_rustls_tls();
    if let Some(path) = &s.ca_file {
        // Parsed here too, so a file without a certificate is an error naming it.
        certificates("ca_file", path)?;
        let pem = read("ca_file", path)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| TlsError::Client {
                setting: "ca_file",
                source,
            })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&s.client_cert_file, &s.client_key_file) {
        certificates("client_cert_file", cert)?;
        private_key("client_key_file", key)?;
        let mut pem = read("client_cert_file", cert)?;
        pem.push(b'\n');
        pem.extend(read("client_key_file", key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|source| TlsError::Client {
            setting: "client_cert_file",
            source,
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// The certificates of a `rediss://` connection, or `None` for the system roots and no client
/// certificate. A `redis_ca_file` replaces the system roots (the redis crate's model).
///
/// # Errors
/// When a file cannot be read or is not PEM of the expected kind.
pub fn redis_tls(s: &ClientTlsSettings) -> Result<Option<redis::TlsCertificates>, TlsError> {
    if s.is_default() {
        return Ok(None);
    }
    let root_cert = match &s.ca_file {
        Some(path) => {
            certificates("redis_ca_file", path)?;
            Some(read("redis_ca_file", path)?)
        }
        None => None,
    };
    let client_tls = match (&s.client_cert_file, &s.client_key_file) {
        (Some(cert), Some(key)) => {
            certificates("redis_client_cert_file", cert)?;
            private_key("redis_client_key_file", key)?;
            Some(redis::ClientTlsConfig {
                client_cert: read("redis_client_cert_file", cert)?,
                client_key: read("redis_client_key_file", key)?,
            })
        }
        _ => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisSettings;

    /// A self-signed CA certificate and a server certificate it signed, as PEM files in `dir`:
    /// (ca, cert, key).
    fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &*ca)
            .unwrap();
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        (
            write("ca.pem", ca.pem()),
            write("cert.pem", cert.pem()),
            write("key.pem", key.serialize_pem()),
        )
    }

    /// Issue 13: `rediss://` passed validation, then every connection failed with `BadUrl`
    /// because the redis client was built without TLS.
    #[test]
    fn issue_13_rediss_urls_build_a_tls_client_with_system_roots_or_a_private_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki(dir.path());
        let mut settings = RedisSettings {
            url: "rediss://:pw@localhost:6380/0".into(),
            tls: ClientTlsSettings::default(),
            prefix: "botpipe".into(),
            group: "botpipe".into(),
        };
        let tls_addr = |s: &RedisSettings| {
            let client = crate::queue::redis_client(s).unwrap();
            matches!(
                client.get_connection_info().addr(),
                redis::ConnectionAddr::TcpTls { .. }
            )
        };
        assert!(tls_addr(&settings), "system roots");
        settings.tls = ClientTlsSettings {
            ca_file: Some(ca),
            client_cert_file: Some(cert),
            client_key_file: Some(key),
        };
        assert!(redis_tls(&settings.tls).unwrap().is_some());
        assert!(tls_addr(&settings), "private CA and client certificate");

        settings.tls.ca_file = Some(dir.path().join("missing.pem"));
        let err = crate::queue::redis_client(&settings).unwrap_err();
        let text = crate::telemetry::Chain(&err).to_string();
        assert!(
            text.contains("redis_ca_file") && text.contains("missing.pem"),
            "{text}"
        );
    }

    #[test]
    fn unusable_tls_files_are_errors_naming_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pki(dir.path());
        let ok = ServerTlsSettings {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_file: Some(ca.clone()),
        };
        assert!(server_tls(&ok).is_ok());
        // A key that is not the certificate's.
        let (_, _, other_key) = pki(&{
            let d = dir.path().join("other");
            std::fs::create_dir(&d).unwrap();
            d
        });
        let err = server_tls(&ServerTlsSettings {
            key_file: other_key,
            ..ok.clone()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("tls_key_file"), "{err}");
        // A key where the certificate belongs.
        let err = server_tls(&ServerTlsSettings {
            cert_file: key.clone(),
            ..ok.clone()
        })
        .unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err = client_tls(
            reqwest::Client::builder(),
            &ClientTlsSettings {
                ca_file: Some(dir.path().join("nope.pem")),
                ..ClientTlsSettings::default()
            },
        )
        .map(drop)
        .unwrap_err();
        assert!(err.to_string().starts_with("ca_file"), "{err}");
        assert!(client_tls(
            reqwest::Client::builder(),
            &ClientTlsSettings {
                ca_file: Some(ca),
                client_cert_file: Some(cert),
                client_key_file: Some(key),
            },
        )
        .is_ok_and(|b| b.build().is_ok()));
    }
}
