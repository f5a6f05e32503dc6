//! nix/default.nix built with a real Nix: buildLayeredImage and streamLayeredImage from real
//! derivations, loaded by skopeo, umoci, podman and Docker, rebuilt with `nix-build --check`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::*;
use serde_json::{Value, json};

/// Directories the expressions take: bin/layered-gen and a static busybox with bin/sh.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("lg/bin")).unwrap();
        fs::copy(bin(), dir.path().join("lg/bin/layered-gen")).unwrap();
        fs::create_dir_all(dir.path().join("bb/bin")).unwrap();
        fs::copy(require("busybox"), dir.path().join("bb/bin/busybox")).unwrap();
        symlink("busybox", dir.path().join("bb/bin/sh")).unwrap();
        Inputs { dir }
    }

    /// `PROGRAM ARGS FILE` with the inputs given as the expressions take them.
    fn nix(&self, program: &str, args: &[&str], file: &Path) -> Command {
        let mut cmd = Command::new(require(program));
        cmd.args(args)
            .arg(file)
            .arg("--arg")
            .arg("layeredGenDir")
            .arg(self.dir.path().join("lg"))
            .arg("--arg")
            .arg("busyboxDir")
            .arg(self.dir.path().join("bb"));
        cmd
    }

    fn nix_build(&self, file: &Path, attr: Option<&str>, extra: &[&str]) -> Output {
        let mut cmd = self.nix("nix-build", &[], file);
        cmd.arg("--no-out-link").args(extra);
        if let Some(attr) = attr {
            cmd.args(["-A", attr]);
        }
        cmd.output().unwrap()
    }

    fn build(&self, file: &Path, attr: Option<&str>, extra: &[&str]) -> PathBuf {
        let output = self.nix_build(file, attr, extra);
        assert!(
            output.status.success(),
            "nix-build {attr:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    }

    /// Rebuilds `attr` with `nix-build --check`: the same bytes again, or the test fails.
    fn check(&self, file: &Path, attr: &str, extra: &[&str]) {
        let mut args = extra.to_vec();
        args.push("--check");
        let output = self.nix_build(file, Some(attr), &args);
        assert!(
            output.status.success(),
            "nix-build --check {attr}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Builds a streamLayeredImage script and returns what it streams.
    fn stream(&self, file: &Path, attr: &str, extra: &[&str]) -> Vec<u8> {
        let script = self.build(file, Some(attr), extra);
        let streamed = Command::new(&script)
            .arg("--quiet")
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        assert!(streamed.status.success(), "{attr}: {streamed:?}");
        streamed.stdout
    }

    /// Debian's dash, coreutils, fakeroot, proot and shadow in a directory that the test
    /// expressions put in the store (`debianDir`), for fakeRootCommands.
    fn debian_tools(&self) -> PathBuf {
        let debian = self.dir.path().join("debian");
        fs::create_dir_all(debian.join("bin")).unwrap();
        for tool in [
            "dash",
            "getopt",
            "cut",
            "sed",
            "sleep",
            "chown",
            "chgrp",
            "chmod",
            "mkdir",
            "ln",
            "cat",
            "rm",
            "mv",
            "touch",
            "id",
            "ls",
            "useradd",
            "groupadd",
            "proot",
            "faked-sysv",
        ] {
            fs::copy(require(tool), debian.join("bin").join(tool)).unwrap();
        }
        symlink("dash", debian.join("bin/sh")).unwrap();
        fs::copy(require("fakeroot"), debian.join("bin/fakeroot.sh")).unwrap();
        debian
    }

    fn eval(&self, file: &Path, expr_attr: &str) -> String {
        let output = run(self
            .nix("nix-instantiate", &["--eval", "--strict", "--json"], file)
            .args(["-A", expr_attr]));
        serde_json::from_slice::<Value>(&output.stdout)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn images_nix() -> PathBuf {
    repo_root().join("tests/nix/images.nix")
}

/// Decompresses a gzip/zstd file (or copies a plain one) to `to`.
fn decompress(from: &Path, to: &Path) {
    let bytes = fs::read(from).unwrap();
    let tool = match bytes.get(..4) {
        Some([0x1f, 0x8b, ..]) => Some("gzip"),
        Some([0x28, 0xb5, 0x2f, 0xfd]) => Some("zstd"),
        _ => None,
    };
    match tool {
        Some(tool) => {
            let output = run(Command::new(require(tool)).arg("-dc").arg(from));
            fs::write(to, output.stdout).unwrap();
        }
        None => {
            fs::write(to, bytes).unwrap();
        }
    }
}

/// The filesystem of a container made from `image`, as `docker export` writes it, at `to`.
fn docker_export(image: &str, to: &Path) {
    let docker = require("docker");
    let created = run(Command::new(&docker).args(["create", image]));
    let id = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    run(Command::new(&docker)
        .args(["export", "-o"])
        .arg(to)
        .arg(&id));
    run(Command::new(&docker).args(["rm", &id]));
}

/// `docker load` of an image file; what Docker said.
fn docker_load(image: &Path) -> String {
    let loaded = Command::new(require("docker"))
        .arg("load")
        .stdin(fs::File::open(image).unwrap())
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{loaded:?}");
    String::from_utf8_lossy(&loaded.stdout).into_owned()
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker: cargo test --features tool-tests (.ci/run)"
)]
fn the_example_builds_loads_and_runs() {
    let inputs = Inputs::new();
    let example = repo_root().join("examples/nix/default.nix");
    let image = inputs.build(&example, None, &[]);
    assert!(
        image.to_str().unwrap().ends_with("-hello.tar.gz"),
        "{image:?}"
    );
    // skopeo 1.9 reads only uncompressed docker-archives; docker and podman read it as it is.
    let work = tempfile::tempdir().unwrap();
    let plain = work.path().join("hello.tar");
    decompress(&image, &plain);

    let config: Value = serde_json::from_slice(
        &run(Command::new(require("skopeo"))
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", plain.display())))
        .stdout,
    )
    .unwrap();
    assert_eq!(config["config"]["Cmd"], json!(["/bin/hello"]));
    assert_eq!(config["config"]["Env"], json!(["GREETING=Hello"]));

    let layout = work.path().join("layout");
    run(Command::new(require("skopeo"))
        .arg("copy")
        .arg(format!("docker-archive:{}", plain.display()))
        .arg(format!("oci:{}:x", layout.display())));
    let bundle = work.path().join("bundle");
    run(Command::new(require("umoci"))
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:x", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let hello = fs::read_link(rootfs.join("bin/hello")).unwrap();
    assert!(
        hello.starts_with("/nix/store") && hello.ends_with("bin/hello"),
        "{hello:?}"
    );
    let store_hello = rootfs.join(hello.strip_prefix("/").unwrap());
    assert!(
        fs::read_to_string(store_hello)
            .unwrap()
            .contains("from a layered-gen image")
    );
    assert!(rootfs.join("tmp").is_dir());

    // podman 4.3 here reads zstd archives but not gzip ones (a plain gzip of a docker save
    // fails the same way): it loads the decompressed archive; Docker loads the file as it is.
    let podman = Podman::new();
    run(podman.command().arg("load").arg("-i").arg(&plain));
    let ran = podman.run(&["example/hello:latest-example"]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "Hello from a layered-gen image\n"
    );
    let ran = podman.run(&[
        "example/hello:latest-example",
        "/bin/busybox",
        "echo",
        "hello",
    ]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello\n");

    let docker = require("docker");
    let loaded = Command::new(&docker)
        .arg("load")
        .stdin(fs::File::open(&image).unwrap())
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{loaded:?}");
    let ran = docker_run(&["example/hello:latest-example"]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "Hello from a layered-gen image\n"
    );
    run(Command::new(&docker).args(["rmi", "example/hello:latest-example"]));
}

/// The entry names of each layer of a docker-archive, in manifest order.
fn layer_listings(archive: &Path) -> Vec<Vec<String>> {
    let manifest: Value =
        serde_json::from_slice(&tar_member(archive, "manifest.json").unwrap()).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| listing(&tar_member(archive, layer.as_str().unwrap()).unwrap()))
        .collect()
}

/// The entry names of a tar file, links with their targets.
fn layer_listings_of_tar(file: &Path) -> Vec<String> {
    listing(&fs::read(file).unwrap())
}

/// The entry names of a tar (gzip-compressed or not: layers taken from buildLayer are).
fn listing(tar_bytes: &[u8]) -> Vec<String> {
    let plain;
    let tar_bytes = if tar_bytes.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(tar_bytes)
            .read_to_end(&mut out)
            .unwrap();
        plain = out;
        &plain[..]
    } else {
        tar_bytes
    };
    tar::Archive::new(tar_bytes)
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mut name = e.path().unwrap().to_string_lossy().into_owned();
            if let Ok(Some(link)) = e.link_name() {
                name = format!("{name} -> {}", link.display());
            }
            name
        })
        .collect()
}

/// The buildLayeredImage and streamLayeredImage examples of the nixpkgs manual, as written
/// there with only the import changed (tests/nix/manual.nix): each builds, rebuilds the same
/// with `nix-build --check`, loads into Docker and shows what the manual says it shows.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker: cargo test --features tool-tests (.ci/run)"
)]
fn the_manual_examples_build_and_show_what_the_manual_says() {
    let inputs = Inputs::new();
    let nix = repo_root().join("tests/nix/manual.nix");
    let debian = inputs.debian_tools();
    let tool_args = ["--arg", "debianDir", debian.to_str().unwrap()];
    let docker = require("docker");
    let stream = |attr: &str| inputs.stream(&nix, attr, &[]);
    let hello_path = inputs.build(&nix, Some("hello"), &[]);
    let hello = hello_path.to_str().unwrap();

    // ex-dockerTools-buildLayeredImage-hello: a .tar.gz that loads as hello:latest and runs
    // hello.
    let built = inputs.build(&nix, Some("buildLayeredImageHello"), &[]);
    assert!(
        built.to_str().unwrap().ends_with("-hello.tar.gz"),
        "{built:?}"
    );
    assert!(docker_load(&built).contains("Loaded image: hello:latest"));
    let ran = docker_run(&["hello:latest"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "Hello, world!\n");

    // ex-dockerTools-streamLayeredImage-hello: the script streams the same image.
    let plain = inputs.dir.path().join("hello.tar");
    decompress(&built, &plain);
    let streamed = stream("streamLayeredImageHello");
    assert!(
        streamed == fs::read(&plain).unwrap(),
        "the stream differs from buildLayeredImage's image"
    );

    // ex-dockerTools-streamLayeredImage-exploringlayers: one layer per store path of hello's
    // closure, then one with the links at /.
    let explored = inputs.dir.path().join("explored.tar");
    fs::write(&explored, stream("exploringLayers")).unwrap();
    let layers = layer_listings(&explored);
    let closure = run(Command::new(require("nix-store")).args(["-qR", hello]));
    let closure: Vec<&str> = std::str::from_utf8(&closure.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(layers.len(), closure.len() + 1, "{layers:?}");
    for path in &closure {
        // Names are absolute in dockerTools' format (nix/'s default), relative in ours.
        let inside = format!("{}/", path.trim_start_matches('/'));
        assert_eq!(
            layers
                .iter()
                .filter(|l| l.iter().any(|n| n.trim_start_matches('/') == inside))
                .count(),
            1,
            "{path} is not in a layer of its own: {layers:?}"
        );
    }
    let links = layers.last().unwrap();
    for (link, target) in [
        ("bin/hello", "bin/hello"),
        ("share/info/hello.info", "share/info/hello.info"),
        ("share/man/man1/hello.1.gz", "share/man/man1/hello.1.gz"),
    ] {
        let expected = format!("{link} -> {hello}/{target}");
        assert!(links.contains(&expected), "{expected} missing: {links:?}");
    }
    assert!(links.iter().all(|n| !n.starts_with("nix/")), "{links:?}");
    // includeStorePaths = false: the links alone.
    let no_store = inputs.dir.path().join("no-store.tar");
    fs::write(&no_store, stream("exploringLayersNoStore")).unwrap();
    assert_eq!(layer_listings(&no_store), std::slice::from_ref(links));

    // ex-dockerTools-streamLayeredImage-configclosure: hello's closure comes in through
    // config alone, and the image runs it.
    let config_closure = inputs.dir.path().join("config-closure.tar");
    fs::write(&config_closure, stream("configClosure")).unwrap();
    let layers = layer_listings(&config_closure);
    let inside = format!("{}/", hello.trim_start_matches('/'));
    assert!(
        layers
            .iter()
            .any(|l| l.iter().any(|n| n.trim_start_matches('/') == inside)),
        "{layers:?}"
    );
    assert!(docker_load(&config_closure).contains("Loaded image: hello:latest"));
    let ran = docker_run(&["hello:latest"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "Hello, world!\n");
    run(Command::new(&docker).args(["rmi", "hello:latest"]));

    // ex-dockerTools-helpers-buildLayeredImage: hello by default, and a shell through binSh.
    let helpers = inputs.build(&nix, Some("envHelpers"), &[]);
    assert!(docker_load(&helpers).contains("Loaded image: env-helpers:latest"));
    let ran = docker_run(&["env-helpers:latest"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "Hello, world!\n");
    let ran = docker_run(&["env-helpers:latest", "/bin/sh", "-c", "echo in a shell"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "in a shell\n");
    run(Command::new(&docker).args(["rmi", "env-helpers:latest"]));

    // ex-dockerTools-shadowSetup-buildLayeredImage: the user hello owns /data, the working
    // directory (the image has no shell: its files are read from an exported container).
    let shadow = inputs.build(&nix, Some("shadowBasic"), &tool_args);
    assert!(docker_load(&shadow).contains("Loaded image: shadow-basic:latest"));
    let ran = docker_run(&["shadow-basic:latest"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "Hello, world!\n");
    let exported = inputs.dir.path().join("shadow-fs.tar");
    docker_export("shadow-basic:latest", &exported);
    let passwd = String::from_utf8(tar_member(&exported, "etc/passwd").unwrap()).unwrap();
    let hello_user = passwd
        .lines()
        .find(|l| l.starts_with("hello:"))
        .unwrap_or_else(|| panic!("no user hello: {passwd}"));
    let uid: u64 = hello_user.split(':').nth(2).unwrap().parse().unwrap();
    let mut data_owner = None;
    for entry in tar::Archive::new(fs::File::open(&exported).unwrap())
        .entries()
        .unwrap()
    {
        let entry = entry.unwrap();
        if entry
            .path()
            .unwrap()
            .to_str()
            .map(|p| p.trim_end_matches('/'))
            == Some("data")
        {
            data_owner = Some(entry.header().uid().unwrap());
        }
    }
    assert_eq!(data_owner, Some(uid), "{passwd}");
    let inspected = run(Command::new(&docker).args([
        "inspect",
        "--format",
        "{{.Config.WorkingDir}}",
        "shadow-basic:latest",
    ]));
    assert_eq!(String::from_utf8_lossy(&inspected.stdout).trim(), "/data");
    run(Command::new(&docker).args(["rmi", "shadow-basic:latest"]));

    // ex-dockerTools-exportImage-hello: the image's filesystem, flattened, lists what the
    // manual's listing shows.
    let to_export = inputs.build(&nix, Some("exportImageHello"), &[]);
    let flat = inputs.dir.path().join("hello-fs.tar");
    run(Command::new(bin())
        .arg("export")
        .arg(&to_export)
        .arg("-o")
        .arg(&flat));
    let listing = layer_listings_of_tar(&flat);
    for expected in [
        "bin/".to_string(),
        format!("bin/hello -> {hello}/bin/hello"),
        "nix/store/".to_string(),
        format!("{}/", hello.trim_start_matches('/')),
        "share/".to_string(),
    ] {
        assert!(listing.contains(&expected), "{expected}: {listing:?}");
    }

    // Every example rebuilds bit for bit.
    for (attr, extra) in [
        ("buildLayeredImageHello", &[][..]),
        ("streamLayeredImageHello", &[]),
        ("exploringLayers", &[]),
        ("exploringLayersNoStore", &[]),
        ("configClosure", &[]),
        ("envHelpers", &[]),
        ("shadowBasic", &tool_args[..]),
        ("exportImageHello", &[]),
    ] {
        inputs.check(&nix, attr, extra);
    }
}

/// fakeRootCommands run as root under fakeroot: the owners they give are the image's (the
/// manual's alice example); with enableFakechroot the tree is their `/`, and shadow's
/// groupadd and useradd make a user whose name owns /data (the manual's redis example). Debian's
/// fakeroot, proot and tools stand in for nixpkgs'. Both images are reproducible, and the
/// stream gives the built image's bytes.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, fakeroot, proot, useradd, docker: cargo test --features tool-tests (.ci/run)"
)]
fn fake_root_commands_give_owners_and_make_users() {
    let inputs = Inputs::new();
    let debian = inputs.debian_tools();
    let tool_args = ["--arg", "debianDir", debian.to_str().unwrap()];
    let nix = images_nix();
    let docker = require("docker");

    let alice = inputs.build(&nix, Some("fakeRoot"), &tool_args);
    docker_load(&alice);
    let ran = docker_run(&[
        "layered-gen-test/fake-root:alice",
        "sh",
        "-c",
        "stat -c '%a %u %g %n' /tmp /data /home/alice /home; stat -c '%u %g %n' /hello; /hello",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "1777 0 0 /tmp\n700 1000 1001 /data\n755 1000 0 /home/alice\n755 0 0 /home\n\
         1000 1000 /hello\nhi \n"
    );
    run(Command::new(&docker).args(["rmi", "layered-gen-test/fake-root:alice"]));

    let redis = inputs.build(&nix, Some("fakeChroot"), &tool_args);
    docker_load(&redis);
    let ran = docker_run(&[
        "layered-gen-test/fake-chroot:redis",
        "sh",
        "-c",
        "stat -c '%U %G %u' /data; grep '^redis:' /etc/passwd /etc/group; ls /",
    ]);
    let out = String::from_utf8_lossy(&ran.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "redis redis 999", "{out}");
    assert!(
        lines[1].starts_with("/etc/passwd:redis:x:999:999:"),
        "{out}"
    );
    assert_eq!(lines[2], "/etc/group:redis:x:999:", "{out}");
    // Nothing of the chroot's bindings is left in the tree.
    assert_eq!(
        lines[3..],
        ["bin", "data", "dev", "etc", "nix", "proc", "sys"],
        "{out}"
    );
    run(Command::new(&docker).args(["rmi", "layered-gen-test/fake-chroot:redis"]));

    assert!(
        inputs.stream(&nix, "fakeChrootStream", &tool_args) == fs::read(&redis).unwrap(),
        "the streamed image differs from the built one"
    );
    for attr in ["fakeRoot", "fakeChroot"] {
        inputs.check(&nix, attr, &tool_args);
    }
}

/// includeNixDB: the image holds a Nix database registering exactly its store paths, with
/// their references and registration time 1, that Nix accepts (`--verify --check-contents`
/// rehashes every path against it); the image is reproducible.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, nix-store, sqlite3, docker: cargo test --features tool-tests (.ci/run)"
)]
fn include_nix_db_registers_exactly_the_image_store_paths() {
    let inputs = Inputs::new();
    // Debian's nix-store and sqlite3 as the function's nix and sqlite.
    let tools = inputs.dir.path();
    fs::create_dir_all(tools.join("nix/bin")).unwrap();
    fs::copy(require("nix"), tools.join("nix/bin/nix-store")).unwrap();
    fs::create_dir_all(tools.join("sqlite/bin")).unwrap();
    fs::copy(require("sqlite3"), tools.join("sqlite/bin/sqlite3")).unwrap();
    let nix_dir = tools.join("nix");
    let sqlite_dir = tools.join("sqlite");
    let tool_args = [
        "--arg",
        "nixDir",
        nix_dir.to_str().unwrap(),
        "--arg",
        "sqliteDir",
        sqlite_dir.to_str().unwrap(),
    ];
    let nix = images_nix();
    let image = inputs.build(&nix, Some("withDb"), &tool_args);
    // nixpkgs' buildLayeredImageWithNixDb is the same derivation.
    assert_eq!(inputs.build(&nix, Some("withDbByName"), &tool_args), image);

    let docker = require("docker");
    docker_load(&image);
    let root = inputs.dir.path().join("rootfs");
    fs::create_dir_all(&root).unwrap();
    let exported = inputs.dir.path().join("rootfs.tar");
    docker_export("layered-gen-test/with-db:db", &exported);
    run(Command::new(&docker).args(["rmi", "layered-gen-test/with-db:db"]));
    run(Command::new("tar")
        .arg("-xf")
        .arg(&exported)
        .arg("-C")
        .arg(&root));

    let mut in_image: Vec<String> = fs::read_dir(root.join("nix/store"))
        .unwrap()
        .map(|e| format!("/nix/store/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    in_image.sort();
    let db = root.join("nix/var/nix/db/db.sqlite");
    let registered = run(Command::new(require("sqlite3"))
        .arg(&db)
        .arg("SELECT path, registrationTime FROM ValidPaths ORDER BY path"));
    let expected: String = in_image.iter().map(|p| format!("{p}|1\n")).collect();
    assert_eq!(String::from_utf8_lossy(&registered.stdout), expected);

    let store = format!("local?root={}", root.display());
    let verified = run(Command::new(require("nix-store")).args([
        "--store",
        &store,
        "--verify",
        "--check-contents",
    ]));
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(
        !said.contains("error") && !said.contains("modified") && !said.contains("invalid"),
        "{said}"
    );
    let app = in_image.iter().find(|p| p.ends_with("-app-1.0")).unwrap();
    let references = run(Command::new(require("nix-store")).args([
        "--store",
        &store,
        "-q",
        "--references",
        app,
    ]));
    let mut references: Vec<String> = String::from_utf8_lossy(&references.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    references.sort();
    let expected: Vec<String> = in_image
        .iter()
        .filter(|p| p.ends_with("-libgreet-2.0") || p.ends_with("-busybox-static"))
        .cloned()
        .collect();
    assert_eq!(references, expected);
    // GC roots for the contents, as nixpkgs makes them.
    assert!(
        fs::symlink_metadata(root.join(format!("nix/var/nix/gcroots/docker/{}", &app[11..])))
            .is_ok()
    );

    inputs.check(&nix, "withDb", &tool_args);
}

/// extraCommands run as nixpkgs runs them: in the tree the contents make, with the modes they
/// give kept (the store would make /tmp 0555), the store paths they link to in the image, and
/// neither the customisation tree nor the config JSON a store path of the image.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker: cargo test --features tool-tests (.ci/run)"
)]
fn extra_commands_keep_modes_and_bring_what_they_link_to() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let image = inputs.build(&nix, Some("commands"), &[]);
    let docker = require("docker");
    docker_load(&image);
    let ran = docker_run(&[
        "layered-gen-test/commands:cmds",
        "sh",
        "-c",
        "stat -c '%a %u %g %n' /tmp /data /data/key /etc; cat /etc/ssl/certs/ca.crt; \
         ls /bin/greet; ls /bin/app 2>/dev/null || echo no app; ls /nix/store",
    ]);
    let out = String::from_utf8_lossy(&ran.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..7],
        [
            "1777 0 0 /tmp",
            "750 0 0 /data",
            "600 0 0 /data/key",
            "755 0 0 /etc",
            "a certificate",
            "/bin/greet",
            "no app",
        ],
        "{out}"
    );
    let store: Vec<&str> = lines[7..].to_vec();
    assert!(store.iter().any(|p| p.ends_with("-certs-1.0")), "{out}");
    assert!(
        !store
            .iter()
            .any(|p| p.ends_with("-config.json") || p.ends_with("-customisation")),
        "the config JSON and the customisation tree are not store paths of the image: {out}"
    );
    let ran = docker_run(&["layered-gen-test/commands:cmds"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hi \n");
    run(Command::new(&docker).args(["rmi", "layered-gen-test/commands:cmds"]));

    // The stream gives the same bytes, and Nix rebuilds the image identically.
    assert!(
        inputs.stream(&nix, "commandsStream", &[]) == fs::read(&image).unwrap(),
        "the streamed image differs from the built one"
    );
    inputs.check(&nix, "commands", &[]);
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn from_image_streaming_and_reproducibility() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let top = inputs.build(&nix, Some("top"), &[]);

    // fromImage: the base's layers first, its Env under ours.
    let inspect = |image: &Path, raw: &[&str]| -> Value {
        serde_json::from_slice(
            &run(Command::new(require("skopeo"))
                .arg("inspect")
                .args(raw)
                .arg(format!("docker-archive:{}", image.display())))
            .stdout,
        )
        .unwrap()
    };
    let base = inputs.build(&nix, Some("base"), &[]);
    let base_layers = inspect(&base, &[])["Layers"].as_array().unwrap().clone();
    let top_layers = inspect(&top, &[])["Layers"].as_array().unwrap().clone();
    assert_eq!(top_layers[..base_layers.len()], base_layers[..]);
    let config = inspect(&top, &["--config"]);
    assert_eq!(
        config["config"]["Env"],
        json!(["FROM_BASE=yes", "NAME=top"])
    );

    let podman = Podman::new();
    run(podman.command().arg("load").arg("-i").arg(&top));
    let ran = podman.run(&["localhost/layered-gen-test/top:nix"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hi top\n");
    let ran = run(podman.command().args([
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/layered-gen-test/top:nix",
        "/bin/sh",
        "-c",
        "stat -c %u:%g /var/lib/app/state; echo $FROM_BASE",
    ]));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "1000:1000\nyes\n");

    // imageName and imageTag, also for a registry name and a derived tag.
    assert_eq!(inputs.eval(&nix, "top.imageTag"), "nix");
    assert_eq!(
        inputs.eval(&nix, "base.imageName"),
        "registry.example:5000/layered-gen-test/base"
    );
    // Without a tag, one from everything that decides the image, as nixpkgs derives it from
    // its conf.json: the same for buildLayeredImage and streamLayeredImage, whose bytes are
    // then the same too.
    let base_tag = inputs.eval(&nix, "base.imageTag");
    assert_eq!(base_tag.len(), 32);
    assert_eq!(inputs.eval(&nix, "baseStream.imageTag"), base_tag);
    assert_eq!(inputs.eval(&nix, "base.stream.imageTag"), base_tag);
    assert_eq!(
        inputs.eval(&nix, "baseStream.streamScript.name"),
        "stream-base"
    );
    // The stream is an executable, and its conf is what the tag comes from.
    let conf = inputs.build(&nix, Some("baseStream.conf"), &[]);
    assert!(conf.to_str().unwrap().contains(&base_tag));
    let conf: Value = serde_json::from_slice(&fs::read(&conf).unwrap()).unwrap();
    assert!(
        conf["arguments"]
            .as_array()
            .unwrap()
            .contains(&json!("registry.example:5000/layered-gen-test/base")),
        "{conf}"
    );
    let is_exe = run(inputs
        .nix("nix-instantiate", &["--eval", "--json"], &nix)
        .args(["-A", "baseStream.isExe"]));
    assert_eq!(String::from_utf8_lossy(&is_exe.stdout), "true");
    assert!(base.to_str().unwrap().ends_with("-base.tar"));
    let manifest = archive_manifest(&base);
    assert_eq!(
        manifest[0]["RepoTags"][0],
        format!("registry.example:5000/layered-gen-test/base:{base_tag}")
    );
    let base_script = inputs.build(&nix, Some("baseStream"), &[]);
    let streamed = Command::new(&base_script)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        streamed.stdout == fs::read(&base).unwrap(),
        "the streamed base differs from the built one"
    );

    // streamLayeredImage: the script's output equals buildLayeredImage's file.
    let script = inputs.build(&nix, Some("topStream"), &[]);
    let streamed = Command::new(&script)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(streamed.status.success(), "{streamed:?}");
    assert!(
        streamed.stdout == fs::read(&top).unwrap(),
        "the streamed image differs from the built one"
    );

    // Reproducibility: Nix rebuilds and compares, with another number of cores.
    for cores in ["1", "3"] {
        let output = inputs.nix_build(&nix, Some("top"), &["--check", "--cores", cores]);
        assert!(
            output.status.success(),
            "nix-build --check --cores {cores}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn compressors_formats_and_include_store_paths() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let work = tempfile::tempdir().unwrap();

    let zstd = inputs.build(&nix, Some("zstd"), &[]);
    assert!(zstd.to_str().unwrap().ends_with(".tar.zst"));
    assert_eq!(&fs::read(&zstd).unwrap()[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    // Docker 20.10 here cannot load zstd archives (Docker 23 and later can); podman can.
    let podman = Podman::new();
    run(podman.command().arg("load").arg("-i").arg(&zstd));
    let plain = work.path().join("zstd.tar");
    decompress(&zstd, &plain);
    run(Command::new(require("skopeo"))
        .arg("inspect")
        .arg(format!("docker-archive:{}", plain.display())));
    let output = inputs.nix_build(&nix, Some("zstd"), &["--check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let oci = inputs.build(&nix, Some("oci"), &[]);
    run(Command::new(require("skopeo"))
        .arg("inspect")
        .arg(format!("oci:{}:oci", oci.display())));

    // A gzip-compressed base (buildLayeredImage's default compressor) works as fromImage.
    let on_gz = inputs.build(&nix, Some("onGz"), &[]);
    let config: Value = serde_json::from_slice(
        &run(Command::new(require("skopeo"))
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", on_gz.display())))
        .stdout,
    )
    .unwrap();
    assert_eq!(config["config"]["Env"], json!(["FROM_BASE=gz", "NAME=top"]));

    let no_store = inputs.build(&nix, Some("noStore"), &[]);
    let mut archive = tar::Archive::new(fs::File::open(&no_store).unwrap());
    let layers = archive
        .entries()
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().unwrap().starts_with("layers"))
        .count();
    assert_eq!(layers, 1, "only the customisation layer");
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build: cargo test --features tool-tests (.ci/run)"
)]
fn bad_arguments_fail_with_the_tools_message() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let output = inputs.nix_build(&nix, Some("top"), &["--arg", "maxLayers", "0"]);
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains(
            "layered-gen: error: --max-layers: a limit of 0 layers is too small: it must be at least 2"
        ),
        "{log}"
    );
    let output = inputs.nix_build(
        &nix,
        Some("top"),
        &["--arg", "config", "{ Entrypont = [ \"/bin/sh\" ]; }"],
    );
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("unknown key \\\"Entrypont\\\"") || log.contains("unknown key \"Entrypont\""),
        "{log}"
    );
}

/// nixpkgs' build of layered-gen runs the hermetic tier. Evaluated with stand-ins for lib and
/// rustPlatform (no nixpkgs offline), which pass the derivation's attributes through.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-instantiate: cargo test --features tool-tests (.ci/run)"
)]
fn the_package_runs_the_hermetic_tests() {
    let package = repo_root().join("nix/package.nix");
    let expression = format!(
        "let p = import {} {{ lib = {{ cleanSource = s: s; licenses.mit = \"mit\"; }}; \
         rustPlatform.buildRustPackage = a: a; util-linux = \"util-linux\"; }}; \
         in {{ inherit (p) doCheck nativeCheckInputs; }}",
        package.display()
    );
    let output = run(Command::new(require("nix-instantiate"))
        .args(["--eval", "--strict", "--json", "-E"])
        .arg(expression));
    let attrs: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        attrs,
        json!({"doCheck": true, "nativeCheckInputs": ["util-linux"]})
    );
}

/// extraTags reach the built and the streamed image; mergeImages puts images in one archive
/// that `docker load` loads whole.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker: cargo test --features tool-tests (.ci/run)"
)]
fn extra_tags_and_merged_images() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let tags = json!([
        "layered-gen-test/tagged:main",
        "layered-gen-test/tagged:latest",
        "layered-gen-test/tagged:v1"
    ]);
    let tagged = inputs.build(&nix, Some("tagged"), &[]);
    let manifest = archive_manifest(&tagged);
    assert_eq!(manifest[0]["RepoTags"], tags);
    assert_eq!(inputs.eval(&nix, "tagged.imageTag"), "main");

    let script = inputs.build(&nix, Some("taggedStream"), &[]);
    let streamed = inputs.dir.path().join("streamed.tar");
    run(Command::new("sh").arg("-c").arg(format!(
        "'{}' > '{}'",
        script.display(),
        streamed.display()
    )));
    let manifest = archive_manifest(&streamed);
    assert_eq!(manifest[0]["RepoTags"], tags);
    // As nixpkgs' script: --repo_tag (-t) names the image at run time.
    run(Command::new("sh").arg("-c").arg(format!(
        "'{}' -t layered-gen-test/retagged:now --quiet > '{}'",
        script.display(),
        streamed.display()
    )));
    let manifest = archive_manifest(&streamed);
    assert_eq!(
        manifest[0]["RepoTags"],
        json!(["layered-gen-test/retagged:now"])
    );

    let merged = inputs.build(&nix, Some("merged"), &[]);
    let references = [
        "registry.example:5000/layered-gen-test/base",
        "layered-gen-test/tagged:main",
        "layered-gen-test/tagged:v1",
        "layered-gen-test/base-gz",
    ];
    let loaded = run(Command::new(require("docker"))
        .args(["load", "-i"])
        .arg(&merged));
    let loaded = String::from_utf8_lossy(&loaded.stdout);
    for reference in references {
        assert!(loaded.contains(reference), "{reference} in {loaded}");
    }
    let output = docker_run(&["layered-gen-test/tagged:v1"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi top\n");
}

/// The README's reproducibility workflow: `nix-build --check --keep-failed` keeps the rebuilt
/// image as `<out>.check`, and `layered-gen diff` says what differs.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build: cargo test --features tool-tests (.ci/run)"
)]
fn diff_explains_what_nix_build_check_found() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let out = inputs.build(&nix, Some("now"), &[]);
    // The creation time has a resolution of a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let check = inputs.nix_build(&nix, Some("now"), &["--check", "--keep-failed"]);
    assert!(!check.status.success(), "the rebuild differs");
    let log = String::from_utf8_lossy(&check.stderr);
    assert!(log.contains("may not be deterministic"), "{log}");
    let kept = PathBuf::from(format!("{}.check", out.display()));
    assert!(kept.exists(), "{log}");
    let output = Command::new(bin())
        .arg("diff")
        .arg(&out)
        .arg(&kept)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("config $.created: "), "{text}");
    assert!(text.contains("manifest $.Config: "), "{text}");
    assert!(!text.contains("layer "), "the layers are the same: {text}");
    let _ = Command::new(require("nix-store"))
        .args(["--delete"])
        .arg(&kept)
        .output();
}

/// buildImageIndex: per-system images as one multi-platform OCI layout.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn image_index_from_per_system_images() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let layout = inputs.build(&nix, Some("multi"), &[]);
    let tag = inputs.eval(&nix, "multi.imageTag");
    assert_eq!(tag.len(), 32, "the output's store hash: {tag}");
    let raw: Value = serde_json::from_slice(
        &run(Command::new(require("skopeo"))
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{tag}", layout.display())))
        .stdout,
    )
    .unwrap();
    assert_eq!(index_architectures(&raw), ["amd64", "arm64"]);
}

/// The copyTo* executables of both functions: to a registry (with a destination), into the
/// Docker daemon and into podman (by default, under the image's tags), straight from the store.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker-registry, skopeo, docker, podman: cargo test --features tool-tests (.ci/run)"
)]
fn copy_to_registry_docker_daemon_and_podman() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let cache = tempfile::tempdir().unwrap();
    let copy = |attr: &str, program: &str, args: &[&str], path: Option<&str>| {
        let out = inputs.build(&nix, Some(attr), &[]);
        let mut command = Command::new(out.join("bin").join(program));
        command.args(args).env("XDG_CACHE_HOME", cache.path());
        if let Some(path) = path {
            command.env("PATH", path);
        }
        run(&mut command)
    };

    // To a registry: what arrives is the image buildLayeredImage builds (same diff_ids).
    let registry = Registry::start();
    let remote = format!(
        "docker://127.0.0.1:{}/layered-gen-test/tagged:pushed",
        registry.port
    );
    // As users run it: `nix run` (here on the expression file, as a flake's would be).
    run(inputs
        .nix("nix", &["run", "--file"], &nix)
        .args(["tagged.copyToRegistry", "--", &remote, "--quiet"])
        .env("XDG_CACHE_HOME", cache.path()));
    let pushed: Value = serde_json::from_slice(
        &run(Command::new(require("skopeo")).args([
            "inspect",
            "--config",
            "--tls-verify=false",
            &remote,
        ]))
        .stdout,
    )
    .unwrap();
    let built = inputs.build(&nix, Some("tagged"), &[]);
    let local: Value = serde_json::from_slice(
        &run(Command::new(require("skopeo"))
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", built.display())))
        .stdout,
    )
    .unwrap();
    assert_eq!(pushed["rootfs"], local["rootfs"]);

    // Into the Docker daemon, from streamLayeredImage, under the image's tags.
    copy(
        "taggedStream.copyToDockerDaemon",
        "copy-to-docker-daemon",
        &[],
        None,
    );
    for tag in ["main", "latest", "v1"] {
        let output = docker_run(&[&format!("layered-gen-test/tagged:{tag}")]);
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hi top\n");
    }
    run(Command::new("docker").args([
        "rmi",
        "layered-gen-test/tagged:main",
        "layered-gen-test/tagged:latest",
        "layered-gen-test/tagged:v1",
    ]));

    // Into podman (this test's podman, through a wrapper on PATH).
    let podman = Podman::new();
    let wrapper_dir = tempfile::tempdir().unwrap();
    let wrapped = podman.command();
    let mut wrapper = String::from("#!/bin/sh\nexec");
    for part in std::iter::once(wrapped.get_program()).chain(wrapped.get_args()) {
        wrapper.push_str(&format!(" '{}'", part.to_string_lossy()));
    }
    for (key, value) in wrapped.get_envs() {
        wrapper = wrapper.replacen(
            "exec",
            &format!(
                "export {}='{}'\nexec",
                key.to_string_lossy(),
                value.unwrap_or_default().to_string_lossy()
            ),
            1,
        );
    }
    wrapper.push_str(" \"$@\"\n");
    fs::write(wrapper_dir.path().join("podman"), wrapper).unwrap();
    fs::set_permissions(
        wrapper_dir.path().join("podman"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        wrapper_dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    copy(
        "tagged.copyToPodman",
        "copy-to-podman",
        &["--quiet"],
        Some(&path),
    );
    let ran = podman.run(&["localhost/layered-gen-test/tagged:v1"]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hi top\n");
}

/// Every dockerTools argument is honoured or refused at evaluation with what to use instead;
/// an argument dockerTools does not take is an error, as in nixpkgs.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, nix-instantiate, docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn every_argument_is_honoured_or_refused() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let evaluate = |attr: &str, extra: &str| {
        inputs
            .nix("nix-instantiate", &["--eval", "--strict", "--json"], &nix)
            .args(["--arg", "extra", extra, "-A", attr])
            .output()
            .unwrap()
    };
    let refused = |attr: &str, extra: &str, words: &str| {
        let output = evaluate(&format!("{attr}.drvPath"), extra);
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && log.contains(words),
            "{extra}: {log}"
        );
    };
    refused(
        "custom",
        "{ contentz = [ ]; }",
        "called with unexpected argument 'contentz'",
    );
    refused(
        "customStream",
        "{ compressor = \"gz\"; }",
        "unexpected argument 'compressor'",
    );
    refused(
        "custom",
        "{ fakeRootCommands = \"chown 1:1 data\"; }",
        "fakeRootCommands needs fakeroot",
    );
    refused(
        "customStream",
        "{ enableFakechroot = true; }",
        "enableFakechroot needs proot",
    );
    refused(
        "custom",
        "{ includeNixDB = true; }",
        "includeNixDB needs nix and sqlite",
    );
    refused(
        "custom",
        "{ layeringPipeline = [ [ \"popularity_contest\" ] ]; layering = \"auto\"; }",
        "give layeringPipeline or layering, not both",
    );

    // passthru and meta reach the result, as with dockerTools.
    let output = evaluate(
        "custom.passthru-check",
        "{ passthru = { passthru-check = \"kept\"; }; meta = { description = \"d\"; }; }",
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "\"kept\"");
    let output = evaluate(
        "customStream.meta.description",
        "{ meta = { description = \"an image\"; }; }",
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "\"an image\"");

    // .override, as lib.makeOverridable gives it; names lower-cased as nixpkgs does.
    let expression = |body: &str| {
        run(Command::new(require("nix-instantiate"))
            .args(["--eval", "--strict", "--json", "--expr"])
            .arg(format!(
                "let i = import {} {{ layeredGenDir = {}; busyboxDir = {}; }}; in {body}",
                nix.display(),
                inputs.dir.path().join("lg").display(),
                inputs.dir.path().join("bb").display()
            )))
        .stdout
    };
    assert_eq!(
        expression("(i.single.override { name = \"Other/Name\"; tag = \"t\"; }).imageName"),
        b"\"other/name\""
    );
    assert_eq!(
        expression("(i.customStream.override (old: { tag = old.name; })).imageTag"),
        b"\"layered-gen-test/custom\""
    );
    // `contents` as one derivation; the name lower-cased in the image too.
    let single = inputs.build(&nix, Some("single"), &[]);
    let manifest = archive_manifest(&single);
    let tags = manifest[0]["RepoTags"].as_array().unwrap();
    assert!(
        tags[0]
            .as_str()
            .unwrap()
            .starts_with("layered-gen-test/single:"),
        "{tags:?}"
    );
    let loaded = run(Command::new(require("docker"))
        .args(["load", "-i"])
        .arg(&single));
    let reference = String::from_utf8_lossy(&loaded.stdout)
        .trim()
        .trim_start_matches("Loaded image: ")
        .to_string();
    let output = docker_run(&[&reference]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "single\n");
    run(Command::new("docker").args(["rmi", &reference]));

    // fromImageConfig: the base's whole config (as Docker's FROM), or its Env only (as
    // dockerTools).
    for (attr, cmd) in [
        ("onCmdBase", json!(["/bin/sh", "-c", "echo from the base"])),
        ("onCmdBaseEnvOnly", Value::Null),
    ] {
        let image = inputs.build(&nix, Some(attr), &[]);
        let config: Value = serde_json::from_slice(
            &run(Command::new(require("skopeo"))
                .args(["inspect", "--config"])
                .arg(format!("docker-archive:{}", image.display())))
            .stdout,
        )
        .unwrap();
        assert_eq!(config["config"]["Cmd"], cmd, "{attr}");
        assert_eq!(config["config"]["Env"], json!(["FROM_BASE=yes"]), "{attr}");
    }

    // layeringPipeline passes through to --layering-pipeline: with the busybox and app
    // closure (4 store paths), popularity cut to 2 layers, then the customisation layer.
    let image = inputs.build(
        &nix,
        Some("custom"),
        &[
            "--arg",
            "extra",
            "{ layeringPipeline = [ [ \"popularity_contest\" ] [ \"limit_layers\" 2 ] ]; }",
        ],
    );
    let manifest = archive_manifest(&image);
    assert_eq!(
        manifest[0]["Layers"].as_array().unwrap().len(),
        3,
        "{manifest}"
    );
    // debug: the plan in the build log.
    let output = inputs.nix_build(
        &nix,
        Some("custom"),
        &["--arg", "extra", "{ debug = true; }"],
    );
    let mut log = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() && !log.contains("\"storeLayerBudget\"") {
        // Built before (same binary, same inputs), so not built now: its log is the store's.
        let out = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let stored = run(Command::new(require("nix-store")).args(["--read-log", &out]));
        log = String::from_utf8_lossy(&stored.stdout).into_owned();
    }
    assert!(
        output.status.success()
            && log.contains("\"storeLayerBudget\"")
            && log.contains("\"layering\": \"auto\""),
        "{log}"
    );
    docker_load(&image);
    let tag = manifest[0]["RepoTags"][0].as_str().unwrap();
    let ran = docker_run(&[tag]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hi top\n");
    run(Command::new(require("docker")).args(["rmi", tag]));

    // mtime, uname and gname reach the store layers' entries; created takes a plain date.
    let image = inputs.build(
        &nix,
        Some("custom"),
        &[
            "--arg",
            "extra",
            "{ mtime = \"2024-05-01T12:00:00Z\"; uname = \"someone\"; gname = \"others\"; \
             created = \"2024-05-01\"; }",
        ],
    );
    let config: Value = serde_json::from_slice(
        &run(Command::new(require("skopeo"))
            .args(["inspect", "--config"])
            .arg(format!("docker-archive:{}", image.display())))
        .stdout,
    )
    .unwrap();
    assert_eq!(config["created"], "2024-05-01T00:00:00Z");
    let listing = run(Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, tarfile, json, io\n\
         t = tarfile.open(sys.argv[1])\n\
         m = json.load(t.extractfile('manifest.json'))[0]\n\
         for l in m['Layers']:\n\
         \x20   for e in tarfile.open(fileobj=io.BytesIO(t.extractfile(l).read())):\n\
         \x20       if e.name.lstrip('/').startswith('nix/store/') and e.name.lstrip('/').count('/') > 2:\n\
         \x20           print(e.mtime, e.uname, e.gname)\n",
        )
        .arg(&image));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(!listing.is_empty());
    for line in listing.lines() {
        assert_eq!(line, "1714564800 someone others");
    }
}

/// In a flake (pure evaluation: no `builtins.currentSystem`), with a package set's stdenv: the
/// builds run on its build platform and images default to its host platform's architecture,
/// as dockerTools' do; every derivation, the copyTo* ones too, evaluates.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix: cargo test --features tool-tests (.ci/run)"
)]
fn the_functions_evaluate_purely_in_a_flake() {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("nix"))
        .arg(dir.path()));
    let flake = |stdenv: &str| {
        format!(
            "{{ outputs = {{ self }}: let\n\
               l = import ./nix {{ layered-gen = \"/nix/store/00000000000000000000000000000000-lg\"; \
               runtimeShell = \"/nix/store/00000000000000000000000000000000-sh/bin/sh\"; {stdenv} }};\n\
               i = l.buildLayeredImage {{ name = \"pure/test\"; tag = \"t\"; }};\n\
               s = l.streamLayeredImage {{ name = \"pure/test\"; }};\n\
               c = l.buildLayeredImage {{ name = \"pure/test\"; extraCommands = \"mkdir tmp\"; }};\n\
             in {{ x = {{ inherit (i) system; \
               arch = builtins.filter (a: a == \"aarch64-linux\" || a == \"--architecture\") i.args; \
               drvs = map (d: builtins.stringLength d.drvPath > 0) \
                 [ i s i.copyToRegistry s.copyToDockerDaemon s.copyToPodman c ]; \
               path = c.customisationLayer.PATH; }}; }}; }}\n"
        )
    };
    let evaluate = |stdenv: &str| {
        fs::write(dir.path().join("flake.nix"), flake(stdenv)).unwrap();
        let _ = fs::remove_file(dir.path().join("flake.lock"));
        Command::new(require("nix"))
            .args(["eval", "--extra-experimental-features", "flakes", "--json"])
            .arg(format!("path:{}#x", dir.path().display()))
            .output()
            .unwrap()
    };
    let output = evaluate(
        "stdenv = { buildPlatform.system = \"x86_64-linux\"; hostPlatform.system = \"aarch64-linux\"; \
         initialPath = [ \"/nix/store/00000000000000000000000000000000-coreutils\" \
         \"/nix/store/00000000000000000000000000000000-findutils\" ]; };",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        value,
        json!({
            "system": "x86_64-linux",
            "arch": ["--architecture", "aarch64-linux"],
            "drvs": [true, true, true, true, true, true],
            // extraCommands run with stdenv's initialPath on PATH, as dockerTools' runCommand.
            "path": "/nix/store/00000000000000000000000000000000-coreutils/bin:\
                     /nix/store/00000000000000000000000000000000-findutils/bin"
        })
    );
    // Without a stdenv or a system, purity has nothing to go on, and says so.
    let output = evaluate("");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("currentSystem"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// nix/default.nix takes nixpkgs' `lib` when it is given (callPackage passes it) and uses its
/// functions, and builds the same image without it; an image needs a name.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-instantiate: cargo test --features tool-tests (.ci/run)"
)]
fn nix_functions_use_lib_when_given() {
    let inputs = Inputs::new();
    let nix_dir = repo_root().join("nix");
    let evaluate = |lib: &str, attr: &str| {
        let expression = format!(
            "let layered = import {} {{ layered-gen = {}; runtimeShell = \"/bin/sh\"; {lib} }}; \
             in (layered.streamLayeredImage {{ name = \"My/App\"; }}).{attr}",
            nix_dir.display(),
            inputs.dir.path().join("lg").display(),
        );
        Command::new(require("nix-instantiate"))
            .args(["--eval", "--strict", "--json", "-E", &expression])
            .output()
            .unwrap()
    };
    let text = |output: Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(text(evaluate("", "imageName")), "\"my/app\"");
    let stub = "lib = { toLower = s: \"from-lib\"; toList = x: if builtins.isList x then x \
                else [ x ]; concatMapStringsSep = s: f: l: builtins.concatStringsSep s (map f l); };";
    assert_eq!(text(evaluate(stub, "imageName")), "\"from-lib\"");
    // The same functions as lib's, given as lib: the same derivation as without it.
    let same = "lib = { toLower = builtins.replaceStrings [ \"M\" \"A\" ] [ \"m\" \"a\" ]; \
                toList = x: if builtins.isList x then x else [ x ]; \
                concatMapStringsSep = s: f: l: builtins.concatStringsSep s (map f l); };";
    assert_eq!(
        text(evaluate(same, "drvPath")),
        text(evaluate("", "drvPath"))
    );
    let unnamed = Command::new(require("nix-instantiate"))
        .args([
            "--eval",
            "--strict",
            "-E",
            &format!(
                "(import {} {{ layered-gen = {}; runtimeShell = \"/bin/sh\"; }}).buildLayeredImage {{ }}",
                nix_dir.display(),
                inputs.dir.path().join("lg").display()
            ),
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&unnamed.stderr);
    assert!(
        log.contains("called without required argument 'name'"),
        "{log}"
    );
}

/// The store paths a history comment in dockerTools' style lists: `store paths: ['/a', '/b']`.
fn paths_of_comment(comment: &str) -> Vec<String> {
    let list = comment
        .strip_prefix("store paths: [")
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a dockerTools comment: {comment}"));
    list.split(", ")
        .filter(|item| !item.is_empty())
        .map(|item| item.trim_matches('\'').to_string())
        .collect()
}

/// nix/'s defaults are dockerTools' now: auto layering, and the store layers in dockerTools'
/// own tar format, the bytes Python's tarfile writes for the real store paths as dockerTools
/// drives it, a customisation layer last, history as dockerTools writes it; the image rebuilds
/// the same. `tarCompat = "none"` gives our format.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, python3: cargo test --features tool-tests (.ci/run)"
)]
fn store_layers_are_dockertools_own_by_default() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let image = inputs.build(&nix, Some("custom"), &[]);
    inputs.check(&nix, "custom", &[]);
    let manifest = archive_manifest(&image);
    let members = manifest[0]["Layers"].as_array().unwrap();
    let config: Value = serde_json::from_slice(
        &tar_member(&image, manifest[0]["Config"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), members.len());
    let store_layers = members.len() - 1;
    assert!(store_layers >= 2, "{config}");
    for (index, member) in members[..store_layers].iter().enumerate() {
        let comment = history[index]["comment"].as_str().unwrap();
        assert_eq!(
            history[index].as_object().unwrap().len(),
            2,
            "created and comment only"
        );
        let paths = paths_of_comment(comment);
        let ours = tar_member(&image, member.as_str().unwrap()).unwrap();
        let theirs =
            crate::tar_compat::oracle_layer(inputs.dir.path(), Path::new(""), &paths, (0, "root"));
        assert!(
            ours == theirs,
            "store layer {index} ({paths:?}) is not what dockerTools writes"
        );
    }

    assert!(
        layer_listings(&image)[0]
            .iter()
            .all(|name| name.starts_with('/'))
    );
    let ours = inputs.build(
        &nix,
        Some("custom"),
        &["--arg", "extra", "{ tarCompat = \"none\"; }"],
    );
    let listing = layer_listings(&ours);
    assert!(
        listing.iter().flatten().all(|name| !name.starts_with('/')),
        "our format's names are relative: {listing:?}"
    );
}

/// sha256:HEX of a file.
fn file_digest(path: &Path) -> String {
    format!("sha256:{}", sha256_file(path))
}

/// The output paths of an image's layer derivations (`image.layers`), read after it is built.
fn layer_paths(inputs: &Inputs, nix: &Path, attr: &str) -> Vec<String> {
    let output = inputs
        .nix(
            "nix-instantiate",
            &["--read-write-mode", "--eval", "--strict", "--json"],
            nix,
        )
        .args(["-A", &format!("{attr}.layers")])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let layers: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    layers
        .iter()
        .map(|l| {
            l.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| l["outPath"].to_string())
        })
        .collect()
}

/// Layers as derivations: buildLayer writes layer.json and a blob per compressor, rebuilt the
/// same by `nix-build --check`; an image takes its blob as it is (the archive member, the OCI
/// blob, the streamed image), runs in Docker, refuses a layer given twice or two layers
/// holding one path, naming both; with layerDerivations the image is the one-derivation
/// build of the same plan (diff_ids, history, file for file), its layers are derivations a
/// sibling image shares, and with import from derivation disabled Nix says so.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn layers_as_derivations_are_taken_as_they_are_and_shared() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let layer = inputs.build(&nix, Some("busyboxLayer"), &[]);
    inputs.check(&nix, "busyboxLayer", &[]);
    let described: Value =
        serde_json::from_slice(&fs::read(layer.join("layer.json")).unwrap()).unwrap();
    assert_eq!(described["layeredGenLayer"], 1);
    assert_eq!(
        described["paths"].as_array().unwrap().len(),
        1,
        "{described}"
    );
    let blobs = described["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 2, "gz and zstd: {described}");
    for blob in blobs {
        let file = layer.join(blob["file"].as_str().unwrap());
        assert_eq!(file_digest(&file), blob["digest"].as_str().unwrap());
        assert_eq!(
            fs::metadata(&file).unwrap().len(),
            blob["size"].as_u64().unwrap()
        );
    }
    let gzip = layer.join("layer.tar.gz");

    // The image's first layer is the layer's gzip blob, byte for byte; the image runs.
    let image = inputs.build(&nix, Some("onLayers"), &[]);
    inputs.check(&nix, "onLayers", &[]);
    let manifest = archive_manifest(&image);
    let members = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(
        members.len(),
        3,
        "busybox's layer, the app's, the customisation layer"
    );
    assert!(tar_member(&image, members[0].as_str().unwrap()).unwrap() == fs::read(&gzip).unwrap());
    let config: Value = serde_json::from_slice(
        &tar_member(&image, manifest[0]["Config"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], described["diffId"]);
    let tag = manifest[0]["RepoTags"][0].as_str().unwrap().to_string();
    docker_load(&image);
    assert_eq!(
        String::from_utf8_lossy(&docker_run(&[&tag]).stdout),
        "hi top\n"
    );
    run(Command::new(require("docker")).args(["rmi", &tag]));
    assert!(
        inputs.stream(&nix, "onLayersStream", &[]) == fs::read(&image).unwrap(),
        "streamed, the same image"
    );
    let oci = inputs.build(&nix, Some("onLayersOci"), &[]);
    let blob = oci.join("blobs/sha256").join(
        blobs[0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    assert!(
        fs::read(blob).unwrap() == fs::read(&gzip).unwrap(),
        "the OCI blob is the layer's"
    );

    // contents: busybox linked at / in its layer; the image runs its shell.
    let shell = inputs.build(&nix, Some("onShellLayer"), &[]);
    let tag = docker_load(&shell);
    let tag = tag.trim().trim_start_matches("Loaded image: ").to_string();
    assert_eq!(
        String::from_utf8_lossy(&docker_run(&[&tag]).stdout),
        "from the shell layer\n"
    );
    run(Command::new(require("docker")).args(["rmi", &tag]));

    for (attr, words) in [
        ("layerTwice", "is given twice"),
        ("layersOverlap", "both hold"),
    ] {
        let output = inputs.nix_build(&nix, Some(attr), &[]);
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && log.contains(words),
            "{attr}: {log}"
        );
        assert!(
            log.matches("-layer").count() >= 2,
            "{attr} names both: {log}"
        );
    }

    // layerDerivations: the same image as one derivation, made of layer derivations.
    let whole = inputs.build(&nix, Some("whole"), &[]);
    let split = inputs.build(&nix, Some("split"), &[]);
    inputs.check(&nix, "split", &[]);
    let config_of = |archive: &Path| -> Value {
        let manifest = archive_manifest(archive);
        serde_json::from_slice(
            &tar_member(archive, manifest[0]["Config"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(config_of(&split)["rootfs"], config_of(&whole)["rootfs"]);
    assert_eq!(config_of(&split)["history"], config_of(&whole)["history"]);
    assert_eq!(layer_listings(&split), layer_listings(&whole));
    let split_layers = layer_paths(&inputs, &nix, "split");
    assert_eq!(split_layers.len(), 3, "{split_layers:?}");
    for layer in &split_layers {
        assert!(Path::new(layer).join("layer.json").is_file(), "{layer}");
    }
    inputs.build(&nix, Some("sibling"), &[]);
    let sibling_layers = layer_paths(&inputs, &nix, "sibling");
    let shared: Vec<&String> = sibling_layers
        .iter()
        .filter(|l| split_layers.contains(l))
        .collect();
    assert_eq!(
        shared.len(),
        2,
        "busybox's and libgreet's layers are shared: {sibling_layers:?}"
    );
    assert!(shared.iter().any(|l| l.ends_with("-busybox-static-layer")));
    assert!(shared.iter().any(|l| l.ends_with("-libgreet-2.0-layer")));

    let output = inputs.nix_build(
        &nix,
        Some("split"),
        &["--option", "allow-import-from-derivation", "false"],
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && log.contains("allow-import-from-derivation")
            && log.contains("-plan.json"),
        "{log}"
    );
}

/// copyToRegistry with layer derivations pushes each layer from its stored blob: what the
/// registry holds is the layer's gzip blob, and a second push asks and sends nothing.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker-registry, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn copy_to_registry_pushes_layer_derivations_from_their_blobs() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let layer = inputs.build(&nix, Some("busyboxLayer"), &[]);
    let registry = Registry::start();
    let remote = format!(
        "docker://127.0.0.1:{}/layered-gen-test/on-layers:pushed",
        registry.port
    );
    let script = inputs.build(&nix, Some("onLayers.copyToRegistry"), &[]);
    let cache = tempfile::tempdir().unwrap();
    let push = || {
        run(Command::new(script.join("bin/copy-to-registry"))
            .args([&remote, "--quiet"])
            .env("XDG_CACHE_HOME", cache.path()))
    };
    push();
    let first = registry.uploads();
    assert!(first >= 3, "the layers and the config went up: {first}");
    let manifest: Value = serde_json::from_slice(
        &run(Command::new(require("skopeo")).args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &remote,
        ]))
        .stdout,
    )
    .unwrap();
    assert_eq!(
        manifest["layers"][0]["digest"].as_str().unwrap(),
        file_digest(&layer.join("layer.tar.gz")),
        "the layer's own blob"
    );
    push();
    assert_eq!(registry.uploads(), first, "nothing is sent again");
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, docker-registry, skopeo, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn sboms_signatures_and_the_sbom_passthru() {
    let inputs = Inputs::new();
    let nix = images_nix();
    let key = repo_root().join("tests/it/keys/p256.pem");
    let key_arg = ["--argstr", "signKey", key.to_str().unwrap()];

    // buildLayeredImage: the SBOMs are files of the archive, the image their subject.
    let archive = inputs.build(&nix, Some("audited"), &key_arg);
    let cdx: Value =
        serde_json::from_slice(&tar_member(&archive, "sbom.cdx.json").unwrap()).unwrap();
    let config = archive_manifest(&archive)[0]["Config"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        cdx["metadata"]["component"]["hashes"][0]["content"],
        config.trim_end_matches(".json")
    );
    assert!(tar_member(&archive, "sbom.spdx.json").is_some());
    // The contents' meta is in it.
    let app = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .expect("app is a component");
    assert_eq!(app["description"], "The test app");
    assert_eq!(app["licenses"], json!([{"expression": "MIT"}]));
    assert_eq!(
        app["externalReferences"][0]["url"],
        "https://example.org/app"
    );
    inputs.check(&nix, "audited", &key_arg);

    // An OCI layout lists the SPDX artifact beside the image.
    let layout = inputs.build(&nix, Some("auditedOci"), &[]);
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][1]["artifactType"],
        "application/spdx+json"
    );

    // image.sbom: the closure's SBOM as its own derivation, reproducible.
    let sbom = inputs.build(&nix, Some("audited.sbom"), &key_arg);
    let doc: Value = serde_json::from_slice(&fs::read(&sbom).unwrap()).unwrap();
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert!(
        doc.to_string().contains("app-1.0") && doc.to_string().contains("The test app"),
        "the closure's packages and their meta are in it"
    );
    inputs.check(&nix, "audited.sbom", &key_arg);

    // copyToRegistry signs with the key it reads when it runs (the store holds only its path).
    let registry = Registry::start();
    let remote = format!(
        "docker://127.0.0.1:{}/layered-gen-test/audited:1",
        registry.port
    );
    let script = inputs.build(&nix, Some("audited.copyToRegistry"), &key_arg);
    let store_text = run(Command::new(require("nix-store"))
        .args(["--query", "--requisites"])
        .arg(&script));
    let requisites = String::from_utf8(store_text.stdout).unwrap();
    for path in requisites.lines() {
        let bytes = fs::read(Path::new(path)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("BEGIN PRIVATE KEY"),
            "{path} holds the private key"
        );
    }
    run(Command::new(script.join("bin/copy-to-registry")).args([&remote, "--quiet"]));
    let verified = run(Command::new(bin())
        .args(["verify", &remote, "--key"])
        .arg(repo_root().join("tests/it/keys/p256.pub")));
    let said = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(
        said.matches("intact, about the image, signed").count(),
        2,
        "{said}"
    );

    // A key as a Nix path or in the store is refused at evaluation.
    for attr in ["keyAsPath", "keyInStore"] {
        let output = inputs.nix_build(&nix, Some(attr), &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{attr} built");
        assert!(stderr.contains("signKey"), "{attr}: {stderr}");
    }
}
