//! The fuzz targets' bodies: one function per parser, fed arbitrary bytes. Shared by the
//! libFuzzer binaries in `fuzz_targets/` and by `tests/it/fuzz_replay.rs`, which runs every seed
//! and every saved crash through them in the ordinary test suite.
//!
//! A target fails only by panicking (or by a sanitizer/timeout in the fuzzer): errors are
//! the expected answer to most inputs. Beyond "no panic", each target checks what must hold
//! whenever the input is accepted.

use std::path::Path;
use std::sync::OnceLock;

use layered_gen::base::prebuilt::BlobCheck;
use layered_gen::base::{BaseImage, BaseOptions};
use layered_gen::closure::{self, ClosureGraph, LoadOptions};
use layered_gen::image_spec::{DockerManifestEntry, ImageConfigBlob, Index, Manifest};
use layered_gen::json_file::parse_typed;
use layered_gen::plan::{self, Budget, Layering, PreviousPlan};

/// Planning is checked on graphs up to this size (larger ones are only parsed).
const MAX_PLANNED: usize = 300;

/// A closure file in any format Nix writes; accepted graphs are planned with every strategy.
pub fn closure(data: &[u8]) {
    closure_with(data, None);
}

/// A structured-attrs file (`.attrs.json`) read for its `closure` key.
pub fn attrs(data: &[u8]) {
    closure_with(data, Some("closure"));
}

fn closure_with(data: &[u8], key: Option<&str>) {
    let options = LoadOptions {
        closure_key: key.map(str::to_string),
        ..LoadOptions::default()
    };
    let Ok(records) = closure::parse(Path::new("fuzz.json"), data, &options) else {
        return;
    };
    let Ok(graph) = ClosureGraph::from_records(records) else {
        return;
    };
    if graph.len() <= MAX_PLANNED {
        plan_every_way(&graph, None);
    }
}

/// Plans `graph` with both strategies and a few budgets; every plan must place each path
/// exactly once within the budget.
fn plan_every_way(graph: &ClosureGraph, previous: Option<&PreviousPlan>) {
    for max_layers in [2, 3, 10, 100] {
        for layering in [Layering::Popularity, Layering::Auto, Layering::Reuse] {
            let Ok(planned) = plan::plan(graph, Budget::new(max_layers), layering, previous) else {
                continue;
            };
            let mut seen = vec![false; graph.len()];
            for &path in planned.layers.iter().flatten() {
                assert!(!seen[path], "a path planned twice");
                seen[path] = true;
            }
            assert!(seen.iter().all(|&s| s), "a path left out of the plan");
            assert!(planned.layers.len() <= max_layers, "over the layer budget");
            let _ = planned.to_json(graph, &[]);
        }
    }
}

/// A `--previous-plan` file, used to plan a small fixed graph.
pub fn previous_plan(data: &[u8]) {
    let Ok(previous) = PreviousPlan::parse("fuzz.json", data) else {
        return;
    };
    plan_every_way(fixed_graph(), Some(&previous));
}

/// The graph of FIXED_CLOSURE.
fn fixed_graph() -> &'static ClosureGraph {
    static GRAPH: OnceLock<ClosureGraph> = OnceLock::new();
    GRAPH.get_or_init(|| {
        let text = FIXED_CLOSURE;
        let records = closure::parse(Path::new("fixed"), text.as_bytes(), &LoadOptions::default())
            .expect("the fixed closure parses");
        ClosureGraph::from_records(records).expect("the fixed closure is a graph")
    })
}

/// A small closure in the `exportReferencesGraph` text form, whose paths a fuzzed previous plan
/// or pipeline can name (the seeds do).
const FIXED_CLOSURE: &str = "\
/nix/store/00000000000000000000000000000000-app
/nix/store/11111111111111111111111111111111-lib.drv
2
/nix/store/11111111111111111111111111111111-lib
/nix/store/22222222222222222222222222222222-libc
/nix/store/11111111111111111111111111111111-lib

1
/nix/store/22222222222222222222222222222222-libc
/nix/store/22222222222222222222222222222222-libc

0
";

/// A `--config` file: parsed, checked as a base config would be, merged.
pub fn config(data: &[u8]) {
    let Ok(user) = layered_gen::config::runtime::parse("fuzz.json", data) else {
        return;
    };
    let _ = layered_gen::config::runtime::check_base(&user);
    let options = layered_gen::config::RuntimeOptions {
        created: "1970-01-01T00:00:01Z".to_string(),
        base_config: layered_gen::config::BaseConfig::All,
        user: user.clone(),
        env: vec!["A=1".to_string()],
        labels: vec![],
    };
    let _ = layered_gen::config::runtime_config(&user, &options);
}

/// A `--layering-pipeline` file, run on the small fixed graph: every layer it makes holds
/// paths of the graph, each in one layer at most.
pub fn layering_pipeline(data: &[u8]) {
    let Ok(pipeline) = plan::Pipeline::parse("fuzz.json", data) else {
        return;
    };
    let graph = fixed_graph();
    let Ok(layers) = pipeline.layers(graph) else {
        return;
    };
    let mut seen = vec![false; graph.len()];
    for &p in layers.iter().flatten() {
        assert!(
            !std::mem::replace(&mut seen[p], true),
            "a path in two layers"
        );
    }
    assert!(layers.iter().all(|l| !l.is_empty()), "an empty layer");
}

/// A `--perms` file.
pub fn perms(data: &[u8]) {
    let _ = layered_gen::layer::parse_perms("fuzz.json", data);
}

/// The image formats' JSON documents, each read as every type.
pub fn manifests(data: &[u8]) {
    let _ = parse_typed::<Index>("fuzz", data);
    let _ = parse_typed::<Manifest>("fuzz", data);
    let _ = parse_typed::<Vec<DockerManifestEntry>>("fuzz", data);
    let _ = parse_typed::<ImageConfigBlob>("fuzz", data);
}

/// A base image: the bytes are a docker-archive, legacy archive or OCI archive (possibly
/// compressed as a whole). Every accepted image is described and diffed with itself, which
/// reads every layer's tar headers.
pub fn base_image(data: &[u8]) {
    let dir = tempfile::tempdir().expect("creating a scratch directory");
    let file = dir.path().join("base.tar");
    std::fs::write(&file, data).expect("writing the fuzz input to scratch");
    let options = BaseOptions {
        path: file,
        tag: None,
    };
    let Ok(images) = BaseImage::load_all(&options, None, dir.path()) else {
        return;
    };
    for image in &images {
        let _ = image.describe();
        let _ = image.runtime_config();
        let _ = image.history();
        let _ = image.platform();
        if let Ok(report) = layered_gen::diff::diff(image, image) {
            assert!(report.identical, "an image differs from itself");
        }
    }
}

/// A layer directory's `layer.json` (`--layer`), beside a blob file holding the same bytes:
/// an accepted one lists plain blob names and distinct paths, and copying a blob checks it.
pub fn layer_dir(data: &[u8]) {
    use layered_gen::digest::BlobSource;
    let dir = tempfile::tempdir().expect("creating a scratch directory");
    std::fs::write(dir.path().join("layer.json"), data).expect("writing the fuzz input");
    std::fs::write(dir.path().join("layer.tar.gz"), data).expect("writing the fuzz input");
    let Ok(layer) = layered_gen::base::prebuilt::PrebuiltLayer::load(dir.path()) else {
        return;
    };
    assert!(
        !layer.layer.blobs.is_empty(),
        "a layer without blobs was accepted"
    );
    for blob in &layer.layer.blobs {
        assert!(
            !blob.file.contains('/'),
            "a blob name with a slash was accepted"
        );
    }
    for codec in [
        layered_gen::codec::Codec::None,
        layered_gen::codec::Codec::Gzip,
        layered_gen::codec::Codec::Zstd,
    ] {
        for check in [BlobCheck::Digest, BlobCheck::Full] {
            if let Some(blob) = layer.blob(codec, check) {
                // The file holds the JSON itself: whatever it is, it is checked, never trusted.
                let copied = blob.copy_to(&mut std::io::sink());
                if let Ok(info) = copied {
                    assert_eq!(
                        Some(info),
                        blob.known(),
                        "a copy that differs from layer.json passed"
                    );
                }
            }
        }
    }
}

/// A fuzz target: bytes in, a panic on failure.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("closure", closure),
    ("attrs", attrs),
    ("previous_plan", previous_plan),
    ("config", config),
    ("perms", perms),
    ("layering_pipeline", layering_pipeline),
    ("manifests", manifests),
    ("base_image", base_image),
    ("layer_dir", layer_dir),
];
