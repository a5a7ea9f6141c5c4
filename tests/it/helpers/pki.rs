//! A throwaway PKI for TLS tests: a private CA, a server certificate for `localhost` and
//! `127.0.0.1` signed by it, a client certificate signed by it, and an unrelated second CA (the
//! "wrong CA"). Everything is generated per test into a tempdir as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files of one test PKI.
pub struct Pki {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate (`localhost`, `127.0.0.1`).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// Client certificate (CN `relay`).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub other_client_cert: PathBuf,
    /// Its key.
    pub other_client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &**issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

impl Pki {
    /// A fresh PKI.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let main = ca("botpipe test CA");
        let other = ca("some other CA");
        let (server_cert, server_key) = leaf(
            &main,
            &["localhost", "127.0.0.1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(&main, &[], "relay", ExtendedKeyUsagePurpose::ClientAuth);
        let (other_client_cert, other_client_key) =
            leaf(&other, &[], "intruder", ExtendedKeyUsagePurpose::ClientAuth);
        Self {
            ca: write(d, "ca.pem", &main.pem()),
            server_cert: write(d, "server.pem", &server_cert),
            server_key: write(d, "server.key", &server_key),
            client_cert: write(d, "client.pem", &client_cert),
            client_key: write(d, "client.key", &client_key),
            other_ca: write(d, "other-ca.pem", &other.pem()),
            other_client_cert: write(d, "other-client.pem", &other_client_cert),
            other_client_key: write(d, "other-client.key", &other_client_key),
            dir,
        }
    }

    /// A reqwest client trusting this CA, with the client certificate when `with_client_cert`.
    pub fn client(&self, with_client_cert: bool) -> reqwest::Client {
        let ca = std::fs::read(&self.ca).unwrap();
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
        if with_client_cert {
            let mut pem = std::fs::read(&self.client_cert).unwrap();
            pem.extend(std::fs::read(&self.client_key).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }
}
