//! Flattening an image into one root filesystem (`layered-gen export`), as dockerTools'
//! `exportImage` does without its VM: for `docker import`, WSL or a VM disk.
//!
//! The layers are applied bottom first, as a container runtime applies them. Each layer is
//! decompressed (and verified) into an unnamed scratch file and its entries indexed by path:
//! - a whiteout `.wh.NAME` removes NAME, and everything under it, that lower layers put there;
//! - an opaque marker `.wh..wh..opq` in a directory removes what lower layers put in it;
//! - an entry replaces the one a lower layer had at its path (a non-directory replacing a
//!   directory removes that directory's contents; a directory over a directory keeps them);
//! - a hard link becomes a copy of the file it links to (the result has no hard links, whose
//!   targets could have been removed or replaced by then).
//!
//! Paths are resolved as a runtime extracting into the root resolves them (umoci, containerd):
//! every component but the last is followed through the symlinks the tree holds so far (from
//! lower layers and earlier entries), an absolute target starting again at the root and `..`
//! never climbing above it, so `evil -> /etc` then `evil/passwd` writes `etc/passwd` of the
//! root filesystem, never a path through a link. The last component is not followed: an entry
//! replaces a symlink at its own path. Whiteouts and hard link targets resolve the same way.
//! A path longer than `PATH_MAX` once resolved, or a chain of more than 255 links, is refused.
//!
//! The result is written in path order, each directory right before its contents, with each
//! entry's own mode, owner, names, time and link target: it depends on the image only. Memory
//! holds one small record per path; file contents are copied from the scratch files.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::base::{BaseImage, SpooledTar};
use crate::error::{Error, Result, shown, shown_bytes};
use crate::tarball::{self, Header, Kind};

/// What `export` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    pub layers: usize,
    pub entries: usize,
}

/// One path of the flattened tree.
#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    uname: Vec<u8>,
    gname: Vec<u8>,
    link: Vec<u8>,
    /// Regular files: which layer's scratch file, where, and how long.
    content: Option<(usize, u64, u64)>,
    /// The layer that put it there (whiteouts only remove what lower layers put).
    layer: usize,
}

impl Node {
    /// An entry of `kind` owned by root, 0755, time 0, without content.
    fn plain(kind: Kind, layer: usize) -> Self {
        Node {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            uname: Vec::new(),
            gname: Vec::new(),
            link: Vec::new(),
            content: None,
            layer,
        }
    }
}

/// The longest path a runtime can create (Linux's `PATH_MAX`).
const PATH_MAX: usize = 4096;
/// The most symlinks one path may be resolved through (as securejoin allows).
const MAX_LINK_HOPS: usize = 255;

/// Index keys are paths with `/` mapped to 0, so that sorting them puts each directory right
/// before its contents ("a", "a/b", then "a-b").
#[cfg(test)]
fn key_of(path: &[u8]) -> Vec<u8> {
    path.iter()
        .map(|&b| if b == b'/' { 0 } else { b })
        .collect()
}

fn path_of(key: &[u8]) -> Vec<u8> {
    key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect()
}

/// An entry name as a relative path without `./`, leading or trailing slashes; None for the
/// root itself. A `..` component is refused: it would climb out of the root filesystem.
fn normalise(name: &[u8], layer: &str) -> Result<Option<Vec<u8>>> {
    let parts: Vec<&[u8]> = name
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if parts.iter().any(|p| *p == b"..") {
        return Err(Error::input(
            layer,
            format!(
                "the entry {} climbs out of the root with ..",
                shown_bytes(name)
            ),
        ));
    }
    Ok((!parts.is_empty()).then(|| parts.join(&b'/')))
}

/// The key `path` lands on in the tree `index` holds: every component but the last followed
/// through its symlinks (see the module doc); `follow_last` follows the last one too.
fn resolve(
    index: &BTreeMap<Vec<u8>, Node>,
    path: &[u8],
    follow_last: bool,
) -> std::result::Result<Vec<u8>, String> {
    // Components still to walk, the next one last.
    let mut pending: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    let mut key: Vec<u8> = Vec::new();
    // Where each resolved component starts in `key`, to go back up for `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        if component == b".." {
            if let Some(start) = starts.pop() {
                key.truncate(start);
            }
            continue;
        }
        let start = key.len();
        if !key.is_empty() {
            key.push(0);
        }
        key.extend_from_slice(&component);
        if key.len() > PATH_MAX {
            return Err(format!(
                "resolves to a path longer than {PATH_MAX} bytes, which no runtime can create"
            ));
        }
        let last = pending.is_empty();
        match index.get(&key) {
            Some(node) if node.kind == Kind::Symlink && (follow_last || !last) => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(format!(
                        "goes through more than {MAX_LINK_HOPS} symlinks (a loop?)"
                    ));
                }
                key.truncate(start);
                if node.link.starts_with(b"/") {
                    key.clear();
                    starts.clear();
                }
                pending.extend(components(&node.link).rev().map(<[u8]>::to_vec));
            }
            _ => starts.push(start),
        }
    }
    Ok(key)
}

/// Resolves a layer's paths, remembering where its directories landed: an entry in a directory
/// already resolved costs one step, so a layer costs its size, however deep its paths. What is
/// remembered holds while no symlink comes or goes (`changed` forgets it).
#[derive(Default)]
struct Resolver {
    directories: std::collections::HashMap<Vec<u8>, Vec<u8>>,
}

impl Resolver {
    /// [`resolve`], starting from the remembered directory of `path` when there is one.
    fn resolve(
        &self,
        index: &BTreeMap<Vec<u8>, Node>,
        path: &[u8],
        follow_last: bool,
    ) -> std::result::Result<Vec<u8>, String> {
        if !follow_last {
            if let Some(slash) = path.iter().rposition(|&b| b == b'/') {
                if let Some(dir) = self.directories.get(&path[..slash]) {
                    let mut key = dir.clone();
                    if !key.is_empty() {
                        key.push(0);
                    }
                    key.extend_from_slice(&path[slash + 1..]);
                    if key.len() > PATH_MAX {
                        return Err(format!(
                            "resolves to a path longer than {PATH_MAX} bytes, which no runtime \
                             can create"
                        ));
                    }
                    return Ok(key);
                }
            }
        }
        resolve(index, path, follow_last)
    }

    /// The directory at `path` landed on `key`.
    fn remember(&mut self, path: &[u8], key: &[u8]) {
        self.directories.insert(path.to_vec(), key.to_vec());
    }

    /// A symlink came or went: directories may land elsewhere now.
    fn changed(&mut self) {
        self.directories.clear();
    }
}

/// The components of a path or link target, without empty ones and `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
}

/// Everything under `key` (not `key` itself) that a layer below `layer` put there.
fn remove_below(index: &mut BTreeMap<Vec<u8>, Node>, key: &[u8], layer: usize) {
    let mut prefix = key.to_vec();
    prefix.push(0);
    let doomed: Vec<Vec<u8>> = index
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(_, n)| n.layer < layer)
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        index.remove(&k);
    }
}

/// One entry of a layer, as read.
struct Read1 {
    path: Vec<u8>,
    node: Node,
    /// The path a hard link points to.
    hard_link: Option<Vec<u8>>,
}

/// Reads a layer's entries from its scratch file.
fn read_layer(tar: &SpooledTar, layer: usize, label: &str) -> Result<Vec<Read1>> {
    let bad = |e: std::io::Error| Error::input(label, format!("not a readable tar: {e}"));
    let mut file = tar.file();
    // The spool was just written: read it from its start.
    file.seek(SeekFrom::Start(0)).map_err(bad)?;
    let mut archive = tar::Archive::new(file);
    let mut entries = Vec::new();
    for entry in archive.entries_with_seek().map_err(bad)? {
        // Contents are read later, from the scratch file at their offsets.
        let mut entry = entry.map_err(bad)?;
        let Some(path) = normalise(&entry.path_bytes(), label)? else {
            continue;
        };
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Directory,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::File,
            tar::EntryType::Fifo => Kind::Fifo,
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if header.entry_type() == tar::EntryType::Char {
                    Kind::CharDevice { major, minor }
                } else {
                    Kind::BlockDevice { major, minor }
                }
            }
            other => {
                return Err(Error::input(
                    label,
                    format!(
                        "the entry {} is of tar type {:?}, which a root filesystem cannot hold",
                        shown_bytes(&path),
                        other.as_byte() as char
                    ),
                ));
            }
        };
        let (mut uid, mut gid, mut mtime) = (
            header.uid().unwrap_or(0),
            header.gid().unwrap_or(0),
            header.mtime().unwrap_or(0),
        );
        // PAX records override the header's fields (large ids, late times).
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let value = ext.value().unwrap_or("");
                let number = || value.split('.').next().and_then(|v| v.parse::<u64>().ok());
                match ext.key().unwrap_or("") {
                    "uid" => uid = number().unwrap_or(uid),
                    "gid" => gid = number().unwrap_or(gid),
                    "mtime" => mtime = number().unwrap_or(mtime),
                    _ => {}
                }
            }
        }
        let is_hard_link = header.entry_type() == tar::EntryType::Link;
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let content = (kind == Kind::File && !is_hard_link)
            .then(|| (layer, entry.raw_file_position(), entry.size()));
        entries.push(Read1 {
            hard_link: if is_hard_link {
                normalise(&link, label)?
            } else {
                None
            },
            node: Node {
                kind,
                mode: header.mode().unwrap_or(0o644) & 0o7777,
                uid,
                gid,
                mtime,
                uname: header.username_bytes().unwrap_or_default().to_vec(),
                gname: header.groupname_bytes().unwrap_or_default().to_vec(),
                link: if is_hard_link { Vec::new() } else { link },
                content,
                layer,
            },
            path,
        });
    }
    Ok(entries)
}

/// Applies one layer's entries to the index (see the module doc).
fn apply(
    index: &mut BTreeMap<Vec<u8>, Node>,
    entries: Vec<Read1>,
    layer: usize,
    label: &str,
) -> Result<()> {
    let mut resolver = Resolver::default();
    let fail = |path: &[u8], why: String| {
        Error::input(label, format!("the entry {} {why}", shown_bytes(path)))
    };
    // Whiteouts first: they only remove what lower layers put.
    for entry in &entries {
        let (dir, name) = match entry.path.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&entry.path[..slash], &entry.path[slash + 1..]),
            None => (&b""[..], &entry.path[..]),
        };
        if name == b".wh..wh..opq" {
            let dir = resolve(index, dir, true).map_err(|why| fail(dir, why))?;
            if dir.is_empty() {
                let doomed: Vec<Vec<u8>> = index
                    .iter()
                    .filter(|(_, n)| n.layer < layer)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    index.remove(&k);
                }
            } else {
                remove_below(index, &dir, layer);
            }
        } else if let Some(hidden) = name.strip_prefix(b".wh.") {
            let mut path = dir.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(hidden);
            let key = resolve(index, &path, false).map_err(|why| fail(&path, why))?;
            if index.get(&key).is_some_and(|n| n.layer < layer) {
                index.remove(&key);
            }
            remove_below(index, &key, layer);
        }
    }
    for entry in entries {
        let name = entry.path.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
        if name.starts_with(b".wh.") {
            continue;
        }
        let key = resolver
            .resolve(index, &entry.path, false)
            .map_err(|why| fail(&entry.path, why))?;
        let mut node = entry.node;
        if let Some(target) = entry.hard_link {
            let target_key = resolver
                .resolve(index, &target, false)
                .map_err(|why| fail(&target, why))?;
            let Some(linked) = index.get(&target_key).filter(|n| n.kind == Kind::File) else {
                return Err(Error::input(
                    label,
                    format!(
                        "the hard link {} points to {}, which is no regular file",
                        shown_bytes(&entry.path),
                        shown_bytes(&target)
                    ),
                ));
            };
            node.content = linked.content;
        }
        if node.kind != Kind::Directory {
            remove_below(index, &key, layer + 1);
        }
        let replaced = index.get(&key).map(|n| n.kind);
        if node.kind == Kind::Symlink || replaced.is_some_and(|k| k != node.kind) {
            resolver.changed();
        }
        if node.kind == Kind::Directory {
            resolver.remember(&entry.path, &key);
        }
        index.insert(key, node);
    }
    Ok(())
}

/// Directories that entries imply but no layer lists: root-owned, 0755, time 0, so that
/// every extractor makes them alike. Each key's parents are looked at from the nearest up,
/// stopping at the first that is there: a deep path costs its depth once.
fn add_missing_parents(index: &mut BTreeMap<Vec<u8>, Node>) {
    let mut missing: std::collections::BTreeSet<Vec<u8>> = Default::default();
    for key in index.keys() {
        let mut end = key.len();
        while let Some(slash) = key[..end].iter().rposition(|&b| b == 0) {
            let parent = &key[..slash];
            if index.contains_key(parent) || !missing.insert(parent.to_vec()) {
                break;
            }
            end = slash;
        }
    }
    for key in missing {
        // No layer put it there, so no whiteout can remove it.
        index.insert(key, Node::plain(Kind::Directory, usize::MAX));
    }
}

/// Writes the flattened tree of `image` to `out` as a tar; scratch files go to `scratch`.
pub fn export(image: &BaseImage, scratch: &Path, out: &mut dyn Write) -> Result<Exported> {
    let mut index: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    let mut spools = Vec::with_capacity(image.layers.len());
    for (layer, stored) in image.layers.iter().enumerate() {
        let label = format!(
            "{}: layer {layer} ({})",
            shown(&image.describe()),
            shown(&stored.name)
        );
        let spool = image
            .decompressed(layer, scratch)
            .map_err(|e| e.context(&label))?;
        let entries = read_layer(&spool, layer, &label)?;
        apply(&mut index, entries, layer, &label)?;
        spools.push(spool);
    }
    add_missing_parents(&mut index);
    let write_error = |e: std::io::Error| Error::write("the root filesystem", e);
    let mut buffer = vec![0u8; 1 << 20];
    for (key, node) in &index {
        let mut name = path_of(key);
        if node.kind == Kind::Directory {
            name.push(b'/');
        }
        let size = node.content.map_or(0, |(_, _, size)| size);
        let header = Header {
            name: &name,
            kind: node.kind,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            mtime: node.mtime,
            size,
            link: &node.link,
            uname: &node.uname,
            gname: &node.gname,
        };
        tarball::write_header(out, &header).map_err(write_error)?;
        if let Some((layer, mut offset, size)) = node.content {
            let file = spools[layer].file();
            let end = offset + size;
            while offset < end {
                let want = usize::try_from(end - offset)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                let got = file
                    .read_at(&mut buffer[..want], offset)
                    .map_err(|e| Error::write("a scratch file", e))?;
                if got == 0 {
                    return Err(Error::write(
                        "a scratch file",
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                out.write_all(&buffer[..got]).map_err(write_error)?;
                offset += got as u64;
            }
            out.write_all(&[0; tarball::BLOCK as usize][..tarball::padding(size)])
                .map_err(write_error)?;
        }
    }
    out.write_all(&tarball::END_OF_ARCHIVE)
        .map_err(write_error)?;
    Ok(Exported {
        layers: image.layers.len(),
        entries: index.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind, layer: usize) -> Read1 {
        Read1 {
            path: path.as_bytes().to_vec(),
            node: Node::plain(kind, layer),
            hard_link: None,
        }
    }

    fn paths(index: &BTreeMap<Vec<u8>, Node>) -> Vec<String> {
        index
            .keys()
            .map(|k| String::from_utf8(path_of(k)).unwrap())
            .collect()
    }

    #[test]
    fn whiteouts_opaque_directories_and_replacements() {
        let mut index = BTreeMap::new();
        let lower = vec![
            entry("etc", Kind::Directory, 0),
            entry("etc/motd", Kind::File, 0),
            entry("etc/ssl", Kind::Directory, 0),
            entry("etc/ssl/cert", Kind::File, 0),
            entry("var", Kind::Directory, 0),
            entry("var/a", Kind::File, 0),
            entry("var/b", Kind::File, 0),
            entry("opt", Kind::Directory, 0),
            entry("opt/x", Kind::File, 0),
            entry("a-b", Kind::File, 0),
            entry("a", Kind::Directory, 0),
            entry("a/z", Kind::File, 0),
        ];
        apply(&mut index, lower, 0, "l0").unwrap();
        let upper = vec![
            entry("etc/.wh.ssl", Kind::File, 1),
            entry("var/.wh..wh..opq", Kind::File, 1),
            entry("var/c", Kind::File, 1),
            entry("opt", Kind::File, 1),
            entry("etc/motd", Kind::Symlink, 1),
        ];
        apply(&mut index, upper, 1, "l1").unwrap();
        assert_eq!(
            paths(&index),
            ["a", "a/z", "a-b", "etc", "etc/motd", "opt", "var", "var/c"],
            "each directory right before its contents"
        );
        assert!(!index.contains_key(&key_of(b"etc/ssl")));
        assert!(!index.contains_key(&key_of(b"etc/ssl/cert")));
        assert!(!index.contains_key(&key_of(b"var/a")));
        assert!(
            !index.contains_key(&key_of(b"opt/x")),
            "a file replaced the directory"
        );
        assert_eq!(index[&key_of(b"etc/motd")].kind, Kind::Symlink);
    }

    #[test]
    fn implied_parents_are_added() {
        let mut index = BTreeMap::new();
        apply(&mut index, vec![entry("a/b/c", Kind::File, 0)], 0, "l").unwrap();
        add_missing_parents(&mut index);
        assert_eq!(paths(&index), ["a", "a/b", "a/b/c"]);
        assert_eq!(index[&key_of(b"a")].mode, 0o755);
    }

    fn link(path: &str, target: &str, layer: usize) -> Read1 {
        let mut read = entry(path, Kind::Symlink, layer);
        read.node.link = target.as_bytes().to_vec();
        read
    }

    #[test]
    fn paths_through_links_land_inside_the_root() {
        let mut index = BTreeMap::new();
        let lower = vec![
            entry("etc", Kind::Directory, 0),
            link("evil", "/etc", 0),
            link("up", "../../..", 0),
            entry("d", Kind::Directory, 0),
            link("d/l", "/", 0),
            entry("a", Kind::Directory, 0),
            link("a/b", "../c", 0),
            link("loop1", "loop2", 0),
            link("loop2", "loop1", 0),
        ];
        apply(&mut index, lower, 0, "l0").unwrap();
        let upper = vec![
            entry("evil/passwd", Kind::File, 1),
            entry("up/x", Kind::File, 1),
            entry("d/l/y", Kind::File, 1),
            entry("a/b/f", Kind::File, 1),
            // The last component is not followed: the link itself is replaced.
            entry("up", Kind::File, 1),
        ];
        apply(&mut index, upper, 1, "l1").unwrap();
        let listed = paths(&index);
        for expected in ["etc/passwd", "x", "y", "c/f", "up"] {
            assert!(
                listed.contains(&expected.to_string()),
                "{expected}: {listed:?}"
            );
        }
        assert_eq!(index[&key_of(b"up")].kind, Kind::File);
        assert!(!listed.iter().any(|p| p.starts_with("evil/")), "{listed:?}");
        let err = apply(&mut index, vec![entry("loop1/x", Kind::File, 2)], 2, "l2").unwrap_err();
        assert!(err.to_string().contains("more than 255 symlinks"), "{err}");
    }

    #[test]
    fn whiteouts_under_links_remove_what_the_link_leads_to() {
        let mut index = BTreeMap::new();
        let lower = vec![
            entry("real", Kind::Directory, 0),
            entry("real/f", Kind::File, 0),
            entry("real/g", Kind::File, 0),
            link("link", "real", 0),
        ];
        apply(&mut index, lower, 0, "l0").unwrap();
        apply(
            &mut index,
            vec![entry("link/.wh.f", Kind::File, 1)],
            1,
            "l1",
        )
        .unwrap();
        assert_eq!(paths(&index), ["link", "real", "real/g"]);
    }

    #[test]
    fn a_path_longer_than_path_max_is_refused_in_linear_time() {
        let deep = "d/".repeat(20_000) + "f";
        let mut index = BTreeMap::new();
        let err = apply(&mut index, vec![entry(&deep, Kind::File, 0)], 0, "l").unwrap_err();
        assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
    }

    #[test]
    fn names_are_normalised_and_dot_dot_refused() {
        assert_eq!(normalise(b"./a//b/", "l").unwrap(), Some(b"a/b".to_vec()));
        assert_eq!(normalise(b"./", "l").unwrap(), None);
        assert!(normalise(b"a/../../etc", "l").is_err());
    }
}
