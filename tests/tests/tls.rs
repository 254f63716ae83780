//! HTTPS served by openidcs itself (billing modules build `https://` URLs):
//! a self-signed certificate made on the first start, its fingerprint
//! printed for clients to pin; a configured pair; plain HTTP refused on the
//! HTTPS port.

use std::process::Command;
use std::sync::Arc;

use openidcs_tests::{Server, openssl_self_signed};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// `AB:CD:…` of the DER, as `openssl x509 -fingerprint -sha256` prints it.
fn sha256_fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint the server printed at start.
fn printed_fingerprint(server: &Server) -> String {
    server
        .startup
        .iter()
        .find_map(|line| line.split("(SHA-256 fingerprint ").nth(1))
        .map(|rest| rest.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("no fingerprint printed: {:?}", server.startup))
}

/// Accepts exactly the certificate with this SHA-256 fingerprint, as a
/// panel pinning the printed fingerprint would (no CA, no name check).
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha256_fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn pinned_client(fingerprint: &str) -> reqwest::Client {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_owned(),
            provider,
        }))
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .expect("pinned client")
}

async fn statis(client: &reqwest::Client, server: &Server) -> Result<u16, reqwest::Error> {
    client
        .get(server.url("/api/system/statis"))
        .bearer_auth(&server.token)
        .send()
        .await
        .map(|response| response.status().as_u16())
}

#[tokio::test]
async fn https_by_default_with_a_printed_fingerprint_to_pin() {
    let mut server = Server::start_https("");
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    // Verified against the certificate as a CA (its names cover 127.0.0.1).
    server.ok("GET", "/api/system/statis", None).await;

    let fingerprint = printed_fingerprint(&server);
    let pem = server.data_dir().join("https/cert.pem");
    let der = CertificateDer::from_pem_file(&pem).expect("the certificate");
    assert_eq!(sha256_fingerprint(&der), fingerprint);
    assert_eq!(
        statis(&pinned_client(&fingerprint), &server).await.ok(),
        Some(200)
    );
    let wrong = fingerprint.replace(
        &fingerprint[..2],
        if &fingerprint[..2] == "00" {
            "01"
        } else {
            "00"
        },
    );
    assert!(statis(&pinned_client(&wrong), &server).await.is_err());

    // Plain HTTP on the HTTPS port gets no answer.
    let plain = server.base.replacen("https://", "http://", 1);
    let answer = reqwest::Client::new()
        .get(format!("{plain}/api/system/statis"))
        .send()
        .await;
    assert!(answer.is_err(), "{answer:?}");

    // The pair is kept: the fingerprint survives a restart.
    server.restart(false);
    assert_eq!(printed_fingerprint(&server), fingerprint);
}

#[tokio::test]
async fn a_configured_certificate_is_served() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (cert, key) = openssl_self_signed(
        directory.path(),
        "panel.test",
        &["subjectAltName=IP:127.0.0.1"],
    );
    // openssl's own view of the fingerprint, to compare with the printed one.
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    let expected = String::from_utf8_lossy(&openssl.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_owned();
    let server = Server::start_with(
        &format!(
            "[server]\ndata_dir = \"data\"\ntls_cert = {:?}\ntls_key = {:?}\n\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
        "",
    );
    assert_eq!(printed_fingerprint(&server), expected);
    assert_eq!(
        statis(&pinned_client(&expected), &server).await.ok(),
        Some(200)
    );
    assert!(
        !server.data_dir().join("https/cert.pem").exists(),
        "no self-signed pair made"
    );
}
