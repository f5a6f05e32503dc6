//! The red team: pushes the example image again and again to fake registries that misbehave
//! in random combinations (the peers of `tests/it/fake_peers.rs`), and checks what must hold
//! whatever a peer does:
//! - the push ends within a minute (every read has a deadline);
//! - no credential reaches another origin, and none is printed;
//! - a push succeeds exactly when the registry was honest: a lie is never accepted.
//!
//!     cargo run --release --example red_team -- [SECONDS] [SEED]
//!
//! Only 127.0.0.1 and 127.0.0.2 are contacted; each round is bounded in time, the run by
//! SECONDS (default 60). A failing round prints its seed and behaviour and exits 1.

#[allow(dead_code)]
#[path = "../tests/it/fake_peers.rs"]
mod fake_peers;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_peers::{Behaviour, Peer, Registry, Reply, base64};

const USER: &str = "red";
const PASSWORD: &str = "team-secret-9";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(60);
    let mut seed: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/release/layered-gen");
    if !bin.is_file() {
        eprintln!("build the binary first: cargo build --release");
        std::process::exit(2);
    }
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let behaviour = random_behaviour(&mut seed);
        if let Err(why) = round(&bin, &repo, &behaviour) {
            eprintln!("round {rounds} (seed {seed}) failed: {why}\n{behaviour:#?}");
            std::process::exit(1);
        }
        rounds += 1;
    }
    println!("red team: {rounds} rounds, every invariant held");
}

/// Misbehaviours drawn from `seed`'s bits.
fn random_behaviour(seed: &mut u64) -> Behaviour {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let bit = |n: u32| *seed >> n & 1 == 1;
    let (auth, elsewhere) = (bit(0), bit(1));
    Behaviour {
        basic_auth: auth.then(|| (USER.to_string(), PASSWORD.to_string())),
        // Filled in by `round` with a second origin it starts.
        upload_origin: elsewhere.then(String::new),
        redirect_blob_checks_to: bit(2).then(String::new),
        echo_auth_on_upload: bit(3) && bit(4),
        stall_upload_errors: bit(5) && bit(6),
        lie_about_manifest_digest: bit(7) && bit(8),
        lie_about_blob_digest: bit(9) && bit(10),
        forget_manifests: bit(11) && bit(12),
        bearer_realm: (bit(13) && bit(14)).then(String::new),
        referrers_api: bit(15),
    }
}

/// One push against a registry behaving so; the invariant broken, if any.
fn round(bin: &PathBuf, repo: &std::path::Path, behaviour: &Behaviour) -> Result<(), String> {
    let mut behaviour = behaviour.clone();
    let elsewhere = Peer::bind("127.0.0.2");
    let other_origin = elsewhere.origin();
    let mut second: Option<Peer> = Some(elsewhere);
    if behaviour.upload_origin.is_some() {
        behaviour.upload_origin = Some(other_origin.clone());
    }
    if behaviour.redirect_blob_checks_to.is_some() {
        behaviour.redirect_blob_checks_to = Some(other_origin.clone());
    }
    let mut token_log = None;
    if behaviour.bearer_realm.is_some() {
        // A plain-HTTP token server on the other origin: it must never see the password.
        let tokens = second.take().unwrap_or_else(|| Peer::bind("127.0.0.2"));
        behaviour.bearer_realm = Some(format!("{}/token", tokens.origin()));
        token_log = Some(tokens.serve(|_, _| Reply::json(200, r#"{"token":"t"}"#)));
    }
    // With credentials given, a plain-HTTP realm on another host is refused: no honest push.
    let honest = !(behaviour.echo_auth_on_upload
        || behaviour.stall_upload_errors
        || behaviour.lie_about_manifest_digest
        || behaviour.lie_about_blob_digest
        || behaviour.forget_manifests
        || behaviour.bearer_realm.is_some());
    let registry = Registry::start(behaviour.clone());
    if let Some(peer) = second {
        registry.also_serve(peer);
    }
    let tiny = repo.join("examples/tiny");
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .arg("--closure")
        .arg(tiny.join("closure"))
        .arg("--store-root")
        .arg(tiny.join("root"))
        .args(["--no-cache", "--timeout", "2", "-q"])
        // Documents beside the image: the referrers API or the fallback tag, as the registry
        // speaks it.
        .args(["--format", "oci", "--sbom", "cyclonedx"])
        .args(["--creds", &format!("{USER}:{PASSWORD}")])
        .arg("-o")
        .arg(format!("docker://{}/red/team:1", registry.address()))
        .env("HOME", scratch.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Err("the push still ran after 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let basic = base64(format!("{USER}:{PASSWORD}").as_bytes());
    if stderr.contains(PASSWORD) || stderr.contains(&basic) {
        return Err(format!("a secret was printed: {stderr}"));
    }
    for request in registry.requests() {
        if !request.host.starts_with("127.0.0.1") && request.header("authorization").is_some() {
            return Err(format!(
                "{} {} on {} carried credentials",
                request.method, request.path, request.host
            ));
        }
    }
    if let Some(log) = token_log {
        if log
            .lock()
            .map_err(|e| e.to_string())?
            .iter()
            .any(|r| r.header("authorization").is_some())
        {
            return Err("a plain-HTTP token server on another host got the credentials".into());
        }
    }
    match (honest, status.success()) {
        (true, false) => Err(format!("an honest registry's push failed: {stderr}")),
        (false, true) => Err("a misbehaving registry's push succeeded".into()),
        _ => Ok(()),
    }
}
