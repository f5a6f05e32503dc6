//! `layered-gen sbom`: a bill of materials straight from the closure, in CycloneDX 1.5 and
//! SPDX 2.3, checked by each format's own validator in the tool tier.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;

const HELLO: &str = "/nix/store/0c7q1wqgkrsgz0p8j0jz4r2wqd4m8smm-hello-2.12.1";
const GLIBC: &str = "/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-glibc-2.39-52";
const SOURCE: &str = "/nix/store/2a8x0m2k1yzyv8g4hwd2qzcn1l2n2v8s-source";
const ODD: &str = "/nix/store/3pvbf1c4f1mx0i6xbl2a4g0a9gdb2r3x-gtk+3-a?b=c-3.24";

/// A closure of four paths in exportReferencesGraph's JSON: hello (the root) on glibc and a
/// path with an odd name, which references a source without a version. Its narHashes are
/// spelled the three ways Nix writes them.
fn closure(dir: &Path) -> std::path::PathBuf {
    let empty_hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let graph = json!([
        {"path": HELLO, "narHash": "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
         "narSize": 1000, "references": [HELLO, GLIBC, ODD]},
        {"path": GLIBC, "narHash": "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
         "narSize": 2000, "references": [GLIBC]},
        {"path": ODD, "narHash": format!("sha256:{empty_hex}"), "narSize": 3,
         "references": [SOURCE, GLIBC]},
        {"path": SOURCE, "narHash": format!("sha256:{empty_hex}"), "narSize": 4, "references": []},
    ]);
    let path = dir.join("closure.json");
    fs::write(&path, graph.to_string()).unwrap();
    path
}

fn sbom(closure: &Path, extra: &[&str]) -> String {
    let mut args = vec!["sbom", "--closure", closure.to_str().unwrap()];
    args.extend_from_slice(extra);
    String::from_utf8(layered_gen(&args).stdout).unwrap()
}

fn by_ref<'a>(components: &'a [Value], key: &str, path: &str) -> &'a Value {
    components
        .iter()
        .find(|c| c[key].as_str().is_some_and(|v| v.contains(path)))
        .unwrap_or_else(|| panic!("no component for {path}"))
}

#[test]
fn a_cyclonedx_sbom_has_a_component_per_store_path_and_its_references() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    let text = sbom(&closure, &[]);
    assert_eq!(
        text,
        sbom(&closure, &[]),
        "the same closure gives the same bytes"
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["bomFormat"], "CycloneDX");
    assert_eq!(doc["specVersion"], "1.5");
    assert_eq!(doc["metadata"]["timestamp"], "1970-01-01T00:00:01Z");
    let serial = doc["serialNumber"].as_str().unwrap();
    assert!(serial.starts_with("urn:uuid:"), "{serial}");

    // The root is the subject; the others are components, name and version as parseDrvName.
    let root = &doc["metadata"]["component"];
    assert_eq!(root["bom-ref"], HELLO);
    assert_eq!(
        (&root["name"], &root["version"]),
        (&json!("hello"), &json!("2.12.1"))
    );
    assert_eq!(root["purl"], "pkg:nix/hello@2.12.1");
    let empty_hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(
        root["hashes"][0],
        json!({"alg": "SHA-256", "content": empty_hex})
    );
    let components = doc["components"].as_array().unwrap();
    assert_eq!(components.len(), 3);
    let glibc = by_ref(components, "bom-ref", GLIBC);
    assert_eq!(
        (&glibc["name"], &glibc["version"]),
        (&json!("glibc"), &json!("2.39-52"))
    );
    assert_eq!(glibc["hashes"][0]["content"], empty_hex, "SRI narHash");
    assert_eq!(
        glibc["properties"],
        json!([{"name": "nix:store_path", "value": GLIBC}, {"name": "nix:nar_size", "value": "2000"}])
    );
    // No version in the name: none in the component, none guessed.
    let source = by_ref(components, "bom-ref", SOURCE);
    assert_eq!(source["name"], "source");
    assert!(source.get("version").is_none(), "{source}");
    assert_eq!(source["purl"], "pkg:nix/source");
    // Characters a purl reserves are percent-encoded.
    let odd = by_ref(components, "bom-ref", ODD);
    assert_eq!(odd["name"], "gtk+3-a?b=c");
    assert_eq!(odd["purl"], "pkg:nix/gtk%2B3-a%3Fb%3Dc@3.24");

    // Dependencies are the references, without self-references.
    let deps = doc["dependencies"].as_array().unwrap();
    let on = |path: &str| by_ref(deps, "ref", path)["dependsOn"].clone();
    assert_eq!(on(HELLO), json!([GLIBC, ODD]));
    assert_eq!(on(GLIBC), json!([]));
    assert_eq!(on(ODD), json!([GLIBC, SOURCE]));

    // --created is the timestamp, and the serial number follows the content.
    let later: Value =
        serde_json::from_str(&sbom(&closure, &["--created", "2024-05-01T12:00:00Z"])).unwrap();
    assert_eq!(later["metadata"]["timestamp"], "2024-05-01T12:00:00Z");
    assert_ne!(later["serialNumber"], doc["serialNumber"]);
}

#[test]
fn an_spdx_sbom_describes_the_root_and_its_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    let text = sbom(&closure, &["--format", "spdx"]);
    assert_eq!(text, sbom(&closure, &["--format", "spdx"]));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["name"], "hello-2.12.1");
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:01Z");
    let packages = doc["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 4);
    let hello = by_ref(packages, "comment", HELLO);
    assert_eq!(hello["versionInfo"], "2.12.1");
    assert_eq!(
        hello["externalRefs"][0]["referenceLocator"],
        "pkg:nix/hello@2.12.1"
    );
    assert!(
        by_ref(packages, "comment", SOURCE)
            .get("versionInfo")
            .is_none()
    );
    let relationships = doc["relationships"].as_array().unwrap();
    let describes: Vec<&Value> = relationships
        .iter()
        .filter(|r| r["relationshipType"] == "DESCRIBES")
        .collect();
    assert_eq!(describes.len(), 1);
    assert_eq!(describes[0]["relatedSpdxElement"], hello["SPDXID"]);
    let depends = relationships
        .iter()
        .filter(|r| r["relationshipType"] == "DEPENDS_ON")
        .count();
    assert_eq!(depends, 4);

    // SPDX takes UTC to the second: another time is refused, saying what to give.
    let said = layered_gen_fails(&[
        "sbom",
        "--closure",
        closure.to_str().unwrap(),
        "--format",
        "spdx",
        "--created",
        "2024-05-01T12:00:00+02:00",
    ]);
    assert!(
        said.contains("--created") && said.contains("2024-05-01T12:00:00Z"),
        "{said}"
    );
}

#[test]
fn a_closure_with_a_bad_nar_hash_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let graph = json!([{"path": HELLO, "narHash": "sha256:not-a-hash", "references": []}]);
    let closure = dir.path().join("closure.json");
    fs::write(&closure, graph.to_string()).unwrap();
    let said = layered_gen_fails(&["sbom", "--closure", closure.to_str().unwrap()]);
    assert!(
        said.contains("hello-2.12.1") && said.contains("narHash"),
        "{said}"
    );
}

/// Runs the format's own validator (tests/it/oracles/validate_sbom.py) on `file`.
pub(crate) fn validate(kind: &str, file: &Path) -> std::process::Output {
    let script = repo_root().join("tests/it/oracles/validate_sbom.py");
    let output = Command::new(require("python3"))
        .arg(script)
        .arg(kind)
        .arg(file)
        .output()
        .unwrap();
    assert_ne!(
        output.status.code(),
        Some(2),
        "the {kind} validator is missing: python3 -m pip install \
         'cyclonedx-python-lib[json-validation]' spdx-tools (.ci/run does)\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs cyclonedx-python-lib and spdx-tools: cargo test --features tool-tests (.ci/run)"
)]
fn both_formats_pass_their_own_validators() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    let meta = meta_file(dir.path());
    for (kind, format) in [("cyclonedx", "cyclonedx"), ("spdx", "spdx")] {
        let file = dir.path().join(format!("sbom.{kind}.json"));
        let args = ["--format", format, "--sbom-meta", meta.to_str().unwrap()];
        fs::write(&file, sbom(&closure, &args)).unwrap();
        let output = validate(kind, &file);
        assert!(
            output.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The validators can fail: a dangling dependency is caught by each.
        let mut doc: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        match kind {
            "cyclonedx" => doc["components"][0]["hashes"][0]["content"] = json!("zz"),
            _ => doc["relationships"][0]["relatedSpdxElement"] = json!("SPDXRef-nowhere"),
        }
        let broken = dir.path().join(format!("broken.{kind}.json"));
        fs::write(&broken, doc.to_string()).unwrap();
        assert_eq!(validate(kind, &broken).status.code(), Some(1), "{kind}");
    }
}

/// exportReferencesGraph's text format names each path's deriver: the SBOM and the
/// provenance carry it.
#[test]
fn derivers_from_the_closure_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let drv = "/nix/store/4k8x0m2k1yzyv8g4hwd2qzcn1l2n2v8s-hello-2.12.1.drv";
    let text = format!("{HELLO}\n{drv}\n1\n{GLIBC}\n{GLIBC}\n\n0\n");
    let closure = dir.path().join("closure");
    fs::write(&closure, text).unwrap();
    let doc: Value = serde_json::from_str(&sbom(&closure, &[])).unwrap();
    let root = &doc["metadata"]["component"];
    let properties = root["properties"].as_array().unwrap();
    assert!(
        properties.contains(&json!({"name": "nix:deriver", "value": drv})),
        "{properties:?}"
    );
    let glibc = by_ref(doc["components"].as_array().unwrap(), "bom-ref", GLIBC);
    assert!(
        !glibc["properties"].to_string().contains("nix:deriver"),
        "an empty deriver line names none"
    );
    let spdx: Value = serde_json::from_str(&sbom(&closure, &["--format", "spdx"])).unwrap();
    let hello = by_ref(spdx["packages"].as_array().unwrap(), "comment", HELLO);
    assert!(
        hello["comment"].as_str().unwrap().contains(drv),
        "{}",
        hello["comment"]
    );
}

/// The packages' `meta` (`--sbom-meta`, what nix/ writes): description, homepage and
/// licenses, with SPDX ids where Nix has them, names where it has not.
fn meta_file(dir: &Path) -> std::path::PathBuf {
    let meta = json!([
        {"path": HELLO, "description": "A \"friendly\" greeter", "homepage": "https://www.gnu.org/software/hello/",
         "licenses": [{"spdxId": "GPL-3.0-or-later", "fullName": "GNU General Public License v3.0 or later"}]},
        {"path": GLIBC, "licenses": [{"spdxId": "LGPL-2.1-or-later"}, {"spdxId": "GPL-2.0-or-later"}]},
        {"path": ODD, "licenses": [{"fullName": "Unfree, redistributable"}]},
    ]);
    let path = dir.join("meta.json");
    fs::write(&path, meta.to_string()).unwrap();
    path
}

#[test]
fn package_meta_gives_descriptions_homepages_and_licenses() {
    let dir = tempfile::tempdir().unwrap();
    let closure = closure(dir.path());
    let meta = meta_file(dir.path());
    let meta_arg = ["--sbom-meta", meta.to_str().unwrap()];
    let doc: Value = serde_json::from_str(&sbom(&closure, &meta_arg)).unwrap();
    let root = &doc["metadata"]["component"];
    assert_eq!(root["description"], "A \"friendly\" greeter");
    assert_eq!(
        root["licenses"],
        json!([{"expression": "GPL-3.0-or-later"}])
    );
    assert_eq!(
        root["externalReferences"][0]["url"],
        "https://www.gnu.org/software/hello/"
    );
    let components = doc["components"].as_array().unwrap();
    let odd = by_ref(components, "bom-ref", ODD);
    assert_eq!(
        odd["licenses"],
        json!([{"license": {"name": "Unfree, redistributable"}}])
    );
    let spdx: Value = serde_json::from_str(&sbom(
        &closure,
        &[&meta_arg[..], &["--format", "spdx"]].concat(),
    ))
    .unwrap();
    let packages = spdx["packages"].as_array().unwrap();
    let glibc = by_ref(packages, "comment", GLIBC);
    assert_eq!(
        glibc["licenseDeclared"],
        "LGPL-2.1-or-later AND GPL-2.0-or-later"
    );
    assert_eq!(
        by_ref(packages, "comment", ODD)["licenseDeclared"],
        "NOASSERTION"
    );
    assert_eq!(
        by_ref(packages, "comment", HELLO)["homepage"],
        "https://www.gnu.org/software/hello/"
    );
    // A meta file with a key it does not know is refused, naming it.
    fs::write(&meta, r#"[{"path": "/x", "licence": []}]"#).unwrap();
    let text = layered_gen_fails(&[
        "sbom",
        "--closure",
        closure.to_str().unwrap(),
        "--sbom-meta",
        meta.to_str().unwrap(),
    ]);
    assert!(
        text.contains("--sbom-meta") && text.contains("licence"),
        "{text}"
    );
}
