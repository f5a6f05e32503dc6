//! The OCI image layout: `oci-layout`, `index.json` and content-addressed `blobs/sha256/`, as a
//! directory or packed into an `oci-archive` tar. Layers are written side by side (see
//! `super::super::blobs`), each to a scratch file in the blob directory that is renamed to its
//! digest when done.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::manifest::{descriptor, image_manifest, index_document, layout_index};
use super::{
    Attachment, ImageSource, IndexWritten, Naming, Subject, Written, copy_all, referrers,
    tags_or_derived, write_dir_header, write_end, write_entry_header, write_file, write_padding,
};
use crate::digest::{BlobInfo, Digest, HashingWriter, sha256_digest};
use crate::error::{Error, Result};
use crate::image_spec::{Descriptor, OCI_LAYOUT, PlatformSpec, media_type, to_bytes};
use crate::output::blobs::{
    self, BlobSource, Layer, LayerSet, LayerSource, Making, Placed, Placement,
};
use crate::output::compress::Compression;
use crate::output::destination::Format;
use crate::output::sink;

/// Writes the layout into a new directory at `path`, replacing an earlier layout there; its
/// layers the cache knows are linked from that earlier layout instead of made again.
pub fn write_layout_dir(
    source: &dyn ImageSource,
    naming: Naming<'_>,
    making: Making<'_>,
    path: &Path,
) -> Result<Written> {
    sink::write_dir(path, |dir| {
        write_layout(source, naming, making, dir, Some(path))
    })
}

/// Writes an `oci-archive` of one image.
pub fn write_archive(
    source: &dyn ImageSource,
    naming: Naming<'_>,
    making: Making<'_>,
    out: &mut dyn Write,
    scratch: &Path,
) -> Result<Written> {
    into_archive(out, scratch, naming.mtime, |dir| {
        write_layout(source, naming, making, dir, None)
    })
}

/// Runs `fill` on a scratch directory, then packs the layout it made into `out` as an
/// `oci-archive`, in a fixed order: the blob directories, the blobs by digest, `index.json`,
/// `oci-layout`.
pub fn into_archive<T>(
    out: &mut dyn Write,
    scratch: &Path,
    mtime: u64,
    fill: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    sink::with_scratch_dir(scratch, |dir| {
        let result = fill(dir)?;
        pack(dir, out, mtime)?;
        Ok(result)
    })
}

/// Packs the layout in `dir` into `out` (see [`into_archive`]).
fn pack(dir: &Path, out: &mut dyn Write, mtime: u64) -> Result<()> {
    let blob_dir = dir.join("blobs/sha256");
    let mut blobs: Vec<String> = fs::read_dir(&blob_dir)
        .map_err(|e| Error::io("reading", &blob_dir, e))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("reading", &blob_dir, e))?;
    blobs.sort();
    for name in ["blobs/", "blobs/sha256/"] {
        write_dir_header(out, name, mtime)?;
    }
    for blob in &blobs {
        let path = blob_dir.join(blob);
        let mut file = fs::File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("reading", &path, e))?
            .len();
        write_entry_header(out, &format!("blobs/sha256/{blob}"), size, mtime)?;
        copy_all(&mut file, out)?;
        write_padding(out, size)?;
    }
    for name in ["index.json", "oci-layout"] {
        let path = dir.join(name);
        let content = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        write_file(out, name, &content, mtime)?;
    }
    write_end(out)
}

/// Writes `attachment` as an artifact about `subject` into the blob directory; returns the
/// descriptor `index.json` lists it by.
fn write_artifact(
    blob_dir: &Path,
    attachment: &Attachment,
    subject: &Descriptor,
) -> Result<Descriptor> {
    let made = referrers::artifact(attachment, subject);
    write_blob(blob_dir, &attachment.content)?;
    write_blob(blob_dir, referrers::EMPTY_CONFIG)?;
    write_blob(blob_dir, &made.manifest)?;
    Ok(made.descriptor)
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<Digest> {
    let digest = sha256_digest(bytes);
    let path = dir.join(digest.trim_start_matches("sha256:"));
    fs::write(&path, bytes).map_err(|e| Error::io("writing", &path, e))?;
    Ok(digest)
}

/// Layers into a layout's blob directory, each named by its digest. A tarball layer the
/// cache knows whose blob sits in the layout being replaced (`previous`) is linked (or copied)
/// from there after its bytes are checked (its digest, and decompressed its length and
/// diff_id), instead of made again from the store.
struct BlobDir<'a> {
    dir: &'a Path,
    previous: Option<&'a Path>,
}

impl Placement for BlobDir<'_> {
    /// The layer's media type.
    type Value = &'static str;

    fn place(&self, layer: &Layer<'_>) -> Result<Placed<&'static str>> {
        let media_type = layer.codec().oci_layer_media_type();
        if let Some(info) = self.reuse(layer) {
            return Ok(Placed {
                info,
                value: media_type,
                made: false,
            });
        }
        let info = persist_blob(self.dir, |out| layer.write_blob(out))?;
        Ok(Placed {
            info,
            value: media_type,
            made: true,
        })
    }
}

impl BlobDir<'_> {
    /// The layer's blob from the previous layout. Anything amiss (no entry, no blob, another
    /// size or digest) means: make it again.
    fn reuse(&self, layer: &Layer<'_>) -> Option<BlobInfo> {
        let (LayerSource::Tar(_), Some(previous), Some(known)) =
            (layer.source, self.previous, layer.known.as_ref())
        else {
            return None;
        };
        let name = known.digest.strip_prefix("sha256:")?;
        let old = previous.join("blobs/sha256").join(name);
        let meta = fs::symlink_metadata(&old).ok()?;
        if !meta.is_file() || meta.len() != known.size {
            return None;
        }
        let mut file = fs::File::open(&old).ok()?;
        let mut hashing = HashingWriter::new(std::io::sink());
        std::io::copy(&mut file, &mut hashing).ok()?;
        let (_, digest, _) = hashing.finish();
        if digest != known.digest {
            return None;
        }
        // Decompressed, it must be this layer's tarball: as long as the walk found it, with
        // the diff_id the entry says (an entry naming another layer's blob fails here).
        let file = fs::File::open(&old).ok()?;
        let mut tar = layer.codec().decoding_reader(file).ok()?;
        let mut hashing = HashingWriter::new(std::io::sink());
        std::io::copy(&mut tar, &mut hashing).ok()?;
        let (_, diff_id, tar_len) = hashing.finish();
        if diff_id != known.diff_id || tar_len != layer.source.size() {
            return None;
        }
        let new = self.dir.join(name);
        if fs::hard_link(&old, &new).is_err() {
            fs::copy(&old, &new).ok()?;
        }
        Some(known.clone())
    }
}

/// Runs `write` into a new file in `blob_dir`, which is then named by the digest it returns.
fn persist_blob(
    blob_dir: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<BlobInfo>,
) -> Result<BlobInfo> {
    let mut temp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(blob_dir)
        .map_err(|e| Error::io("creating a file in", blob_dir, e))?;
    let info = {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file_mut());
        let info = write(&mut out)?;
        out.flush().map_err(|e| Error::write("the image", e))?;
        info
    };
    let path = blob_dir.join(info.digest.trim_start_matches("sha256:"));
    temp.persist(&path)
        .map_err(|e| Error::io("writing", &path, e.error))?;
    Ok(info)
}

/// One platform's image of a multi-platform index: its config's bytes (copied as they are),
/// its platform and its layer blobs.
pub struct PlatformImage<'a> {
    pub config: &'a [u8],
    pub platform: PlatformSpec,
    pub layers: Vec<&'a dyn BlobSource>,
}

/// A platform's image as an image source: its blobs and its config, as they are.
impl LayerSet for PlatformImage<'_> {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn layer(&self, index: usize) -> Result<LayerSource<'_>> {
        Ok(LayerSource::Blob(self.layers[index]))
    }
}

impl ImageSource for PlatformImage<'_> {
    fn config(&self, _diff_ids: &[Digest]) -> Result<Vec<u8>> {
        Ok(self.config.to_vec())
    }
}

/// Blobs are copied as they are: no compression, no cache.
pub const AS_THEY_ARE: Making<'static> = Making {
    compression: Compression::None,
    cache: None,
    verify_cache: false,
};

/// Writes a multi-platform layout into the empty directory `dir`: every image's blobs, config
/// and manifest, an image index listing the manifests with their platforms, and `index.json`
/// naming that index once per tag (by default one from its digest).
pub fn write_index_layout(
    images: &[PlatformImage],
    name: &str,
    tags: &[String],
    dir: &Path,
) -> Result<IndexWritten> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(|e| Error::io("creating", &blob_dir, e))?;
    let mut manifests = Vec::with_capacity(images.len());
    for image in images {
        let manifest = write_blobs(image, AS_THEY_ARE, &blob_dir, None)?.manifest;
        write_blob(&blob_dir, &manifest)?;
        manifests.push((manifest, image.platform.clone()));
    }
    let index = index_document(&manifests);
    let digest = write_blob(&blob_dir, &index)?;
    let tags = tags_or_derived(tags, &digest);
    let top = layout_index(media_type::OCI_INDEX, &digest, index.len(), name, &tags);
    write_layout_files(dir, &to_bytes(&top))?;
    Ok(IndexWritten { digest, tags })
}

/// An image's blobs in a blob directory: its manifest (not yet written), its layers and its
/// config's digest.
struct ImageBlobs {
    manifest: Vec<u8>,
    layers: Vec<BlobInfo>,
    config_digest: Digest,
}

/// Writes an image's layers and config into `blob_dir`.
fn write_blobs(
    source: &dyn ImageSource,
    making: Making<'_>,
    blob_dir: &Path,
    previous: Option<&Path>,
) -> Result<ImageBlobs> {
    let mut placement = BlobDir {
        dir: blob_dir,
        previous,
    };
    let placed = blobs::place_all(source, making, &mut placement)?;
    let (layers, media_types): (Vec<BlobInfo>, Vec<&str>) = placed
        .into_iter()
        .flatten()
        .map(|placed| (placed.info, placed.value))
        .unzip();
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = write_blob(blob_dir, &config)?;
    let manifest = to_bytes(&image_manifest(
        Format::Oci,
        &config_digest,
        config.len(),
        &layers,
        &media_types,
    ));
    Ok(ImageBlobs {
        manifest,
        layers,
        config_digest,
    })
}

/// `index.json` and `oci-layout`.
fn write_layout_files(dir: &Path, index: &[u8]) -> Result<()> {
    let index_path = dir.join("index.json");
    fs::write(&index_path, index).map_err(|e| Error::io("writing", &index_path, e))?;
    let layout_path = dir.join("oci-layout");
    fs::write(&layout_path, OCI_LAYOUT).map_err(|e| Error::io("writing", &layout_path, e))
}

/// Writes a complete layout into the existing, empty directory `dir`.
fn write_layout(
    source: &dyn ImageSource,
    naming: Naming<'_>,
    making: Making<'_>,
    dir: &Path,
    previous: Option<&Path>,
) -> Result<Written> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(|e| Error::io("creating", &blob_dir, e))?;
    let ImageBlobs {
        manifest,
        layers,
        config_digest,
    } = write_blobs(source, making, &blob_dir, previous)?;
    let manifest_digest = write_blob(&blob_dir, &manifest)?;
    let tags = naming.tags_for(&config_digest);
    let mut index = layout_index(
        media_type::OCI_MANIFEST,
        &manifest_digest,
        manifest.len(),
        naming.name,
        &tags,
    );
    let subject = descriptor(
        media_type::OCI_MANIFEST,
        &manifest_digest,
        manifest.len() as u64,
    );
    let attachments = source.attachments(&Subject {
        name: naming.name,
        tags: &tags,
        manifest: Some(&subject),
        config_digest: &config_digest,
        layers: &layers,
    })?;
    for attachment in &attachments {
        index
            .manifests
            .push(write_artifact(&blob_dir, attachment, &subject)?);
    }
    write_layout_files(dir, &to_bytes(&index))?;
    Ok(Written {
        name: naming.name.to_string(),
        tags,
        config_digest,
        layers,
    })
}
