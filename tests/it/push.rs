//! Pushing to a real registry (`docker-registry`) and loading into the real Docker daemon:
//! what arrives is what `-o oci:` writes, Docker pulls and runs it, a second push uploads
//! nothing and reads no layer, an update uploads only its changed layers, and TLS with Basic
//! auth works with the test's own CA.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// A store with busybox (to run), the sample paths, and a path large enough (12 MB) that it
/// is streamed to the registry rather than made in memory first.
fn store() -> (TestStore, String) {
    let mut store = TestStore::new();
    let busybox = store.add_busybox();
    add_sample_and_big(&mut store);
    (store, busybox)
}

/// The same without busybox, for tests that need no tools.
fn store_without_tools() -> TestStore {
    let mut store = TestStore::new();
    add_sample_and_big(&mut store);
    store
}

fn add_sample_and_big(store: &mut TestStore) {
    store.sample();
    store.add("big-data-1", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        let mut x = 1u64;
        let bytes: Vec<u8> = (0..12 << 20)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 59) as u8
            })
            .collect();
        fs::write(dir.join("blob.bin"), bytes).unwrap();
    });
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let output = run(Command::new(require("skopeo")).args(args));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs the build to `-o destination` with the store and `extra` flags.
fn push(store: &TestStore, destination: &str, extra: &[&str]) -> std::process::Output {
    run(build_command(store).args(extra).args(["-o", destination]))
}

/// layered-gen on the store's closure (written now), read from the store.
fn build_command(store: &TestStore) -> Command {
    let mut command = Command::new(bin());
    command
        .arg("--closure")
        .arg(store.write_closure())
        .arg("--store-root")
        .arg(store.root());
    command
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, docker, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn pushed_images_equal_the_oci_layout_and_docker_pulls_and_runs_them() {
    let (store, busybox) = store();
    let registry = Registry::start();
    let cache = store.dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let contents = ["--contents", busybox.as_str(), "--cache-dir", cache_arg];

    // OCI media types: the blobs equal what -o oci: writes for the same inputs.
    let remote = format!("docker://127.0.0.1:{}/test/app:oci", registry.port);
    let output = push(
        &store,
        &remote,
        &[&["--format", "oci"][..], &contents].concat(),
    );
    let lines = stderr(&output);
    assert!(
        lines.contains("layer 0 sha256:") && lines.contains(": uploaded "),
        "{lines}"
    );
    let layout = store.dir.path().join("layout");
    push(
        &store,
        &format!("oci:{}:oci", layout.display()),
        &[&["--format", "oci"][..], &contents].concat(),
    );
    let copied = store.dir.path().join("copied");
    run(Command::new(require("skopeo"))
        .args(["copy", "--src-tls-verify=false", "--preserve-digests"])
        .arg(&remote)
        .arg(format!("oci:{}:oci", copied.display())));
    let blobs = |dir: &Path| {
        let mut names: Vec<String> = fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        blobs(&copied),
        blobs(&layout),
        "the pushed blobs are the layout's"
    );
    for blob in blobs(&layout) {
        let path = format!("blobs/sha256/{blob}");
        assert_same_bytes(&copied.join(&path), &layout.join(&path), &path);
    }

    // Docker's media types by default; Docker pulls and runs it.
    let remote = format!("docker://127.0.0.1:{}/test/app:docker", registry.port);
    push(
        &store,
        &remote,
        &[&["--config", &write_config(&store)][..], &contents].concat(),
    );
    let raw = skopeo_json(&["inspect", "--raw", "--tls-verify=false", &remote]);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    let reference = format!("127.0.0.1:{}/test/app:docker", registry.port);
    run(Command::new(require("docker")).args(["pull", &reference]));
    let output = docker_run(&[&reference]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "pushed and pulled\n"
    );
    run(Command::new("docker").args(["rmi", &reference]));
}

fn write_config(store: &TestStore) -> String {
    let path = store.dir.path().join("config.json");
    fs::write(
        &path,
        r#"{"Cmd": ["/bin/sh", "-c", "echo pushed and pulled"]}"#,
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn a_second_push_uploads_and_reads_nothing_and_an_update_only_its_layers() {
    let (mut store, busybox) = store();
    let registry = Registry::start();
    let cache = store.dir.path().join("cache");
    let flags = [
        "--contents",
        busybox.as_str(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--max-layers",
        "20",
    ];
    let remote = format!("docker://127.0.0.1:{}/test/cached:v1", registry.port);
    push(&store, &remote, &flags);
    let first = skopeo_json(&["inspect", "--tls-verify=false", &remote]);
    let layers = first["Layers"].as_array().unwrap().len();
    let uploads = registry.uploads();
    assert!(
        uploads > layers,
        "every layer and the config went up: {uploads}"
    );

    // The store's bytes change under the same store path (which Nix never allows): a push
    // that read the layer would upload a new blob; with the cache it reads nothing.
    let big = store
        .paths
        .iter()
        .find(|(p, _)| p.ends_with("-big-data-1"))
        .unwrap()
        .0
        .clone();
    let file = store.source(&big).join("blob.bin");
    let mut bytes = fs::read(&file).unwrap();
    bytes.iter_mut().for_each(|b| *b = !*b);
    fs::write(&file, &bytes).unwrap();
    let output = push(&store, &remote, &flags);
    assert_eq!(registry.uploads(), uploads, "nothing was uploaded again");
    let lines = stderr(&output);
    assert_eq!(lines.matches("already there").count(), layers, "{lines}");
    let second = skopeo_json(&["inspect", "--tls-verify=false", &remote]);
    assert_eq!(second["Digest"], first["Digest"]);
    // Without the cache the layer is read, and is new.
    let mut no_cache = flags.to_vec();
    no_cache.splice(2..4, ["--no-cache"]);
    push(&store, &remote, &no_cache);
    let third = skopeo_json(&["inspect", "--tls-verify=false", &remote]);
    assert_ne!(third["Digest"], first["Digest"]);

    // A one-package update (on the store as it was): exactly the layers that changed are
    // uploaded (and the config).
    bytes.iter_mut().for_each(|b| *b = !*b);
    fs::write(&file, &bytes).unwrap();
    let before = registry.uploads();
    let old: Vec<serde_json::Value> = first["Layers"].as_array().unwrap().clone();
    store.add("app-extra-1.0", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("new.txt"), "an update\n").unwrap();
    });
    push(&store, &remote, &flags);
    let updated = skopeo_json(&["inspect", "--tls-verify=false", &remote]);
    let new_layers = updated["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !old.contains(l))
        .count();
    assert!(new_layers >= 1);
    assert_eq!(
        registry.uploads() - before,
        new_layers + 1,
        "the changed layers and the config"
    );

    // Another repository of the registry: with --mount-from, the layers the cache knows are
    // mounted, not uploaded (only the config and the customisation layer, made in memory,
    // are asked about and sent).
    let before = registry.uploads();
    let other = format!("docker://127.0.0.1:{}/test/mounted:v1", registry.port);
    let from = format!("127.0.0.1:{}/test/cached", registry.port);
    let mut mounting = flags.to_vec();
    mounting.extend(["--mount-from", from.as_str()]);
    let output = push(&store, &other, &mounting);
    let lines = stderr(&output);
    let store_layers = lines.matches("mounted from test/cached").count();
    assert!(store_layers >= new_layers, "{lines}");
    assert!(registry.uploads() - before <= 2, "{lines}");
    let mounted = skopeo_json(&["inspect", "--tls-verify=false", &other]);
    assert_eq!(mounted["Layers"], updated["Layers"]);

    // A third repository without --mount-from: the cache knows the digests, so each missing
    // blob goes up in one PUT that names it, no PATCH.
    let seen = registry.log().len();
    let third = format!("docker://127.0.0.1:{}/test/third:v1", registry.port);
    push(&store, &third, &flags);
    let log = registry.log()[seen..].to_string();
    assert_eq!(log.matches("\"PATCH /v2/").count(), 0, "{log}");
    assert!(log.matches("\"PUT /v2/test/third/blobs/uploads/").count() > layers);
    let pushed = skopeo_json(&["inspect", "--tls-verify=false", &third]);
    assert_eq!(pushed["Layers"], updated["Layers"]);

    // A cache entry naming a blob that is not the layer's (and that the registry lacks): the
    // PUT naming it is not made; the layer goes up under its real digest.
    let entries: Vec<std::path::PathBuf> = fs::read_dir(cache.join("layers-v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let (largest, _) = entries
        .iter()
        .map(|p| {
            let entry: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
            (p.clone(), entry["size"].as_u64().unwrap())
        })
        .max_by_key(|(_, size)| *size)
        .unwrap();
    let mut entry: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&largest).unwrap()).unwrap();
    entry["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    fs::write(&largest, entry.to_string()).unwrap();
    let fourth = format!("docker://127.0.0.1:{}/test/fourth:v1", registry.port);
    push(&store, &fourth, &flags);
    let pushed = skopeo_json(&["inspect", "--tls-verify=false", &fourth]);
    assert_eq!(pushed["Layers"], updated["Layers"]);
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, openssl, htpasswd: cargo test --features tool-tests (.ci/run)"
)]
fn tls_and_basic_auth_with_the_tests_ca() {
    let (store, busybox) = store();
    let (registry, guard) = Registry::start_guarded();
    let remote = format!("docker://127.0.0.1:{}/test/guarded:v1", registry.port);
    let cert_dir = guard.cert_dir.to_str().unwrap();
    let creds = format!("{}:{}", guard.user, guard.password);
    let empty_home = tempfile::tempdir().unwrap();
    let base = |extra: &[&str]| {
        let mut command = build_command(&store);
        command
            .env("HOME", empty_home.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG")
            .env_remove("LAYERED_GEN_CREDS")
            .args(["--contents", &busybox, "--no-cache"])
            .args(extra)
            .args(["-o", &remote]);
        command
    };
    let fails = |extra: &[&str]| {
        let output = base(extra).output().unwrap();
        assert!(!output.status.success());
        let text = stderr(&output);
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        assert!(!text.contains(&guard.password), "no secret in {text}");
        text
    };
    // The CA is not a system root: verification fails, saying what to do.
    let text = fails(&["--creds", &creds]);
    assert!(text.contains("--cert-dir"), "{text}");
    // No credentials anywhere.
    let text = fails(&["--cert-dir", cert_dir]);
    assert!(
        text.contains("needs credentials") && text.contains("--creds"),
        "{text}"
    );
    // A wrong password.
    let text = fails(&["--cert-dir", cert_dir, "--creds", "pusher:wrong horse"]);
    assert!(text.contains("refused the credentials"), "{text}");
    // Right: from --creds, and from an auth file as podman writes it.
    run(&mut base(&["--cert-dir", cert_dir, "--creds", &creds]));
    // --tls-verify=false takes the unknown CA (and would take plain HTTP).
    run(&mut base(&[
        "--tls-verify=false",
        "--creds",
        &creds,
        "--tag",
        "v3",
    ]));
    let auth = empty_home.path().join("auth.json");
    fs::write(
        &auth,
        format!(
            r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{}"}}}}}}"#,
            registry.port,
            base64_encode(creds.as_bytes())
        ),
    )
    .unwrap();
    run(base(&["--cert-dir", cert_dir, "--tag", "v2"]).env("REGISTRY_AUTH_FILE", &auth));
    // The same file where podman keeps it, and as Docker's config in HOME.
    let runtime = tempfile::tempdir().unwrap();
    fs::create_dir_all(runtime.path().join("containers")).unwrap();
    fs::copy(&auth, runtime.path().join("containers/auth.json")).unwrap();
    run(base(&["--cert-dir", cert_dir]).env("XDG_RUNTIME_DIR", runtime.path()));
    fs::create_dir_all(empty_home.path().join(".docker")).unwrap();
    fs::copy(&auth, empty_home.path().join(".docker/config.json")).unwrap();
    run(&mut base(&["--cert-dir", cert_dir]));
    fs::remove_dir_all(empty_home.path().join(".docker")).unwrap();
    let inspected = skopeo_json(&[
        "inspect",
        "--cert-dir",
        cert_dir,
        "--creds",
        &creds,
        &remote.replace(":v1", ":v2"),
    ]);
    assert_eq!(
        inspected["Name"],
        format!("127.0.0.1:{}/test/guarded", registry.port)
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn docker_daemon_loads_the_image_without_a_file() {
    let (store, busybox) = store();
    let reference = "layered-gen-test/daemon:v1";
    let output = push(
        &store,
        &format!("docker-daemon:{reference}"),
        &["--contents", &busybox, "--config", &write_config(&store)],
    );
    assert!(stderr(&output).contains("to the Docker daemon"));
    let output = docker_run(&[reference]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "pushed and pulled\n"
    );
    // Loading again, when the daemon holds every layer, works as well.
    push(
        &store,
        &format!("docker-daemon:{reference}"),
        &["--contents", &busybox, "--config", &write_config(&store)],
    );
    run(Command::new("docker").args(["rmi", reference]));
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry: cargo test --features tool-tests (.ci/run)"
)]
fn unreachable_registries_and_daemons_fail_in_one_line() {
    let (store, _) = store();
    let closure = store.write_closure();
    let root = store.store_root_arg();
    let port = free_port();
    let common = [
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &root,
        "--no-cache",
    ];
    let text = layered_gen_fails(
        &[
            &common[..],
            &["-o", &format!("docker://127.0.0.1:{port}/a/b")],
        ]
        .concat(),
    );
    assert!(
        text.contains("refused") && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
    let text =
        layered_gen_fails(&[&common[..], &["-o", "docker://no-such-host.invalid/a/b"]].concat());
    assert!(text.contains("no-such-host.invalid"), "{text}");
    // A registry that refuses pushes: its refusal, in one line, and no tag.
    let read_only = Registry::start_read_only();
    let text = layered_gen_fails(
        &[
            &common[..],
            &[
                "--quiet",
                "-o",
                &format!("docker://127.0.0.1:{}/a/b:v1", read_only.port),
            ],
        ]
        .concat(),
    );
    assert!(
        text.contains("HTTP 405") && text.contains("takes no pushes"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    let output = Command::new(bin())
        .args(common)
        .args(["-o", "docker-daemon:a/b"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let text = stderr(&output);
    assert!(!output.status.success());
    assert!(
        text.contains("unix:///nonexistent/docker.sock") && text.contains("is Docker running"),
        "{text}"
    );
}

/// The file transports, without any tool: `oci:`, `oci-archive:` and `docker-archive:` write
/// what they name, and what contradicts a transport is refused.
#[test]
fn file_transports_write_what_they_name() {
    let mut store = TestStore::new();
    store.sample();
    let dir = store.dir.path();
    let layout = dir.join("layout");
    store.build(Path::new(&format!("oci:{}:v3", layout.display())), &[]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v3"
    );
    // An oci-archive whatever the name; a docker-archive naming its image.
    let archive = dir.join("image.oci");
    store.build(
        Path::new(&format!("oci-archive:{}", archive.display())),
        &[],
    );
    assert!(tar_member(&archive, "oci-layout").is_some());
    let docker = dir.join("image.tar");
    store.build(
        Path::new(&format!("docker-archive:{}:my/app:1", docker.display())),
        &[],
    );
    let manifest = archive_manifest(&docker);
    assert_eq!(manifest[0]["RepoTags"][0], "my/app:1");

    let closure = store.write_closure();
    let root = store.store_root_arg();
    let fails = |extra: &[&str]| {
        layered_gen_fails(
            &[
                &[
                    "--closure",
                    closure.to_str().unwrap(),
                    "--store-root",
                    &root,
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    let text = fails(&["--format", "oci", "-o", "docker-archive:x.tar"]);
    assert!(
        text.contains("--format: the -o transport writes docker-archive, not oci"),
        "{text}"
    );
    let text = fails(&["--name", "other", "-o", "docker-daemon:my/app"]);
    assert!(text.contains("--name: -o names the image my/app"), "{text}");
    let text = fails(&["-o", "docker://reg.example/app@sha256:00"]);
    assert!(
        text.contains("-o: ") && text.contains("a digest cannot be"),
        "{text}"
    );
    let text = fails(&["--tag-from-output", "-o", "docker://reg.example/app"]);
    assert!(text.contains("needs an output path"), "{text}");
    let text = fails(&[
        "--mount-from",
        "other.example/base",
        "-o",
        "docker://reg.example/app",
    ]);
    assert!(
        text.contains("--mount-from: ") && text.contains("another registry"),
        "{text}"
    );
    let text = fails(&[
        "--archive-compression",
        "gzip",
        "-o",
        "docker://reg.example/app",
    ]);
    assert!(text.contains("--archive-compression"), "{text}");
    let text = layered_gen_fails(&["merge", "x.tar", "-o", "docker://reg.example/app"]);
    assert!(text.contains("this command writes a file"), "{text}");
}

/// A proxy in front of a registry that cuts the connection of the first `cuts` blob uploads
/// after 2 MiB of their data, as a registry restarting or a network failing would.
fn cutting_proxy(registry_port: u16, cuts: usize) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let left = Arc::new(AtomicUsize::new(cuts));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let left = left.clone();
            std::thread::spawn(move || {
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", registry_port)) else {
                    return;
                };
                let (mut back_from, mut back_to) =
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut back_from, &mut back_to);
                    let _ = back_to.shutdown(Shutdown::Both);
                });
                let mut buffer = vec![0u8; 64 << 10];
                let mut patch_bytes: Option<usize> = None;
                loop {
                    let n = match client.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buffer[..n];
                    if chunk.windows(10).any(|w| w == b"PATCH /v2/") {
                        patch_bytes = Some(0);
                    }
                    if let Some(bytes) = patch_bytes.as_mut() {
                        *bytes += n;
                        if *bytes > 2 << 20
                            && left
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                                    l.checked_sub(1)
                                })
                                .is_ok()
                        {
                            let _ = client.shutdown(Shutdown::Both);
                            let _ = upstream.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                    if upstream.write_all(chunk).is_err() {
                        break;
                    }
                }
                let _ = upstream.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn a_connection_cut_during_an_upload_is_retried_or_leaves_no_tag() {
    let (store, _) = store();
    let registry = Registry::start();
    let direct = |name: &str| format!("docker://127.0.0.1:{}/test/{name}:v1", registry.port);

    // Cut once: the blob starts again and the push succeeds.
    let proxy = cutting_proxy(registry.port, 1);
    let output = push(
        &store,
        &format!("docker://127.0.0.1:{proxy}/test/cut-once:v1"),
        &["--no-cache"],
    );
    assert!(stderr(&output).contains("uploaded"));
    let inspected = skopeo_json(&["inspect", "--tls-verify=false", &direct("cut-once")]);
    assert!(!inspected["Layers"].as_array().unwrap().is_empty());
    run(Command::new(require("skopeo")).args([
        "copy",
        "--src-tls-verify=false",
        &direct("cut-once"),
        &format!("oci:{}:x", store.dir.path().join("check").display()),
    ]));

    // Cut every time: a clear error naming the layer, and no tag.
    let proxy = cutting_proxy(registry.port, usize::MAX);
    let closure = store.write_closure();
    let text = layered_gen_fails(&[
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "--no-cache",
        "--quiet",
        "-o",
        &format!("docker://127.0.0.1:{proxy}/test/cut-always:v1"),
    ]);
    assert!(text.contains("layer ") && text.contains("PATCH"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    let output = Command::new(require("skopeo"))
        .args(["inspect", "--tls-verify=false", &direct("cut-always")])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "no tag points at the incomplete image"
    );
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn base_layers_go_up_as_they_are_and_a_lying_cache_is_caught() {
    let mut base_store = TestStore::new();
    base_store.sample();
    let base = base_store.dir.path().join("base");
    base_store.build(&base, &["--format", "oci", "--compression", "zstd"]);
    let (store, _) = store();
    let registry = Registry::start();
    let cache = store.dir.path().join("cache");
    let remote = format!("docker://127.0.0.1:{}/test/based:v1", registry.port);
    let flags = [
        "--from-image",
        base.to_str().unwrap(),
        "--format",
        "oci",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    push(&store, &remote, &flags);
    let pushed = skopeo_json(&["inspect", "--raw", "--tls-verify=false", &remote]);
    let local = skopeo_json(&["inspect", "--raw", &format!("oci:{}", base.display())]);
    let base_layers = local["layers"].as_array().unwrap();
    assert_eq!(
        &pushed["layers"].as_array().unwrap()[..base_layers.len()],
        &base_layers[..],
        "the base's zstd layers, digests and media types unchanged"
    );
    // Known from the base's manifest, they are only asked about the next time, even without
    // a cache: not read at all (a damaged blob, which reading would refuse, goes unnoticed).
    let blob = base.join("blobs/sha256").join(
        base_layers[0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&blob, &bytes).unwrap();
    let mut no_cache = flags.to_vec();
    no_cache.splice(4..6, ["--no-cache"]);
    let lines = stderr(&push(&store, &remote, &no_cache));
    for (index, layer) in base_layers.iter().enumerate() {
        let digest = layer["digest"].as_str().unwrap();
        let line = format!("layer {index} {}…: already there", &digest[..19]);
        assert!(lines.contains(&line), "{line} in {lines}");
    }

    // A cache entry that lies (another layer's digests) is caught by --verify-cache.
    let entries: Vec<_> = fs::read_dir(cache.join("layers-v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(entries.len() >= 2);
    let first = fs::read_to_string(&entries[0]).unwrap();
    let second: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&entries[1]).unwrap()).unwrap();
    let mut lying: serde_json::Value = serde_json::from_str(&first).unwrap();
    lying["digest"] = second["digest"].clone();
    lying["diffId"] = second["diffId"].clone();
    lying["size"] = second["size"].clone();
    fs::write(&entries[0], lying.to_string()).unwrap();
    let mut verify = flags.to_vec();
    verify.push("--verify-cache");
    let closure = store.write_closure();
    let text = layered_gen_fails(
        &[
            &[
                "--closure",
                closure.to_str().unwrap(),
                "--store-root",
                &store.store_root_arg(),
            ][..],
            &verify,
            &["--quiet", "-o", &remote],
        ]
        .concat(),
    );
    assert!(
        text.contains("--cache-dir: ") && text.contains("the cache entry is wrong"),
        "{text}"
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token server as Docker Hub's: Basic credentials in, a JWT (RS256, signed by openssl with
/// the key whose certificate the registry trusts, sent in `x5c`) granting the asked scopes out.
/// Returns its port; `asked` collects the scopes of each request.
fn token_server(
    dir: &Path,
    user: &'static str,
    password: &'static str,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let key = dir.join("token.key");
    let der = fs::read(dir.join("token.der")).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut authorized = false;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                let expected = format!(
                    "authorization: basic {}",
                    base64_encode(format!("{user}:{password}").as_bytes())
                );
                if line.trim().eq_ignore_ascii_case(&expected) {
                    authorized = true;
                }
            }
            let query = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let scopes: Vec<String> = query
                .split(['?', '&'])
                .filter_map(|p| p.strip_prefix("scope="))
                .map(|s| {
                    s.replace("%3A", ":")
                        .replace("%2F", "/")
                        .replace("%2C", ",")
                })
                .collect();
            asked.lock().unwrap().push(scopes.join(" "));
            if !authorized {
                let _ = stream.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let access: Vec<serde_json::Value> = scopes
                .iter()
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({
                        "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
                    }))
                })
                .collect();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header =
                serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64_encode(&der)]});
            let claims = serde_json::json!({
                "iss": "test-issuer", "sub": user, "aud": "test-registry",
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}"),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                base64_url(header.to_string().as_bytes()),
                base64_url(claims.to_string().as_bytes())
            );
            let mut openssl = Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&key)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            openssl
                .stdin
                .take()
                .unwrap()
                .write_all(signing_input.as_bytes())
                .unwrap();
            let signature = openssl.wait_with_output().unwrap().stdout;
            let body = serde_json::json!({
                "token": format!("{signing_input}.{}", base64_url(&signature))
            })
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, openssl: cargo test --features tool-tests (.ci/run)"
)]
fn bearer_tokens_from_a_token_server() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = require("openssl");
    run(Command::new(&openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=layered-gen test token issuer"])
        .arg("-keyout")
        .arg(dir.path().join("token.key"))
        .arg("-out")
        .arg(dir.path().join("token.crt")));
    run(Command::new(&openssl)
        .args(["x509", "-outform", "der", "-in"])
        .arg(dir.path().join("token.crt"))
        .arg("-out")
        .arg(dir.path().join("token.der")));
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let token_port = token_server(dir.path(), "robot", "t0ken-pass", asked.clone());
    let registry = Registry::start_with(
        Some(&format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            dir.path().join("token.crt").display()
        )),
        false,
    );
    let (store, _) = store();
    let remote = format!("docker://127.0.0.1:{}/test/tok:v1", registry.port);
    let from = format!("127.0.0.1:{}/test/base", registry.port);
    let closure = store.write_closure();
    let root = store.store_root_arg();
    let args = |creds: &'static str| {
        vec![
            "--closure".to_string(),
            closure.display().to_string(),
            "--store-root".into(),
            root.clone(),
            "--no-cache".into(),
            "--quiet".into(),
            "--creds".into(),
            creds.into(),
            "--mount-from".into(),
            from.clone(),
            "-o".into(),
            remote.clone(),
        ]
    };
    let wrong = args("robot:guess");
    let text = layered_gen_fails(&wrong.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        text.contains("refused the credentials") && !text.contains("guess"),
        "{text}"
    );
    let right = args("robot:t0ken-pass");
    run(Command::new(bin()).args(&right));
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .any(|s| s == "repository:test/tok:pull,push repository:test/base:pull"),
        "scopes asked: {:?}",
        asked.lock().unwrap()
    );
    let output = run(Command::new(require("skopeo")).args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        "robot:t0ken-pass",
        &remote,
    ]));
    let inspected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(inspected["RepoTags"][0], "v1");
}

/// The cache serves OCI layout directories too: rebuilding a layout links the blobs of
/// unchanged layers from the layout it replaces (checked by digest) instead of reading the
/// store again; a damaged blob there is made again.
#[test]
fn layout_rebuilds_link_unchanged_layers_from_the_layout_they_replace() {
    let store = store_without_tools();
    let layout = store.dir.path().join("layout");
    let cache = store.dir.path().join("cache");
    let out = format!("oci:{}", layout.display());
    let with_cache = ["--cache-dir", cache.to_str().unwrap(), "--max-layers", "20"];
    store.build(Path::new(&out), &with_cache);
    let index = fs::read(layout.join("index.json")).unwrap();
    let blobs = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<(String, Vec<u8>)> = fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    };
    let first = blobs(&layout);

    // The store's bytes change under the same path: a layer read again would differ.
    let big = store.source(
        &store
            .paths
            .iter()
            .find(|(p, _)| p.ends_with("-big-data-1"))
            .unwrap()
            .0,
    );
    let file = big.join("blob.bin");
    let original = fs::read(&file).unwrap();
    fs::write(&file, original.iter().map(|b| !b).collect::<Vec<u8>>()).unwrap();
    store.build(Path::new(&out), &with_cache);
    assert_eq!(fs::read(layout.join("index.json")).unwrap(), index);
    assert!(
        blobs(&layout) == first,
        "every blob linked from the old layout"
    );

    // A damaged blob in the old layout is not taken: with the store as it was, the layer is
    // made again and the layout is whole.
    fs::write(&file, &original).unwrap();
    let (victim, bytes) = first.iter().max_by_key(|(_, b)| b.len()).unwrap();
    let path = layout.join("blobs/sha256").join(victim);
    let mut damaged = bytes.clone();
    damaged[100] ^= 1;
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::write(&path, damaged).unwrap();
    store.build(Path::new(&out), &with_cache);
    assert!(blobs(&layout) == first, "the damaged blob was made again");

    // Without --cache-dir nothing is linked: the changed store shows.
    fs::write(&file, original.iter().map(|b| !b).collect::<Vec<u8>>()).unwrap();
    store.build(Path::new(&out), &["--max-layers", "20"]);
    assert_ne!(fs::read(layout.join("index.json")).unwrap(), index);
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn concurrent_pushes_share_a_cache() {
    let (store, busybox) = store();
    let registry = Registry::start();
    let cache = store.dir.path().join("cache");
    // Every command is made (and the closure written) before any starts.
    let mut commands: Vec<Command> = ["one", "two", "three"]
        .iter()
        .map(|name| {
            let mut command = build_command(&store);
            command
                .args([
                    "--contents",
                    &busybox,
                    "--cache-dir",
                    cache.to_str().unwrap(),
                ])
                .args(["--max-layers", "20", "--quiet"])
                .arg("-o")
                .arg(format!(
                    "docker://127.0.0.1:{}/test/{name}:v1",
                    registry.port
                ));
            command
        })
        .collect();
    let children: Vec<_> = commands.iter_mut().map(|c| c.spawn().unwrap()).collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let digests: Vec<serde_json::Value> = ["one", "two", "three"]
        .iter()
        .map(|name| {
            let remote = format!("docker://127.0.0.1:{}/test/{name}:v1", registry.port);
            skopeo_json(&["inspect", "--tls-verify=false", &remote])["Digest"].clone()
        })
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    // Every entry they wrote is whole: a fourth push finds every layer known and present.
    let output = push(
        &store,
        &format!("docker://127.0.0.1:{}/test/one:v1", registry.port),
        &[
            "--contents",
            &busybox,
            "--cache-dir",
            cache.to_str().unwrap(),
            "--max-layers",
            "20",
        ],
    );
    let lines = stderr(&output);
    assert!(!lines.contains("uploaded"), "{lines}");
}

/// On a terminal a push shows the progress bar instead of a line per layer, also when the
/// registry holds every layer (which the bar counts as done: `progress` tests that).
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, script (util-linux): cargo test --features tool-tests (.ci/run)"
)]
fn a_push_on_a_terminal_shows_the_bar() {
    let store = store_without_tools();
    let registry = Registry::start();
    let closure = store.write_closure();
    let command = format!(
        "'{}' --closure '{}' --store-root '{}' --no-cache -o docker://127.0.0.1:{}/test/bar:v1",
        bin().display(),
        closure.display(),
        store.root().display(),
        registry.port
    );
    // `script` runs the command with a terminal as its stdout and stderr.
    let on_terminal = || {
        let output = run(Command::new(require("script")).args(["-qec", &command, "/dev/null"]));
        String::from_utf8_lossy(&output.stdout).replace('\r', "\n")
    };
    for pushed in [on_terminal(), on_terminal()] {
        assert!(pushed.contains("ETA"), "{pushed}");
        assert!(
            !pushed.contains("already there") && !pushed.contains(": uploaded"),
            "{pushed}"
        );
        assert!(pushed.contains("layered-gen: wrote "), "{pushed}");
    }
}

/// Layers go up side by side, as many as there are workers: the manifest a registry gets is the
/// same at 1, 2 and 8 threads, for Docker's and OCI's media types, gzip and zstd.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker-registry, skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn pushes_are_the_same_at_any_thread_count() {
    let mut store = store_without_tools();
    for i in 0..12 {
        store.add(&format!("small-{i}"), &[], |file| {
            fs::write(file, format!("small {i}\n").repeat(1000 * i + 1)).unwrap();
        });
    }
    let registry = Registry::start();
    for flags in [
        &["--compression", "gzip"][..],
        &["--format", "oci", "--compression", "zstd"],
    ] {
        let mut manifests = Vec::new();
        for threads in ["1", "2", "8"] {
            let remote = format!(
                "docker://127.0.0.1:{}/test/threads-{threads}-{}:v1",
                registry.port,
                flags.len()
            );
            let mut args = vec!["--no-cache", "--max-layers", "12", "--threads", threads];
            args.extend(flags);
            let output = run(build_command(&store)
                .args(&args)
                .args(["-o", &remote])
                .env_remove("RAYON_NUM_THREADS"));
            assert!(
                stderr(&output).contains(": uploaded "),
                "{}",
                stderr(&output)
            );
            let raw = run(Command::new(require("skopeo")).args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &remote,
            ]));
            manifests.push(raw.stdout);
        }
        assert!(manifests[0] == manifests[1], "{flags:?}: 1 and 2 threads");
        assert!(manifests[0] == manifests[2], "{flags:?}: 1 and 8 threads");
    }
}
