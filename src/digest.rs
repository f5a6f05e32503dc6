//! Content digests, as the image formats name blobs: `sha256:<hex>` of some bytes, a writer
//! that hashes what passes through it, what a written blob is known by, and a blob that
//! already exists (a base image's layer), copied as it is and verified. Shared by every
//! stage that checks or names blobs (base, layer, output, diff); knows none of them.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::codec::Codec;
use crate::error::Result;

/// A content digest as the image formats write it: `sha256:` with 64 lower-case hex digits
/// (or `sha512:` with 128, which base images may use). Made only by hashing or by
/// [`Digest::parse`], so one that exists is well formed and can become a file name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of `text` if it is one (see the type), else None.
    pub fn parse(text: &str) -> Option<Self> {
        let (algorithm, hex) = text.split_once(':')?;
        let length = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return None,
        };
        let lower_hex = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (hex.len() == length && lower_hex).then(|| Digest(text.to_string()))
    }

    /// `sha256:<hex>` of what `hasher` took in.
    pub fn of_hasher(hasher: Sha256) -> Self {
        Digest(format!("sha256:{}", hex(&hasher.finalize())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex digits alone: the blob's file name in a layout.
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, hex)| hex)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A digest reads as its text (`sha256:…`) wherever text is wanted.
impl std::ops::Deref for Digest {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{} is not a digest (sha256:<64 hex digits>)",
                crate::error::quoted(&text)
            ))
        })
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    Digest::of_hasher(hasher)
}

/// `sha256:<hex>` of what `hasher` took in.
pub fn digest_name(hasher: Sha256) -> Digest {
    Digest::of_hasher(hasher)
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
    pub fn finish(self) -> (W, Digest, u64) {
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
    pub diff_id: Digest,
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
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
        let digest = sha256_digest(b"abc");
        assert_eq!(Digest::parse(digest.as_str()), Some(digest.clone()));
        assert_eq!(digest.hex().len(), 64);
        for bad in [
            "sha256:ABC",
            "md5:00",
            "sha256:../../etc",
            "sha256:",
            "sha256",
        ] {
            assert_eq!(Digest::parse(bad), None, "{bad}");
        }
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }
}
