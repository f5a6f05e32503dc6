//! Images checked by the tools users load them with: skopeo, umoci, a real registry, Docker and
//! podman. Each tool is required; a missing one fails the test and names it.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;
use serde_json::Value;

fn skopeo_inspect(reference: &str, extra: &[&str]) -> Value {
    let output = run(Command::new(require("skopeo"))
        .arg("inspect")
        .args(extra)
        .arg(reference));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Unpacks `layout:tag` with umoci and checks that its /nix/store equals the source store.
fn assert_unpacks_to_store(layout: &Path, tag: &str, store: &TestStore) {
    let bundle = store.dir.path().join(format!("bundle-{tag}"));
    run(Command::new(require("umoci"))
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    let unpacked = tree_listing(&bundle.join("rootfs/nix/store"));
    let source = tree_listing(&store.root().join("nix/store"));
    assert_eq!(unpacked, source, "unpacked image differs from the store");
    fs::remove_dir_all(&bundle).unwrap();
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs skopeo, umoci: cargo test --features tool-tests (.ci/run)"
)]
fn docker_archive_inspects_copies_and_unpacks_to_the_same_tree() {
    let mut store = TestStore::new();
    store.sample();
    let image = store.dir.path().join("image.tar");
    store.build(
        &image,
        &[
            "--max-layers",
            "3",
            "--name",
            "registry.example:5000/test/sample",
            "--tag",
            "v1",
        ],
    );
    let info = skopeo_inspect(&format!("docker-archive:{}", image.display()), &[]);
    assert_eq!(info["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Created"], "1970-01-01T00:00:01Z");

    let layout = store.dir.path().join("copied");
    run(Command::new(require("skopeo"))
        .arg("copy")
        .arg(format!("docker-archive:{}", image.display()))
        .arg(format!("oci:{}:copied", layout.display())));
    assert_unpacks_to_store(&layout, "copied", &store);
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, umoci: cargo test --features tool-tests (.ci/run)"
)]
fn oci_layouts_in_every_compression_push_to_a_registry_and_unpack() {
    let mut store = TestStore::new();
    store.sample();
    let registry = Registry::start();
    for (compression, media_type) in [
        ("none", "application/vnd.oci.image.layer.v1.tar"),
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let layout = store.dir.path().join(format!("oci-{compression}"));
        store.build(
            &layout,
            &[
                "--format",
                "oci",
                "--compression",
                compression,
                "--name",
                "test/oci",
                "--tag",
                compression,
            ],
        );
        let local = format!("oci:{}:{compression}", layout.display());
        let info = skopeo_inspect(&local, &[]);
        let manifest = skopeo_inspect(&local, &["--raw"]);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4);
        for layer in layers {
            assert_eq!(layer["mediaType"], media_type, "{compression}");
        }

        let remote = format!(
            "docker://127.0.0.1:{}/test/oci:{compression}",
            registry.port
        );
        run(Command::new(require("skopeo"))
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(&local)
            .arg(&remote));
        let pushed = skopeo_inspect(&remote, &["--tls-verify=false"]);
        assert_eq!(pushed["Layers"], info["Layers"], "{compression}");
        if compression == "zstd" {
            // umoci 0.4 does not read zstd layers: skopeo decompresses them into a gzip layout
            // that umoci unpacks, so the zstd bytes are still checked by a real reader.
            let converted = store.dir.path().join("oci-zstd-as-gzip");
            run(Command::new(require("skopeo"))
                .args(["copy", "--dest-compress-format", "gzip", "--dest-compress"])
                .arg(&local)
                .arg(format!("oci:{}:zstd", converted.display())));
            assert_unpacks_to_store(&converted, compression, &store);
        } else {
            assert_unpacks_to_store(&layout, compression, &store);
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn oci_archive_is_read_by_skopeo() {
    let mut store = TestStore::new();
    store.sample();
    let archive = store.dir.path().join("image-oci.tar");
    store.build(&archive, &["--format", "oci", "--tag", "archived"]);
    let info = skopeo_inspect(&format!("oci-archive:{}:archived", archive.display()), &[]);
    assert_eq!(info["Layers"].as_array().unwrap().len(), 4);
}

/// A store with busybox, for images that run something.
fn busybox_image(
    store: &mut TestStore,
    name: &str,
    extra: &[&str],
) -> (String, std::path::PathBuf) {
    let busybox = store.add_busybox();
    store.sample();
    let closure = store.write_closure();
    let image = store.dir.path().join("run.tar");
    let root = store.store_root_arg();
    let mut args = vec![
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &root,
        "--name",
        name,
        "-o",
        image.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = layered_gen(&args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(&format!("wrote {name}:")), "{stderr}");
    (busybox, image)
}

fn tag_of(image: &Path) -> String {
    let mut archive = tar::Archive::new(fs::File::open(image).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().as_os_str() == "manifest.json" {
            let manifest: Value = serde_json::from_reader(&mut entry).unwrap();
            return manifest[0]["RepoTags"][0].as_str().unwrap().to_string();
        }
    }
    panic!("no manifest.json in {}", image.display());
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker: cargo test --features tool-tests (.ci/run)"
)]
fn docker_loads_and_runs_the_image_from_a_file_and_from_a_stream() {
    let docker = require("docker");
    let mut store = TestStore::new();
    let (busybox, image) = busybox_image(&mut store, "layered-gen-test/docker", &[]);
    let reference = tag_of(&image);
    assert!(!reference.ends_with(":latest"));
    let loaded = run(Command::new(&docker).arg("load").arg("-i").arg(&image));
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains(&reference),
        "{loaded:?}"
    );
    let ran = run(Command::new(&docker)
        .args(["run", "--rm", "--network", "none", &reference])
        .arg(format!("{busybox}/bin/busybox"))
        .arg("cat")
        .arg(format!("{}/share/deep/er/still/file.txt", store.paths[1].0)));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "deep\n");
    run(Command::new(&docker).args(["rmi", &reference]));

    // The same image streamed to stdout into `docker load`.
    let closure = store.dir.path().join("closure");
    let mut producer = Command::new(bin())
        .args(["--closure", closure.to_str().unwrap(), "--store-root"])
        .arg(store.root())
        .args(["--name", "layered-gen-test/stream", "-o", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let loaded = Command::new(&docker)
        .arg("load")
        .stdin(producer.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(producer.wait().unwrap().success());
    assert!(loaded.status.success(), "{loaded:?}");
    let stdout = String::from_utf8(loaded.stdout).unwrap();
    let streamed = stdout
        .trim()
        .strip_prefix("Loaded image: ")
        .unwrap_or_else(|| panic!("unexpected docker load output {stdout:?}"))
        .to_string();
    let ran = run(Command::new(&docker)
        .args(["run", "--rm", "--network", "none", &streamed])
        .arg(format!("{busybox}/bin/sh"))
        .args(["-c", "echo streamed"]));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "streamed\n");
    run(Command::new(&docker).args(["rmi", &streamed]));
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs podman, runc: cargo test --features tool-tests (.ci/run)"
)]
fn podman_loads_and_runs_the_image() {
    let podman = Podman::new();
    let mut store = TestStore::new();
    let (busybox, image) = busybox_image(
        &mut store,
        "layered-gen-test/podman",
        &["--max-layers", "4"],
    );
    let reference = tag_of(&image);
    run(podman.command().arg("load").arg("-i").arg(&image));
    let ran = run(podman
        .command()
        .args(["run", "--rm", "--network", "none", &reference])
        .arg(format!("{busybox}/bin/busybox"))
        .args(["echo", "hello from podman"]));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello from podman\n");
}

#[test]
fn stdout_stream_equals_the_file() {
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure();
    let file = store.dir.path().join("file.tar");
    let common = [
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
    ];
    let mut args = common.to_vec();
    args.extend(["-o", file.to_str().unwrap()]);
    layered_gen(&args);
    let mut args = common.to_vec();
    args.extend(["-o", "-"]);
    let streamed = layered_gen(&args).stdout;
    assert_eq!(streamed, fs::read(&file).unwrap());
}

/// A file over 8 GiB does not fit ustar's size field: its size goes in a PAX record, and the
/// whole stream stays readable. (A sparse file, so it costs no disk; the bytes still stream.)
#[test]
fn files_over_8_gib_are_written_with_pax_sizes() {
    use std::io::Read;
    const SIZE: u64 = (8 << 30) + 5;
    let mut store = TestStore::new();
    let path = store.add("huge-1", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        let file = fs::File::create(dir.join("big.sparse")).unwrap();
        file.set_len(SIZE - 5).unwrap();
        use std::io::{Seek, SeekFrom, Write};
        let mut file = file;
        file.seek(SeekFrom::End(0)).unwrap();
        file.write_all(b"tail!").unwrap();
    });
    let closure = store.write_closure();
    let mut child = Command::new(bin())
        .args(["--closure", closure.to_str().unwrap(), "--store-root"])
        .arg(store.root())
        .args(["-q", "-o", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut outer = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, stdout));
    let mut checked = false;
    for entry in outer.entries().unwrap() {
        let entry = entry.unwrap();
        if !entry.path().unwrap().starts_with("layers") {
            continue;
        }
        for inner in tar::Archive::new(entry).entries().unwrap() {
            let mut inner = inner.unwrap();
            let name = inner.path().unwrap().display().to_string();
            if name != format!("{}/big.sparse", path.trim_start_matches('/')) {
                continue;
            }
            assert_eq!(inner.size(), SIZE);
            let mut buffer = vec![0u8; 1 << 20];
            let mut total = 0u64;
            let mut last = Vec::new();
            loop {
                let n = inner.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
                last = buffer[n.saturating_sub(5)..n].to_vec();
            }
            assert_eq!(total, SIZE);
            assert_eq!(last, b"tail!");
            checked = true;
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(checked, "the big file was not in the image");
}

/// The progress bar shows on a terminal (here a pseudo-terminal from `script`), never in a
/// pipe or a Nix build log, and `--quiet` silences it.
#[test]
fn progress_bar_only_on_a_terminal() {
    let script = require("script");
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure();
    let out = store.dir.path().join("p.tar");
    let command = format!(
        "{} --closure {} --store-root {} -o {}",
        bin().display(),
        closure.display(),
        store.root().display(),
        out.display()
    );
    let on_terminal = run(Command::new(&script).args(["-qec", &command, "/dev/null"]));
    let screen = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(
        screen.contains("ETA"),
        "no progress bar on a terminal: {screen:?}"
    );
    assert!(screen.contains("layered-gen: wrote image:"), "{screen:?}");

    let quiet =
        run(Command::new(&script).args(["-qec", &format!("{command} --quiet"), "/dev/null"]));
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "");

    let piped = run(Command::new("sh").arg("-c").arg(&command));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(!stderr.contains("ETA"), "{stderr:?}");
    assert!(
        stderr.starts_with("layered-gen: wrote image:"),
        "{stderr:?}"
    );
}

/// The README's first command: the tiny example, built without Nix, runs in Docker and prints
/// its greeting, which it reads from another store path of the closure.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker: cargo test --features tool-tests (.ci/run)"
)]
fn the_readme_example_runs_in_docker() {
    require("docker");
    let out = tempfile::tempdir().unwrap();
    run(Command::new(repo_root().join("examples/tiny/build.sh"))
        .env("LAYERED_GEN", bin())
        .env("TINY_OUT", out.path()));
    let output = docker_run(&["example/tiny:latest"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hello from a layered-gen image!\n"
    );
    let inspect = run(Command::new(require("docker")).args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        "example/tiny:latest",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        r#"["/bin/hello"]"#
    );
    let _ = Command::new("docker")
        .args(["rmi", "example/tiny:latest"])
        .output();
}
