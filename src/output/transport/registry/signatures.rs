//! Signatures in the registry, where cosign writes and reads them (see `crate::signature`):
//! signing a manifest after a push, and `layered-gen verify`, which checks an image's
//! signature and every SBOM and provenance statement attached to it.

use std::collections::BTreeMap;

use super::client::{Client, ConnectOptions, Payload};
use super::{MAX_ERROR_BODY, fetch_manifest, parse_index, put_manifest, short, upload_missing};
use crate::digest::{Digest, sha256_digest};
use crate::error::{Error, Result, shown};
use crate::image_spec::{Descriptor, Manifest, media_type, to_bytes};
use crate::output::image::manifest::descriptor;
use crate::output::image::referrers;
use crate::output::transport::reference::Repository;
use crate::signature::{
    PrivateKey, PublicKey, SIGNATURE_ANNOTATION, SIMPLE_SIGNING, check_payload, payload,
    signature_tag,
};

/// A payload is a few hundred bytes.
const MAX_PAYLOAD: u64 = 64 << 10;
/// The most an attached document may hold to be checked.
const MAX_DOCUMENT: u64 = 256 << 20;
/// What a manifest GET accepts: either family's manifest or index.
const ANY_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, \
                            application/vnd.docker.distribution.manifest.v2+json, \
                            application/vnd.oci.image.index.v1+json, \
                            application/vnd.docker.distribution.manifest.list.v2+json";
/// The artifact types `verify` checks: what `--sbom` and `--provenance` attach.
const DOCUMENT_TYPES: [&str; 3] = [
    "application/vnd.cyclonedx+json",
    "application/spdx+json",
    crate::provenance::MEDIA_TYPE,
];

/// Signs the manifest `digest` of `repository` (`registry/path`) with `key`: the payload as a
/// blob, then the `sha256-HEX.sig` image with the signature added to those it holds.
pub fn sign(client: &Client, key: &PrivateKey, repository: &str, digest: &str) -> Result<()> {
    let payload = payload(repository, digest);
    let payload_digest = sha256_digest(&payload);
    upload_missing(
        client,
        &payload_digest,
        &payload,
        SIMPLE_SIGNING,
        "the signature payload",
    )?;
    let mut layer = descriptor(SIMPLE_SIGNING, &payload_digest, payload.len() as u64);
    layer.annotations = Some(BTreeMap::from([(
        SIGNATURE_ANNOTATION.to_string(),
        key.sign(&payload),
    )]));
    let tag = signature_tag(digest);
    let mut layers = match fetch_manifest(client, &tag, media_type::OCI_MANIFEST)? {
        Some(body) => {
            serde_json::from_slice::<Manifest>(&body)
                .map_err(|e| {
                    client.error(
                        format!("reading the signatures {tag}"),
                        format!(
                            "the tag holds no image manifest ({e}); it is left as it is and the \
                         image is not signed"
                        ),
                    )
                })?
                .layers
        }
        None => Vec::new(),
    };
    if !layers.contains(&layer) {
        layers.push(layer);
    }
    let config = signature_config(&layers);
    let config_digest = sha256_digest(&config);
    upload_missing(
        client,
        &config_digest,
        &config,
        media_type::OCI_CONFIG,
        "the signature config",
    )?;
    let manifest = to_bytes(&Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: descriptor(media_type::OCI_CONFIG, &config_digest, config.len() as u64),
        layers,
        subject: None,
        annotations: None,
    });
    put_manifest(client, &tag, &manifest, media_type::OCI_MANIFEST)?;
    Ok(())
}

/// The config of a signature image, as cosign writes it: the layers' digests as diff_ids.
fn signature_config(layers: &[Descriptor]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string()
    .into_bytes()
}

/// An image to verify: a repository and a tag or a digest.
#[derive(Clone, Debug)]
pub struct ImageReference {
    pub repository: Repository,
    /// A tag, or `sha256:…`.
    pub reference: String,
}

impl ImageReference {
    /// Parses `docker://[HOST/]NAME[:TAG|@DIGEST]` (the tag defaults to `latest`).
    pub fn parse(text: &str) -> Result<Self> {
        let rest = text.strip_prefix("docker://").ok_or_else(|| {
            Error::value(format!(
                "{} is not an image in a registry: give docker://HOST/NAME:TAG",
                shown(text)
            ))
        })?;
        let (name, reference) = if let Some((name, digest)) = rest.split_once('@') {
            if Digest::parse(digest).is_none() {
                return Err(Error::value(format!(
                    "{} is not a digest (sha256:<64 hex digits>)",
                    shown(digest)
                )));
            }
            (name, digest.to_string())
        } else {
            match rest.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => {
                    super::super::reference::check_tag(tag)?;
                    (name, tag.to_string())
                }
                _ => (rest, "latest".to_string()),
            }
        };
        Ok(ImageReference {
            repository: Repository::parse(name)?,
            reference,
        })
    }
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The image manifest's digest.
    pub digest: String,
    /// The attached documents checked: (artifact type, artifact manifest digest).
    pub documents: Vec<(String, String)>,
}

/// Checks that the image is signed with `key` for its repository, and that every SBOM and
/// provenance statement attached to it is intact, about it, and signed with `key` too.
pub fn verify(
    image: &ImageReference,
    key: &PublicKey,
    connect: &ConnectOptions,
) -> Result<Verified> {
    let client = Client::connect_reading(&image.repository, connect)?;
    let repository = image.repository.full_name();
    let manifest = fetch_manifest(&client, &image.reference, ANY_MANIFEST)?.ok_or_else(|| {
        client.error(
            format!("reading {repository}:{}", image.reference),
            "the registry has no such image".into(),
        )
    })?;
    let digest = sha256_digest(&manifest).to_string();
    if image.reference.starts_with("sha256:") && image.reference != digest {
        return Err(client.error(
            format!("reading {repository}@{}", image.reference),
            format!(
                "the registry answered with another manifest ({})",
                short(&digest)
            ),
        ));
    }
    check_signed(&client, key, &repository, &digest, "the image")?;
    let mut documents = Vec::new();
    for listed in attached(&client, &digest)? {
        let Some(kind) = listed.artifact_type.clone() else {
            continue;
        };
        if !DOCUMENT_TYPES.contains(&kind.as_str()) {
            continue;
        }
        let what = format!("the attached {kind} {}", short(&listed.digest));
        check_document(&client, &listed, &digest, &what)?;
        check_signed(&client, key, &repository, &listed.digest, &what)?;
        documents.push((kind, listed.digest.clone()));
    }
    Ok(Verified { digest, documents })
}

/// The artifacts about `subject`: from the referrers API where the registry has it, else
/// from the fallback tag.
fn attached(client: &Client, subject: &str) -> Result<Vec<Descriptor>> {
    let doing = format!("listing the referrers of {}", short(subject));
    let mut answer = client.send_with_accept(
        "GET",
        &client.url(&format!("referrers/{subject}")),
        media_type::OCI_INDEX,
    )?;
    let body = match answer.status {
        200 => Some(
            answer
                .bytes(super::MAX_INDEX)
                .map_err(|why| client.error(doing.clone(), why))?,
        ),
        404 => {
            let tag = referrers::fallback_tag(subject);
            fetch_manifest(client, &tag, media_type::OCI_INDEX)?
        }
        status => {
            let body = answer.text(MAX_ERROR_BODY);
            return Err(client.refused(&doing, status, &body));
        }
    };
    match body {
        Some(body) => Ok(parse_index(&body)
            .map_err(|why| client.error(doing, why))?
            .manifests),
        None => Ok(Vec::new()),
    }
}

/// An attached document: its artifact manifest is what was listed, is about `subject`, and
/// its document blob has the digest and size the manifest says.
fn check_document(client: &Client, listed: &Descriptor, subject: &str, what: &str) -> Result<()> {
    let fail = |why: String| client.error(format!("checking {what}"), why);
    let body = fetch_manifest(client, &listed.digest, media_type::OCI_MANIFEST)?
        .ok_or_else(|| fail("it is listed, but the registry does not hold it".into()))?;
    if sha256_digest(&body) != listed.digest {
        return Err(fail("the registry answered with another manifest".into()));
    }
    let artifact: Manifest = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("it is not an image manifest ({e})")))?;
    if artifact.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject) {
        return Err(fail(format!(
            "it is not about the image {}",
            short(subject)
        )));
    }
    let [document] = artifact.layers.as_slice() else {
        return Err(fail(format!(
            "it holds {} documents, not one",
            artifact.layers.len()
        )));
    };
    let content = fetch_blob(client, &document.digest, MAX_DOCUMENT)?;
    if sha256_digest(&content) != document.digest || content.len() as u64 != document.size {
        return Err(fail(format!(
            "its document {} is not what the registry holds under that digest",
            short(&document.digest)
        )));
    }
    Ok(())
}

/// The manifest `digest` has at least one signature by `key` naming it in `repository`;
/// otherwise says why each signature there fails.
fn check_signed(
    client: &Client,
    key: &PublicKey,
    repository: &str,
    digest: &str,
    what: &str,
) -> Result<()> {
    let tag = signature_tag(digest);
    let fail = |why: String| client.error(format!("verifying {what} ({})", short(digest)), why);
    let body = fetch_manifest(client, &tag, media_type::OCI_MANIFEST)?
        .ok_or_else(|| fail(format!("it has no signature (no {tag} tag)")))?;
    let signatures: Manifest = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("{tag} holds no image manifest ({e})")))?;
    let mut why_not = Vec::new();
    for layer in &signatures.layers {
        let Some(signature) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let payload = fetch_blob(client, &layer.digest, MAX_PAYLOAD)?;
        if sha256_digest(&payload) != layer.digest {
            why_not.push(format!(
                "the payload {} is not what the registry holds under that digest",
                short(&layer.digest)
            ));
        } else if !key.verifies(&payload, signature) {
            why_not.push(format!(
                "the signature on {} is not by this key",
                short(&layer.digest)
            ));
        } else {
            match check_payload(&payload, repository, digest) {
                Ok(()) => return Ok(()),
                Err(why) => why_not.push(why),
            }
        }
    }
    if why_not.is_empty() {
        why_not.push(format!("{tag} holds no signature"));
    }
    Err(fail(why_not.join("; ")))
}

/// A blob, refused past `limit` bytes.
fn fetch_blob(client: &Client, digest: &str, limit: u64) -> Result<Vec<u8>> {
    let doing = format!("reading blob {}", short(digest));
    let mut answer = client.send(
        "GET",
        &client.url(&format!("blobs/{digest}")),
        Payload::Empty,
    )?;
    if answer.status != 200 {
        let body = answer.text(MAX_ERROR_BODY);
        return Err(client.refused(&doing, answer.status, &body));
    }
    answer.bytes(limit).map_err(|why| client.error(doing, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_name_a_tag_or_a_digest() {
        let image = ImageReference::parse("docker://reg.example:5000/my/app:1").unwrap();
        assert_eq!(image.repository.full_name(), "reg.example:5000/my/app");
        assert_eq!(image.reference, "1");
        let latest = ImageReference::parse("docker://reg.example:5000/my/app").unwrap();
        assert_eq!(latest.reference, "latest");
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = ImageReference::parse(&format!("docker://reg.example/app@{digest}")).unwrap();
        assert_eq!(pinned.reference, digest);
        assert!(ImageReference::parse("reg.example/app:1").is_err());
        assert!(ImageReference::parse("docker://reg.example/app@sha256:00").is_err());
    }

    #[test]
    fn a_signature_config_lists_the_payloads() {
        let layer = descriptor(SIMPLE_SIGNING, "sha256:ab", 3);
        let config: serde_json::Value =
            serde_json::from_slice(&signature_config(&[layer])).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], "sha256:ab");
    }
}
