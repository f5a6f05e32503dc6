//! `--layering reuse` through the command line: plans with reasons, images that load, and the
//! previous plan kept.

use std::fs;

use crate::common::*;
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
            .all(|l| !l["reason"].as_str().unwrap().is_empty() && l["layering"] == "reuse")
    );
    let popularity = plan(&["--closure", closure, "--max-layers", "3"]);
    assert!(
        popularity["layers"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("popularity rank 1")
    );
    assert!(
        popularity["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["layering"] == "popularity")
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

/// `--layering auto` plans from narSizes (a JSON closure), explains each layer, and builds an
/// image with those layers; a closure without sizes is refused with what to use instead.
#[test]
fn auto_plans_from_sizes_and_builds_images() {
    let mut store = TestStore::new();
    let [data, single, lib, app] = <[String; 4]>::try_from(store.sample()).unwrap();
    let record = |path: &str, refs: &[&str], size: u64| serde_json::json!({"path": path, "references": refs, "narSize": size});
    let graph = Value::from(vec![
        record(&data, &[], 300_000),
        record(&single, &[], 12),
        record(&lib, &[&data], 100),
        record(&app, &[&lib, &single, &data], 200),
    ]);
    let closure = store.dir.path().join("closure.json");
    fs::write(&closure, graph.to_string()).unwrap();
    let closure = closure.to_str().unwrap();
    let auto = plan(&[
        "--closure",
        closure,
        "--max-layers",
        "3",
        "--layering",
        "auto",
    ]);
    let layers = auto["layers"].as_array().unwrap();
    // data is largest: a layer of its own. app takes lib and single (only it uses them), then
    // lib, next by size, gets its own; single would make a fourth layer, so the split stops.
    let paths: Vec<Value> = layers.iter().map(|l| l["paths"].clone()).collect();
    assert_eq!(
        paths,
        [
            serde_json::json!([data]),
            serde_json::json!([lib]),
            serde_json::json!([app, single]),
        ]
    );
    assert!(
        layers
            .iter()
            .all(|l| l["reason"].as_str().unwrap().starts_with("auto: ") && l["layering"] == "auto"),
        "{auto}"
    );

    let image = store.dir.path().join("auto.tar");
    layered_gen(&[
        "--closure",
        closure,
        "--store-root",
        &store.store_root_arg(),
        "--layering",
        "auto",
        "--max-layers",
        "3",
        "-o",
        image.to_str().unwrap(),
    ]);
    let manifest = archive_manifest(&image);
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 3);

    let text = store.write_closure();
    let stderr = layered_gen_fails(&[
        "plan",
        "--closure",
        text.to_str().unwrap(),
        "--layering",
        "auto",
    ]);
    assert!(
        stderr
            .starts_with("layered-gen: error: --closure: the auto layering sizes paths by narSize"),
        "{stderr}"
    );
}

/// `--layering-pipeline`: nixpkgs' layeringPipeline JSON makes the layers, which say so; an
/// image builds from them; too many layers for the limit, or a pipeline with --layering,
/// are refused.
#[test]
fn a_layering_pipeline_makes_the_layers() {
    let mut store = TestStore::new();
    let [data, single, lib, app] = <[String; 4]>::try_from(store.sample()).unwrap();
    let closure = store.write_closure();
    let closure = closure.to_str().unwrap();
    let pipeline = store.dir.path().join("pipeline.json");
    fs::write(
        &pipeline,
        serde_json::json!([
            ["subcomponent_out", [lib]],
            ["over", "rest", ["popularity_contest"]],
            ["flatten"]
        ])
        .to_string(),
    )
    .unwrap();
    let pipeline = pipeline.to_str().unwrap();
    let planned = plan(&["--closure", closure, "--layering-pipeline", pipeline]);
    let layers = planned["layers"].as_array().unwrap();
    let mut paths: Vec<Vec<Value>> = layers
        .iter()
        .map(|l| l["paths"].as_array().unwrap().clone())
        .collect();
    for layer in &mut paths {
        layer.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    // lib and what it references (data), then the rest by popularity.
    let mut main = vec![Value::from(data.clone()), Value::from(lib.clone())];
    main.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    assert_eq!(paths[0], main, "{planned}");
    assert_eq!(paths.len(), 3, "{planned}");
    assert!(paths[1..].iter().all(|l| l.len() == 1));
    let rest: Vec<&str> = paths[1..].iter().map(|l| l[0].as_str().unwrap()).collect();
    assert_eq!(rest, [single.as_str(), app.as_str()], "{planned}");
    assert!(layers.iter().all(|l| l["layering"] == "pipeline"));

    // --print-plan (nix/'s debug) shows the same plan on stderr while building.
    let image = store.dir.path().join("pipeline.tar");
    let built = store.build(
        &image,
        &[
            "--layering-pipeline",
            pipeline,
            "--name",
            "t/pipeline",
            "--print-plan",
        ],
    );
    let stderr = String::from_utf8(built.stderr).unwrap();
    let printed: Value = serde_json::Deserializer::from_str(&stderr)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(printed["layers"], planned["layers"], "{stderr}");
    let manifest = archive_manifest(&image);
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), 3);

    let err = layered_gen_fails(&[
        "plan",
        "--closure",
        closure,
        "--layering-pipeline",
        pipeline,
        "--max-layers",
        "2",
    ]);
    assert!(
        err.contains("--layering-pipeline: the layering pipeline makes 3 layers, more than the 2")
            && err.contains("[\"limit_layers\", 2]"),
        "{err}"
    );
    let err = layered_gen_fails(&[
        "plan",
        "--closure",
        closure,
        "--layering-pipeline",
        pipeline,
        "--layering",
        "reuse",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
}
