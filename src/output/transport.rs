//! `-o` spelled as skopeo spells image locations: `docker://HOST[:PORT]/NAME[:TAG]` (a
//! registry), `docker-daemon:NAME[:TAG]` (the local Docker Engine), `oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME[:TAG]]`; anything else is a path, as
//! before (`-` is stdout).
//!
//! A registry reference follows Docker's normalisation: a first component with a `.` or `:`,
//! or `localhost`, is the registry; otherwise the registry is Docker Hub and a one-component
//! name lives under `library/`.

use std::path::PathBuf;

use super::reference::{check_name, check_tag};
use crate::error::{Error, Result, quoted};

/// Docker Hub, as references name it and as its API is reached.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A repository in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository's path in the registry, e.g. `library/busybox`.
    pub path: String,
}

impl Repository {
    /// Parses `[HOST[:PORT]/]NAME` with Docker's normalisation.
    pub fn parse(name: &str) -> Result<Self> {
        check_name(name)?;
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(Repository { registry, path })
    }

    /// The host (and port) its API is reached at.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The name as a user writes it: `registry/path`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }

    /// Whether the registry is this machine, where Docker allows plain HTTP.
    pub fn is_local(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => self.registry.as_str(),
        };
        host == "localhost" || host == "[::1]" || host.starts_with("127.")
    }
}

/// The transport prefixes `-o` knows.
pub const PREFIXES: [&str; 5] = [
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

/// Where `-o` sends the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A file or directory (what the format and the name make of it).
    Path(PathBuf),
    Stdout,
    Registry(Repository),
    DockerDaemon,
}

/// The output format a transport implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implied {
    /// No transport prefix: the format comes from `--format`.
    Nothing,
    DockerArchive,
    OciLayout,
    OciArchive,
}

/// `-o` taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub place: Place,
    pub implied: Implied,
    /// The image name the destination gives (registry and daemon references, docker-archive).
    pub name: Option<String>,
    pub tag: Option<String>,
}

/// Parses `-o`.
pub fn parse(output: &str) -> Result<Destination> {
    let plain = |place| Destination {
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
        return Ok(Destination {
            name: Some(repository.full_name()),
            place: Place::Registry(repository),
            implied: Implied::Nothing,
            tag,
        });
    }
    if let Some(reference) = output.strip_prefix("docker-daemon:") {
        let (name, tag) = split_reference(reference)?;
        check_name(&name)?;
        return Ok(Destination {
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
            return Ok(Destination {
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
        return Ok(Destination {
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
}
