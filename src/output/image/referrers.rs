//! Documents about an image (an SBOM, provenance) as OCI 1.1 artifacts: an artifact manifest
//! whose config is the empty descriptor, whose one layer is the document and whose `subject`
//! is the image manifest; and how clients find them.
//!
//! - A registry with the referrers API answers the artifact's PUT with `OCI-Subject` and lists
//!   it at `/v2/NAME/referrers/DIGEST` itself.
//! - A registry without it (the distribution 2.x registry) gets the tag-schema fallback: an
//!   image index tagged `sha256-HEX` (the subject's digest) listing the artifacts, merged with
//!   what that tag already lists.
//! - An OCI layout lists the artifacts in `index.json` beside the image, without a ref name.

use std::collections::BTreeMap;

use super::Attachment;
use super::manifest::descriptor;
use crate::digest::sha256_digest;
use crate::image_spec::{Descriptor, Index, Manifest, media_type, to_bytes};

/// The empty config every artifact manifest points to.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// The annotation holding a document's file name.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The annotation holding when it was made.
pub const CREATED: &str = "org.opencontainers.image.created";

/// An artifact ready to store: its manifest's bytes, and the descriptor listing it.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    /// The manifest's descriptor, with its artifact type and annotations (what the referrers
    /// API and the fallback index list).
    pub descriptor: Descriptor,
}

/// The artifact manifest of `attachment` about `subject`.
pub fn artifact(attachment: &Attachment, subject: &Descriptor) -> Artifact {
    let annotations = BTreeMap::from([(CREATED.to_string(), attachment.created.clone())]);
    let mut document = descriptor(
        &attachment.media_type,
        &sha256_digest(&attachment.content),
        attachment.content.len() as u64,
    );
    document.annotations = Some(BTreeMap::from([(
        TITLE.to_string(),
        attachment.file_name.clone(),
    )]));
    let manifest = to_bytes(&Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_string()),
        artifact_type: Some(attachment.media_type.clone()),
        config: empty_config(),
        layers: vec![document],
        subject: Some(descriptor(
            &subject.media_type,
            &subject.digest,
            subject.size,
        )),
        annotations: Some(annotations.clone()),
    });
    let mut listed = descriptor(
        media_type::OCI_MANIFEST,
        &sha256_digest(&manifest),
        manifest.len() as u64,
    );
    listed.artifact_type = Some(attachment.media_type.clone());
    listed.annotations = Some(annotations);
    Artifact {
        manifest,
        descriptor: listed,
    }
}

/// The descriptor of [`EMPTY_CONFIG`].
pub fn empty_config() -> Descriptor {
    descriptor(
        media_type::OCI_EMPTY,
        &sha256_digest(EMPTY_CONFIG),
        EMPTY_CONFIG.len() as u64,
    )
}

/// The tag of the fallback index listing the referrers of `subject` (`sha256-HEX`).
pub fn fallback_tag(subject: &str) -> String {
    subject.replacen(':', "-", 1)
}

/// The fallback index: what `existing` lists (another build's artifacts stay), then
/// `artifacts` not already there.
pub fn fallback_index(existing: Option<Index>, artifacts: &[Artifact]) -> Vec<u8> {
    let mut manifests = existing.map(|index| index.manifests).unwrap_or_default();
    for artifact in artifacts {
        if !manifests
            .iter()
            .any(|d| d.digest == artifact.descriptor.digest)
        {
            manifests.push(artifact.descriptor.clone());
        }
    }
    to_bytes(&Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_string()),
        manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(content: &str) -> Attachment {
        Attachment {
            media_type: "application/spdx+json".into(),
            file_name: "sbom.spdx.json".into(),
            created: "1970-01-01T00:00:01Z".into(),
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_artifact_points_at_its_subject_and_holds_the_document() {
        let subject = descriptor(media_type::OCI_MANIFEST, &sha256_digest(b"m"), 1);
        let made = artifact(&attachment("{\"a\":1}"), &subject);
        let manifest: Manifest = serde_json::from_slice(&made.manifest).unwrap();
        assert_eq!(manifest.subject.as_ref(), Some(&subject));
        assert_eq!(
            manifest.artifact_type.as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(manifest.config, empty_config());
        assert_eq!(
            manifest.config.digest,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(sha256_digest(b"{\"a\":1}"), manifest.layers[0].digest);
        assert_eq!(sha256_digest(&made.manifest), made.descriptor.digest);
        assert_eq!(
            made.descriptor.artifact_type.as_deref(),
            Some("application/spdx+json")
        );
    }

    #[test]
    fn the_fallback_index_keeps_what_it_listed_and_adds_each_artifact_once() {
        let subject = descriptor(media_type::OCI_MANIFEST, &sha256_digest(b"m"), 1);
        let first = artifact(&attachment("1"), &subject);
        let second = artifact(&attachment("2"), &subject);
        let once: Index =
            serde_json::from_slice(&fallback_index(None, std::slice::from_ref(&first))).unwrap();
        let twice: Index = serde_json::from_slice(&fallback_index(
            Some(once.clone()),
            &[first.clone(), second.clone()],
        ))
        .unwrap();
        let digests: Vec<&str> = twice.manifests.iter().map(|d| d.digest.as_str()).collect();
        assert_eq!(
            digests,
            [
                first.descriptor.digest.as_str(),
                second.descriptor.digest.as_str()
            ]
        );
        assert_eq!(
            fallback_tag(&subject.digest),
            subject.digest.replace(':', "-")
        );
    }
}
