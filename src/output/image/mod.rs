//! The image formats: a docker-archive (`docker_archive`), an OCI layout or oci-archive
//! (`oci`), and the documents both and the registry push share (`manifest`). A writer gets its
//! layers' blobs from `super::blobs`, in index order, and only encodes its format around them.

pub mod docker_archive;
pub mod manifest;
pub mod oci;
pub mod referrers;

use std::io::Write;

use super::blobs::LayerSet;
use crate::digest::{BlobInfo, Digest};
use crate::error::{Error, Result};
use crate::image_spec::Descriptor;
use crate::tarball::{self, Header, Kind};

/// What the writers need from the rest of the pipeline: the layers, the config once the
/// layers' uncompressed digests are known, and the documents about the finished image.
pub trait ImageSource: LayerSet {
    fn config(&self, diff_ids: &[Digest]) -> Result<Vec<u8>>;

    /// Documents to store beside the image (an SBOM, provenance), made once the image they
    /// describe is: none unless asked for.
    fn attachments(&self, _subject: &Subject<'_>) -> Result<Vec<Attachment>> {
        Ok(Vec::new())
    }
}

/// The finished image, as the documents about it name it.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub name: &'a str,
    pub tags: &'a [String],
    /// Its manifest, where the format has one (a docker-archive has none a registry would
    /// know: there the config digest, Docker's image id, names the image).
    pub manifest: Option<&'a Descriptor>,
    pub config_digest: &'a Digest,
    pub layers: &'a [BlobInfo],
}

/// A document about the image, stored beside it: an OCI 1.1 artifact whose subject is the
/// image manifest (layouts and registries), or a file (docker-archives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The document's media type, and the artifact's type.
    pub media_type: String,
    /// Its file name in a docker-archive, and its title in an artifact.
    pub file_name: String,
    /// When the document was made (RFC 3339; the image's `--created`).
    pub created: String,
    pub content: Vec<u8>,
}

/// What an image is called and when its archive's own entries were made.
#[derive(Clone, Copy, Debug)]
pub struct Naming<'a> {
    pub name: &'a str,
    /// Its tags, the first being its main one; none: one derived from the content.
    pub tags: &'a [String],
    /// mtime of an archive's own entries (manifest, config, layer files).
    pub mtime: u64,
}

impl Naming<'_> {
    /// The tags given, or one from the config digest, which covers every layer's content, so
    /// that one tag always names one image.
    pub fn tags_for(&self, config_digest: &Digest) -> Vec<String> {
        tags_or_derived(self.tags, config_digest)
    }
}

/// The tags given, or without any one from `digest` (a config's or an index's).
pub fn tags_or_derived(tags: &[String], digest: &Digest) -> Vec<String> {
    if tags.is_empty() {
        vec![digest.hex()[..32].to_string()]
    } else {
        tags.to_vec()
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub name: String,
    /// Every tag, the main one first.
    pub tags: Vec<String>,
    pub config_digest: Digest,
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

/// What `index` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexWritten {
    /// The digest of the image index (what a registry would name the multi-platform image).
    pub digest: Digest,
    pub tags: Vec<String>,
}

fn write_error(e: std::io::Error) -> Error {
    Error::write("the image", e)
}

/// The header of a file member of an archive (docker-archive, oci-archive).
fn write_entry_header(out: &mut dyn Write, name: &str, size: u64, mtime: u64) -> Result<()> {
    let header = Header::archive_member(name.as_bytes(), Kind::File, size, mtime);
    tarball::write_header(out, &header).map_err(write_error)
}

/// The header of a directory member of an archive.
fn write_dir_header(out: &mut dyn Write, name: &str, mtime: u64) -> Result<()> {
    let header = Header::archive_member(name.as_bytes(), Kind::Directory, 0, mtime);
    tarball::write_header(out, &header).map_err(write_error)
}

/// The zeros that end a member of `size` bytes on a block boundary.
fn write_padding(out: &mut dyn Write, size: u64) -> Result<()> {
    out.write_all(&[0; tarball::BLOCK as usize][..tarball::padding(size)])
        .map_err(write_error)
}

/// A whole small file member.
fn write_file(out: &mut dyn Write, name: &str, content: &[u8], mtime: u64) -> Result<()> {
    write_entry_header(out, name, content.len() as u64, mtime)?;
    out.write_all(content).map_err(write_error)?;
    write_padding(out, content.len() as u64)
}

/// The two zero blocks that end an archive.
fn write_end(out: &mut dyn Write) -> Result<()> {
    out.write_all(&tarball::END_OF_ARCHIVE).map_err(write_error)
}

/// Copies a scratch file or blob into the archive.
fn copy_all(from: &mut dyn std::io::Read, to: &mut dyn Write) -> Result<u64> {
    std::io::copy(from, to).map_err(write_error)
}
