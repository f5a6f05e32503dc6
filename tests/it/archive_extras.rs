//! docker-archive extras: the pre-1.10 metadata (`--docker-legacy`), several tags, several
//! images in one archive (`merge`) and an image flattened to a root filesystem (`export`),
//! checked with our own reader, Docker, skopeo and umoci.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A store with busybox at / (a shell in the image) and the sample paths.
fn busybox_store() -> (TestStore, String) {
    let mut store = TestStore::new();
    let busybox = store.add_busybox();
    store.sample();
    (store, busybox)
}

fn json_member(archive: &Path, name: &str) -> Value {
    serde_json::from_slice(&tar_member(archive, name).unwrap_or_else(|| panic!("no {name}")))
        .unwrap()
}

fn docker(args: &[&str]) -> std::process::Output {
    run(Command::new(require("docker")).args(args))
}

fn docker_rmi(references: &[&str]) {
    let _ = Command::new("docker")
        .arg("rmi")
        .arg("-f")
        .args(references)
        .output();
}

fn names_in_archive(archive: &Path) -> Vec<String> {
    let mut archive = tar::Archive::new(fs::File::open(archive).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

/// Hermetic: the legacy metadata is complete, chained, content-derived and reproducible;
/// several tags reach RepoTags and repositories; our own reader takes the legacy part alone.
#[test]
fn legacy_metadata_names_every_layer_and_tag() {
    let mut store = TestStore::new();
    store.sample();
    let dir = store.dir.path().to_path_buf();
    let (a, b) = (dir.join("a.tar"), dir.join("b.tar"));
    let args = [
        "--name",
        "legacy/app",
        "--tag",
        "1.0",
        "--tag",
        "latest",
        "--docker-legacy",
    ];
    store.build(&a, &args);
    store.build(&b, &args);
    assert_same_bytes(&a, &b, "two --docker-legacy builds");

    let manifest = json_member(&a, "manifest.json");
    assert_eq!(
        manifest[0]["RepoTags"],
        json!(["legacy/app:1.0", "legacy/app:latest"])
    );
    let layers: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let config = json_member(&a, manifest[0]["Config"].as_str().unwrap());
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    let mut parent: Option<String> = None;
    for (i, layer) in layers.iter().enumerate() {
        let (id, file) = layer.split_once('/').unwrap();
        assert_eq!(file, "layer.tar", "layers live in their id directories");
        assert_eq!(tar_member(&a, &format!("{id}/VERSION")).unwrap(), b"1.0");
        let json = json_member(&a, &format!("{id}/json"));
        assert_eq!(json["id"], id);
        assert_eq!(json["parent"].as_str(), parent.as_deref(), "layer {i}");
        let content = tar_member(&a, layer).unwrap();
        let digest = format!("sha256:{:x}", Sha256::digest(&content));
        assert_eq!(
            digest,
            diff_ids[i].as_str().unwrap(),
            "layer {i} is the config's layer"
        );
        let top = i + 1 == layers.len();
        assert_eq!(
            json["config"].is_object(),
            top,
            "the config sits on the top layer"
        );
        parent = Some(id.to_string());
    }
    let top = parent.unwrap();
    assert_eq!(
        json_member(&a, "repositories"),
        json!({"legacy/app": {"1.0": top, "latest": top}})
    );
    // Only layer directories at the top (Docker's legacy loader takes each for a layer).
    for name in names_in_archive(&a) {
        if let Some((first, _)) = name.split_once('/') {
            assert!(layers.iter().any(|l| l.starts_with(first)), "{name}");
        }
    }

    // The legacy part alone is a base our reader takes; a change of content changes the ids.
    let legacy_only = dir.join("legacy-only.tar");
    filter_tar(&a, &legacy_only, |name| name != "manifest.json");
    let plan: Value = layered_gen_json(&[
        "plan",
        "--closure",
        store.write_closure().to_str().unwrap(),
        "--from-image",
        legacy_only.to_str().unwrap(),
        "--from-image-tag",
        "legacy/app:latest",
    ]);
    let base_files: Vec<&str> = plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "base")
        .map(|l| l["file"].as_str().unwrap())
        .collect();
    assert_eq!(base_files, layers);
    let relabelled = dir.join("c.tar");
    store.build(
        &relabelled,
        &["--name", "legacy/app", "--docker-legacy", "--env", "X=1"],
    );
    let other = json_member(&relabelled, "manifest.json");
    assert_ne!(
        other[0]["Layers"][layers.len() - 1],
        manifest[0]["Layers"][layers.len() - 1],
        "another config, another top id"
    );
    assert_eq!(
        other[0]["Layers"][0], manifest[0]["Layers"][0],
        "same bottom layer, same id"
    );
}

#[test]
fn refused_combinations_are_explained() {
    let mut store = TestStore::new();
    store.sample();
    let out = store.dir.path().join("x");
    let closure = store.write_closure();
    let base = [
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
    ];
    let cases: [(&[&str], &str); 2] = [
        (
            &["--tag", "a", "--tag", "a"],
            "layered-gen: error: --tag: the tag a is given twice\n",
        ),
        (
            &["--docker-legacy", "--format", "oci"],
            "layered-gen: error: --docker-legacy: the pre-1.10 metadata belongs to a \
             docker-archive, not to an OCI layout\n",
        ),
    ];
    for (extra, message) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.extend(["-o", out.to_str().unwrap()]);
        assert_eq!(layered_gen_fails(&args), message, "{extra:?}");
    }
}

/// Docker and skopeo read the archive with and without the legacy metadata; Docker's legacy
/// loader reads the metadata alone, and the image runs every time.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn docker_and_skopeo_take_the_archive_with_and_without_legacy_metadata() {
    let (store, busybox) = busybox_store();
    let dir = store.dir.path().to_path_buf();
    for (file, legacy) in [("plain.tar", false), ("legacy.tar", true)] {
        let out = dir.join(file);
        let mut args = vec![
            "--name",
            "layered-gen-test/legacy",
            "--tag",
            file,
            "--tag",
            "second",
            "--contents",
            &busybox,
        ];
        if legacy {
            args.push("--docker-legacy");
        }
        store.build(&out, &args);
        let inspect: Value = serde_json::from_slice(
            &run(Command::new(require("skopeo"))
                .args(["inspect", "--raw"])
                .arg(format!("docker-archive:{}", out.display())))
            .stdout,
        )
        .unwrap();
        assert_eq!(inspect["schemaVersion"], 2, "{file}");
        let reference = format!("layered-gen-test/legacy:{file}");
        docker(&["load", "-i", out.to_str().unwrap()]);
        let output = docker_run(&[&reference, "/bin/sh", "-c", "echo hi from $0"]);
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hi from /bin/sh\n");
        docker_rmi(&[&reference, "layered-gen-test/legacy:second"]);
    }
    let legacy_only = dir.join("legacy-only.tar");
    filter_tar(&dir.join("legacy.tar"), &legacy_only, |n| {
        n != "manifest.json"
    });
    docker(&["load", "-i", legacy_only.to_str().unwrap()]);
    let output = docker_run(&[
        "layered-gen-test/legacy:second",
        "/bin/busybox",
        "echo",
        "legacy",
    ]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "legacy\n");
    docker_rmi(&[
        "layered-gen-test/legacy:legacy.tar",
        "layered-gen-test/legacy:second",
    ]);
}

/// Every tag of an OCI layout is an index entry that skopeo finds by name.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn oci_layouts_name_the_image_once_per_tag() {
    let mut store = TestStore::new();
    store.sample();
    let layout = store.dir.path().join("layout");
    store.build(
        &layout,
        &[
            "--format", "oci", "--name", "t/app", "--tag", "v1", "--tag", "stable",
        ],
    );
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0]["digest"], manifests[1]["digest"]);
    let names: Vec<&str> = manifests
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["v1", "stable"]);
    for tag in names {
        let inspect: Value = serde_json::from_slice(
            &run(Command::new(require("skopeo"))
                .arg("inspect")
                .arg(format!("oci:{}:{tag}", layout.display())))
            .stdout,
        )
        .unwrap();
        assert_eq!(inspect["Digest"], manifests[0]["digest"]);
    }
}

/// Several images, one archive: shared layers once, every tag kept, Docker loads them all.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn merged_images_share_layers_and_all_load() {
    let (store, busybox) = busybox_store();
    let dir = store.dir.path().to_path_buf();
    let one = dir.join("one.tar");
    let two = dir.join("two.tar.gz");
    let three = dir.join("three-oci");
    let contents = ["--contents", busybox.as_str()];
    let with = |extra: &[&'static str]| -> Vec<String> {
        contents
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let build = |out: &Path, extra: &[&'static str]| {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        store.build(out, &args);
    };
    build(&one, &["--name", "layered-gen-test/one", "--tag", "1"]);
    build(
        &two,
        &[
            "--name",
            "layered-gen-test/two",
            "--tag",
            "2",
            "--env",
            "TWO=2",
            "--archive-compression",
            "gzip",
        ],
    );
    build(
        &three,
        &[
            "--name",
            "layered-gen-test/three",
            "--tag",
            "3",
            "--format",
            "oci",
            "--env",
            "N=3",
        ],
    );
    let merged = dir.join("all.tar");
    layered_gen(&[
        "merge",
        one.to_str().unwrap(),
        two.to_str().unwrap(),
        three.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    let manifest = json_member(&merged, "manifest.json");
    let entries = manifest.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let one_layers = json_member(&one, "manifest.json")[0]["Layers"]
        .as_array()
        .unwrap()
        .len();
    let files = names_in_archive(&merged)
        .into_iter()
        .filter(|n| n.starts_with("layers/"))
        .count();
    assert_eq!(
        files, one_layers,
        "the three images have the same layers: stored once"
    );
    for entry in entries {
        assert_eq!(entry["Layers"], entries[0]["Layers"]);
    }

    let references = [
        "layered-gen-test/one:1",
        "layered-gen-test/two:2",
        "layered-gen-test/three:3",
    ];
    docker_rmi(&references);
    let loaded = String::from_utf8_lossy(&docker(&["load", "-i", merged.to_str().unwrap()]).stdout)
        .into_owned();
    for (reference, expected) in references.iter().zip(["", "2", ""]) {
        assert!(loaded.contains(reference), "{loaded}");
        let output = docker_run(&[reference, "/bin/sh", "-c", "echo \"$TWO\""]);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            expected,
            "{reference}"
        );
    }
    docker_rmi(&references);

    // One tag on two different images would leave docker load with one of them.
    let clash = dir.join("clash.tar");
    build(
        &clash,
        &[
            "--name",
            "layered-gen-test/one",
            "--tag",
            "1",
            "--env",
            "OTHER=1",
        ],
    );
    let stderr = layered_gen_fails(&[
        "merge",
        one.to_str().unwrap(),
        clash.to_str().unwrap(),
        "-o",
        dir.join("bad.tar").to_str().unwrap(),
    ]);
    assert!(
        stderr.starts_with(
            "layered-gen: error: two different images are tagged layered-gen-test/one:1"
        ),
        "{stderr}"
    );
    assert!(!dir.join("bad.tar").exists());
}

/// The tree `export` writes, unpacked.
fn exported_tree(image: &Path, dir: &Path, name: &str) -> PathBuf {
    let rootfs = dir.join(format!("{name}-rootfs.tar"));
    layered_gen(&[
        "export",
        image.to_str().unwrap(),
        "-o",
        rootfs.to_str().unwrap(),
    ]);
    let tree = dir.join(format!("{name}-tree"));
    fs::create_dir_all(&tree).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&rootfs)
        .arg("-C")
        .arg(&tree));
    tree
}

/// What umoci unpacks from an OCI layout.
fn umoci_tree(layout: &Path, tag: &str, dir: &Path, name: &str) -> PathBuf {
    let bundle = dir.join(format!("{name}-bundle"));
    run(Command::new(require("umoci"))
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

/// Whiteouts and opaque directories, as umoci applies them.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs umoci: cargo test --features tool-tests (.ci/run)"
)]
fn export_applies_whiteouts_and_opaque_directories_as_umoci_does() {
    let dir = tempfile::tempdir().unwrap();
    let layout = handmade_layout(
        &dir.path().join("handmade"),
        &[
            vec![
                ("etc/", None),
                ("etc/motd", Some("hello\n")),
                ("etc/ssl/", None),
                ("etc/ssl/cert.pem", Some("cert\n")),
                ("var/", None),
                ("var/a", Some("a\n")),
                ("var/sub/", None),
                ("var/sub/b", Some("b\n")),
                ("opt/", None),
                ("opt/x", Some("x\n")),
            ],
            vec![
                ("etc/", None),
                ("etc/.wh.ssl", Some("")),
                ("var/", None),
                ("var/.wh..wh..opq", Some("")),
                ("var/c", Some("c\n")),
                ("opt", Some("now a file\n")),
                ("etc/motd", Some("replaced\n")),
            ],
        ],
    );
    let ours = exported_tree(&layout, dir.path(), "handmade");
    let theirs = umoci_tree(&layout, "x", dir.path(), "handmade");
    assert_eq!(tree_listing(&ours), tree_listing(&theirs));
    let listing = tree_listing(&ours);
    assert!(!listing.contains_key(b"etc/ssl".as_slice()));
    assert!(!listing.contains_key(b"var/a".as_slice()));
    assert!(listing.contains_key(b"var/c".as_slice()));
    assert_eq!(
        fs::read_to_string(ours.join("etc/motd")).unwrap(),
        "replaced\n"
    );
}

/// Entries that reach through symlinks a lower layer made (`evil -> /etc`, `up -> ../../..`,
/// `d/l -> /`), and a whiteout under a link: written where umoci unpacks them, inside the
/// root, file for file; nothing in rootfs.tar goes through a link.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs umoci: cargo test --features tool-tests (.ci/run)"
)]
fn export_resolves_paths_through_links_inside_the_root_as_umoci_does() {
    let dir = tempfile::tempdir().unwrap();
    let layout = handmade_layout(
        &dir.path().join("links"),
        &[
            vec![
                ("etc/", None),
                ("etc/passwd", Some("root:x:0:0::/root:/bin/sh\n")),
                ("evil", Some("->/etc")),
                ("up", Some("->../../..")),
                ("d/", None),
                ("d/l", Some("->/")),
                ("real/", None),
                ("real/f", Some("f\n")),
                ("real/g", Some("g\n")),
                ("link", Some("->real")),
            ],
            vec![
                ("evil/passwd", Some("evil:x:0:0::/:/bin/sh\n")),
                ("up/x", Some("x\n")),
                ("d/l/y", Some("y\n")),
                ("link/.wh.f", Some("")),
            ],
        ],
    );
    let ours = exported_tree(&layout, dir.path(), "links");
    let theirs = umoci_tree(&layout, "x", dir.path(), "links");
    assert_eq!(tree_listing(&ours), tree_listing(&theirs));
    assert_eq!(
        fs::read_to_string(ours.join("etc/passwd")).unwrap(),
        "evil:x:0:0::/:/bin/sh\n"
    );
    assert!(ours.join("x").is_file() && ours.join("y").is_file());
    assert!(!ours.join("real/f").exists() && ours.join("real/g").exists());
    let rootfs = dir.path().join("links-rootfs.tar");
    let names = names_in_archive(&rootfs);
    for name in &names {
        assert!(
            !["evil/", "up/", "d/l/", "link/"]
                .iter()
                .any(|l| name.starts_with(l)),
            "{name} goes through a link"
        );
    }
}

/// Our images and a base with removals: the same tree as umoci's, and `docker import` of it
/// runs; the tarball is reproducible.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo, umoci, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn exported_images_equal_umoci_unpack_and_docker_import_runs() {
    let (store, busybox) = busybox_store();
    let dir = store.dir.path().to_path_buf();
    let base = dir.join("base.tar");
    store.build(
        &base,
        &["--name", "layered-gen-test/base", "--contents", &busybox],
    );
    // On top: the base with a removal (a whiteout) and the store again (shared paths).
    let top = dir.join("top-oci");
    store.build(
        &top,
        &[
            "--from-image",
            base.to_str().unwrap(),
            "--format",
            "oci",
            "--tag",
            "top",
            "--remove",
            "/bin/busybox",
        ],
    );
    let ours = exported_tree(&top, &dir, "top");
    let theirs = umoci_tree(&top, "top", &dir, "top");
    assert_eq!(tree_listing(&ours), tree_listing(&theirs));
    assert!(!tree_listing(&ours).contains_key(b"bin/busybox".as_slice()));
    assert!(tree_listing(&ours).contains_key(b"bin/sh".as_slice()));

    // A docker-archive base: same result as the same image converted by skopeo.
    let from_archive = exported_tree(&base, &dir, "base");
    let converted = dir.join("base-oci");
    run(Command::new(require("skopeo"))
        .arg("copy")
        .arg(format!("docker-archive:{}", base.display()))
        .arg(format!("oci:{}:base", converted.display())));
    assert_eq!(
        tree_listing(&from_archive),
        tree_listing(&umoci_tree(&converted, "base", &dir, "base"))
    );

    let (first, second) = (dir.join("r1.tar"), dir.join("r2.tar"));
    for out in [&first, &second] {
        layered_gen(&["export", top.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    }
    assert_same_bytes(&first, &second, "two exports");
    docker(&[
        "import",
        first.to_str().unwrap(),
        "layered-gen-test/imported:1",
    ]);
    let output = docker_run(&[
        "layered-gen-test/imported:1",
        "/bin/sh",
        "-c",
        "echo imported",
    ]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "imported\n");
    docker_rmi(&["layered-gen-test/imported:1"]);
}

#[test]
fn merge_export_and_the_new_flags_are_documented_with_examples() {
    let help = |args: &[&str]| String::from_utf8(layered_gen(args).stdout).unwrap();
    let top = help(&["--help"]);
    for flag in ["--docker-legacy", "--tag <TAG>"] {
        let block = top
            .split("\n\n")
            .find(|b| b.contains(flag))
            .unwrap_or_default();
        assert!(block.contains("Example:"), "{flag}: {block}");
    }
    assert!(top.contains("merge") && top.contains("export"), "{top}");
    for command in ["merge", "export"] {
        let text = help(&[command, "--help"]);
        assert!(
            text.contains(&format!("Example: layered-gen {command} ")),
            "{command}: {text}"
        );
    }
}
