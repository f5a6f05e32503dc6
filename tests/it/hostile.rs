//! Peers that lie or stall: a registry, a token server and a Docker daemon of our own, on
//! 127.0.0.1 (and 127.0.0.2 as a second origin), each scripted to misbehave one way. Pushes
//! against them must keep the credentials with their origin, print no secret, give up on a
//! stalled peer in time, and refuse answers that do not match what was sent. Needs no tool:
//! the servers are in `fake_peers`, shared with `fuzz/red-team`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_peers::{Behaviour, Peer, Registry, Reply, Request, base64};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pass";

/// layered-gen pushing the sample store to `destination`, with `extra` flags.
fn push_command(store: &TestStore, destination: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command
        .arg("--closure")
        .arg(store.write_closure())
        .arg("--store-root")
        .arg(store.root())
        .args(["--no-cache", "-o", destination])
        .args(extra)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", store.root())
        .env("XDG_RUNTIME_DIR", store.root())
        .stdin(Stdio::null());
    command
}

fn sample() -> TestStore {
    let mut store = TestStore::new();
    store.sample();
    store
}

/// Runs `command`, killing it after `limit`: a stalled peer must not hang the push.
fn run_within(command: &mut Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), started.elapsed());
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "layered-gen still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

/// Every form of the password a careless client could leak.
fn leaked(text: &str) -> Option<&'static str> {
    let basic = base64(format!("{USER}:{PASSWORD}").as_bytes());
    if text.contains(PASSWORD) {
        Some("the password")
    } else if text.contains(&basic) {
        Some("the Basic header")
    } else if text.contains(&base64(PASSWORD.as_bytes())) {
        Some("the password's base64")
    } else {
        None
    }
}

#[test]
fn a_push_to_an_honest_fake_registry_succeeds_and_is_read_back() {
    let registry = Registry::start(Behaviour::default());
    let store = sample();
    let destination = format!("docker://{}/app:1", registry.address());
    let (output, _) = run_within(
        &mut push_command(&store, &destination, &[]),
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let log = registry.requests();
    assert!(
        log.iter()
            .any(|r| r.method == "HEAD" && r.path.contains("/manifests/sha256:")),
        "the manifest is read back by digest: {log:?}"
    );
}

/// An upload `Location` on another origin (127.0.0.2) is followed without the credentials;
/// so is a redirect of a blob check to it. The registry's own origin gets them.
#[test]
fn credentials_stay_with_the_registry_origin() {
    let elsewhere = Peer::bind("127.0.0.2");
    let registry = Registry::start(Behaviour {
        basic_auth: Some((USER.into(), PASSWORD.into())),
        upload_origin: Some(elsewhere.origin()),
        redirect_blob_checks_to: Some(elsewhere.origin()),
        ..Behaviour::default()
    });
    registry.also_serve(elsewhere);
    let store = sample();
    let destination = format!("docker://{}/app:1", registry.address());
    let (output, _) = run_within(
        &mut push_command(&store, &destination, &["--creds", &creds()]),
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let log = registry.requests();
    let other: Vec<&Request> = log
        .iter()
        .filter(|r| r.host.starts_with("127.0.0.2"))
        .collect();
    assert!(
        other.iter().any(|r| r.path.starts_with("/upload/")),
        "the uploads went to the other origin: {log:?}"
    );
    assert!(
        other.iter().any(|r| r.method == "HEAD"),
        "a blob check was redirected there: {log:?}"
    );
    for request in &other {
        assert!(
            request.header("authorization").is_none(),
            "{} {} on 127.0.0.2 carried credentials",
            request.method,
            request.path
        );
    }
    for request in log.iter().filter(|r| r.host.starts_with("127.0.0.1")) {
        assert!(
            request.path == "/v2/" || request.header("authorization").is_some(),
            "{} {} on the registry's origin went without its credentials",
            request.method,
            request.path
        );
    }
}

/// A Bearer realm on another host over plain HTTP gets no credentials: the push stops,
/// naming it, and the token server sees no Authorization.
#[test]
fn a_plain_http_token_server_elsewhere_gets_no_credentials() {
    let tokens = Peer::bind("127.0.0.2");
    let realm = format!("{}/token", tokens.origin());
    let token_log = tokens.serve(|_, _| Reply::json(200, r#"{"token":"t0k3n-value"}"#));
    let registry = Registry::start(Behaviour {
        bearer_realm: Some(realm.clone()),
        ..Behaviour::default()
    });
    let store = sample();
    let destination = format!("docker://{}/app:1", registry.address());
    let (output, _) = run_within(
        &mut push_command(&store, &destination, &["--creds", &creds()]),
        Duration::from_secs(60),
    );
    let text = stderr_of(&output);
    assert!(!output.status.success());
    assert!(
        text.contains(&realm) && text.contains("plain HTTP"),
        "{text}"
    );
    assert!(
        token_log
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "the token server got credentials"
    );
    assert_eq!(leaked(&text), None, "{text}");
}

/// A registry whose error echoes the request's Authorization header and the password: the
/// message is shown with both scrubbed.
#[test]
fn secrets_never_reach_a_message() {
    let registry = Registry::start(Behaviour {
        basic_auth: Some((USER.into(), PASSWORD.into())),
        echo_auth_on_upload: true,
        ..Behaviour::default()
    });
    let store = sample();
    let destination = format!("docker://{}/app:1", registry.address());
    let (output, _) = run_within(
        &mut push_command(&store, &destination, &["--creds", &creds()]),
        Duration::from_secs(60),
    );
    let text = stderr_of(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("DENIED") && text.contains("***"), "{text}");
    assert_eq!(leaked(&text), None, "{text}");
}

/// A token server, and a registry's error, that send their headers and then nothing: the push
/// fails within the idle timeout (`--timeout 2`), naming the host and the phase.
#[test]
fn stalled_peers_fail_the_push_in_time() {
    let tokens = Peer::bind("127.0.0.1");
    let realm = format!("{}/token", tokens.origin());
    tokens.serve(|_, _| Reply::stall(200));
    let registry = Registry::start(Behaviour {
        bearer_realm: Some(realm),
        ..Behaviour::default()
    });
    let store = sample();
    let destination = format!("docker://{}/app:1", registry.address());
    let (output, _) = run_within(
        &mut push_command(&store, &destination, &["--timeout", "2"]),
        Duration::from_secs(60),
    );
    let text = stderr_of(&output);
    assert!(!output.status.success());
    assert!(
        text.contains("no answer in time") && text.contains("127.0.0.1"),
        "{text}"
    );

    let registry = Registry::start(Behaviour {
        stall_upload_errors: true,
        ..Behaviour::default()
    });
    let destination = format!("docker://{}/app:1", registry.address());
    let (output, _) = run_within(
        &mut push_command(&store, &destination, &["--timeout", "2"]),
        Duration::from_secs(60),
    );
    assert!(!output.status.success(), "{}", stderr_of(&output));
}

/// A registry that says it stored another digest than the one sent (a manifest, a blob), or
/// that does not hold the manifest it acknowledged: the push fails, naming it.
#[test]
fn answers_that_do_not_match_what_was_sent_fail_the_push() {
    let store = sample();
    for (behaviour, words) in [
        (
            Behaviour {
                lie_about_manifest_digest: true,
                ..Behaviour::default()
            },
            "putting the manifest",
        ),
        (
            Behaviour {
                lie_about_blob_digest: true,
                ..Behaviour::default()
            },
            "uploading",
        ),
        (
            Behaviour {
                forget_manifests: true,
                ..Behaviour::default()
            },
            "reading back the manifest",
        ),
    ] {
        let registry = Registry::start(behaviour);
        let destination = format!("docker://{}/app:1", registry.address());
        let (output, _) = run_within(
            &mut push_command(&store, &destination, &[]),
            Duration::from_secs(60),
        );
        let text = stderr_of(&output);
        assert!(!output.status.success(), "{words}: {text}");
        assert!(text.contains(words), "{words}: {text}");
    }
}

/// A blob the registry claims to hold, but with another size, is not taken for the layer.
#[test]
fn a_blob_held_with_another_size_is_an_error() {
    let store = sample();
    let registry = Registry::start(Behaviour::default());
    let destination = format!("docker://{}/app:1", registry.address());
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    // The first push fills the cache; the second asks about the layers it knows.
    let mut first = push_command(&store, &destination, &[]);
    first.args(["--cache-dir", &cache_dir]);
    let args: Vec<String> = first
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| a != "--no-cache")
        .collect();
    let (output, _) = run_within(
        Command::new(bin()).args(&args).env("HOME", store.root()),
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    registry.set_lie_about_sizes(true);
    let (output, _) = run_within(
        Command::new(bin()).args(&args).env("HOME", store.root()),
        Duration::from_secs(60),
    );
    let text = stderr_of(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("bytes under that digest"), "{text}");
}

/// A Docker daemon whose answer lists 15 MB of other images: the message stays short.
#[test]
fn a_daemon_answer_is_read_to_a_limit_and_shown_shortened() {
    let daemon = Peer::bind("127.0.0.1");
    let address = daemon.address();
    daemon.serve(|_, _| {
        let line = r#"{"stream":"Loaded image: other/image-with-a-long-name:tag\n"}"#;
        Reply::json(200, &line.repeat(15 << 20 >> 6))
    });
    let store = sample();
    let mut command = push_command(&store, "docker-daemon:app:1", &[]);
    command.env("DOCKER_HOST", format!("tcp://{address}"));
    let (output, _) = run_within(&mut command, Duration::from_secs(60));
    let text = stderr_of(&output);
    assert!(!output.status.success());
    assert!(text.contains("did not report loading app:1"), "{text}");
    assert!(text.len() < 4096, "{} bytes of stderr", text.len());
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A layer-cache entry that names another layer's blob (its digest, diff_id and size) does not
/// make a layout rebuild reuse that blob: the rebuilt image is the one a build without a cache
/// writes.
#[test]
fn a_lying_cache_entry_cannot_make_a_wrong_layout() {
    let store = sample();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let layout = dir.path().join("layout");
    let reference = dir.path().join("reference");
    let build = |out: &std::path::Path, cache_flags: &[&str]| {
        let output = Command::new(bin())
            .arg("--closure")
            .arg(store.write_closure())
            .arg("--store-root")
            .arg(store.root())
            .args(["--format", "oci", "--max-layers", "4", "-q"])
            .args(cache_flags)
            .arg("-o")
            .arg(format!("oci:{}", out.display()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
    };
    let with_cache = ["--cache-dir", cache.to_str().unwrap()];
    build(&layout, &with_cache);
    build(&reference, &["--no-cache"]);
    let entries: Vec<std::path::PathBuf> = std::fs::read_dir(cache.join("layers-v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(entries.len() >= 2, "{entries:?}");
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let (mut lying, other) = (read(&entries[0]), read(&entries[1]));
    for field in ["digest", "diffId", "size"] {
        lying[field] = other[field].clone();
    }
    std::fs::write(&entries[0], lying.to_string()).unwrap();
    build(&layout, &with_cache);
    let manifest = |layout: &std::path::Path| {
        let index = read(&layout.join("index.json"));
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
    };
    assert_eq!(
        String::from_utf8(manifest(&layout)).unwrap(),
        String::from_utf8(manifest(&reference)).unwrap(),
        "the rebuilt layout is the one made without a cache"
    );
}
