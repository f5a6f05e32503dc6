//! Registry credentials, found where skopeo, podman and Docker keep them: `--creds`, then
//! `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`.
//! In each file a registry's entry is looked up under `auths` (`auth`: base64 of
//! `user:password`), `credHelpers` (a `docker-credential-NAME` program for that registry) or
//! `credsStore` (one for all); the first file that knows the registry wins.
//!
//! Secrets never reach a message: `Credentials`' Debug hides the password, and errors name
//! files and registries only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use crate::error::{Error, Result, Setting, quoted, shown_path};

/// Auth files are small; a larger one is not an auth file.
const MAX_AUTH_FILE: u64 = 4 << 20;

/// A user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// `USER:PASSWORD`, as `--creds` takes them.
    pub fn parse(text: &str) -> Result<Self> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials {
                username: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err(Error::value(
                "credentials are USER:PASSWORD (the user may not be empty)",
            )),
        }
    }

    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.username, self.password))
        )
    }

    /// Every form in which the secret may come back in a peer's words: the password, its
    /// base64, `user:password` and its base64 (the Basic header's value).
    pub fn secret_forms(&self) -> Vec<String> {
        let pair = format!("{}:{}", self.username, self.password);
        vec![
            self.password.clone(),
            BASE64.encode(&self.password),
            BASE64.encode(&pair),
            pair,
        ]
    }
}

/// The auth files to look in, in order, from the environment.
pub fn auth_files() -> Vec<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let mut files = Vec::new();
    if let Some(file) = var("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(file));
    }
    if let Some(dir) = var("XDG_RUNTIME_DIR") {
        files.push(Path::new(&dir).join("containers/auth.json"));
    }
    match var("DOCKER_CONFIG") {
        Some(dir) => files.push(Path::new(&dir).join("config.json")),
        None => {
            if let Some(home) = var("HOME") {
                files.push(Path::new(&home).join(".docker/config.json"));
            }
        }
    }
    files
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// Where credentials are looked for: the auth files in order, and the `PATH` credential
/// helpers are found on (None: this process's).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    pub helper_path: Option<std::ffi::OsString>,
}

impl Sources {
    /// The files and helpers skopeo and Docker would use.
    pub fn from_environment() -> Self {
        Sources {
            files: auth_files(),
            helper_path: None,
        }
    }
}

/// The credentials the auth files hold for `registry` (`host[:port]`), if any.
pub fn lookup(registry: &str, sources: &Sources) -> Result<Option<Credentials>> {
    for file in &sources.files {
        let Some(auth) = read_auth_file(file)? else {
            continue;
        };
        if let Some(found) = from_file(&auth, registry, file, sources)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn read_auth_file(file: &Path) -> Result<Option<AuthFile>> {
    if !file.is_file() {
        return Ok(None);
    }
    let bytes = crate::json_file::read_limited(file, MAX_AUTH_FILE)?;
    // serde's message may quote a value, which may be a secret: say where, not what.
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::input(
            format!("{}:{}:{}", shown_path(file), e.line(), e.column()),
            "not an auth file (auths, credHelpers, credsStore)",
        )
    })
}

/// The keys a registry may be filed under: Docker writes URLs, podman host names; Docker Hub
/// has its own.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == crate::output::transport::reference::DOCKER_HUB {
        keys.push("https://index.docker.io/v1/".to_string());
        keys.push("index.docker.io".to_string());
        keys.push("registry-1.docker.io".to_string());
    }
    keys
}

fn from_file(
    auth: &AuthFile,
    registry: &str,
    file: &Path,
    sources: &Sources,
) -> Result<Option<Credentials>> {
    let keys = keys_for(registry);
    if let Some(helper) = keys.iter().find_map(|k| auth.cred_helpers.get(k)) {
        return from_helper(helper, registry, sources);
    }
    if let Some(entry) = keys.iter().find_map(|k| auth.auths.get(k)) {
        if let Some(found) = from_entry(entry, registry, file)? {
            return Ok(Some(found));
        }
    }
    match &auth.creds_store {
        Some(store) if !store.is_empty() => from_helper(store, registry, sources),
        _ => Ok(None),
    }
}

fn from_entry(entry: &AuthEntry, registry: &str, file: &Path) -> Result<Option<Credentials>> {
    let bad = |why: &str| {
        Error::input(
            shown_path(file),
            format!("the entry for {}: {why}", quoted(registry)),
        )
    };
    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = BASE64
            .decode(encoded.trim())
            .map_err(|_| bad("its auth is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| bad("its auth is not text"))?;
        return Credentials::parse(&text)
            .map(Some)
            .map_err(|_| bad("its auth is not USER:PASSWORD"));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    // An identity token is a refresh token for the token server, sent as the password of
    // the `<token>` user, as Docker does.
    if let Some(token) = entry.identity_token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials {
            username: "<token>".into(),
            password: token.to_string(),
        }));
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Asks `docker-credential-NAME get` (the registry on stdin, JSON on stdout). A helper that
/// does not know the registry says so and exits non-zero: no credentials then.
fn from_helper(name: &str, registry: &str, sources: &Sources) -> Result<Option<Credentials>> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::value(format!(
            "the credential helper name {} is not a plain name",
            quoted(name)
        ))
        .about(Setting::Creds));
    }
    let program = format!("docker-credential-{name}");
    let fail = |why: String| Error::value(format!("{program} get: {why}")).about(Setting::Creds);
    let mut command = Command::new(&program);
    if let Some(path) = &sources.helper_path {
        // With PATH set on the command, the program is looked up on that PATH.
        command.env("PATH", path);
    }
    let mut child = command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is answered by its exit status below.
        let _ = stdin.write_all(registry.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if !output.status.success() {
        return Ok(None);
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|_| fail("its answer is not the helper protocol's JSON".into()))?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, json: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn credentials_come_from_the_first_file_that_knows_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let podman = write(
            dir.path(),
            "auth.json",
            &format!(
                r#"{{"auths": {{"reg.example:5000": {{"auth": "{}"}}}}}}"#,
                BASE64.encode("alice:s3cret:with:colons")
            ),
        );
        let docker = write(
            dir.path(),
            "config.json",
            &format!(
                r#"{{"auths": {{"https://reg.example:5000": {{"auth": "{}"}},
                                "https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
                BASE64.encode("bob:x"),
                BASE64.encode("hub:y")
            ),
        );
        let missing = dir.path().join("none.json");
        let sources = Sources {
            files: vec![missing, podman, docker],
            helper_path: None,
        };
        let found = lookup("reg.example:5000", &sources).unwrap().unwrap();
        assert_eq!(found.username, "alice");
        assert_eq!(found.password, "s3cret:with:colons");
        assert_eq!(
            lookup("docker.io", &sources).unwrap().unwrap().username,
            "hub"
        );
        assert_eq!(lookup("other.example", &sources).unwrap(), None);
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let creds = Credentials::parse("user:hunter2").unwrap();
        assert!(!format!("{creds:?}").contains("hunter2"));
        assert_eq!(
            creds.basic(),
            format!("Basic {}", BASE64.encode("user:hunter2"))
        );
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "auth.json",
            r#"{"auths": {"r.example": {"auth": "aHVudGVyMg=="}}}"#,
        );
        let sources = Sources {
            files: vec![file],
            helper_path: None,
        };
        let err = lookup("r.example", &sources).unwrap_err().to_string();
        assert!(err.contains("not USER:PASSWORD"), "{err}");
        assert!(
            !err.contains("hunter2") && !err.contains("aHVudGVyMg"),
            "{err}"
        );
        assert!(Credentials::parse(":x").is_err());
        assert!(Credentials::parse("nocolon").is_err());
    }

    #[test]
    fn helpers_are_asked_by_the_protocol() {
        let dir = tempfile::tempdir().unwrap();
        // A helper that answers for one registry only, as real helpers do.
        let helper = dir.path().join("docker-credential-test-helper");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread reg\n[ \"$1\" = get ] || exit 3\n\
             [ \"$reg\" = helped.example ] || { echo 'credentials not found'; exit 1; }\n\
             echo '{\"ServerURL\":\"helped.example\",\"Username\":\"carol\",\"Secret\":\"tok\"}'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = write(
            dir.path(),
            "config.json",
            r#"{"credHelpers": {"helped.example": "test-helper"}, "credsStore": "test-helper"}"#,
        );
        let sources = Sources {
            files: vec![config],
            helper_path: Some(
                format!(
                    "{}:{}",
                    dir.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                )
                .into(),
            ),
        };
        let found = lookup("helped.example", &sources).unwrap().unwrap();
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("carol", "tok")
        );
        // credsStore is asked for the others; this one does not know them.
        assert_eq!(lookup("other.example", &sources).unwrap(), None);
    }
}
