//! Where a base image's files are: a directory (an OCI layout) or a tar archive read in place.
//! An archive is indexed once by walking its headers and seeking past contents; a file is then
//! read straight from its offset, so nothing is unpacked.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::error::{Error, Result, shown, shown_path};

/// JSON files (manifests, configs) are small; refuse to load anything larger into memory.
const MAX_JSON: u64 = 16 << 20;

/// An archive compressed as a whole is decompressed into a scratch file of at most this many
/// times its compressed size (plus [`DECOMPRESSED_SLACK`]): image tarballs compress a few
/// times, a bomb thousands.
const MAX_EXPANSION: u64 = 100;
const DECOMPRESSED_SLACK: u64 = 64 << 20;

pub(super) enum BlobStore {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        file: File,
        /// name → (offset of the content, size)
        entries: HashMap<String, (u64, u64)>,
        /// name → the name it links to (`docker save` links layers shared by two images)
        links: HashMap<String, String>,
    },
}

impl BlobStore {
    pub(super) fn dir(path: &Path) -> Self {
        BlobStore::Dir(path.to_path_buf())
    }

    /// Indexes a tar archive; Err when the file is not a tar archive. An archive compressed as
    /// a whole (dockerTools' and our `compressor`) is decompressed once into an unnamed scratch
    /// file, since its members cannot be reached in place.
    pub(super) fn archive(path: &Path, scratch: &Path) -> Result<Self> {
        let file = decompressed(path, scratch)?;
        let not_tar = |why: String| {
            Error::input(
                shown_path(path),
                format!("not a docker-archive, legacy docker image or OCI archive ({why})"),
            )
        };
        let mut archive = tar::Archive::new(
            file.try_clone()
                .map_err(|e| Error::io("opening", path, e))?,
        );
        let mut entries = HashMap::new();
        let mut links = HashMap::new();
        for entry in archive
            .entries_with_seek()
            .map_err(|e| not_tar(e.to_string()))?
        {
            let entry = entry.map_err(|e| not_tar(e.to_string()))?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            let name = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                // Symlink targets are relative to the link's directory, hardlinks to the root.
                let target = if kind.is_symlink() {
                    resolve(&name, &target)
                } else {
                    normalise(&target)
                };
                links.insert(name, target);
            } else {
                entries.insert(name, (entry.raw_file_position(), entry.size()));
            }
        }
        if entries.is_empty() {
            return Err(not_tar("it holds no files".to_string()));
        }
        Ok(BlobStore::Archive {
            path: path.to_path_buf(),
            file,
            entries,
            links,
        })
    }

    pub(super) fn describe(&self) -> String {
        match self {
            BlobStore::Dir(path) | BlobStore::Archive { path, .. } => path.display().to_string(),
        }
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        match self {
            BlobStore::Dir(dir) => dir.join(name).is_file(),
            BlobStore::Archive { .. } => self.locate(name).is_some(),
        }
    }

    /// Opens a file: a reader over exactly its bytes, and its size.
    pub(super) fn open(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match self {
            BlobStore::Dir(dir) => {
                let path = dir.join(name);
                let file = open_regular(&path)?;
                let size = file
                    .metadata()
                    .map_err(|e| Error::io("reading", &path, e))?
                    .len();
                Ok((Box::new(file), size))
            }
            BlobStore::Archive { path, file, .. } => {
                let (offset, size) = self.locate(name).ok_or_else(|| {
                    Error::input(
                        shown_path(path),
                        format!("there is no {} in the archive", shown(name)),
                    )
                })?;
                // A clone shares the file's offset with every other: positioned reads keep
                // members read side by side (layers written in parallel) apart.
                let file = file
                    .try_clone()
                    .map_err(|e| Error::io("reading", path, e))?;
                let member = Member {
                    file,
                    at: offset,
                    end: offset.saturating_add(size),
                };
                Ok((Box::new(member), size))
            }
        }
    }

    /// Where a member's content is, following links (a few hops at most).
    fn locate(&self, name: &str) -> Option<(u64, u64)> {
        let BlobStore::Archive { entries, links, .. } = self else {
            return None;
        };
        let mut name = normalise(name);
        for _ in 0..8 {
            if let Some(&found) = entries.get(&name) {
                return Some(found);
            }
            name = links.get(&name)?.clone();
        }
        None
    }

    /// Reads a small file (JSON) whole.
    pub(super) fn read(&self, name: &str) -> Result<Vec<u8>> {
        let (mut reader, size) = self.open(name)?;
        if size > MAX_JSON {
            return Err(Error::input(
                shown(&self.describe()),
                format!(
                    "{} is {size} bytes, too large for a manifest or config",
                    shown(name)
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader.read_to_end(&mut bytes).map_err(|e| {
            Error::input(
                shown(&self.describe()),
                format!("reading {}: {e}", shown(name)),
            )
        })?;
        Ok(bytes)
    }

    /// Reads and parses a JSON document; errors name the member, its line and JSON path.
    pub(super) fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        Ok(self.json_and_bytes(name)?.0)
    }

    /// [`BlobStore::json`], and the bytes it was parsed from.
    pub(super) fn json_and_bytes<T: DeserializeOwned>(&self, name: &str) -> Result<(T, Vec<u8>)> {
        let member = format!("{}: {name}", self.describe());
        let bytes = self.read(name)?;
        Ok((crate::json_file::parse_typed(&member, &bytes)?, bytes))
    }
}

/// A member of an archive, read with positioned reads.
struct Member {
    file: File,
    at: u64,
    end: u64,
}

impl Read for Member {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = usize::try_from(self.end - self.at).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += got as u64;
        Ok(got)
    }
}

/// Opens a file of a layout directory for reading: never through a symlink (which could lead
/// out of the layout), never blocking (a FIFO or device opens at once, and is then refused by
/// its type, checked on the open descriptor).
pub(super) fn open_regular(path: &Path) -> Result<File> {
    open_regular_in(path, "a layout")
}

/// Opens a file of `place` (a layout, a layer directory) for reading: a regular file, never
/// through a symlink, never blocking on a FIFO.
pub(super) fn open_regular_in(path: &Path, place: &str) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::input(
                shown_path(path),
                format!("it is a symlink; {place}'s files must be regular files inside it"),
            ),
            _ => Error::io("opening", path, e),
        })?;
    let meta = file.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(Error::input(
            shown_path(path),
            format!(
                "it is not a regular file (a FIFO, device, socket or directory); {place}'s \
                 files are regular files"
            ),
        ));
    }
    Ok(file)
}

/// The archive as a seekable file: the file itself, or its content decompressed into an
/// unnamed scratch file in `scratch`.
fn decompressed(path: &Path, scratch: &Path) -> Result<File> {
    let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let codec = Codec::sniff_reader(&mut file).map_err(|e| Error::io("reading", path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("reading", path, e))?;
    if codec == Codec::None {
        return Ok(file);
    }
    let reader = codec
        .decoding_reader(file)
        .map_err(|e| Error::io("decompressing", path, e))?;
    let compressed = file_len(path)?;
    let cap = compressed
        .saturating_mul(MAX_EXPANSION)
        .saturating_add(DECOMPRESSED_SLACK);
    let mut spool = tempfile::tempfile_in(scratch)
        .map_err(|e| Error::io("creating a scratch file in", scratch, e))?;
    let written = std::io::copy(&mut reader.take(cap + 1), &mut spool)
        .map_err(|e| Error::io("decompressing", path, e))?;
    if written > cap {
        return Err(Error::input(
            shown_path(path),
            format!(
                "it decompresses to more than {cap} bytes, {MAX_EXPANSION} times its \
                 {compressed} compressed bytes (and {DECOMPRESSED_SLACK} more): not an image \
                 archive"
            ),
        ));
    }
    spool
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("reading back", path, e))?;
    Ok(spool)
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io("reading", path, e))?
        .len())
}

/// The member a symlink at `link` pointing to `target` names.
fn resolve(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link.split('/').collect()
    };
    parts.pop(); // the link's own name
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Archive member names without `./` or leading slashes.
fn normalise(name: &str) -> String {
    let mut name = name.trim_start_matches('/');
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_resolve_from_the_link_directory() {
        assert_eq!(resolve("b/layer.tar", "../a/layer.tar"), "a/layer.tar");
        assert_eq!(resolve("layer.tar", "./x/y"), "x/y");
        assert_eq!(resolve("a/b/c", "/d"), "d");
        assert_eq!(normalise("./a/./b"), "a/./b");
        assert_eq!(normalise("/x"), "x");
    }

    /// Members read in turns (as layers written side by side read them) each get their own
    /// bytes: the archive's file offset is shared by its clones, so reads must not use it.
    #[test]
    fn members_read_in_turns_keep_to_their_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let contents: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 5000]).collect();
        for (i, content) in contents.iter().enumerate() {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("m{i}"), content.as_slice())
                .unwrap();
        }
        builder.finish().unwrap();
        drop(builder);
        let store = BlobStore::archive(&path, dir.path()).unwrap();
        let mut readers: Vec<Box<dyn Read + Send>> = (0..3)
            .map(|i| store.open(&format!("m{i}")).unwrap().0)
            .collect();
        let mut read: Vec<Vec<u8>> = vec![Vec::new(); 3];
        let mut chunk = [0u8; 700];
        for _ in 0..10 {
            for (reader, read) in readers.iter_mut().zip(&mut read) {
                let n = reader.read(&mut chunk).unwrap();
                read.extend_from_slice(&chunk[..n]);
            }
        }
        assert!(read == contents);
    }
}
