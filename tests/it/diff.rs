//! `layered-gen diff`: images made different in one way at a time are explained, in words and
//! as JSON; identical images exit 0, different ones 1, trouble 2.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// Runs `layered-gen diff A B [extra]`: exit code, stdout.
fn diff(a: &Path, b: &Path, extra: &[&str]) -> (i32, String) {
    let output = Command::new(bin())
        .arg("diff")
        .arg(a)
        .arg(b)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8_lossy(&output.stderr),
    )
}

fn diff_json(a: &Path, b: &Path) -> Value {
    let (code, out) = diff(a, b, &["--json"]);
    assert_eq!(code, 1, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// The (path, change) pairs of every layer's entries.
fn entry_changes(report: &Value) -> Vec<(String, String)> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["entries"].as_array().unwrap().clone())
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A store of one path, built into an image after `change` ran on it.
fn image_after(dir: &Path, name: &str, extra: &[&str], change: impl FnOnce(&Path)) -> PathBuf {
    let mut store = TestStore::new();
    let path = store.add("pkg-1.0", &[], |dir| {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/tool"), "tool\n").unwrap();
        fs::write(dir.join("data"), "data\n").unwrap();
        symlink("tool", dir.join("bin/link")).unwrap();
        fs::create_dir_all(dir.join("dir")).unwrap();
    });
    change(&store.source(&path));
    let out = dir.join(name);
    let mut args = vec!["--name", "diff/test", "--tag", "t"];
    args.extend_from_slice(extra);
    store.build(&out, &args);
    out
}

#[test]
fn identical_images_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let a = image_after(dir.path(), "a.tar", &[], |_| {});
    let b = image_after(dir.path(), "b.tar", &[], |_| {});
    assert_eq!(
        diff(&a, &b, &[]),
        (0, "the images are identical\n".to_string())
    );
    let (code, out) = diff(&a, &b, &["--json"]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["identical"], true);
}

/// A change made to a store path before its image is built, and the entry change `diff`
/// must then report: (name, change, path suffix, kind).
type Case = (
    &'static str,
    Box<dyn FnOnce(&Path)>,
    &'static str,
    &'static str,
);

#[test]
fn every_kind_of_entry_change_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = image_after(dir.path(), "base.tar", &[], |_| {});
    let cases: Vec<Case> = vec![
        (
            "content",
            Box::new(|p: &Path| fs::write(p.join("data"), "other\n").unwrap()),
            "data",
            "content",
        ),
        (
            "mode",
            Box::new(|p: &Path| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(p.join("data"), fs::Permissions::from_mode(0o755)).unwrap()
            }),
            "data",
            "mode",
        ),
        (
            "added",
            Box::new(|p: &Path| fs::write(p.join("new"), "new\n").unwrap()),
            "new",
            "added",
        ),
        (
            "removed",
            Box::new(|p: &Path| fs::remove_file(p.join("data")).unwrap()),
            "data",
            "removed",
        ),
        (
            "link",
            Box::new(|p: &Path| {
                fs::remove_file(p.join("bin/link")).unwrap();
                symlink("elsewhere", p.join("bin/link")).unwrap();
            }),
            "bin/link",
            "link-target",
        ),
        (
            "type",
            Box::new(|p: &Path| {
                fs::remove_dir(p.join("dir")).unwrap();
                fs::write(p.join("dir"), "").unwrap();
            }),
            "dir",
            "type",
        ),
    ];
    for (name, change, suffix, kind) in cases {
        let changed = image_after(dir.path(), &format!("{name}.tar"), &[], change);
        let report = diff_json(&base, &changed);
        let found = entry_changes(&report);
        assert!(
            found.iter().any(|(p, k)| p.ends_with(suffix) && k == kind),
            "{name}: expected {kind} of {suffix} in {found:?}"
        );
        // Words too, exit 1.
        let (code, text) = diff(&base, &changed, &[]);
        assert_eq!(code, 1);
        assert!(text.contains("entries differ"), "{name}: {text}");
    }
}

#[test]
fn owners_times_and_config_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let base = image_after(dir.path(), "base.tar", &[], |_| {});
    let owned = image_after(
        dir.path(),
        "owned.tar",
        &["--uid", "1000", "--mtime", "7"],
        |_| {},
    );
    let report = diff_json(&base, &owned);
    let found = entry_changes(&report);
    assert!(
        found
            .iter()
            .any(|(p, k)| p.ends_with("/data") && k == "owner"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(p, k)| p.ends_with("/data") && k == "mtime"),
        "{found:?}"
    );
    let data_owner = report["layers"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["change"] == "owner" && e["path"].as_str().unwrap().ends_with("/data"))
        .unwrap()
        .clone();
    assert_eq!(data_owner["a"], "0:0");
    assert_eq!(data_owner["b"], "1000:0");

    let configured = image_after(
        dir.path(),
        "env.tar",
        &["--env", "A=1", "--created", "2024-05-01T12:00:00Z"],
        |_| {},
    );
    let report = diff_json(&base, &configured);
    let config: Vec<&str> = report["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(config.contains(&"$.created"), "{config:?}");
    assert!(config.contains(&"$.config.Env"), "{config:?}");
    assert_eq!(report["layers"], json!([]), "same layers");
    assert!(
        report["manifest"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "$.Config"),
        "{report}"
    );
}

#[test]
fn header_encoding_order_moves_and_storage_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<Item> = vec![
        ("etc/", None),
        ("etc/a", Some("a\n")),
        ("etc/b", Some("b\n")),
    ];
    let other: Vec<Item> = vec![("opt/", None), ("opt/x", Some("x\n"))];
    let ustar = handmade_layout(&dir.path().join("ustar"), std::slice::from_ref(&files));
    let gnu = handmade_layout_in(
        &dir.path().join("gnu"),
        std::slice::from_ref(&files),
        TarFormat::Gnu,
    );
    let report = diff_json(&ustar, &gnu);
    assert_eq!(
        entry_changes(&report),
        [
            ("etc".to_string(), "header-encoding".to_string()),
            ("etc/a".to_string(), "header-encoding".to_string()),
            ("etc/b".to_string(), "header-encoding".to_string()),
        ]
    );

    let reordered = vec![
        ("etc/", None),
        ("etc/b", Some("b\n")),
        ("etc/a", Some("a\n")),
    ];
    let shuffled = handmade_layout(&dir.path().join("shuffled"), &[reordered]);
    let report = diff_json(&ustar, &shuffled);
    assert_eq!(entry_changes(&report), Vec::<(String, String)>::new());
    assert_eq!(
        report["layers"][0]["order"],
        json!({"index": 1, "a": "etc/a", "b": "etc/b"})
    );

    let two = handmade_layout(&dir.path().join("two"), &[files.clone(), other.clone()]);
    let swapped = handmade_layout(&dir.path().join("swapped"), &[other, files]);
    let report = diff_json(&two, &swapped);
    let statuses: Vec<(&Value, &Value, &str)> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (&l["a"], &l["b"], l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            (&json!(0), &json!(1), "moved"),
            (&json!(1), &json!(0), "moved")
        ]
    );

    // The same image, as a docker-archive (plain layers) and an OCI layout (gzip layers).
    let mut store = TestStore::new();
    store.sample();
    let (archive, layout) = (dir.path().join("a.tar"), dir.path().join("oci"));
    store.build(&archive, &["--tag", "t"]);
    store.build(&layout, &["--tag", "t", "--format", "oci"]);
    let report = diff_json(&archive, &layout);
    assert!(
        report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "stored-differently"),
        "{report}"
    );
    assert_eq!(report["config"], json!([]));
}

#[test]
fn trouble_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let a = image_after(dir.path(), "a.tar", &[], |_| {});
    let (code, out) = diff(&a, &dir.path().join("missing.tar"), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("layered-gen: error: A or B: image"), "{out}");
}

/// A legacy image (no manifest.json) has no diff_ids to match layers by: equal entries mean
/// equal layers. Found by the base_image fuzz target, which checks that every image it can
/// read is identical to itself (the layers were reported as different with no entry named).
#[test]
fn a_legacy_image_without_diff_ids_is_identical_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let both = image_after(dir.path(), "both.tar", &["--docker-legacy"], |_| {});
    let legacy = dir.path().join("legacy.tar");
    filter_tar(&both, &legacy, |name| name != "manifest.json");
    assert_eq!(
        diff(&legacy, &legacy, &[]),
        (0, "the images are identical\n".to_string())
    );
}

/// A legacy layer's `json` names the layer it describes; a chain whose pieces name other
/// layers was put together from other images and is refused (found by fuzzing, which made
/// one by changing a digit of a parent id).
#[test]
fn a_legacy_layer_describing_another_layer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let both = image_after(dir.path(), "both.tar", &["--docker-legacy"], |_| {});
    let repositories: Value =
        serde_json::from_slice(&tar_member(&both, "repositories").unwrap()).unwrap();
    let top = repositories["diff/test"]["t"].as_str().unwrap().to_string();
    let json = format!("{top}/json");
    let mut layer: Value = serde_json::from_slice(&tar_member(&both, &json).unwrap()).unwrap();
    layer["id"] = Value::from("f".repeat(64));
    let forged = dir.path().join("forged.tar");
    let mut input = tar::Archive::new(fs::File::open(&both).unwrap());
    let mut output = tar::Builder::new(fs::File::create(&forged).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut header = entry.header().clone();
        if name == "manifest.json" {
            continue;
        }
        if name == json {
            let bytes = serde_json::to_vec(&layer).unwrap();
            header.set_size(bytes.len() as u64);
            output
                .append_data(&mut header, &name, bytes.as_slice())
                .unwrap();
        } else {
            output.append_data(&mut header, &name, &mut entry).unwrap();
        }
    }
    output.finish().unwrap();
    let (code, out) = diff(&forged, &forged, &[]);
    let expected = format!("{json}: it describes layer {}", "f".repeat(64));
    assert!(code == 2 && out.contains(&expected), "{out}");
}
