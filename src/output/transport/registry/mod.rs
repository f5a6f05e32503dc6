//! Pushing an image straight from the store to a registry, doing nothing twice.
//!
//! 1. **Look up**: a layer whose digest is known without reading it — a base layer copied as
//!    it is, or a layer the cache knows — is only asked about.
//! 2. **Check**: those digests are asked about with HEAD, several at once.
//! 3. **Mount**: missing ones are mounted from `--mount-from` repositories if the registry can.
//! 4. **Upload** the rest, streaming and side by side (a layer per worker, the largest first;
//!    see `lanes`): each layer is read, compressed and hashed while its bytes go up in one
//!    chunked PATCH; the PUT that closes the upload names the digest. A layer the registry
//!    turns out to hold already costs one upload, not a failure.
//! 5. **Config, then manifest**, once per tag. The manifest goes last, so a failure anywhere
//!    before leaves no tag pointing at an incomplete image.
//! 6. **Attachments** (an SBOM, provenance) as OCI 1.1 artifacts about the manifest, listed
//!    by the referrers API or, where the registry has none, by the fallback tag (see
//!    `image::referrers`).
//!
//! Media types follow `--format`: Docker's v2 schema 2 for docker-archive (what every
//! registry and Docker itself take), OCI's for oci (zstd only there).

pub mod client;
pub mod credentials;
pub mod signatures;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::reference::Repository;
use crate::digest::{BlobInfo, Digest, sha256_digest};
use crate::error::{Error, Result, Setting};
use crate::image_spec::{Descriptor, Index, media_type, to_bytes};
use crate::output::blobs::{self, Layer, Making, Placed, Placement};
use crate::output::destination::Format;
use crate::output::image::manifest::{
    config_media_type, descriptor, image_manifest, index_document, layer_media_type,
};
use crate::output::image::oci::{AS_THEY_ARE, PlatformImage};
use crate::output::image::{
    Attachment, ImageSource, IndexWritten, Naming, Subject, Written, referrers, tags_or_derived,
};
use client::{Client, ConnectOptions, Payload};

/// HEAD requests in flight at once.
const CONNECTIONS: usize = 8;
/// Whole-blob attempts for a streamed upload whose connection failed.
const UPLOAD_ATTEMPTS: u32 = 3;
/// Layers up to this size are compressed into memory first, so that their digest can be
/// asked about before anything is sent.
const SMALL_LAYER: u64 = 8 << 20;
const MAX_ERROR_BODY: u64 = 64 << 10;
/// The largest referrers index read back (the distribution registry takes manifests up to
/// 4 MiB).
const MAX_INDEX: u64 = 4 << 20;

/// How to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    pub connect: ConnectOptions,
    /// `--mount-from`: repositories of the same registry to mount blobs from.
    pub mount_from: Vec<Repository>,
    /// `--sign-key`: sign the image and its attached documents, as cosign does.
    pub sign_key: Option<crate::signature::PrivateKey>,
}

impl PushOptions {
    /// Checks that every `--mount-from` repository is in `registry` (blobs mount only within
    /// one registry).
    pub fn check_mounts(&self, registry: &Repository) -> Result<()> {
        for from in &self.mount_from {
            if from.registry != registry.registry {
                return Err(Error::value(format!(
                    "{} is in another registry than {}: blobs mount only within one",
                    from.full_name(),
                    registry.registry
                ))
                .about(Setting::MountFrom));
            }
        }
        Ok(())
    }
}

/// What happened to one blob.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    AlreadyThere,
    Mounted(String),
    Uploaded { bytes: u64, seconds: f64 },
}

/// Told of each blob as it is placed (from the lanes, in the order they finish).
pub type Report<'a> = dyn Fn(usize, &BlobInfo, &Fate) + Sync + 'a;

/// Pushes the image to `repository`, in `format`'s media types.
pub fn push(
    source: &dyn ImageSource,
    naming: Naming<'_>,
    making: Making<'_>,
    format: Format,
    repository: &Repository,
    push: &PushOptions,
    report: &Report<'_>,
) -> Result<Written> {
    check_media_types(source, making, format)?;
    let client = Client::connect(repository, &push.connect, &push.mount_from)?;
    let pushed = push_blobs(&client, source, making, format, push, report)?;
    let tags = naming.tags_for(&pushed.config_digest);
    for tag in &tags {
        put_manifest(&client, tag, &pushed.manifest, &pushed.manifest_type)?;
    }
    read_back(&client, &pushed.manifest, &pushed.manifest_type)?;
    let name = repository.full_name();
    let subject = descriptor(
        &pushed.manifest_type,
        &sha256_digest(&pushed.manifest),
        pushed.manifest.len() as u64,
    );
    let attachments = source.attachments(&Subject {
        name: &name,
        tags: &tags,
        manifest: Some(&subject),
        config_digest: &pushed.config_digest,
        layers: &pushed.layers,
    })?;
    let artifacts = attach(&client, &attachments, &subject)?;
    if let Some(key) = &push.sign_key {
        signatures::sign(&client, key, &name, &subject.digest)?;
        for artifact in &artifacts {
            signatures::sign(&client, key, &name, &artifact.digest)?;
        }
    }
    Ok(Written {
        name,
        tags,
        config_digest: pushed.config_digest,
        layers: pushed.layers,
    })
}

/// An image whose blobs are in the registry, and its manifest, not yet put.
struct Pushed {
    layers: Vec<BlobInfo>,
    config_digest: Digest,
    manifest: Vec<u8>,
    manifest_type: String,
}

/// Steps 1 to 4 for every layer, then the config; returns the manifest to put.
fn push_blobs(
    client: &Client,
    source: &dyn ImageSource,
    making: Making<'_>,
    format: Format,
    push: &PushOptions,
    report: &Report<'_>,
) -> Result<Pushed> {
    let mut upload = Upload {
        client,
        push,
        report,
        present: Vec::new(),
    };
    // Layers go up side by side: compressing one overlaps sending another.
    let layers: Vec<BlobInfo> = blobs::place_all(source, making, &mut upload)?
        .into_iter()
        .flatten()
        .map(|placed| placed.info)
        .collect();
    let media_types: Vec<&str> = (0..layers.len())
        .map(|i| layer_media_type(format, source.layer(i)?.codec(making.compression), i))
        .collect::<Result<_>>()?;
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = source.config(&diff_ids)?;
    let config_digest = sha256_digest(&config);
    upload_missing(
        client,
        &config_digest,
        &config,
        config_media_type(format),
        "the config",
    )?;
    let manifest = image_manifest(format, &config_digest, config.len(), &layers, &media_types);
    Ok(Pushed {
        manifest: to_bytes(&manifest),
        manifest_type: manifest.media_type.clone().unwrap_or_default(),
        layers,
        config_digest,
    })
}

/// Step 6: the documents about the image, as artifacts whose subject is its manifest. A
/// registry that says it indexed an artifact's subject (`OCI-Subject`) lists it in its
/// referrers API; for one that does not, the artifacts are added to the `sha256-HEX` tag's
/// index (the referrers tag schema), which keeps what it listed already.
fn attach(
    client: &Client,
    attachments: &[Attachment],
    subject: &Descriptor,
) -> Result<Vec<Descriptor>> {
    if attachments.is_empty() {
        return Ok(Vec::new());
    }
    let empty = referrers::empty_config();
    upload_missing(
        client,
        &empty.digest,
        referrers::EMPTY_CONFIG,
        media_type::OCI_EMPTY,
        "the empty config",
    )?;
    let mut unindexed = Vec::new();
    let mut pushed = Vec::new();
    for attachment in attachments {
        let content = &attachment.content;
        let digest = sha256_digest(content);
        let what = format!("the attached {}", attachment.file_name);
        upload_missing(client, &digest, content, &attachment.media_type, &what)?;
        let artifact = referrers::artifact(attachment, subject);
        let answer = put_manifest(
            client,
            &artifact.descriptor.digest,
            &artifact.manifest,
            media_type::OCI_MANIFEST,
        )?;
        pushed.push(artifact.descriptor.clone());
        if answer.header("oci-subject").map(str::trim) != Some(subject.digest.as_str()) {
            unindexed.push(artifact);
        }
    }
    if !unindexed.is_empty() {
        let tag = referrers::fallback_tag(&subject.digest);
        let index = referrers::fallback_index(fallback_index(client, &tag)?, &unindexed);
        put_manifest(client, &tag, &index, media_type::OCI_INDEX)?;
    }
    Ok(pushed)
}

/// The manifest (or index) under `reference`, bounded; None when the registry has none.
fn fetch_manifest(client: &Client, reference: &str, accept: &str) -> Result<Option<Vec<u8>>> {
    let doing = format!("reading the manifest {reference}");
    let mut answer = client.send_with_accept(
        "GET",
        &client.url(&format!("manifests/{reference}")),
        accept,
    )?;
    match answer.status {
        200 => answer
            .bytes(MAX_INDEX)
            .map(Some)
            .map_err(|why| client.error(doing, format!("its manifest: {why}"))),
        404 => Ok(None),
        status => {
            let body = answer.text(MAX_ERROR_BODY);
            Err(client.refused(&doing, status, &body))
        }
    }
}

/// The index the fallback tag holds now, if any: it must be an image index.
fn fallback_index(client: &Client, tag: &str) -> Result<Option<Index>> {
    let Some(body) = fetch_manifest(client, tag, media_type::OCI_INDEX)? else {
        return Ok(None);
    };
    parse_index(&body).map(Some).map_err(|why| {
        client.error(
            format!("reading the referrers index {tag}"),
            format!("{why}; the tag is left as it is and no document was attached by it"),
        )
    })
}

/// An OCI image index, or why `body` is not one.
fn parse_index(body: &[u8]) -> std::result::Result<Index, String> {
    let index: Index =
        serde_json::from_slice(body).map_err(|e| format!("the tag holds no image index ({e})"))?;
    if index.media_type.as_deref() != Some(media_type::OCI_INDEX) {
        return Err(format!(
            "the tag holds a {}, not an OCI image index",
            crate::error::shown(
                index
                    .media_type
                    .as_deref()
                    .unwrap_or("document without a media type")
            )
        ));
    }
    Ok(index)
}

/// Pushes a multi-platform image (`index -o docker://…`): every platform's blobs and its
/// manifest (by digest), then the image index under each tag — the documents `index` writes
/// into a layout, byte for byte.
pub fn push_index(
    images: &[PlatformImage],
    repository: &Repository,
    tags: &[String],
    push: &PushOptions,
    report: &Report<'_>,
) -> Result<IndexWritten> {
    let client = Client::connect(repository, &push.connect, &push.mount_from)?;
    let mut manifests = Vec::with_capacity(images.len());
    for image in images {
        // The layout's documents: OCI media types, blobs as they are.
        let pushed = push_blobs(&client, image, AS_THEY_ARE, Format::Oci, push, report)?;
        let digest = sha256_digest(&pushed.manifest);
        put_manifest(&client, &digest, &pushed.manifest, &pushed.manifest_type)?;
        manifests.push((pushed.manifest, image.platform.clone()));
    }
    let index = index_document(&manifests);
    let digest = sha256_digest(&index);
    let tags = tags_or_derived(tags, &digest);
    for tag in &tags {
        put_manifest(&client, tag, &index, media_type::OCI_INDEX)?;
    }
    read_back(&client, &index, media_type::OCI_INDEX)?;
    Ok(IndexWritten { digest, tags })
}

/// zstd layers need OCI media types: Docker's have none for them.
fn check_media_types(source: &dyn ImageSource, making: Making<'_>, format: Format) -> Result<()> {
    for index in 0..source.layer_count() {
        layer_media_type(
            format,
            source.layer(index)?.codec(making.compression),
            index,
        )?;
    }
    Ok(())
}

/// Layers up to a registry: steps 2 to 4 of the module doc.
struct Upload<'a> {
    client: &'a Client,
    push: &'a PushOptions,
    report: &'a Report<'a>,
    /// Per layer: the registry holds its known digest (step 2).
    present: Vec<bool>,
}

impl Placement for Upload<'_> {
    type Value = Fate;

    /// Step 2: HEAD every known digest, several at once.
    fn look_up(&mut self, known: &[Option<BlobInfo>]) -> Result<()> {
        self.present = check(self.client, known)?;
        Ok(())
    }

    fn place(&self, layer: &Layer<'_>) -> Result<Placed<Fate>> {
        let placed = self.place_layer(layer)?;
        (self.report)(layer.index, &placed.info, &placed.value);
        Ok(placed)
    }
}

impl Upload<'_> {
    /// Steps 3 and 4 for one layer: already there, mounted, or uploaded.
    fn place_layer(&self, layer: &Layer<'_>) -> Result<Placed<Fate>> {
        let client = self.client;
        let index = layer.index;
        let label = format!("layer {index}");
        let unread = |info: &BlobInfo, fate| Placed {
            info: info.clone(),
            value: fate,
            made: false,
        };
        if let Some(known) = &layer.known {
            if self.present.get(index).copied().unwrap_or(false) {
                return Ok(unread(known, Fate::AlreadyThere));
            }
            for from in &self.push.mount_from {
                if mount(client, &known.digest, from)? {
                    return Ok(unread(known, Fate::Mounted(from.path.clone())));
                }
            }
        }
        let started = Instant::now();
        let produce = |out: &mut dyn Write| layer.write_blob(out);
        let info = if layer.source.size() <= SMALL_LAYER {
            // Small layers: made in memory, asked about, sent whole if missing.
            let mut bytes = Vec::new();
            let info = produce(&mut bytes).map_err(|e| e.context(&label))?;
            if layer.known.as_ref() != Some(&info) && exists(client, &info.digest, info.size)? {
                return Ok(Placed {
                    info,
                    value: Fate::AlreadyThere,
                    made: true,
                });
            }
            upload_bytes(
                client,
                &info.digest,
                &bytes,
                "application/octet-stream",
                &label,
            )?;
            info
        } else {
            let known = layer.known.as_ref().map(|k| k.digest.as_str());
            upload_streaming(client, &label, &produce, known)?
        };
        let fate = Fate::Uploaded {
            bytes: info.size,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok(Placed {
            info,
            value: fate,
            made: true,
        })
    }
}

/// Step 2: HEAD every known digest, several at once; which the registry holds.
fn check(client: &Client, known: &[Option<BlobInfo>]) -> Result<Vec<bool>> {
    let digests: Vec<(usize, Digest, u64)> = known
        .iter()
        .enumerate()
        .filter_map(|(i, known)| known.as_ref().map(|k| (i, k.digest.clone(), k.size)))
        .collect();
    let next = AtomicUsize::new(0);
    let found: Vec<Result<Vec<usize>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS.min(digests.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut present = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some((index, digest, size)) = digests.get(at) else {
                            return Ok(present);
                        };
                        if exists(client, digest, *size)? {
                            present.push(*index);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Error::value("a registry check stopped unexpectedly")))
            })
            .collect()
    });
    let mut present = vec![false; known.len()];
    for found in found {
        for index in found? {
            present[index] = true;
        }
    }
    Ok(present)
}

/// Whether the repository holds the blob; one it holds with another size is an error naming
/// it (a registry that answers HEAD for blobs it does not have would make a broken image).
fn exists(client: &Client, digest: &str, size: u64) -> Result<bool> {
    let mut answer = client.send(
        "HEAD",
        &client.url(&format!("blobs/{digest}")),
        Payload::Empty,
    )?;
    match answer.status {
        200..=299 => {
            let held = answer
                .header("content-length")
                .and_then(|l| l.trim().parse::<u64>().ok());
            match held {
                Some(held) if held != size => Err(client.error(
                    format!("checking blob {}", short(digest)),
                    format!(
                        "the registry says it holds {held} bytes under that digest, not {size}"
                    ),
                )),
                _ => Ok(true),
            }
        }
        404 => Ok(false),
        status => {
            let body = answer.text(MAX_ERROR_BODY);
            Err(client.refused(&format!("checking blob {}", short(digest)), status, &body))
        }
    }
}

/// A registry that names what it stored (`Docker-Content-Digest`) must name what was sent.
fn check_stored_digest(
    client: &Client,
    answer: &client::Answer,
    expected: &str,
    doing: &str,
) -> Result<()> {
    match answer.header("docker-content-digest") {
        Some(stored) if stored.trim() != expected => Err(client.error(
            doing.to_string(),
            format!(
                "the registry says it stored {}, not {} that was sent",
                crate::error::shown(stored.trim()),
                short(expected)
            ),
        )),
        _ => Ok(()),
    }
}

/// After the tags: the manifest is read back by its digest (HEAD), and must be what was put.
fn read_back(client: &Client, manifest: &[u8], content_type: &str) -> Result<()> {
    let digest = sha256_digest(manifest);
    let doing = format!("reading back the manifest {}", short(&digest));
    let mut answer = client.send_with_accept(
        "HEAD",
        &client.url(&format!("manifests/{digest}")),
        content_type,
    )?;
    if !(200..300).contains(&answer.status) {
        let body = answer.text(MAX_ERROR_BODY);
        return Err(client.refused(&doing, answer.status, &body));
    }
    check_stored_digest(client, &answer, &digest, &doing)?;
    let size = answer
        .header("content-length")
        .and_then(|l| l.trim().parse::<usize>().ok());
    match size {
        Some(size) if size != manifest.len() => Err(client.error(
            doing,
            format!(
                "the registry holds {size} bytes under that digest, not the {} that were put",
                manifest.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Asks the registry to mount `digest` from `from`; true when it did.
fn mount(client: &Client, digest: &str, from: &Repository) -> Result<bool> {
    let url = client.url(&format!("blobs/uploads/?mount={digest}&from={}", from.path));
    let answer = client.send("POST", &url, Payload::Empty)?;
    match answer.status {
        201 => Ok(true),
        // 202: the registry started an upload instead; it is left to expire.
        _ => Ok(false),
    }
}

/// Opens an upload session; returns where to send the bytes.
fn start_upload(client: &Client, what: &str) -> Result<String> {
    let mut answer = client.send("POST", &client.url("blobs/uploads/"), Payload::Empty)?;
    if answer.status != 202 {
        let body = answer.text(MAX_ERROR_BODY);
        return Err(client.refused(
            &format!("starting the upload of {what}"),
            answer.status,
            &body,
        ));
    }
    answer.location.clone().ok_or_else(|| {
        client.error(
            format!("starting the upload of {what}"),
            "the registry gave no upload location".into(),
        )
    })
}

/// `location` with `digest=` added to its query.
fn with_digest(location: &str, digest: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

/// Uploads `bytes` (whose digest is `digest`) unless the registry holds them already.
fn upload_missing(
    client: &Client,
    digest: &str,
    bytes: &[u8],
    content_type: &str,
    what: &str,
) -> Result<()> {
    if exists(client, digest, bytes.len() as u64)? {
        return Ok(());
    }
    upload_bytes(client, digest, bytes, content_type, what)
}

/// Uploads bytes whose digest is known, in one PUT.
fn upload_bytes(
    client: &Client,
    digest: &str,
    bytes: &[u8],
    content_type: &str,
    what: &str,
) -> Result<()> {
    let location = start_upload(client, what)?;
    let mut answer = client.send(
        "PUT",
        &with_digest(&location, digest),
        Payload::Bytes(bytes, content_type),
    )?;
    let doing = format!("uploading {what} ({})", short(digest));
    if answer.status != 201 {
        let body = answer.text(MAX_ERROR_BODY);
        return Err(client.refused(&doing, answer.status, &body));
    }
    check_stored_digest(client, &answer, digest, &doing)
}

/// Uploads a blob made while it is sent: `produce` writes it into a pipe that the request
/// body reads from. With its digest known beforehand, that is one PUT naming it; otherwise one
/// chunked PATCH, closed by a PUT naming the digest `produce` computed. A connection that fails
/// on the way makes the whole blob start again (a few times); a blob that turns out not to be
/// what was known (a wrong cache entry) goes up again the other way.
fn upload_streaming(
    client: &Client,
    what: &str,
    produce: &dyn Fn(&mut dyn Write) -> Result<BlobInfo>,
    known: Option<&str>,
) -> Result<BlobInfo> {
    let mut attempt = 0;
    let mut known = known;
    loop {
        attempt += 1;
        match upload_once(client, what, produce, known) {
            Ok(info) => return Ok(info),
            Err(Retry::Unknown) => known = None,
            Err(Retry::Yes(_)) if attempt < UPLOAD_ATTEMPTS => {
                std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
            }
            Err(Retry::Yes(error) | Retry::No(error)) => return Err(error),
        }
    }
}

enum Retry {
    Yes(Error),
    No(Error),
    /// The blob is not the one whose digest was known: send it without.
    Unknown,
}

fn upload_once(
    client: &Client,
    what: &str,
    produce: &dyn Fn(&mut dyn Write) -> Result<BlobInfo>,
    known: Option<&str>,
) -> std::result::Result<BlobInfo, Retry> {
    let location = start_upload(client, what).map_err(Retry::Yes)?;
    let (method, url, accepted) = match known {
        Some(digest) => ("PUT", with_digest(&location, digest), 201),
        None => ("PATCH", location, 202),
    };
    let (produced, sent) = crate::pipe::through(produce, |reader| {
        client.send(method, &url, Payload::Stream(reader))
    })
    .map_err(Retry::No)?;
    if let (Some(digest), Ok(info)) = (known, &produced) {
        if info.digest != digest {
            return Err(Retry::Unknown);
        }
    }
    let doing = format!("uploading {what}");
    let (mut patched, info) = match (sent, produced) {
        // The connection failed: that is the cause of any write error too.
        (Err(error), _) => return Err(Retry::Yes(error.context(what))),
        (Ok(mut answer), Err(error)) => {
            // The body ended early; drop the upload so no partial blob lingers.
            if let Some(location) = answer.location.take() {
                let _ = client.send("DELETE", &location, Payload::Empty);
            }
            return Err(Retry::No(error.context(what)));
        }
        (Ok(answer), Ok(_)) if answer.status != accepted => {
            return Err(refusal(client, &doing, answer));
        }
        // One PUT with the digest: done, once the registry names what it stored.
        (Ok(answer), Ok(info)) if known.is_some() => {
            check_stored_digest(client, &answer, &info.digest, &doing).map_err(Retry::No)?;
            return Ok(info);
        }
        (Ok(answer), Ok(info)) => (answer, info),
    };
    let location = patched.location.take().ok_or_else(|| {
        Retry::No(client.error(
            doing.clone(),
            "the registry gave no location after the data".into(),
        ))
    })?;
    let put = client
        .send("PUT", &with_digest(&location, &info.digest), Payload::Empty)
        .map_err(Retry::Yes)?;
    let doing = format!("{doing} ({})", short(&info.digest));
    if put.status != 201 {
        return Err(refusal(client, &doing, put));
    }
    check_stored_digest(client, &put, &info.digest, &doing).map_err(Retry::No)?;
    Ok(info)
}

/// A refusal as an error, retried when the registry was only briefly unwell.
fn refusal(client: &Client, doing: &str, mut answer: client::Answer) -> Retry {
    let body = answer.text(MAX_ERROR_BODY);
    let error = client.refused(doing, answer.status, &body);
    if answer.status == 429 || answer.status >= 500 {
        Retry::Yes(error)
    } else {
        Retry::No(error)
    }
}

/// PUTs the manifest under `tag`; the registry must store it under its digest.
fn put_manifest(
    client: &Client,
    tag: &str,
    bytes: &[u8],
    content_type: &str,
) -> Result<client::Answer> {
    let mut answer = client.send(
        "PUT",
        &client.url(&format!("manifests/{tag}")),
        Payload::Bytes(bytes, content_type),
    )?;
    let doing = format!("putting the manifest as {tag}");
    if answer.status != 201 && answer.status != 200 {
        let body = answer.text(MAX_ERROR_BODY);
        return Err(client.refused(&doing, answer.status, &body));
    }
    check_stored_digest(client, &answer, &sha256_digest(bytes), &doing)?;
    Ok(answer)
}

/// One line of progress: `layer 12 sha256:ab12…: already there`.
pub fn describe_fate(index: usize, info: &BlobInfo, fate: &Fate) -> String {
    let what = match fate {
        Fate::AlreadyThere => "already there".to_string(),
        Fate::Mounted(from) => format!("mounted from {from}"),
        Fate::Uploaded { bytes, seconds } => {
            format!("uploaded {:.1} MB in {seconds:.1} s", *bytes as f64 / 1e6)
        }
    };
    format!("layer {index} {}: {what}", short(&info.digest))
}

/// `sha256:0123456789ab…` for messages.
pub fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 12 => format!("{algorithm}:{}…", &hex[..12]),
        _ => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_added_to_upload_locations() {
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u", "sha256:1"),
            "http://r/v2/a/blobs/uploads/u?digest=sha256:1"
        );
        assert_eq!(
            with_digest("http://r/u?_state=x", "sha256:1"),
            "http://r/u?_state=x&digest=sha256:1"
        );
        assert_eq!(
            short(&format!("sha256:{}", "a".repeat(64))),
            "sha256:aaaaaaaaaaaa…"
        );
    }

    #[test]
    fn docker_manifests_use_docker_media_types() {
        let layer = BlobInfo {
            diff_id: sha256_digest(b"d"),
            digest: sha256_digest(b"l"),
            size: 3,
        };
        let docker = image_manifest(
            Format::DockerArchive,
            "sha256:c",
            10,
            std::slice::from_ref(&layer),
            &[media_type::DOCKER_LAYER_GZIP],
        );
        assert_eq!(
            docker.media_type.as_deref(),
            Some(media_type::DOCKER_MANIFEST)
        );
        assert_eq!(docker.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(docker.layers[0].media_type, media_type::DOCKER_LAYER_GZIP);
        let oci = image_manifest(
            Format::Oci,
            "sha256:c",
            10,
            &[layer],
            &[media_type::OCI_LAYER_GZIP],
        );
        assert_eq!(oci.media_type.as_deref(), Some(media_type::OCI_MANIFEST));
        assert_eq!(oci.config.media_type, media_type::OCI_CONFIG);
    }
}
