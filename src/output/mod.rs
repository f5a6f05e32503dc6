//! Stage 6: the image where it runs — a docker-archive (what `docker load` reads), an OCI
//! layout (a directory, or an `oci-archive` tar), a registry, or the Docker daemon.
//!
//! Split by job, dependencies running one way (this module → `image` → `blobs` → `compress`
//! → `crate::digest`; `transport` → `image::manifest` and `blobs`):
//! - `destination`: where the image goes ([`Destination`]), resolved once from `-o` and the
//!   flags that go with it;
//! - `image`: the formats (docker-archive, OCI layout, their documents);
//! - `blobs`: how a layer becomes a blob, side by side, with the layer cache (its module doc
//!   describes the thread model);
//! - `compress`: deterministic parallel gzip and zstd;
//! - `transport`: references, the registry client and credentials, the Docker daemon;
//! - `sink`: files written atomically, directories replaced whole, stdout, scratch space.
//!
//! This module matches the destination to its writer. Everything that can fail early (the
//! closure, the plan, missing store paths, the room on the filesystem) fails before the first
//! byte; output to a file or directory is atomic.

mod blobs;
mod compress;
pub mod destination;
mod image;
pub(crate) mod sink;
pub(crate) mod transport;

use std::path::PathBuf;

pub use blobs::{BlobSource, CacheKey, LayerCache, LayerSet, LayerSource, Making, Shape};
pub use compress::Compression;
pub use destination::{Destination, DockerLayers, Format, MediaTypes, Sink};
pub use image::docker_archive::StoredImage;
pub use image::oci::PlatformImage;
pub use image::{Attachment, ImageSource, IndexWritten, Naming, Subject, Written};
pub use sink::temporary::install_signal_cleanup;

/// Writes a small document (a plan, an SBOM) to `path` as an image file is written: whole or
/// not at all (a temporary file renamed, removed on error or signal), replacing only a regular
/// file.
pub fn write_document(path: &std::path::Path, text: &str) -> crate::error::Result<()> {
    let sink = destination::Sink::File(path.to_path_buf());
    sink::write_stream(&sink, Compression::None, |out| {
        out.write_all(text.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| crate::error::Error::write(crate::error::shown_path(path), e))
    })
}
pub use transport::reference::Repository;
pub use transport::registry::PushOptions;
pub use transport::registry::client::ConnectOptions;
pub use transport::registry::credentials::{Credentials, Sources};
pub use transport::registry::signatures::{ImageReference, Verified, verify};

use crate::error::{Error, Result, Setting, shown_path};
use crate::tarball;
use destination::parent_dir;
use image::{docker_archive, oci};
use transport::{daemon, registry};

/// Everything about where and how an image is written.
#[derive(Clone, Debug)]
pub struct OutputOptions {
    pub destination: Destination,
    pub name: String,
    /// The image's tags, the first being its main one; none: one derived from the content.
    pub tags: Vec<String>,
    /// mtime of an archive's own entries (manifest, config, layer files).
    pub mtime: u64,
    /// How to reach a registry destination.
    pub push: PushOptions,
    /// What earlier builds learnt of their layers.
    pub cache: Option<LayerCache>,
    /// Make every layer the cache knows again, and compare.
    pub verify_cache: bool,
    /// One line per layer on stderr as it is placed (pushes).
    pub report_layers: bool,
}

impl OutputOptions {
    /// Where scratch files go (see [`Destination::scratch_dir`]).
    pub fn scratch_dir(&self) -> PathBuf {
        self.destination.scratch_dir()
    }

    fn naming(&self) -> Naming<'_> {
        Naming {
            name: &self.name,
            tags: &self.tags,
            mtime: self.mtime,
        }
    }

    fn making(&self) -> Making<'_> {
        Making {
            compression: self.destination.layer_compression(),
            cache: self.cache.as_ref(),
            verify_cache: self.verify_cache,
        }
    }

    /// Prints a pushed blob's fate, when asked to.
    fn report(&self, index: usize, info: &crate::digest::BlobInfo, fate: &registry::Fate) {
        if self.report_layers {
            eprintln!("{}", registry::describe_fate(index, info, fate));
        }
    }
}

/// The layer cache a build uses: `dir` when given (a push's, or an OCI layout directory's,
/// whose unchanged layers are linked from the layout it replaces), else for a push the default
/// one (not used when it cannot be made, as in a Nix build's sandbox); none when `disabled`.
/// `verify` (re-make and compare what the cache knows) needs a push with a cache.
pub fn choose_cache(
    destination: &Destination,
    dir: Option<&std::path::Path>,
    disabled: bool,
    verify: bool,
) -> Result<Option<LayerCache>> {
    let push = matches!(destination, Destination::Registry { .. });
    let cache = match (disabled, dir) {
        (true, _) => None,
        (false, Some(dir)) => match destination {
            Destination::Registry { .. } | Destination::OciLayout { .. } => {
                Some(LayerCache::open(dir)?)
            }
            _ => {
                return Err(Error::value(
                    "the layer cache serves pushes to a registry and OCI layout directories",
                )
                .about(Setting::CacheDir));
            }
        },
        (false, None) if push => {
            LayerCache::default_dir().and_then(|dir| LayerCache::open(&dir).ok())
        }
        (false, None) => None,
    };
    if verify && (cache.is_none() || !push) {
        return Err(
            Error::value("--verify-cache checks the layer cache of a push to a registry")
                .about(Setting::CacheDir),
        );
    }
    Ok(cache)
}

/// Writes a layer directory (`layered-gen layer`, read back by `crate::base::prebuilt`): the
/// tarball once per compression, made as an image's layer blob is made (so the same layer has
/// the same digest here and in an image), then `layer.json`.
pub fn write_layer_dir(
    path: &std::path::Path,
    tar: &dyn crate::tarball::TarStream,
    paths: &[&str],
    compressions: &[crate::image_spec::BlobCompression],
) -> Result<crate::image_spec::LayerFile> {
    use crate::image_spec::{LAYER_FORMAT, LAYER_JSON, LayerFile, StoredBlob};
    use std::io::Write as _;
    sink::write_dir(path, |dir| {
        let mut blobs: Vec<StoredBlob> = Vec::new();
        let mut diff_id = None;
        for &compression in compressions {
            if blobs.iter().any(|b| b.compression == compression) {
                continue;
            }
            let file_path = dir.join(compression.file_name());
            let file = std::fs::File::create(&file_path)
                .map_err(|e| Error::io("creating", &file_path, e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let info = blobs::write_layer_blob(
                tar,
                Compression::default_for(compression.codec()),
                &mut out,
            )?;
            out.flush()
                .map_err(|e| Error::io("writing", &file_path, e))?;
            // Each compression reads the store again: it must be what it was.
            if diff_id.as_ref().is_some_and(|d| *d != info.diff_id) {
                return Err(Error::value(
                    "the layer's store paths changed while its blobs were written",
                ));
            }
            diff_id = Some(info.diff_id);
            blobs.push(StoredBlob {
                compression,
                digest: info.digest,
                size: info.size,
                file: compression.file_name().to_string(),
            });
        }
        let Some(diff_id) = diff_id else {
            return Err(Error::value("a layer needs at least one compression"));
        };
        let layer = LayerFile {
            layered_gen_layer: LAYER_FORMAT,
            diff_id,
            tar_size: tar.tar_len(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            blobs,
        };
        let mut json = serde_json::to_vec_pretty(&layer)
            .map_err(|e| Error::value(format!("writing layer.json: {e}")))?;
        json.push(b'\n');
        let json_path = dir.join(LAYER_JSON);
        std::fs::write(&json_path, json).map_err(|e| Error::io("writing", &json_path, e))?;
        Ok(layer)
    })
}

/// Writes the image where `options.destination` says.
pub fn write_image(source: &dyn ImageSource, options: &OutputOptions) -> Result<Written> {
    // The writers check the output's directory; a missing one has no room to check here.
    check_room(source, &options.destination)?;
    let (naming, making) = (options.naming(), options.making());
    let scratch = options.scratch_dir();
    match &options.destination {
        Destination::DockerArchive {
            sink,
            legacy,
            archive,
            ..
        } => sink::write_stream(sink, *archive, |out| {
            docker_archive::write(source, naming, making, *legacy, out, &scratch)
        }),
        Destination::OciLayout { dir, .. } => oci::write_layout_dir(source, naming, making, dir),
        Destination::OciArchive { sink, archive, .. } => {
            sink::write_stream(sink, *archive, |out| {
                oci::write_archive(source, naming, making, out, &scratch)
            })
        }
        Destination::Registry { repository, .. } => registry::push(
            source,
            naming,
            making,
            options.destination.format(),
            repository,
            &options.push,
            &|index, info, fate| options.report(index, info, fate),
        ),
        Destination::DockerDaemon { .. } => load_into_daemon(source, naming, making, &scratch),
    }
}

/// Streams the docker-archive into the Docker Engine.
fn load_into_daemon(
    source: &dyn ImageSource,
    naming: Naming<'_>,
    making: Making<'_>,
    scratch: &std::path::Path,
) -> Result<Written> {
    let endpoint = daemon::Endpoint::from_environment()?;
    let (written, loaded) = daemon::load(&endpoint, |out| {
        docker_archive::write(source, naming, making, false, out, scratch)
    })?;
    // The Engine names what it loaded; it must be what we sent.
    for reference in written.references() {
        if !loaded.contains(&reference) {
            let said: Vec<String> = loaded.iter().map(|l| crate::error::shown(l)).collect();
            return Err(Error::value(format!(
                "the Docker daemon did not report loading {reference} (it said: {})",
                daemon::shortened_list(&said, 3, ", ")
            )));
        }
    }
    Ok(written)
}

/// Writes images already made into one docker-archive (`merge`) into `sink`, compressed as a
/// whole as asked; returns the number of distinct layers.
pub fn write_merged(
    images: &[StoredImage],
    sink: &Sink,
    archive_compression: Compression,
    mtime: u64,
) -> Result<usize> {
    sink::write_stream(sink, archive_compression, |out| {
        docker_archive::write_many(images, out, mtime)
    })
}

/// Writes a multi-platform image (`index`) where `options.destination` says: an OCI layout
/// directory, an oci-archive, or a registry.
pub fn write_index(images: &[PlatformImage], options: &OutputOptions) -> Result<IndexWritten> {
    let (name, tags) = (options.name.as_str(), options.tags.as_slice());
    let fill = |dir: &std::path::Path| oci::write_index_layout(images, name, tags, dir);
    match &options.destination {
        Destination::Registry { repository, .. } => {
            registry::push_index(images, repository, tags, &options.push, &|i, info, fate| {
                options.report(i, info, fate)
            })
        }
        Destination::OciLayout { dir, .. } => sink::write_dir(dir, fill),
        Destination::OciArchive { sink, archive, .. } => {
            let scratch = sink.scratch_dir();
            sink::write_stream(sink, *archive, |out| {
                oci::into_archive(out, &scratch, options.mtime, fill)
            })
        }
        other => Err(Error::value(format!(
            "a multi-platform image is an OCI image index: it cannot go to {}",
            other.describe()
        ))
        .about(Setting::Output)),
    }
}

/// A filesystem without room for the image fails before the first byte, not after writing
/// what fits. A docker-archive written plain has a length known in advance (its layers'
/// lengths; config and manifest are small); compressed output's length is known only once
/// written, but the base image's layers, kept as they are, are a lower bound.
fn check_room(source: &dyn ImageSource, destination: &Destination) -> Result<()> {
    let Some(path) = destination.path() else {
        return Ok(());
    };
    let dir = parent_dir(path);
    let Some(free) = sink::free_bytes(&dir) else {
        return Ok(());
    };
    let plain = matches!(
        destination,
        Destination::DockerArchive {
            layers: DockerLayers::Plain,
            legacy: false,
            archive: Compression::None,
            ..
        }
    );
    let mut needed = 0u64;
    for index in 0..source.layer_count() {
        let known = match source.layer(index)? {
            LayerSource::Tar(tar) if plain => tar.tar_len(),
            // Compressed: its length is known only once written.
            LayerSource::Tar(_) => continue,
            LayerSource::Blob(blob) => blob.size(),
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
    Ok(())
}
