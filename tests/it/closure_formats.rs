//! Closure files as Nix and the shared corpus write them: every format must give the same plan,
//! and an image from a real Nix store must hold exactly its paths.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

fn plan(args: &[&str]) -> Value {
    let mut full = vec!["plan"];
    full.extend_from_slice(args);
    serde_json::from_slice(&layered_gen(&full).stdout).unwrap()
}

/// The layers of a plan as lists of paths (what must not depend on the input format).
fn layer_paths(plan: &Value) -> Vec<Vec<String>> {
    plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

fn nix_build(nix_file: &Path, bb_dir: &Path, attr: &str) -> String {
    let output = run(Command::new(require("nix-build"))
        .arg(nix_file)
        .arg("--arg")
        .arg("bbDir")
        .arg(bb_dir)
        .args(["-A", attr, "--no-out-link"]));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs nix-build, busybox, skopeo, umoci: cargo test --features tool-tests (.ci/run)"
)]
fn closures_written_by_nix_give_one_plan_and_a_faithful_image() {
    let work = tempfile::tempdir().unwrap();
    let bb_dir = work.path().join("bb");
    fs::create_dir_all(&bb_dir).unwrap();
    fs::copy(require("busybox"), bb_dir.join("busybox")).unwrap();
    let nix_file = repo_root().join("tests/nix/closures.nix");

    let app = nix_build(&nix_file, &bb_dir, "app");
    let text = nix_build(&nix_file, &bb_dir, "closureText");
    let attrs = nix_build(&nix_file, &bb_dir, "closureAttrs");

    let closure_paths = run(Command::new(require("nix-store")).args(["-qR", &app])).stdout;
    let closure_paths: Vec<String> = String::from_utf8(closure_paths)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let registration = work.path().join("registration");
    let dump = run(Command::new(require("nix-store"))
        .arg("--dump-db")
        .args(&closure_paths));
    fs::write(&registration, dump.stdout).unwrap();

    let path_info = work.path().join("path-info.json");
    let info = run(Command::new(require("nix")).args(["path-info", "--json", "--recursive", &app]));
    fs::write(&path_info, &info.stdout).unwrap();
    // Nix 2.19 and later print an object keyed by path; this Nix prints the list. Make the
    // newer form by hand from the same data.
    let list: Value = serde_json::from_slice(&info.stdout).unwrap();
    let mut object = serde_json::Map::new();
    for item in list.as_array().unwrap() {
        let mut fields = item.as_object().unwrap().clone();
        let path = fields.remove("path").unwrap();
        object.insert(path.as_str().unwrap().to_string(), Value::Object(fields));
    }
    let path_info_object = work.path().join("path-info-object.json");
    fs::write(
        &path_info_object,
        serde_json::to_vec(&Value::Object(object)).unwrap(),
    )
    .unwrap();

    let expected = plan(&["--closure", &text, "--max-layers", "3"]);
    // Worked by hand: app -> liba, libb -> fake-libc (a diamond, libc referencing itself).
    // Unfolded from the root app: libc occurs twice; pop(app)=1, pop(liba)=pop(libb)=1+1,
    // pop(libc) = 1 (app) + 1 (liba) + 1 (libb) + 2 (its own two occurrences) = 5.
    let names: Vec<Vec<String>> = layer_paths(&expected)
        .iter()
        .map(|l| l.iter().map(|p| p[44..].to_string()).collect())
        .collect();
    assert_eq!(
        names,
        vec![
            vec!["fake-libc-1.0".to_string()],
            vec!["liba-2.0".to_string()],
            vec!["libb-3.1".to_string(), "app-1.0".to_string()],
        ]
    );
    assert!(expected["popularities"][&closure_paths[0]].is_u64());

    for args in [
        vec!["--closure", &attrs],
        vec!["--closure", &attrs, "--closure-key", "closure"],
        vec!["--closure", registration.to_str().unwrap()],
        vec!["--closure", path_info.to_str().unwrap()],
        vec!["--closure", path_info_object.to_str().unwrap()],
        // Merging a graph with itself changes nothing.
        vec![
            "--closure",
            &text,
            "--closure",
            registration.to_str().unwrap(),
        ],
    ] {
        let mut args = args.clone();
        args.extend(["--max-layers", "3"]);
        let got = plan(&args);
        assert_eq!(layer_paths(&got), layer_paths(&expected), "{args:?}");
        assert_eq!(got["popularities"], expected["popularities"], "{args:?}");
    }
    // JSON formats carry NAR sizes: the plan shows them.
    let with_sizes = plan(&["--closure", &attrs, "--max-layers", "3"]);
    assert!(with_sizes["layers"][0]["narSize"].as_u64().unwrap() > 0);

    // An image read straight from the real store (no --store-root) holds exactly the closure.
    let image = work.path().join("image.tar");
    layered_gen(&[
        "--closure",
        &attrs,
        "--max-layers",
        "3",
        "--tag",
        "nix",
        "-o",
        image.to_str().unwrap(),
    ]);
    let layout = work.path().join("layout");
    run(Command::new(require("skopeo"))
        .arg("copy")
        .arg(format!("docker-archive:{}", image.display()))
        .arg(format!("oci:{}:nix", layout.display())));
    let bundle = work.path().join("bundle");
    run(Command::new(require("umoci"))
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:nix", layout.display()))
        .arg(&bundle));
    let mut in_image: Vec<String> = fs::read_dir(bundle.join("rootfs/nix/store"))
        .unwrap()
        .map(|e| format!("/nix/store/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    in_image.sort();
    let mut sorted = closure_paths.clone();
    sorted.sort();
    assert_eq!(in_image, sorted);
    for path in &closure_paths {
        let name = path.trim_start_matches("/nix/store/");
        assert_eq!(
            tree_listing(&bundle.join("rootfs/nix/store").join(name)),
            tree_listing(Path::new(path)),
            "{path}"
        );
    }
}

fn make_corpus(out: &Path, roots: Option<&str>) {
    let script = repo_root().join("../shared/corpus/make-corpus");
    assert!(
        script.is_file(),
        "this test needs ../shared/corpus/make-corpus beside the checkout"
    );
    let mut cmd = Command::new(require("python3"));
    cmd.arg(&script).arg(out);
    if let Some(roots) = roots {
        cmd.args(["--roots", roots]);
    }
    run(&mut cmd);
}

fn corpus_plans_agree(dir: &Path, max_layers: &str) -> Value {
    let file = |name: &str| -> PathBuf { dir.join(name) };
    let expected = plan(&[
        "--closure",
        file("graph.json").to_str().unwrap(),
        "--max-layers",
        max_layers,
    ]);
    for other in ["closure", "registration"] {
        let got = plan(&[
            "--closure",
            file(other).to_str().unwrap(),
            "--max-layers",
            max_layers,
        ]);
        assert_eq!(layer_paths(&got), layer_paths(&expected), "{other}");
    }
    let stderr = layered_gen_fails(&["plan", "--closure", file("store-paths").to_str().unwrap()]);
    assert!(stderr.contains("plain list of store paths"), "{stderr}");
    expected
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs the shared corpus (Debian packages) and skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn corpus_graphs_plan_alike_in_every_format() {
    let work = tempfile::tempdir().unwrap();
    let small = work.path().join("small");
    make_corpus(&small, Some("coreutils,bash"));
    let plan = corpus_plans_agree(&small, "10");
    let summary: Value =
        serde_json::from_slice(&fs::read(small.join("summary.json")).unwrap()).unwrap();
    let paths: usize = layer_paths(&plan).iter().map(Vec::len).sum();
    assert_eq!(paths, summary["paths"].as_u64().unwrap() as usize);
    assert_eq!(layer_paths(&plan).len(), 10);
    // The root references everything at the top, so it is the least popular: in the last layer.
    let last = layer_paths(&plan).pop().unwrap();
    assert!(last.contains(&summary["root"].as_str().unwrap().to_string()));

    // The corpus's absolute paths are read where they are (no --store-root).
    let image = work.path().join("small.tar");
    layered_gen(&[
        "--closure",
        small.join("graph.json").to_str().unwrap(),
        "--max-layers",
        "10",
        "-o",
        image.to_str().unwrap(),
    ]);
    let inspect = run(Command::new(require("skopeo"))
        .arg("inspect")
        .arg(format!("docker-archive:{}", image.display())));
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["Layers"].as_array().unwrap().len(), 10);
}

#[test]
fn full_corpus_plans_within_the_budget() {
    let work = tempfile::tempdir().unwrap();
    let full = work.path().join("full");
    make_corpus(&full, None);
    let plan = corpus_plans_agree(&full, "100");
    let layers = layer_paths(&plan);
    assert_eq!(layers.len(), 100);
    let mut all: Vec<&String> = layers.iter().flatten().collect();
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "every path in exactly one layer");
}
