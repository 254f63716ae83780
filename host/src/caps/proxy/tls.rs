//! The TLS material of a site: PEM that must parse before it is written.
//!
//! The certificate chain must be `CERTIFICATE` blocks that decode as X.509;
//! the key one `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or
//! `EC PRIVATE KEY` (SEC1) block that decodes as such. What is written is the
//! blocks re-encoded from the decoded DER, never the text as given: text
//! around the blocks (RFC 7468 allows it, OpenSSL prints it) is dropped, so a
//! file holds only what was checked. Whether the key matches the certificate
//! is left to `nginx -t`, which refuses a mismatch (and the change is rolled
//! back).

use der::Decode;
use der::pem::{self, LineEnding};

use super::check::shown;
use crate::plugin::bindings::{PluginError, TlsPair};

/// A generous bound for a chain (a leaf and a few intermediates are ~10 KiB).
const MAX_CERT_PEM: usize = 256 * 1024;
/// A generous bound for one key (an RSA-8192 PKCS#8 key is ~6 KiB).
const MAX_KEY_PEM: usize = 64 * 1024;
/// More blocks than any real chain has.
const MAX_BLOCKS: usize = 16;

/// Checked and re-encoded PEM, as written to the site's `.crt` and `.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn check_pair(pair: &TlsPair) -> Result<TlsMaterial, PluginError> {
    Ok(TlsMaterial {
        cert_pem: check_chain(&pair.cert_pem)?,
        key_pem: check_key(&pair.key_pem)?,
    })
}

/// One decoded PEM block.
struct Block {
    label: String,
    der: Vec<u8>,
}

/// The certificate chain, re-encoded: one or more X.509 certificates and
/// nothing else (a key pasted into the certificate field would otherwise end
/// up in a file read by every reload).
pub fn check_chain(text: &str) -> Result<String, PluginError> {
    let blocks = pem_blocks("certificate", text, MAX_CERT_PEM)?;
    if blocks.is_empty() {
        return Err(invalid("certificate", "has no PEM block"));
    }
    let mut chain = String::new();
    for (position, block) in blocks.iter().enumerate() {
        if block.label != "CERTIFICATE" {
            return Err(invalid(
                "certificate",
                &format!(
                    "block {} is {}, not CERTIFICATE",
                    position + 1,
                    shown(&block.label)
                ),
            ));
        }
        x509_cert::Certificate::from_der(&block.der).map_err(|error| {
            invalid(
                "certificate",
                &format!(
                    "block {} is not an X.509 certificate: {error}",
                    position + 1
                ),
            )
        })?;
        chain.push_str(&encode("certificate", "CERTIFICATE", &block.der)?);
    }
    Ok(chain)
}

/// The private key, re-encoded: exactly one unencrypted key (nginx would
/// stop at a pass-phrase prompt on an encrypted one). `EC PARAMETERS`, which
/// `openssl ecparam -genkey` writes before the key, is dropped: the key
/// carries its curve.
pub fn check_key(text: &str) -> Result<String, PluginError> {
    let mut key = None;
    for block in pem_blocks("key", text, MAX_KEY_PEM)? {
        let parsed = match block.label.as_str() {
            "EC PARAMETERS" => continue,
            "PRIVATE KEY" => pkcs8::PrivateKeyInfoRef::from_der(&block.der).map(drop),
            "RSA PRIVATE KEY" => pkcs1::RsaPrivateKeyRef::from_der(&block.der).map(drop),
            "EC PRIVATE KEY" => sec1::EcPrivateKey::from_der(&block.der).map(drop),
            "ENCRYPTED PRIVATE KEY" => {
                return Err(invalid(
                    "key",
                    "is encrypted; nginx needs an unencrypted key",
                ));
            }
            other => {
                return Err(invalid(
                    "key",
                    &format!("has a {} block, not a private key", shown(other)),
                ));
            }
        };
        parsed.map_err(|error| {
            invalid(
                "key",
                &format!("{} block does not parse: {error}", block.label),
            )
        })?;
        if key.is_some() {
            return Err(invalid("key", "has more than one private key"));
        }
        key = Some(encode("key", &block.label, &block.der)?);
    }
    key.ok_or_else(|| invalid("key", "has no private key block"))
}

/// The PEM blocks of `text`, decoded by RFC 7468's strict grammar (which
/// refuses RFC 1421 headers such as `Proc-Type: 4,ENCRYPTED`). Lines outside
/// blocks are explanatory text and are skipped.
fn pem_blocks(what: &str, text: &str, limit: usize) -> Result<Vec<Block>, PluginError> {
    if text.len() > limit {
        return Err(invalid(what, &format!("is larger than {limit} bytes")));
    }
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match current.as_mut() {
            None if line.starts_with("-----BEGIN ") => current = Some(format!("{line}\n")),
            None => {}
            Some(block) => {
                block.push_str(line);
                block.push('\n');
                if line.starts_with("-----END ") {
                    let (label, der) = pem::decode_vec(block.as_bytes()).map_err(|error| {
                        invalid(
                            what,
                            &format!("block {} is not valid PEM: {error}", blocks.len() + 1),
                        )
                    })?;
                    blocks.push(Block {
                        label: label.to_owned(),
                        der,
                    });
                    current = None;
                    if blocks.len() > MAX_BLOCKS {
                        return Err(invalid(
                            what,
                            &format!("has more than {MAX_BLOCKS} PEM blocks"),
                        ));
                    }
                }
            }
        }
    }
    if current.is_some() {
        return Err(invalid(what, "has a BEGIN line without its END line"));
    }
    Ok(blocks)
}

fn encode(what: &str, label: &str, der: &[u8]) -> Result<String, PluginError> {
    pem::encode_string(label, LineEnding::LF, der)
        .map_err(|error| invalid(what, &format!("cannot be re-encoded: {error}")))
}

fn invalid(what: &str, problem: &str) -> PluginError {
    PluginError::Invalid(format!("TLS {what} {problem}"))
}
