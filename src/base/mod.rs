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

pub mod prebuilt;
mod store;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::codec::Codec;
use crate::config::Platform;
use crate::digest::{BlobInfo, BlobSource, Digest, HashingWriter};
use crate::error::{Error, Result, Setting, quoted, shown};
use crate::image_spec::{
    CONTAINERD_NAME, Descriptor, DockerManifestEntry, ImageConfigBlob, Index, LegacyLayerJson,
    Manifest, REF_NAME, Repositories, media_type,
};
use crate::tarball::TarStream;
use store::BlobStore;

/// What to read as the base.
#[derive(Clone, Debug)]
pub struct BaseOptions {
    pub path: PathBuf,
    /// `NAME:TAG` choosing among several images.
    pub tag: Option<String>,
}

/// What to do with a base image's layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BaseLayers {
    /// Copy them byte for byte.
    #[default]
    Keep,
    /// Rewrite them as plain tar (zstd bases into a docker-archive).
    Decompress,
}

/// One layer of the base, as stored.
#[derive(Clone, Debug)]
pub struct BaseLayer {
    /// Its file in the archive or layout.
    pub name: String,
    pub size: u64,
    pub codec: Codec,
    /// The config's `diff_id` for it; None in the legacy format, which has none.
    pub diff_id: Option<String>,
    /// Its digest as stored, when the format names one.
    pub digest: Option<String>,
}

pub struct BaseImage {
    /// Shared by the images of one archive.
    store: Arc<BlobStore>,
    /// Its names (`name:tag`, or OCI reference names), as the archive or layout gives them.
    pub names: Vec<String>,
    pub layers: Vec<BaseLayer>,
    /// The whole config, parsed, and its bytes as stored (their digest is the image's id).
    pub config: ImageConfigBlob,
    pub config_bytes: Vec<u8>,
    /// What ties the config and layers together: the OCI manifest, the docker-archive's
    /// `manifest.json` entry, or (legacy) `repositories` (for `diff`).
    pub manifest: serde_json::Value,
}

/// An error about the base image as a whole.
fn invalid(store: &BlobStore, what: impl Into<String>) -> Error {
    Error::input(shown(&store.describe()), what)
}

/// Picks the one candidate whose names contain `wanted`, or the only candidate.
fn choose<T>(
    store: &BlobStore,
    candidates: Vec<(Vec<String>, T)>,
    wanted: Option<&str>,
) -> Result<T> {
    let listing = |candidates: &[(Vec<String>, T)]| {
        shown(
            &candidates
                .iter()
                .map(|(names, _)| {
                    if names.is_empty() {
                        "(untagged)".to_string()
                    } else {
                        names.join(" ")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
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
                    format!(
                        "no image is tagged {}; the images are: {list}",
                        quoted(wanted)
                    ),
                )
                .about(Setting::FromImageTag)
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
                "it holds several images ({}); choose one by its NAME:TAG",
                listing(&candidates)
            ),
        )
        .about(Setting::FromImageTag)),
    }
}

/// The codec of a stored layer, from its first bytes.
fn sniff(store: &BlobStore, name: &str) -> Result<Codec> {
    let (mut reader, _) = store.open(name)?;
    Codec::sniff_reader(&mut reader)
        .map_err(|e| invalid(store, format!("reading {}: {e}", shown(name))))
}

impl BaseImage {
    /// Reads the base image: its layers (not their content yet) and its config. An archive
    /// compressed as a whole is decompressed into a scratch file in `scratch`.
    pub fn load(
        options: &BaseOptions,
        platform: Option<&Platform>,
        scratch: &Path,
    ) -> Result<Self> {
        Self::read(options, platform, scratch).map_err(|e| e.about(Setting::FromImage))
    }

    fn read(options: &BaseOptions, platform: Option<&Platform>, scratch: &Path) -> Result<Self> {
        let tag = options.tag.as_deref();
        match open(&options.path, scratch)? {
            (store, Format::Oci) => Self::oci(store, tag, platform),
            (store, Format::Docker) => Self::docker(store, tag),
            (store, Format::Legacy) => Self::legacy(store, tag),
        }
    }

    /// Every image of a docker-archive (what `docker save` of several images writes); the one
    /// image of another format, chosen as [`BaseImage::load`] chooses it.
    pub fn load_all(
        options: &BaseOptions,
        platform: Option<&Platform>,
        scratch: &Path,
    ) -> Result<Vec<Self>> {
        let all = match open(&options.path, scratch)? {
            (store, Format::Docker) if options.tag.is_none() => {
                let manifest: Vec<DockerManifestEntry> = store.json("manifest.json")?;
                manifest
                    .into_iter()
                    .map(|image| Self::docker_image(&store, image))
                    .collect()
            }
            _ => Self::read(options, platform, scratch).map(|image| vec![image]),
        };
        all.map_err(|e| e.about(Setting::FromImage))
    }

    /// `docker save` format: manifest.json lists each image's config and layers.
    fn docker(store: Arc<BlobStore>, tag: Option<&str>) -> Result<Self> {
        let manifest: Vec<DockerManifestEntry> = store.json("manifest.json")?;
        let images = manifest
            .into_iter()
            .map(|image| (image.repo_tags.clone(), image))
            .collect();
        let image = choose(&store, images, tag)?;
        Self::docker_image(&store, image)
    }

    /// One image of a docker-archive.
    fn docker_image(store: &Arc<BlobStore>, image: DockerManifestEntry) -> Result<Self> {
        let (config, config_bytes): (ImageConfigBlob, _) = store.json_and_bytes(&image.config)?;
        // `docker save` names configs by their digest: that is a digest to check.
        let stated = image
            .config
            .trim_start_matches("blobs/sha256/")
            .trim_end_matches(".json");
        let actual = crate::digest::sha256_digest(&config_bytes);
        if stated.len() == 64 && actual.hex() != stated {
            return Err(Error::damaged(
                format!("{}: {}", shown(&store.describe()), shown(&image.config)),
                format!("its digest is {actual}, but its name says sha256:{stated}"),
            ));
        }
        check_layer_count(store, &config, image.layers.len())?;
        let mut layers = Vec::new();
        let manifest = serde_json::to_value(&image).unwrap_or_default();
        for (name, diff_id) in image.layers.into_iter().zip(&config.rootfs.diff_ids) {
            let (_, size) = store.open(&name)?;
            // Newer `docker save` names layers by digest: that is a digest to check too.
            let digest = name
                .strip_prefix("blobs/sha256/")
                .map(|hex| format!("sha256:{hex}"));
            layers.push(BaseLayer {
                codec: sniff(store, &name)?,
                name,
                size,
                diff_id: Some(diff_id.clone()),
                digest,
            });
        }
        Ok(BaseImage {
            store: Arc::clone(store),
            manifest,
            names: image.repo_tags,
            layers,
            config,
            config_bytes,
        })
    }

    /// The legacy format: `repositories` names the top layer; each layer's `json` names its
    /// parent.
    fn legacy(store: Arc<BlobStore>, tag: Option<&str>) -> Result<Self> {
        let repositories: Repositories = store.json("repositories")?;
        let images = repositories
            .iter()
            .flat_map(|(name, tags)| {
                tags.iter().map(move |(t, id)| {
                    let names = vec![format!("{name}:{t}")];
                    (names.clone(), (names, id.clone()))
                })
            })
            .collect();
        let (names, top) = choose(&store, images, tag)?;
        let mut chain = Vec::new();
        let mut top_json = None;
        let mut next = Some(top);
        while let Some(id) = next {
            if chain.contains(&id) || chain.len() > 1000 {
                return Err(invalid(
                    &store,
                    format!("the parent chain loops at layer {}", shown(&id)),
                ));
            }
            let json: LegacyLayerJson = store.json(&format!("{id}/json"))?;
            // A layer's json names the layer it describes: another id means the chain was
            // put together from other images' pieces.
            if let Some(own) = json.id.as_deref().filter(|own| *own != id) {
                return Err(Error::damaged(
                    format!("{}: {}/json", shown(&store.describe()), shown(&id)),
                    format!("it describes layer {}", shown(own)),
                ));
            }
            next = json.parent.clone();
            top_json.get_or_insert(json);
            chain.push(id);
        }
        chain.reverse();
        let top_json = top_json.unwrap_or_default();
        let config = ImageConfigBlob {
            architecture: top_json.architecture.unwrap_or_default(),
            config: top_json.config,
            created: None,
            history: Vec::new(),
            os: top_json.os.unwrap_or_default(),
            rootfs: Default::default(),
            variant: top_json.variant,
            other: Map::new(),
        };
        let mut layers = Vec::new();
        for id in chain {
            let name = format!("{id}/layer.tar");
            let (_, size) = store.open(&name)?;
            layers.push(BaseLayer {
                codec: sniff(&store, &name)?,
                name,
                size,
                diff_id: None,
                digest: None,
            });
        }
        Ok(BaseImage {
            store,
            names,
            layers,
            config_bytes: crate::image_spec::to_bytes(&config),
            manifest: serde_json::to_value(&repositories).unwrap_or_default(),
            config,
        })
    }

    /// The OCI image layout: index.json, possibly a multi-platform index, then a manifest.
    fn oci(store: Arc<BlobStore>, tag: Option<&str>, platform: Option<&Platform>) -> Result<Self> {
        let index: Index = store.json("index.json")?;
        let descriptors = index
            .manifests
            .into_iter()
            .map(|d| {
                let names: Vec<String> = [REF_NAME, CONTAINERD_NAME]
                    .iter()
                    .filter_map(|k| d.annotations.as_ref()?.get(*k).cloned())
                    .collect();
                (names.clone(), (names, d))
            })
            .collect();
        let (names, mut descriptor) = choose(&store, descriptors, tag)?;
        // Nested indexes: a few levels at most, and never one already seen (a cycle).
        let mut seen = Vec::new();
        while media_type::is_index(&descriptor.media_type) {
            if seen.contains(&descriptor.digest) || seen.len() >= MAX_INDEX_DEPTH {
                return Err(invalid(
                    &store,
                    format!(
                        "the index {} leads back to itself or nests more than {MAX_INDEX_DEPTH} \
                         indexes deep",
                        shown(&descriptor.digest)
                    ),
                ));
            }
            seen.push(descriptor.digest.clone());
            let nested: Index = verified_json(&store, &descriptor)?.0;
            descriptor = choose_platform(&store, nested, platform)?;
        }
        let (manifest, manifest_bytes): (Manifest, _) = verified_json(&store, &descriptor)?;
        let manifest_value = serde_json::from_slice(&manifest_bytes).unwrap_or_default();
        let (config, config_bytes): (ImageConfigBlob, _) = verified_json(&store, &manifest.config)?;
        check_layer_count(&store, &config, manifest.layers.len())?;
        let mut layers = Vec::new();
        for (descriptor, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            let name = blob_name(&store, descriptor)?;
            let (_, size) = store.open(&name)?;
            let codec = Codec::of_layer_media_type(&descriptor.media_type).ok_or_else(|| {
                invalid(
                    &store,
                    format!(
                        "layer {} has the media type {}, not a tar layer",
                        shown(&name),
                        quoted(&descriptor.media_type)
                    ),
                )
            })?;
            if descriptor.size != size {
                return Err(invalid(
                    &store,
                    format!(
                        "layer {} is {size} bytes but the manifest says {}",
                        shown(&name),
                        descriptor.size
                    ),
                ));
            }
            layers.push(BaseLayer {
                name,
                size,
                codec,
                diff_id: Some(diff_id.clone()),
                digest: Some(descriptor.digest.clone()),
            });
        }
        Ok(BaseImage {
            store,
            names,
            layers,
            config,
            config_bytes,
            manifest: manifest_value,
        })
    }

    /// Where the base was read from.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The base's runtime config (`Cmd`, `Env`, ...).
    pub fn runtime_config(&self) -> Map<String, Value> {
        self.config.config.clone().unwrap_or_default()
    }

    /// The base's history entries, kept before ours.
    pub fn history(&self) -> Vec<Value> {
        self.config.history.clone()
    }

    /// The base's platform; its os is linux when the config leaves it out.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.config.architecture.clone(),
            variant: self.config.variant.clone(),
            os: if self.config.os.is_empty() {
                "linux".to_string()
            } else {
                self.config.os.clone()
            },
        }
    }

    /// Layer `index` as a blob to copy unchanged.
    pub fn blob(&self, index: usize) -> BaseBlob<'_> {
        BaseBlob {
            image: self,
            layer: &self.layers[index],
        }
    }

    /// Writes layer `index` to `out` as a plain tar, verified against its digests on the way.
    pub fn write_plain(&self, index: usize, out: &mut dyn Write) -> Result<BlobInfo> {
        self.blob(index).copy(None, Some(out))
    }

    /// Layer `index` decompressed into a scratch file in `scratch` (verified on the way), as a
    /// plain tar.
    pub fn decompressed(&self, index: usize, scratch: &Path) -> Result<SpooledTar> {
        let mut file = tempfile::tempfile_in(scratch)
            .map_err(|e| Error::io("creating a scratch file in", scratch, e))?;
        let info = {
            let mut out = io::BufWriter::new(&mut file);
            let info = self.blob(index).copy(None, Some(&mut out))?;
            out.flush().map_err(|e| Error::write("a scratch file", e))?;
            info
        };
        let length = file
            .metadata()
            .map_err(|e| Error::write("a scratch file", e))?
            .len();
        Ok(SpooledTar {
            file,
            length,
            diff_id: info.diff_id,
        })
    }
}

/// The kinds of image files, told apart by content.
enum Format {
    Oci,
    Docker,
    Legacy,
}

/// Opens an image file or layout and tells its format.
fn open(path: &Path, scratch: &Path) -> Result<(Arc<BlobStore>, Format)> {
    if path.is_dir() {
        let store = BlobStore::dir(path);
        if !store.contains("oci-layout") || !store.contains("index.json") {
            return Err(invalid(
                &store,
                "a directory must be an OCI image layout (with oci-layout and index.json)",
            ));
        }
        return Ok((Arc::new(store), Format::Oci));
    }
    let store = BlobStore::archive(path, scratch)?;
    let format = if store.contains("manifest.json") {
        Format::Docker
    } else if store.contains("index.json") && store.contains("oci-layout") {
        Format::Oci
    } else if store.contains("repositories") {
        Format::Legacy
    } else {
        return Err(invalid(
            &store,
            "not a docker-archive (no manifest.json), an OCI archive (no index.json and \
             oci-layout) nor a legacy docker image (no repositories)",
        ));
    };
    Ok((Arc::new(store), format))
}

/// A config must list one diff_id per layer.
fn check_layer_count(store: &BlobStore, config: &ImageConfigBlob, layers: usize) -> Result<()> {
    let diff_ids = config.rootfs.diff_ids.len();
    if diff_ids == layers {
        return Ok(());
    }
    Err(invalid(
        store,
        format!("the config lists {diff_ids} diff_ids for {layers} layers"),
    ))
}

/// How deep indexes may nest (an index of platforms inside the layout's index is one).
const MAX_INDEX_DEPTH: usize = 4;

/// The layout file of a descriptor's blob: `blobs/<algorithm>/<hex>`, for a digest whose
/// algorithm we can check and whose hex has that algorithm's length; anything else (`..`,
/// slashes, other text) is refused before it becomes a path.
fn blob_name(store: &BlobStore, descriptor: &Descriptor) -> Result<String> {
    let refuse = |why: &str| {
        invalid(
            store,
            format!("{} is not a digest: {why}", quoted(&descriptor.digest)),
        )
    };
    let (algorithm, hex) = descriptor
        .digest
        .split_once(':')
        .ok_or_else(|| refuse("no algorithm"))?;
    let length = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(refuse("the algorithm is neither sha256 nor sha512")),
    };
    if hex.len() != length
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(refuse(&format!("not {length} lower-case hex digits")));
    }
    Ok(format!("blobs/{algorithm}/{hex}"))
}

/// A JSON blob (index, manifest, config) read by its descriptor: its size and digest checked
/// before it is parsed, so a layout cannot change what a digest names.
fn verified_json<T: serde::de::DeserializeOwned>(
    store: &BlobStore,
    descriptor: &Descriptor,
) -> Result<(T, Vec<u8>)> {
    let name = blob_name(store, descriptor)?;
    let bytes = store.read(&name)?;
    let at = format!("{}: {}", shown(&store.describe()), shown(&name));
    if bytes.len() as u64 != descriptor.size {
        return Err(Error::damaged(
            &at,
            format!(
                "it is {} bytes, but its descriptor says {}",
                bytes.len(),
                descriptor.size
            ),
        ));
    }
    let actual = match descriptor.digest.split_once(':') {
        Some(("sha512", _)) => {
            use sha2::Digest;
            format!(
                "sha512:{}",
                crate::digest::hex(&sha2::Sha512::digest(&bytes))
            )
        }
        _ => crate::digest::sha256_digest(&bytes).to_string(),
    };
    if actual != descriptor.digest {
        return Err(Error::damaged(
            &at,
            format!(
                "its digest is {actual}, but its descriptor says {}",
                descriptor.digest
            ),
        ));
    }
    Ok((crate::json_file::parse_typed(&at, &bytes)?, bytes))
}

/// The manifest of a multi-platform index that matches `platform` (default: this machine's).
fn choose_platform(
    store: &BlobStore,
    index: Index,
    platform: Option<&Platform>,
) -> Result<Descriptor> {
    let wanted = platform.cloned().unwrap_or_else(Platform::host);
    let of = |d: &Descriptor| {
        let p = d.platform.clone();
        Platform {
            architecture: p
                .as_ref()
                .map(|p| p.architecture.clone())
                .unwrap_or_default(),
            variant: p.as_ref().and_then(|p| p.variant.clone()),
            os: p
                .map(|p| p.os)
                .filter(|os| !os.is_empty())
                .unwrap_or_else(|| "linux".to_string()),
        }
    };
    let matches = |d: &Descriptor| {
        let p = of(d);
        p.architecture == wanted.architecture
            && p.os == wanted.os
            && (wanted.variant.is_none() || p.variant == wanted.variant)
    };
    if let Some(found) = index.manifests.iter().find(|d| matches(d)) {
        return Ok(found.clone());
    }
    let available: Vec<String> = index.manifests.iter().map(|d| of(d).describe()).collect();
    Err(invalid(
        store,
        format!(
            "no image for {}; it has: {}",
            wanted.describe(),
            shown(&available.join(", "))
        ),
    )
    .about(Setting::Architecture))
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
        stored_out: Option<&mut dyn Write>,
        plain_out: Option<&mut dyn Write>,
    ) -> Result<BlobInfo> {
        let store = &self.image.store;
        let name = &self.layer.name;
        let at = format!("{}: layer {}", shown(&store.describe()), shown(name));
        let (mut reader, _) = store.open(name)?;
        copy_checked(
            &mut reader,
            Decode::Check(self.layer.codec),
            Expected {
                digest: self.layer.digest.as_deref(),
                diff_id: self.layer.diff_id.as_deref(),
                size: None,
                by: "the image",
                diff_id_by: "the config's diff_id",
            },
            stored_out,
            plain_out,
            (&at, |at, message| Error::damaged(at, message)),
        )
        .map_err(|e| e.about(Setting::FromImage))
    }
}

/// What a stored blob must turn out to be; `by` names who says so.
pub(crate) struct Expected<'a> {
    pub digest: Option<&'a str>,
    pub diff_id: Option<&'a str>,
    pub size: Option<u64>,
    pub by: &'a str,
    /// Who gives the diff_id, in messages.
    pub diff_id_by: &'a str,
}

/// Whether a copied blob is decompressed on the way.
#[derive(Clone, Copy)]
pub(crate) enum Decode<'a> {
    /// Decompressed with this codec: its diff_id is computed (and checked, when expected).
    Check(Codec),
    /// Not decompressed: its diff_id is this one, taken on trust (see `prebuilt::BlobCheck`);
    /// only its size and digest are checked, and there is no decompressed copy to give.
    Trust(&'a Digest),
}

/// Copies a stored blob once: its bytes to `stored_out`, decompressed to `plain_out`, both
/// digests (and the size) computed on the way and checked against `expected`. Errors are about
/// `at`; a blob that is not what it should be is reported by `damaged`.
pub(crate) fn copy_checked(
    reader: &mut dyn Read,
    decode: Decode,
    expected: Expected,
    mut stored_out: Option<&mut dyn Write>,
    mut plain_out: Option<&mut dyn Write>,
    (at, damaged): (&str, fn(&str, String) -> Error),
) -> Result<BlobInfo> {
    let fail = |what: String| Error::input(at, what);
    if matches!(decode, Decode::Trust(_)) && plain_out.is_some() {
        return Err(Error::value(
            "a blob copied without decompressing it has no decompressed copy to give",
        ));
    }
    let mut stored = HashingWriter::new(io::sink());
    let mut sink: Box<dyn Write + '_> = match plain_out.take() {
        Some(out) => Box::new(out),
        None => Box::new(io::sink()),
    };
    let mut plain = HashingWriter::new(&mut sink);
    {
        let mut decoder = match decode {
            Decode::Check(codec) => Some(
                codec
                    .decoding_writer(&mut plain)
                    .map_err(|e| fail(format!("it does not decompress: {e}")))?,
            ),
            Decode::Trust(_) => None,
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
                    .map_err(|e| Error::write("the image", e))?;
            }
            if let Some(decoder) = decoder.as_mut() {
                decoder
                    .write_all(chunk)
                    .map_err(|e| fail(format!("it does not decompress: {e}")))?;
            }
        }
        if let Some(mut decoder) = decoder {
            decoder
                .flush()
                .map_err(|e| fail(format!("it does not decompress: {e}")))?;
        }
    }
    let (_, computed_diff_id, _) = plain.finish();
    let diff_id = match decode {
        Decode::Check(_) => computed_diff_id,
        Decode::Trust(diff_id) => diff_id.clone(),
    };
    let (_, digest, size) = stored.finish();
    let by = expected.by;
    let damaged = |message: String| damaged(at, message);
    if let Some(want) = expected.size {
        if size != want {
            return Err(damaged(format!(
                "it holds {size} bytes, but {by} says {want}"
            )));
        }
    }
    if let Some(want) = expected.digest {
        if digest != *want {
            return Err(damaged(format!(
                "its digest is {digest}, but {by} says {}",
                shown(want)
            )));
        }
    }
    if let Some(want) = expected.diff_id {
        if diff_id != *want {
            return Err(damaged(format!(
                "its uncompressed digest is {diff_id}, but {} is {}",
                expected.diff_id_by,
                shown(want)
            )));
        }
    }
    Ok(BlobInfo {
        diff_id,
        digest,
        size,
    })
}

impl BlobSource for BaseBlob<'_> {
    fn size(&self) -> u64 {
        self.layer.size
    }

    fn known(&self) -> Option<BlobInfo> {
        // Both digests come from the verified manifest and config.
        Some(BlobInfo {
            diff_id: Digest::parse(self.layer.diff_id.as_deref()?)?,
            digest: Digest::parse(self.layer.digest.as_deref()?)?,
            size: self.layer.size,
        })
    }

    fn codec(&self) -> Codec {
        self.layer.codec
    }

    fn copy_to(&self, out: &mut dyn Write) -> Result<BlobInfo> {
        self.copy(Some(out), None)
    }
}

/// A base layer decompressed to a scratch file, written as a plain tar layer.
pub struct SpooledTar {
    file: std::fs::File,
    length: u64,
    pub diff_id: Digest,
}

impl SpooledTar {
    /// The scratch file holding the plain tar (read it with positioned reads).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
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
                .map_err(|e| Error::write("a scratch file", e))?;
            if n == 0 {
                return Err(Error::write(
                    "a scratch file",
                    io::Error::new(io::ErrorKind::UnexpectedEof, "it shrank while it was read"),
                ));
            }
            out.write_all(&buffer[..n])
                .map_err(|e| Error::write("the image", e))?;
            offset += n as u64;
        }
        Ok(())
    }
}
