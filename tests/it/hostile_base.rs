//! Crafted base images: every blob read by digest is checked before it is parsed or copied,
//! digests are validated before they become paths, blobs are regular files inside the layout,
//! and index walks end. Each case failed (or hung) before these checks.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Runs layered-gen, killing it after 30 s: a hang must fail the test, not stall it.
fn layered_gen_within_deadline(args: &[&str]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("layered-gen {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `plan` with the layout as base: the error it gives.
fn refused(layout: &Path, closure: &Path) -> String {
    let output = layered_gen_within_deadline(&[
        "plan",
        "--closure",
        closure.to_str().unwrap(),
        "--from-image",
        &format!("{}", layout.display()),
    ]);
    assert!(!output.status.success(), "{layout:?} was accepted");
    String::from_utf8(output.stderr).unwrap()
}

fn closure(dir: &Path) -> PathBuf {
    let path = dir.join("closure");
    fs::write(&path, format!("/nix/store/{}-x\n\n0\n", store_hash("x"))).unwrap();
    path
}

fn index(layout: &Path) -> Value {
    serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap()
}

fn manifest_path(layout: &Path) -> PathBuf {
    let digest = index(layout)["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    layout.join("blobs/sha256").join(digest)
}

fn config_path(layout: &Path) -> PathBuf {
    let manifest: Value =
        serde_json::from_slice(&fs::read(manifest_path(layout)).unwrap()).unwrap();
    let digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    layout.join("blobs/sha256").join(digest)
}

fn layout(dir: &Path, name: &str) -> PathBuf {
    handmade_layout(
        &dir.join(name),
        &[vec![("etc/", None), ("etc/motd", Some("hi\n"))]],
    )
}

/// Writes `bytes` as a blob; its descriptor.
fn put(layout: &Path, bytes: &[u8], media_type: &str) -> Value {
    let hex = format!("{:x}", Sha256::digest(bytes));
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

#[test]
fn a_config_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    let layout = layout(dir.path(), "tampered");
    let config = config_path(&layout);
    let mut value: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    value["config"]["Env"] = json!(["INJECTED=1"]);
    let bytes = serde_json::to_vec(&value).unwrap();
    fs::write(&config, &bytes).unwrap();
    // The attacker fixes the size in the manifest and the manifest's own digest in the index:
    // only the config's digest still tells.
    with_manifest(&layout, |m| m["config"]["size"] = json!(bytes.len()));
    let stderr = refused(&layout, &closure);
    assert!(
        stderr.contains("its digest is sha256:") && stderr.contains("but its descriptor says"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the base image is damaged or was changed"),
        "{stderr}"
    );
}

#[test]
fn digests_that_are_not_digests_never_become_paths() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    for (name, digest, why) in [
        (
            "dots",
            "sha256:../../../../../../etc/passwd",
            "not 64 lower-case hex digits",
        ),
        (
            "algorithm",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "neither sha256 nor sha512",
        ),
        (
            "upper",
            &format!("sha256:{}", "A".repeat(64)),
            "not 64 lower-case hex digits",
        ),
    ] {
        let layout = layout(dir.path(), name);
        with_manifest(&layout, |m| m["config"]["digest"] = json!(digest));
        let stderr = refused(&layout, &closure);
        assert!(
            stderr.contains("is not a digest") && stderr.contains(why),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn blobs_that_are_fifos_or_symlinks_out_are_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());

    let fifo_layout = layout(dir.path(), "fifo");
    let config = config_path(&fifo_layout);
    fs::remove_file(&config).unwrap();
    run(Command::new("mkfifo").arg(&config));
    let stderr = refused(&fifo_layout, &closure);
    assert!(stderr.contains("it is not a regular file"), "{stderr}");

    let link_layout = layout(dir.path(), "link");
    let config = config_path(&link_layout);
    let outside = dir.path().join("outside.json");
    fs::copy(&config, &outside).unwrap();
    fs::remove_file(&config).unwrap();
    symlink(&outside, &config).unwrap();
    let stderr = refused(&link_layout, &closure);
    assert!(stderr.contains("it is a symlink"), "{stderr}");
}

#[test]
fn index_walks_end() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    let index_type = "application/vnd.oci.image.index.v1+json";
    let amd64 = json!({"architecture": "amd64", "os": "linux"});

    // An index blob that names itself: its name is not its digest, so it is refused at once
    // (it looped for good when digests were not checked).
    let looping = layout(dir.path(), "loop");
    let fake = "sha256:".to_string() + &"1".repeat(64);
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": index_type, "digest": fake, "size": 0, "platform": amd64}],
    }))
    .unwrap();
    fs::write(looping.join("blobs/sha256").join(&fake[7..]), &body).unwrap();
    let mut top = index(&looping);
    // The size matches, so only the digest can tell.
    top["manifests"][0] = json!({"mediaType": index_type, "digest": fake, "size": body.len()});
    fs::write(
        looping.join("index.json"),
        serde_json::to_vec(&top).unwrap(),
    )
    .unwrap();
    let stderr = refused(&looping, &closure);
    assert!(stderr.contains("but its descriptor says"), "{stderr}");

    // Genuine indexes nested five deep: past the limit.
    let deep = layout(dir.path(), "deep");
    let mut descriptor = index(&deep)["manifests"][0].clone();
    descriptor["platform"] = amd64.clone();
    for _ in 0..5 {
        let nested =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [descriptor]})).unwrap();
        descriptor = put(&deep, &nested, index_type);
        descriptor["platform"] = amd64.clone();
    }
    let mut top = index(&deep);
    top["manifests"][0] = descriptor;
    fs::write(deep.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let stderr = refused(&deep, &closure);
    assert!(
        stderr.contains("nests more than 4 indexes deep"),
        "{stderr}"
    );

    // Two levels, as multi-platform layouts have them, are fine.
    let shallow = layout(dir.path(), "shallow");
    let mut descriptor = index(&shallow)["manifests"][0].clone();
    descriptor["platform"] = amd64.clone();
    let nested =
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [descriptor]})).unwrap();
    let mut top = index(&shallow);
    top["manifests"][0] = put(&shallow, &nested, index_type);
    fs::write(
        shallow.join("index.json"),
        serde_json::to_vec(&top).unwrap(),
    )
    .unwrap();
    let output = layered_gen_within_deadline(&[
        "plan",
        "--closure",
        closure.to_str().unwrap(),
        "--from-image",
        shallow.to_str().unwrap(),
        "--architecture",
        "amd64",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Rewrites the config of a hand-made layout with `change`, re-hashing the manifest and the
/// index as whoever made the layout would: what is inside must be checked on its own.
fn with_config(layout: &Path, change: impl FnOnce(&mut Value)) {
    let config = config_path(layout);
    let mut value: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    change(&mut value);
    let config = put(
        layout,
        &serde_json::to_vec(&value).unwrap(),
        "application/vnd.oci.image.config.v1+json",
    );
    with_manifest(layout, |m| m["config"] = config);
}

/// Rewrites the manifest of a hand-made layout with `change`, then points the index at the
/// new manifest (by its true digest), as whoever crafted the layout would.
fn with_manifest(layout: &Path, change: impl FnOnce(&mut Value)) {
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(manifest_path(layout)).unwrap()).unwrap();
    change(&mut manifest);
    let descriptor = put(
        layout,
        &serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    let mut top = index(layout);
    top["manifests"][0]["digest"] = descriptor["digest"].clone();
    top["manifests"][0]["size"] = descriptor["size"].clone();
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

#[test]
fn base_configs_with_values_of_the_wrong_kind_are_refused_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    let out = dir.path().join("out.tar");
    let build = |layout: &Path| {
        let output = layered_gen_within_deadline(&[
            "--closure",
            closure.to_str().unwrap(),
            "--store-root",
            dir.path().to_str().unwrap(),
            "--no-store-paths",
            "--from-image",
            layout.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        String::from_utf8(output.stderr).unwrap()
    };
    for (name, change, expected) in [
        (
            "cmd",
            Box::new(|c: &mut Value| c["config"]["Cmd"] = json!(5)) as Box<dyn FnOnce(&mut Value)>,
            "layered-gen: error: --from-image: the base image's config: $.config.Cmd: expected a \
             list of strings",
        ),
        (
            "user",
            Box::new(|c: &mut Value| c["config"]["User"] = json!(["x"])),
            "layered-gen: error: --from-image: the base image's config: $.config.User: expected \
             a string, found a list",
        ),
        (
            "architecture",
            Box::new(|c: &mut Value| c["architecture"] = json!("")),
            "$.architecture: the base image's config names no architecture",
        ),
    ] {
        let layout = layout(dir.path(), name);
        with_config(&layout, change);
        let stderr = build(&layout);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!out.exists());
    }
}
