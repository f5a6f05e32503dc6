//! The docker-archive format (`docker save`, `docker load`): one tar holding each layer as a file,
//! the config as `<digest>.json` and a `manifest.json` that ties them to a name.
//!
//! It is written in one pass, also to a pipe: a layer's length is known from metadata, so its
//! entry header goes first and the layer streams behind it while its digest is computed; the
//! config and `manifest.json`, which need the digests, come last. Layer files are named by
//! position (`layers/3.tar`) since their digests are not known when their headers are written.
//! Compressed layers have no length up front: they are compressed side by side into scratch
//! files first, then copied in order.
//!
//! With `docker_legacy`, the archive also carries the pre-1.10 metadata, as `docker save` wrote
//! it up to Docker 24: a directory per layer named by a legacy id, holding `VERSION`, `json`
//! (`id`, `parent` and, on the top layer, the config) and the layer itself as `layer.tar`, and
//! `repositories`, naming the top layer for each tag. A layer's id is the SHA-256 of the chain
//! below it and its diff_id (the top one also of the config digest), so ids depend on content
//! only; and since they name the layers' files, every layer is first written to a scratch
//! file (side by side) to learn its diff_id. Docker's legacy loader takes every top-level
//! directory for a layer, so in this form nothing else has one.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use super::{
    ImageSource, Naming, Subject, Written, copy_all, write_dir_header, write_end,
    write_entry_header, write_error, write_file, write_padding,
};
use crate::digest::{BlobInfo, Digest, sha256_digest};
use crate::error::{Error, Result, Setting};
use crate::image_spec::{
    DockerManifestEntry, ImageConfigBlob, LegacyLayerJson, Repositories, to_bytes,
};
use crate::output::blobs::{
    self, BlobSource, Layer, LayerSource, Making, Placed, Placement, write_started_tar,
};
use crate::output::compress::Compression;
use crate::tarball::StartedTar;

/// Writes the docker-archive of one image into `out`; scratch files go in `scratch`.
pub fn write(
    source: &dyn ImageSource,
    naming: Naming<'_>,
    making: Making<'_>,
    legacy: bool,
    out: &mut dyn Write,
    scratch: &Path,
) -> Result<Written> {
    if legacy {
        return write_with_legacy(source, naming, making, out, scratch);
    }
    let count = source.layer_count();
    let mut layers: Vec<BlobInfo> = Vec::with_capacity(count);
    let mut layer_names = Vec::with_capacity(count);
    let suffix = making.compression.codec().file_suffix();
    // Plain tarballs and existing blobs have a known length: they stream straight in.
    // Tarballs to compress do not: they are compressed side by side into scratch files first.
    let mut spool = Spool {
        scratch,
        all: false,
        compressed: making.compression != Compression::None,
    };
    let mut spools = blobs::place_all(source, making, &mut spool)?;
    // Plain tarballs stream one after another: the next one's files are read while this one
    // is written, so no layer starts from an empty read buffer.
    let streamed: Vec<bool> = spools.iter().map(Option::is_none).collect();
    std::thread::scope(|scope| -> Result<()> {
        let read_ahead = |index: usize| -> Result<Option<StartedTar<'_>>> {
            Ok(match source.layer(index)? {
                LayerSource::Tar(tar) if streamed[index] => Some(tar.read_ahead(scope)),
                _ => None,
            })
        };
        let mut next = if count > 0 { read_ahead(0)? } else { None };
        for (index, spool) in spools.iter_mut().enumerate() {
            let started = next.take();
            if index + 1 < count {
                next = read_ahead(index + 1)?;
            }
            let info = match (source.layer(index)?, spool.take(), started) {
                (_, Some(placed), _) => {
                    let (mut file, info) = (placed.value, placed.info);
                    let name = format!("layers/{index}.{suffix}");
                    write_entry_header(out, &name, info.size, naming.mtime)?;
                    copy_all(&mut file, out)?;
                    layer_names.push(name);
                    info
                }
                (LayerSource::Tar(tar), None, started) => {
                    let started = started.unwrap_or_else(|| tar.read_ahead(scope));
                    let name = format!("layers/{index}.tar");
                    write_entry_header(out, &name, tar.tar_len(), naming.mtime)?;
                    layer_names.push(name);
                    write_started_tar(tar.tar_len(), started, out)?
                }
                (LayerSource::Blob(blob), None, _) => {
                    let name = format!("layers/{index}.{}", blob.codec().file_suffix());
                    write_entry_header(out, &name, blob.size(), naming.mtime)?;
                    layer_names.push(name);
                    blob.copy_to(out)?
                }
            };
            write_padding(out, info.size)?;
            layers.push(info);
        }
        Ok(())
    })?;

    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = sha256_digest(&config);
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    write_file(out, &config_name, &config, naming.mtime)?;

    let tags = naming.tags_for(&config_digest);
    write_attachments(source, out, naming, &tags, &config_digest, &layers)?;
    finish(
        out,
        naming,
        config_name,
        layer_names,
        tags,
        config_digest,
        layers,
    )
}

/// Layers made into scratch files, to be copied into the archive once their length is known:
/// every layer (`all`, for the legacy form), or the tarballs that are compressed.
struct Spool<'a> {
    scratch: &'a Path,
    all: bool,
    compressed: bool,
}

impl Placement for Spool<'_> {
    type Value = File;

    fn wants(&self, layer: &LayerSource<'_>) -> bool {
        self.all || (self.compressed && matches!(layer, LayerSource::Tar(_)))
    }

    fn place(&self, layer: &Layer<'_>) -> Result<Placed<File>> {
        let mut file = tempfile::tempfile_in(self.scratch)
            .map_err(|e| Error::io("creating a scratch file in", self.scratch, e))?;
        let info = {
            let mut buffered = BufWriter::with_capacity(1 << 20, &mut file);
            let info = layer.write_blob(&mut buffered)?;
            buffered.flush().map_err(write_error)?;
            info
        };
        file.rewind().map_err(write_error)?;
        Ok(Placed {
            info,
            value: file,
            made: true,
        })
    }
}

/// The documents about the image, as files beside its config (`docker load` and skopeo read
/// only what `manifest.json` names; the files are for whoever unpacks the archive).
fn write_attachments(
    source: &dyn ImageSource,
    out: &mut dyn Write,
    naming: Naming<'_>,
    tags: &[String],
    config_digest: &Digest,
    layers: &[BlobInfo],
) -> Result<()> {
    let attachments = source.attachments(&Subject {
        name: naming.name,
        tags,
        manifest: None,
        config_digest,
        layers,
    })?;
    for attachment in attachments {
        write_file(
            out,
            &attachment.file_name,
            &attachment.content,
            naming.mtime,
        )?;
    }
    Ok(())
}

/// Ends an archive of one image: `manifest.json`, then the end-of-archive blocks.
fn finish(
    out: &mut dyn Write,
    naming: Naming<'_>,
    config_name: String,
    layer_names: Vec<String>,
    tags: Vec<String>,
    config_digest: Digest,
    layers: Vec<BlobInfo>,
) -> Result<Written> {
    let manifest = to_bytes(&[DockerManifestEntry {
        config: config_name,
        repo_tags: tags
            .iter()
            .map(|tag| format!("{}:{tag}", naming.name))
            .collect(),
        layers: layer_names,
    }]);
    write_file(out, "manifest.json", &manifest, naming.mtime)?;
    write_end(out)?;
    Ok(Written {
        name: naming.name.to_string(),
        tags,
        config_digest,
        layers,
    })
}

/// The legacy ids of the layers, bottom first (see the module doc).
pub(crate) fn legacy_ids(diff_ids: &[&str], config_digest: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(diff_ids.len());
    for (i, diff_id) in diff_ids.iter().enumerate() {
        let parent = ids.last().map_or("", String::as_str);
        let mut seed = format!("layered-gen legacy layer\n{parent}\n{diff_id}");
        if i + 1 == diff_ids.len() {
            seed.push('\n');
            seed.push_str(config_digest);
        }
        ids.push(
            sha256_digest(seed.as_bytes())
                .trim_start_matches("sha256:")
                .to_string(),
        );
    }
    ids
}

/// The archive with the pre-1.10 metadata (see the module doc).
fn write_with_legacy(
    source: &dyn ImageSource,
    naming: Naming<'_>,
    making: Making<'_>,
    out: &mut dyn Write,
    scratch: &Path,
) -> Result<Written> {
    let count = source.layer_count();
    if count == 0 {
        return Err(Error::value(
            "an image without layers has no top layer for the pre-1.10 metadata to name",
        )
        .about(Setting::DockerLegacy));
    }
    let mut spool = Spool {
        scratch,
        all: true,
        compressed: making.compression != Compression::None,
    };
    let spools: Vec<Placed<File>> = blobs::place_all(source, making, &mut spool)?
        .into_iter()
        .flatten()
        .collect();
    let layers: Vec<BlobInfo> = spools.iter().map(|placed| placed.info.clone()).collect();
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = sha256_digest(&config);
    // Our own config: it parses.
    let parsed: ImageConfigBlob =
        serde_json::from_slice(&config).map_err(|e| Error::value(e.to_string()))?;
    let id_inputs: Vec<&str> = diff_ids.iter().map(Digest::as_str).collect();
    let ids = legacy_ids(&id_inputs, &config_digest);
    let mtime = naming.mtime;
    let mut layer_names = Vec::with_capacity(count);
    for (
        i,
        Placed {
            value: mut file,
            info,
            ..
        },
    ) in spools.into_iter().enumerate()
    {
        let id = &ids[i];
        write_dir_header(out, &format!("{id}/"), mtime)?;
        write_file(out, &format!("{id}/VERSION"), b"1.0", mtime)?;
        let json = legacy_json(&ids, i, &parsed);
        write_file(out, &format!("{id}/json"), &to_bytes(&json), mtime)?;
        let name = format!("{id}/layer.tar");
        write_entry_header(out, &name, info.size, mtime)?;
        copy_all(&mut file, out)?;
        write_padding(out, info.size)?;
        layer_names.push(name);
    }
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    write_file(out, &config_name, &config, mtime)?;
    let tags = naming.tags_for(&config_digest);
    let top = ids[count - 1].clone();
    let repositories: Repositories = [(
        naming.name.to_string(),
        tags.iter().map(|tag| (tag.clone(), top.clone())).collect(),
    )]
    .into_iter()
    .collect();
    write_file(out, "repositories", &to_bytes(&repositories), mtime)?;
    write_attachments(source, out, naming, &tags, &config_digest, &layers)?;
    finish(
        out,
        naming,
        config_name,
        layer_names,
        tags,
        config_digest,
        layers,
    )
}

/// Layer `i`'s legacy `json`: its id and parent; the top layer also carries the config.
fn legacy_json(ids: &[String], i: usize, config: &ImageConfigBlob) -> LegacyLayerJson {
    let top = i + 1 == ids.len();
    LegacyLayerJson {
        id: Some(ids[i].clone()),
        parent: i.checked_sub(1).map(|p| ids[p].clone()),
        created: config.created.clone(),
        architecture: top.then(|| config.architecture.clone()),
        os: top.then(|| config.os.clone()),
        variant: config.variant.clone().filter(|_| top),
        config: config.config.clone().filter(|_| top),
    }
}

/// An image already made, as `merge` writes it: its config's bytes (copied as they are, so
/// the image keeps its id), its `name:tag` references, and its layer blobs, each with a key
/// that is equal for equal content (its diff_id).
pub struct StoredImage<'a> {
    pub config: &'a [u8],
    pub repo_tags: Vec<String>,
    pub layers: Vec<(String, &'a dyn BlobSource)>,
}

/// Writes several images into one docker-archive: every layer once (by key, in order of first
/// use), every config once, one `manifest.json` entry per config with all its tags. A tag
/// claimed by two different images is an error. Returns the number of layer files written.
pub fn write_many(images: &[StoredImage], out: &mut dyn Write, mtime: u64) -> Result<usize> {
    check_tags_are_unique(images)?;
    let mut names_by_key: std::collections::HashMap<&str, String> = Default::default();
    let mut entries: Vec<DockerManifestEntry> = Vec::new();
    for image in images {
        let mut layer_names = Vec::with_capacity(image.layers.len());
        for (key, blob) in &image.layers {
            if let Some(name) = names_by_key.get(key.as_str()) {
                layer_names.push(name.clone());
                continue;
            }
            let name = format!(
                "layers/{}.{}",
                names_by_key.len(),
                blob.codec().file_suffix()
            );
            write_entry_header(out, &name, blob.size(), mtime)?;
            let info = blob.copy_to(out)?;
            write_padding(out, info.size)?;
            names_by_key.insert(key, name.clone());
            layer_names.push(name);
        }
        let config_digest = sha256_digest(image.config);
        let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
        match entries.iter_mut().find(|e| e.config == config_name) {
            // The same image given twice (under other tags): one entry with every tag.
            Some(entry) => {
                for tag in &image.repo_tags {
                    if !entry.repo_tags.contains(tag) {
                        entry.repo_tags.push(tag.clone());
                    }
                }
            }
            None => {
                write_file(out, &config_name, image.config, mtime)?;
                entries.push(DockerManifestEntry {
                    config: config_name,
                    repo_tags: image.repo_tags.clone(),
                    layers: layer_names,
                });
            }
        }
    }
    write_file(out, "manifest.json", &to_bytes(&entries), mtime)?;
    write_end(out)?;
    Ok(names_by_key.len())
}

/// Two different images under one `name:tag` would make `docker load` keep only the last.
fn check_tags_are_unique(images: &[StoredImage]) -> Result<()> {
    let mut owner: std::collections::HashMap<&str, Digest> = Default::default();
    for image in images {
        let digest = sha256_digest(image.config);
        for tag in &image.repo_tags {
            match owner.get(tag.as_str()) {
                Some(other) if *other != digest => {
                    return Err(Error::value(format!(
                        "two different images are tagged {}: {other} and {digest}",
                        crate::error::shown(tag)
                    )));
                }
                _ => {
                    owner.insert(tag, digest.clone());
                }
            }
        }
    }
    Ok(())
}
