//! Stage 6: the image on disk or on stdout — a docker-archive (what `docker load` reads) or an OCI
//! image layout (a directory, or an `oci-archive` tar), layers plain, gzip or zstd.
//!
//! Output is atomic: it is written under a temporary name next to the target and renamed at the
//! end, so an error leaves nothing behind. Only stdout cannot be taken back; everything that can
//! fail early (the closure, the plan, missing store paths) is checked before the first byte.

mod blob;
pub mod cache;
pub mod daemon;
mod docker_archive;
mod lanes;
mod oci;
mod parallel;
pub mod reference;
pub mod registry;
pub mod temporary;
mod threaded;
pub mod transport;

use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use blob::{BlobInfo, Compression, HashingWriter, hex, sha256_digest};
pub use docker_archive::StoredImage;
pub use oci::{IndexWritten, PlatformImage};

use crate::codec::Codec;
use crate::error::{Error, Result, Setting, shown_path};
use crate::tarball::{self, TarStream};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Stdout,
    /// A repository in a registry (`docker://`), pushed to over the distribution API.
    Registry(transport::Repository),
    /// The local Docker Engine (`docker-daemon:`), loaded through its API.
    DockerDaemon,
}

impl Target {
    /// The target in words, for messages.
    pub fn describe(&self) -> String {
        match self {
            Target::File(path) => path.display().to_string(),
            Target::Stdout => "stdout".to_string(),
            Target::Registry(repository) => format!("docker://{}", repository.full_name()),
            Target::DockerDaemon => "the Docker daemon".to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    DockerArchive,
    Oci,
}

#[derive(Clone, Debug)]
pub struct OutputOptions {
    pub target: Target,
    pub format: Format,
    pub compression: Compression,
    /// Compression of the whole archive (docker-archive or oci-archive), as dockerTools'
    /// `compressor` does; layers inside keep `compression`.
    pub archive_compression: Compression,
    pub name: String,
    /// The image's tags, the first being its main one; none: one derived from the content.
    pub tags: Vec<String>,
    /// Add the pre-1.10 metadata (`repositories`, a directory per layer) to a docker-archive.
    pub docker_legacy: bool,
    /// mtime of the archive's own entries (manifest, config, layer files).
    pub mtime: u64,
    /// An OCI layout to a file: Some(true) an oci-archive, Some(false) a directory, None by
    /// the name (a `.tar` is an archive).
    pub oci_archive: Option<bool>,
    /// How to reach a registry target.
    pub push: registry::PushOptions,
    /// What earlier builds learnt of their layers.
    pub cache: Option<cache::LayerCache>,
    /// One line per layer on stderr as it is placed (pushes).
    pub report_layers: bool,
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

/// A layer as the writers get it.
pub enum Layer<'a> {
    /// A tarball to compress as the options say.
    Tar(&'a dyn TarStream),
    /// A blob to copy unchanged.
    Blob(&'a dyn BlobSource),
}

/// What the writers need from the rest of the pipeline.
pub trait ImageSource: Sync {
    fn layer_count(&self) -> usize;
    /// Layer `index`, ready to stream.
    fn layer(&self, index: usize) -> Result<Layer<'_>>;
    /// The config blob, once the layers' uncompressed digests are known.
    fn config(&self, diff_ids: &[String]) -> Result<Vec<u8>>;
    /// A key naming everything that decides a tar layer's bytes, for the layer cache; None
    /// when the layer cannot be named without reading it.
    fn layer_key(&self, _index: usize) -> Option<String> {
        None
    }
    /// Layer `index` was not written: the destination holds it already (for progress).
    fn skipped(&self, _index: usize) {}
}

/// How many bytes layer `index` has to move (its tarball or its blob), to start the largest
/// first; 0 when it cannot be told.
fn layer_size(source: &dyn ImageSource, index: usize) -> u64 {
    match source.layer(index) {
        Ok(Layer::Tar(tar)) => tar.tar_len(),
        Ok(Layer::Blob(blob)) => blob.size(),
        Err(_) => 0,
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub name: String,
    /// Every tag, the main one first.
    pub tags: Vec<String>,
    pub config_digest: String,
    pub layers: Vec<BlobInfo>,
}

impl Written {
    /// `name:tag` for each tag.
    pub fn references(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|tag| format!("{}:{tag}", self.name))
            .collect()
    }
}

/// The tags of an image: the ones given, or without any one from its config digest, which
/// covers every layer's content, so that one tag always names one image.
fn image_tags(options: &OutputOptions, config_digest: &str) -> Vec<String> {
    tags_or_derived(&options.tags, config_digest)
}

/// The tags given, or without any one from `digest` (a config's or an index's).
pub(crate) fn tags_or_derived(tags: &[String], digest: &str) -> Vec<String> {
    if tags.is_empty() {
        vec![digest.trim_start_matches("sha256:")[..32].to_string()]
    } else {
        tags.to_vec()
    }
}

impl OutputOptions {
    /// Checks the options before any work is done.
    pub fn check(&self) -> Result<()> {
        reference::check_name(&self.name).map_err(|e| e.about(Setting::Name))?;
        for (i, tag) in self.tags.iter().enumerate() {
            reference::check_tag(tag).map_err(|e| e.about(Setting::Tag))?;
            if self.tags[..i].contains(tag) {
                return Err(
                    Error::value(format!("the tag {tag} is given twice")).about(Setting::Tag)
                );
            }
        }
        if self.docker_legacy && self.format != Format::DockerArchive {
            return Err(Error::value(
                "the pre-1.10 metadata belongs to a docker-archive, not to an OCI layout",
            )
            .about(Setting::DockerLegacy));
        }
        if self.format == Format::DockerArchive && self.compression.codec() == Codec::Zstd {
            let why = match self.target {
                Target::Registry(_) => {
                    "zstd-compressed layers need OCI media types (Docker's manifest has none \
                     for them): push with --format oci"
                }
                _ => {
                    "zstd-compressed layers need the OCI format: docker load does not read \
                     them from a docker-archive"
                }
            };
            return Err(Error::value(why).about(Setting::Compression));
        }
        if is_layout_dir(self.format, &self.target, self.oci_archive)
            && self.archive_compression != Compression::None
        {
            return Err(Error::value(
                "compressing the whole archive needs an archive: a docker-archive, or an OCI \
                 layout written as a .tar",
            )
            .about(Setting::ArchiveCompression));
        }
        if matches!(self.target, Target::Registry(_) | Target::DockerDaemon) {
            if self.archive_compression != Compression::None {
                return Err(Error::value(
                    "a registry or the Docker daemon takes layers, not a compressed archive",
                )
                .about(Setting::ArchiveCompression));
            }
            if self.docker_legacy {
                return Err(
                    Error::value("the pre-1.10 metadata belongs to a docker-archive file")
                        .about(Setting::DockerLegacy),
                );
            }
        }
        if self.target == Target::DockerDaemon && self.format != Format::DockerArchive {
            return Err(Error::value(
                "the Docker daemon loads docker-archives: leave --format out",
            )
            .about(Setting::Format));
        }
        if self.target == Target::Stdout && std::io::stdout().is_terminal() {
            return Err(Error::value(
                "stdout is a terminal: pipe the image (e.g. into `docker load`) or write it to \
                 a file",
            )
            .about(Setting::Output));
        }
        check_target(&self.target)
    }

    /// Where scratch files go: next to the output file (on the filesystem that will hold the
    /// result, where the user made room), or `$TMPDIR` when the image goes to stdout. Every
    /// scratch file is unnamed or removed on drop, so nothing is left behind.
    pub fn scratch_dir(&self) -> PathBuf {
        scratch_dir_for(&self.target)
    }

    /// Whether an OCI image at `path` is an oci-archive rather than a layout directory.
    fn is_oci_archive(&self, path: &Path) -> bool {
        self.oci_archive.unwrap_or_else(|| is_tar_name(path))
    }
}

/// Whether the image goes to an OCI layout directory (see `OutputOptions::oci_archive`).
pub fn is_layout_dir(format: Format, target: &Target, oci_archive: Option<bool>) -> bool {
    match target {
        Target::File(path) => {
            format == Format::Oci && !oci_archive.unwrap_or_else(|| is_tar_name(path))
        }
        _ => false,
    }
}

/// Where scratch files go for output to `target` (see [`OutputOptions::scratch_dir`]).
pub fn scratch_dir_for(target: &Target) -> PathBuf {
    match target {
        Target::File(path) => parent_dir(path),
        Target::Stdout | Target::Registry(_) | Target::DockerDaemon => std::env::temp_dir(),
    }
}

pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes the image.
pub fn write_image(source: &dyn ImageSource, options: &OutputOptions) -> Result<Written> {
    options.check()?;
    let free = check_room(source, options)?;
    let archive = options.archive_compression;
    let scratch = options.scratch_dir();
    let written = match (&options.format, &options.target) {
        (Format::DockerArchive, Target::Stdout) => to_stdout(archive, |out| {
            docker_archive::write(source, options, out, &scratch)
        }),
        (Format::DockerArchive, Target::File(path)) => atomic_file(path, |file| {
            to_file(file, path, archive, |out| {
                docker_archive::write(source, options, out, &scratch)
            })
        }),
        (Format::Oci, Target::File(path)) if !options.is_oci_archive(path) => {
            oci::write_layout_dir(source, options, path)
        }
        (Format::Oci, Target::File(path)) => atomic_file(path, |file| {
            to_file(file, path, archive, |out| {
                oci::write_archive(source, options, out, &scratch)
            })
        }),
        (Format::Oci, Target::Stdout) => to_stdout(archive, |out| {
            oci::write_archive(source, options, out, &scratch)
        }),
        (_, Target::Registry(repository)) => {
            registry::push(source, options, repository, &|index, info, fate| {
                if options.report_layers {
                    eprintln!("{}", registry::describe_fate(index, info, fate));
                }
            })
        }
        (_, Target::DockerDaemon) => load_into_daemon(source, options, &scratch),
    };
    written.map_err(|e| explain_full(e, &options.target, free))
}

/// Streams the docker-archive into the Docker Engine.
fn load_into_daemon(
    source: &dyn ImageSource,
    options: &OutputOptions,
    scratch: &Path,
) -> Result<Written> {
    let endpoint = daemon::Endpoint::from_environment()?;
    let (written, loaded) = daemon::load(&endpoint, |out| {
        docker_archive::write(source, options, out, scratch)
    })?;
    // The Engine names what it loaded; it must be what we sent.
    for reference in written.references() {
        if !loaded.contains(&reference) {
            return Err(Error::value(format!(
                "the Docker daemon did not report loading {reference} (it said: {})",
                loaded.join(", ")
            )));
        }
    }
    Ok(written)
}

/// Writes images already made into one docker-archive (`merge`), at `target`, compressed as a
/// whole as asked; returns the number of distinct layers.
pub fn write_merged(
    images: &[StoredImage],
    target: &Target,
    archive_compression: Compression,
    mtime: u64,
) -> Result<usize> {
    write_stream(target, archive_compression, |out| {
        docker_archive::write_many(images, out, mtime)
    })
}

/// Writes a multi-platform image (`index`): an OCI layout directory at `target`, or an
/// oci-archive for a `.tar` name or stdout.
pub fn write_index(images: &[PlatformImage], output: &IndexOutput) -> Result<IndexWritten> {
    let IndexOutput {
        target,
        name,
        tags,
        archive_compression,
        mtime,
        push,
        report_layers,
    } = output;
    reference::check_name(name).map_err(|e| e.about(Setting::Name))?;
    for tag in tags {
        reference::check_tag(tag).map_err(|e| e.about(Setting::Tag))?;
    }
    let fill = |dir: &Path| oci::write_index_layout(images, name, tags, dir);
    match target {
        Target::Registry(repository) => {
            if *archive_compression != Compression::None {
                return Err(
                    Error::value("a registry takes images, not a compressed archive")
                        .about(Setting::ArchiveCompression),
                );
            }
            registry::push_index(images, repository, tags, push, &|index, info, fate| {
                if *report_layers {
                    eprintln!("{}", registry::describe_fate(index, info, fate));
                }
            })
        }
        Target::File(path) if !is_tar_name(path) => {
            check_target(target)?;
            if *archive_compression != Compression::None {
                return Err(Error::value(
                    "compressing the whole archive needs an archive: an OCI layout written as a \
                     .tar",
                )
                .about(Setting::ArchiveCompression));
            }
            let free = room_of(target);
            oci::into_new_dir(path, fill).map_err(|e| explain_full(e, target, free))
        }
        _ => {
            let scratch = scratch_dir_for(target);
            write_stream(target, *archive_compression, |out| {
                oci::into_archive(out, &scratch, *mtime, fill)
            })
        }
    }
}

/// Where `index` puts a multi-platform image, and under which name and tags.
#[derive(Clone, Debug)]
pub struct IndexOutput {
    pub target: Target,
    pub name: String,
    /// None: one from the index digest.
    pub tags: Vec<String>,
    /// Of an oci-archive as a whole.
    pub archive_compression: Compression,
    pub mtime: u64,
    /// How to reach a registry target.
    pub push: registry::PushOptions,
    /// One line per blob on stderr as it is placed (pushes).
    pub report_layers: bool,
}

/// Runs `write` into a file written atomically or into stdout (refused when it is a terminal),
/// behind a writer thread, compressed as a whole as asked: for outputs that are one stream.
pub fn write_stream<T>(
    target: &Target,
    compression: Compression,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    match target {
        Target::Stdout => {
            if std::io::stdout().is_terminal() {
                return Err(Error::value(
                    "stdout is a terminal: pipe the output or write it to a file",
                )
                .about(Setting::Output));
            }
            to_stdout(compression, write)
        }
        Target::File(path) => {
            check_target(target)?;
            let free = room_of(target);
            atomic_file(path, |file| to_file(file, path, compression, write))
                .map_err(|e| explain_full(e, target, free))
        }
        Target::Registry(_) | Target::DockerDaemon => Err(Error::value(format!(
            "this command writes a file or stdout, not {}",
            target.describe()
        ))
        .about(Setting::Output)),
    }
}

/// A filesystem without room for the image fails before the first byte, not after writing
/// what fits. A docker-archive written plain has a length known in advance (its layers'
/// lengths; config and manifest are small); compressed output's length is known only once
/// written, but the base image's layers, kept as they are, are a lower bound. Returns the room
/// there was, to explain a full filesystem later.
fn check_room(source: &dyn ImageSource, options: &OutputOptions) -> Result<Option<u64>> {
    let Target::File(path) = &options.target else {
        return Ok(None);
    };
    let dir = parent_dir(path);
    let Some(free) = free_bytes(&dir) else {
        return Ok(None);
    };
    let plain = options.compression == Compression::None
        && options.archive_compression == Compression::None
        && options.format == Format::DockerArchive
        && !options.docker_legacy;
    let mut needed = 0u64;
    for index in 0..source.layer_count() {
        let known = match source.layer(index)? {
            Layer::Tar(tar) if plain => tar.tar_len(),
            // Compressed: its length is known only once written.
            Layer::Tar(_) => continue,
            Layer::Blob(blob) => blob.size(),
        };
        // In a plain archive each layer is a member with a header; elsewhere count the bytes.
        let length = if plain {
            tarball::BLOCK + tarball::padded(known)
        } else {
            known
        };
        needed = needed.saturating_add(length);
    }
    // An image replacing a file of its own size frees that much only once renamed.
    if free < needed {
        let what = if plain {
            "the image needs"
        } else {
            "the base image's layers need"
        };
        return Err(Error::value(format!(
            "{what} at least {needed} bytes, but the filesystem of {} has {free} free",
            shown_path(&dir)
        ))
        .about(Setting::Output));
    }
    Ok(Some(free))
}

/// A full filesystem, said in words of the output and the room there was, whichever part of
/// the image was being written when it filled.
fn explain_full(error: Error, target: &Target, free: Option<u64>) -> Error {
    let Target::File(path) = target else {
        return error;
    };
    if !error.is_storage_full() {
        return error;
    }
    let room = free.map_or(String::new(), |free| {
        format!(" (it had {free} bytes free when the image was started)")
    });
    error
        .context(format!(
            "the filesystem of {} is full{room}",
            shown_path(&parent_dir(path))
        ))
        .about(Setting::Output)
}

/// The room on the filesystem a file target goes to.
fn room_of(target: &Target) -> Option<u64> {
    match target {
        Target::File(path) => free_bytes(&parent_dir(path)),
        _ => None,
    }
}

/// Bytes available to us on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // The field types differ between platforms (u32 on some); widening is what is meant.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Some(blocks.saturating_mul(size))
}

/// A file target's directory must exist.
fn check_target(target: &Target) -> Result<()> {
    if let Target::File(path) = target {
        let parent = parent_dir(path);
        if !parent.is_dir() {
            return Err(Error::value(format!(
                "cannot write {}: the directory {} does not exist",
                shown_path(path),
                shown_path(&parent)
            ))
            .about(Setting::Output));
        }
    }
    Ok(())
}

/// Runs `write` with stdout behind a writer thread.
fn to_stdout<T>(
    compression: Compression,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    threaded::enlarge_stdout_pipe();
    let out = threaded::ThreadedWriter::new(std::io::stdout())
        .map_err(|e| Error::write("the image to stdout", e))?;
    compressed(out, compression, "the image to stdout", write)
}

/// Runs `write` with `file` behind a writer thread.
fn to_file<T>(
    file: &mut std::fs::File,
    path: &Path,
    compression: Compression,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let handle = file
        .try_clone()
        .map_err(|e| Error::io("writing", path, e))?;
    let out = threaded::ThreadedWriter::new(handle).map_err(|e| Error::io("writing", path, e))?;
    compressed(out, compression, &shown_path(path), write)
}

/// Runs `write` into `out`, compressing the whole stream as asked, and finishes both.
fn compressed<T>(
    out: threaded::ThreadedWriter,
    compression: Compression,
    what: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    let io_error = |e: std::io::Error| Error::write(what, e);
    let result;
    let out = match compression {
        Compression::None => {
            let mut out = out;
            result = write(&mut out)?;
            out
        }
        Compression::Gzip { level } => {
            let mut encoder = parallel::gzip(out, level);
            result = write(&mut encoder)?;
            encoder.finish().map_err(io_error)?
        }
        Compression::Zstd { level } => {
            let mut encoder = parallel::zstd(out, level);
            result = write(&mut encoder)?;
            encoder.finish().map_err(io_error)?
        }
    };
    out.finish().map_err(io_error)?;
    Ok(result)
}

fn is_tar_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tar")
}

/// Runs `write` into the file `path` names: an ordinary file (or none yet) is written under a
/// temporary name next to it and renamed over it when `write` succeeds, so on failure nothing
/// is left; a symlink's final target is written that way in its own directory (the link
/// stays); a FIFO or a device (`/dev/null`) is written through, as a stream, never replaced.
fn atomic_file<T>(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<T>) -> Result<T> {
    let path = match destination(path, 0)? {
        Destination::Stream(path) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("opening", &path, e))?;
            return write(&mut file);
        }
        Destination::Replace(path) => path,
    };
    let dir = parent_dir(&path);
    temporary::clear_stale(&dir);
    let mut temp = tempfile::Builder::new()
        .prefix(&temporary::prefix())
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("creating a temporary file in", &dir, e))?;
    let _registered = temporary::register(temp.path());
    let result = write(temp.as_file_mut())?;
    // Temporary files are private (0600); the image is an ordinary readable file.
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("setting the mode of", temp.path(), e))?;
    temp.persist(&path)
        .map_err(|e| Error::io("renaming the finished image to", &path, e.error))?;
    Ok(result)
}

/// How an output file is written.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// A regular file, or none yet: written beside and renamed over.
    Replace(PathBuf),
    /// A FIFO or a device: written through.
    Stream(PathBuf),
}

/// What `-o PATH` writes to, following symlinks (a few dozen hops at most).
fn destination(path: &Path, hops: usize) -> Result<Destination> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Destination::Replace(path.to_path_buf()));
        }
        Err(e) => return Err(Error::io("reading", path, e).about(Setting::Output)),
        Ok(meta) => meta,
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        if hops >= 40 {
            return Err(Error::value(format!(
                "{} is a chain of too many symlinks",
                shown_path(path)
            ))
            .about(Setting::Output));
        }
        let target = std::fs::read_link(path).map_err(|e| Error::io("reading", path, e))?;
        return destination(&parent_dir(path).join(target), hops + 1);
    }
    if kind.is_file() {
        Ok(Destination::Replace(path.to_path_buf()))
    } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        Ok(Destination::Stream(path.to_path_buf()))
    } else {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            "a socket"
        };
        Err(Error::value(format!(
            "{} is {what}, which cannot hold an image file",
            shown_path(path)
        ))
        .about(Setting::Output))
    }
}

/// Copies a scratch file or blob into the image.
pub(crate) fn copy_all(from: &mut dyn std::io::Read, to: &mut dyn Write) -> Result<u64> {
    std::io::copy(from, to).map_err(|e| Error::write("the image", e))
}
