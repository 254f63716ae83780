//! HTTPS for the API: the configured certificate, or a self-signed one made
//! on the first start and kept in the data dir (so its fingerprint, which
//! start-up prints for clients to pin, stays the same across restarts).

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::ServerConfig;

/// What the listener serves, and what start-up prints.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate (DER), as `AB:CD:…`.
    pub fingerprint: String,
    pub cert_path: PathBuf,
}

impl ServerTls {
    /// `[server] tls_cert`/`tls_key`, else `<data_dir>/https/{cert,key}.pem`,
    /// made now when missing.
    pub fn load(server: &ServerConfig) -> anyhow::Result<ServerTls> {
        let (cert_path, key_path) = match (&server.tls_cert, &server.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (None, None) => self_signed(&server.data_dir.join("https"), server.listen)?,
            _ => anyhow::bail!("server.tls_cert and server.tls_key go together"),
        };
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|certificates| certificates.collect())
            .with_context(|| format!("reading certificates from {}", cert_path.display()))?;
        let first = certificates
            .first()
            .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
        let fingerprint = fingerprint(first);
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .with_context(|| format!("reading the private key from {}", key_path.display()))?;
        // ring, not aws-lc-rs: it builds with cc alone (aws-lc-rs adds
        // minutes of C and cmake to every clean build on this 2-core kind).
        // rustls 0.23.48 deprecates ring's provider only to say it lacks
        // post-quantum key exchange; classical TLS 1.2/1.3 is what panels speak.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .with_context(|| {
                format!(
                    "{} and {} do not make a pair",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
            cert_path,
        })
    }
}

/// `AB:CD:…`, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The self-signed pair in `directory`, made for the loopback names and the
/// listen address when it is not there yet.
fn self_signed(directory: &Path, listen: SocketAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = directory.join("cert.pem");
    let key_path = directory.join("key.pem");
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    if let Ok(hostname) = std::fs::read_to_string("/etc/hostname") {
        let hostname = hostname.trim();
        if crate::model::rules::check_domain("hostname", hostname).is_ok() {
            names.push(hostname.to_owned());
        }
    }
    let made = rcgen::generate_simple_self_signed(names).context("making a certificate")?;
    // The key first and private: a crash between the two writes leaves no
    // certificate without its key (the next start makes a new pair).
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("writing {}", key_path.display()))?;
    key.write_all(made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, made.cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok((cert_path, key_path))
}
