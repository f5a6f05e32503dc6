//! The OCI image layout: `oci-layout`, `index.json` and content-addressed `blobs/sha256/`, as a
//! directory or packed into an `oci-archive` tar. Layers are written side by side, each to a
//! scratch file in the blob directory that is renamed to its digest when done.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use super::blob::{BlobInfo, sha256_digest, write_layer_blob};
use super::docker_archive::{write_entry_header, write_file, write_padding};
use super::lanes;
use super::{
    BlobSource, ImageSource, Layer, OutputOptions, Written, copy_all, image_tags, layer_size,
    parent_dir, temporary,
};
use crate::error::{Error, Result, shown_path};
use crate::image_spec::{
    CONTAINERD_NAME, Descriptor, Index, Manifest, OCI_LAYOUT, PlatformSpec, REF_NAME, media_type,
    to_bytes,
};
use crate::tarball::{self, Header, Kind};

/// Writes the layout into a new directory at `path`, replacing an earlier layout there.
pub(super) fn write_layout_dir(
    source: &dyn ImageSource,
    options: &OutputOptions,
    path: &Path,
) -> Result<Written> {
    into_new_dir(path, |dir| write_layout(source, options, dir, Some(path)))
}

/// Writes an `oci-archive` of one image.
pub(super) fn write_archive(
    source: &dyn ImageSource,
    options: &OutputOptions,
    out: &mut dyn Write,
    scratch: &Path,
) -> Result<Written> {
    into_archive(out, scratch, options.mtime, |dir| {
        write_layout(source, options, dir, None)
    })
}

/// Runs `fill` on a new, empty directory that then becomes the layout at `path`, replacing an
/// earlier layout there (and nothing else).
pub(super) fn into_new_dir<T>(path: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if path.exists() && !path.join("oci-layout").is_file() {
        let empty_dir = fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
        if !empty_dir {
            return Err(Error::value(format!(
                "{} exists and is not an OCI layout; refusing to replace it",
                shown_path(path)
            ))
            .about(crate::error::Setting::Output));
        }
    }
    let parent = parent_dir(path);
    temporary::clear_stale(&parent);
    let temp = tempfile::Builder::new()
        .prefix(&temporary::prefix())
        .tempdir_in(&parent)
        .map_err(|e| Error::io("creating a temporary directory in", &parent, e))?;
    let _registered = temporary::register(temp.path());
    let result = fill(temp.path())?;
    let finished = temp.keep();
    replace_dir(&finished, path).inspect_err(|_| {
        let _ = fs::remove_dir_all(&finished);
    })?;
    Ok(result)
}

/// Moves `new` to `path`; an old layout at `path` is removed only once the new one is there.
fn replace_dir(new: &Path, path: &Path) -> Result<()> {
    if !path.exists() {
        return fs::rename(new, path).map_err(|e| Error::io("renaming the image to", path, e));
    }
    let old: PathBuf = new.with_extension("old");
    fs::rename(path, &old)
        .map_err(|e| Error::io("moving the previous layout away from", path, e))?;
    fs::rename(new, path).map_err(|e| Error::io("renaming the image to", path, e))?;
    fs::remove_dir_all(&old).map_err(|e| Error::io("removing the previous layout at", &old, e))
}

/// Runs `fill` on a scratch directory, then packs the layout it made into `out` as an
/// `oci-archive`, in a fixed order: the blob directories, the blobs by digest, `index.json`,
/// `oci-layout`.
pub(super) fn into_archive<T>(
    out: &mut dyn Write,
    scratch: &Path,
    mtime: u64,
    fill: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    temporary::clear_stale(scratch);
    let temp = tempfile::Builder::new()
        .prefix(&temporary::prefix())
        .tempdir_in(scratch)
        .map_err(|e| Error::io("creating a scratch directory in", scratch, e))?;
    let _registered = temporary::register(temp.path());
    let result = fill(temp.path())?;
    let blob_dir = temp.path().join("blobs/sha256");
    let mut blobs: Vec<String> = fs::read_dir(&blob_dir)
        .map_err(|e| Error::io("reading", &blob_dir, e))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("reading", &blob_dir, e))?;
    blobs.sort();
    for dir in ["blobs/", "blobs/sha256/"] {
        let header = Header::archive_member(dir.as_bytes(), Kind::Directory, 0, mtime);
        tarball::write_header(out, &header).map_err(|e| Error::write("the image", e))?;
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
        let path = temp.path().join(name);
        let content = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        write_file(out, name, &content, mtime)?;
    }
    out.write_all(&tarball::END_OF_ARCHIVE)
        .map_err(|e| Error::write("the image", e))?;
    Ok(result)
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<String> {
    let digest = sha256_digest(bytes);
    let path = dir.join(digest.trim_start_matches("sha256:"));
    fs::write(&path, bytes).map_err(|e| Error::io("writing", &path, e))?;
    Ok(digest)
}

/// Writes layer `index` as a blob; returns its digests and media type.
fn write_layer(
    source: &dyn ImageSource,
    options: &OutputOptions,
    index: usize,
    blob_dir: &Path,
) -> Result<(BlobInfo, &'static str)> {
    let layer = source.layer(index)?;
    let info = persist_blob(blob_dir, |out| match layer {
        Layer::Tar(tar) => write_layer_blob(tar, options.compression, out),
        Layer::Blob(blob) => blob.copy_to(out),
    })?;
    let media_type = match layer {
        Layer::Tar(_) => options.compression.codec().oci_layer_media_type(),
        Layer::Blob(blob) => blob.codec().oci_layer_media_type(),
    };
    Ok((info, media_type))
}

/// A layer the cache knows whose blob sits in the layout being replaced: linked (or copied)
/// into the new one after checking its bytes, instead of being made again from the store.
/// Anything amiss (no entry, no blob, another size or digest) means: make it again.
fn reuse_blob(
    source: &dyn ImageSource,
    options: &OutputOptions,
    index: usize,
    previous: Option<&Path>,
    blob_dir: &Path,
) -> Option<(BlobInfo, &'static str)> {
    let (previous, cache) = (previous?, options.cache.as_ref()?);
    let Ok(Layer::Tar(_)) = source.layer(index) else {
        return None;
    };
    let known = cache.get(&source.layer_key(index)?, options.compression)?;
    let name = known.digest.strip_prefix("sha256:")?;
    let old = previous.join("blobs/sha256").join(name);
    let meta = fs::symlink_metadata(&old).ok()?;
    if !meta.is_file() || meta.len() != known.size {
        return None;
    }
    let mut file = fs::File::open(&old).ok()?;
    let mut hashing = super::blob::HashingWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut hashing).ok()?;
    let (_, digest, _) = hashing.finish();
    if digest != known.digest {
        return None;
    }
    let new = blob_dir.join(name);
    if fs::hard_link(&old, &new).is_err() {
        fs::copy(&old, &new).ok()?;
    }
    Some((known, options.compression.codec().oci_layer_media_type()))
}

/// Records a layer just made in the cache, when there is one (a failure costs time later).
fn remember(source: &dyn ImageSource, options: &OutputOptions, index: usize, info: &BlobInfo) {
    let (Some(cache), Some(key)) = (options.cache.as_ref(), source.layer_key(index)) else {
        return;
    };
    if matches!(source.layer(index), Ok(Layer::Tar(_))) {
        let _ = cache.put(&key, options.compression, info);
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

/// What `index` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexWritten {
    /// The digest of the image index (what a registry would name the multi-platform image).
    pub digest: String,
    pub tags: Vec<String>,
}

/// Writes a multi-platform layout into the empty directory `dir`: every image's blobs, config
/// and manifest, an image index listing the manifests with their platforms, and `index.json`
/// naming that index once per tag (by default one from its digest).
pub(super) fn write_index_layout(
    images: &[PlatformImage],
    name: &str,
    tags: &[String],
    dir: &Path,
) -> Result<IndexWritten> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(|e| Error::io("creating", &blob_dir, e))?;
    let mut manifests = Vec::with_capacity(images.len());
    for image in images {
        let mut layers = Vec::with_capacity(image.layers.len());
        let mut media_types = Vec::with_capacity(image.layers.len());
        for blob in &image.layers {
            layers.push(persist_blob(&blob_dir, |out| blob.copy_to(out))?);
            media_types.push(blob.codec().oci_layer_media_type());
        }
        let config_digest = write_blob(&blob_dir, image.config)?;
        let manifest = to_bytes(&manifest(
            &config_digest,
            image.config.len(),
            &layers,
            &media_types,
        ));
        write_blob(&blob_dir, &manifest)?;
        manifests.push((manifest, image.platform.clone()));
    }
    let index = index_document(&manifests);
    let digest = write_blob(&blob_dir, &index)?;
    let tags = super::tags_or_derived(tags, &digest);
    let mut top = self::index(&digest, index.len(), name, &tags);
    for entry in &mut top.manifests {
        entry.media_type = media_type::OCI_INDEX.to_string();
    }
    let index_path = dir.join("index.json");
    fs::write(&index_path, to_bytes(&top)).map_err(|e| Error::io("writing", &index_path, e))?;
    let layout_path = dir.join("oci-layout");
    fs::write(&layout_path, OCI_LAYOUT).map_err(|e| Error::io("writing", &layout_path, e))?;
    Ok(IndexWritten { digest, tags })
}

/// The image index of a multi-platform image: each platform's manifest with its platform.
pub(super) fn index_document(manifests: &[(Vec<u8>, PlatformSpec)]) -> Vec<u8> {
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
    to_bytes(&Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_string()),
        manifests,
    })
}

pub(super) fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size,
        annotations: None,
        platform: None,
    }
}

/// The image manifest: the config and the layers with their media types.
pub(super) fn manifest(
    config_digest: &str,
    config_size: usize,
    layers: &[BlobInfo],
    media_types: &[&str],
) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_string()),
        config: descriptor(media_type::OCI_CONFIG, config_digest, config_size as u64),
        layers: layers
            .iter()
            .zip(media_types)
            .map(|(l, media_type)| descriptor(media_type, &l.digest, l.size))
            .collect(),
    }
}

/// The layout's index: the manifest once per tag, named `name:tag` for containerd and `tag`
/// for the OCI tools.
fn index(manifest_digest: &str, manifest_size: usize, name: &str, tags: &[String]) -> Index {
    let manifests = tags
        .iter()
        .map(|tag| {
            let mut entry = descriptor(
                media_type::OCI_MANIFEST,
                manifest_digest,
                manifest_size as u64,
            );
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

/// Writes a complete layout into the existing, empty directory `dir`.
fn write_layout(
    source: &dyn ImageSource,
    options: &OutputOptions,
    dir: &Path,
    previous: Option<&Path>,
) -> Result<Written> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(|e| Error::io("creating", &blob_dir, e))?;
    let write = |index| match reuse_blob(source, options, index, previous, &blob_dir) {
        Some(reused) => Ok(reused),
        None => {
            let written = write_layer(source, options, index, &blob_dir)?;
            remember(source, options, index, &written.0);
            Ok(written)
        }
    };
    let layers: Vec<(BlobInfo, &'static str)> =
        lanes::run(source.layer_count(), |i| layer_size(source, i), write)?;
    let (layers, media_types): (Vec<BlobInfo>, Vec<&str>) = layers.into_iter().unzip();

    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = write_blob(&blob_dir, &config)?;
    let manifest = to_bytes(&manifest(
        &config_digest,
        config.len(),
        &layers,
        &media_types,
    ));
    let manifest_digest = write_blob(&blob_dir, &manifest)?;
    let tags = image_tags(options, &config_digest);
    let index = index(&manifest_digest, manifest.len(), &options.name, &tags);
    let index_path = dir.join("index.json");
    fs::write(&index_path, to_bytes(&index)).map_err(|e| Error::io("writing", &index_path, e))?;
    let layout_path = dir.join("oci-layout");
    fs::write(&layout_path, OCI_LAYOUT).map_err(|e| Error::io("writing", &layout_path, e))?;
    let written = Written {
        name: options.name.clone(),
        tags,
        config_digest,
        layers,
    };
    Ok(written)
}
