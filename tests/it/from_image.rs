//! Base images (`--from-image`) in every format, verified and kept byte for byte.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

fn skopeo_json(args: &[&str], reference: &str) -> Value {
    let output = run(Command::new(require("skopeo"))
        .arg("inspect")
        .args(args)
        .arg(reference));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn layers_of(reference: &str) -> Vec<String> {
    skopeo_json(&[], reference)["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// A base: busybox at /, a config with Env and Cmd.
struct Base {
    store: TestStore,
    busybox: String,
    image: PathBuf,
}

fn build_base(name: &str, extra: &[&str]) -> Base {
    let mut store = TestStore::new();
    let busybox = store.add_busybox();
    let closure = store.write_closure();
    let config = store.dir.path().join("config.json");
    fs::write(
        &config,
        json!({"Env": ["FROM=base", "A=1"], "Cmd": ["/bin/sh", "-c", "echo A=$A FROM=$FROM"]})
            .to_string(),
    )
    .unwrap();
    let image = store.dir.path().join("base.tar");
    let mut args = vec![
        "--closure".to_string(),
        closure.display().to_string(),
        "--store-root".to_string(),
        store.store_root_arg(),
        "--contents".to_string(),
        busybox.clone(),
        "--config".to_string(),
        config.display().to_string(),
        "--name".to_string(),
        name.to_string(),
        "--tag".to_string(),
        "base".to_string(),
        "-o".to_string(),
        image.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    layered_gen(&args);
    Base {
        store,
        busybox,
        image,
    }
}

/// The top image's store: the sample paths.
fn top_store() -> (TestStore, PathBuf) {
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure();
    (store, closure)
}

fn build_top(
    store: &TestStore,
    closure: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "--closure".to_string(),
        closure.display().to_string(),
        "--store-root".to_string(),
        store.store_root_arg(),
        "-o".to_string(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Command::new(bin()).args(&args).output().unwrap()
}

fn succeeded(output: std::process::Output) -> std::process::Output {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stderr_of(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn our_own_image_as_base_keeps_its_layers_and_merges_the_config() {
    let docker = require("docker");
    let base = build_base("layered-gen-test/base", &[]);
    let (store, closure) = top_store();
    let top = store.dir.path().join("top.tar");
    succeeded(build_top(
        &store,
        &closure,
        &top,
        &[
            "--from-image",
            base.image.to_str().unwrap(),
            "--env",
            "A=2",
            "--name",
            "layered-gen-test/top",
            "--tag",
            "top",
        ],
    ));
    let base_layers = layers_of(&format!("docker-archive:{}", base.image.display()));
    let top_layers = layers_of(&format!("docker-archive:{}", top.display()));
    assert_eq!(top_layers[..base_layers.len()], base_layers[..]);
    assert!(top_layers.len() > base_layers.len());

    let config = skopeo_json(&["--config"], &format!("docker-archive:{}", top.display()));
    assert_eq!(config["config"]["Env"], json!(["FROM=base", "A=2"]));
    assert_eq!(
        config["config"]["Cmd"],
        json!(["/bin/sh", "-c", "echo A=$A FROM=$FROM"])
    );
    assert_eq!(
        config["history"].as_array().unwrap().len(),
        top_layers.len(),
        "the base's history is kept and ours appended"
    );

    run(Command::new(&docker).arg("load").arg("-i").arg(&top));
    let reference = "layered-gen-test/top:top";
    let ran = docker_run(&[reference]);
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "A=2 FROM=base\n");
    let ran = run(Command::new(&docker)
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            reference,
            "/bin/sh",
            "-c",
        ])
        .arg(format!(
            "cat {}/share/deep/er/still/file.txt",
            store.paths[0].0
        )));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "deep\n");
    run(Command::new(&docker).args(["rmi", reference]));
    let _ = &base.busybox;
}

/// Rewrites a tar archive, keeping the entries `keep` accepts.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn docker_save_output_and_the_legacy_format_work_as_bases() {
    let docker = require("docker");
    let base = build_base("layered-gen-test/saved", &[]);
    run(Command::new(&docker).arg("load").arg("-i").arg(&base.image));
    let saved = base.store.dir.path().join("saved.tar");
    run(Command::new(&docker)
        .args(["save", "-o"])
        .arg(&saved)
        .arg("layered-gen-test/saved:base"));
    run(Command::new(&docker).args(["rmi", "layered-gen-test/saved:base"]));
    let legacy = base.store.dir.path().join("legacy.tar");
    filter_tar(&saved, &legacy, |name| name != "manifest.json");

    let (store, closure) = top_store();
    let base_layers = layers_of(&format!("docker-archive:{}", base.image.display()));
    for (what, input) in [("docker save", &saved), ("legacy", &legacy)] {
        let top = store
            .dir
            .path()
            .join(format!("top-{}.tar", what.replace(' ', "-")));
        succeeded(build_top(
            &store,
            &closure,
            &top,
            &["--from-image", input.to_str().unwrap(), "--tag", "t"],
        ));
        let top_layers = layers_of(&format!("docker-archive:{}", top.display()));
        assert_eq!(top_layers[..base_layers.len()], base_layers[..], "{what}");
        let config = skopeo_json(&["--config"], &format!("docker-archive:{}", top.display()));
        assert_eq!(
            config["config"]["Env"],
            json!(["FROM=base", "A=1"]),
            "{what}"
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn oci_bases_keep_their_compression_and_zstd_needs_decompressing_for_docker() {
    let docker = require("docker");
    let base = build_base("layered-gen-test/oci-base", &[]);
    let (store, closure) = top_store();
    for compression in ["gzip", "zstd"] {
        let layout = base.store.dir.path().join(format!("base-{compression}"));
        run(Command::new(bin())
            .args(["--closure"])
            .arg(base.store.dir.path().join("closure"))
            .arg("--store-root")
            .arg(base.store.root())
            .args([
                "--contents",
                &base.busybox,
                "--format",
                "oci",
                "--compression",
                compression,
            ])
            .args(["--tag", "base", "-o"])
            .arg(&layout));
        let base_layers = layers_of(&format!("oci:{}:base", layout.display()));

        // OCI in, OCI out: the same blobs.
        let top = store.dir.path().join(format!("top-{compression}"));
        succeeded(build_top(
            &store,
            &closure,
            &top,
            &[
                "--from-image",
                layout.to_str().unwrap(),
                "--format",
                "oci",
                "--tag",
                "t",
            ],
        ));
        let top_layers = layers_of(&format!("oci:{}:t", top.display()));
        assert_eq!(
            top_layers[..base_layers.len()],
            base_layers[..],
            "{compression}"
        );

        // OCI in, docker-archive out.
        let out = store.dir.path().join(format!("top-{compression}.tar"));
        let result = build_top(
            &store,
            &closure,
            &out,
            &["--from-image", layout.to_str().unwrap()],
        );
        if compression == "zstd" {
            let stderr = stderr_of(&result);
            assert!(
                stderr.contains("has zstd-compressed layers")
                    && stderr.starts_with("layered-gen: error: --base-layers: ")
                    && stderr
                        .contains("write the OCI format, or have the base layers decompressed"),
                "{stderr}"
            );
            assert!(!out.exists());
            succeeded(build_top(
                &store,
                &closure,
                &out,
                &[
                    "--from-image",
                    layout.to_str().unwrap(),
                    "--base-layers",
                    "decompress",
                    "--name",
                    "layered-gen-test/unzstd",
                    "--tag",
                    "t",
                ],
            ));
            run(Command::new(&docker).arg("load").arg("-i").arg(&out));
            let ran = docker_run(&[
                "layered-gen-test/unzstd:t",
                "/bin/sh",
                "-c",
                "echo from zstd base",
            ]);
            assert_eq!(String::from_utf8_lossy(&ran.stdout), "from zstd base\n");
            run(Command::new(&docker).args(["rmi", "layered-gen-test/unzstd:t"]));
        } else {
            // skopeo names docker-archive layers by their uncompressed digests: compare those.
            succeeded(result);
            let diff_ids = |reference: String| {
                skopeo_json(&["--config"], &reference)["rootfs"]["diff_ids"]
                    .as_array()
                    .unwrap()
                    .clone()
            };
            let base_ids = diff_ids(format!("oci:{}:base", layout.display()));
            let top_ids = diff_ids(format!("docker-archive:{}", out.display()));
            assert_eq!(top_ids[..base_ids.len()], base_ids[..]);
            // ... and the gzip blob went in unchanged.
            let mut archive = tar::Archive::new(fs::File::open(&out).unwrap());
            let first = archive.entries().unwrap().next().unwrap().unwrap();
            assert_eq!(first.path().unwrap(), Path::new("layers/0.tar.gz"));
        }
    }
}

/// An oci-archive and a docker-archive with gzip layers as bases.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn archived_and_compressed_bases() {
    let base = build_base("layered-gen-test/archived", &[]);
    let (store, closure) = top_store();
    let closure_of_base = base.store.dir.path().join("closure");
    for (name, extra) in [
        ("base-oci.tar", vec!["--format", "oci", "--tag", "base"]),
        ("base-gzip.tar", vec!["--compression", "gzip"]),
        // Compressed as a whole, as buildLayeredImage's default compressor does.
        ("base.tar.gz", vec!["--archive-compression", "gzip"]),
        ("base.tar.zst", vec!["--archive-compression", "zstd"]),
    ] {
        let input = base.store.dir.path().join(name);
        run(Command::new(bin())
            .arg("--closure")
            .arg(&closure_of_base)
            .arg("--store-root")
            .arg(base.store.root())
            .args(["--contents", &base.busybox])
            .args(&extra)
            .arg("-o")
            .arg(&input));
        let out = store.dir.path().join(format!("top-{name}"));
        succeeded(build_top(
            &store,
            &closure,
            &out,
            &["--from-image", input.to_str().unwrap()],
        ));
        let config = skopeo_json(&["--config"], &format!("docker-archive:{}", out.display()));
        let base_config = skopeo_json(
            &["--config"],
            &format!("docker-archive:{}", base.image.display()),
        );
        let ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        let base_ids = base_config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(ids[..base_ids.len()], base_ids[..], "{name}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn several_images_and_platforms_are_chosen_explicitly() {
    let docker = require("docker");
    let one = build_base("layered-gen-test/one", &[]);
    let two = build_base("layered-gen-test/two", &["--env", "TWO=2"]);
    run(Command::new(&docker).arg("load").arg("-i").arg(&one.image));
    run(Command::new(&docker).arg("load").arg("-i").arg(&two.image));
    let both = one.store.dir.path().join("both.tar");
    run(Command::new(&docker)
        .args(["save", "-o"])
        .arg(&both)
        .args(["layered-gen-test/one:base", "layered-gen-test/two:base"]));
    run(Command::new(&docker).args([
        "rmi",
        "layered-gen-test/one:base",
        "layered-gen-test/two:base",
    ]));

    let (store, closure) = top_store();
    let out = store.dir.path().join("out.tar");
    let stderr = stderr_of(&build_top(
        &store,
        &closure,
        &out,
        &["--from-image", both.to_str().unwrap()],
    ));
    assert!(
        stderr.contains("it holds several images (")
            && stderr.contains("layered-gen-test/one:base")
            && stderr.contains("layered-gen-test/two:base")
            && stderr.starts_with("layered-gen: error: --from-image-tag: ")
            && stderr.contains("choose one by its NAME:TAG"),
        "{stderr}"
    );
    succeeded(build_top(
        &store,
        &closure,
        &out,
        &[
            "--from-image",
            both.to_str().unwrap(),
            "--from-image-tag",
            "layered-gen-test/two:base",
        ],
    ));
    let config = skopeo_json(&["--config"], &format!("docker-archive:{}", out.display()));
    assert_eq!(
        config["config"]["Env"],
        json!(["FROM=base", "A=1", "TWO=2"])
    );

    // A multi-platform OCI index made of two layouts.
    let index_dir = store.dir.path().join("multi");
    for (arch, layout_name) in [("amd64", "l-amd64"), ("arm64", "l-arm64")] {
        let layout = store.dir.path().join(layout_name);
        run(Command::new(bin())
            .arg("--closure")
            .arg(one.store.dir.path().join("closure"))
            .arg("--store-root")
            .arg(one.store.root())
            .args([
                "--format",
                "oci",
                "--architecture",
                arch,
                "--tag",
                "x",
                "-o",
            ])
            .arg(&layout));
        run(Command::new("cp").arg("-rT").arg(&layout).arg(&index_dir));
    }
    let manifests: Vec<Value> = ["l-amd64", "l-arm64"]
        .iter()
        .zip(["amd64", "arm64"])
        .map(|(dir, arch)| {
            let index: Value = serde_json::from_slice(
                &fs::read(store.dir.path().join(dir).join("index.json")).unwrap(),
            )
            .unwrap();
            let mut d = index["manifests"][0].clone();
            d.as_object_mut().unwrap().remove("annotations");
            d["platform"] = json!({"architecture": arch, "os": "linux"});
            d
        })
        .collect();
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let nested_digest = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&nested));
    fs::write(index_dir.join("blobs/sha256").join(&nested_digest), &nested).unwrap();
    fs::write(
        index_dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{nested_digest}"),
            "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }]})
        .to_string(),
    )
    .unwrap();
    for (arch, expected) in [("amd64", "amd64"), ("arm64", "arm64")] {
        let out = store.dir.path().join(format!("multi-{arch}"));
        succeeded(build_top(
            &store,
            &closure,
            &out,
            &[
                "--from-image",
                index_dir.to_str().unwrap(),
                "--architecture",
                arch,
                "--format",
                "oci",
                "--tag",
                "t",
            ],
        ));
        let config = skopeo_json(&["--config"], &format!("oci:{}:t", out.display()));
        assert_eq!(config["architecture"], expected);
    }
    let stderr = stderr_of(&build_top(
        &store,
        &closure,
        &out,
        &[
            "--from-image",
            index_dir.to_str().unwrap(),
            "--architecture",
            "s390x",
        ],
    ));
    assert!(
        stderr.starts_with("layered-gen: error: --architecture: ")
            && stderr.contains("no image for linux/s390x; it has: linux/amd64, linux/arm64"),
        "{stderr}"
    );
}

/// Finds `needle` in a file and flips one byte of it.
fn corrupt(path: &Path, needle: &[u8]) {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found in {}", path.display()));
    bytes[at] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn a_damaged_base_is_refused_naming_the_layer() {
    let base = build_base("layered-gen-test/damaged", &["--architecture", "amd64"]);
    let (store, closure) = top_store();
    let out = store.dir.path().join("out.tar");
    // The base's busybox binary sits in its first layer: change one byte of it.
    corrupt(&base.image, b"BusyBox v");
    let stderr = stderr_of(&build_top(
        &store,
        &closure,
        &out,
        &["--from-image", base.image.to_str().unwrap()],
    ));
    assert!(
        stderr.contains("layer layers/0.tar: its uncompressed digest is sha256:")
            && stderr.contains("but the config's diff_id is sha256:")
            && stderr.contains("the base image is damaged or was changed"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn base_layers_count_toward_the_budget_and_the_identity() {
    let base = build_base("layered-gen-test/budget", &[]);
    let (store, closure) = top_store();
    let out = store.dir.path().join("out.tar");
    let base_count = layers_of(&format!("docker-archive:{}", base.image.display())).len();
    let max = base_count.to_string();
    let stderr = stderr_of(&build_top(
        &store,
        &closure,
        &out,
        &[
            "--from-image",
            base.image.to_str().unwrap(),
            "--max-layers",
            &max,
        ],
    ));
    assert_eq!(
        stderr,
        format!(
            "layered-gen: error: --max-layers: a limit of {base_count} layers leaves no layer for \
             the store paths: the base image has {base_count} layers; allow {} or more\n",
            base_count + 1
        )
    );
    let plan = layered_gen(&[
        "plan",
        "--closure",
        closure.to_str().unwrap(),
        "--from-image",
        base.image.to_str().unwrap(),
        "--max-layers",
        &(base_count + 2).to_string(),
    ]);
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let layers = plan["layers"].as_array().unwrap();
    assert_eq!(layers.len(), base_count + 2);
    assert!(
        layers[..base_count]
            .iter()
            .all(|l| l["kind"] == "base" && l["diffId"].is_string())
    );
    assert_eq!(layers[base_count]["kind"], "store");

    // One byte of difference in the base gives the image another tag.
    let tag_with = |base_image: &Path| {
        let out = store.dir.path().join("tagged.tar");
        let output = succeeded(build_top(
            &store,
            &closure,
            &out,
            &["--from-image", base_image.to_str().unwrap()],
        ));
        String::from_utf8(output.stderr).unwrap()
    };
    let other = build_base("layered-gen-test/budget", &["--env", "X=1"]);
    assert_ne!(tag_with(&base.image), tag_with(&other.image));
}

/// `docker build` of `FROM base` with each child config, and our build on the same base, must
/// give the same `Cmd` and `Entrypoint` and run the same way.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker: cargo test --features tool-tests (.ci/run)"
)]
fn a_child_config_over_a_base_follows_docker_build() {
    let docker = require("docker");
    let base = build_base("layered-gen-test/ep-base", &[]);
    run(Command::new(&docker).arg("load").arg("-i").arg(&base.image));
    let (store, closure) = top_store();
    // The Dockerfile line and the config layered-gen is given for it.
    let cases = [
        (
            "entrypoint",
            r#"ENTRYPOINT ["/bin/sh", "-c", "echo child \"$@\"", "sh"]"#,
            json!({"Entrypoint": ["/bin/sh", "-c", "echo child \"$@\"", "sh"]}),
        ),
        (
            "both",
            "ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo child \\\"$@\\\"\", \"sh\"]\nCMD [\"with\", \"args\"]",
            json!({"Entrypoint": ["/bin/sh", "-c", "echo child \"$@\"", "sh"], "Cmd": ["with", "args"]}),
        ),
        (
            "cmd",
            r#"CMD ["/bin/sh", "-c", "echo cmd only"]"#,
            json!({"Cmd": ["/bin/sh", "-c", "echo cmd only"]}),
        ),
        ("user", "USER 1000", json!({"User": "1000"})),
    ];
    let inspect = |reference: &str| {
        let output = run(Command::new(&docker).args([
            "inspect",
            "--format",
            "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.User}}",
            reference,
        ]));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    for (name, dockerfile, config) in cases {
        let theirs = format!("layered-gen-test/ep-docker-build:{name}");
        let mut build = Command::new(&docker);
        build
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--network", "none", "-t", &theirs, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = build.spawn().unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("FROM layered-gen-test/ep-base:base\n{dockerfile}\n").as_bytes())
            .unwrap();
        let built = child.wait_with_output().unwrap();
        assert!(
            built.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&built.stderr)
        );

        let config_file = store.dir.path().join(format!("{name}.json"));
        fs::write(&config_file, config.to_string()).unwrap();
        let top = store.dir.path().join(format!("{name}.tar"));
        succeeded(build_top(
            &store,
            &closure,
            &top,
            &[
                "--from-image",
                base.image.to_str().unwrap(),
                "--config",
                config_file.to_str().unwrap(),
                "--name",
                "layered-gen-test/ep-ours",
                "--tag",
                name,
            ],
        ));
        run(Command::new(&docker).arg("load").arg("-i").arg(&top));
        let ours = format!("layered-gen-test/ep-ours:{name}");
        assert_eq!(
            inspect(&ours),
            inspect(&theirs),
            "{name}: the config docker build makes"
        );
        let ran = |reference: &str| {
            String::from_utf8_lossy(&docker_run(&[reference]).stdout).into_owned()
        };
        assert_eq!(ran(&ours), ran(&theirs), "{name}: what the container runs");
        run(Command::new(&docker).args(["rmi", &ours, &theirs]));
    }
    run(Command::new(&docker).args(["rmi", "layered-gen-test/ep-base:base"]));
}
