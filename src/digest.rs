//! Content digests, as the image formats name blobs: `sha256:<hex>` of some bytes, a writer
//! that hashes what passes through it, what a written blob is known by, and a blob that
//! already exists (a base image's layer), copied as it is and verified. Shared by every
//! stage that checks or names blobs (base, layer, output, diff); knows none of them.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::codec::Codec;
use crate::error::Result;

/// `sha256:<hex>`
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    digest_name(hasher)
}

/// `sha256:<hex>` of what `hasher` took in.
pub fn digest_name(hasher: Sha256) -> String {
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

/// A layer that already exists as a blob (a base image's), copied as it is: same bytes, same
/// digest, verified on the way.
pub trait BlobSource: Sync {
    fn size(&self) -> u64;
    /// Its digests, when known without reading it (a registry may hold it already).
    fn known(&self) -> Option<BlobInfo> {
        None
    }
    /// How the blob is compressed.
    fn codec(&self) -> Codec;
    /// Copies the blob to `out`, checking it, and returns its digests.
    fn copy_to(&self, out: &mut dyn Write) -> Result<BlobInfo>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_name_their_algorithm_and_hash_what_passes() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut hashing = HashingWriter::new(Vec::new());
        hashing.write_all(b"abc").unwrap();
        let (inner, digest, written) = hashing.finish();
        assert_eq!((inner.as_slice(), written), (&b"abc"[..], 3));
        assert_eq!(digest, sha256_digest(b"abc"));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
