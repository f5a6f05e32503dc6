//! `layered-gen layer` and `--layer`: layers built before the image, taken as they are and
//! checked as any input is.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// `layered-gen layer` on the sample store; `extra` picks the paths and compressions.
fn build_layer(store: &TestStore, closure: &Path, out: &Path, extra: &[&str]) {
    run(Command::new(bin())
        .arg("layer")
        .arg("--closure")
        .arg(closure)
        .arg("--store-root")
        .arg(store.root())
        .args(extra)
        .arg("--quiet")
        .arg("-o")
        .arg(out));
}

fn layer_json(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("layer.json")).unwrap()).unwrap()
}

fn config_of(archive: &Path) -> Value {
    let manifest = archive_manifest(archive);
    serde_json::from_slice(&tar_member(archive, manifest[0]["Config"].as_str().unwrap()).unwrap())
        .unwrap()
}

struct Sample {
    store: TestStore,
    closure: PathBuf,
    /// data, single, lib, app
    paths: Vec<String>,
}

fn sample() -> Sample {
    let mut store = TestStore::new();
    let paths = store.sample();
    let closure = store.write_closure();
    Sample {
        store,
        closure,
        paths,
    }
}

#[test]
fn an_image_takes_a_prebuilt_layer_as_it_is_and_plans_the_rest() {
    let s = sample();
    let dir = s.store.dir.path();
    let data = dir.join("data-layer");
    build_layer(
        &s.store,
        &s.closure,
        &data,
        &[
            "--path",
            &s.paths[0],
            "--compression",
            "gzip",
            "--compression",
            "zstd",
        ],
    );
    let described = layer_json(&data);
    assert_eq!(described["paths"], serde_json::json!([s.paths[0]]));
    // The rest goes on it: every path but data's.
    let rest = dir.join("rest-layer");
    build_layer(
        &s.store,
        &s.closure,
        &rest,
        &["--layer", data.to_str().unwrap()],
    );
    let rest_paths = layer_json(&rest)["paths"].as_array().unwrap().len();
    assert_eq!(rest_paths, 3);

    let image = dir.join("image.tar");
    run(layered_gen_on(&s.store, &s.closure)
        .args(["--layer", data.to_str().unwrap(), "--quiet", "-o"])
        .arg(&image));
    let manifest = archive_manifest(&image);
    let members = manifest[0]["Layers"].as_array().unwrap();
    // data's layer first (its gzip blob as the member), then the planned store layers.
    assert!(
        tar_member(&image, members[0].as_str().unwrap()).unwrap()
            == fs::read(data.join("layer.tar.gz")).unwrap()
    );
    let config = config_of(&image);
    assert_eq!(config["rootfs"]["diff_ids"][0], described["diffId"]);
    let history: Vec<String> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["comment"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(history[0], format!("store paths: {}", s.paths[0]));
    assert!(
        history[1..].iter().all(|c| !c.contains(&s.paths[0])),
        "{history:?}"
    );

    // A planned layer built alone is the image's layer: same diff_id, same gzip digest.
    let oci = dir.join("oci");
    run(layered_gen_on(&s.store, &s.closure)
        .args(["--format", "oci", "--max-layers", "4", "--quiet", "-o"])
        .arg(&oci));
    let plan: Value = serde_json::from_slice(
        &run(Command::new(bin())
            .args(["plan", "--closure"])
            .arg(&s.closure)
            .args(["--max-layers", "4"]))
        .stdout,
    )
    .unwrap();
    let first = &plan["layers"][0];
    let mut args: Vec<String> = Vec::new();
    for path in first["paths"].as_array().unwrap() {
        args.push("--path".into());
        args.push(path.as_str().unwrap().into());
    }
    let alone = dir.join("alone");
    build_layer(
        &s.store,
        &s.closure,
        &alone,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let alone = layer_json(&alone);
    let index: Value = serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let oci_manifest: Value =
        serde_json::from_slice(&fs::read(oci.join("blobs/sha256").join(manifest_digest)).unwrap())
            .unwrap();
    assert_eq!(
        oci_manifest["layers"][0]["digest"],
        alone["blobs"][0]["digest"]
    );
}

#[test]
fn prebuilt_layers_are_checked_as_any_input() {
    let s = sample();
    let dir = s.store.dir.path();
    let layer = dir.join("layer");
    build_layer(&s.store, &s.closure, &layer, &["--path", &s.paths[0]]);
    let build = |layers: &[&Path], extra: &[&str]| -> String {
        let mut command = layered_gen_on(&s.store, &s.closure);
        for l in layers {
            command.arg("--layer").arg(l);
        }
        let output = command
            .args(extra)
            .arg("-o")
            .arg(dir.join("out.tar"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "expected a failure");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let copy = |name: &str| -> PathBuf {
        let to = dir.join(name);
        fs::create_dir_all(&to).unwrap();
        for entry in fs::read_dir(&layer).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        to
    };

    // Given twice, or two layers with a path in common: both named.
    let said = build(&[&layer, &layer], &[]);
    assert!(
        said.contains("--layer") && said.contains("is given twice"),
        "{said}"
    );
    let other = dir.join("other");
    build_layer(
        &s.store,
        &s.closure,
        &other,
        &["--path", &s.paths[0], "--path", &s.paths[1]],
    );
    let said = build(&[&layer, &other], &[]);
    assert!(
        said.contains("both hold") && said.contains("/layer") && said.contains("/other"),
        "{said}"
    );

    // A blob that is not what layer.json says: refused, naming the file.
    let damaged = copy("damaged");
    let mut bytes = fs::read(damaged.join("layer.tar.gz")).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    fs::write(damaged.join("layer.tar.gz"), bytes).unwrap();
    let said = build(&[&damaged], &[]);
    assert!(
        said.contains("layer.tar.gz") && said.contains("damaged or was changed"),
        "{said}"
    );

    // A diffId that is not the blob's: --verify-layers decompresses and refuses it; by default
    // the diffId is layer.json's word (only the digest is checked), so the build goes on.
    let edited_diff_id = copy("diff-id");
    let mut json = layer_json(&edited_diff_id);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    json["diffId"] = Value::from(wrong.as_str());
    fs::write(edited_diff_id.join("layer.json"), json.to_string()).unwrap();
    let said = build(&[&edited_diff_id], &["--verify-layers"]);
    assert!(
        said.contains("layer.tar.gz")
            && said.contains("layer.json's diffId")
            && said.contains(&wrong),
        "{said}"
    );
    let trusted = layered_gen_on(&s.store, &s.closure)
        .arg("--layer")
        .arg(&edited_diff_id)
        .arg("-o")
        .arg(dir.join("trusted.tar"))
        .output()
        .unwrap();
    assert!(trusted.status.success(), "{trusted:?}");
    assert_eq!(
        config_of(&dir.join("trusted.tar"))["rootfs"]["diff_ids"][0],
        wrong
    );

    // A blob that is a symlink, or a FIFO: refused, and the FIFO is never waited on.
    let linked = copy("linked");
    fs::remove_file(linked.join("layer.tar.gz")).unwrap();
    std::os::unix::fs::symlink(layer.join("layer.tar.gz"), linked.join("layer.tar.gz")).unwrap();
    assert!(build(&[&linked], &[]).contains("it is a symlink"));
    let fifo = copy("fifo");
    fs::remove_file(fifo.join("layer.tar.gz")).unwrap();
    run(Command::new("mkfifo").arg(fifo.join("layer.tar.gz")));
    assert!(build(&[&fifo], &[]).contains("not a regular file"));

    // layer.json strictly typed, its blob names plain, its paths in the closure.
    let edited = |name: &str, edit: &dyn Fn(&mut Value)| -> PathBuf {
        let to = copy(name);
        let mut json = layer_json(&to);
        edit(&mut json);
        fs::write(to.join("layer.json"), json.to_string()).unwrap();
        to
    };
    let said = build(&[&edited("unknown", &|j| j["extra"] = Value::from(1))], &[]);
    assert!(
        said.contains("unknown field") || said.contains("unknown key"),
        "{said}"
    );
    let said = build(
        &[&edited("escape", &|j| {
            j["blobs"][0]["file"] = Value::from("../layer/layer.tar.gz")
        })],
        &[],
    );
    assert!(said.contains("not a plain file name"), "{said}");
    let said = build(
        &[&edited("stranger", &|j| {
            j["paths"] = serde_json::json!(["/nix/store/00000000000000000000000000000000-x"])
        })],
        &[],
    );
    assert!(said.contains("not in the closure"), "{said}");
    let said = build(
        &[&edited("future", &|j| {
            j["layeredGenLayer"] = Value::from(2)
        })],
        &[],
    );
    assert!(said.contains("format 2"), "{said}");

    // A destination whose layers are compressed otherwise: what to do instead.
    let said = build(&[&layer], &["--format", "oci", "--compression", "zstd"]);
    assert!(
        said.contains("has gzip blobs") && said.contains("--compression"),
        "{said}"
    );

    // `layer` itself: paths in the closure, not in the layers below, given once.
    let fails = |extra: &[&str]| -> String {
        let output = Command::new(bin())
            .arg("layer")
            .arg("--closure")
            .arg(&s.closure)
            .arg("--store-root")
            .arg(s.store.root())
            .args(extra)
            .arg("-o")
            .arg(dir.join("never"))
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(
        fails(&["--path", "/nix/store/00000000000000000000000000000000-x"])
            .contains("--path: the store path")
    );
    assert!(
        fails(&["--layer", layer.to_str().unwrap(), "--path", &s.paths[0]])
            .contains("is in the layer")
    );
    assert!(fails(&["--path", &s.paths[1], "--path", &s.paths[1]]).contains("given twice"));
    assert!(!dir.join("never").exists(), "nothing is left behind");
}

#[test]
fn a_layer_links_its_contents_at_the_root_after_its_store_paths() {
    let s = sample();
    let dir = s.store.dir.path().join("with-links");
    build_layer(
        &s.store,
        &s.closure,
        &dir,
        &["--contents", &s.paths[3], "--compression", "none"],
    );
    let names: Vec<(String, Option<String>, u64)> =
        tar::Archive::new(fs::File::open(dir.join("layer.tar")).unwrap())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                (name, link, e.header().uid().unwrap())
            })
            .collect();
    let app_link = names
        .iter()
        .position(|(n, ..)| n == "bin/app")
        .expect("bin/app is linked");
    assert_eq!(
        names[app_link].1.as_deref(),
        Some(format!("{}/bin/app", s.paths[3]).as_str())
    );
    assert_eq!(
        names[app_link].2, 0,
        "root's, as the customisation layer's links"
    );
    let last_store = names
        .iter()
        .rposition(|(n, ..)| n.starts_with("nix/store/"))
        .unwrap();
    assert!(last_store < app_link, "links come after the store paths");
    assert_eq!(
        layer_json(&dir)["tarSize"].as_u64().unwrap(),
        fs::metadata(dir.join("layer.tar")).unwrap().len()
    );
}

/// What the README says of a layer.json edited to a wrong diffId, taken without
/// --verify-layers: the image it gives is refused by `docker load`, which checks diff_ids.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker: cargo test --features tool-tests (.ci/run)"
)]
fn docker_refuses_an_image_whose_trusted_diff_id_is_wrong() {
    let docker = require("docker");
    let s = sample();
    let dir = s.store.dir.path();
    let layer = dir.join("layer");
    build_layer(&s.store, &s.closure, &layer, &["--path", &s.paths[0]]);
    let mut json = layer_json(&layer);
    json["diffId"] = Value::from(format!("sha256:{}", "cd".repeat(32)));
    fs::write(layer.join("layer.json"), json.to_string()).unwrap();
    let image = dir.join("wrong.tar");
    run(layered_gen_on(&s.store, &s.closure)
        .args(["--name", "layered-gen-test/wrong-diff-id", "--tag", "1"])
        .arg("--layer")
        .arg(&layer)
        .arg("-o")
        .arg(&image));
    let loaded = Command::new(docker)
        .arg("load")
        .arg("-i")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        !loaded.status.success(),
        "docker loaded an image whose diff_id is wrong: {loaded:?}"
    );
}
