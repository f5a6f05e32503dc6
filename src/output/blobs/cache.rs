//! The layer cache: what a layer's blob turned out to be (diff_id, digest, size), keyed by
//! everything that decides its bytes, so that an unchanged layer is never read or compressed
//! again: a push asks the registry about the digest instead.
//!
//! The key ([`CacheKey`]) comes from the image source (for a store layer: its store paths with
//! their narHash, the layer's mtime, uid and gid, and our format version; for a decompressed
//! base layer: its diff_id) and is joined here with the compression and its level. Each entry is one
//! small JSON file named by the key's hash, written atomically (a temporary file renamed), so
//! builds sharing a cache never see half an entry.
//!
//! An entry also holds the layer's exact tarball length and the digest of its headers (names,
//! kinds, modes, owners, sizes, link targets), which the sizing walk reads anyway. It is
//! trusted only when its key, compression, length and header digest all match the layer as
//! walked now; anything else (no entry, one that does not parse, another layer's, one written
//! before the store changed under the same key) is a miss, and the layer made is written over
//! it. What this does not catch, and cannot without reading the layer, is an entry written
//! on purpose with this layer's key, length and headers but another blob's digests: the
//! cache directory is trusted as the store is. `--verify-cache` makes every layer the cache
//! knows again and compares; a layout rebuild (`oci:DIR`) checks a reused blob's length and
//! diff_id by decompressing it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::super::compress::Compression;
use crate::digest::{BlobInfo, Digest, hex};
use crate::error::{Error, Result, Setting};

/// What names a tarball layer's bytes for the cache (everything that decides them but the
/// compression, which the cache adds), and its shape as walked now, to check entries by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    key: String,
    shape: Shape,
}

/// A tarball layer's exact length and, where it was walked, the digest of its headers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    pub tar_len: u64,
    pub headers: Option<String>,
}

impl CacheKey {
    pub fn new(key: impl Into<String>, shape: Shape) -> Self {
        CacheKey {
            key: key.into(),
            shape,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// Bumped whenever our layer bytes change for the same inputs.
pub const FORMAT_VERSION: u32 = 2;
/// An entry is a few hundred bytes; a larger file is not one.
const MAX_ENTRY: u64 = 64 << 10;

/// A cache directory.
#[derive(Clone, Debug)]
pub struct LayerCache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    key: String,
    compression: String,
    diff_id: Digest,
    digest: Digest,
    size: u64,
    shape: Shape,
}

impl LayerCache {
    /// The cache in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Self> {
        let entries = dir.join(format!("layers-v{FORMAT_VERSION}"));
        std::fs::create_dir_all(&entries).map_err(|e| {
            Error::io("creating the cache directory", &entries, e).about(Setting::CacheDir)
        })?;
        Ok(LayerCache { dir: entries })
    }

    /// `$XDG_CACHE_HOME/layered-gen`, else `~/.cache/layered-gen`.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(cache) = var("XDG_CACHE_HOME") {
            return Some(Path::new(&cache).join("layered-gen"));
        }
        var("HOME").map(|home| Path::new(&home).join(".cache/layered-gen"))
    }

    fn entry_path(&self, key: &CacheKey, compression: Compression) -> PathBuf {
        let name = hex(&Sha256::digest(format!(
            "{}\n{}",
            key.key,
            describe(compression)
        )));
        self.dir.join(format!("{name}.json"))
    }

    /// What the layer with `key`, compressed so, was last time; None when unknown or the entry
    /// is damaged.
    pub fn get(&self, key: &CacheKey, compression: Compression) -> Option<BlobInfo> {
        let path = self.entry_path(key, compression);
        // Only a regular file is an entry (a FIFO planted there must not block the build).
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return None;
        }
        let bytes = crate::json_file::read_limited(&path, MAX_ENTRY).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        // The digests are well formed, or the entry did not parse.
        let sound = entry.key == key.key
            && entry.shape == key.shape
            && entry.compression == describe(compression);
        sound.then_some(BlobInfo {
            diff_id: entry.diff_id,
            digest: entry.digest,
            size: entry.size,
        })
    }

    /// Records a layer. A cache that cannot be written costs speed, not correctness: the
    /// failure is returned for the caller to mention, never to stop the image.
    pub fn put(&self, key: &CacheKey, compression: Compression, info: &BlobInfo) -> Result<()> {
        let entry = Entry {
            key: key.key.clone(),
            shape: key.shape.clone(),
            compression: describe(compression),
            diff_id: info.diff_id.clone(),
            digest: info.digest.clone(),
            size: info.size,
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| Error::value(e.to_string()))?;
        let path = self.entry_path(key, compression);
        let mut temp = tempfile::Builder::new()
            .prefix(".entry-")
            .tempfile_in(&self.dir)
            .map_err(|e| Error::io("writing the cache entry in", &self.dir, e))?;
        std::io::Write::write_all(temp.as_file_mut(), &bytes)
            .map_err(|e| Error::io("writing the cache entry", &path, e))?;
        temp.persist(&path)
            .map_err(|e| Error::io("writing the cache entry", &path, e.error))?;
        Ok(())
    }
}

fn describe(compression: Compression) -> String {
    match compression {
        Compression::None => "none".into(),
        Compression::Gzip { level } => format!("gzip-{level}"),
        Compression::Zstd { level } => format!("zstd-{level}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(tar_len: u64) -> Shape {
        Shape {
            tar_len,
            headers: Some("sha256:headers".into()),
        }
    }

    fn k() -> CacheKey {
        CacheKey::new("k", shape(10240))
    }

    fn info(n: u8) -> BlobInfo {
        BlobInfo {
            diff_id: crate::digest::sha256_digest(&[n]),
            digest: crate::digest::sha256_digest(&[n + 1]),
            size: u64::from(n) * 1000,
        }
    }

    #[test]
    fn entries_are_found_by_key_and_compression() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let gzip = Compression::Gzip { level: 6 };
        assert_eq!(cache.get(&k(), gzip), None);
        cache.put(&k(), gzip, &info(1)).unwrap();
        assert_eq!(cache.get(&k(), gzip), Some(info(1)));
        assert_eq!(cache.get(&k(), Compression::Gzip { level: 9 }), None);
        assert_eq!(cache.get(&CacheKey::new("other", shape(10240)), gzip), None);
        // A second build overwrites atomically.
        cache.put(&k(), gzip, &info(2)).unwrap();
        assert_eq!(cache.get(&k(), gzip), Some(info(2)));
        // Another process sharing the directory sees the same.
        let again = LayerCache::open(dir.path()).unwrap();
        assert_eq!(again.get(&k(), gzip), Some(info(2)));
    }

    #[test]
    fn an_entry_for_another_shape_is_a_miss_and_is_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let gzip = Compression::Gzip { level: 6 };
        cache.put(&k(), gzip, &info(1)).unwrap();
        let longer = CacheKey::new("k", shape(10752));
        assert_eq!(cache.get(&longer, gzip), None, "another tar length");
        let other_headers = CacheKey::new(
            "k",
            Shape {
                tar_len: 10240,
                headers: Some("sha256:other".into()),
            },
        );
        assert_eq!(cache.get(&other_headers, gzip), None, "other headers");
        cache.put(&longer, gzip, &info(2)).unwrap();
        assert_eq!(cache.get(&longer, gzip), Some(info(2)));
        assert_eq!(cache.get(&k(), gzip), None, "the entry was written over");
    }

    #[test]
    fn damaged_or_foreign_entries_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(dir.path()).unwrap();
        let zstd = Compression::Zstd { level: 3 };
        cache.put(&k(), zstd, &info(3)).unwrap();
        let path = cache.entry_path(&k(), zstd);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert_eq!(cache.get(&k(), zstd), None, "truncated");
        std::fs::write(&path, text.replace("\"key\":\"k\"", "\"key\":\"x\"")).unwrap();
        assert_eq!(cache.get(&k(), zstd), None, "another key's entry");
        std::fs::write(&path, text.replace("sha256:", "md5:")).unwrap();
        assert_eq!(cache.get(&k(), zstd), None, "not a digest");
        std::fs::write(&path, vec![b' '; 100 << 10]).unwrap();
        assert_eq!(cache.get(&k(), zstd), None, "too large");
    }
}
