//! The integration tests, one crate (one link, one binary) with a module per subject. Each runs
//! the built `layered-gen` and checks what it wrote; the tool tier (`--features tool-tests`)
//! checks it with Docker, podman, skopeo, umoci, Nix and a registry.

// Helpers every module may use; not every module uses every one.
#[allow(dead_code)]
mod common;
// The fuzz targets' bodies, shared with fuzz/ (see fuzz_replay).
#[allow(dead_code)]
#[path = "../../fuzz/targets.rs"]
mod targets;

mod archive_extras;
mod attached;
mod bad_input;
mod closure_formats;
mod customisation;
mod diff;
mod fake_peers;
mod from_image;
mod fuzz_replay;
mod hostile;
mod hostile_base;
mod image_tools;
mod index;
mod layering;
mod nix_functions;
mod prebuilt_layers;
mod push;
mod reproducibility;
mod sbom;
mod signatures;
mod tar_compat;
mod threads;
