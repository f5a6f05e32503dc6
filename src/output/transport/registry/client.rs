//! A client of one repository in a registry, over the OCI distribution API: which scheme it
//! speaks, how it authenticates, and requests retried when the network or the registry is
//! briefly unwell.
//!
//! - Scheme: HTTPS, verified against the system's roots plus the CA certificates of
//!   `--cert-dir` (`*.crt`; `*.cert` with `*.key` as a client certificate), as skopeo reads
//!   them. Plain HTTP only for a registry on this machine (as Docker allows) or with
//!   `--tls-verify=false`, and only when the registry answers plain HTTP as a registry.
//! - Auth: the `/v2/` ping's `WWW-Authenticate` challenge decides. `Basic` sends the
//!   credentials with every request; `Bearer` trades them (or nothing, for anonymous access)
//!   at the challenge's realm for a token scoped to pull and push this repository (and pull
//!   the `--mount-from` ones), fetched again when it expires.
//! - Origins: credentials belong to the registry's origin (scheme, host and port) and go to
//!   no other. A request to another origin (an upload `Location` elsewhere, a storage
//!   backend) goes without them, and redirects never carry them (stricter than Go's
//!   net/http, which Docker and containers/image rely on: it keeps them for the same host).
//!   A Bearer realm gets them over HTTPS wherever it is (Docker's and containers/image's
//!   token clients send them to the realm the registry names, as Docker Hub's
//!   auth.docker.io needs); over plain HTTP only on the registry's own host when the registry
//!   itself is spoken to over plain HTTP (this machine, or `--tls-verify=false`). A
//!   plain-HTTP realm on another host is refused, naming it.
//! - Deadlines: connecting (15 s), then every read and write of a request (`--timeout`,
//!   default 30 s without a byte), and a total per request whose body is not a stream (four
//!   idle timeouts, at least two minutes). A timeout is not retried, so a stuck peer fails
//!   within the idle timeout, naming the host and the phase.
//! - Secrets: every message a registry or token server sends back is shown shortened and
//!   scrubbed of the password, the token and their base64 forms.
//! - Retries: connection errors, 429 and 5xx are retried with growing pauses; anything else is
//!   an error naming the request and the registry's own words.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use ureq::{Agent, Body, SendBody};

use super::credentials::{Credentials, Sources, lookup};
use crate::error::{Error, ErrorKind, Result, Setting, quoted, shown, shown_path};
use crate::output::transport::reference::Repository;

/// Attempts for a request before its error is final.
const ATTEMPTS: u32 = 5;
/// Most of an error body kept for the message.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Most of a token answer read.
const MAX_TOKEN_BODY: u64 = 1 << 20;
/// Connecting (TCP and TLS handshake) to a registry or token server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The default idle timeout: the longest wait for the next byte, either way.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The least total time a request without a streamed body may take.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach and authenticate with a registry.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// `--creds`: used before any auth file.
    pub creds: Option<Credentials>,
    pub sources: Sources,
    /// `--cert-dir`: CA certificates and a client certificate.
    pub cert_dir: Option<PathBuf>,
    /// `--tls-verify=false`: accept any certificate, and plain HTTP.
    pub insecure: bool,
    /// `--timeout`: the longest wait for the next byte of a request or an answer (None: the
    /// default, [`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Option<Duration>,
}

impl ConnectOptions {
    fn idle_timeout(&self) -> Duration {
        self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)
    }
}

/// A request body: nothing, bytes (replayable), or a stream (sent once, chunked).
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8], &'a str),
    Stream(&'a mut dyn Read),
}

/// The answer to a request.
pub struct Answer {
    pub status: u16,
    /// The `Location` header, resolved against the registry.
    pub location: Option<String>,
    response: Response<Body>,
}

impl Answer {
    /// The body as text, bounded.
    pub fn text(&mut self, limit: u64) -> String {
        self.response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .unwrap_or_default()
    }

    /// The body, refused past `limit` bytes (a document to parse: never cut short).
    pub fn bytes(&mut self, limit: u64) -> std::result::Result<Vec<u8>, String> {
        self.response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => format!("it is larger than {limit} bytes"),
                e => format!("reading it failed: {e}"),
            })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
    }
}

/// A connected client of one repository.
pub struct Client {
    agent: Agent,
    /// `https://host:port` or `http://host:port`.
    base: String,
    repository: Repository,
    /// What the token is asked for.
    scopes: Vec<String>,
    creds: Option<Credentials>,
    /// How requests authenticate, decided by the ping.
    auth: Mutex<Auth>,
}

#[derive(Clone, Debug)]
enum Auth {
    None,
    Basic(String),
    Bearer {
        challenge: Challenge,
        header: Option<String>,
    },
}

/// A request that failed on the network; a timeout is not tried again.
struct Failed {
    error: Error,
    timed_out: bool,
}

/// A parsed `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub realm: Option<String>,
    pub service: Option<String>,
}

impl Client {
    /// Connects to `repository`'s registry: picks the scheme, pings `/v2/` and sets up auth.
    /// `pull_also` are repositories the token must also let us pull (cross-repository mounts).
    pub fn connect(
        repository: &Repository,
        options: &ConnectOptions,
        pull_also: &[Repository],
    ) -> Result<Self> {
        Self::connect_for(repository, options, pull_also, "pull,push")
    }

    /// Connects to read `repository` only (a token for pulling is enough).
    pub fn connect_reading(repository: &Repository, options: &ConnectOptions) -> Result<Self> {
        Self::connect_for(repository, options, &[], "pull")
    }

    fn connect_for(
        repository: &Repository,
        options: &ConnectOptions,
        pull_also: &[Repository],
        actions: &str,
    ) -> Result<Self> {
        let host = repository.api_host().to_string();
        let tls = tls_config(options)?;
        let idle = options.idle_timeout();
        let request_timeout = (idle * 4).max(MIN_REQUEST_TIMEOUT);
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(idle))
            .timeout_per_write(Some(idle))
            .timeout_per_call(Some(request_timeout))
            // Never, not even to the same host: a redirect is followed without credentials.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .user_agent(concat!("layered-gen/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let (base, mut ping) = ping(&agent, &host, repository.is_local() || options.insecure)?;
        let mut scopes = vec![format!("repository:{}:{actions}", repository.path)];
        for other in pull_also {
            scopes.push(format!("repository:{}:pull", other.path));
        }
        let mut client = Client {
            agent,
            base,
            repository: repository.clone(),
            scopes,
            creds: options.creds.clone(),
            auth: Mutex::new(Auth::None),
        };
        match ping.status {
            200..=299 => Ok(client),
            401 => {
                client.authenticate(&ping, &options.sources)?;
                Ok(client)
            }
            status => {
                let body = ping.text(MAX_ERROR_BODY);
                Err(client.refused("reaching the registry (GET /v2/)", status, &body))
            }
        }
    }

    /// Sets up auth as the ping's 401 challenge asks: Basic with the credentials (checked
    /// at once, so a wrong password fails before any upload), or a Bearer token.
    fn authenticate(&mut self, ping: &Answer, sources: &Sources) -> Result<()> {
        let challenge = ping
            .header("www-authenticate")
            .map(parse_challenge)
            .ok_or_else(|| {
                self.error(
                    "reaching the registry (GET /v2/)".into(),
                    "it answered 401 without saying how to authenticate (no WWW-Authenticate)"
                        .into(),
                )
            })?;
        if self.creds.is_none() {
            self.creds = lookup(&self.repository.registry, sources)?;
        }
        let auth = match challenge.scheme.as_str() {
            "basic" => match &self.creds {
                Some(creds) => Auth::Basic(creds.basic()),
                None => return Err(self.needs_credentials()),
            },
            "bearer" => Auth::Bearer {
                header: Some(self.token(&challenge)?),
                challenge,
            },
            other => {
                return Err(self.error(
                    "authenticating".into(),
                    format!(
                        "the registry asks for {} auth, which is not supported (Basic and \
                         Bearer are)",
                        quoted(other)
                    ),
                ));
            }
        };
        let basic = matches!(auth, Auth::Basic(_));
        self.auth = Mutex::new(auth);
        if basic {
            let url = format!("{}/v2/", self.base);
            let mut answer = self.send("GET", &url, Payload::Empty)?;
            if answer.status == 401 {
                return Err(self.wrong_credentials());
            }
            if !(200..300).contains(&answer.status) {
                let body = answer.text(MAX_ERROR_BODY);
                return Err(self.refused("reaching the registry (GET /v2/)", answer.status, &body));
            }
        }
        Ok(())
    }

    /// `BASE/v2/NAME/` followed by `rest`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.repository.path)
    }

    fn current_auth(&self) -> Auth {
        self.auth.lock().map(|a| a.clone()).unwrap_or(Auth::None)
    }

    /// Sends a request, retrying connection errors, 429 and 5xx (replayable payloads only) and
    /// renewing an expired token once.
    pub fn send(&self, method: &str, url: &str, payload: Payload) -> Result<Answer> {
        self.request(method, url, payload, None)
    }

    /// A GET or HEAD asking for `accept` (a manifest's media type).
    pub fn send_with_accept(&self, method: &str, url: &str, accept: &str) -> Result<Answer> {
        self.request(method, url, Payload::Empty, Some(accept))
    }

    fn request(
        &self,
        method: &str,
        url: &str,
        mut payload: Payload,
        accept: Option<&str>,
    ) -> Result<Answer> {
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let replayable = !matches!(payload, Payload::Stream(_));
            let result = self.send_once(method, url, &mut payload, accept);
            let pause = match &result {
                // A peer that stalled once is not waited for again.
                Err(Failed {
                    timed_out: true, ..
                }) => return result.map_err(|f| f.error),
                Err(_) if replayable && attempt < ATTEMPTS => backoff(attempt, None),
                Ok(a) if replayable && attempt < ATTEMPTS && is_transient(a.status) => {
                    backoff(attempt, a.header("retry-after"))
                }
                Ok(a) if a.status == 401 && !renewed && replayable => {
                    if self.renew_token()? {
                        renewed = true;
                        continue;
                    }
                    return result.map_err(|f| f.error);
                }
                _ => return result.map_err(|f| f.error),
            };
            std::thread::sleep(pause);
        }
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        payload: &mut Payload,
        accept: Option<&str>,
    ) -> std::result::Result<Answer, Failed> {
        let auth = match self.current_auth() {
            Auth::None | Auth::Bearer { header: None, .. } => None,
            // Credentials go to the registry's origin only (see the module doc).
            _ if !same_origin(url, &self.base) => None,
            Auth::Basic(header)
            | Auth::Bearer {
                header: Some(header),
                ..
            } => Some(header),
        };
        let auth = auth.as_deref();
        let result = match (method, payload) {
            ("GET", _) => accepting(authorize(self.agent.get(url), auth), accept).call(),
            ("HEAD", _) => accepting(authorize(self.agent.head(url), auth), accept).call(),
            ("DELETE", _) => authorize(self.agent.delete(url), auth).call(),
            (method, payload) => {
                let builder = match method {
                    "POST" => self.agent.post(url),
                    "PATCH" => self.agent.patch(url),
                    _ => self.agent.put(url),
                };
                let builder = authorize(builder, auth);
                match payload {
                    Payload::Empty => builder.header("Content-Length", "0").send_empty(),
                    Payload::Bytes(bytes, content_type) => {
                        builder.header("Content-Type", *content_type).send(*bytes)
                    }
                    // A stream is as long as its layer: bounded by the idle timeout alone.
                    Payload::Stream(reader) => builder
                        .config()
                        .timeout_per_call(None)
                        .build()
                        .header("Content-Type", "application/octet-stream")
                        .send(SendBody::from_reader(*reader)),
                }
            }
        };
        let response = result.map_err(|e| Failed {
            timed_out: matches!(e, ureq::Error::Timeout(_)),
            error: self.network_error(method, url, &e),
        })?;
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| self.resolve(l));
        Ok(Answer {
            status: response.status().as_u16(),
            location,
            response,
        })
    }

    /// A `Location` made absolute.
    fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// Fetches a token for our scopes at the challenge's realm.
    fn token(&self, challenge: &Challenge) -> Result<String> {
        let realm = challenge.realm.as_deref().ok_or_else(|| {
            self.error(
                "authenticating".into(),
                "the registry's Bearer challenge names no realm (token server)".into(),
            )
        })?;
        let mut url = format!("{realm}?");
        if let Some(service) = &challenge.service {
            url.push_str(&format!("service={}&", encode(service)));
        }
        let scopes: Vec<String> = self
            .scopes
            .iter()
            .map(|s| format!("scope={}", encode(s)))
            .collect();
        url.push_str(&scopes.join("&"));
        let mut request = self.agent.get(&url);
        if let Some(creds) = &self.creds {
            if !realm.starts_with("https://") && !plain_http_allowed(realm, &self.base) {
                return Err(self.error(
                    "authenticating".into(),
                    format!(
                        "the registry sends us for a token to {}, another host over plain \
                         HTTP: the credentials are not sent there (a token server elsewhere \
                         must speak HTTPS)",
                        shown(&strip_query(realm))
                    ),
                ));
            }
            request = request.header("Authorization", creds.basic());
        }
        let mut response = request
            .call()
            .map_err(|e| self.network_error("GET", &strip_query(&url), &e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_TOKEN_BODY)
            .read_to_string()
            .map_err(|e| self.network_error("GET", &strip_query(&url), &e))?;
        match status {
            200..=299 => {}
            401 | 403 if self.creds.is_some() => return Err(self.wrong_credentials()),
            401 | 403 => return Err(self.needs_credentials()),
            _ => {
                return Err(self.refused(
                    &format!("asking {} for a token", shown(&strip_query(realm))),
                    status,
                    &body,
                ));
            }
        }
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let token = value
            .get("token")
            .or_else(|| value.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.error(
                    format!("asking {} for a token", shown(&strip_query(realm))),
                    "its answer holds no token".into(),
                )
            })?;
        Ok(format!("Bearer {token}"))
    }

    /// Gets a new token after a 401; false when auth is not by token.
    fn renew_token(&self) -> Result<bool> {
        let Auth::Bearer { challenge, .. } = self.current_auth() else {
            return Ok(false);
        };
        let header = self.token(&challenge)?;
        if let Ok(mut auth) = self.auth.lock() {
            *auth = Auth::Bearer {
                challenge,
                header: Some(header),
            };
        }
        Ok(true)
    }

    /// An error about this registry.
    pub fn error(&self, doing: String, message: String) -> Error {
        Error::new(ErrorKind::Registry {
            registry: self.repository.registry.clone(),
            doing,
            message,
        })
    }

    /// A registry's refusal: the status and its own words (the `errors` of the API),
    /// scrubbed of secrets.
    pub fn refused(&self, doing: &str, status: u16, body: &str) -> Error {
        let words = registry_words(&self.scrub(body));
        let hint = match status {
            401 => "; check the credentials (--creds, or log in with docker login / skopeo login)",
            403 => "; the credentials may not push to this repository",
            405 => "; the registry takes no pushes here (read-only, or a mirror?)",
            404 if doing.contains("manifest") || doing.contains("upload") => {
                "; check the repository name"
            }
            _ => "",
        };
        let message = match words {
            Some(words) => format!("HTTP {status}: {words}{hint}"),
            None => format!("HTTP {status}{hint}"),
        };
        self.error(doing.to_string(), message)
    }

    /// `text` without the secrets we hold: the password, the token, the Basic header and
    /// their base64 forms, each as `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        if let Some(creds) = &self.creds {
            secrets.extend(creds.secret_forms());
        }
        if let Auth::Bearer {
            header: Some(header),
            ..
        } = self.current_auth()
        {
            if let Some(token) = header.strip_prefix("Bearer ") {
                secrets.push(token.to_string());
            }
        }
        scrub(text, &secrets)
    }

    fn needs_credentials(&self) -> Error {
        self.error(
            "authenticating".into(),
            format!(
                "the registry needs credentials and none were found: pass --creds USER:PASSWORD, \
                 or log in (skopeo login / docker login {})",
                self.repository.registry
            ),
        )
        .about(Setting::Creds)
    }

    fn wrong_credentials(&self) -> Error {
        let user = self
            .creds
            .as_ref()
            .map_or(String::new(), |c| format!(" for {}", quoted(&c.username)));
        self.error(
            "authenticating".into(),
            format!("the registry refused the credentials{user}: check the user and password"),
        )
        .about(Setting::Creds)
    }

    fn network_error(&self, method: &str, url: &str, error: &ureq::Error) -> Error {
        self.error(
            format!("{method} {}", shown(&strip_query(url))),
            describe_network_error(error),
        )
    }
}

fn authorize<B>(builder: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(header) => builder.header("Authorization", header),
        None => builder,
    }
}

fn accepting<B>(builder: ureq::RequestBuilder<B>, accept: Option<&str>) -> ureq::RequestBuilder<B> {
    match accept {
        Some(media_type) => builder.header("Accept", media_type),
        None => builder,
    }
}

/// Pings `/v2/` over HTTPS, and over plain HTTP when allowed and HTTPS does not answer;
/// returns the base URL that answered and the answer.
fn ping(agent: &Agent, host: &str, plain_allowed: bool) -> Result<(String, Answer)> {
    let answer = |base: &str| -> std::result::Result<Answer, ureq::Error> {
        let response = agent.get(&format!("{base}/v2/")).call()?;
        Ok(Answer {
            status: response.status().as_u16(),
            location: None,
            response,
        })
    };
    let https = format!("https://{host}");
    let https_error = match answer(&https) {
        Ok(found) => return Ok((https, found)),
        Err(e) => e,
    };
    if plain_allowed {
        let http = format!("http://{host}");
        // A TLS server answers plain HTTP with 400; a registry's /v2/ says 200 or 401.
        if let Ok(found) = answer(&http) {
            if matches!(found.status, 200..=299 | 401) {
                return Ok((http, found));
            }
        }
    }
    let mut message = describe_network_error(&https_error);
    if is_certificate_error(&https_error) {
        message.push_str(
            "; give the registry's CA with --cert-dir DIR (a *.crt file), or --tls-verify=false",
        );
    }
    Err(Error::new(ErrorKind::Registry {
        registry: host.to_string(),
        doing: "connecting (GET /v2/)".into(),
        message,
    }))
}

/// rustls' certificate errors reach us as `Rustls` or wrapped in `Io`: their words tell.
fn is_certificate_error(error: &ureq::Error) -> bool {
    error.to_string().contains("certificate")
}

/// A network error in words, without the URL (which the caller names, query stripped).
fn describe_network_error(error: &ureq::Error) -> String {
    match error {
        ureq::Error::HostNotFound => "the host name does not resolve".into(),
        ureq::Error::ConnectionFailed => "the connection failed".into(),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "the connection was refused (is the registry running, and is the port right?)".into()
        }
        ureq::Error::Timeout(timeout) => format!(
            "no answer in time ({}): the peer stalled; --timeout SECONDS waits longer for each \
             byte",
            describe_timeout(*timeout)
        ),
        ureq::Error::Io(e) => {
            let text = crate::error::plain_io(e);
            if text.contains("certificate") {
                format!("TLS: {text}")
            } else {
                format!("the connection broke: {text}")
            }
        }
        ureq::Error::Rustls(e) => format!("TLS: {e}"),
        other => other.to_string(),
    }
}

/// The phase a request timed out in, in words.
fn describe_timeout(timeout: ureq::Timeout) -> &'static str {
    match timeout {
        ureq::Timeout::Resolve => "resolving the host name",
        ureq::Timeout::Connect => "connecting",
        ureq::Timeout::SendRequest | ureq::Timeout::SendBody => "sending the request",
        ureq::Timeout::Await100 => "waiting to send the body",
        ureq::Timeout::RecvResponse => "waiting for the answer's headers",
        ureq::Timeout::RecvBody => "reading the answer's body",
        ureq::Timeout::Global | ureq::Timeout::PerCall => "the whole request took too long",
        _ => "waiting for the next byte",
    }
}

/// Whether credentials may go over plain HTTP to `url`: only where the registry itself is
/// spoken to over plain HTTP (this machine, or `--tls-verify=false`), and only on its host.
fn plain_http_allowed(url: &str, base: &str) -> bool {
    match (origin(url), origin(base)) {
        (Some((scheme, host, _)), Some((base_scheme, base_host, _))) => {
            scheme == "http" && base_scheme == "http" && host == base_host
        }
        _ => false,
    }
}

/// Whether `url` is on the origin (scheme, host and port) of `base`.
pub fn same_origin(url: &str, base: &str) -> bool {
    match (origin(url), origin(base)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The origin of an absolute http(s) URL: its scheme, lower-cased host and port (the
/// scheme's default when not given).
fn origin(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // user:password@ in a URL is no part of its origin, and never ours to follow.
    if authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (format!("[{host}]"), port)
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.parse().ok()?),
            None => (authority.to_string(), default_port),
        },
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme, host.to_ascii_lowercase(), port))
}

/// `text` with every `secrets` entry (of a few bytes or more) replaced by `***`, longest
/// first so that one holding another goes whole.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut text = text.to_string();
    for secret in secrets {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

fn is_transient(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// The pause before attempt `attempt + 1`: what `Retry-After` asks (up to 30 s), else 0.25 s
/// doubling.
fn backoff(attempt: u32, retry_after: Option<&str>) -> Duration {
    if let Some(seconds) = retry_after.and_then(|s| s.trim().parse::<u64>().ok()) {
        return Duration::from_secs(seconds.min(30));
    }
    Duration::from_millis(250 << attempt.min(6))
}

/// The `errors` of a registry's JSON error body, as `CODE: message` pairs; a body that is
/// not one is shown shortened.
fn registry_words(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(_) => return Some(shown(body)),
    };
    let errors = value.get("errors").and_then(|e| e.as_array())?;
    let words: Vec<String> = errors
        .iter()
        .map(|e| {
            let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
            match (field("code"), field("message")) {
                ("", message) => shown(message),
                (code, "") => shown(code),
                (code, message) => format!("{}: {}", shown(code), shown(message)),
            }
        })
        .collect();
    Some(words.join("; "))
}

/// Parses `Bearer realm="…",service="…",scope="…"` (or `Basic realm="…"`).
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut challenge = Challenge {
        scheme: scheme.to_ascii_lowercase(),
        realm: None,
        service: None,
    };
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        match key.as_str() {
            "realm" => challenge.realm = Some(value.to_string()),
            "service" => challenge.service = Some(value.to_string()),
            _ => {}
        }
        rest = remaining.trim_start_matches([',', ' ']);
    }
    challenge
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A URL without its query, which may hold upload state (and, for tokens, the account).
fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// The TLS settings: system roots and `--cert-dir`'s CAs, its client certificate, or no
/// verification at all with `--tls-verify=false`.
fn tls_config(options: &ConnectOptions) -> Result<TlsConfig> {
    if options.insecure {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }
    let mut roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let mut client = None;
    if let Some(dir) = &options.cert_dir {
        let (cas, client_cert) = read_cert_dir(dir)?;
        roots.extend(cas);
        client = client_cert;
    }
    let mut builder = TlsConfig::builder();
    if !roots.is_empty() {
        builder = builder.root_certs(RootCerts::new_with_certs(&roots));
    }
    Ok(builder.client_cert(client).build())
}

/// `--cert-dir`: every `*.crt` is a CA; `NAME.cert` with `NAME.key` is a client certificate.
fn read_cert_dir(dir: &Path) -> Result<(Vec<Certificate<'static>>, Option<ClientCert>)> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e).about(Setting::CertDir))?;
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let read = |path: &Path| {
        crate::json_file::read_limited(path, 1 << 20).map_err(|e| e.about(Setting::CertDir))
    };
    let bad = |path: &Path, what: &str| {
        Error::input(shown_path(path), format!("not a PEM {what}")).about(Setting::CertDir)
    };
    let mut cas = Vec::new();
    let mut client = None;
    for path in &names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let pem = read(path)?;
                let before = cas.len();
                for item in ureq::tls::parse_pem(&pem) {
                    if let Ok(ureq::tls::PemItem::Certificate(cert)) = item {
                        cas.push(cert);
                    }
                }
                if cas.len() == before {
                    return Err(bad(path, "certificate"));
                }
            }
            Some("cert") => {
                let key_path = path.with_extension("key");
                let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&read(path)?)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                        _ => None,
                    })
                    .collect();
                if chain.is_empty() {
                    return Err(bad(path, "certificate"));
                }
                let key = PrivateKey::from_pem(&read(&key_path)?)
                    .map_err(|_| bad(&key_path, "private key"))?;
                client = Some(ClientCert::new_with_certs(&chain, key));
            }
            _ => {}
        }
    }
    Ok((cas, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        let base = "https://reg.example:5000";
        assert!(same_origin(
            "https://reg.example:5000/v2/a/blobs/uploads/1?x=y",
            base
        ));
        assert!(same_origin("https://REG.example:5000/", base));
        assert!(
            !same_origin("http://reg.example:5000/upload", base),
            "plain HTTP"
        );
        assert!(
            !same_origin("https://reg.example/upload", base),
            "another port"
        );
        assert!(
            !same_origin("https://cdn.example:5000/upload", base),
            "another host"
        );
        assert!(!same_origin("https://reg.example:5000@evil.example/", base));
        assert!(same_origin("https://h/x", "https://h:443"));
        assert!(same_origin("http://[::1]:80/x", "http://[::1]"));
        assert!(plain_http_allowed(
            "http://127.0.0.1:9/token",
            "http://127.0.0.1:5000"
        ));
        assert!(!plain_http_allowed(
            "http://127.0.0.2:9/token",
            "http://127.0.0.1:5000"
        ));
        assert!(!plain_http_allowed(
            "http://reg.example/token",
            "https://reg.example"
        ));
    }

    #[test]
    fn secrets_and_their_base64_are_scrubbed() {
        let creds = Credentials::parse("alice:s3cret-pass").unwrap();
        let text = format!(
            "denied {} for alice:s3cret-pass (s3cret-pass, {})",
            creds.basic(),
            BASE64_OF_PASSWORD
        );
        let scrubbed = scrub(&text, &creds.secret_forms());
        assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
        assert!(!scrubbed.contains(&creds.basic()[6..]), "{scrubbed}");
        assert!(!scrubbed.contains(BASE64_OF_PASSWORD), "{scrubbed}");
        assert!(scrubbed.contains("Basic ***"), "{scrubbed}");
    }

    const BASE64_OF_PASSWORD: &str = "czNjcmV0LXBhc3M=";

    #[test]
    fn challenges_are_parsed() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.realm.as_deref(), Some("https://auth.example/token"));
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        let c = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.realm.as_deref(), Some("Registry Realm"));
        assert_eq!(c.service, None);
        let c = parse_challenge("Bearer realm=https://a/t, service=svc");
        assert_eq!(c.realm.as_deref(), Some("https://a/t"));
        assert_eq!(c.service.as_deref(), Some("svc"));
    }

    #[test]
    fn registry_errors_are_put_in_words() {
        let body = r#"{"errors":[{"code":"NAME_INVALID","message":"invalid repository name","detail":null}]}"#;
        assert_eq!(
            registry_words(body).as_deref(),
            Some("NAME_INVALID: invalid repository name")
        );
        assert_eq!(registry_words("").as_deref(), None);
        assert_eq!(registry_words("oops\n").as_deref(), Some("oops"));
    }

    #[test]
    fn query_values_are_encoded_and_urls_shown_without_queries() {
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(
            strip_query("https://r/v2/a/blobs/uploads/x?_state=secret"),
            "https://r/v2/a/blobs/uploads/x"
        );
    }

    #[test]
    fn pauses_grow_and_honour_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_millis(500));
        assert!(backoff(3, None) > backoff(2, None));
        assert_eq!(backoff(1, Some("2")), Duration::from_secs(2));
        assert_eq!(backoff(1, Some("9999")), Duration::from_secs(30));
        assert!(is_transient(503) && is_transient(429) && !is_transient(404));
    }
}
