//! The JSON documents of container images, as types: the OCI descriptor, manifest, index and
//! image config, Docker's `manifest.json`, and the media types, in one place. The base reader
//! deserialises them and the writers serialise them.
//!
//! These are our own structs rather than the `oci-spec` crate's: its annotation maps are
//! `HashMap`s, whose key order changes from run to run (our bytes must not), and its config
//! type drops keys it does not know, which a base image's config must keep. Field order here is
//! the order written, which the golden hashes fix.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::codec::Codec;
use crate::digest::Digest;

/// Media types, OCI and Docker.
pub mod media_type {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// The empty JSON object `{}`: the config of an artifact manifest (OCI 1.1).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

    /// Whether a descriptor points at an index (a list of manifests).
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
}

/// The annotation that names an image in an OCI layout's index (its tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full `name:tag`.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A pointer to a blob: its type, digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// What an artifact manifest holds (OCI 1.1), on descriptors of one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
}

/// A platform as an index entry states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest: one config and the layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// An artifact's type (OCI 1.1): what its layers hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The manifest an artifact is about (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index: manifests, one per platform or per image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The `oci-layout` file's content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// One image of a docker-archive's `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// `docker save` writes `"RepoTags": null` for an untagged image.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// The image config blob. Keys we do not model are kept in `other` (a base's config may have
/// any), and the runtime `config` is kept as an object so its unknown keys survive merging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageConfigBlob {
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub history: Vec<Value>,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The layers' uncompressed digests, bottom first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// One history entry we write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    pub comment: String,
}

/// A legacy (pre-1.10) layer's `json`: its id, parent, and on the top layer the config.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LegacyLayerJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
}

/// The legacy `repositories` file: name → tag → top layer id.
pub type Repositories = BTreeMap<String, BTreeMap<String, String>>;

/// Serialises a document; our types always serialise.
pub fn to_bytes<T: Serialize>(document: &T) -> Vec<u8> {
    serde_json::to_vec(document).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_config_keys_survive_a_round_trip() {
        let text = r#"{"architecture":"amd64","author":"x","config":{"Hostname":"h","Cmd":["a"]},"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1"]}}"#;
        let blob: ImageConfigBlob = serde_json::from_str(text).unwrap();
        assert_eq!(blob.other["author"], "x");
        assert_eq!(blob.config.as_ref().unwrap()["Hostname"], "h");
        let again: Value = serde_json::from_slice(&to_bytes(&blob)).unwrap();
        assert_eq!(again["author"], "x");
        assert_eq!(again["config"]["Hostname"], "h");
    }

    #[test]
    fn descriptors_write_fields_in_spec_order() {
        let d = Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: "sha256:ab".into(),
            size: 3,
            artifact_type: None,
            annotations: Some(BTreeMap::from([
                (REF_NAME.to_string(), "t".to_string()),
                (CONTAINERD_NAME.to_string(), "n:t".to_string()),
            ])),
            platform: None,
        };
        assert_eq!(
            String::from_utf8(to_bytes(&d)).unwrap(),
            r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ab","size":3,"annotations":{"io.containerd.image.name":"n:t","org.opencontainers.image.ref.name":"t"}}"#
        );
    }

    #[test]
    fn untagged_docker_images_have_null_repo_tags() {
        let entry: DockerManifestEntry =
            serde_json::from_str(r#"{"Config":"c.json","RepoTags":null,"Layers":["a/layer.tar"]}"#)
                .unwrap();
        assert!(entry.repo_tags.is_empty());
    }
}

/// A layer directory (`layered-gen layer`, read by `crate::base::prebuilt`).
/// The file that describes it.
pub const LAYER_JSON: &str = "layer.json";
/// The version of that file's format.
pub const LAYER_FORMAT: u32 = 1;
/// `layer.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LayerFile {
    pub layered_gen_layer: u32,
    /// The digest of the uncompressed tarball.
    pub diff_id: Digest,
    /// Its length.
    pub tar_size: u64,
    /// The store paths it holds, in the order it holds them.
    pub paths: Vec<String>,
    /// The same tarball, once per compression.
    pub blobs: Vec<StoredBlob>,
}

/// One blob of a layer directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoredBlob {
    pub compression: BlobCompression,
    pub digest: Digest,
    pub size: u64,
    /// Its file name in the directory.
    pub file: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BlobCompression {
    None,
    Gzip,
    Zstd,
}

impl BlobCompression {
    pub fn codec(self) -> Codec {
        match self {
            BlobCompression::None => Codec::None,
            BlobCompression::Gzip => Codec::Gzip,
            BlobCompression::Zstd => Codec::Zstd,
        }
    }

    /// The blob's file name in a layer directory.
    pub fn file_name(self) -> &'static str {
        match self {
            BlobCompression::None => "layer.tar",
            BlobCompression::Gzip => "layer.tar.gz",
            BlobCompression::Zstd => "layer.tar.zst",
        }
    }
}
