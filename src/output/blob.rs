//! Layer blobs: a tar stream, optionally compressed, with both digests computed on the way
//! through (the uncompressed one is the config's `diff_id`, the compressed one names the blob).
//! Compression is deterministic: gzip without a name or time, zstd on one thread per layer.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
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

    /// The OCI media type of a layer compressed this way.
    pub fn oci_media_type(&self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn file_suffix(&self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip { .. } => "tar.gz",
            Compression::Zstd { .. } => "tar.zst",
        }
    }
}

/// `sha256:<hex>`
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
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
        let digest = format!("sha256:{}", hex(&self.hasher.finalize()));
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
    Error::new(format!("writing the image: {e}"))
}

/// Writes `tar` to `out`, compressed as asked, and returns its digests.
pub fn write_layer_blob(
    tar: &dyn TarStream,
    compression: Compression,
    out: &mut dyn Write,
) -> Result<BlobInfo> {
    let stored = HashingWriter::new(out);
    let (stored, diff_id, length) = match compression {
        Compression::None => {
            let mut hashing = stored;
            tar.write_to(&mut hashing)?;
            let (_, digest, written) = hashing.finish();
            return check_length(tar, written).map(|()| BlobInfo {
                diff_id: digest.clone(),
                digest,
                size: written,
            });
        }
        Compression::Gzip { level } => {
            let encoder = super::parallel::gzip(stored, level);
            let mut plain = HashingWriter::new(encoder);
            tar.write_to(&mut plain)?;
            let (encoder, diff_id, length) = plain.finish();
            (encoder.finish().map_err(write_error)?, diff_id, length)
        }
        Compression::Zstd { level } => {
            let encoder = super::parallel::zstd(stored, level);
            let mut plain = HashingWriter::new(encoder);
            tar.write_to(&mut plain)?;
            let (encoder, diff_id, length) = plain.finish();
            (encoder.finish().map_err(write_error)?, diff_id, length)
        }
    };
    check_length(tar, length)?;
    let (_, digest, size) = stored.finish();
    Ok(BlobInfo {
        diff_id,
        digest,
        size,
    })
}

/// A layer must write exactly the length its metadata promised (the tar header of a streamed
/// archive was already written with it).
fn check_length(tar: &dyn TarStream, written: u64) -> Result<()> {
    if written == tar.tar_len() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "a layer wrote {written} bytes where {} were expected; did the store change while \
             the image was written?",
            tar.tar_len()
        )))
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
