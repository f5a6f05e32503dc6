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

use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use super::blob::{BlobInfo, Compression, sha256_digest, write_layer_blob, write_started_tar};
use super::lanes;
use super::{
    BlobSource, ImageSource, Layer, OutputOptions, Written, copy_all, image_tags, layer_size,
};
use crate::error::{Error, Result, Setting};
use crate::image_spec::{
    DockerManifestEntry, ImageConfigBlob, LegacyLayerJson, Repositories, to_bytes,
};
use crate::tarball::{self, Header, Kind, StartedTar, TarStream};

pub(super) fn write(
    source: &dyn ImageSource,
    options: &OutputOptions,
    out: &mut dyn Write,
    scratch: &Path,
) -> Result<Written> {
    if options.docker_legacy {
        return write_with_legacy(source, options, out, scratch);
    }
    let count = source.layer_count();
    let mut layers: Vec<BlobInfo> = Vec::with_capacity(count);
    let mut layer_names = Vec::with_capacity(count);
    let suffix = options.compression.codec().file_suffix();
    // Plain tarballs and existing blobs have a known length: they stream straight in.
    // Tarballs to compress do not: they are compressed side by side into scratch files first.
    let compressed = options.compression != Compression::None;
    let mut spools: Vec<Option<(std::fs::File, BlobInfo)>> = lanes::run(
        count,
        |index| match source.layer(index) {
            Ok(Layer::Tar(tar)) if compressed => tar.tar_len(),
            _ => 0,
        },
        |index| match source.layer(index)? {
            Layer::Tar(tar) if compressed => {
                compress_to_scratch(tar, options.compression, scratch).map(Some)
            }
            _ => Ok(None),
        },
    )?;
    // Plain tarballs stream one after another: the next one's files are read while this one
    // is written, so no layer starts from an empty read buffer.
    let streamed: Vec<bool> = spools.iter().map(Option::is_none).collect();
    std::thread::scope(|scope| -> Result<()> {
        let read_ahead = |index: usize| -> Result<Option<StartedTar<'_>>> {
            Ok(match source.layer(index)? {
                Layer::Tar(tar) if streamed[index] => Some(tar.read_ahead(scope)),
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
                (_, Some((mut file, info)), _) => {
                    let name = format!("layers/{index}.{suffix}");
                    write_entry_header(out, &name, info.size, options.mtime)?;
                    copy_all(&mut file, out)?;
                    layer_names.push(name);
                    info
                }
                (Layer::Tar(tar), None, started) => {
                    let started = started.unwrap_or_else(|| tar.read_ahead(scope));
                    let name = format!("layers/{index}.tar");
                    write_entry_header(out, &name, tar.tar_len(), options.mtime)?;
                    layer_names.push(name);
                    write_started_tar(tar.tar_len(), started, out)?
                }
                (Layer::Blob(blob), None, _) => {
                    let name = format!("layers/{index}.{}", blob.codec().file_suffix());
                    write_entry_header(out, &name, blob.size(), options.mtime)?;
                    layer_names.push(name);
                    blob.copy_to(out)?
                }
            };
            write_padding(out, info.size)?;
            layers.push(info);
        }
        Ok(())
    })?;

    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = sha256_digest(&config);
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    write_file(out, &config_name, &config, options.mtime)?;

    let tags = image_tags(options, &config_digest);
    finish(
        out,
        options,
        config_name,
        layer_names,
        tags,
        config_digest,
        layers,
    )
}

/// Ends an archive of one image: `manifest.json`, then the end-of-archive blocks.
fn finish(
    out: &mut dyn Write,
    options: &OutputOptions,
    config_name: String,
    layer_names: Vec<String>,
    tags: Vec<String>,
    config_digest: String,
    layers: Vec<BlobInfo>,
) -> Result<Written> {
    let manifest = to_bytes(&[DockerManifestEntry {
        config: config_name,
        repo_tags: tags
            .iter()
            .map(|tag| format!("{}:{tag}", options.name))
            .collect(),
        layers: layer_names,
    }]);
    write_file(out, "manifest.json", &manifest, options.mtime)?;
    out.write_all(&tarball::END_OF_ARCHIVE)
        .map_err(write_error)?;
    Ok(Written {
        name: options.name.clone(),
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
    options: &OutputOptions,
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
    let spools: Vec<(std::fs::File, BlobInfo)> = lanes::run(
        count,
        |index| layer_size(source, index),
        |index| match source.layer(index)? {
            Layer::Tar(tar) => compress_to_scratch(tar, options.compression, scratch),
            Layer::Blob(blob) => copy_to_scratch(blob, scratch),
        },
    )?;
    let layers: Vec<BlobInfo> = spools.iter().map(|(_, info)| info.clone()).collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = sha256_digest(&config);
    // Our own config: it parses.
    let parsed: ImageConfigBlob =
        serde_json::from_slice(&config).map_err(|e| Error::value(e.to_string()))?;
    let id_inputs: Vec<&str> = diff_ids.iter().map(String::as_str).collect();
    let ids = legacy_ids(&id_inputs, &config_digest);
    let mtime = options.mtime;
    let mut layer_names = Vec::with_capacity(count);
    for (i, (mut file, info)) in spools.into_iter().enumerate() {
        let id = &ids[i];
        let dir = format!("{id}/");
        tarball::write_header(
            out,
            &Header::archive_member(dir.as_bytes(), Kind::Directory, 0, mtime),
        )
        .map_err(write_error)?;
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
    let tags = image_tags(options, &config_digest);
    let top = ids[count - 1].clone();
    let repositories: Repositories = [(
        options.name.clone(),
        tags.iter().map(|tag| (tag.clone(), top.clone())).collect(),
    )]
    .into_iter()
    .collect();
    write_file(out, "repositories", &to_bytes(&repositories), mtime)?;
    finish(
        out,
        options,
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

/// A blob copied (and verified) into a scratch file.
fn copy_to_scratch(blob: &dyn BlobSource, scratch: &Path) -> Result<(std::fs::File, BlobInfo)> {
    let mut file = tempfile::tempfile_in(scratch)
        .map_err(|e| Error::io("creating a scratch file in", scratch, e))?;
    let info = {
        let mut buffered = BufWriter::with_capacity(1 << 20, &mut file);
        let info = blob.copy_to(&mut buffered)?;
        buffered.flush().map_err(write_error)?;
        info
    };
    file.rewind().map_err(write_error)?;
    Ok((file, info))
}

fn compress_to_scratch(
    tar: &dyn TarStream,
    compression: Compression,
    scratch: &Path,
) -> Result<(std::fs::File, BlobInfo)> {
    let mut file = tempfile::tempfile_in(scratch)
        .map_err(|e| Error::io("creating a scratch file in", scratch, e))?;
    let info = {
        let mut buffered = BufWriter::with_capacity(1 << 20, &mut file);
        let info = write_layer_blob(tar, compression, &mut buffered)?;
        buffered.flush().map_err(write_error)?;
        info
    };
    file.rewind().map_err(write_error)?;
    Ok((file, info))
}

fn write_error(e: std::io::Error) -> Error {
    Error::write("the image", e)
}

pub(super) fn write_entry_header(
    out: &mut dyn Write,
    name: &str,
    size: u64,
    mtime: u64,
) -> Result<()> {
    let header = Header::archive_member(name.as_bytes(), Kind::File, size, mtime);
    tarball::write_header(out, &header).map_err(write_error)
}

pub(super) fn write_padding(out: &mut dyn Write, size: u64) -> Result<()> {
    out.write_all(&[0; tarball::BLOCK as usize][..tarball::padding(size)])
        .map_err(write_error)
}

pub(super) fn write_file(
    out: &mut dyn Write,
    name: &str,
    content: &[u8],
    mtime: u64,
) -> Result<()> {
    write_entry_header(out, name, content.len() as u64, mtime)?;
    out.write_all(content).map_err(write_error)?;
    write_padding(out, content.len() as u64)
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
pub(super) fn write_many(images: &[StoredImage], out: &mut dyn Write, mtime: u64) -> Result<usize> {
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
    out.write_all(&tarball::END_OF_ARCHIVE)
        .map_err(write_error)?;
    Ok(names_by_key.len())
}

/// Two different images under one `name:tag` would make `docker load` keep only the last.
fn check_tags_are_unique(images: &[StoredImage]) -> Result<()> {
    let mut owner: std::collections::HashMap<&str, String> = Default::default();
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
