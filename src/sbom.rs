//! A bill of materials from the closure: one component per store path, in CycloneDX 1.5 JSON
//! or SPDX 2.3 JSON. A Nix closure is an exact inventory (every path, its narHash, its
//! references), so nothing here is guessed from file contents:
//!
//! - **Name and version** come from the store path's name as `builtins.parseDrvName` splits
//!   it: at the first `-` followed by a character that is not a letter (`hello-2.12.1` is
//!   `hello` 2.12.1, `xz-utils-5.4` is `xz-utils` 5.4). A name with no such `-` has no
//!   version, and the component has none (nothing is guessed).
//! - **Package URL**: `pkg:nix/NAME@VERSION`, percent-encoded as the purl spec asks.
//! - **Hash**: the narHash (Nix's base-32, SRI base64 or hex), as SHA-256 hex.
//! - **Dependencies**: the references, self-references left out.
//! - **Root**: the closure's one root, when it has one, is the document's subject (CycloneDX
//!   `metadata.component`, SPDX `DESCRIBES`); with several roots each is described.
//!
//! The document is deterministic: components in store-path order, the time is `--created`'s,
//! and the serial number (SPDX: the namespace) is derived from the rest of the document.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::closure::ClosureGraph;
use crate::digest::hex;
use crate::error::{Error, Result, shown};

/// The SBOM formats written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SbomFormat {
    /// CycloneDX 1.5 JSON.
    Cyclonedx,
    /// SPDX 2.3 JSON.
    Spdx,
}

impl SbomFormat {
    /// The media type of the document (an OCI artifact's `artifactType`).
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Cyclonedx => "application/vnd.cyclonedx+json",
            SbomFormat::Spdx => "application/spdx+json",
        }
    }

    /// The document's file name beside an image (a docker-archive member, an artifact's title).
    pub fn file_name(self) -> &'static str {
        match self {
            SbomFormat::Cyclonedx => "sbom.cdx.json",
            SbomFormat::Spdx => "sbom.spdx.json",
        }
    }

    /// Checks beforehand what would stop the document being written once the image is.
    pub fn check(self, created: &str) -> Result<()> {
        match self {
            SbomFormat::Cyclonedx => Ok(()),
            SbomFormat::Spdx => spdx_time(created).map(|_| ()),
        }
    }
}

/// What describes the document and its maker.
#[derive(Clone, Debug)]
pub struct SbomOptions {
    /// The document's time, RFC 3339 (see `config::parse_created`).
    pub created: String,
    /// The image the closure went into, when the document goes with one.
    pub image: Option<ImageFacts>,
    /// What the packages' `meta` says, by store path (`--sbom-meta`).
    pub meta: PackageMetas,
}

/// `meta` of the packages, by store path.
pub type PackageMetas = std::collections::HashMap<String, PackageMeta>;

/// What a package's Nix `meta` says that a bill of materials carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageMeta {
    pub path: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub licenses: Vec<License>,
}

/// One of `meta.license`: its SPDX id where it has one, its full name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct License {
    #[serde(default)]
    pub spdx_id: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
}

impl License {
    /// The SPDX id, when it is one (letters, digits, `.`, `-`, `+`): anything else is only
    /// a name.
    fn spdx(&self) -> Option<&str> {
        self.spdx_id.as_deref().filter(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
        })
    }

    fn name(&self) -> &str {
        self.full_name
            .as_deref()
            .or(self.spdx_id.as_deref())
            .unwrap_or("unknown")
    }
}

/// The largest `--sbom-meta` file read.
const MAX_META_FILE: u64 = 64 << 20;

/// Reads `--sbom-meta`: a JSON list of `{"path", "description", "homepage", "licenses":
/// [{"spdxId", "fullName"}]}` (what nix/ writes from the packages' `meta`).
pub fn read_meta(path: &std::path::Path) -> Result<PackageMetas> {
    let list: Vec<PackageMeta> = crate::json_file::read_typed_limited(path, MAX_META_FILE)
        .map_err(|e| e.about(crate::error::Setting::SbomMeta))?;
    Ok(list.into_iter().map(|m| (m.path.clone(), m)).collect())
}

/// An image as its SBOM names it: the root component, holding the closure's paths.
#[derive(Clone, Debug, Default)]
pub struct ImageFacts {
    /// `registry/name` or the archive's name.
    pub name: String,
    /// The main tag.
    pub tag: String,
    /// Its config's digest (Docker's image id), `sha256:…`.
    pub config_digest: String,
    /// Its manifest's digest, where the image has a manifest (a layout, a registry).
    pub manifest_digest: Option<String>,
    /// Store path → the layer holding it: its position in the image and its diff_id.
    pub layer_of: std::collections::HashMap<String, (usize, String)>,
}

/// One store path as a component.
#[derive(Debug, PartialEq, Eq)]
struct Component {
    store_path: String,
    name: String,
    version: Option<String>,
    /// The narHash as SHA-256 hex, when the closure has it.
    sha256: Option<String>,
    nar_size: Option<u64>,
    deriver: Option<String>,
    meta: Option<PackageMeta>,
    /// The image layer holding it: position and diff_id.
    layer: Option<(usize, String)>,
    /// Indices into the component list.
    depends_on: Vec<usize>,
}

/// The SBOM of `graph` in `format`, as pretty JSON.
pub fn write(graph: &ClosureGraph, format: SbomFormat, options: &SbomOptions) -> Result<String> {
    let (components, roots) = components(graph, options.image.as_ref(), &options.meta)?;
    let document = match format {
        SbomFormat::Cyclonedx => cyclonedx(&components, &roots, options),
        SbomFormat::Spdx => spdx(&components, &roots, options)?,
    };
    serde_json::to_string_pretty(&document)
        .map_err(|e| Error::value(format!("the SBOM does not serialise: {e}")))
}

/// The components in store-path order (the graph's index order is its input's), and the
/// positions of the closure's roots among them, in that order.
fn components(
    graph: &ClosureGraph,
    image: Option<&ImageFacts>,
    meta: &PackageMetas,
) -> Result<(Vec<Component>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..graph.len()).collect();
    order.sort_by(|&a, &b| graph.path(a).cmp(graph.path(b)));
    let mut position = vec![0; graph.len()];
    for (at, &index) in order.iter().enumerate() {
        position[index] = at;
    }
    let components = order
        .iter()
        .map(|&index| {
            let store_path = graph.path(index).to_string();
            let (name, version) = parse_drv_name(store_name(&store_path));
            let sha256 = nar_sha256(graph, index)?;
            let mut depends_on: Vec<usize> = graph
                .references(index)
                .iter()
                .filter(|&&r| r != index)
                .map(|&r| position[r])
                .collect();
            depends_on.sort_unstable();
            depends_on.dedup();
            Ok(Component {
                name: name.to_string(),
                version: version.map(str::to_string),
                sha256,
                nar_size: graph.nar_size(index),
                deriver: graph.deriver(index).map(str::to_string),
                meta: meta.get(graph.path(index)).cloned(),
                layer: image.and_then(|i| i.layer_of.get(graph.path(index)).cloned()),
                store_path,
                depends_on,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut roots: Vec<usize> = graph.roots().into_iter().map(|r| position[r]).collect();
    roots.sort_unstable();
    Ok((components, roots))
}

/// The narHash of path `index` as SHA-256 hex, when the closure gives one; a hash that is
/// not SHA-256 in a spelling Nix writes is an error naming the path.
pub fn nar_sha256(graph: &ClosureGraph, index: usize) -> Result<Option<String>> {
    let Some(hash) = graph.nar_hash(index) else {
        return Ok(None);
    };
    nar_hash_hex(hash).map(Some).map_err(|why| {
        Error::value(format!(
            "the narHash of {} ({}) {why}",
            shown(graph.path(index)),
            shown(hash)
        ))
    })
}

/// A store path's name: its base name without the hash (`/nix/store/<32>-hello-2.12` is
/// `hello-2.12`); a base name without a hash is the name itself.
pub fn store_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.as_bytes().get(32) {
        Some(b'-') if base.is_char_boundary(33) => &base[33..],
        _ => base,
    }
}

/// `builtins.parseDrvName`: the name splits at the first `-` followed by a character that is
/// not a letter; without one, there is no version.
pub fn parse_drv_name(name: &str) -> (&str, Option<&str>) {
    let bytes = name.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (&name[..i], Some(&name[i + 1..]));
        }
    }
    (name, None)
}

/// A narHash as SHA-256 hex: `sha256:` with Nix's base-32 (52 characters) or hex (64), or
/// SRI `sha256-` with base64.
pub fn nar_hash_hex(hash: &str) -> std::result::Result<String, String> {
    let bytes = if let Some(text) = hash.strip_prefix("sha256:") {
        match text.len() {
            64 if text.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Ok(text.to_ascii_lowercase());
            }
            52 => nix32_decode(text)?,
            _ => return Err("is neither Nix base-32 nor hex SHA-256".to_string()),
        }
    } else if let Some(text) = hash.strip_prefix("sha256-") {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "is not SRI base64".to_string())?
    } else {
        return Err("is not a SHA-256 hash".to_string());
    };
    if bytes.len() != 32 {
        return Err("does not hold 32 bytes".to_string());
    }
    Ok(hex(&bytes))
}

/// Nix's base-32: the alphabet without e, o, u, t; the last character holds the lowest bits.
fn nix32_decode(text: &str) -> std::result::Result<Vec<u8>, String> {
    const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let length = text.len() * 5 / 8;
    let mut bytes = vec![0u8; length];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or_else(|| "is not Nix base-32".to_string())?;
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let value = (digit as u16) << j;
        if i < length {
            bytes[i] |= value as u8;
        }
        let carry = (value >> 8) as u8;
        if i + 1 < length {
            bytes[i + 1] |= carry;
        } else if carry != 0 {
            return Err("is not Nix base-32 of 32 bytes".to_string());
        }
    }
    Ok(bytes)
}

/// A purl component, percent-encoded: letters, digits and `.-_~` stay.
fn purl_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `pkg:nix` package URL of a store path, by its name and version.
pub fn package_url(store_path: &str) -> String {
    let (name, version) = parse_drv_name(store_name(store_path));
    match version {
        Some(version) => format!("pkg:nix/{}@{}", purl_encode(name), purl_encode(version)),
        None => format!("pkg:nix/{}", purl_encode(name)),
    }
}

fn purl(component: &Component) -> String {
    package_url(&component.store_path)
}

/// A UUID (version 5 layout) from the SHA-256 of `bytes`: the same document, the same serial.
fn content_uuid(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn tool_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The CycloneDX properties of a component: what has no field of its own.
fn properties(c: &Component) -> Vec<Value> {
    let mut properties = vec![json!({ "name": "nix:store_path", "value": c.store_path })];
    if let Some(size) = c.nar_size {
        properties.push(json!({ "name": "nix:nar_size", "value": size.to_string() }));
    }
    if let Some(deriver) = &c.deriver {
        properties.push(json!({ "name": "nix:deriver", "value": deriver }));
    }
    if let Some((index, diff_id)) = &c.layer {
        properties.push(json!({ "name": "layered-gen:layer", "value": index.to_string() }));
        properties.push(json!({ "name": "layered-gen:layer_diff_id", "value": diff_id }));
    }
    properties
}

/// The image's reference for a document: `name:tag`.
fn image_reference(image: &ImageFacts) -> String {
    format!("{}:{}", image.name, image.tag)
}

fn cyclonedx(components: &[Component], roots: &[usize], options: &SbomOptions) -> Value {
    let component = |c: &Component, kind: &str| {
        let mut value = json!({
            "type": kind,
            "bom-ref": c.store_path,
            "name": c.name,
        });
        if let Some(version) = &c.version {
            value["version"] = json!(version);
        }
        value["purl"] = json!(purl(c));
        if let Some(sha256) = &c.sha256 {
            value["hashes"] = json!([{ "alg": "SHA-256", "content": sha256 }]);
        }
        if let Some(meta) = &c.meta {
            if let Some(description) = &meta.description {
                value["description"] = json!(description);
            }
            // CycloneDX takes one SPDX expression, or licenses by name.
            if let Some(expression) = spdx_expression(meta) {
                value["licenses"] = json!([{ "expression": expression }]);
            } else if !meta.licenses.is_empty() {
                let named: Vec<Value> = meta
                    .licenses
                    .iter()
                    .map(|l| json!({ "license": { "name": l.name() } }))
                    .collect();
                value["licenses"] = Value::Array(named);
            }
            if let Some(homepage) = &meta.homepage {
                value["externalReferences"] = json!([{ "type": "website", "url": homepage }]);
            }
        }
        value["properties"] = Value::Array(properties(c));
        value
    };
    // The subject: the image, holding every path; without one, the closure's single root.
    let single_root = (options.image.is_none() && roots.len() == 1).then(|| roots[0]);
    let listed: Vec<Value> = (0..components.len())
        .filter(|&i| Some(i) != single_root)
        .map(|i| {
            let kind = if roots.contains(&i) {
                "application"
            } else {
                "library"
            };
            component(&components[i], kind)
        })
        .collect();
    let mut dependencies: Vec<Value> = components
        .iter()
        .map(|c| {
            let on: Vec<&str> = c
                .depends_on
                .iter()
                .map(|&d| components[d].store_path.as_str())
                .collect();
            json!({ "ref": c.store_path, "dependsOn": on })
        })
        .collect();
    let mut metadata = json!({
        "timestamp": options.created,
        "tools": { "components": [
            { "type": "application", "name": "layered-gen", "version": tool_version() }
        ] },
    });
    if let Some(image) = &options.image {
        let reference = image_reference(image);
        let mut properties =
            vec![json!({ "name": "oci:config_digest", "value": image.config_digest })];
        if let Some(manifest) = &image.manifest_digest {
            properties.push(json!({ "name": "oci:manifest_digest", "value": manifest }));
        }
        metadata["component"] = json!({
            "type": "container",
            "bom-ref": reference,
            "name": image.name,
            "version": image.tag,
            "hashes": [{ "alg": "SHA-256", "content": digest_hex(&image.config_digest) }],
            "properties": properties,
        });
        let on: Vec<&str> = roots
            .iter()
            .map(|&r| components[r].store_path.as_str())
            .collect();
        dependencies.insert(0, json!({ "ref": reference, "dependsOn": on }));
    } else if let Some(root) = single_root {
        metadata["component"] = component(&components[root], "application");
    }
    let mut document = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": metadata,
        "components": listed,
        "dependencies": dependencies,
    });
    let serial = content_uuid(document.to_string().as_bytes());
    document["serialNumber"] = json!(format!("urn:uuid:{serial}"));
    document
}

/// The hex digits of `sha256:HEX`.
fn digest_hex(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}

/// The declared license as an SPDX expression (see [`spdx_expression`]); NOASSERTION when a
/// license has no SPDX id.
fn spdx_license(c: &Component) -> String {
    c.meta
        .as_ref()
        .and_then(spdx_expression)
        .unwrap_or_else(|| "NOASSERTION".to_string())
}

/// The package's licenses as one SPDX expression, when each has an SPDX id: joined by AND,
/// since a Nix package under several licenses is under all of them.
fn spdx_expression(meta: &PackageMeta) -> Option<String> {
    if meta.licenses.is_empty() {
        return None;
    }
    let ids: Option<Vec<&str>> = meta.licenses.iter().map(License::spdx).collect();
    ids.map(|ids| ids.join(" AND "))
}

/// What SPDX has no field for: the store path, its deriver, the layer holding it.
fn spdx_comment(c: &Component) -> String {
    let mut comment = format!("Nix store path {}", c.store_path);
    if let Some(deriver) = &c.deriver {
        comment.push_str(&format!(", built by {deriver}"));
    }
    if let Some((index, diff_id)) = &c.layer {
        comment.push_str(&format!(", in image layer {index} ({diff_id})"));
    }
    comment
}

/// SPDX needs its time in UTC to the second: `YYYY-MM-DDThh:mm:ssZ`.
fn spdx_time(created: &str) -> Result<&str> {
    let b = created.as_bytes();
    let shape = b.len() == 20
        && b[19] == b'Z'
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':';
    if shape {
        Ok(created)
    } else {
        Err(Error::value(format!(
            "SPDX takes its creation time in UTC to the second, and {} is not: give it as \
             2024-05-01T12:00:00Z",
            shown(created)
        ))
        .about(crate::error::Setting::Created))
    }
}

fn spdx(components: &[Component], roots: &[usize], options: &SbomOptions) -> Result<Value> {
    // By position, so that no two store names can meet in one ID (an SPDX ID allows only
    // letters, digits, `.` and `-`); the name follows for readers.
    let ids: Vec<String> = components
        .iter()
        .enumerate()
        .map(|(at, c)| {
            let name: String = c
                .name
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '.' {
                        ch
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("SPDXRef-{at}-{name}")
        })
        .collect();
    let packages: Vec<Value> = components
        .iter()
        .zip(&ids)
        .map(|(c, id)| {
            let mut value = json!({
                "SPDXID": id,
                "name": c.name,
            });
            if let Some(version) = &c.version {
                value["versionInfo"] = json!(version);
            }
            value["downloadLocation"] = json!("NOASSERTION");
            value["filesAnalyzed"] = json!(false);
            if let Some(sha256) = &c.sha256 {
                value["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": sha256 }]);
            }
            value["licenseConcluded"] = json!("NOASSERTION");
            value["licenseDeclared"] = json!(spdx_license(c));
            value["copyrightText"] = json!("NOASSERTION");
            value["comment"] = json!(spdx_comment(c));
            if let Some(meta) = &c.meta {
                if let Some(description) = &meta.description {
                    value["description"] = json!(description);
                }
                if let Some(homepage) = &meta.homepage {
                    value["homepage"] = json!(homepage);
                }
            }
            value["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(c),
            }]);
            value
        })
        .collect();
    let mut packages = packages;
    let mut relationships: Vec<Value> = Vec::new();
    let describe = |id: &str| {
        json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": id,
        })
    };
    if let Some(image) = &options.image {
        // The image is the subject; it contains every path of the closure.
        let mut value = json!({
            "SPDXID": "SPDXRef-image",
            "name": image.name,
            "versionInfo": image.tag,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{ "algorithm": "SHA256", "checksumValue": digest_hex(&image.config_digest) }],
            "primaryPackagePurpose": "CONTAINER",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        value["comment"] = json!(match &image.manifest_digest {
            Some(manifest) => format!(
                "The image {}: config {}, manifest {manifest}",
                image_reference(image),
                image.config_digest
            ),
            None => format!(
                "The image {}: config {}",
                image_reference(image),
                image.config_digest
            ),
        });
        packages.insert(0, value);
        relationships.push(describe("SPDXRef-image"));
        relationships.extend(ids.iter().map(|id| {
            json!({
                "spdxElementId": "SPDXRef-image",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            })
        }));
    } else {
        relationships.extend(roots.iter().map(|&r| describe(&ids[r])));
    }
    for (c, id) in components.iter().zip(&ids) {
        for &d in &c.depends_on {
            relationships.push(json!({
                "spdxElementId": id,
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": ids[d],
            }));
        }
    }
    let name = match (&options.image, roots) {
        (Some(image), _) => image_reference(image),
        (None, [root]) => store_name(&components[*root].store_path).to_string(),
        (None, _) => "closure".to_string(),
    };
    let mut document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "creationInfo": {
            "created": spdx_time(&options.created)?,
            "creators": [format!("Tool: layered-gen-{}", tool_version())],
        },
        "packages": packages,
        "relationships": relationships,
    });
    let uuid = content_uuid(document.to_string().as_bytes());
    document["documentNamespace"] = json!(format!(
        "https://layered-gen.invalid/spdxdocs/{}-{uuid}",
        purl_encode(&name)
    ));
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_as_parse_drv_name_does() {
        assert_eq!(parse_drv_name("hello-2.12.1"), ("hello", Some("2.12.1")));
        assert_eq!(parse_drv_name("xz-utils-5.4"), ("xz-utils", Some("5.4")));
        assert_eq!(
            parse_drv_name("glibc-2.39-52-bin"),
            ("glibc", Some("2.39-52-bin"))
        );
        assert_eq!(parse_drv_name("hello"), ("hello", None));
        assert_eq!(parse_drv_name("source"), ("source", None));
        assert_eq!(parse_drv_name("foo-"), ("foo-", None));
        assert_eq!(parse_drv_name("foo-bar"), ("foo-bar", None));
        assert_eq!(
            parse_drv_name("perl5.38.2-URI-5.21"),
            ("perl5.38.2-URI", Some("5.21"))
        );
        assert_eq!(
            store_name("/nix/store/0123456789abcdfghijklnpqrsvwxyz0-hello-2.12"),
            "hello-2.12"
        );
        assert_eq!(store_name("/tmp/plain"), "plain");
    }

    #[test]
    fn nar_hashes_in_every_spelling_give_one_hex() {
        // sha256 of the empty string, as Nix spells it three ways.
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            nar_hash_hex("sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73").unwrap(),
            hex
        );
        assert_eq!(
            nar_hash_hex("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").unwrap(),
            hex
        );
        assert_eq!(nar_hash_hex(&format!("sha256:{hex}")).unwrap(), hex);
        assert!(nar_hash_hex("md5:abc").is_err());
        assert!(nar_hash_hex("sha256:eeee").is_err());
        assert!(nar_hash_hex("sha256-AAAA").is_err());
        // 52 characters whose top bits overflow 32 bytes.
        assert!(nar_hash_hex(&format!("sha256:z{}", "0".repeat(51))).is_err());
    }

    #[test]
    fn purls_encode_what_the_spec_asks() {
        let c = Component {
            store_path: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-gtk+3-3.24 beta".into(),
            name: "gtk+3".into(),
            version: Some("3.24 beta".into()),
            sha256: None,
            nar_size: None,
            deriver: None,
            meta: None,
            layer: None,
            depends_on: vec![],
        };
        assert_eq!(purl(&c), "pkg:nix/gtk%2B3@3.24%20beta");
        let uuid = content_uuid(b"x");
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "5");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"));
    }

    /// Nix's base-32 encoding, as `nix-hash --to-base32` prints it.
    fn nix32_encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
        let length = (bytes.len() * 8).div_ceil(5);
        (0..length)
            .rev()
            .map(|n| {
                let (i, j) = (n * 5 / 8, n * 5 % 8);
                let low = u16::from(bytes[i]) >> j;
                let high = bytes.get(i + 1).map_or(0, |&b| u16::from(b) << (8 - j));
                ALPHABET[usize::from((low | high) & 0x1f)] as char
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn every_spelling_of_a_hash_decodes_to_its_bytes(bytes in proptest::collection::vec(0u8.., 32)) {
            use base64::Engine as _;
            let want = hex(&bytes);
            let nix32 = format!("sha256:{}", nix32_encode(&bytes));
            let sri = format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(&bytes));
            proptest::prop_assert_eq!(nar_hash_hex(&nix32).unwrap(), want.clone());
            proptest::prop_assert_eq!(nar_hash_hex(&sri).unwrap(), want);
        }

        #[test]
        fn any_text_is_a_hash_or_an_error(text in "sha256[:-][0-9a-z+/=]{0,70}") {
            let _ = nar_hash_hex(&text);
            let (name, version) = parse_drv_name(&text);
            proptest::prop_assert!(name.len() + version.map_or(0, |v| v.len() + 1) == text.len());
        }
    }

    #[test]
    fn spdx_times_are_utc_seconds() {
        assert!(spdx_time("1970-01-01T00:00:01Z").is_ok());
        assert!(spdx_time("2024-05-01T12:00:00.5Z").is_err());
        assert!(spdx_time("2024-05-01T12:00:00+02:00").is_err());
    }
}
