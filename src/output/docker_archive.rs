//! The docker-archive format (`docker save`, `docker load`): one tar holding each layer as a file,
//! the config as `<digest>.json` and a `manifest.json` that ties them to a name.
//!
//! It is written in one pass, also to a pipe: a layer's length is known from metadata, so its
//! entry header goes first and the layer streams behind it while its digest is computed; the
//! config and `manifest.json`, which need the digests, come last. Layer files are named by
//! position (`layers/3.tar`) since their digests are not known when their headers are written.
//! Compressed layers have no length up front: they are compressed side by side into scratch
//! files first, then copied in order.

use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use rayon::prelude::*;

use super::blob::{BlobInfo, Compression, sha256_digest, write_layer_blob};
use super::{ImageSource, Layer, OutputOptions, Written, content_tag, copy_all};
use crate::error::{Error, Result};
use crate::image_spec::{DockerManifestEntry, to_bytes};
use crate::tarball::{self, Header, Kind, TarStream};

pub(super) fn write(
    source: &dyn ImageSource,
    options: &OutputOptions,
    out: &mut dyn Write,
    scratch: &Path,
) -> Result<Written> {
    let count = source.layer_count();
    let mut layers: Vec<BlobInfo> = Vec::with_capacity(count);
    let mut layer_names = Vec::with_capacity(count);
    let suffix = options.compression.codec().file_suffix();
    // Plain tarballs and existing blobs have a known length: they stream straight in.
    // Tarballs to compress do not: they are compressed side by side into scratch files first.
    let mut spools: Vec<Option<(std::fs::File, BlobInfo)>> = (0..count)
        .into_par_iter()
        .map(|index| match source.layer(index)? {
            Layer::Tar(tar) if options.compression != Compression::None => {
                compress_to_scratch(tar, options.compression, scratch).map(Some)
            }
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    for (index, spool) in spools.iter_mut().enumerate() {
        let info = match (source.layer(index)?, spool.take()) {
            (_, Some((mut file, info))) => {
                let name = format!("layers/{index}.{suffix}");
                write_entry_header(out, &name, info.size, options.mtime)?;
                copy_all(&mut file, out)?;
                layer_names.push(name);
                info
            }
            (Layer::Tar(tar), None) => {
                let name = format!("layers/{index}.tar");
                write_entry_header(out, &name, tar.tar_len(), options.mtime)?;
                layer_names.push(name);
                write_layer_blob(tar, Compression::None, out)?
            }
            (Layer::Blob(blob), None) => {
                let name = format!("layers/{index}.{}", blob.codec().file_suffix());
                write_entry_header(out, &name, blob.size(), options.mtime)?;
                layer_names.push(name);
                blob.copy_to(out)?
            }
        };
        write_padding(out, info.size)?;
        layers.push(info);
    }

    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = sha256_digest(&config);
    let config_name = format!("{}.json", config_digest.trim_start_matches("sha256:"));
    write_file(out, &config_name, &config, options.mtime)?;

    let tag = options
        .tag
        .clone()
        .unwrap_or_else(|| content_tag(&config_digest));
    let manifest = to_bytes(&[DockerManifestEntry {
        config: config_name,
        repo_tags: vec![format!("{}:{tag}", options.name)],
        layers: layer_names,
    }]);
    write_file(out, "manifest.json", &manifest, options.mtime)?;
    out.write_all(&tarball::END_OF_ARCHIVE)
        .map_err(write_error)?;
    Ok(Written {
        name: options.name.clone(),
        tag,
        config_digest,
        layers,
    })
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
