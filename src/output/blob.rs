//! Layer blobs: a tar stream, optionally compressed, with both digests computed on the way
//! through (the uncompressed one is the config's `diff_id`, the compressed one names the blob).
//! Compression is deterministic whatever the thread count: independent blocks compressed in
//! parallel (see `parallel`), gzip without a name or time.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result, Setting};
use crate::tarball::TarStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    pub const GZIP_DEFAULT_LEVEL: u32 = 6;
    pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

    /// The format this writes, without its level.
    pub fn codec(&self) -> Codec {
        match self {
            Compression::None => Codec::None,
            Compression::Gzip { .. } => Codec::Gzip,
            Compression::Zstd { .. } => Codec::Zstd,
        }
    }

    /// Compression with `codec` at `level`, or at the codec's default level; a level out of the
    /// codec's range (gzip 0-9, zstd 1-22), or a level without compression, is an error.
    pub fn new(codec: Codec, level: Option<i32>) -> Result<Self> {
        let out_of_range = |range: &str, level: i32| {
            Error::value(format!(
                "compression level {level} is out of range for {} ({range})",
                codec.name()
            ))
            .about(Setting::CompressionLevel)
        };
        match (codec, level) {
            (_, None) => Ok(Self::default_for(codec)),
            (Codec::None, Some(_)) => Err(Error::value(
                "a compression level needs gzip or zstd compression",
            )
            .about(Setting::CompressionLevel)),
            (Codec::Gzip, Some(level)) => match u32::try_from(level) {
                Ok(level) if level <= 9 => Ok(Compression::Gzip { level }),
                _ => Err(out_of_range("0-9", level)),
            },
            (Codec::Zstd, Some(level)) if (1..=22).contains(&level) => {
                Ok(Compression::Zstd { level })
            }
            (Codec::Zstd, Some(level)) => Err(out_of_range("1-22", level)),
        }
    }

    /// Compression with `codec` at its default level.
    pub fn default_for(codec: Codec) -> Self {
        match codec {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip {
                level: Self::GZIP_DEFAULT_LEVEL,
            },
            Codec::Zstd => Compression::Zstd {
                level: Self::ZSTD_DEFAULT_LEVEL,
            },
        }
    }
}

/// `sha256:<hex>`
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    digest_name(hasher)
}

/// `sha256:<hex>` of what `hasher` took in.
pub(crate) fn digest_name(hasher: Sha256) -> String {
    format!("sha256:{}", hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = digest_name(self.hasher);
        (self.inner, digest, self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What writing a layer blob tells the image writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Digest of the blob as stored (compressed or not).
    pub digest: String,
    /// Size of the blob as stored.
    pub size: u64,
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
            let mut encoder = super::parallel::gzip(out, level).with_digests();
            tar.write_to(&mut encoder)?;
            encoder.finish_with_digests().map_err(write_error)?.1
        }
        Compression::Zstd { level } => {
            let mut encoder = super::parallel::zstd(out, level).with_digests();
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
    fn levels_are_checked_per_codec() {
        assert_eq!(
            Compression::new(Codec::Gzip, Some(9)).unwrap(),
            Compression::Gzip { level: 9 }
        );
        assert_eq!(
            Compression::new(Codec::Zstd, None).unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            Compression::new(Codec::Gzip, Some(10))
                .unwrap_err()
                .message(),
            "compression level 10 is out of range for gzip (0-9)"
        );
        assert_eq!(
            Compression::new(Codec::Zstd, Some(0))
                .unwrap_err()
                .message(),
            "compression level 0 is out of range for zstd (1-22)"
        );
        assert!(Compression::new(Codec::None, Some(1)).is_err());
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
