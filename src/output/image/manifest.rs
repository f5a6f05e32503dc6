//! The documents that tie blobs into an image, for both families: descriptors, the image
//! manifest (OCI's, or Docker's v2 schema 2 for Docker media types), the image index of a
//! multi-platform image, and an OCI layout's `index.json`. Every writer and the registry push
//! build them here, so a layout and a push of the same image hold the same bytes.

use std::collections::BTreeMap;

use crate::codec::Codec;
use crate::digest::{BlobInfo, sha256_digest};
use crate::error::{Error, Result, Setting};
use crate::image_spec::{
    CONTAINERD_NAME, Descriptor, Index, Manifest, PlatformSpec, REF_NAME, media_type,
};
use crate::output::destination::Format;

pub fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        artifact_type: None,
        annotations: None,
        platform: None,
    }
}

/// The media type of layer `index`, compressed with `codec`, in `format`'s documents; zstd
/// has none in Docker's.
pub fn layer_media_type(format: Format, codec: Codec, index: usize) -> Result<&'static str> {
    match (format, codec) {
        (Format::Oci, codec) => Ok(codec.oci_layer_media_type()),
        (Format::DockerArchive, Codec::None) => Ok(media_type::DOCKER_LAYER),
        (Format::DockerArchive, Codec::Gzip) => Ok(media_type::DOCKER_LAYER_GZIP),
        (Format::DockerArchive, Codec::Zstd) => Err(Error::value(format!(
            "layer {index} is zstd-compressed, which Docker's manifest cannot describe: push \
             with --format oci"
        ))
        .about(Setting::Format)),
    }
}

/// The media type of `format`'s config blob.
pub fn config_media_type(format: Format) -> &'static str {
    match format {
        Format::DockerArchive => media_type::DOCKER_CONFIG,
        Format::Oci => media_type::OCI_CONFIG,
    }
}

/// The image manifest in `format`'s media types: the config and the layers with theirs.
pub fn image_manifest(
    format: Format,
    config_digest: &str,
    config_size: usize,
    layers: &[BlobInfo],
    media_types: &[&str],
) -> Manifest {
    let manifest_type = match format {
        Format::DockerArchive => media_type::DOCKER_MANIFEST,
        Format::Oci => media_type::OCI_MANIFEST,
    };
    Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_string()),
        artifact_type: None,
        config: descriptor(config_media_type(format), config_digest, config_size as u64),
        layers: layers
            .iter()
            .zip(media_types)
            .map(|(l, media_type)| descriptor(media_type, &l.digest, l.size))
            .collect(),
        subject: None,
        annotations: None,
    }
}

/// The image index of a multi-platform image: each platform's manifest with its platform.
pub fn index_document(manifests: &[(Vec<u8>, PlatformSpec)]) -> Vec<u8> {
    let manifests = manifests
        .iter()
        .map(|(manifest, platform)| {
            let mut entry = descriptor(
                media_type::OCI_MANIFEST,
                &sha256_digest(manifest),
                manifest.len() as u64,
            );
            entry.platform = Some(platform.clone());
            entry
        })
        .collect();
    crate::image_spec::to_bytes(&Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_string()),
        manifests,
    })
}

/// An OCI layout's `index.json`: the document (`media_type`, digest, size) once per tag, named
/// `name:tag` for containerd and `tag` for the OCI tools.
pub fn layout_index(
    media_type: &str,
    digest: &str,
    size: usize,
    name: &str,
    tags: &[String],
) -> Index {
    let manifests = tags
        .iter()
        .map(|tag| {
            let mut entry = descriptor(media_type, digest, size as u64);
            entry.annotations = Some(BTreeMap::from([
                (CONTAINERD_NAME.to_string(), format!("{name}:{tag}")),
                (REF_NAME.to_string(), tag.clone()),
            ]));
            entry
        })
        .collect();
    Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_string()),
        manifests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8) -> BlobInfo {
        BlobInfo {
            diff_id: sha256_digest(b"d"),
            digest: sha256_digest(&[n]),
            size: u64::from(n),
        }
    }

    #[test]
    fn both_families_describe_the_same_blobs() {
        let layers = [blob(1), blob(2)];
        let oci = image_manifest(Format::Oci, "sha256:c", 7, &layers, &["a", "b"]);
        let docker = image_manifest(Format::DockerArchive, "sha256:c", 7, &layers, &["a", "b"]);
        assert_eq!(oci.media_type.as_deref(), Some(media_type::OCI_MANIFEST));
        assert_eq!(
            docker.media_type.as_deref(),
            Some(media_type::DOCKER_MANIFEST)
        );
        assert_eq!(oci.config.media_type, media_type::OCI_CONFIG);
        assert_eq!(docker.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(oci.layers, docker.layers);
        assert_eq!(oci.layers[1].size, 2);
    }

    #[test]
    fn zstd_has_no_docker_media_type() {
        assert_eq!(
            layer_media_type(Format::DockerArchive, Codec::Gzip, 0).unwrap(),
            media_type::DOCKER_LAYER_GZIP
        );
        let err = layer_media_type(Format::DockerArchive, Codec::Zstd, 3).unwrap_err();
        assert!(
            err.to_string().contains("layer 3 is zstd-compressed"),
            "{err}"
        );
        assert_eq!(
            layer_media_type(Format::Oci, Codec::Zstd, 3).unwrap(),
            media_type::OCI_LAYER_ZSTD
        );
    }

    #[test]
    fn a_layout_index_names_the_image_once_per_tag() {
        let tags = ["1".to_string(), "latest".to_string()];
        let index = layout_index(media_type::OCI_MANIFEST, "sha256:m", 9, "my/app", &tags);
        assert_eq!(index.manifests.len(), 2);
        let names = index.manifests[1].annotations.as_ref().unwrap();
        assert_eq!(names[CONTAINERD_NAME], "my/app:latest");
        assert_eq!(names[REF_NAME], "latest");
    }
}
