//! How a layer becomes a blob: the one place that decides, for every destination, whether a
//! layer is made (its tarball streamed, compressed and hashed), taken as it is (a base image's
//! blob, copied and verified), or not made at all (the cache or the destination knows it), and
//! that runs the layers side by side. The image writers give a [`Placement`] (into a scratch
//! file for an archive, into a layout's blob directory, up to a registry) and only encode
//! their format around the blobs that come back, in index order.
//!
//! # Thread model
//!
//! Everything that costs CPU runs on one pool, rayon's global one, sized by `--threads` (or
//! `RAYON_NUM_THREADS`, or `NIX_BUILD_CORES`); its threads are named `lg-worker`.
//! - **Lanes** (`lanes`): up to one layer per pool thread is in progress at once, each on a
//!   thread of its own (`lg-layer`; the calling thread is a lane too), the largest layers
//!   first so that a huge one does not start last and run alone.
//! - **Reading**: a lane's tarball is read ahead by a reader thread (`lg-read`, see
//!   `crate::layer`); plain layers' file reads are also spread over the pool in 1 MiB batches,
//!   put back in order by the lane.
//! - **Compressing and hashing** (`super::compress::parallel`): a lane only cuts its stream
//!   into blocks; blocks are compressed as pool tasks, and both digests (diff_id and blob
//!   digest) are taken by a chain of two ordered stages on the pool.
//! - **Writing**: a stream (an archive on stdout or in a file) goes through one writer thread
//!   (`lg-out`, `super::sink`), so the copy into the kernel overlaps the work.
//!
//! Memory is bounded whatever the layers' sizes: per lane, the reader's buffers and one batch;
//! across the process, the compressors' shared window of a few MiB per pool thread.
//!
//! The output never depends on `--threads`: compression cuts blocks by size, never by thread
//! count; results are put in place by index, not in the order lanes finish; and the documents
//! (config, manifest, index) are written once every digest is known.
//!
//! # The cache
//!
//! A layer made from a tarball with a [`CacheKey`] is recorded in the [`LayerCache`] once made.
//! Next time its digests are known before it is read, and the placement may use them (a
//! registry that holds the blob, a layout being replaced that has it) instead of making it;
//! with `verify_cache` such a layer is made again and compared first.

pub mod cache;
mod lanes;

use std::io::{self, Write};

use super::compress::{Compression, parallel};
use crate::codec::Codec;
pub use crate::digest::BlobSource;
use crate::digest::{BlobInfo, HashingWriter};
use crate::error::{Error, ErrorKind, Result, Setting};
use crate::tarball::TarStream;

pub use cache::{CacheKey, LayerCache, Shape};

/// Where a layer's bytes come from.
#[derive(Clone, Copy)]
pub enum LayerSource<'a> {
    /// A tarball, to compress as the destination says.
    Tar(&'a dyn TarStream),
    /// A blob, to copy unchanged.
    Blob(&'a dyn BlobSource),
}

impl LayerSource<'_> {
    /// How many bytes it moves: the tarball's or the blob's length.
    pub fn size(&self) -> u64 {
        match self {
            LayerSource::Tar(tar) => tar.tar_len(),
            LayerSource::Blob(blob) => blob.size(),
        }
    }

    /// How its blob is compressed, made with `compression`.
    pub fn codec(&self, compression: Compression) -> Codec {
        match self {
            LayerSource::Tar(_) => compression.codec(),
            LayerSource::Blob(blob) => blob.codec(),
        }
    }

    /// Writes its blob into `out` (the tarball compressed with `compression`, or the blob as it
    /// is) and returns its digests.
    pub fn write_blob(&self, compression: Compression, out: &mut dyn Write) -> Result<BlobInfo> {
        match self {
            LayerSource::Tar(tar) => write_layer_blob(*tar, compression, out),
            LayerSource::Blob(blob) => blob.copy_to(out),
        }
    }
}

/// An image's layers, as the output stage takes them from the rest of the pipeline.
pub trait LayerSet: Sync {
    fn layer_count(&self) -> usize;
    /// Layer `index`, ready to stream.
    fn layer(&self, index: usize) -> Result<LayerSource<'_>>;
    /// A key naming everything that decides a tarball layer's bytes, for the layer cache; None
    /// when the layer cannot be named without reading it.
    fn layer_key(&self, _index: usize) -> Option<CacheKey> {
        None
    }
    /// Layer `index` was not read: the destination holds it already (for progress).
    fn skipped(&self, _index: usize) {}
}

/// How the blobs are made.
#[derive(Clone, Copy)]
pub struct Making<'a> {
    /// Of layers made from tarballs.
    pub compression: Compression,
    pub cache: Option<&'a LayerCache>,
    /// Make again every layer the cache knows, and compare.
    pub verify_cache: bool,
}

/// One layer to place, as a [`Placement`] is given it.
pub struct Layer<'a> {
    pub index: usize,
    pub source: LayerSource<'a>,
    /// Its digests, when known without making it: a blob's own, or the cache's (checked
    /// with `verify_cache`; otherwise a placement that trusts them must check what it can).
    pub known: Option<BlobInfo>,
    compression: Compression,
}

impl Layer<'_> {
    /// Makes the blob into `out`; returns its digests.
    pub fn write_blob(&self, out: &mut dyn Write) -> Result<BlobInfo> {
        self.source.write_blob(self.compression, out)
    }

    /// The blob's compression.
    pub fn codec(&self) -> Codec {
        self.source.codec(self.compression)
    }
}

/// What a placement did with a layer.
pub struct Placed<T> {
    pub info: BlobInfo,
    pub value: T,
    /// Whether the layer was read (made) to place it.
    pub made: bool,
}

/// Where blobs go: one implementation per kind of destination.
pub trait Placement: Sync {
    type Value: Send;
    /// Whether this placement takes layer `index` at all (others come back as None).
    fn wants(&self, _layer: &LayerSource<'_>) -> bool {
        true
    }
    /// Before any layer is placed: what is known of each, to look up at once (a registry's
    /// HEAD requests).
    fn look_up(&mut self, _known: &[Option<BlobInfo>]) -> Result<()> {
        Ok(())
    }
    /// Places one layer: makes it (`layer.write_blob`) or, from what is known of it, does
    /// not need to.
    fn place(&self, layer: &Layer<'_>) -> Result<Placed<Self::Value>>;
}

/// Places every layer `placement` wants, side by side (see the module doc); the results in
/// index order. Layers made from tarballs are recorded in the cache.
pub fn place_all<P: Placement>(
    layers: &dyn LayerSet,
    making: Making<'_>,
    placement: &mut P,
) -> Result<Vec<Option<Placed<P::Value>>>> {
    let count = layers.layer_count();
    let mut known = Vec::with_capacity(count);
    let mut wanted = Vec::with_capacity(count);
    for index in 0..count {
        let source = layers.layer(index)?;
        wanted.push(placement.wants(&source));
        known.push(match source {
            _ if !wanted[index] => None,
            LayerSource::Blob(blob) => blob.known(),
            LayerSource::Tar(_) => cached(layers, making, index),
        });
    }
    placement.look_up(&known)?;
    let placement = &*placement;
    lanes::run(
        count,
        |index| match layers.layer(index) {
            Ok(source) if wanted[index] => source.size(),
            _ => 0,
        },
        |index| {
            if !wanted[index] {
                return Ok(None);
            }
            let source = layers.layer(index)?;
            let from_cache = matches!(source, LayerSource::Tar(_)) && known[index].is_some();
            if from_cache && making.verify_cache {
                verify_cached(index, source, making.compression, known[index].as_ref())?;
            }
            let layer = Layer {
                index,
                source,
                known: known[index].clone(),
                compression: making.compression,
            };
            let placed = placement.place(&layer)?;
            if placed.made {
                remember(layers, making, index, source, &placed.info);
            } else if !(from_cache && making.verify_cache) {
                layers.skipped(index);
            }
            Ok(Some(placed))
        },
    )
}

/// What the cache knows of tarball layer `index`.
fn cached(layers: &dyn LayerSet, making: Making<'_>, index: usize) -> Option<BlobInfo> {
    let (cache, key) = (making.cache?, layers.layer_key(index)?);
    cache.get(&key, making.compression)
}

/// Records a tarball layer just made in the cache (a failure costs time later, nothing else).
fn remember(
    layers: &dyn LayerSet,
    making: Making<'_>,
    index: usize,
    source: LayerSource<'_>,
    info: &BlobInfo,
) {
    if let (LayerSource::Tar(_), Some(cache), Some(key)) =
        (source, making.cache, layers.layer_key(index))
    {
        let _ = cache.put(&key, making.compression, info);
    }
}

/// `verify_cache`: the layer is made again (to nowhere) and must be what the cache says.
fn verify_cached(
    index: usize,
    source: LayerSource<'_>,
    compression: Compression,
    known: Option<&BlobInfo>,
) -> Result<()> {
    let (LayerSource::Tar(tar), Some(known)) = (source, known) else {
        return Ok(());
    };
    let actual = write_layer_blob(tar, compression, &mut io::sink())?;
    if &actual != known {
        return Err(Error::value(format!(
            "layer {index}: the layer cache says {} but the layer is {}: the cache entry is \
             wrong; remove the cache directory",
            known.digest, actual.digest
        ))
        .about(Setting::CacheDir));
    }
    Ok(())
}

fn write_error(e: io::Error) -> Error {
    Error::write("the image", e)
}

/// Writes `tar` to `out`, compressed as asked, and returns its digests. Compressed, both
/// digests are taken on the worker pool beside the compression (see `parallel`), so the thread
/// streaming the tarball only moves bytes.
pub fn write_layer_blob(
    tar: &dyn TarStream,
    compression: Compression,
    out: &mut dyn Write,
) -> Result<BlobInfo> {
    let digests = match compression {
        Compression::None => {
            return write_started_tar(tar.tar_len(), |out| tar.write_to(out), out);
        }
        Compression::Gzip { level } => {
            let mut encoder = parallel::gzip(out, level).with_digests();
            tar.write_to(&mut encoder)?;
            encoder.finish_with_digests().map_err(write_error)?.1
        }
        Compression::Zstd { level } => {
            let mut encoder = parallel::zstd(out, level).with_digests();
            tar.write_to(&mut encoder)?;
            encoder.finish_with_digests().map_err(write_error)?.1
        }
    };
    check_length(tar.tar_len(), digests.input_len)?;
    Ok(BlobInfo {
        diff_id: digests.input,
        digest: digests.output,
        size: digests.output_len,
    })
}

/// Writes a plain tarball of `tar_len` bytes to `out` (`write`: `TarStream::write_to`, or a
/// tarball whose reading has started, see `TarStream::read_ahead`), and returns its digests.
pub fn write_started_tar(
    tar_len: u64,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
    out: &mut dyn Write,
) -> Result<BlobInfo> {
    let mut hashing = HashingWriter::new(out);
    write(&mut hashing)?;
    let (_, digest, written) = hashing.finish();
    check_length(tar_len, written)?;
    Ok(BlobInfo {
        diff_id: digest.clone(),
        digest,
        size: written,
    })
}

/// A layer must write exactly the length its metadata promised (the tar header of a streamed
/// archive was already written with it). Layers check each file as they read it; this is the
/// last guard for any other stream.
fn check_length(expected: u64, written: u64) -> Result<()> {
    if written == expected {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Value {
            message: format!(
                "the layer's tarball is {written} bytes where {} were expected: its files changed \
                 while the image was written",
                expected
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_digest;

    struct Bytes(Vec<u8>);
    impl TarStream for Bytes {
        fn tar_len(&self) -> u64 {
            self.0.len() as u64
        }
        fn write_to(&self, out: &mut dyn Write) -> Result<()> {
            out.write_all(&self.0).map_err(write_error)
        }
    }

    #[test]
    fn digests_of_plain_and_compressed_blobs() {
        let tar = Bytes(b"hello world".repeat(1000));
        let expected_diff = sha256_digest(&tar.0);
        for compression in [
            Compression::None,
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let mut out = Vec::new();
            let info = write_layer_blob(&tar, compression, &mut out).unwrap();
            assert_eq!(info.diff_id, expected_diff);
            assert_eq!(info.digest, sha256_digest(&out));
            assert_eq!(info.size, out.len() as u64);
            let mut again = Vec::new();
            write_layer_blob(&tar, compression, &mut again).unwrap();
            assert_eq!(out, again, "{compression:?} is deterministic");
        }
    }

    #[test]
    fn compressed_bytes_do_not_depend_on_the_thread_count() {
        // Large enough for several zstd jobs and many gzip blocks.
        let mut x = 7u64;
        let data: Vec<u8> = (0..24 << 20)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 5 == 0 {
                    x as u8
                } else {
                    b"nix store "[i % 10]
                }
            })
            .collect();
        let tar = Bytes(data);
        for compression in [
            Compression::Gzip { level: 6 },
            Compression::Zstd { level: 3 },
        ] {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut out = Vec::new();
                    write_layer_blob(&tar, compression, &mut out).unwrap();
                    out
                })
            };
            assert!(
                run(1) == run(4),
                "{compression:?} output changed with the thread count"
            );
        }
    }

    #[test]
    fn gzip_header_has_no_name_or_time() {
        let mut out = Vec::new();
        write_layer_blob(
            &Bytes(vec![1, 2, 3]),
            Compression::Gzip { level: 6 },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..4], &[0x1f, 0x8b, 8, 0], "no FNAME flag");
        assert_eq!(&out[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(out[9], 255, "OS unknown");
    }
}
