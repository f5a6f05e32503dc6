//! `--tar-compat nixpkgs`: store layers byte for byte as nixpkgs' dockerTools writes them,
//! checked against Python's tarfile driven as dockerTools drives it (`oracles/nixpkgs_layer.py`).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// Names and shapes where the two formats part: long and non-ASCII names, names that are not
/// UTF-8, long link targets, modes of every kind, a hard link, an order that differs between
/// bytes and path components.
fn add_awkward_path(store: &mut TestStore) -> String {
    store.add("awkward-1.0", &[], |dir| {
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::write(dir.join("a/b"), "in a\n").unwrap();
        fs::write(dir.join("a-b"), "beside a\n").unwrap();
        fs::write(dir.join(".hidden"), "dot\n").unwrap();
        fs::write(dir.join("café-é"), "utf-8\n").unwrap();
        let raw = std::ffi::OsStr::from_bytes(b"raw-\xff\xfe");
        fs::write(dir.join(raw), "not utf-8\n").unwrap();
        // Names of 100 and 101 bytes from the layer's root, with the leading slash.
        let prefix = format!("{}/", dir.file_name().unwrap().to_str().unwrap());
        let used = "/nix/store/".len() + prefix.len();
        fs::write(dir.join("x".repeat(100 - used)), "100\n").unwrap();
        fs::write(dir.join("y".repeat(101 - used)), "101\n").unwrap();
        symlink("t".repeat(150), dir.join("long-link")).unwrap();
        fs::write(dir.join("rw"), "0644\n").unwrap();
        fs::set_permissions(dir.join("rw"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join("tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("tool"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(dir.join("empty"), "").unwrap();
        fs::hard_link(dir.join("a/b"), dir.join("hard")).unwrap();
        fs::create_dir_all(dir.join("private")).unwrap();
        fs::set_permissions(dir.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    })
}

/// The layer the oracle writes for `paths` read under `root`.
pub fn oracle_layer(dir: &Path, root: &Path, paths: &[String], owner: (u64, &str)) -> Vec<u8> {
    let conf = dir.join("oracle.json");
    fs::write(
        &conf,
        json!({
            "root": root, "paths": paths, "mtime": 1,
            "uid": owner.0, "gid": owner.0, "uname": owner.1, "gname": owner.1,
        })
        .to_string(),
    )
    .unwrap();
    let script = repo_root().join("tests/it/oracles/nixpkgs_layer.py");
    run(Command::new(require("python3")).arg(script).arg(&conf)).stdout
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs python3: cargo test --features tool-tests (.ci/run)"
)]
fn store_layers_are_byte_for_byte_what_python_tarfile_writes_for_dockertools() {
    let mut store = TestStore::new();
    store.sample();
    add_awkward_path(&mut store);
    let closure = store.write_closure();
    let long_name = "n".repeat(40);
    for (uid, uname, max_layers) in [(0, "root", "3"), (3_000_000, long_name.as_str(), "100")] {
        let image = store.dir.path().join("image.tar");
        let uid_arg = uid.to_string();
        let built = layered_gen(&[
            "--closure",
            closure.to_str().unwrap(),
            "--store-root",
            &store.store_root_arg(),
            "--tar-compat",
            "nixpkgs",
            "--uid",
            &uid_arg,
            "--gid",
            &uid_arg,
            "--uname",
            uname,
            "--gname",
            uname,
            "--max-layers",
            max_layers,
            "--print-plan",
            "--quiet",
            "-o",
            image.to_str().unwrap(),
        ]);
        let plan: Value = serde_json::from_slice(&built.stderr).unwrap();
        let manifest = archive_manifest(&image);
        let members = manifest[0]["Layers"].as_array().unwrap();
        let store_layers: Vec<&Value> = plan["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "store")
            .collect();
        assert!(store_layers.len() >= 2, "{plan}");
        // The customisation layer is there although nothing goes in it, as in dockerTools.
        assert_eq!(members.len(), store_layers.len() + 1);
        for (index, layer) in store_layers.iter().enumerate() {
            let paths: Vec<String> = serde_json::from_value(layer["paths"].clone()).unwrap();
            let ours = tar_member(&image, members[index].as_str().unwrap()).unwrap();
            let theirs = oracle_layer(store.dir.path(), &store.root(), &paths, (uid, uname));
            if ours != theirs {
                let (a, b) = (
                    store.dir.path().join("ours.tar"),
                    store.dir.path().join("theirs.tar"),
                );
                fs::write(&a, &ours).unwrap();
                fs::write(&b, &theirs).unwrap();
                assert_same_bytes(
                    &a,
                    &b,
                    &format!("store layer {index} ({paths:?}), uid {uid}"),
                );
            }
        }
        let config: Value = serde_json::from_slice(
            &tar_member(&image, manifest[0]["Config"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let history = config["history"].as_array().unwrap();
        assert_eq!(history.len(), members.len());
        let first: Vec<String> = serde_json::from_value(store_layers[0]["paths"].clone()).unwrap();
        let listed: Vec<String> = first.iter().map(|p| format!("'{p}'")).collect();
        assert_eq!(
            history[0],
            json!({
                "created": "1970-01-01T00:00:01Z",
                "comment": format!("store paths: [{}]", listed.join(", ")),
            })
        );
    }
}
