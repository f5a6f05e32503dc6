//! Stage 5: deterministic layer tarballs.
//!
//! A layer is a pure function of the NAR contents of its store paths and the options: entries in
//! depth-first order with each directory's entries sorted bytewise (a directory right before its
//! contents), names relative, modes from the NAR model (files 0444 or 0555, directories 0555,
//! symlinks verbatim, the store directory's parents 0755), one mtime, one uid and gid, no user or
//! group names, never a hardlink. Nothing of the host leaks in: not the umask, the files' own
//! modes, owners or times, the readdir order, nor hardlinks from `nix-store --optimise`.
//!
//! A layer is scanned from metadata first, which fixes its exact length; its content is then
//! streamed, each file read once.
//!
//! `--tar-compat nixpkgs` writes store layers as nixpkgs' `stream_layered_image.py` does
//! instead, so that an image shares layer blobs with one dockerTools builds from the same
//! paths: `/nix/` and `/nix/store/` (0755) first, then each store path in the plan's order,
//! names absolute, the files' own permission bits, each directory's entries in Python's string
//! order (bytes that are not UTF-8 count as surrogates), headers in Python tarfile's PAX
//! encoding ([`crate::tarball::Dialect::Nixpkgs`]). In a Nix store the modes are the NAR
//! model's anyway, so such layers are as reproducible as ours there.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::Scope;

use crate::error::{Error, ErrorKind, Result, Setting, shown, shown_path};
use crate::tarball::{self, Dialect, Header, Kind, StartedTar, TarStream};

mod custom;

pub use custom::{
    Customisation, PermRule, check_image_path, link_contents, parse_perms, read_perms,
    record_modes, write_image_file,
};

/// The knobs that reach into every entry.
#[derive(Clone, Debug, Default)]
pub struct LayerOptions {
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    /// Owner and group names of the store paths' entries (dockerTools' uname and gname);
    /// empty: numbers only.
    pub uname: String,
    pub gname: String,
    /// Read `/nix/store/x` from `<store_root>/nix/store/x` (a chroot store).
    pub store_root: Option<PathBuf>,
    /// Read a layer's files on the worker pool, several batches at once, instead of on its
    /// reader thread alone: for output that leaves the workers idle (plain layers). Where they
    /// compress, reads queued behind their work would only slow the stream. The bytes are the
    /// same.
    pub parallel_reads: bool,
    /// Whose tar format the store layers follow (see the module doc).
    pub tar_compat: TarCompat,
}

/// Whose tar format store layers follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TarCompat {
    /// Ours: names relative, modes from the NAR model, entries sorted bytewise.
    #[default]
    None,
    /// nixpkgs' stream_layered_image.py, byte for byte (see the module doc).
    Nixpkgs,
}

impl TarCompat {
    /// Its name, as `--tar-compat` takes it.
    pub fn name(self) -> &'static str {
        match self {
            TarCompat::None => "none",
            TarCompat::Nixpkgs => "nixpkgs",
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            TarCompat::None => Dialect::Ours,
            TarCompat::Nixpkgs => Dialect::Nixpkgs,
        }
    }
}

/// Bumped whenever our tarballs change for the same inputs (it is part of cache keys).
pub const TAR_FORMAT_VERSION: u32 = 1;

/// The layer cache's key for a layer of store paths: everything that decides its tarball —
/// the store paths with their NAR hashes where the closure gives them (a store path's
/// content never changes, so its name alone also names it), the owner and time of its
/// entries, and the version of our tar format.
pub fn store_layer_key(
    store_dir: &str,
    paths: &[(&str, Option<&str>)],
    options: &LayerOptions,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let header = format!(
        "layered-gen store layer v{}\nstore {store_dir}\nmtime {}\nuid {}\ngid {}\nuname {:?}\n\
         gname {:?}\n",
        TAR_FORMAT_VERSION, options.mtime, options.uid, options.gid, options.uname, options.gname
    );
    hasher.update(header.as_bytes());
    if options.tar_compat == TarCompat::Nixpkgs {
        hasher.update(b"tar nixpkgs\n");
    }
    for (path, hash) in paths {
        hasher.update(format!("{path} {}\n", hash.unwrap_or("-")).as_bytes());
    }
    format!("store:{}", crate::digest::hex(&hasher.finalize()))
}

impl LayerOptions {
    /// Where the files of a store path are read from.
    pub fn source_of(&self, store_path: &str) -> PathBuf {
        match &self.store_root {
            Some(root) => root.join(store_path.trim_start_matches('/')),
            None => PathBuf::from(store_path),
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    name: Vec<u8>,
    kind: Kind,
    mode: u32,
    size: u64,
    link: Vec<u8>,
    source: Source,
    /// Set by permission rules in the customisation layer; None: the layer's uid and gid.
    owner: Option<Box<Owner>>,
}

/// Where a regular file's content comes from.
#[derive(Clone, Debug)]
enum Source {
    /// The entry's name under the layer's source root (store paths).
    Named,
    /// A file elsewhere (an `--extra-dir`).
    Path(Box<Path>),
    /// No content (a whiteout).
    Empty,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
}

impl Entry {
    fn directory(name: Vec<u8>, mode: u32) -> Self {
        Entry {
            name,
            kind: Kind::Directory,
            mode,
            size: 0,
            link: Vec::new(),
            source: Source::Empty,
            owner: None,
        }
    }

    fn symlink(name: Vec<u8>, target: Vec<u8>) -> Self {
        Entry {
            name,
            kind: Kind::Symlink,
            mode: 0o777,
            size: 0,
            link: target,
            source: Source::Empty,
            owner: None,
        }
    }

    fn file(name: Vec<u8>, mode: u32, size: u64, source: Source) -> Self {
        Entry {
            name,
            kind: Kind::File,
            mode,
            size,
            link: Vec::new(),
            source,
            owner: None,
        }
    }
}

/// What a layer holds.
#[derive(Debug)]
enum Contents {
    /// Entries kept in memory: the customisation layer, which is small and built in memory.
    Listed(Vec<Entry>),
    /// Store paths, walked from disk: once when the layer is made (to check every file and
    /// know the exact length) and again while it is written, so no list of its entries is
    /// kept; only each file's size (8 bytes a file), to tell which file changed in between.
    Walked {
        parents: Vec<Entry>,
        /// (where on disk, name in the tarball), sorted by name.
        roots: Vec<(PathBuf, Vec<u8>)>,
        /// The sizes of the regular files the first walk found, in walk order.
        file_sizes: Vec<u64>,
        /// Entries made in memory after the store paths: the links a layer directory's
        /// contents make at `/` (directories and symlinks only).
        tail: Vec<Entry>,
    },
}

/// What the first walk of a layer finds: its entries' tarball length, its files' sizes in
/// order, and the digest of its headers.
#[derive(Default)]
struct Measured {
    length: u64,
    sizes: Vec<u64>,
    headers_digest: String,
}

/// Hashes what a header says of its entry, each field length-prefixed so that no two headers
/// hash alike.
fn hash_header(hasher: &mut sha2::Sha256, header: &Header) {
    use sha2::Digest;
    let kind = match header.kind {
        Kind::File => "f".to_string(),
        Kind::Directory => "d".to_string(),
        Kind::Symlink => "l".to_string(),
        Kind::Fifo => "p".to_string(),
        Kind::CharDevice { major, minor } => format!("c{major},{minor}"),
        Kind::BlockDevice { major, minor } => format!("b{major},{minor}"),
    };
    for field in [
        header.name,
        kind.as_bytes(),
        header.link,
        header.uname,
        header.gname,
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    for number in [
        u64::from(header.mode),
        header.uid,
        header.gid,
        header.size,
        header.mtime,
    ] {
        hasher.update(number.to_le_bytes());
    }
}

/// A layer ready to write, with its exact tarball length.
#[derive(Debug)]
pub struct LayerTree {
    contents: Contents,
    /// Entry names are relative to this directory on disk (`/`, or the --store-root).
    source_root: PathBuf,
    mtime: u64,
    uid: u64,
    gid: u64,
    /// Names of entries without an owner of their own (store layers: --uname, --gname).
    uname: Vec<u8>,
    gname: Vec<u8>,
    length: u64,
    /// How the headers are encoded, and the zero bytes that end the tarball.
    dialect: Dialect,
    end_len: u64,
    /// How store paths are walked (see `TarCompat`).
    compat: TarCompat,
    /// The SHA-256 of every entry's header fields (name, kind, mode, owners, size, link
    /// target), in order, as the first walk found them: what the layer cache checks its
    /// entries against. None for layers built in memory.
    headers_digest: Option<String>,
    /// See `LayerOptions::parallel_reads`.
    parallel_reads: bool,
}

/// What the reader thread sends the writer: entries whose headers come next, and file
/// content in order (the rest of the file being written first, then these entries' files).
/// Batching keeps a closure of many small files from costing a thread wake-up per file.
struct Batch {
    entries: Vec<Entry>,
    data: Vec<u8>,
}

/// Content bytes per batch, and entries at most.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_ENTRIES: usize = 512;

/// Checks that every store path exists where it will be read, before any output is written.
pub fn check_sources<'a>(
    paths: impl IntoIterator<Item = &'a str>,
    options: &LayerOptions,
) -> Result<()> {
    for path in paths {
        let source = options.source_of(path);
        if let Err(err) = fs::symlink_metadata(&source) {
            let err = Error::io("reading", &source, err);
            return Err(match &options.store_root {
                Some(_) => err
                    .context(format!(
                        "the store path {} is in the closure but not under the store root",
                        shown(path)
                    ))
                    .about(Setting::StoreRoot),
                None => err.context(format!(
                    "the store path {} is in the closure but cannot be read (is it built, or \
                     kept under another store root?)",
                    shown(path)
                )),
            });
        }
    }
    Ok(())
}

impl LayerTree {
    /// The layer of a set of store paths: the store directory's parents, then each path.
    pub fn for_store_paths(
        store_dir: &str,
        paths: &[&str],
        options: &LayerOptions,
    ) -> Result<Self> {
        let compat = options.tar_compat;
        let (parents, roots) = match compat {
            TarCompat::None => {
                let mut parents = Vec::new();
                let mut parent = Vec::new();
                for component in store_dir.trim_start_matches('/').split('/') {
                    parent.extend_from_slice(component.as_bytes());
                    parent.push(b'/');
                    parents.push(Entry::directory(parent.clone(), 0o755));
                }
                let mut sorted: Vec<&str> = paths.to_vec();
                sorted.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                sorted.dedup();
                let roots = sorted
                    .into_iter()
                    .map(|path| {
                        let name = path.trim_start_matches('/').as_bytes().to_vec();
                        (options.source_of(path), name)
                    })
                    .collect();
                (parents, roots)
            }
            // nixpkgs writes these two whatever the store directory, and the paths as given.
            TarCompat::Nixpkgs => {
                let parents = vec![
                    Entry::directory(b"/nix/".to_vec(), 0o755),
                    Entry::directory(b"/nix/store/".to_vec(), 0o755),
                ];
                let roots = paths
                    .iter()
                    .map(|path| (options.source_of(path), path.as_bytes().to_vec()))
                    .collect();
                (parents, roots)
            }
        };
        let mut tree = LayerTree::empty(options);
        tree.compat = compat;
        tree.dialect = compat.dialect();
        tree.uname = options.uname.as_bytes().to_vec();
        tree.gname = options.gname.as_bytes().to_vec();
        tree.contents = Contents::Walked {
            parents,
            roots,
            file_sizes: Vec::new(),
            tail: Vec::new(),
        };
        // The first walk: every file checked, the length counted, file sizes kept, the
        // headers hashed. Store paths are walked side by side (a layer may hold most of the
        // closure) and joined in order.
        let walked = tree.first_walk()?;
        if let Contents::Walked { file_sizes, .. } = &mut tree.contents {
            *file_sizes = walked.sizes;
        }
        tree.end_len = tree.dialect.end_len(walked.length);
        tree.length = walked.length + tree.end_len;
        tree.headers_digest = Some(walked.headers_digest);
        Ok(tree)
    }

    /// The first walk of a walked layer's entries (see [`Measured`]).
    fn first_walk(&self) -> Result<Measured> {
        use rayon::prelude::*;
        use sha2::{Digest, Sha256};
        let Contents::Walked { parents, roots, .. } = &self.contents else {
            return Ok(Measured::default());
        };
        let mut parts = vec![self.measure(|f| parents.iter().try_for_each(f))];
        parts.par_extend(
            roots
                .par_iter()
                .map(|(source, name)| self.measure(|f| walk(source, name.clone(), self.compat, f))),
        );
        let mut whole = Measured::default();
        // The parts' digests, in order, make the layer's.
        let mut headers = Sha256::new();
        for part in parts {
            let part = part?;
            whole.length += part.length;
            whole.sizes.extend(part.sizes);
            headers.update(part.headers_digest.as_bytes());
        }
        whole.headers_digest = crate::digest::digest_name(headers).to_string();
        Ok(whole)
    }

    /// The first walk of the entries `visit` calls its argument on.
    fn measure(
        &self,
        visit: impl FnOnce(&mut dyn FnMut(&Entry) -> Result<()>) -> Result<()>,
    ) -> Result<Measured> {
        use sha2::{Digest, Sha256};
        let mut measured = Measured::default();
        let mut headers = Sha256::new();
        visit(&mut |entry| {
            let header = self.header(entry);
            measured.length += self.dialect.entry_len(&header);
            hash_header(&mut headers, &header);
            if entry.kind == Kind::File {
                measured.sizes.push(entry.size);
            }
            Ok(())
        })?;
        measured.headers_digest = crate::digest::digest_name(headers).to_string();
        Ok(measured)
    }

    /// The digest of the headers the first walk found (see the field), for the layer cache.
    pub fn headers_digest(&self) -> Option<&str> {
        self.headers_digest.as_deref()
    }

    /// Calls `f` on every entry in tarball order.
    fn visit(&self, f: &mut dyn FnMut(&Entry) -> Result<()>) -> Result<()> {
        match &self.contents {
            Contents::Listed(entries) => entries.iter().try_for_each(f),
            Contents::Walked {
                parents,
                roots,
                tail,
                ..
            } => {
                parents.iter().try_for_each(&mut *f)?;
                for (source, name) in roots {
                    walk(source, name.clone(), self.compat, f)?;
                }
                tail.iter().try_for_each(f)
            }
        }
    }

    /// The store paths' layer with `links` (a layer built in memory of directories and
    /// symlinks, root's: the links contents make at `/`) after them, as one tarball.
    pub fn with_links(mut self, links: LayerTree) -> Result<Self> {
        use sha2::{Digest, Sha256};
        let Contents::Listed(entries) = links.contents else {
            return Ok(self);
        };
        let mut added = 0;
        let mut headers = Sha256::new();
        headers.update(
            self.headers_digest
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        );
        let mut linked = Vec::with_capacity(entries.len());
        for mut entry in entries {
            if entry.kind == Kind::File {
                return Err(Error::value(format!(
                    "{} is a file; the links of a layer's contents are directories and symlinks",
                    shown(&String::from_utf8_lossy(&entry.name))
                )));
            }
            entry.owner.get_or_insert_with(|| {
                Box::new(Owner {
                    uid: links.uid,
                    gid: links.gid,
                    uname: String::from_utf8_lossy(&links.uname).into_owned(),
                    gname: String::from_utf8_lossy(&links.gname).into_owned(),
                })
            });
            let header = self.header(&entry);
            added += self.dialect.entry_len(&header);
            hash_header(&mut headers, &header);
            linked.push(entry);
        }
        let Contents::Walked { tail, .. } = &mut self.contents else {
            return Ok(self);
        };
        tail.extend(linked);
        let entries_len = self.length - self.end_len + added;
        self.end_len = self.dialect.end_len(entries_len);
        self.length = entries_len + self.end_len;
        self.headers_digest = Some(crate::digest::digest_name(headers).to_string());
        Ok(self)
    }

    /// The entries of a layer built in memory (empty for walked layers).
    #[cfg(test)]
    fn listed(&self) -> &[Entry] {
        match &self.contents {
            Contents::Listed(entries) => entries,
            Contents::Walked { .. } => &[],
        }
    }

    /// The entries of a layer built in memory (the customisation layer).
    fn listed_mut(&mut self) -> &mut Vec<Entry> {
        if !matches!(self.contents, Contents::Listed(_)) {
            self.contents = Contents::Listed(Vec::new());
        }
        match &mut self.contents {
            Contents::Listed(entries) => entries,
            Contents::Walked { .. } => unreachable!("just made a list"),
        }
    }

    fn empty(options: &LayerOptions) -> Self {
        LayerTree {
            contents: Contents::Listed(Vec::new()),
            source_root: options.source_of("/"),
            mtime: options.mtime,
            uid: options.uid,
            gid: options.gid,
            uname: Vec::new(),
            gname: Vec::new(),
            length: tarball::END_OF_ARCHIVE.len() as u64,
            dialect: Dialect::Ours,
            end_len: tarball::END_OF_ARCHIVE.len() as u64,
            compat: TarCompat::None,
            headers_digest: None,
            parallel_reads: options.parallel_reads,
        }
    }

    /// Recomputes the tarball length after listed entries changed.
    fn recount(&mut self) {
        let mut length = 0;
        let _ = self.visit(&mut |e| {
            length += self.dialect.entry_len(&self.header(e));
            Ok(())
        });
        self.end_len = self.dialect.end_len(length);
        self.length = length + self.end_len;
    }

    /// Adds an entry to a layer built in memory.
    fn push(&mut self, entry: Entry) {
        debug_assert_eq!(
            self.dialect,
            Dialect::Ours,
            "listed layers end in 1024 bytes"
        );
        self.length += self.dialect.entry_len(&self.header(&entry));
        self.listed_mut().push(entry);
    }

    fn header<'a>(&'a self, entry: &'a Entry) -> Header<'a> {
        let (uid, gid, uname, gname): (u64, u64, &[u8], &[u8]) = match &entry.owner {
            Some(o) => (o.uid, o.gid, o.uname.as_bytes(), o.gname.as_bytes()),
            None => (self.uid, self.gid, &self.uname, &self.gname),
        };
        Header {
            name: &entry.name,
            kind: entry.kind,
            mode: entry.mode,
            uid,
            gid,
            mtime: self.mtime,
            size: entry.size,
            link: &entry.link,
            uname,
            gname,
        }
    }

    /// Where a regular file's content is read from; None for entries without content.
    fn content_source(&self, entry: &Entry) -> Option<PathBuf> {
        match (&entry.kind, &entry.source) {
            (Kind::File, Source::Named) => Some(self.on_disk(&entry.name)),
            (Kind::File, Source::Path(path)) => Some(path.to_path_buf()),
            _ => None,
        }
    }

    /// Where the entry `name` is on disk (names are absolute in nixpkgs' format).
    fn on_disk(&self, name: &[u8]) -> PathBuf {
        let relative = name.strip_prefix(b"/").unwrap_or(name);
        self.source_root.join(OsStr::from_bytes(relative))
    }

    /// Checks a file of the second walk against the first walk: its header went out with the
    /// size the first walk found, so a file that changed since cannot be written.
    fn check_unchanged(&self, entry: &Entry, file_number: usize) -> Result<()> {
        let Contents::Walked { file_sizes, .. } = &self.contents else {
            return Ok(());
        };
        let path = self.on_disk(&entry.name);
        match file_sizes.get(file_number) {
            Some(&expected) if expected == entry.size => Ok(()),
            Some(&expected) => Err(Error::new(ErrorKind::StoreChanged {
                path,
                expected,
                found: entry.size,
            })),
            None => Err(Error::input(
                shown_path(&path),
                "this file appeared after its layer was sized: the store changed while the \
                 image was written",
            )),
        }
    }

    /// Calls `f` on every entry again in tarball order, each file checked first against the
    /// first walk (see `check_unchanged`).
    fn visit_checked(&self, f: &mut dyn FnMut(&Entry) -> Result<()>) -> Result<()> {
        let mut file_number = 0;
        self.visit(&mut |entry| {
            if entry.kind == Kind::File {
                self.check_unchanged(entry, file_number)?;
                file_number += 1;
            }
            f(entry)
        })
    }

    /// Reads the files' content for the writer: side by side on the pool with
    /// `parallel_reads`, else on this thread (see `LayerOptions::parallel_reads`).
    fn read_files(&self, full: &Sender<(u64, Result<Batch>)>, empty: &Receiver<Vec<u8>>) {
        if self.parallel_reads {
            self.read_files_side_by_side(full, empty);
        } else {
            self.read_files_in_turn(full, empty);
        }
    }

    /// Walks the entries again and reads the files' content on this thread, sending batches in
    /// order on `full` (data buffers come back on `empty`); stops at the first error, which it
    /// sends, or when the writer hangs up.
    fn read_files_in_turn(&self, full: &Sender<(u64, Result<Batch>)>, empty: &Receiver<Vec<u8>>) {
        let mut sequence = 0;
        let mut send = |batch: Result<Batch>| {
            sequence += 1;
            full.send((sequence - 1, batch)).map_err(|_| writer_gone())
        };
        let next_batch = || empty_batch(empty);
        let result = (|| -> Result<()> {
            let mut batch = next_batch()?;
            self.visit_checked(&mut |entry| {
                batch.entries.push(entry.clone());
                if let Some(source) = self.content_source(entry) {
                    let mut file = open_regular_file(&source)?;
                    let mut left = entry.size;
                    while left > 0 {
                        if batch.data.len() == BATCH_BYTES {
                            let full_batch = std::mem::replace(&mut batch, next_batch()?);
                            send(Ok(full_batch))?;
                        }
                        let start = batch.data.len();
                        let want =
                            (BATCH_BYTES - start).min(usize::try_from(left).unwrap_or(usize::MAX));
                        batch.data.resize(start + want, 0);
                        let got = file
                            .read(&mut batch.data[start..])
                            .map_err(|e| Error::io("reading", &source, e))?;
                        batch.data.truncate(start + got);
                        if got == 0 {
                            return Err(Error::new(ErrorKind::StoreChanged {
                                path: source.clone(),
                                expected: entry.size,
                                found: entry.size - left,
                            }));
                        }
                        left -= got as u64;
                    }
                    let mut probe = [0u8; 1];
                    if file
                        .read(&mut probe)
                        .map_err(|e| Error::io("reading", &source, e))?
                        != 0
                    {
                        // Count the rest, so the message says how large the file has become.
                        let rest = std::io::copy(&mut file, &mut std::io::sink()).unwrap_or(0);
                        return Err(Error::new(ErrorKind::StoreChanged {
                            path: source.clone(),
                            expected: entry.size,
                            found: entry.size + 1 + rest,
                        }));
                    }
                }
                if batch.entries.len() >= BATCH_ENTRIES {
                    let full_batch = std::mem::replace(&mut batch, next_batch()?);
                    send(Ok(full_batch))?;
                }
                Ok(())
            })?;
            send(Ok(batch))
        })();
        if let Err(err) = result {
            let _ = send(Err(err));
        }
    }

    /// Walks the entries again and plans batches: each takes a buffer from `empty` and is
    /// filled with its files' content by a pool task with positioned reads, then sent on
    /// `full` with its place in the stream. A large layer's reads so use several threads; the
    /// writer puts the batches back in order. Stops at the first error, which it sends in its
    /// place, or when the writer hangs up.
    fn read_files_side_by_side(
        &self,
        full: &Sender<(u64, Result<Batch>)>,
        empty: &Receiver<Vec<u8>>,
    ) {
        let mut sequence = 0;
        let mut send = |planned: Planned| {
            let place = sequence;
            sequence += 1;
            let full = full.clone();
            rayon::spawn(move || {
                // The writer may have hung up; it stops us through `empty`.
                let _ = full.send((place, planned.fill()));
            });
        };
        let next_batch = || -> Result<Planned> {
            Ok(Planned {
                batch: empty_batch(empty)?,
                length: 0,
                segments: Vec::new(),
            })
        };
        let result = (|| -> Result<()> {
            let mut planned = next_batch()?;
            self.visit_checked(&mut |entry| {
                planned.batch.entries.push(entry.clone());
                if let Some(source) = self.content_source(entry) {
                    let file = Arc::new(open_regular_file(&source)?);
                    let source = Arc::new(source);
                    let mut offset = 0;
                    loop {
                        if planned.length == BATCH_BYTES {
                            send(std::mem::replace(&mut planned, next_batch()?));
                        }
                        let room = (BATCH_BYTES - planned.length) as u64;
                        let length = room.min(entry.size - offset);
                        planned.segments.push(Segment {
                            file: Arc::clone(&file),
                            source: Arc::clone(&source),
                            offset,
                            length: length as usize,
                            size: entry.size,
                        });
                        planned.length += length as usize;
                        offset += length;
                        if offset == entry.size {
                            break;
                        }
                    }
                }
                if planned.batch.entries.len() >= BATCH_ENTRIES {
                    send(std::mem::replace(&mut planned, next_batch()?));
                }
                Ok(())
            })?;
            send(planned);
            Ok(())
        })();
        if let Err(err) = result {
            let _ = full.send((sequence, Err(err)));
        }
    }
}

/// The writer hung up (it failed, or the output was closed): the reader stops.
fn writer_gone() -> Error {
    Error::write("the image", std::io::ErrorKind::BrokenPipe.into())
}

/// A new batch in a buffer the writer gave back (waiting for one).
fn empty_batch(empty: &Receiver<Vec<u8>>) -> Result<Batch> {
    let data = empty.recv().map_err(|_| writer_gone())?;
    Ok(Batch {
        entries: Vec::new(),
        data,
    })
}

/// A batch as the walker plans it: its entries, its buffer, and the pieces of files to fill
/// the buffer with, in order.
struct Planned {
    batch: Batch,
    /// The content bytes the segments add up to.
    length: usize,
    segments: Vec<Segment>,
}

/// `length` bytes of a file of `size` bytes, from `offset`.
struct Segment {
    file: Arc<File>,
    source: Arc<PathBuf>,
    offset: u64,
    length: usize,
    size: u64,
}

impl Planned {
    /// Reads the segments into the buffer with positioned reads. A file must still have the
    /// size the walk found: shorter or longer (checked at the end of its last segment) is the
    /// store changing under us.
    fn fill(self) -> Result<Batch> {
        use std::os::unix::fs::FileExt;
        let mut batch = self.batch;
        batch.data.clear();
        for segment in &self.segments {
            let changed = |found: u64| {
                Error::new(ErrorKind::StoreChanged {
                    path: segment.source.to_path_buf(),
                    expected: segment.size,
                    found,
                })
            };
            let read_error = |e| Error::io("reading", &segment.source, e);
            let start = batch.data.len();
            batch.data.resize(start + segment.length, 0);
            let mut done = 0;
            while done < segment.length {
                let at = segment.offset + done as u64;
                match segment.file.read_at(&mut batch.data[start + done..], at) {
                    Ok(0) => return Err(changed(at)),
                    Ok(got) => done += got,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(read_error(e)),
                }
            }
            if segment.offset + segment.length as u64 == segment.size {
                let mut probe = [0u8; 1];
                if segment
                    .file
                    .read_at(&mut probe, segment.size)
                    .map_err(read_error)?
                    != 0
                {
                    // Say how large the file has become.
                    let now = segment.file.metadata().map_or(0, |m| m.len());
                    return Err(changed(now.max(segment.size + 1)));
                }
            }
        }
        Ok(batch)
    }
}

/// Read buffers per layer: a few batches read ahead while one is written.
const BUFFERS: usize = 6;

/// A layer's files being read ahead by a reader thread: full batches arrive on `full`, spent
/// buffers go back on `empty`. Dropping it stops the reader.
struct Reading {
    full: Receiver<(u64, Result<Batch>)>,
    empty: Sender<Vec<u8>>,
}

impl LayerTree {
    /// Starts the reader thread (`lg-read`) on `scope`.
    fn start_reading<'scope>(&'scope self, scope: &'scope Scope<'scope, '_>) -> Result<Reading> {
        // Unbounded, yet never holding more than BUFFERS batches: each holds a buffer.
        let (full_tx, full) = channel::<(u64, Result<Batch>)>();
        let (empty, empty_rx) = channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            let _ = empty.send(Vec::with_capacity(BATCH_BYTES));
        }
        std::thread::Builder::new()
            .name("lg-read".to_string())
            .spawn_scoped(scope, move || self.read_files(&full_tx, &empty_rx))
            .map_err(|e| Error::write("the image (starting a reader thread)", e))?;
        Ok(Reading { full, empty })
    }

    /// Writes the tarball: headers from the entries the reader sends, content from its
    /// batches.
    fn write_reading(&self, reading: Reading, out: &mut dyn Write) -> Result<()> {
        let write_error = |e: std::io::Error| Error::write("the image", e);
        let stopped = || {
            Error::write(
                "the image",
                std::io::Error::other("the file reader stopped unexpectedly"),
            )
        };
        let mut queue: std::collections::VecDeque<Entry> = Default::default();
        let mut data: Vec<u8> = Vec::new();
        let mut at = 0;
        // Batches read side by side arrive in any order: they wait here for their turn.
        let mut early: std::collections::BTreeMap<u64, Result<Batch>> = Default::default();
        let mut next = 0;
        let mut next_in_order = || -> Option<Result<Batch>> {
            loop {
                if let Some(batch) = early.remove(&next) {
                    next += 1;
                    return Some(batch);
                }
                let (place, batch) = reading.full.recv().ok()?;
                early.insert(place, batch);
            }
        };
        // The next batch: its entries join the queue, its data continues the stream.
        let mut receive = |queue: &mut std::collections::VecDeque<Entry>,
                           data: &mut Vec<u8>,
                           at: &mut usize|
         -> Result<bool> {
            match next_in_order() {
                Some(batch) => {
                    let batch = batch?;
                    queue.extend(batch.entries);
                    let mut used = std::mem::replace(data, batch.data);
                    used.clear();
                    let _ = reading.empty.send(used);
                    *at = 0;
                    Ok(true)
                }
                None => Ok(false),
            }
        };
        loop {
            let Some(entry) = queue.pop_front() else {
                if receive(&mut queue, &mut data, &mut at)? {
                    continue;
                }
                break;
            };
            self.dialect
                .write_header(out, &self.header(&entry))
                .map_err(write_error)?;
            if entry.kind != Kind::File {
                continue;
            }
            if self.content_source(&entry).is_some() {
                let mut left = entry.size;
                while left > 0 {
                    if at == data.len() && !receive(&mut queue, &mut data, &mut at)? {
                        return Err(stopped());
                    }
                    let take = (data.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.write_all(&data[at..at + take]).map_err(write_error)?;
                    at += take;
                    left -= take as u64;
                }
            }
            out.write_all(&[0; tarball::BLOCK as usize][..tarball::padding(entry.size)])
                .map_err(write_error)?;
        }
        let mut end = self.end_len;
        while end > 0 {
            let now = end.min(tarball::END_OF_ARCHIVE.len() as u64);
            out.write_all(&tarball::END_OF_ARCHIVE[..now as usize])
                .map_err(write_error)?;
            end -= now;
        }
        Ok(())
    }
}

impl TarStream for LayerTree {
    fn tar_len(&self) -> u64 {
        self.length
    }

    /// Writes the tarball. A reader thread walks the entries and reads file contents ahead
    /// into a few reused buffers while this thread writes them (and, through `out`, hashes and
    /// compresses), so reading overlaps the rest and memory stays bounded.
    fn write_to(&self, out: &mut dyn Write) -> Result<()> {
        // An early return drops the reading first, which stops the reader before the scope
        // waits for it.
        std::thread::scope(|scope| self.write_reading(self.start_reading(scope)?, out))
    }

    /// Starts the reader now; what it reads waits in its buffers until the writer comes.
    fn read_ahead<'scope>(&'scope self, scope: &'scope Scope<'scope, '_>) -> StartedTar<'scope> {
        let reading = self.start_reading(scope);
        Box::new(move |out| self.write_reading(reading?, out))
    }
}

/// Calls `f` on `source` (file, symlink or directory, recursively) as the entry `name`, in
/// tarball order: a directory, then its children sorted by name. Modes are the NAR model's, or
/// with nixpkgs' format the files' own permission bits.
fn walk(
    source: &Path,
    name: Vec<u8>,
    compat: TarCompat,
    f: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    let meta = fs::symlink_metadata(source).map_err(|e| Error::io("reading", source, e))?;
    let file_type = meta.file_type();
    let own_mode = meta.permissions().mode() & 0o7777;
    if file_type.is_dir() {
        let mut dir_name = name;
        dir_name.push(b'/');
        let mode = match compat {
            TarCompat::None => 0o555,
            TarCompat::Nixpkgs => own_mode,
        };
        f(&Entry::directory(dir_name.clone(), mode))?;
        for child in sorted_children(source, compat)? {
            let mut child_name = dir_name.clone();
            child_name.extend_from_slice(child.as_bytes());
            walk(&source.join(&child), child_name, compat, f)?;
        }
    } else if file_type.is_file() {
        let mode = match compat {
            TarCompat::None if own_mode & 0o111 != 0 => 0o555,
            TarCompat::None => 0o444,
            TarCompat::Nixpkgs => own_mode,
        };
        f(&Entry::file(name, mode, meta.len(), Source::Named))?;
    } else if file_type.is_symlink() {
        let target =
            fs::read_link(source).map_err(|e| Error::io("reading the symlink", source, e))?;
        let mut entry = Entry::symlink(name, target.as_os_str().as_bytes().to_vec());
        if compat == TarCompat::Nixpkgs {
            entry.mode = own_mode;
        }
        f(&entry)?;
    } else {
        return Err(special_file(source, &meta, "a store path"));
    }
    Ok(())
}

/// Opens a file of the store or an extra directory for reading its content: never through a
/// symlink and never blocking (a file replaced by a FIFO or device since the scan opens at
/// once), then refused unless the open descriptor is a regular file.
fn open_regular_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(special_file(path, &meta, "a layer"));
    }
    Ok(file)
}

/// A directory's entry names, sorted bytewise (readdir's order is the filesystem's whim), or
/// as Python sorts them.
fn sorted_children(dir: &Path, compat: TarCompat) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
        .map_err(|e| Error::io("reading the directory", dir, e))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("reading the directory", dir, e))?;
    match compat {
        TarCompat::None => names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes())),
        TarCompat::Nixpkgs => names
            .sort_unstable_by(|a, b| python_chars(a.as_bytes()).cmp(python_chars(b.as_bytes()))),
    }
    Ok(names)
}

/// A file name as Python sees it: the code points of its UTF-8, each byte that is not UTF-8 a
/// surrogate U+DC80..U+DCFF (`surrogateescape`). Python sorts names by these, which differs
/// from bytewise order only for names that are not UTF-8.
fn python_chars(name: &[u8]) -> impl Iterator<Item = u32> + '_ {
    name.utf8_chunks().flat_map(|chunk| {
        let valid = chunk.valid().chars().map(u32::from);
        let invalid = chunk.invalid().iter().map(|&b| 0xDC00 + u32::from(b));
        valid.chain(invalid)
    })
}

/// The error for a socket, fifo or device where only files, directories and symlinks may be.
fn special_file(path: &Path, meta: &fs::Metadata, place: &str) -> Error {
    let file_type = meta.file_type();
    let what = if file_type.is_socket() {
        "a socket"
    } else if file_type.is_fifo() {
        "a fifo"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "a special file"
    };
    Error::input(
        shown_path(path),
        format!("it is {what}; {place} holds only regular files, directories and symlinks"),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    /// Options for tests: mtime 1, root owner, the store under `root`.
    pub(crate) fn options(root: &Path) -> LayerOptions {
        LayerOptions {
            mtime: 1,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            store_root: Some(root.to_path_buf()),
            parallel_reads: false,
            tar_compat: TarCompat::None,
        }
    }

    #[test]
    fn python_order_differs_from_bytes_only_off_utf8() {
        let order = |a: &[u8], b: &[u8]| python_chars(a).cmp(python_chars(b));
        assert_eq!(order(b"a-b", b"a.b"), std::cmp::Ordering::Less);
        assert_eq!(order("é".as_bytes(), b"z"), std::cmp::Ordering::Greater);
        // U+E000 is bytes EE 80 80, after 0xDD..; as Python sees them the raw byte 0xFF
        // (a surrogate, U+DCFF) sorts first.
        assert_eq!(
            order(b"\xff", "\u{e000}".as_bytes()),
            std::cmp::Ordering::Less
        );
        assert_eq!(
            b"\xff".as_slice().cmp("\u{e000}".as_bytes()),
            std::cmp::Ordering::Greater
        );
    }

    #[test]
    fn nixpkgs_layers_keep_the_plan_order_absolute_names_and_own_modes() {
        let root = tempfile::tempdir().unwrap();
        let first = format!("/nix/store/{HASH}-zzz");
        let second = format!("/nix/store/{HASH}-aaa");
        for path in [&first, &second] {
            let dir = root.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(dir.join("sub")).unwrap();
            fs::write(dir.join("sub/f"), "x").unwrap();
            fs::set_permissions(dir.join("sub/f"), fs::Permissions::from_mode(0o640)).unwrap();
        }
        let options = LayerOptions {
            tar_compat: TarCompat::Nixpkgs,
            ..options(root.path())
        };
        let tree = LayerTree::for_store_paths("/nix/store", &[&first, &second], &options).unwrap();
        let bytes = tar_bytes(&tree);
        assert_eq!(bytes.len() % 10240, 0);
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                (name, e.header().mode().unwrap())
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "/nix/".to_string(),
                "/nix/store/".to_string(),
                format!("{first}/"),
                format!("{first}/sub/"),
                format!("{first}/sub/f"),
                format!("{second}/"),
                format!("{second}/sub/"),
                format!("{second}/sub/f"),
            ]
        );
        assert_eq!(entries[4].1, 0o640, "the file's own mode");
        // The cache tells the formats apart.
        let hashed = [(first.as_str(), None)];
        assert_ne!(
            store_layer_key("/nix/store", &hashed, &options),
            store_layer_key("/nix/store", &hashed, &super::tests::options(root.path()))
        );
    }

    fn tar_bytes(tree: &LayerTree) -> Vec<u8> {
        let mut out = Vec::new();
        tree.write_to(&mut out).unwrap();
        assert_eq!(
            out.len() as u64,
            tree.tar_len(),
            "length from metadata matches"
        );
        out
    }

    fn listing(bytes: &[u8]) -> Vec<(String, u32, Option<String>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    e.header().mode().unwrap(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_depth_first_sorted_with_nar_modes() {
        let root = tempfile::tempdir().unwrap();
        let store_path = format!("/nix/store/{HASH}-pkg");
        let dir = root.path().join(store_path.trim_start_matches('/'));
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::create_dir_all(dir.join("a-b")).unwrap();
        fs::write(dir.join("a/x"), "x").unwrap();
        fs::write(dir.join("a-b/run"), "#!/bin/sh").unwrap();
        fs::set_permissions(dir.join("a-b/run"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("../a/x", dir.join("link")).unwrap();
        let tree = LayerTree::for_store_paths("/nix/store", &[&store_path], &options(root.path()))
            .unwrap();
        let base = format!("nix/store/{HASH}-pkg");
        assert_eq!(
            listing(&tar_bytes(&tree)),
            vec![
                ("nix/".to_string(), 0o755, None),
                ("nix/store/".to_string(), 0o755, None),
                (format!("{base}/"), 0o555, None),
                // "a" sorts before "a-b" as a name, so its contents come before "a-b"
                (format!("{base}/a/"), 0o555, None),
                (format!("{base}/a/x"), 0o444, None),
                (format!("{base}/a-b/"), 0o555, None),
                (format!("{base}/a-b/run"), 0o555, None),
                (format!("{base}/link"), 0o777, Some("../a/x".to_string())),
            ]
        );
    }

    /// Files read by pool tasks, several batches at once, make the same tarball as read one
    /// after another; a file that changed is named the same way.
    #[test]
    fn parallel_reads_give_the_same_bytes_and_errors() {
        let root = tempfile::tempdir().unwrap();
        let store_path = format!("/nix/store/{HASH}-pkg");
        let dir = root.path().join(store_path.trim_start_matches('/'));
        fs::create_dir_all(dir.join("many")).unwrap();
        for i in 0..1500 {
            fs::write(dir.join(format!("many/{i:04}")), vec![i as u8; i % 700]).unwrap();
        }
        // Files spanning batches, one ending exactly on a batch's end.
        let big: Vec<u8> = (0..3 * BATCH_BYTES + 77).map(|i| (i % 251) as u8).collect();
        fs::write(dir.join("big"), &big).unwrap();
        fs::write(dir.join("exact"), &big[..BATCH_BYTES]).unwrap();
        fs::write(dir.join("empty"), b"").unwrap();
        let sequential = options(root.path());
        let parallel = LayerOptions {
            parallel_reads: true,
            ..sequential.clone()
        };
        let tree = |options: &LayerOptions| {
            LayerTree::for_store_paths("/nix/store", &[&store_path], options).unwrap()
        };
        // The reader thread hands batches to the global pool; the writer puts them in order.
        assert!(tar_bytes(&tree(&parallel)) == tar_bytes(&tree(&sequential)));
        let trees = [tree(&sequential), tree(&parallel)];
        for (now, found) in [
            (BATCH_BYTES, BATCH_BYTES as u64),
            (4 * BATCH_BYTES, 4 * BATCH_BYTES as u64),
        ] {
            fs::write(dir.join("big"), vec![1u8; now]).unwrap();
            for tree in &trees {
                let err = tree.write_to(&mut Vec::new()).unwrap_err();
                assert!(
                    err.message().contains(&format!(
                        "read {found} bytes where {} were expected",
                        big.len()
                    )),
                    "{}",
                    err.message()
                );
            }
        }
    }

    #[test]
    fn owner_names_are_written_on_store_entries_when_given() {
        let root = tempfile::tempdir().unwrap();
        let store_path = format!("/nix/store/{HASH}-pkg");
        let dir = root.path().join(store_path.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), "f").unwrap();
        let names = |options: &LayerOptions| -> Vec<(String, String)> {
            let tree = LayerTree::for_store_paths("/nix/store", &[&store_path], options).unwrap();
            let bytes = tar_bytes(&tree);
            let mut archive = tar::Archive::new(&bytes[..]);
            archive
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let h = e.header();
                    (
                        String::from_utf8_lossy(h.username_bytes().unwrap()).into_owned(),
                        String::from_utf8_lossy(h.groupname_bytes().unwrap()).into_owned(),
                    )
                })
                .collect()
        };
        let plain = options(root.path());
        assert!(
            names(&plain)
                .iter()
                .all(|(u, g)| u.is_empty() && g.is_empty())
        );
        let named = LayerOptions {
            uname: "root".into(),
            gname: "wheel".into(),
            ..options(root.path())
        };
        let all = names(&named);
        assert_eq!(all.len(), 4);
        assert!(
            all.iter().all(|(u, g)| u == "root" && g == "wheel"),
            "{all:?}"
        );
        // The names are part of the cache key.
        let key = |o: &LayerOptions| store_layer_key("/nix/store", &[(&store_path, None)], o);
        assert_ne!(key(&plain), key(&named));
    }

    #[test]
    fn special_files_are_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        let store_path = format!("/nix/store/{HASH}-pkg");
        let dir = root.path().join(store_path.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = LayerTree::for_store_paths("/nix/store", &[&store_path], &options(root.path()))
            .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "{}: it is a fifo; a store path holds only regular files, directories and symlinks",
                fifo.display()
            )
        );
    }

    #[test]
    fn a_file_that_changes_after_the_scan_is_named_with_both_sizes() {
        let root = tempfile::tempdir().unwrap();
        let store_path = format!("/nix/store/{HASH}-glibc");
        let dir = root.path().join(store_path.trim_start_matches('/'));
        fs::create_dir_all(dir.join("lib")).unwrap();
        let file = dir.join("lib/libc.so.6");
        fs::write(&file, vec![1u8; 3000]).unwrap();
        let tree = LayerTree::for_store_paths("/nix/store", &[&store_path], &options(root.path()))
            .unwrap();
        for (now, found) in [(1000usize, 1000u64), (5000, 5000)] {
            fs::write(&file, vec![2u8; now]).unwrap();
            let err = tree.write_to(&mut Vec::new()).unwrap_err();
            assert_eq!(
                err.message(),
                format!(
                    "{}: read {found} bytes where 3000 were expected: the store changed while \
                     the image was written",
                    file.display()
                )
            );
            assert!(matches!(err.kind(), ErrorKind::StoreChanged { .. }));
        }
    }

    #[test]
    fn a_file_replaced_by_a_fifo_after_the_scan_is_refused_without_hanging() {
        let root = tempfile::tempdir().unwrap();
        let store_path = format!("/nix/store/{HASH}-racy");
        let dir = root.path().join(store_path.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("data");
        fs::write(&file, "").unwrap();
        let tree = LayerTree::for_store_paths("/nix/store", &[&store_path], &options(root.path()))
            .unwrap();
        fs::remove_file(&file).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success());
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(tree.write_to(&mut Vec::new()).map_err(|e| e.message()));
        });
        let outcome = result
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("writing the layer hung on the FIFO");
        assert_eq!(
            outcome.unwrap_err(),
            format!(
                "{}: it is a fifo; a store path holds only regular files, directories and symlinks",
                file.display()
            )
        );
        // Between the second walk's look at a file and its open, the file may still change:
        // the open itself neither blocks on a FIFO nor follows a symlink.
        let (done, result) = std::sync::mpsc::channel();
        let fifo = file.clone();
        std::thread::spawn(move || {
            let _ = done.send(
                open_regular_file(&fifo)
                    .map(|_| ())
                    .map_err(|e| e.message()),
            );
        });
        let opened = result
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("opening the FIFO blocked");
        assert!(
            opened
                .unwrap_err()
                .contains("it is a fifo; a layer holds only")
        );
        let link = dir.join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(
            open_regular_file(&link).is_err(),
            "a symlink is not followed"
        );
    }

    #[test]
    fn missing_paths_are_named() {
        let root = tempfile::tempdir().unwrap();
        let store_path = format!("/nix/store/{HASH}-gone");
        let err = check_sources([store_path.as_str()], &options(root.path())).unwrap_err();
        assert!(err.message().contains(&store_path), "{err}");
        assert!(err.message().contains("No such file or directory"), "{err}");
    }
}
