//! Image signatures as cosign writes and reads them (sigstore's "simple signing" in OCI
//! registries):
//!
//! - The **payload** is a small JSON document naming the image by its manifest digest and its
//!   repository: `{"critical":{"identity":{"docker-reference":REPO},"image":
//!   {"docker-manifest-digest":DIGEST},"type":"cosign container image signature"},
//!   "optional":null}`.
//! - The **signature** is ECDSA P-256 over the payload's SHA-256, DER-encoded, in base64
//!   (RFC 6979 nonces: the same key and payload give the same signature, so a signed build
//!   stays reproducible).
//! - They are **stored** as an image tagged `sha256-HEX.sig` (HEX: the signed manifest's
//!   digest) in the same repository: each signature one layer whose blob is the payload
//!   (`application/vnd.dev.cosign.simplesigning.v1+json`) and whose annotation
//!   `dev.cosignproject.cosign/signature` holds it; the config lists the layers' digests as
//!   diff_ids. Signing again adds a layer; the same signature twice is one layer.
//!
//! Keys are read as PKCS#8 PEM: a private key to sign (unencrypted, kept out of the Nix
//! store), a public key (`PUBLIC KEY`) to verify. Anything else is refused, saying what to
//! give instead.

use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde::Deserialize;
use serde_json::json;

use crate::error::{Error, Result, Setting, shown, shown_path};

/// The payload's media type.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// A key file is a few hundred bytes; this bounds what is read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// How to make a key this module takes.
const MAKE_A_KEY: &str = "make one with: openssl genpkey -algorithm EC -pkeyopt \
                          ec_paramgen_curve:P-256 -out key.pem (and openssl pkey -in key.pem \
                          -pubout -out key.pub for verify)";

/// An ECDSA P-256 private key; its Debug shows nothing of it.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(P-256)")
    }
}

/// An ECDSA P-256 public key.
#[derive(Clone, Debug)]
pub struct PublicKey(VerifyingKey);

/// Reads the PEM text of a key file, bounded (a pipe works: a key need not touch the disk).
fn read_key_file(path: &Path) -> Result<String> {
    let bytes = crate::json_file::read_limited(path, MAX_KEY_FILE)?;
    String::from_utf8(bytes).map_err(|_| {
        Error::value(format!(
            "{} is not a PEM file (it is not text)",
            shown_path(path)
        ))
    })
}

/// The label of the first PEM block in `text` (`PRIVATE KEY`, `PUBLIC KEY`, ...).
fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(&text[start..start + end])
}

impl PrivateKey {
    /// Reads `--sign-key`: an unencrypted PKCS#8 PEM private key on the P-256 curve.
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_key_file(path)?;
        let refuse = |what: String| {
            Error::value(format!("{} {what}", shown_path(path))).about(Setting::SignKey)
        };
        match pem_label(&text) {
            Some("PRIVATE KEY") => {}
            Some("ENCRYPTED PRIVATE KEY") => {
                return Err(refuse(
                    "is an encrypted key, and layered-gen asks for no password: give it \
                     unencrypted (openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem), kept \
                     outside the Nix store"
                        .into(),
                ));
            }
            Some("EC PRIVATE KEY") => {
                return Err(refuse(
                    "is a SEC1 EC key: give it as PKCS#8 (openssl pkcs8 -topk8 -nocrypt -in \
                     KEY -out KEY.pem)"
                        .into(),
                ));
            }
            Some(other) => {
                return Err(refuse(format!(
                    "holds a {} PEM block, not a private key: {MAKE_A_KEY}",
                    shown(other)
                )));
            }
            None => return Err(refuse(format!("is not a PEM file: {MAKE_A_KEY}"))),
        }
        SigningKey::from_pkcs8_pem(&text)
            .map(PrivateKey)
            .map_err(|_| {
                refuse(format!(
                    "is not an ECDSA P-256 key (RSA, Ed25519 and other curves are not what \
                     cosign's simple signing with this tool uses): {MAKE_A_KEY}"
                ))
            })
    }

    /// The base64 DER signature of `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: Signature = self.0.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }
}

impl PublicKey {
    /// Reads `verify --key`: a PEM `PUBLIC KEY` on the P-256 curve.
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_key_file(path)?;
        let refuse =
            |what: String| Error::value(format!("{} {what}", shown_path(path))).about(Setting::Key);
        match pem_label(&text) {
            Some("PUBLIC KEY") => {}
            Some(label) if label.contains("PRIVATE") => {
                return Err(refuse(
                    "is a private key: verify with its public half (openssl pkey -in KEY \
                     -pubout -out KEY.pub)"
                        .into(),
                ));
            }
            _ => return Err(refuse(format!("is not a PEM public key: {MAKE_A_KEY}"))),
        }
        VerifyingKey::from_public_key_pem(&text)
            .map(PublicKey)
            .map_err(|_| refuse(format!("is not an ECDSA P-256 public key: {MAKE_A_KEY}")))
    }

    /// Whether `signature` (base64 DER) signs `payload` with this key.
    pub fn verifies(&self, payload: &[u8], signature: &str) -> bool {
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
            return false;
        };
        let Ok(signature) = Signature::from_der(&der) else {
            return false;
        };
        self.0.verify(payload, &signature).is_ok()
    }
}

/// The simple-signing payload for the manifest `digest` in `repository`
/// (`registry/path`).
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let document = json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest },
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    document.to_string().into_bytes()
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: ImageId,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct ImageId {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Checks that a (verified) payload is about the manifest `digest` in `repository`; says what
/// it names instead.
pub fn check_payload(
    payload: &[u8],
    repository: &str,
    digest: &str,
) -> std::result::Result<(), String> {
    let parsed: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("its payload is not a simple-signing document ({e})"))?;
    let critical = parsed.critical;
    if critical.kind != SIGNATURE_TYPE {
        return Err(format!(
            "its payload is of type {}, not a container image signature",
            shown(&critical.kind)
        ));
    }
    if critical.image.docker_manifest_digest != digest {
        return Err(format!(
            "it signs the manifest {}, not {digest}",
            shown(&critical.image.docker_manifest_digest)
        ));
    }
    if critical.identity.docker_reference != repository {
        return Err(format!(
            "it signs the image as {}, not {repository}",
            shown(&critical.identity.docker_reference)
        ));
    }
    Ok(())
}

/// The tag holding the signatures of the manifest `digest`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey(SigningKey::from_slice(&[7u8; 32]).unwrap())
    }

    #[test]
    fn a_signature_verifies_its_payload_only_and_is_deterministic() {
        let key = key();
        let payload = payload("reg.example/app", "sha256:ab");
        let signature = key.sign(&payload);
        assert_eq!(
            signature,
            key.sign(&payload),
            "RFC 6979: same key, same bytes"
        );
        let public = key.public();
        assert!(public.verifies(&payload, &signature));
        assert!(!public.verifies(b"another payload", &signature));
        assert!(!public.verifies(&payload, "not base64!"));
        let other = PrivateKey(SigningKey::from_slice(&[8u8; 32]).unwrap());
        assert!(!other.public().verifies(&payload, &signature));
    }

    #[test]
    fn a_payload_names_one_manifest_in_one_repository() {
        let payload = payload("reg.example/app", "sha256:ab");
        assert_eq!(
            String::from_utf8(payload.clone()).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"reg.example/app"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#
        );
        assert!(check_payload(&payload, "reg.example/app", "sha256:ab").is_ok());
        let wrong = check_payload(&payload, "reg.example/app", "sha256:cd").unwrap_err();
        assert!(wrong.contains("sha256:ab"), "{wrong}");
        assert!(check_payload(&payload, "reg.example/other", "sha256:ab").is_err());
        assert!(check_payload(b"{}", "reg.example/app", "sha256:ab").is_err());
        assert_eq!(signature_tag("sha256:ab"), "sha256-ab.sig");
    }

    #[test]
    fn pem_labels_are_read() {
        assert_eq!(
            pem_label("x\n-----BEGIN EC PRIVATE KEY-----\nabc"),
            Some("EC PRIVATE KEY")
        );
        assert_eq!(pem_label("nothing"), None);
    }
}
