//! `layered-gen index`: images of several platforms as one multi-platform image, checked with
//! skopeo, a registry and `docker pull --platform` (only amd64 runs here; arm64 is inspected).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// An image of the busybox store for one platform: a docker-archive, or with `oci` an OCI
/// layout with gzip layers.
fn platform_image(store: &TestStore, busybox: &str, architecture: &str, oci: bool) -> PathBuf {
    let out = store.dir.path().join(format!(
        "{}-{architecture}",
        if oci { "oci" } else { "archive" }
    ));
    let mut args = vec![
        "--name",
        "layered-gen-test/multi",
        "--contents",
        busybox,
        "--architecture",
        architecture,
    ];
    if oci {
        args.extend(["--format", "oci"]);
    }
    store.build(&out, &args);
    out
}

fn skopeo() -> Command {
    Command::new(require("skopeo"))
}

fn skopeo_json(args: &[&str], reference: &str) -> Value {
    serde_json::from_slice(&run(skopeo().args(args).arg(reference)).stdout).unwrap()
}

/// A docker-archive whose config names no architecture: our image with the key removed.
fn without_platform(image: &Path, out: &Path) {
    let mut input = tar::Archive::new(fs::File::open(image).unwrap());
    let mut output = tar::Builder::new(fs::File::create(out).unwrap());
    let mut manifest: Value = Value::Null;
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let mut header = entry.header().clone();
        if path == "manifest.json" {
            manifest = serde_json::from_slice(&bytes).unwrap();
            continue;
        }
        if path.ends_with(".json") {
            let mut config: Value = serde_json::from_slice(&bytes).unwrap();
            config.as_object_mut().unwrap().remove("architecture");
            let bytes = serde_json::to_vec(&config).unwrap();
            header.set_size(bytes.len() as u64);
            output
                .append_data(&mut header, "config.json", bytes.as_slice())
                .unwrap();
            continue;
        }
        output
            .append_data(&mut header, &path, bytes.as_slice())
            .unwrap();
    }
    manifest[0]["Config"] = json!("config.json");
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    output
        .append_data(&mut header, "manifest.json", bytes.as_slice())
        .unwrap();
    output.finish().unwrap();
}

#[test]
fn one_image_per_platform_and_a_platform_for_every_image() {
    let mut store = TestStore::new();
    store.sample();
    let dir = store.dir.path().to_path_buf();
    let (a, b) = (dir.join("a.tar"), dir.join("b.tar"));
    store.build(&a, &["--architecture", "amd64"]);
    store.build(&b, &["--architecture", "x86_64-linux", "--env", "X=1"]);
    let out = dir.join("index");
    let stderr = layered_gen_fails(&[
        "index",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        stderr,
        format!(
            "layered-gen: error: IMAGE: {} and {} are both linux/amd64; a multi-platform image \
             holds one image per platform\n",
            a.display(),
            b.display()
        )
    );
    let bare = dir.join("bare.tar");
    without_platform(&a, &bare);
    let stderr = layered_gen_fails(&["index", bare.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(
        stderr,
        format!(
            "layered-gen: error: IMAGE: {}: its config names no platform (architecture and os), \
             which a multi-platform image needs for every image\n",
            bare.display()
        )
    );
    assert!(!out.exists());

    // A compressed oci-archive, read back per platform; a directory cannot be compressed.
    let arm = dir.join("arm.tar");
    store.build(&arm, &["--architecture", "arm64"]);
    let packed = dir.join("multi.tar");
    let args = |out: &Path| {
        vec![
            "index".to_string(),
            a.display().to_string(),
            arm.display().to_string(),
            "--archive-compression".to_string(),
            "gzip".to_string(),
            "-o".to_string(),
            out.display().to_string(),
        ]
    };
    let run_with = |out: &Path| Command::new(bin()).args(args(out)).output().unwrap();
    assert!(run_with(&packed).status.success());
    for architecture in ["amd64", "arm64"] {
        let plan: Value = layered_gen_json(&[
            "plan",
            "--closure",
            store.write_closure().to_str().unwrap(),
            "--from-image",
            packed.to_str().unwrap(),
            "--architecture",
            architecture,
        ]);
        assert_eq!(plan["layers"][0]["kind"], "base", "{architecture}");
    }
    let refused = run_with(&out);
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "layered-gen: error: --archive-compression: compressing the whole archive needs an \
         archive: an OCI layout written as a .tar\n"
    );
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs skopeo, docker, docker-registry, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn platforms_are_picked_by_skopeo_and_docker_pull() {
    let mut store = TestStore::new();
    let busybox = store.add_busybox();
    let amd64 = platform_image(&store, &busybox, "amd64", false);
    let arm64 = platform_image(&store, &busybox, "arm64", true);
    let dir = store.dir.path().to_path_buf();
    for (out, reference) in [
        (dir.join("multi-oci"), "oci"),
        (dir.join("multi.tar"), "oci-archive"),
    ] {
        layered_gen(&[
            "index",
            amd64.to_str().unwrap(),
            arm64.to_str().unwrap(),
            "--name",
            "layered-gen-test/multi",
            "--tag",
            "v1",
            "-o",
            out.to_str().unwrap(),
        ]);
        let source = format!("{reference}:{}:v1", out.display());
        let raw = skopeo_json(&["inspect", "--raw"], &source);
        assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
        assert_eq!(index_architectures(&raw), ["amd64", "arm64"]);
        for architecture in ["amd64", "arm64"] {
            let config = skopeo_json(
                &["inspect", "--config", "--override-arch", architecture],
                &source,
            );
            assert_eq!(config["architecture"], architecture, "{reference}");
        }
    }

    let registry = Registry::start();
    let remote = format!("127.0.0.1:{}/layered-gen-test/multi:v1", registry.port);
    run(skopeo()
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", dir.join("multi-oci").display()))
        .arg(format!("docker://{remote}")));
    // Pushed by index itself: the same index, byte for byte, as in the layout; Docker pulls
    // each platform from it.
    let pushed = format!("127.0.0.1:{}/layered-gen-test/pushed:v1", registry.port);
    layered_gen(&[
        "index",
        amd64.to_str().unwrap(),
        arm64.to_str().unwrap(),
        "--quiet",
        "-o",
        &format!("docker://{pushed}"),
    ]);
    let raw = run(skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{pushed}")))
    .stdout;
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("multi-oci/index.json")).unwrap()).unwrap();
    let digest = layout["manifests"][0]["digest"].as_str().unwrap();
    let blob = dir
        .join("multi-oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(
        raw == std::fs::read(blob).unwrap(),
        "the pushed index is the layout's"
    );
    let docker = || Command::new(require("docker"));
    for remote in [&remote, &pushed] {
        for architecture in ["arm64", "amd64"] {
            let _ = docker().args(["rmi", "-f", remote]).output();
            run(docker().args([
                "pull",
                "-q",
                "--platform",
                &format!("linux/{architecture}"),
                remote,
            ]));
            let inspect =
                run(docker().args(["image", "inspect", "--format", "{{.Architecture}}", remote]));
            assert_eq!(
                String::from_utf8_lossy(&inspect.stdout).trim(),
                architecture
            );
        }
        let output = docker_run(&[remote, "/bin/sh", "-c", "echo amd64 runs"]);
        assert_eq!(String::from_utf8_lossy(&output.stdout), "amd64 runs\n");
        let _ = docker().args(["rmi", "-f", remote]).output();
    }
}

#[test]
fn index_is_documented_with_an_example() {
    let help = String::from_utf8(layered_gen(&["index", "--help"]).stdout).unwrap();
    assert!(help.contains("Example: layered-gen index "), "{help}");
}
