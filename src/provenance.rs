//! Provenance: an in-toto Statement v1 whose predicate is SLSA Provenance v1, saying what the
//! image was built from and how, from the closure alone:
//!
//! - **subject**: the image, by its manifest digest (a layout, a registry) or, in a
//!   docker-archive, which has no manifest a registry would know, by its config digest;
//! - **buildDefinition**: the build type, the options that decide the image's bytes
//!   (`externalParameters`, given by the caller), and every store path of the closure as a
//!   resolved dependency: its purl, its narHash as SHA-256, and its deriver;
//! - **runDetails**: layered-gen and its version as the builder, and the layers written as
//!   byproducts.
//!
//! Like the SBOM it is deterministic: nothing in it is read from the clock or the machine.

use serde_json::{Value, json};

use crate::closure::ClosureGraph;
use crate::error::{Error, Result, shown};
use crate::sbom::{nar_sha256, package_url};

/// The media type of an in-toto statement (an OCI artifact's `artifactType`).
pub const MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The statement's own type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// How layered-gen builds: an image from a Nix closure.
pub const BUILD_TYPE: &str = "https://layered-gen.invalid/buildtypes/nix-closure/v1";
/// Who built it.
pub const BUILDER_ID: &str = "https://layered-gen.invalid/builder/layered-gen";

/// What the statement says beside the closure.
#[derive(Clone, Debug)]
pub struct ProvenanceOptions {
    /// The image's name (`registry/name`, or the archive's name).
    pub name: String,
    /// The subject's digest, `sha256:…` (see the module doc).
    pub digest: String,
    /// The options that decide the image's bytes.
    pub parameters: Value,
    /// The digests of the layer blobs written, in image order.
    pub layers: Vec<String>,
}

/// The statement for an image of `graph`, as pretty JSON.
pub fn statement(graph: &ClosureGraph, options: &ProvenanceOptions) -> Result<String> {
    let subject_hex = options
        .digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64)
        .ok_or_else(|| {
            Error::value(format!(
                "the image digest {} is not a SHA-256 digest",
                shown(&options.digest)
            ))
        })?;
    let mut order: Vec<usize> = (0..graph.len()).collect();
    order.sort_by(|&a, &b| graph.path(a).cmp(graph.path(b)));
    let roots = graph.roots();
    let dependencies = order
        .iter()
        .map(|&index| dependency(graph, index, roots.contains(&index)))
        .collect::<Result<Vec<_>>>()?;
    let byproducts: Vec<Value> = options
        .layers
        .iter()
        .enumerate()
        .map(|(index, digest)| {
            json!({
                "name": format!("layer {index}"),
                "digest": { "sha256": digest.trim_start_matches("sha256:") },
            })
        })
        .collect();
    let document = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": options.name, "digest": { "sha256": subject_hex } }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": options.parameters,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": { "layered-gen": env!("CARGO_PKG_VERSION") },
                },
                "byproducts": byproducts,
            },
        },
    });
    serde_json::to_string_pretty(&document)
        .map_err(|e| Error::value(format!("the provenance does not serialise: {e}")))
}

/// One store path as a resolved dependency.
fn dependency(graph: &ClosureGraph, index: usize, root: bool) -> Result<Value> {
    let path = graph.path(index);
    let mut value = json!({ "name": path, "uri": package_url(path) });
    if let Some(hex) = nar_sha256(graph, index)? {
        value["digest"] = json!({ "sha256": hex });
    }
    let mut annotations = serde_json::Map::new();
    if let Some(deriver) = graph.deriver(index) {
        annotations.insert("deriver".into(), json!(deriver));
    }
    if let Some(size) = graph.nar_size(index) {
        annotations.insert("narSize".into(), json!(size));
    }
    if root {
        annotations.insert("root".into(), json!(true));
    }
    if !annotations.is_empty() {
        value["annotations"] = Value::Object(annotations);
    }
    Ok(value)
}
