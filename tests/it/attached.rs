//! Documents beside the image (`--sbom`, `--provenance`, `--sbom-in-image`): as OCI 1.1
//! artifacts about the image manifest in a layout and a registry (the referrers API where the
//! registry has it, the `sha256-<hex>` tag where it has not), as files in a docker-archive.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::*;
use crate::fake_peers::{Behaviour, Registry, sha256};

const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
const SPDX: &str = "application/spdx+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn sample() -> (TestStore, Vec<String>) {
    let mut store = TestStore::new();
    let paths = store.sample();
    (store, paths)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// The image's entry in a layout's index.json, and the artifacts listed beside it: (artifact
/// type, manifest).
fn layout_artifacts(layout: &Path) -> (Value, Vec<(String, Value)>) {
    let index = json_of(&fs::read(layout.join("index.json")).unwrap());
    let entries = index["manifests"].as_array().unwrap();
    let artifacts = entries[1..]
        .iter()
        .map(|entry| {
            let manifest = blob(layout, entry["digest"].as_str().unwrap());
            assert_eq!(entry["size"], manifest.len());
            (
                entry["artifactType"].as_str().unwrap().to_string(),
                json_of(&manifest),
            )
        })
        .collect();
    (entries[0].clone(), artifacts)
}

/// The component of a CycloneDX document for `path`.
fn component<'a>(doc: &'a Value, path: &str) -> &'a Value {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == path)
        .unwrap_or_else(|| panic!("no component for {path}"))
}

fn property<'a>(component: &'a Value, name: &str) -> Option<&'a str> {
    component["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["value"]
        .as_str()
}

#[test]
fn sbom_and_provenance_are_artifacts_about_the_manifest_in_a_layout() {
    let (store, paths) = sample();
    let dir = tempfile::tempdir().unwrap();
    let documents = [
        "--format",
        "oci",
        "--sbom",
        "cyclonedx",
        "--sbom",
        "spdx",
        "--provenance",
        "--name",
        "my/app",
        "--tag",
        "1",
    ];
    let layout = dir.path().join("layout");
    store.build(&layout, &documents);
    let again = dir.path().join("again");
    store.build(&again, &documents);
    assert_eq!(
        tree_listing(&layout),
        tree_listing(&again),
        "the same build gives the same documents"
    );

    let (image, artifacts) = layout_artifacts(&layout);
    let kinds: Vec<&str> = artifacts.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, [CYCLONEDX, SPDX, IN_TOTO]);
    let manifest = json_of(&blob(&layout, image["digest"].as_str().unwrap()));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = json_of(&blob(&layout, config_digest));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();

    let mut documents = Vec::new();
    for (kind, artifact) in &artifacts {
        assert_eq!(artifact["artifactType"], kind.as_str());
        assert_eq!(artifact["config"]["digest"], EMPTY);
        assert_eq!(blob(&layout, EMPTY), b"{}");
        assert_eq!(
            (&artifact["subject"]["digest"], &artifact["subject"]["size"]),
            (&image["digest"], &image["size"]),
            "the subject is the image manifest"
        );
        let layer = &artifact["layers"][0];
        assert_eq!(layer["mediaType"], kind.as_str());
        let content = blob(&layout, layer["digest"].as_str().unwrap());
        assert_eq!(layer["size"], content.len());
        documents.push(json_of(&content));
    }

    // CycloneDX: the image is the subject, by its config digest; each path names its layer.
    let cdx = &documents[0];
    let root = &cdx["metadata"]["component"];
    assert_eq!(
        (&root["type"], &root["name"], &root["version"]),
        (
            &Value::from("container"),
            &Value::from("my/app"),
            &Value::from("1")
        )
    );
    assert_eq!(
        root["hashes"][0]["content"],
        config_digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        property(root, "oci:manifest_digest"),
        image["digest"].as_str()
    );
    assert_eq!(cdx["components"].as_array().unwrap().len(), paths.len());
    for path in &paths {
        let c = component(cdx, path);
        let index: usize = property(c, "layered-gen:layer").unwrap().parse().unwrap();
        assert_eq!(
            property(c, "layered-gen:layer_diff_id"),
            diff_ids[index].as_str(),
            "{path} is in layer {index}"
        );
    }
    // Its dependencies start at the image, which depends on the closure's root (app).
    assert_eq!(cdx["dependencies"][0]["ref"], "my/app:1");
    assert_eq!(
        cdx["dependencies"][0]["dependsOn"],
        serde_json::json!([paths[3]])
    );

    // SPDX: the document describes the image, which contains every path.
    let spdx = &documents[1];
    let relationships = spdx["relationships"].as_array().unwrap();
    assert!(relationships.iter().any(
        |r| r["relationshipType"] == "DESCRIBES" && r["relatedSpdxElement"] == "SPDXRef-image"
    ));
    let contained = relationships
        .iter()
        .filter(|r| r["spdxElementId"] == "SPDXRef-image" && r["relationshipType"] == "CONTAINS")
        .count();
    assert_eq!(contained, paths.len());
    assert_eq!(spdx["packages"][0]["primaryPackagePurpose"], "CONTAINER");

    // Provenance: the manifest is the subject; every store path a dependency.
    let statement = &documents[2];
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        image["digest"].as_str().unwrap()
    );
    let definition = &statement["predicate"]["buildDefinition"];
    assert_eq!(definition["externalParameters"]["format"], "oci");
    assert_eq!(definition["externalParameters"]["maxLayers"], 100);
    let dependencies: Vec<&str> = definition["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(dependencies, sorted);
    let byproducts = statement["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    assert_eq!(
        byproducts.len(),
        manifest["layers"].as_array().unwrap().len()
    );
    assert_eq!(
        format!(
            "sha256:{}",
            byproducts[0]["digest"]["sha256"].as_str().unwrap()
        ),
        manifest["layers"][0]["digest"].as_str().unwrap()
    );
}

#[test]
fn a_docker_archive_carries_the_documents_as_files() {
    let (store, _) = sample();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    store.build(
        &archive,
        &["--sbom", "cyclonedx", "--provenance", "--tag", "1"],
    );
    let manifest = archive_manifest(&archive);
    let config = manifest[0]["Config"].as_str().unwrap();
    let cdx = json_of(&tar_member(&archive, "sbom.cdx.json").unwrap());
    let root = &cdx["metadata"]["component"];
    assert_eq!(
        root["hashes"][0]["content"],
        config.trim_end_matches(".json")
    );
    assert_eq!(
        property(root, "oci:manifest_digest"),
        None,
        "an archive has no manifest digest"
    );
    let statement = json_of(&tar_member(&archive, "provenance.intoto.json").unwrap());
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        config.trim_end_matches(".json"),
        "in an archive the image is named by its config digest"
    );
    assert!(tar_member(&archive, "sbom.spdx.json").is_none());
}

#[test]
fn an_sbom_in_the_image_is_a_file_of_the_customisation_layer() {
    let (store, paths) = sample();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    store.build(&archive, &["--sbom-in-image", "/share/doc/sbom.cdx.json"]);
    let manifest = archive_manifest(&archive);
    let layers = manifest[0]["Layers"].as_array().unwrap();
    let top = tar_member(&archive, layers.last().unwrap().as_str().unwrap()).unwrap();
    let mut found = None;
    for entry in tar::Archive::new(&top[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("share/doc/sbom.cdx.json") {
            let mode = entry.header().mode().unwrap();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            found = Some((mode, content));
        }
    }
    let (mode, content) = found.expect("the SBOM is in the top layer");
    assert_eq!(mode & 0o777, 0o644);
    let cdx = json_of(&content);
    // The closure's SBOM: it cannot name the image it is part of.
    assert_eq!(cdx["metadata"]["component"]["bom-ref"], paths[3].as_str());

    let text = layered_gen_fails(&[
        "--closure",
        store.write_closure().to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "--sbom-in-image",
        "share/../x",
        "-o",
        dir.path().join("bad.tar").to_str().unwrap(),
    ]);
    assert!(
        text.contains("--sbom-in-image") && text.contains("normalised"),
        "{text}"
    );
    assert!(!dir.path().join("bad.tar").exists());
}

#[test]
fn documents_that_cannot_be_written_are_refused_before_the_image() {
    let (store, _) = sample();
    let dir = tempfile::tempdir().unwrap();
    let closure = store.write_closure();
    let common = [
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
    ];
    let out = dir.path().join("image.tar");
    let text = layered_gen_fails(
        &[
            &common[..],
            &["--sbom", "spdx", "--created", "2024-05-01T12:00:00+02:00"],
            &["-o", out.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(text.contains("SPDX") && text.contains("UTC"), "{text}");
    assert!(!out.exists());
    let text =
        layered_gen_fails(&[&common[..], &["--provenance", "-o", "docker-daemon:my/app"]].concat());
    assert!(
        text.contains("--provenance") && text.contains("Docker daemon keeps nothing"),
        "{text}"
    );
}

/// layered-gen pushing the sample store to `registry` with `extra` flags.
fn push(store: &TestStore, registry: &Registry, extra: &[&str]) -> String {
    let destination = format!("docker://{}/my/app:1", registry.address());
    let output = Command::new(bin())
        .arg("--closure")
        .arg(store.write_closure())
        .arg("--store-root")
        .arg(store.root())
        .args(["--no-cache", "--format", "oci", "-o", &destination])
        .args(extra)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", store.root())
        .env("XDG_RUNTIME_DIR", store.root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// The image manifest's digest as the registry holds it under tag 1.
fn pushed_manifest(registry: &Registry) -> String {
    let manifest = registry.manifest("1").expect("the image is tagged");
    sha256(&manifest)
}

#[test]
fn a_registry_with_the_referrers_api_lists_the_artifacts_itself() {
    let (store, _) = sample();
    let registry = Registry::start(Behaviour {
        referrers_api: true,
        ..Behaviour::default()
    });
    push(&store, &registry, &["--sbom", "spdx", "--provenance"]);
    let subject = pushed_manifest(&registry);
    let tag = subject.replace(':', "-");
    assert!(
        registry.manifest(&tag).is_none(),
        "no fallback tag where the registry indexes the subject"
    );
    let artifacts: Vec<Value> = registry
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/sha256:"))
        .map(|r| {
            json_of(
                &registry
                    .manifest(r.path.rsplit('/').next().unwrap())
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(artifacts.len(), 2);
    for artifact in &artifacts {
        assert_eq!(artifact["subject"]["digest"], subject.as_str());
        let layer = &artifact["layers"][0];
        let content = registry.blob(layer["digest"].as_str().unwrap()).unwrap();
        assert_eq!(sha256(&content), layer["digest"].as_str().unwrap());
    }
    assert_eq!(registry.blob(EMPTY).as_deref(), Some(&b"{}"[..]));
}

#[test]
fn a_registry_without_it_gets_the_fallback_tag_which_keeps_what_it_listed() {
    let (store, _) = sample();
    let registry = Registry::start(Behaviour::default());
    push(&store, &registry, &["--sbom", "cyclonedx"]);
    let subject = pushed_manifest(&registry);
    let tag = subject.replace(':', "-");
    let listed = |registry: &Registry| -> Vec<(String, String)> {
        let index = json_of(&registry.manifest(&tag).expect("the fallback tag is there"));
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let artifact = json_of(&registry.manifest(d["digest"].as_str().unwrap()).unwrap());
                assert_eq!(artifact["subject"]["digest"], subject.as_str());
                assert_eq!(d["artifactType"], artifact["artifactType"]);
                (
                    d["artifactType"].as_str().unwrap().to_string(),
                    d["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let first = listed(&registry);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, CYCLONEDX);
    // A second push of the same image with another document adds to the index; the same
    // documents again change nothing.
    push(&store, &registry, &["--sbom", "spdx"]);
    push(&store, &registry, &["--sbom", "spdx"]);
    let second = listed(&registry);
    let kinds: Vec<&str> = second.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, [CYCLONEDX, SPDX]);
    assert_eq!(second[0], first[0]);
}

#[test]
fn a_fallback_tag_holding_something_else_is_left_alone() {
    let (store, _) = sample();
    let registry = Registry::start(Behaviour::default());
    push(&store, &registry, &[]);
    let tag = pushed_manifest(&registry).replace(':', "-");
    let junk = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    registry.set_manifest(&tag, junk, "application/vnd.oci.image.manifest.v1+json");
    let destination = format!("docker://{}/my/app:1", registry.address());
    let text = layered_gen_fails(&[
        "--closure",
        store.write_closure().to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "--no-cache",
        "--format",
        "oci",
        "--sbom",
        "cyclonedx",
        "-o",
        &destination,
    ]);
    assert!(
        text.contains(&tag) && text.contains("left as it is"),
        "{text}"
    );
    assert_eq!(registry.manifest(&tag).as_deref(), Some(&junk[..]));
}

fn skopeo_raw(reference: &str) -> Value {
    let output = run(Command::new(require("skopeo")).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        reference,
    ]));
    json_of(&output.stdout)
}

/// A blob of `repository` on the registry at `port`, by plain HTTP.
fn fetch_blob(port: u16, repository: &str, digest: &str) -> Vec<u8> {
    let url = format!("http://127.0.0.1:{port}/v2/{repository}/blobs/{digest}");
    run(Command::new(require("curl")).args(["-fsSL", &url])).stdout
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, curl, umoci, docker and the SBOM validators: cargo test --features tool-tests (.ci/run)"
)]
fn documents_round_trip_through_a_real_registry_and_pass_their_validators() {
    let (store, _) = sample();
    let registry = crate::common::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let documents = ["--sbom", "cyclonedx", "--sbom", "spdx", "--provenance"];
    // Docker's media types and OCI's: the artifacts' subject is either kind of manifest.
    for (tag, format) in [("docker", "docker-archive"), ("oci", "oci")] {
        let remote = format!("docker://127.0.0.1:{}/test/app:{tag}", registry.port);
        run(Command::new(bin())
            .arg("--closure")
            .arg(store.write_closure())
            .arg("--store-root")
            .arg(store.root())
            .args(["--no-cache", "--format", format, "-o", &remote])
            .args(documents));
        let inspected = run(Command::new(require("skopeo")).args([
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &remote,
        ]));
        let subject = String::from_utf8(inspected.stdout)
            .unwrap()
            .trim()
            .to_string();
        // The distribution registry has no referrers API: the fallback tag lists them.
        let index = skopeo_raw(&format!(
            "docker://127.0.0.1:{}/test/app:{}",
            registry.port,
            subject.replace(':', "-")
        ));
        let listed = index["manifests"].as_array().unwrap();
        let kinds: Vec<&str> = listed
            .iter()
            .map(|d| d["artifactType"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, [CYCLONEDX, SPDX, IN_TOTO], "{tag}");
        for descriptor in listed {
            let artifact = skopeo_raw(&format!(
                "docker://127.0.0.1:{}/test/app@{}",
                registry.port,
                descriptor["digest"].as_str().unwrap()
            ));
            assert_eq!(artifact["subject"]["digest"], subject.as_str(), "{tag}");
            let layer = &artifact["layers"][0];
            let content = fetch_blob(registry.port, "test/app", layer["digest"].as_str().unwrap());
            assert_eq!(sha256(&content), layer["digest"].as_str().unwrap());
            let kind = match descriptor["artifactType"].as_str().unwrap() {
                CYCLONEDX => "cyclonedx",
                SPDX => "spdx",
                _ => {
                    let statement = json_of(&content);
                    assert_eq!(
                        format!(
                            "sha256:{}",
                            statement["subject"][0]["digest"]["sha256"]
                                .as_str()
                                .unwrap()
                        ),
                        subject
                    );
                    continue;
                }
            };
            let file = dir.path().join(format!("{tag}.{kind}.json"));
            fs::write(&file, &content).unwrap();
            let output = crate::sbom::validate(kind, &file);
            assert!(
                output.status.success(),
                "{tag} {kind}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // The image itself is untouched: skopeo copies it.
        let copied = dir.path().join(format!("copied-{tag}"));
        run(Command::new(require("skopeo"))
            .args(["copy", "--src-tls-verify=false"])
            .arg(&remote)
            .arg(format!("oci:{}:{tag}", copied.display())));
    }

    // A docker-archive carrying the documents as files still loads into Docker.
    let archive = dir.path().join("documented.tar");
    store.build(
        &archive,
        &[
            &["--name", "layered-gen-test/documented", "--tag", "1"][..],
            &documents,
        ]
        .concat(),
    );
    assert!(tar_member(&archive, "sbom.cdx.json").is_some());
    run(Command::new(require("docker"))
        .args(["load", "-i"])
        .arg(&archive));
    run(Command::new(require("docker")).args(["image", "rm", "layered-gen-test/documented:1"]));

    // A layout listing artifacts beside the image is still read by skopeo and umoci.
    let layout = dir.path().join("layout");
    store.build(
        &layout,
        &[&["--format", "oci", "--tag", "1"][..], &documents].concat(),
    );
    run(Command::new(require("skopeo"))
        .arg("copy")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!(
            "docker-archive:{}",
            dir.path().join("from-layout.tar").display()
        )));
    run(Command::new(require("umoci"))
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(dir.path().join("bundle")));
    assert!(dir.path().join("bundle/rootfs/nix/store").is_dir());
}
