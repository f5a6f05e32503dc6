//! Where an image goes: one [`Destination`], resolved once from `-o`, `--format`, the layer
//! and archive compression and `--docker-legacy`. Its variants hold only combinations that
//! work (zstd layers only where OCI media types can name them, a compressed archive only for
//! an archive, the pre-1.10 metadata only in a docker-archive), so every writer matches on it
//! without checking again, and a new transport is a new variant the compiler shows every
//! `match` that must handle it.
//!
//! `-o` is a path (`-` is stdout) or spelled as skopeo spells image locations:
//! `docker://HOST[:PORT]/NAME[:TAG]` (a registry), `docker-daemon:NAME[:TAG]` (the local
//! Docker Engine), `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME[:TAG]]`.
//! A registry reference follows Docker's normalisation (see [`Repository::parse`]).
//!
//! The defaults are the library's, so a caller gets what the command line gets: layers plain
//! in a docker-archive (what `docker load` reads fastest), gzip in OCI images and pushes; the
//! name `image`; tags from the reference, `--tag-from-output` and `--tag`, in that order.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::compress::Compression;
use super::transport::reference::{Repository, check_name, check_tag};
use crate::attrs;
use crate::codec::Codec;
use crate::error::{Error, Result, ResultExt, Setting, quoted};

/// The two families of image documents: Docker's (docker-archive, Docker's v2 schema 2
/// manifests) and OCI's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    DockerArchive,
    Oci,
}

impl Format {
    /// As `--format` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::DockerArchive => "docker-archive",
            Format::Oci => "oci",
        }
    }
}

/// Where one stream of bytes goes: a file (written atomically) or stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    File(PathBuf),
    Stdout,
}

impl Sink {
    /// The sink in words, for messages.
    pub fn describe(&self) -> String {
        match self {
            Sink::File(path) => path.display().to_string(),
            Sink::Stdout => "stdout".to_string(),
        }
    }

    /// Where scratch files go: next to the output file (on the filesystem that will hold the
    /// result, where the user made room), or `$TMPDIR` for stdout. Every scratch file is
    /// unnamed or removed on drop, so nothing is left behind.
    pub fn scratch_dir(&self) -> PathBuf {
        match self {
            Sink::File(path) => parent_dir(path),
            Sink::Stdout => std::env::temp_dir(),
        }
    }
}

/// Layer compression Docker's formats can name: none or gzip (`docker load` and Docker's
/// manifest media types have no zstd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerLayers {
    Plain,
    Gzip { level: u32 },
}

impl DockerLayers {
    pub fn compression(self) -> Compression {
        match self {
            DockerLayers::Plain => Compression::None,
            DockerLayers::Gzip { level } => Compression::Gzip { level },
        }
    }
}

/// The manifest media types of a push, with the layer compression each can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaTypes {
    Docker(DockerLayers),
    Oci(Compression),
}

/// Where an image goes, and in what form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A docker-archive (`docker load`), optionally with the pre-1.10 metadata (`legacy`) and
    /// compressed as a whole (`archive`).
    DockerArchive {
        sink: Sink,
        layers: DockerLayers,
        legacy: bool,
        archive: Compression,
    },
    /// An OCI layout packed into one tar (`oci-archive`), compressed as a whole (`archive`).
    OciArchive {
        sink: Sink,
        layers: Compression,
        archive: Compression,
    },
    /// An OCI layout directory, replacing an earlier layout there.
    OciLayout { dir: PathBuf, layers: Compression },
    /// A repository in a registry, pushed to over the distribution API.
    Registry {
        repository: Repository,
        media_types: MediaTypes,
    },
    /// The local Docker Engine, loaded through its API.
    DockerDaemon { layers: DockerLayers },
}

impl Destination {
    /// How layers made from tarballs are compressed (blobs are copied as they are).
    pub fn layer_compression(&self) -> Compression {
        match self {
            Destination::DockerArchive { layers, .. } | Destination::DockerDaemon { layers } => {
                layers.compression()
            }
            Destination::OciArchive { layers, .. } | Destination::OciLayout { layers, .. } => {
                *layers
            }
            Destination::Registry { media_types, .. } => match media_types {
                MediaTypes::Docker(layers) => layers.compression(),
                MediaTypes::Oci(layers) => *layers,
            },
        }
    }

    /// How the whole archive is compressed (none where there is no archive).
    pub fn archive_compression(&self) -> Compression {
        match self {
            Destination::DockerArchive { archive, .. }
            | Destination::OciArchive { archive, .. } => *archive,
            _ => Compression::None,
        }
    }

    /// The family of documents written.
    pub fn format(&self) -> Format {
        match self {
            Destination::DockerArchive { .. }
            | Destination::DockerDaemon { .. }
            | Destination::Registry {
                media_types: MediaTypes::Docker(_),
                ..
            } => Format::DockerArchive,
            _ => Format::Oci,
        }
    }

    /// The file or directory written, if the image goes to one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Destination::DockerArchive {
                sink: Sink::File(path),
                ..
            }
            | Destination::OciArchive {
                sink: Sink::File(path),
                ..
            }
            | Destination::OciLayout { dir: path, .. } => Some(path),
            _ => None,
        }
    }

    /// The destination in words, for messages.
    pub fn describe(&self) -> String {
        match self {
            Destination::DockerArchive { sink, .. } | Destination::OciArchive { sink, .. } => {
                sink.describe()
            }
            Destination::OciLayout { dir, .. } => dir.display().to_string(),
            Destination::Registry { repository, .. } => {
                format!("docker://{}", repository.full_name())
            }
            Destination::DockerDaemon { .. } => "the Docker daemon".to_string(),
        }
    }

    /// Where scratch files go (see [`Sink::scratch_dir`]).
    pub fn scratch_dir(&self) -> PathBuf {
        match self {
            Destination::DockerArchive { sink, .. } | Destination::OciArchive { sink, .. } => {
                sink.scratch_dir()
            }
            Destination::OciLayout { dir, .. } => parent_dir(dir),
            Destination::Registry { .. } | Destination::DockerDaemon { .. } => std::env::temp_dir(),
        }
    }
}

/// How `-o` was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputArg {
    /// `-o`: a path, `-`, or a transport reference.
    Given(PathBuf),
    /// The output path `out` of a structured-attrs derivation (its `.attrs.json`).
    FromAttrs(PathBuf),
}

/// What a command says of where its image goes, before the defaults.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub output: Option<OutputArg>,
    pub format: Option<Format>,
    pub compression: Option<Codec>,
    pub compression_level: Option<i32>,
    pub archive_compression: Codec,
    pub docker_legacy: bool,
    /// `--name`; a reference that names the image must agree.
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// The output path's store hash as the main tag, as dockerTools tags.
    pub tag_from_output: bool,
}

/// Where an image goes, and its name and tags (the main one first; none: one derived from its
/// content, see [`super::tags_or_derived`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub destination: Destination,
    pub name: String,
    pub tags: Vec<String>,
}

/// The build's destination: every rule about which flags go together is checked here.
pub fn resolve(request: &Request) -> Result<Resolved> {
    let reference = reference_of(request.output.as_ref())?;
    let implied = match reference.implied {
        Implied::Nothing => None,
        Implied::DockerArchive => Some(Format::DockerArchive),
        Implied::OciLayout | Implied::OciArchive => Some(Format::Oci),
    };
    let format = match (request.format, implied) {
        (Some(given), Some(implied)) if given != implied => {
            return Err(Error::value(format!(
                "the -o transport writes {}, not {}",
                implied.name(),
                given.name()
            ))
            .about(Setting::Format));
        }
        (given, implied) => given.or(implied).unwrap_or(Format::DockerArchive),
    };
    let name = agreed_name(request.name.as_ref(), reference.name.as_ref())?
        .unwrap_or_else(|| "image".into());
    let tags = tags(&reference, request)?;
    let destination = destination(reference, format, request)?;
    if destination_is_terminal(&destination) {
        return Err(Error::value(
            "stdout is a terminal: pipe the image (e.g. into `docker load`) or write it to a file",
        )
        .about(Setting::Output));
    }
    check_name_and_tags(&name, &tags)?;
    Ok(Resolved {
        destination,
        name,
        tags,
    })
}

/// The destination of a multi-platform image (`index`): an OCI layout directory, an
/// oci-archive (a `.tar` name or stdout), or a registry. Its blobs are copied as they are.
pub fn resolve_index(request: &Request) -> Result<Resolved> {
    let reference = reference_of(request.output.as_ref())?;
    let archive = Compression::default_for(request.archive_compression);
    let (destination, named) = match (reference.place.clone(), reference.implied) {
        (Place::Registry(repository), _) => {
            if archive != Compression::None {
                return Err(
                    Error::value("a registry takes images, not a compressed archive")
                        .about(Setting::ArchiveCompression),
                );
            }
            let named = repository.full_name();
            let destination = Destination::Registry {
                repository,
                media_types: MediaTypes::Oci(Compression::None),
            };
            (destination, Some(named))
        }
        (Place::Path(path), Implied::Nothing) if !is_tar_name(&path) => {
            if archive != Compression::None {
                return Err(Error::value(
                    "compressing the whole archive needs an archive: an OCI layout written as a \
                     .tar",
                )
                .about(Setting::ArchiveCompression));
            }
            let destination = Destination::OciLayout {
                dir: path,
                layers: Compression::None,
            };
            (destination, None)
        }
        (Place::Path(path), Implied::Nothing) => (oci_archive(Sink::File(path), archive), None),
        (Place::Stdout, Implied::Nothing) => (oci_archive(Sink::Stdout, archive), None),
        _ => {
            return Err(Error::value(
                "index writes an OCI layout (a directory), an oci-archive (a .tar or -), or \
                 pushes to docker://HOST/NAME[:TAG]",
            )
            .about(Setting::Output));
        }
    };
    if destination_is_terminal(&destination) {
        return Err(stdout_is_a_terminal());
    }
    let name =
        agreed_name(request.name.as_ref(), named.as_ref())?.unwrap_or_else(|| "image".into());
    let tags = tags(&reference, request)?;
    check_name_and_tags(&name, &tags)?;
    Ok(Resolved {
        destination,
        name,
        tags,
    })
}

fn oci_archive(sink: Sink, archive: Compression) -> Destination {
    Destination::OciArchive {
        sink,
        layers: Compression::None,
        archive,
    }
}

/// Where a command that writes one stream (`merge`, `export`) writes it: a file or stdout,
/// never a transport.
pub fn resolve_sink(output: Option<&OutputArg>) -> Result<Sink> {
    let sink = match output {
        Some(OutputArg::Given(path)) if path.as_os_str() == "-" => stdout()?,
        Some(OutputArg::Given(path)) if names_a_transport(&path.to_string_lossy()) => {
            return Err(Error::value(format!(
                "{}: this command writes a file (a path) or stdout (-), not to a transport",
                path.display()
            ))
            .about(Setting::Output));
        }
        Some(OutputArg::Given(path)) => Sink::File(path.clone()),
        Some(OutputArg::FromAttrs(attrs)) => Sink::File(attrs::output_path(attrs)?),
        None => return Err(no_output()),
    };
    if sink == Sink::Stdout && std::io::stdout().is_terminal() {
        return Err(stdout_is_a_terminal());
    }
    Ok(sink)
}

fn stdout_is_a_terminal() -> Error {
    Error::value("stdout is a terminal: pipe the output or write it to a file")
        .about(Setting::Output)
}

fn no_output() -> Error {
    Error::value("no output given: pass -o FILE, or -o - to stream to stdout")
}

/// Whether the image would stream to a terminal.
fn destination_is_terminal(destination: &Destination) -> bool {
    matches!(
        destination,
        Destination::DockerArchive {
            sink: Sink::Stdout,
            ..
        } | Destination::OciArchive {
            sink: Sink::Stdout,
            ..
        }
    ) && std::io::stdout().is_terminal()
}

/// Whether stdout was closed when the program started (see [`note_closed_stdout`]).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Notes whether stdout was closed when the program started, before anything is opened. Rust's
/// runtime opens /dev/null, read-write, on a standard stream that was closed, before `main`
/// runs (so nothing the program opens can become one). A shell redirection to /dev/null opens
/// it write-only: /dev/null open read-write on stdout means it was closed.
pub fn note_closed_stdout() {
    // SAFETY: fstat into a zeroed stat, fcntl(F_GETFL): both only read the descriptor's state.
    let (is_null, read_write) = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        let is_null = libc::fstat(1, &mut stat) == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFCHR
            && stat.st_rdev == libc::makedev(1, 3);
        let flags = libc::fcntl(1, libc::F_GETFL);
        (
            is_null,
            flags != -1 && flags & libc::O_ACCMODE == libc::O_RDWR,
        )
    };
    STDOUT_CLOSED.store(is_null && read_write, Ordering::Relaxed);
}

/// Stdout, if it is open.
fn stdout() -> Result<Sink> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Err(
            Error::value("stdout is closed: there is nowhere to stream the output")
                .about(Setting::Output),
        );
    }
    Ok(Sink::Stdout)
}

/// `-o` taken apart: a path, `-`, a transport reference, or a derivation's output.
fn reference_of(output: Option<&OutputArg>) -> Result<Reference> {
    let plain = |place| Reference {
        place,
        implied: Implied::Nothing,
        name: None,
        tag: None,
    };
    match output {
        Some(OutputArg::Given(path)) => match path.to_str() {
            Some(text) => {
                let reference = parse(text).about(Setting::Output)?;
                if reference.place == Place::Stdout {
                    stdout()?;
                }
                Ok(reference)
            }
            None => Ok(plain(Place::Path(path.clone()))),
        },
        Some(OutputArg::FromAttrs(attrs)) => Ok(plain(Place::Path(attrs::output_path(attrs)?))),
        None => Err(no_output()),
    }
}

/// The image's name: `--name`, or the one the reference gives; both must agree.
fn agreed_name(given: Option<&String>, named: Option<&String>) -> Result<Option<String>> {
    match (given, named) {
        (Some(given), Some(named)) if given != named => Err(Error::value(format!(
            "-o names the image {named}; leave --name out, or give the same name"
        ))
        .about(Setting::Name)),
        (given, named) => Ok(named.or(given).cloned()),
    }
}

/// The tags: the reference's (the main one), the output path's store hash with
/// `--tag-from-output`, then `--tag`s.
fn tags(reference: &Reference, request: &Request) -> Result<Vec<String>> {
    let mut all: Vec<String> = reference.tag.iter().cloned().collect();
    if request.tag_from_output {
        match &reference.place {
            Place::Path(path) => {
                all.push(attrs::tag_from_output(path).context_with(|| "--tag-from-output")?)
            }
            place => {
                let what = match place {
                    Place::Stdout => "stdout".to_string(),
                    Place::Registry(repository) => format!("docker://{}", repository.full_name()),
                    _ => "the Docker daemon".to_string(),
                };
                return Err(Error::value(format!(
                    "--tag-from-output needs an output path, not {what}"
                )));
            }
        }
    }
    all.extend(request.tags.iter().cloned());
    Ok(all)
}

/// The destination for `format`, its layer compression defaulted (none in a docker-archive,
/// gzip in OCI images and pushes) and checked against what the format can name.
fn destination(reference: Reference, format: Format, request: &Request) -> Result<Destination> {
    let registry = matches!(reference.place, Place::Registry(_));
    let codec = request.compression.unwrap_or(match (format, registry) {
        (_, true) | (Format::Oci, _) => Codec::Gzip,
        (Format::DockerArchive, false) => Codec::None,
    });
    let layers = Compression::new(codec, request.compression_level)?;
    let archive = Compression::default_for(request.archive_compression);
    let docker_layers = || match layers {
        Compression::None => Ok(DockerLayers::Plain),
        Compression::Gzip { level } => Ok(DockerLayers::Gzip { level }),
        Compression::Zstd { .. } => Err(Error::value(if registry {
            "zstd-compressed layers need OCI media types (Docker's manifest has none for them): \
             push with --format oci"
        } else {
            "zstd-compressed layers need the OCI format: docker load does not read them from a \
             docker-archive"
        })
        .about(Setting::Compression)),
    };
    if request.docker_legacy && format != Format::DockerArchive {
        return Err(Error::value(
            "the pre-1.10 metadata belongs to a docker-archive, not to an OCI layout",
        )
        .about(Setting::DockerLegacy));
    }
    let layers_only = |archive: Compression| -> Result<()> {
        if archive != Compression::None {
            return Err(Error::value(
                "a registry or the Docker daemon takes layers, not a compressed archive",
            )
            .about(Setting::ArchiveCompression));
        }
        if request.docker_legacy {
            return Err(
                Error::value("the pre-1.10 metadata belongs to a docker-archive file")
                    .about(Setting::DockerLegacy),
            );
        }
        Ok(())
    };
    let sink = |place: Place| match place {
        Place::Path(path) => Sink::File(path),
        _ => Sink::Stdout,
    };
    Ok(match (reference.place, format) {
        (Place::Registry(repository), format) => {
            let media_types = match format {
                Format::DockerArchive => MediaTypes::Docker(docker_layers()?),
                Format::Oci => MediaTypes::Oci(layers),
            };
            layers_only(archive)?;
            Destination::Registry {
                repository,
                media_types,
            }
        }
        (Place::DockerDaemon, _) => {
            let layers = docker_layers()?;
            layers_only(archive)?;
            Destination::DockerDaemon { layers }
        }
        (place, Format::DockerArchive) => Destination::DockerArchive {
            sink: sink(place),
            layers: docker_layers()?,
            legacy: request.docker_legacy,
            archive,
        },
        (Place::Path(path), Format::Oci) if !oci_is_archive(reference.implied, &path) => {
            if archive != Compression::None {
                return Err(Error::value(
                    "compressing the whole archive needs an archive: a docker-archive, or an OCI \
                     layout written as a .tar",
                )
                .about(Setting::ArchiveCompression));
            }
            Destination::OciLayout { dir: path, layers }
        }
        (place, Format::Oci) => Destination::OciArchive {
            sink: sink(place),
            layers,
            archive,
        },
    })
}

/// Whether an OCI image at `path` is an oci-archive rather than a layout directory: as the
/// transport says, else by the name (a `.tar` is an archive).
fn oci_is_archive(implied: Implied, path: &Path) -> bool {
    match implied {
        Implied::OciArchive => true,
        Implied::OciLayout => false,
        _ => is_tar_name(path),
    }
}

fn is_tar_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tar")
}

/// Checks the name and tags against the reference grammar; a tag given twice is an error.
fn check_name_and_tags(name: &str, tags: &[String]) -> Result<()> {
    check_name(name).map_err(|e| e.about(Setting::Name))?;
    for (i, tag) in tags.iter().enumerate() {
        check_tag(tag).map_err(|e| e.about(Setting::Tag))?;
        if tags[..i].contains(tag) {
            return Err(Error::value(format!("the tag {tag} is given twice")).about(Setting::Tag));
        }
    }
    Ok(())
}

/// The directory a path is in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The transport prefixes `-o` knows.
const PREFIXES: [&str; 5] = [
    "docker://",
    "docker-daemon:",
    "oci:",
    "oci-archive:",
    "docker-archive:",
];

/// Whether `-o` names a transport rather than a path.
pub fn names_a_transport(output: &str) -> bool {
    PREFIXES.iter().any(|prefix| output.starts_with(prefix))
}

/// Where `-o` sends the image, before the format is known.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// A file or directory (what the format and the name make of it).
    Path(PathBuf),
    Stdout,
    Registry(Repository),
    DockerDaemon,
}

/// The output format a transport implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Implied {
    /// No transport prefix: the format comes from `--format`.
    Nothing,
    DockerArchive,
    OciLayout,
    OciArchive,
}

/// `-o` taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reference {
    place: Place,
    implied: Implied,
    /// The image name the reference gives (registry and daemon references, docker-archive).
    name: Option<String>,
    tag: Option<String>,
}

/// Parses `-o`.
fn parse(output: &str) -> Result<Reference> {
    let plain = |place| Reference {
        place,
        implied: Implied::Nothing,
        name: None,
        tag: None,
    };
    if output == "-" {
        return Ok(plain(Place::Stdout));
    }
    if let Some(reference) = output.strip_prefix("docker://") {
        let (name, tag) = split_reference(reference)?;
        let repository = Repository::parse(&name)?;
        return Ok(Reference {
            name: Some(repository.full_name()),
            place: Place::Registry(repository),
            implied: Implied::Nothing,
            tag,
        });
    }
    if let Some(reference) = output.strip_prefix("docker-daemon:") {
        let (name, tag) = split_reference(reference)?;
        check_name(&name)?;
        return Ok(Reference {
            place: Place::DockerDaemon,
            implied: Implied::DockerArchive,
            name: Some(name),
            tag,
        });
    }
    for (prefix, implied) in [
        ("oci:", Implied::OciLayout),
        ("oci-archive:", Implied::OciArchive),
    ] {
        if let Some(rest) = output.strip_prefix(prefix) {
            // As skopeo: the path ends at the first ':', the rest is the tag.
            let (path, tag) = match rest.split_once(':') {
                Some((path, tag)) => (path, Some(tag.to_string())),
                None => (rest, None),
            };
            if let Some(tag) = &tag {
                check_tag(tag)?;
            }
            return Ok(Reference {
                place: file_place(prefix, path)?,
                implied,
                name: None,
                tag,
            });
        }
    }
    if let Some(rest) = output.strip_prefix("docker-archive:") {
        let (path, reference) = match rest.split_once(':') {
            Some((path, reference)) => (path, Some(reference)),
            None => (rest, None),
        };
        let (name, tag) = match reference {
            Some(reference) => {
                let (name, tag) = split_reference(reference)?;
                check_name(&name)?;
                (Some(name), tag)
            }
            None => (None, None),
        };
        return Ok(Reference {
            place: file_place("docker-archive:", path)?,
            implied: Implied::DockerArchive,
            name,
            tag,
        });
    }
    Ok(plain(Place::Path(PathBuf::from(output))))
}

/// The path after a transport prefix; `-` there is stdout.
fn file_place(prefix: &str, path: &str) -> Result<Place> {
    match path {
        "" => Err(Error::value(format!("{prefix} needs a path after it"))),
        "-" => Ok(Place::Stdout),
        _ => Ok(Place::Path(PathBuf::from(path))),
    }
}

/// `NAME[:TAG]`: the tag is after the last ':' that follows the last '/' (a ':' before it is a
/// port). A digest cannot be pushed to: the image's digest is known only once it is built.
fn split_reference(reference: &str) -> Result<(String, Option<String>)> {
    if reference.contains('@') {
        return Err(Error::value(format!(
            "{}: a digest cannot be a destination (the image's digest comes from its content); \
             give a tag or none",
            quoted(reference)
        )));
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            let tag = &reference[at + 1..];
            check_tag(tag)?;
            Ok((reference[..at].to_string(), Some(tag.to_string())))
        }
        None => Ok((reference.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(registry: &str, path: &str) -> Place {
        Place::Registry(Repository {
            registry: registry.into(),
            path: path.into(),
        })
    }

    #[test]
    fn registry_references_are_normalised_as_docker_does() {
        let d = parse("docker://127.0.0.1:5000/my/app:v1").unwrap();
        assert_eq!(d.place, registry("127.0.0.1:5000", "my/app"));
        assert_eq!(d.name.as_deref(), Some("127.0.0.1:5000/my/app"));
        assert_eq!(d.tag.as_deref(), Some("v1"));
        let d = parse("docker://busybox").unwrap();
        assert_eq!(d.place, registry("docker.io", "library/busybox"));
        assert_eq!(d.tag, None);
        let d = parse("docker://me/app:1.0").unwrap();
        assert_eq!(d.place, registry("docker.io", "me/app"));
        let d = parse("docker://localhost/app").unwrap();
        assert_eq!(d.place, registry("localhost", "app"));
        let Place::Registry(r) = d.place else {
            unreachable!()
        };
        assert!(r.is_local());
        assert_eq!(r.api_host(), "localhost");
        assert!(!Repository::parse("ghcr.io/a/b").unwrap().is_local());
        assert_eq!(
            Repository::parse("busybox").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn file_transports_imply_their_format() {
        let d = parse("oci:out/layout:v2").unwrap();
        assert_eq!(d.place, Place::Path("out/layout".into()));
        assert_eq!(d.implied, Implied::OciLayout);
        assert_eq!(d.tag.as_deref(), Some("v2"));
        let d = parse("oci-archive:image.oci").unwrap();
        assert_eq!(d.implied, Implied::OciArchive);
        assert_eq!(d.tag, None);
        let d = parse("docker-archive:image.tar:my/app:1").unwrap();
        assert_eq!(d.place, Place::Path("image.tar".into()));
        assert_eq!(d.implied, Implied::DockerArchive);
        assert_eq!(d.name.as_deref(), Some("my/app"));
        assert_eq!(d.tag.as_deref(), Some("1"));
        assert_eq!(parse("docker-archive:-").unwrap().place, Place::Stdout);
        let d = parse("docker-daemon:my/app:dev").unwrap();
        assert_eq!(d.place, Place::DockerDaemon);
        assert_eq!(d.name.as_deref(), Some("my/app"));
        assert_eq!(d.tag.as_deref(), Some("dev"));
    }

    #[test]
    fn plain_paths_keep_their_meaning() {
        assert_eq!(parse("-").unwrap().place, Place::Stdout);
        let d = parse("result/image.tar").unwrap();
        assert_eq!(d.place, Place::Path("result/image.tar".into()));
        assert_eq!(d.implied, Implied::Nothing);
        // A name with a colon that is no transport stays a path.
        assert_eq!(
            parse("a:b.tar").unwrap().place,
            Place::Path("a:b.tar".into())
        );
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        let err = |s: &str| parse(s).unwrap_err().to_string();
        assert!(err("docker://host:5000/app@sha256:00").contains("a digest cannot be"));
        assert!(err("docker://host:5000/App").contains("not valid"));
        assert!(err("docker://host:5000/app:bad/tag").contains("not valid"));
        assert!(err("oci:").contains("needs a path"));
        assert!(err("docker-daemon:app:").contains("tag"));
    }

    fn request(output: &str) -> Request {
        Request {
            output: Some(OutputArg::Given(output.into())),
            ..Request::default()
        }
    }

    fn resolved(request: &Request) -> Destination {
        resolve(request).unwrap().destination
    }

    #[test]
    fn each_output_resolves_to_one_destination_with_its_defaults() {
        assert_eq!(
            resolved(&request("image.tar")),
            Destination::DockerArchive {
                sink: Sink::File("image.tar".into()),
                layers: DockerLayers::Plain,
                legacy: false,
                archive: Compression::None,
            }
        );
        let oci = Request {
            format: Some(Format::Oci),
            ..request("out")
        };
        assert_eq!(
            resolved(&oci),
            Destination::OciLayout {
                dir: "out".into(),
                layers: Compression::Gzip { level: 6 },
            }
        );
        assert!(matches!(
            resolved(&request("oci-archive:img.oci")),
            Destination::OciArchive { .. }
        ));
        assert!(matches!(
            resolved(&request("oci:img.tar")),
            Destination::OciLayout { .. }
        ));
        let push = resolve(&request("docker://127.0.0.1:5000/app:v1")).unwrap();
        assert_eq!(push.name, "127.0.0.1:5000/app");
        assert_eq!(push.tags, ["v1"]);
        assert!(matches!(
            push.destination,
            Destination::Registry {
                media_types: MediaTypes::Docker(DockerLayers::Gzip { level: 6 }),
                ..
            }
        ));
        let daemon = resolve(&request("docker-daemon:my/app:dev")).unwrap();
        assert_eq!(
            daemon.destination,
            Destination::DockerDaemon {
                layers: DockerLayers::Plain
            }
        );
        assert_eq!(daemon.destination.format(), Format::DockerArchive);
        assert_eq!(
            (daemon.name.as_str(), daemon.tags.as_slice()),
            ("my/app", &["dev".to_string()][..])
        );
    }

    #[test]
    fn combinations_that_cannot_work_are_refused_with_their_flag() {
        let refused = |request: Request| {
            let err = resolve(&request).unwrap_err();
            (err.setting(), err.to_string())
        };
        let (setting, message) = refused(Request {
            compression: Some(Codec::Zstd),
            ..request("image.tar")
        });
        assert_eq!(setting, Some(Setting::Compression));
        assert!(message.contains("docker load does not read"), "{message}");
        let (_, message) = refused(Request {
            compression: Some(Codec::Zstd),
            ..request("docker://127.0.0.1:5000/app")
        });
        assert!(message.contains("push with --format oci"), "{message}");
        let (setting, _) = refused(Request {
            format: Some(Format::Oci),
            archive_compression: Codec::Gzip,
            ..request("layout")
        });
        assert_eq!(setting, Some(Setting::ArchiveCompression));
        let (setting, _) = refused(Request {
            archive_compression: Codec::Gzip,
            ..request("docker-daemon:app")
        });
        assert_eq!(setting, Some(Setting::ArchiveCompression));
        let (setting, _) = refused(Request {
            docker_legacy: true,
            ..request("oci:layout")
        });
        assert_eq!(setting, Some(Setting::DockerLegacy));
        let (setting, message) = refused(Request {
            format: Some(Format::Oci),
            ..request("docker-archive:x.tar")
        });
        assert_eq!(setting, Some(Setting::Format));
        assert_eq!(message, "the -o transport writes docker-archive, not oci");
        let (setting, _) = refused(Request {
            name: Some("other".into()),
            ..request("docker://127.0.0.1:5000/app")
        });
        assert_eq!(setting, Some(Setting::Name));
        let (setting, message) = refused(Request {
            tags: vec!["a".into(), "a".into()],
            ..request("image.tar")
        });
        assert_eq!(setting, Some(Setting::Tag));
        assert!(message.contains("given twice"), "{message}");
        assert!(resolve(&Request::default()).is_err(), "no output");
    }

    #[test]
    fn tags_come_from_the_reference_the_output_path_and_the_flags() {
        let path = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-image.tar";
        let named = resolve(&Request {
            tag_from_output: true,
            tags: vec!["latest".into()],
            ..request(&format!("docker-archive:{path}:my/app:1"))
        })
        .unwrap();
        assert_eq!(
            named.tags,
            ["1", "0123456789abcdfghijklmnpqrsvwxyz", "latest"]
        );
        let err = resolve(&Request {
            tag_from_output: true,
            ..request("-")
        });
        assert!(err.is_err());
    }

    #[test]
    fn index_takes_only_oci_destinations() {
        let index = |output: &str| resolve_index(&request(output));
        assert!(matches!(
            index("layout").unwrap().destination,
            Destination::OciLayout { .. }
        ));
        assert!(matches!(
            index("all.tar").unwrap().destination,
            Destination::OciArchive { .. }
        ));
        assert!(matches!(
            index("docker://127.0.0.1:5000/app").unwrap().destination,
            Destination::Registry {
                media_types: MediaTypes::Oci(Compression::None),
                ..
            }
        ));
        let err = index("docker-daemon:app").unwrap_err();
        assert_eq!(err.setting(), Some(Setting::Output));
    }

    #[test]
    fn merge_and_export_write_a_file_or_stdout_only() {
        let sink = |output: &str| resolve_sink(Some(&OutputArg::Given(output.into())));
        assert_eq!(sink("all.tar").unwrap(), Sink::File("all.tar".into()));
        let err = sink("docker://127.0.0.1:5000/app").unwrap_err();
        assert!(err.to_string().contains("not to a transport"), "{err}");
        assert!(resolve_sink(None).is_err());
    }
}
