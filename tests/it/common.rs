//! Helpers shared by the integration tests: running the built binary, requiring the real tools,
//! building small stores, comparing trees, and starting a registry.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use sha2::{Digest, Sha256};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_layered-gen"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The full path of a tool the test needs; a missing tool fails the test, naming it.
pub fn require(tool: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "this test needs `{tool}`, which is not on PATH; .ci/run installs it (apt-get install \
         the package that provides {tool})"
    );
}

/// Runs a command, failing the test with its output if it does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// Runs layered-gen with arguments, expecting success.
pub fn layered_gen(args: &[&str]) -> Output {
    run(Command::new(bin()).args(args))
}

/// Runs layered-gen expecting failure; returns stderr.
pub fn layered_gen_fails(args: &[&str]) -> String {
    let output = Command::new(bin()).args(args).output().unwrap();
    assert!(
        !output.status.success(),
        "expected layered-gen {args:?} to fail, it succeeded"
    );
    String::from_utf8(output.stderr).unwrap()
}

pub fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut file = fs::File::open(path).unwrap();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A valid, deterministic store path hash for a name.
pub fn store_hash(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    (0..32)
        .map(|i| NIX_BASE32[(digest[i] % 32) as usize] as char)
        .collect()
}

/// A small store under a temporary root, read with --store-root; paths are `/nix/store/...`.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub paths: Vec<(String, Vec<String>)>,
}

impl TestStore {
    pub fn new() -> Self {
        TestStore {
            dir: tempfile::tempdir().unwrap(),
            paths: Vec::new(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Where the files of a store path live on disk.
    pub fn source(&self, store_path: &str) -> PathBuf {
        self.root().join(store_path.trim_start_matches('/'))
    }

    /// Adds a store path; `fill` creates its content at the given directory path (which does
    /// not exist yet, so a store path may also be a single file).
    pub fn add(&mut self, name: &str, references: &[&str], fill: impl FnOnce(&Path)) -> String {
        let path = format!("/nix/store/{}-{name}", store_hash(name));
        let source = self.source(&path);
        fs::create_dir_all(source.parent().unwrap()).unwrap();
        fill(&source);
        self.paths.push((
            path.clone(),
            references.iter().map(|r| r.to_string()).collect(),
        ));
        path
    }

    /// A store path holding a static busybox as bin/busybox and bin/sh.
    pub fn add_busybox(&mut self) -> String {
        let busybox = require("busybox");
        self.add("busybox-static-1.36", &[], |dir| {
            fs::create_dir_all(dir.join("bin")).unwrap();
            fs::copy(&busybox, dir.join("bin/busybox")).unwrap();
            fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o555))
                .unwrap();
            symlink("busybox", dir.join("bin/sh")).unwrap();
        })
    }

    /// A varied store: nested directories, an executable, symlinks, a long name, an empty
    /// directory, a store path that is a single file, references between paths.
    pub fn sample(&mut self) -> Vec<String> {
        let data = self.add("data-1.0", &[], |dir| {
            fs::create_dir_all(dir.join("share/deep/er/still")).unwrap();
            fs::write(dir.join("share/deep/er/still/file.txt"), "deep\n").unwrap();
            fs::create_dir_all(dir.join("empty")).unwrap();
            let long = "n".repeat(90);
            fs::create_dir_all(dir.join(&long)).unwrap();
            fs::write(dir.join(&long).join("m".repeat(120)), "long name\n").unwrap();
            fs::write(dir.join("big.bin"), vec![7u8; 300_000]).unwrap();
            fs::write(dir.join("share/same.txt"), "same content\n").unwrap();
        });
        let single = self.add("single-file-2", &[], |file| {
            fs::write(file, "just a file\n").unwrap();
        });
        let lib = self.add("lib-3.1", &[&data], |dir| {
            fs::create_dir_all(dir.join("lib")).unwrap();
            fs::write(dir.join("lib/libx.so.3"), "ELF-ish").unwrap();
            fs::write(dir.join("lib/same.txt"), "same content\n").unwrap();
            symlink("libx.so.3", dir.join("lib/libx.so")).unwrap();
            symlink(format!("{data}/share"), dir.join("share")).unwrap();
        });
        let app = self.add("app-0.9", &[&lib, &single, &data], |dir| {
            fs::create_dir_all(dir.join("bin")).unwrap();
            fs::write(dir.join("bin/app"), "#!/bin/sh\necho app\n").unwrap();
            fs::set_permissions(dir.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::write(dir.join("bin/not-exec"), "data").unwrap();
            symlink("/dangling/target", dir.join("bin/dangling")).unwrap();
        });
        vec![data, single, lib, app]
    }

    /// Writes the closure in exportReferencesGraph's text format.
    pub fn write_closure(&self) -> PathBuf {
        let path = self.dir.path().join("closure");
        let mut file = fs::File::create(&path).unwrap();
        for (store_path, refs) in &self.paths {
            writeln!(file, "{store_path}\n\n{}", refs.len()).unwrap();
            for r in refs {
                writeln!(file, "{r}").unwrap();
            }
        }
        path
    }

    /// Runs layered-gen on this store (writing its closure first) with `extra` arguments,
    /// writing `out`; fails the test if it fails.
    pub fn build(&self, out: &Path, extra: &[&str]) -> Output {
        let closure = self.write_closure();
        run(Command::new(bin())
            .arg("--closure")
            .arg(&closure)
            .arg("--store-root")
            .arg(self.root())
            .args(extra)
            .arg("-o")
            .arg(out))
    }

    pub fn store_root_arg(&self) -> String {
        self.root().to_str().unwrap().to_string()
    }
}

/// What a tree holds, for comparison: relative path → kind, content hash or link, exec bit.
pub fn tree_listing(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut listing = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, listing: &mut BTreeMap<Vec<u8>, String>) {
        let meta = fs::symlink_metadata(dir).unwrap();
        let rel = dir
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(dir).unwrap();
            listing.insert(rel, format!("link {}", target.display()));
        } else if meta.is_dir() {
            listing.insert(rel, "dir".to_string());
            for entry in fs::read_dir(dir).unwrap() {
                walk(root, &entry.unwrap().path(), listing);
            }
        } else {
            let exec = meta.permissions().mode() & 0o111 != 0;
            listing.insert(rel, format!("file exec={exec} sha256={}", sha256_file(dir)));
        }
    }
    walk(root, root, &mut listing);
    listing
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` on 127.0.0.1, stopped when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How a test registry is guarded: plain, or behind TLS (a CA made for the test) and
/// htpasswd Basic auth.
pub struct Guarded {
    /// The directory holding `ca.crt`, for `--cert-dir`.
    pub cert_dir: PathBuf,
    pub user: String,
    pub password: String,
    _dir: tempfile::TempDir,
}

/// What came of starting a server on a port.
enum Started {
    Ready,
    /// It exited, most likely because the port was taken after we picked it.
    Exited(String),
}

impl Registry {
    /// Starts a registry on a free port. A port taken between picking and binding makes the
    /// registry exit: another port is tried. Ready means it answers `GET /v2/` as a registry.
    pub fn start() -> Self {
        Self::start_with(None, false)
    }

    /// Starts a registry in read-only maintenance mode: it refuses every push.
    pub fn start_read_only() -> Self {
        Self::start_configured(
            None,
            false,
            ", maintenance: { readonly: { enabled: true } }",
        )
    }

    /// Starts a registry behind TLS with a new CA and htpasswd auth for one user.
    pub fn start_guarded() -> (Self, Guarded) {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let certs = dir.join("certs");
        fs::create_dir_all(&certs).unwrap();
        let openssl = require("openssl");
        run(Command::new(&openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=layered-gen test CA"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(certs.join("ca.crt")));
        run(Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(dir.join("server.key"))
            .arg("-out")
            .arg(dir.join("server.csr")));
        fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        run(Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(dir.join("server.csr"))
            .arg("-CA")
            .arg(certs.join("ca.crt"))
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .arg("-extfile")
            .arg(dir.join("san.ext"))
            .arg("-out")
            .arg(dir.join("server.crt")));
        let (user, password) = ("pusher".to_string(), "correct horse".to_string());
        run(Command::new(require("htpasswd"))
            .args(["-Bbc"])
            .arg(dir.join("htpasswd"))
            .args([&user, &password]));
        let guard = format!(
            "  tls: {{ certificate: {}, key: {} }}\nauth: {{ htpasswd: {{ realm: test, path: {} }} }}\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display(),
            dir.join("htpasswd").display()
        );
        let registry = Self::start_with(Some(&guard), true);
        (
            registry,
            Guarded {
                cert_dir: certs,
                user,
                password,
                _dir: temp,
            },
        )
    }

    /// The registry's log so far (its access log names every request).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many blob uploads were finished (PUTs to an upload) and data sent (PATCH).
    pub fn uploads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/")
                    || l.contains("\"PATCH /v2/")
            })
            .filter(|l| !l.contains("level="))
            .count()
    }

    /// Starts a registry with `extra` configuration lines (indented under `http:` where they
    /// belong there); `tls` says whether it then speaks HTTPS.
    pub fn start_with(extra: Option<&str>, tls: bool) -> Self {
        Self::start_configured(extra, tls, "")
    }

    fn start_configured(extra: Option<&str>, tls: bool, storage_extra: &str) -> Self {
        let guard = extra;
        let registry = require("docker-registry");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nstorage: {{ filesystem: {{ rootdirectory: {} }}{storage_extra} }}\nhttp:\n  addr: 127.0.0.1:{port}\n{}",
                    dir.path().join("data").display(),
                    guard.unwrap_or("")
                ),
            )
            .unwrap();
            let log = dir.path().join("registry.log");
            let log_file = fs::File::create(&log).unwrap();
            // The access log, one line per request, goes to stdout.
            let child = Command::new(&registry)
                .arg("serve")
                .arg(&config)
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .unwrap();
            // Dropping the guard stops the registry, also when it never comes up.
            let mut registry = Registry {
                child,
                port,
                log: log.clone(),
                _dir: dir,
            };
            match wait_until_ready(&mut registry.child, port, &log, tls) {
                Started::Ready => return registry,
                Started::Exited(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!(
            "docker-registry did not start on any of five ports:\n{}",
            failures.join("\n")
        );
    }
}

/// Waits, with growing pauses and a deadline, until the registry on `port` answers as one.
fn wait_until_ready(child: &mut Child, port: u16, log: &Path, tls: bool) -> Started {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(log).unwrap_or_default();
            return Started::Exited(format!("exited with {status}: {log}"));
        }
        if answers_as_registry(port, tls) {
            return Started::Ready;
        }
        if std::time::Instant::now() > deadline {
            let log = fs::read_to_string(log).unwrap_or_default();
            panic!("docker-registry on 127.0.0.1:{port} did not answer within 30 s: {log}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
}

/// Whether `GET /v2/` on the port gets the distribution API's answer (not just any server).
fn answers_as_registry(port: u16, tls: bool) -> bool {
    use std::io::Read;
    if tls {
        // Any HTTPS answer from /v2/ (401 without credentials) means it is up.
        return Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://127.0.0.1:{port}/v2/"))
            .output()
            .is_ok_and(|o| o.stdout == b"401");
    }
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .to_ascii_lowercase()
        .contains("docker-distribution-api-version: registry/2.0")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// podman with the settings that work on these machines, its storage private to the test.
pub struct Podman {
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Podman {
    pub fn new() -> Self {
        let binary = require("podman");
        require("runc");
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n",
        )
        .unwrap();
        Podman { dir, binary }
    }

    /// `podman run --rm --network none ARGS...`, which must succeed.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self
            .command()
            .args(["run", "--rm", "--network", "none"])
            .args(args))
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--runtime")
            .arg("runc")
            .arg("--storage-driver")
            .arg("vfs")
            .arg("--cgroup-manager")
            .arg("cgroupfs")
            .arg("--events-backend")
            .arg("file")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"));
        cmd
    }
}

/// `docker run --rm --network none ARGS...`, which must succeed.
pub fn docker_run(args: &[&str]) -> Output {
    run(Command::new(require("docker"))
        .args(["run", "--rm", "--network", "none"])
        .args(args))
}

/// Prints diffoscope's explanation of two differing files (when installed) and fails.
pub fn assert_same_bytes(a: &Path, b: &Path, what: &str) {
    if fs::read(a).unwrap() == fs::read(b).unwrap() {
        return;
    }
    let explanation = Command::new("diffoscope")
        .arg(a)
        .arg(b)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|_| "(diffoscope is not installed)".to_string());
    panic!(
        "{what}: {} and {} differ\n{explanation}",
        a.display(),
        b.display()
    );
}

/// Copies a tar archive, keeping the entries `keep` accepts (by name).
pub fn filter_tar(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) {
    let mut input = tar::Archive::new(fs::File::open(from).unwrap());
    let mut output = tar::Builder::new(fs::File::create(to).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        if keep(&path) {
            let mut header = entry.header().clone();
            output.append_data(&mut header, &path, &mut entry).unwrap();
        }
    }
    output.finish().unwrap();
}

/// A member of a tar archive, whole.
/// The `manifest.json` of a docker-archive.
pub fn archive_manifest(archive: &Path) -> serde_json::Value {
    serde_json::from_slice(&tar_member(archive, "manifest.json").unwrap()).unwrap()
}

pub fn tar_member(archive: &Path, name: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut archive = tar::Archive::new(fs::File::open(archive).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == name.as_bytes() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            return Some(bytes);
        }
    }
    None
}

/// One entry of a hand-made layer: (name, content), content None for a directory and
/// `Some("->target")` for a symlink.
pub type Item<'a> = (&'a str, Option<&'a str>);

/// How hand-made layers encode their headers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TarFormat {
    Ustar,
    Gnu,
}

/// One hand-made layer as a plain tar.
pub fn handmade_layer(entries: &[Item], format: TarFormat) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut header = match format {
            TarFormat::Ustar => tar::Header::new_ustar(),
            TarFormat::Gnu => tar::Header::new_gnu(),
        };
        header.set_mtime(1);
        match content {
            Some(target) if target.starts_with("->") => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, name, &target[2..])
                    .unwrap();
            }
            Some(text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(text.len() as u64);
                builder
                    .append_data(&mut header, name, text.as_bytes())
                    .unwrap();
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, name, &[][..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// Writes an OCI layout at `layout` (tag `x`) of plain tar layers: whiteouts, orders and
/// header encodings our own writer never makes.
pub fn handmade_layout(layout: &Path, layers: &[Vec<Item>]) -> PathBuf {
    handmade_layout_in(layout, layers, TarFormat::Ustar)
}

/// [`handmade_layout`] with the headers in `format`.
pub fn handmade_layout_in(layout: &Path, layers: &[Vec<Item>], format: TarFormat) -> PathBuf {
    use serde_json::json;
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = format!("{:x}", Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for entries in layers {
        let (digest, size) = put(&handmade_layer(entries, format));
        diff_ids.push(digest.clone());
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest,
            "size": size,
        }));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let (config_digest, config_size) = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    }))
    .unwrap();
    let (manifest_digest, manifest_size) = put(&manifest);
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "x"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layout.to_path_buf()
}

/// Runs layered-gen, expecting success and JSON on stdout (`plan`, `diff --json`).
pub fn layered_gen_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&layered_gen(args).stdout).unwrap()
}

/// The architectures an image index lists, in its order.
pub fn index_architectures(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
        .collect()
}

/// Bytes that compress a little, like binaries: noise with runs of text.
pub fn noisy(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(5) {
            out.extend_from_slice(b"layered-gen writes layers ");
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// layered-gen on `store`, whose closure file is `closure`.
pub fn layered_gen_on(store: &TestStore, closure: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .arg("--closure")
        .arg(closure)
        .arg("--store-root")
        .arg(store.root());
    command
}
