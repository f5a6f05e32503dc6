//! Image names and tags, checked against the distribution reference grammar that registries,
//! Docker and skopeo enforce, so a bad name fails here with a reason, not later in a push.
//!
//! ```text
//! name      := [domain '/'] component ('/' component)*
//! domain    := host [':' port]           host: DNS labels joined by '.', or [IPv6]
//! component := [a-z0-9]+ (separator [a-z0-9]+)*    separator: '.', '_', '__', or '-'+
//! tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```

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

const MAX_NAME: usize = 255;

/// Checks an image name such as `registry.example:5000/my/image`.
pub fn check_name(name: &str) -> Result<()> {
    let fail = |why: String| {
        Err(Error::value(format!(
            "the image name {} is not valid: {why}",
            quoted(name)
        )))
    };
    if name.is_empty() {
        return fail("it is empty".into());
    }
    if name.len() > MAX_NAME {
        return fail(format!(
            "it is {} characters long, at most {MAX_NAME} are allowed",
            name.len()
        ));
    }
    if name.contains('@') {
        return fail("a digest (@sha256:...) cannot be part of the name".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && looks_like_domain(components[0]) {
        let domain = components.remove(0);
        if let Err(why) = check_domain(domain) {
            return fail(why);
        }
    }
    let last = components.len() - 1;
    for (i, component) in components.iter().enumerate() {
        if i == last && component.contains(':') {
            return fail("it holds a tag (after ':'); give the tag on its own".into());
        }
        if let Err(why) = check_component(component) {
            return fail(why);
        }
    }
    Ok(())
}

/// Docker's rule: the first component is a registry when it has a '.' or ':' or is
/// localhost. (Newer reference parsers also take an upper-case first component for one, but
/// Docker 20.10's `docker load` refuses such a name: "repository name must be lowercase".)
fn looks_like_domain(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                    return Err(format!("the registry host [{v6}] is not an IPv6 address"));
                }
                (None, after.strip_prefix(':'))
            }
            None => return Err(format!("the registry host {domain:?} has no closing ']'")),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(format!(
                "the registry host {host:?} is not a host name (letters, digits and inner '-', \
                 labels joined by '.')"
            ));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("the registry port {port:?} is not a number"));
        }
    }
    Ok(())
}

fn check_component(component: &str) -> Result<(), String> {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let explain = || {
        format!(
            "the path component {component:?} must be lower-case letters and digits, separated \
             by '.', '_', '__' or '-'"
        )
    };
    if bytes.is_empty() {
        return Err("it has an empty path component (two '/' in a row, or one at an end)".into());
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(explain());
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return Err(explain());
        }
    }
    Ok(())
}

/// Checks a tag: up to 128 characters of letters, digits, '_', '.', '-', not starting with
/// '.' or '-'.
pub fn check_tag(tag: &str) -> Result<()> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::value(format!(
            "the tag {} is not valid: up to 128 letters, digits, '_', '.' and '-', starting \
             with a letter, digit or '_'",
            quoted(tag)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in [
            "hello",
            "my/image",
            "registry.example:5000/my/image",
            "localhost/x",
            "localhost:5000/a__b/c-d/e.f",
            "127.0.0.1:5000/x",
            "[::1]:5000/x",
            "Registry.Example/x",
            "a---b",
        ] {
            assert!(check_name(name).is_ok(), "{name}: {:?}", check_name(name));
        }
    }

    #[test]
    fn invalid_names_say_why() {
        let cases = [
            ("", "it is empty"),
            ("Hello", "the path component \"Hello\" must be lower-case"),
            // Docker 20.10 takes an upper-case first component for a path, and refuses it.
            ("Foo/bar", "the path component \"Foo\" must be lower-case"),
            ("a//b", "an empty path component"),
            ("a/b/", "an empty path component"),
            ("-a", "the path component \"-a\""),
            ("a...b", "the path component \"a...b\""),
            ("a___b", "the path component \"a___b\""),
            ("hello:1.0", "it holds a tag"),
            (
                "reg.example:port/x",
                "the registry port \"port\" is not a number",
            ),
            ("reg_x.example/x", "the registry host \"reg_x.example\""),
            ("x@sha256:abc", "a digest"),
        ];
        for (name, why) in cases {
            let err = check_name(name).unwrap_err();
            assert!(
                err.message()
                    .starts_with(&format!("the image name {name:?} is not valid: ")),
                "{err}"
            );
            assert!(err.message().contains(why), "{name}: {err}");
        }
        assert!(check_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0", "_x", "A-b.c_d"] {
            assert!(check_tag(ok).is_ok());
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
