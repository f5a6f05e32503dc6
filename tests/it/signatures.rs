//! Signatures as cosign keeps them (`--sign-key`, `layered-gen verify`): the image and its
//! attached documents signed with ECDSA P-256 in `sha256-<hex>.sig` tags; checked by our
//! verify against lying registries and, in the tool tier, by openssl against the payload.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use base64::Engine as _;
use serde_json::Value;

use crate::common::*;
use crate::fake_peers::{Behaviour, Registry, sha256};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE: &str = "dev.cosignproject.cosign/signature";

fn key(name: &str) -> PathBuf {
    repo_root().join("tests/it/keys").join(name)
}

fn sample() -> TestStore {
    let mut store = TestStore::new();
    store.sample();
    store
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Pushes the sample store as `repository:tag`, signed, with an SBOM and provenance.
fn push_signed(store: &TestStore, image: &str, extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("--closure")
        .arg(store.write_closure())
        .arg("--store-root")
        .arg(store.root())
        .args(["--no-cache", "--format", "oci", "--sign-key"])
        .arg(key("p256.pem"))
        .args(["--sbom", "cyclonedx", "--provenance", "-o", image])
        .args(extra)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", store.root())
        .output()
        .unwrap()
}

fn verify(image: &str, public: &str) -> Output {
    Command::new(bin())
        .args(["verify", image, "--key"])
        .arg(key(public))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_signed_push_verifies_and_a_wrong_key_or_a_tampered_registry_does_not() {
    for referrers_api in [false, true] {
        let store = sample();
        let registry = Registry::start(Behaviour {
            referrers_api,
            ..Behaviour::default()
        });
        let image = format!("docker://{}/my/app:1", registry.address());
        let pushed = push_signed(&store, &image, &[]);
        assert!(pushed.status.success(), "{}", text(&pushed));
        let subject = sha256(&registry.manifest("1").unwrap());

        // The signature image, as cosign writes it.
        let tag = format!("{}.sig", subject.replace(':', "-"));
        let signatures = json_of(&registry.manifest(&tag).expect("the .sig tag"));
        let layers = signatures["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], SIMPLE_SIGNING);
        assert!(layers[0]["annotations"][SIGNATURE].is_string());
        let payload = registry
            .blob(layers[0]["digest"].as_str().unwrap())
            .unwrap();
        let payload = json_of(&payload);
        assert_eq!(
            payload["critical"]["image"]["docker-manifest-digest"],
            subject.as_str()
        );
        assert_eq!(
            payload["critical"]["identity"]["docker-reference"],
            format!("{}/my/app", registry.address())
        );
        let config = json_of(
            &registry
                .blob(signatures["config"]["digest"].as_str().unwrap())
                .unwrap(),
        );
        assert_eq!(config["rootfs"]["diff_ids"][0], layers[0]["digest"]);

        // Signing the same image again adds nothing: the signature is deterministic.
        let again = push_signed(&store, &image, &[]);
        assert!(again.status.success(), "{}", text(&again));
        let signatures = json_of(&registry.manifest(&tag).unwrap());
        assert_eq!(signatures["layers"].as_array().unwrap().len(), 1);

        let good = verify(&image, "p256.pub");
        let said = text(&good);
        assert!(good.status.success(), "{said}");
        assert!(said.contains(&subject), "{said}");
        assert_eq!(
            said.matches("intact, about the image, signed").count(),
            2,
            "{said}"
        );

        let wrong = verify(&image, "other.pub");
        assert!(!wrong.status.success());
        assert!(text(&wrong).contains("not by this key"), "{}", text(&wrong));

        // Another image's signature copied under this image's tag names another manifest.
        let other = push_signed(
            &store,
            &format!("docker://{}/my/app:2", registry.address()),
            &["--env", "X=1"],
        );
        assert!(other.status.success(), "{}", text(&other));
        let other_subject = sha256(&registry.manifest("2").unwrap());
        let other_tag = format!("{}.sig", other_subject.replace(':', "-"));
        let own = registry.manifest(&tag).unwrap();
        registry.set_manifest(
            &tag,
            &registry.manifest(&other_tag).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
        );
        let swapped = verify(&image, "p256.pub");
        assert!(!swapped.status.success());
        assert!(
            text(&swapped).contains(&format!("it signs the manifest {other_subject}")),
            "{}",
            text(&swapped)
        );
        registry.set_manifest(&tag, &own, "application/vnd.oci.image.manifest.v1+json");

        // A document changed in the registry's storage is caught.
        let artifact_digests: Vec<String> = registry
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.contains("/manifests/sha256:"))
            .map(|r| r.path.rsplit('/').next().unwrap().to_string())
            .collect();
        let artifact = json_of(&registry.manifest(&artifact_digests[0]).unwrap());
        let document = artifact["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        registry.set_blob(
            &document,
            b"{\"bomFormat\":\"CycloneDX\",\"components\":[]}",
        );
        let tampered = verify(&image, "p256.pub");
        assert!(!tampered.status.success());
        assert!(
            text(&tampered).contains("is not what the registry holds"),
            "{}",
            text(&tampered)
        );
    }
}

#[test]
fn keys_that_are_not_unencrypted_p256_pkcs8_are_refused_saying_what_to_give() {
    let store = sample();
    let registry = Registry::start(Behaviour::default());
    let image = format!("docker://{}/my/app:1", registry.address());
    let sign_with = |name: &str| {
        let output = Command::new(bin())
            .arg("--closure")
            .arg(store.write_closure())
            .arg("--store-root")
            .arg(store.root())
            .args(["--no-cache", "--sign-key"])
            .arg(key(name))
            .args(["-o", &image])
            .env_remove("REGISTRY_AUTH_FILE")
            .env("HOME", store.root())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name} was taken");
        text(&output)
    };
    for (name, says) in [
        ("p384.pem", "not an ECDSA P-256 key"),
        ("rsa.pem", "not an ECDSA P-256 key"),
        ("encrypted.pem", "openssl pkcs8 -topk8 -nocrypt"),
        ("sec1.pem", "SEC1"),
        ("p256.pub", "not a private key"),
    ] {
        let said = sign_with(name);
        assert!(
            said.contains("--sign-key") && said.contains(says),
            "{name}: {said}"
        );
    }
    assert!(
        registry.requests().is_empty(),
        "nothing is pushed with a refused key"
    );
    let said = layered_gen_fails(&[
        "--closure",
        store.write_closure().to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "--sign-key",
        key("p256.pem").to_str().unwrap(),
        "-o",
        store.dir.path().join("image.tar").to_str().unwrap(),
    ]);
    assert!(said.contains("sign a push"), "{said}");
    let output = verify(&image, "p256.pem");
    assert!(!output.status.success());
    assert!(
        text(&output).contains("--key") && text(&output).contains("public half"),
        "{}",
        text(&output)
    );
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, curl, openssl: cargo test --features tool-tests (.ci/run)"
)]
fn openssl_verifies_the_signature_a_real_registry_holds() {
    let store = sample();
    let registry = crate::common::Registry::start();
    let image = format!("docker://127.0.0.1:{}/test/app:1", registry.port);
    let pushed = push_signed(&store, &image, &[]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let digest = run(Command::new(require("skopeo")).args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &image,
    ]));
    let digest = String::from_utf8(digest.stdout).unwrap().trim().to_string();
    let signatures = run(Command::new(require("skopeo")).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!(
            "docker://127.0.0.1:{}/test/app:{}.sig",
            registry.port,
            digest.replace(':', "-")
        ),
    ]));
    let signatures = json_of(&signatures.stdout);
    let layer = &signatures["layers"][0];
    let url = format!(
        "http://127.0.0.1:{}/v2/test/app/blobs/{}",
        registry.port,
        layer["digest"].as_str().unwrap()
    );
    let payload = run(Command::new(require("curl")).args(["-fsSL", &url])).stdout;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("payload.json"), &payload).unwrap();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(layer["annotations"][SIGNATURE].as_str().unwrap())
        .unwrap();
    fs::write(dir.path().join("signature.der"), signature).unwrap();
    let checked = run(Command::new(require("openssl"))
        .args(["dgst", "-sha256", "-verify"])
        .arg(key("p256.pub"))
        .arg("-signature")
        .arg(dir.path().join("signature.der"))
        .arg(dir.path().join("payload.json")));
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout).trim(),
        "Verified OK"
    );
    // openssl refuses it with another key: the check can fail.
    let refused = Command::new(require("openssl"))
        .args(["dgst", "-sha256", "-verify"])
        .arg(key("other.pub"))
        .arg("-signature")
        .arg(dir.path().join("signature.der"))
        .arg(dir.path().join("payload.json"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(
        json_of(&payload)["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    let verified = verify(&image, "p256.pub");
    assert!(verified.status.success(), "{}", text(&verified));
}
