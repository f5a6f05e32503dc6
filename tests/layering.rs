//! `--layering reuse` through the command line: plans with reasons, images that load, and the
//! previous plan kept.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

fn plan(args: &[&str]) -> Value {
    let mut full = vec!["plan"];
    full.extend_from_slice(args);
    serde_json::from_slice(&layered_gen(&full).stdout).unwrap()
}

#[test]
fn reuse_plans_explain_themselves_and_build_images() {
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure();
    let closure = closure.to_str().unwrap();
    let reuse = plan(&[
        "--closure",
        closure,
        "--max-layers",
        "3",
        "--layering",
        "reuse",
    ]);
    let layers = reuse["layers"].as_array().unwrap();
    assert!(layers.len() <= 3);
    assert!(
        layers
            .iter()
            .all(|l| !l["reason"].as_str().unwrap().is_empty())
    );
    let popularity = plan(&["--closure", closure, "--max-layers", "3"]);
    assert!(
        popularity["layers"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("popularity rank 1")
    );

    // The plan's previous layers come back unchanged when the closure did not change.
    let previous = store.dir.path().join("previous.json");
    fs::write(&previous, serde_json::to_vec(&reuse).unwrap()).unwrap();
    let again = plan(&[
        "--closure",
        closure,
        "--max-layers",
        "3",
        "--layering",
        "reuse",
        "--previous-plan",
        previous.to_str().unwrap(),
    ]);
    let paths = |p: &Value| -> Vec<Value> {
        p["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["paths"].clone())
            .collect()
    };
    let mut before = paths(&reuse);
    let mut after = paths(&again);
    before.sort_by_key(|v| v.to_string());
    after.sort_by_key(|v| v.to_string());
    assert_eq!(before, after);

    let stderr = layered_gen_fails(&[
        "plan",
        "--closure",
        closure,
        "--previous-plan",
        previous.to_str().unwrap(),
    ]);
    assert_eq!(
        stderr,
        "layered-gen: error: --previous-plan: a previous plan is only used by the reuse layering\n"
    );

    let image = store.dir.path().join("reuse.tar");
    layered_gen(&[
        "--closure",
        closure,
        "--store-root",
        &store.store_root_arg(),
        "--layering",
        "reuse",
        "--max-layers",
        "3",
        "-o",
        image.to_str().unwrap(),
    ]);
    // The image has the plan's layers (tests/image_tools.rs checks our archives with skopeo).
    let mut archive = tar::Archive::new(fs::File::open(&image).unwrap());
    let manifest: Value = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path_bytes().as_ref() == b"manifest.json")
        .map(|e| serde_json::from_reader(e).unwrap())
        .unwrap();
    assert_eq!(
        manifest[0]["Layers"].as_array().unwrap().len(),
        layers.len()
    );
}
