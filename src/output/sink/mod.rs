//! Where bytes land: a file written atomically (under a temporary name beside it, renamed at
//! the end, so an error or a signal leaves nothing behind), a directory replaced whole, or
//! stdout; each behind a writer thread so that the writing never waits on the disk or the
//! pipe. Only stdout cannot be taken back; the commands check everything that can fail early
//! before the first byte.
//!
//! `-o` is replaced only when it is a regular file (or does not exist yet); a symlink's final
//! target is written in its own directory; a FIFO or a device is written through, never
//! replaced; a directory is replaced only when it holds an OCI layout (or is empty).

pub mod temporary;
mod threaded;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::compress::{Compression, compress_stream};
use super::destination::{Sink, parent_dir};
use crate::error::{Error, Result, Setting, shown_path};

/// Runs `write` into `sink` (a file written atomically, or stdout), compressed as a whole as
/// asked.
pub fn write_stream<T>(
    sink: &Sink,
    compression: Compression,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    match sink {
        Sink::Stdout => to_stdout(compression, write),
        Sink::File(path) => {
            check_dir(path)?;
            let free = free_bytes(&parent_dir(path));
            atomic_file(path, |file| to_file(file, path, compression, write))
                .map_err(|e| explain_full(e, path, free))
        }
    }
}

/// Runs `fill` on a new, empty directory that then becomes `path`, replacing an earlier OCI
/// layout or layer directory there (and nothing else).
pub fn write_dir<T>(path: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    check_dir(path)?;
    let free = free_bytes(&parent_dir(path));
    into_new_dir(path, fill).map_err(|e| explain_full(e, path, free))
}

/// Runs `fill` on a scratch directory in `scratch`, removed afterwards (also on a signal).
pub fn with_scratch_dir<T>(scratch: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    temporary::clear_stale(scratch);
    let temp = tempfile::Builder::new()
        .prefix(&temporary::prefix())
        .tempdir_in(scratch)
        .map_err(|e| Error::io("creating a scratch directory in", scratch, e))?;
    let _registered = temporary::register(temp.path());
    fill(temp.path())
}

/// The directory a file is to be written in must exist.
pub fn check_dir(path: &Path) -> Result<()> {
    let parent = parent_dir(path);
    if !parent.is_dir() {
        return Err(Error::value(format!(
            "cannot write {}: the directory {} does not exist",
            shown_path(path),
            shown_path(&parent)
        ))
        .about(Setting::Output));
    }
    Ok(())
}

/// Runs `fill` on a new, empty directory that then becomes the layout at `path`, replacing an
/// earlier layout there (and nothing else).
fn into_new_dir<T>(path: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let ours =
        path.join("oci-layout").is_file() || path.join(crate::image_spec::LAYER_JSON).is_file();
    if path.exists() && !ours {
        let empty_dir = fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
        if !empty_dir {
            return Err(Error::value(format!(
                "{} exists and is not an OCI layout or a layer directory; refusing to replace it",
                shown_path(path)
            ))
            .about(Setting::Output));
        }
    }
    let parent = parent_dir(path);
    temporary::clear_stale(&parent);
    let temp = tempfile::Builder::new()
        .prefix(&temporary::prefix())
        .tempdir_in(&parent)
        .map_err(|e| Error::io("creating a temporary directory in", &parent, e))?;
    let _registered = temporary::register(temp.path());
    let result = fill(temp.path())?;
    let finished = temp.keep();
    replace_dir(&finished, path).inspect_err(|_| {
        let _ = fs::remove_dir_all(&finished);
    })?;
    Ok(result)
}

/// Moves `new` to `path`; an old layout at `path` is removed only once the new one is there.
fn replace_dir(new: &Path, path: &Path) -> Result<()> {
    if !path.exists() {
        return fs::rename(new, path).map_err(|e| Error::io("renaming the image to", path, e));
    }
    let old: PathBuf = new.with_extension("old");
    fs::rename(path, &old)
        .map_err(|e| Error::io("moving the previous layout away from", path, e))?;
    fs::rename(new, path).map_err(|e| Error::io("renaming the image to", path, e))?;
    fs::remove_dir_all(&old).map_err(|e| Error::io("removing the previous layout at", &old, e))
}

/// Runs `write` with stdout behind a writer thread.
fn to_stdout<T>(
    compression: Compression,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    threaded::enlarge_stdout_pipe();
    let out = threaded::ThreadedWriter::new(std::io::stdout())
        .map_err(|e| Error::write("the image to stdout", e))?;
    finish(
        compress_stream(out, compression, "the image to stdout", write),
        "the image to stdout",
    )
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
    let what = shown_path(path);
    finish(compress_stream(out, compression, &what, write), &what)
}

/// Finishes the writer thread behind a stream that was written.
fn finish<T>(written: Result<(T, threaded::ThreadedWriter)>, what: &str) -> Result<T> {
    let (result, out) = written?;
    out.finish().map_err(|e| Error::write(what, e))?;
    Ok(result)
}

/// A full filesystem, said in words of the output and the room there was, whichever part of
/// the image was being written when it filled.
pub fn explain_full(error: Error, path: &Path, free: Option<u64>) -> Error {
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

/// Bytes available to us on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
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

/// Runs `write` into the file `path` names: an ordinary file (or none yet) is written under a
/// temporary name next to it and renamed over it when `write` succeeds, so on failure nothing
/// is left; a symlink's final target is written that way in its own directory (the link
/// stays); a FIFO or a device (`/dev/null`) is written through, as a stream, never replaced.
fn atomic_file<T>(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<T>) -> Result<T> {
    let path = match open_kind(path, 0)? {
        Opened::Stream(path) => {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("opening", &path, e))?;
            return write(&mut file);
        }
        Opened::Replace(path) => path,
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
enum Opened {
    /// A regular file, or none yet: written beside and renamed over.
    Replace(PathBuf),
    /// A FIFO or a device: written through.
    Stream(PathBuf),
}

/// What `-o PATH` writes to, following symlinks (a few dozen hops at most).
fn open_kind(path: &Path, hops: usize) -> Result<Opened> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Opened::Replace(path.to_path_buf()));
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
        return open_kind(&parent_dir(path).join(target), hops + 1);
    }
    if kind.is_file() {
        Ok(Opened::Replace(path.to_path_buf()))
    } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        Ok(Opened::Stream(path.to_path_buf()))
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
