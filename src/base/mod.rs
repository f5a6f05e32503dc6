//! Stage 3: the base image (`--from-image`), whose layers go under ours unchanged.
//!
//! Formats, told apart by content: a `docker save` archive with `manifest.json` (ours too), the
//! legacy layout without it (`repositories` and one directory per layer, ordered by `parent`),
//! and the OCI image layout as a directory or a tar (`oci-archive`), multi-platform indexes
//! included. Archives are read in place, never unpacked; one compressed as a whole (gzip or
//! zstd, as dockerTools' default compressor writes it) is first decompressed into one unnamed
//! scratch file, since a compressed stream cannot be seeked.
//!
//! Every base layer is verified while it is copied: its compressed digest against the OCI
//! manifest (or its content-addressed name) and its uncompressed digest against the config's
//! `diff_ids`. A mismatch is an error naming the layer.

mod store;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::config::Platform;
use crate::error::{Error, Result};
use crate::output::{BlobInfo, BlobSource, Compression, HashingWriter};
use crate::tarball::TarStream;
use store::BlobStore;

/// What to read as the base.
#[derive(Clone, Debug)]
pub struct BaseOptions {
    pub path: PathBuf,
    /// `NAME:TAG` choosing among several images.
    pub tag: Option<String>,
}

/// One layer of the base, as stored.
#[derive(Clone, Debug)]
pub struct BaseLayer {
    /// Its file in the archive or layout.
    pub name: String,
    pub size: u64,
    pub compression: Compression,
    /// The config's `diff_id` for it; None in the legacy format, which has none.
    pub diff_id: Option<String>,
    /// Its digest as stored, when the format names one.
    pub digest: Option<String>,
}

pub struct BaseImage {
    store: BlobStore,
    pub layers: Vec<BaseLayer>,
    /// The base's whole config object.
    pub config: Map<String, Value>,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn invalid(store: &BlobStore, what: impl std::fmt::Display) -> Error {
    Error::new(format!("--from-image {}: {what}", store.describe()))
}

/// Picks the one candidate whose names contain `wanted`, or the only candidate.
fn choose<T>(
    store: &BlobStore,
    candidates: Vec<(Vec<String>, T)>,
    wanted: Option<&str>,
) -> Result<T> {
    let listing = |candidates: &[(Vec<String>, T)]| {
        candidates
            .iter()
            .map(|(names, _)| {
                if names.is_empty() {
                    "(untagged)".to_string()
                } else {
                    names.join(" ")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(wanted) => {
            let list = listing(&candidates);
            let found = candidates.into_iter().find(|(names, _)| {
                names
                    .iter()
                    .any(|n| n == wanted || n.rsplit_once(':').is_some_and(|(_, t)| t == wanted))
            });
            found.map(|(_, c)| c).ok_or_else(|| {
                invalid(
                    store,
                    format!("no image is tagged {wanted}; the images are: {list}"),
                )
            })
        }
        None if candidates.len() <= 1 => candidates
            .into_iter()
            .next()
            .map(|(_, c)| c)
            .ok_or_else(|| invalid(store, "it holds no image")),
        None => Err(invalid(
            store,
            format!(
                "it holds several images ({}); choose one with --from-image-tag NAME:TAG",
                listing(&candidates)
            ),
        )),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The compression of a stored layer, from its first bytes.
fn sniff(store: &BlobStore, name: &str) -> Result<Compression> {
    let (mut reader, _) = store.open(name)?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(invalid(store, format!("reading {name}: {e}"))),
        }
    }
    Ok(match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip { level: 0 },
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd { level: 0 },
        _ => Compression::None,
    })
}

impl BaseImage {
    /// Reads the base image: its layers (not their content yet) and its config.
    pub fn load(options: &BaseOptions, platform: Option<&Platform>) -> Result<Self> {
        let path = &options.path;
        let tag = options.tag.as_deref();
        if path.is_dir() {
            let store = BlobStore::dir(path);
            if !store.contains("oci-layout") || !store.contains("index.json") {
                return Err(invalid(
                    &store,
                    "a directory must be an OCI image layout (with oci-layout and index.json)",
                ));
            }
            return Self::oci(store, tag, platform);
        }
        if !path.exists() {
            return Err(Error::new(format!(
                "--from-image {}: no such file or directory",
                path.display()
            )));
        }
        let store = BlobStore::archive(path)?;
        if store.contains("manifest.json") {
            Self::docker(store, tag)
        } else if store.contains("index.json") && store.contains("oci-layout") {
            Self::oci(store, tag, platform)
        } else if store.contains("repositories") {
            Self::legacy(store, tag)
        } else {
            Err(invalid(
                &store,
                "not a docker-archive (no manifest.json), an OCI archive (no index.json and \
                 oci-layout) nor a legacy docker image (no repositories)",
            ))
        }
    }

    /// `docker save` format: manifest.json lists each image's config and layers.
    fn docker(store: BlobStore, tag: Option<&str>) -> Result<Self> {
        let manifest = store.json("manifest.json")?;
        let images: Vec<(Vec<String>, Value)> = manifest
            .as_array()
            .ok_or_else(|| invalid(&store, "manifest.json is not a list"))?
            .iter()
            .map(|image| (strings(&image["RepoTags"]), image.clone()))
            .collect();
        let image = choose(&store, images, tag)?;
        let config_name = image["Config"]
            .as_str()
            .ok_or_else(|| invalid(&store, "manifest.json has no Config"))?
            .to_string();
        let config = store.json(&config_name)?;
        let layer_names = strings(&image["Layers"]);
        let diff_ids = strings(&config["rootfs"]["diff_ids"]);
        if diff_ids.len() != layer_names.len() {
            return Err(invalid(
                &store,
                format!(
                    "the config lists {} diff_ids for {} layers",
                    diff_ids.len(),
                    layer_names.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in layer_names.into_iter().zip(diff_ids) {
            let (_, size) = store.open(&name)?;
            // Newer `docker save` names layers by digest: that is a digest to check too.
            let digest = name
                .strip_prefix("blobs/sha256/")
                .map(|hex| format!("sha256:{hex}"));
            layers.push(BaseLayer {
                compression: sniff(&store, &name)?,
                name,
                size,
                diff_id: Some(diff_id),
                digest,
            });
        }
        Self::finish(store, layers, config)
    }

    /// The legacy format: `repositories` names the top layer; each layer's `json` names its
    /// parent.
    fn legacy(store: BlobStore, tag: Option<&str>) -> Result<Self> {
        let repositories = store.json("repositories")?;
        let mut images = Vec::new();
        for (name, tags) in repositories.as_object().into_iter().flatten() {
            for (t, id) in tags.as_object().into_iter().flatten() {
                if let Some(id) = id.as_str() {
                    images.push((vec![format!("{name}:{t}")], id.to_string()));
                }
            }
        }
        let top = choose(&store, images, tag)?;
        let mut chain = Vec::new();
        let mut next = Some(top);
        while let Some(id) = next {
            if chain.contains(&id) || chain.len() > 1000 {
                return Err(invalid(
                    &store,
                    format!("the parent chain loops at layer {id}"),
                ));
            }
            let json = store.json(&format!("{id}/json"))?;
            next = json["parent"].as_str().map(str::to_string);
            chain.push(id);
        }
        chain.reverse();
        let top_json = store.json(&format!("{}/json", chain[chain.len() - 1]))?;
        let mut config = Map::new();
        for key in ["architecture", "os", "variant", "config"] {
            if let Some(value) = top_json.get(key) {
                config.insert(key.to_string(), value.clone());
            }
        }
        let mut layers = Vec::new();
        for id in chain {
            let name = format!("{id}/layer.tar");
            let (_, size) = store.open(&name)?;
            layers.push(BaseLayer {
                compression: sniff(&store, &name)?,
                name,
                size,
                diff_id: None,
                digest: None,
            });
        }
        Self::finish(store, layers, Value::Object(config))
    }

    /// The OCI image layout: index.json, possibly a multi-platform index, then a manifest.
    fn oci(store: BlobStore, tag: Option<&str>, platform: Option<&Platform>) -> Result<Self> {
        let index = store.json("index.json")?;
        let descriptors: Vec<(Vec<String>, Value)> = index["manifests"]
            .as_array()
            .ok_or_else(|| invalid(&store, "index.json has no manifests"))?
            .iter()
            .map(|d| {
                let names = [
                    "org.opencontainers.image.ref.name",
                    "io.containerd.image.name",
                ]
                .iter()
                .filter_map(|k| d["annotations"][k].as_str().map(str::to_string))
                .collect();
                (names, d.clone())
            })
            .collect();
        let mut descriptor = choose(&store, descriptors, tag)?;
        while INDEX_TYPES.contains(&descriptor["mediaType"].as_str().unwrap_or_default()) {
            let nested = store.json(&blob_name(&store, &descriptor)?)?;
            descriptor = choose_platform(&store, &nested, platform)?;
        }
        let manifest = store.json(&blob_name(&store, &descriptor)?)?;
        let config = store.json(&blob_name(&store, &manifest["config"])?)?;
        let diff_ids = strings(&config["rootfs"]["diff_ids"]);
        let descriptors = manifest["layers"].as_array().cloned().unwrap_or_default();
        if diff_ids.len() != descriptors.len() {
            return Err(invalid(
                &store,
                format!(
                    "the config lists {} diff_ids for {} layers",
                    diff_ids.len(),
                    descriptors.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (descriptor, diff_id) in descriptors.iter().zip(diff_ids) {
            let name = blob_name(&store, descriptor)?;
            let (_, size) = store.open(&name)?;
            let media_type = descriptor["mediaType"].as_str().unwrap_or_default();
            let compression = if media_type.ends_with("zstd") {
                Compression::Zstd { level: 0 }
            } else if media_type.ends_with("gzip") {
                Compression::Gzip { level: 0 }
            } else if media_type.ends_with(".tar") || media_type.ends_with("diff.tar") {
                Compression::None
            } else {
                return Err(invalid(
                    &store,
                    format!("layer {name} has the media type {media_type:?}, not a tar layer"),
                ));
            };
            if descriptor["size"].as_u64() != Some(size) {
                return Err(invalid(
                    &store,
                    format!(
                        "layer {name} is {size} bytes but the manifest says {}",
                        descriptor["size"]
                    ),
                ));
            }
            layers.push(BaseLayer {
                name,
                size,
                compression,
                diff_id: Some(diff_id),
                digest: descriptor["digest"].as_str().map(str::to_string),
            });
        }
        Self::finish(store, layers, config)
    }

    fn finish(store: BlobStore, layers: Vec<BaseLayer>, config: Value) -> Result<Self> {
        let Value::Object(config) = config else {
            return Err(invalid(&store, "the image config is not a JSON object"));
        };
        Ok(BaseImage {
            store,
            layers,
            config,
        })
    }

    /// Where the base was read from.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The base's runtime config (`Cmd`, `Env`, ...).
    pub fn runtime_config(&self) -> Map<String, Value> {
        self.config
            .get("config")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    /// The base's history entries, kept before ours.
    pub fn history(&self) -> Vec<Value> {
        self.config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// `architecture`, `variant` and `os` of the base.
    pub fn platform(&self) -> (String, Option<String>, String) {
        let field = |k: &str| {
            self.config
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        (
            field("architecture").unwrap_or_default(),
            field("variant"),
            field("os").unwrap_or_else(|| "linux".to_string()),
        )
    }

    /// Layer `index` as a blob to copy unchanged.
    pub fn blob(&self, index: usize) -> BaseBlob<'_> {
        BaseBlob {
            image: self,
            layer: &self.layers[index],
        }
    }

    /// Layer `index` decompressed into a scratch file (verified on the way), as a plain tar.
    pub fn decompressed(&self, index: usize, scratch: &Path) -> Result<SpooledTar> {
        let mut file = tempfile::tempfile_in(scratch)
            .map_err(|e| Error::io("creating a scratch file in", scratch, e))?;
        let info = {
            let mut out = io::BufWriter::new(&mut file);
            let info = self.blob(index).copy(None, Some(&mut out))?;
            out.flush()
                .map_err(|e| Error::new(format!("writing a scratch file: {e}")))?;
            info
        };
        let length = file
            .metadata()
            .map_err(|e| Error::new(format!("reading a scratch file: {e}")))?
            .len();
        Ok(SpooledTar {
            file,
            length,
            diff_id: info.diff_id,
        })
    }
}

fn blob_name(store: &BlobStore, descriptor: &Value) -> Result<String> {
    let digest = descriptor["digest"]
        .as_str()
        .ok_or_else(|| invalid(store, "a descriptor has no digest"))?;
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| invalid(store, format!("{digest:?} is not a digest")))?;
    Ok(format!("blobs/{algorithm}/{hex}"))
}

fn platform_name(p: &Value) -> String {
    let mut name = format!(
        "{}/{}",
        p["os"].as_str().unwrap_or("?"),
        p["architecture"].as_str().unwrap_or("?")
    );
    if let Some(variant) = p["variant"].as_str() {
        name.push('/');
        name.push_str(variant);
    }
    name
}

/// The manifest of a multi-platform index that matches `platform` (default: this machine's).
fn choose_platform(store: &BlobStore, index: &Value, platform: Option<&Platform>) -> Result<Value> {
    let wanted = platform.cloned().unwrap_or_else(Platform::host);
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let matches = |d: &Value| {
        let p = &d["platform"];
        p["architecture"].as_str() == Some(wanted.architecture.as_str())
            && p["os"].as_str().unwrap_or("linux") == wanted.os
            && (wanted.variant.is_none() || p["variant"].as_str() == wanted.variant.as_deref())
    };
    manifests
        .iter()
        .find(|d| matches(d))
        .cloned()
        .ok_or_else(|| {
            let available: Vec<String> = manifests
                .iter()
                .map(|d| platform_name(&d["platform"]))
                .collect();
            let want = wanted.describe();
            invalid(
                store,
                format!(
                    "no image for {want} (choose with --architecture); it has: {}",
                    available.join(", ")
                ),
            )
        })
}

/// A base layer to copy as it is stored.
pub struct BaseBlob<'a> {
    image: &'a BaseImage,
    layer: &'a BaseLayer,
}

impl BaseBlob<'_> {
    /// Streams the layer once: the stored bytes to `stored_out`, the decompressed tar to
    /// `plain_out`, both digests computed and checked on the way.
    fn copy(
        &self,
        mut stored_out: Option<&mut dyn Write>,
        mut plain_out: Option<&mut dyn Write>,
    ) -> Result<BlobInfo> {
        let store = &self.image.store;
        let name = &self.layer.name;
        let fail = |what: String| invalid(store, format!("layer {name}: {what}"));
        let (mut reader, _) = store.open(name)?;
        let mut stored = HashingWriter::new(io::sink());
        let mut sink: Box<dyn Write + '_> = match plain_out.take() {
            Some(out) => Box::new(out),
            None => Box::new(io::sink()),
        };
        let mut plain = HashingWriter::new(&mut sink);
        {
            let mut decoder: Box<dyn Write + '_> = match self.layer.compression {
                Compression::None => Box::new(&mut plain),
                Compression::Gzip { .. } => {
                    Box::new(flate2::write::MultiGzDecoder::new(&mut plain))
                }
                Compression::Zstd { .. } => Box::new(
                    zstd::stream::write::Decoder::new(&mut plain)
                        .map_err(|e| fail(format!("zstd: {e}")))?,
                ),
            };
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = reader
                    .read(&mut buffer)
                    .map_err(|e| fail(format!("reading: {e}")))?;
                if n == 0 {
                    break;
                }
                let chunk = &buffer[..n];
                stored.write_all(chunk).map_err(|e| fail(e.to_string()))?;
                if let Some(out) = stored_out.as_mut() {
                    out.write_all(chunk)
                        .map_err(|e| Error::new(format!("writing the image: {e}")))?;
                }
                decoder
                    .write_all(chunk)
                    .map_err(|e| fail(format!("it does not decompress: {e}")))?;
            }
            decoder
                .flush()
                .map_err(|e| fail(format!("it does not decompress: {e}")))?;
        }
        let (_, diff_id, _) = plain.finish();
        let (_, digest, size) = stored.finish();
        if let Some(expected) = &self.layer.digest {
            if *expected != digest {
                return Err(fail(format!(
                    "its digest is {digest}, but the image says {expected}; the base image is \
                     damaged or was changed"
                )));
            }
        }
        if let Some(expected) = &self.layer.diff_id {
            if *expected != diff_id {
                return Err(fail(format!(
                    "its uncompressed digest is {diff_id}, but the config's diff_id is \
                     {expected}; the base image is damaged or was changed"
                )));
            }
        }
        Ok(BlobInfo {
            diff_id,
            digest,
            size,
        })
    }
}

impl BlobSource for BaseBlob<'_> {
    fn size(&self) -> u64 {
        self.layer.size
    }

    fn compression(&self) -> Compression {
        self.layer.compression
    }

    fn copy_to(&self, out: &mut dyn Write) -> Result<BlobInfo> {
        self.copy(Some(out), None)
    }
}

/// A base layer decompressed to a scratch file, written as a plain tar layer.
pub struct SpooledTar {
    file: std::fs::File,
    length: u64,
    pub diff_id: String,
}

impl TarStream for SpooledTar {
    fn tar_len(&self) -> u64 {
        self.length
    }

    fn write_to(&self, out: &mut dyn Write) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buffer = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < self.length {
            let n = self
                .file
                .read_at(&mut buffer, offset)
                .map_err(|e| Error::new(format!("reading a scratch file: {e}")))?;
            if n == 0 {
                return Err(Error::new("a scratch file shrank while it was read"));
            }
            out.write_all(&buffer[..n])
                .map_err(|e| Error::new(format!("writing the image: {e}")))?;
            offset += n as u64;
        }
        Ok(())
    }
}
