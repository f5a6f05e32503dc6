//! Fake peers for hostile-peer tests and the red-team runner (`fuzz/red-team`): a tiny HTTP/1.1
//! server (`Peer`) and on it a registry that speaks enough of the distribution API for a push
//! (`Registry`), each misbehaviour switched on by a `Behaviour` field. Every request is logged
//! with the address it came in on, its headers and its path, so a test can say who got what.
//! Std only: one thread per connection, `Connection: close` on every answer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One request as the peer received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The local address it came in on (`127.0.0.2:PORT` for the second origin).
    pub host: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer, or a stall: headers promising a body that never comes.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stall: bool,
}

impl Reply {
    pub fn empty(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stall: false,
        }
    }

    pub fn json(status: u16, body: &str) -> Self {
        Reply::empty(status)
            .with("Content-Type", "application/json")
            .body(body.as_bytes().to_vec())
    }

    /// Headers with `status`, then nothing.
    pub fn stall(status: u16) -> Self {
        Reply {
            stall: true,
            ..Reply::empty(status)
        }
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

pub type Log = Arc<Mutex<Vec<Request>>>;
type Handler = Arc<dyn Fn(&Request, &[u8]) -> Reply + Send + Sync>;

/// A listener on a free port of `ip`, not yet serving.
pub struct Peer {
    listener: TcpListener,
}

impl Peer {
    pub fn bind(ip: &str) -> Self {
        Peer {
            listener: TcpListener::bind((ip, 0)).unwrap(),
        }
    }

    /// `IP:PORT`.
    pub fn address(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }

    /// `http://IP:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.address())
    }

    /// Serves every connection with `handler`, in the background; returns the log.
    pub fn serve(self, handler: impl Fn(&Request, &[u8]) -> Reply + Send + Sync + 'static) -> Log {
        let log: Log = Arc::default();
        self.serve_into(Arc::new(handler), log.clone());
        log
    }

    fn serve_into(self, handler: Handler, log: Log) {
        let host = self.address();
        std::thread::spawn(move || {
            for stream in self.listener.incoming() {
                let Ok(stream) = stream else { return };
                let (handler, log, host) = (handler.clone(), log.clone(), host.clone());
                std::thread::spawn(move || {
                    let _ = answer(stream, &handler, &log, &host);
                });
            }
        });
    }
}

/// Reads one request, logs it, and writes the handler's reply.
fn answer(stream: TcpStream, handler: &Handler, log: &Log, host: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let request = Request {
        method,
        path,
        headers,
        host: host.to_string(),
    };
    let body = read_body(&mut reader, &request)?;
    log.lock().unwrap().push(request.clone());
    let reply = handler(&request, &body);
    let mut out = stream;
    let mut head = format!("HTTP/1.1 {} Fake\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.stall {
        head.push_str("Content-Length: 100\r\n\r\n");
        out.write_all(head.as_bytes())?;
        out.flush()?;
        // Holds the connection open, saying nothing more.
        std::thread::sleep(Duration::from_secs(300));
        return Ok(());
    }
    if request.method != "HEAD" || !reply.headers.iter().any(|(n, _)| n == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if request.method != "HEAD" {
        out.write_all(&reply.body)?;
    }
    out.flush()
}

fn read_body(reader: &mut impl BufRead, request: &Request) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size =
                usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    }
    let length: usize = request
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    body.resize(length, 0);
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// How the fake registry misbehaves (all off: an honest registry without auth).
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Requires Basic auth with this user and password.
    pub basic_auth: Option<(String, String)>,
    /// Asks for a Bearer token from this realm (and takes any token after it).
    pub bearer_realm: Option<String>,
    /// Upload locations on this origin (a second listener given to `also_serve`).
    pub upload_origin: Option<String>,
    /// Blob checks (HEAD) answered with a redirect to this origin.
    pub redirect_blob_checks_to: Option<String>,
    /// Starting an upload fails with an error that echoes the Authorization header and the
    /// password.
    pub echo_auth_on_upload: bool,
    /// Starting an upload fails with headers and then nothing.
    pub stall_upload_errors: bool,
    /// A manifest PUT names another digest than the manifest's.
    pub lie_about_manifest_digest: bool,
    /// A blob PUT names another digest than the blob's.
    pub lie_about_blob_digest: bool,
    /// Manifests are acknowledged but not kept.
    pub forget_manifests: bool,
    /// Speaks the referrers API (OCI 1.1): a manifest with a `subject` is answered with
    /// `OCI-Subject` and listed at `/v2/NAME/referrers/DIGEST`.
    pub referrers_api: bool,
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, Vec<u8>>,
    uploads: HashMap<String, Vec<u8>>,
    manifests: HashMap<String, (Vec<u8>, String)>,
}

/// A registry on 127.0.0.1 speaking enough of the distribution API for a push.
pub struct Registry {
    address: String,
    log: Log,
    handler: Handler,
    lie_about_sizes: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
}

impl Registry {
    pub fn start(behaviour: Behaviour) -> Self {
        let peer = Peer::bind("127.0.0.1");
        let address = peer.address();
        let lie_about_sizes = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let own = peer.origin();
        let lies = lie_about_sizes.clone();
        let shared = state.clone();
        let handler: Handler = Arc::new(move |request, body| {
            registry(request, body, &behaviour, &shared, &next, &own, &lies)
        });
        let log: Log = Arc::default();
        peer.serve_into(handler.clone(), log.clone());
        Registry {
            address,
            log,
            handler,
            lie_about_sizes,
            state,
        }
    }

    /// The manifest stored under `reference` (a tag or a digest).
    pub fn manifest(&self, reference: &str) -> Option<Vec<u8>> {
        let state = self.state.lock().unwrap();
        state.manifests.get(reference).map(|(m, _)| m.clone())
    }

    /// The blob stored under `digest`.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().blobs.get(digest).cloned()
    }

    /// Replaces the blob under `digest` (a registry whose storage was tampered with).
    pub fn set_blob(&self, digest: &str, body: &[u8]) {
        let mut state = self.state.lock().unwrap();
        state.blobs.insert(digest.to_string(), body.to_vec());
    }

    /// Stores `body` under the tag `reference`, as if pushed.
    pub fn set_manifest(&self, reference: &str, body: &[u8], media_type: &str) {
        let mut state = self.state.lock().unwrap();
        state.manifests.insert(
            reference.to_string(),
            (body.to_vec(), media_type.to_string()),
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Serves `peer` (another origin) with the same registry, logging into the same log.
    pub fn also_serve(&self, peer: Peer) {
        peer.serve_into(self.handler.clone(), self.log.clone());
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Blob checks answer sizes one byte larger than the blobs.
    pub fn set_lie_about_sizes(&self, lie: bool) {
        self.lie_about_sizes.store(lie, Ordering::SeqCst);
    }
}

/// Standard base64, as Basic auth writes it.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn query_value<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    path.split_once('?')?
        .1
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// The registry's answer to one request.
fn registry(
    request: &Request,
    body: &[u8],
    behaviour: &Behaviour,
    state: &Mutex<State>,
    next: &AtomicUsize,
    own: &str,
    lie_about_sizes: &AtomicBool,
) -> Reply {
    let path = request.path.split('?').next().unwrap_or("");
    // Uploads, and the other origin, stand for a storage backend: no auth there.
    let storage = path.starts_with("/upload/");
    if !storage && request.host.starts_with("127.0.0.1") {
        if let Some(refused) = check_auth(request, behaviour) {
            return refused;
        }
    }
    let mut state = state.lock().unwrap();
    match (request.method.as_str(), path) {
        ("GET", "/v2/") => Reply::json(200, "{}"),
        ("HEAD", p) if p.contains("/blobs/sha256:") => {
            if let Some(elsewhere) = &behaviour.redirect_blob_checks_to {
                if request.host.starts_with("127.0.0.1") {
                    return Reply::empty(307).with("Location", &format!("{elsewhere}{p}"));
                }
            }
            let digest = p.rsplit('/').next().unwrap_or("");
            match state.blobs.get(digest) {
                Some(blob) => {
                    let extra = u64::from(lie_about_sizes.load(Ordering::SeqCst));
                    Reply::empty(200)
                        .with("Content-Length", &(blob.len() as u64 + extra).to_string())
                        .with("Docker-Content-Digest", digest)
                }
                None => Reply::empty(404),
            }
        }
        ("POST", p) if p.ends_with("/blobs/uploads/") => {
            if behaviour.stall_upload_errors {
                return Reply::stall(500);
            }
            if behaviour.echo_auth_on_upload {
                let echoed = format!(
                    r#"{{"errors":[{{"code":"DENIED","message":"refused {} (password {})"}}]}}"#,
                    request.header("authorization").unwrap_or(""),
                    behaviour
                        .basic_auth
                        .as_ref()
                        .map_or("", |(_, p)| p.as_str())
                );
                return Reply::json(403, &echoed);
            }
            let id = next.fetch_add(1, Ordering::SeqCst).to_string();
            state.uploads.insert(id.clone(), Vec::new());
            let origin = behaviour.upload_origin.as_deref().unwrap_or(own);
            Reply::empty(202).with("Location", &format!("{origin}/upload/{id}"))
        }
        ("PATCH", p) if storage => {
            let id = p.trim_start_matches("/upload/").to_string();
            match state.uploads.get_mut(&id) {
                Some(upload) => {
                    upload.extend_from_slice(body);
                    Reply::empty(202).with("Location", &format!("{own}/upload/{id}"))
                }
                None => Reply::empty(404),
            }
        }
        ("PUT", p) if storage => {
            let id = p.trim_start_matches("/upload/").to_string();
            let Some(mut upload) = state.uploads.remove(&id) else {
                return Reply::empty(404);
            };
            upload.extend_from_slice(body);
            let digest = sha256(&upload);
            if query_value(&request.path, "digest") != Some(digest.as_str()) {
                return Reply::json(400, r#"{"errors":[{"code":"DIGEST_INVALID"}]}"#);
            }
            state.blobs.insert(digest.clone(), upload);
            let named = if behaviour.lie_about_blob_digest {
                sha256(b"another blob")
            } else {
                digest
            };
            Reply::empty(201).with("Docker-Content-Digest", &named)
        }
        ("PUT", p) if p.contains("/manifests/") => {
            let reference = p.rsplit('/').next().unwrap_or("").to_string();
            let digest = sha256(body);
            let media_type = request.header("content-type").unwrap_or("").to_string();
            if !behaviour.forget_manifests {
                state
                    .manifests
                    .insert(reference, (body.to_vec(), media_type.clone()));
                state
                    .manifests
                    .insert(digest.clone(), (body.to_vec(), media_type));
            }
            let named = if behaviour.lie_about_manifest_digest {
                sha256(b"another manifest")
            } else {
                digest
            };
            let reply = Reply::empty(201).with("Docker-Content-Digest", &named);
            match subject_of(body) {
                Some(subject) if behaviour.referrers_api => reply.with("OCI-Subject", &subject),
                _ => reply,
            }
        }
        ("GET", p) if p.contains("/manifests/") => {
            let reference = p.rsplit('/').next().unwrap_or("");
            match state.manifests.get(reference) {
                Some((manifest, media_type)) => Reply::empty(200)
                    .with("Content-Type", media_type)
                    .with("Docker-Content-Digest", &sha256(manifest))
                    .body(manifest.clone()),
                None => Reply::json(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
            }
        }
        ("GET", p) if p.contains("/referrers/") && behaviour.referrers_api => {
            let subject = p.rsplit('/').next().unwrap_or("");
            let mut listed: Vec<(String, serde_json::Value)> = state
                .manifests
                .iter()
                .filter(|(reference, (body, _))| {
                    reference.starts_with("sha256:") && subject_of(body).as_deref() == Some(subject)
                })
                .map(|(reference, (body, media_type))| {
                    let manifest: serde_json::Value = serde_json::from_slice(body).unwrap();
                    let descriptor = serde_json::json!({
                        "mediaType": media_type,
                        "digest": reference,
                        "size": body.len(),
                        "artifactType": manifest["artifactType"],
                        "annotations": manifest["annotations"],
                    });
                    (reference.clone(), descriptor)
                })
                .collect();
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": listed.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            });
            Reply::empty(200)
                .with("Content-Type", "application/vnd.oci.image.index.v1+json")
                .body(index.to_string().into_bytes())
        }
        ("GET", p) if p.contains("/blobs/sha256:") => {
            let digest = p.rsplit('/').next().unwrap_or("");
            match state.blobs.get(digest) {
                Some(blob) => Reply::empty(200)
                    .with("Docker-Content-Digest", digest)
                    .body(blob.clone()),
                None => Reply::json(404, r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#),
            }
        }
        ("HEAD", p) if p.contains("/manifests/") => {
            let reference = p.rsplit('/').next().unwrap_or("");
            match state.manifests.get(reference) {
                Some((manifest, media_type)) => Reply::empty(200)
                    .with("Content-Length", &manifest.len().to_string())
                    .with("Content-Type", media_type)
                    .with("Docker-Content-Digest", &sha256(manifest)),
                None => Reply::empty(404),
            }
        }
        _ => Reply::json(404, r#"{"errors":[{"code":"UNSUPPORTED"}]}"#),
    }
}

/// The digest of a manifest's `subject`, if it has one.
fn subject_of(manifest: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    value["subject"]["digest"].as_str().map(str::to_string)
}

/// The 401 of a registry that wants auth the request lacks.
fn check_auth(request: &Request, behaviour: &Behaviour) -> Option<Reply> {
    let given = request.header("authorization");
    if let Some((user, password)) = &behaviour.basic_auth {
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        if given != Some(expected.as_str()) {
            return Some(
                Reply::json(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#)
                    .with("WWW-Authenticate", "Basic realm=\"fake\""),
            );
        }
    }
    if let Some(realm) = &behaviour.bearer_realm {
        if !given.is_some_and(|g| g.starts_with("Bearer ")) {
            return Some(
                Reply::json(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).with(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"{realm}\",service=\"fake\""),
                ),
            );
        }
    }
    None
}
