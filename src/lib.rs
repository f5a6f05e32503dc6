//! layered-gen: turn a Nix store closure into a layered, reproducible container image.
//!
//! One module per pipeline stage:
//! [`closure`] reads the graph, [`plan`] splits it into layers, [`layer`] writes each layer as a
//! deterministic tarball, [`config`] describes the image, [`output`] writes docker-archive or
//! OCI layouts. [`pipeline`] runs them in order for the command line. About the image, from the
//! closure: [`sbom`] (its bill of materials) and [`provenance`] (how it was built); [`signature`]
//! signs and checks it as cosign does.
//!
//! Shared by several stages, knowing none: [`error`] (the error type), [`digest`] (content
//! digests), [`image_spec`] (the image formats' JSON documents), [`codec`] (compression formats), [`tarball`] (the tar
//! encoding), [`json_file`] (reading users' JSON), [`progress`] (the terminal progress bar).

// Input and I/O failures are errors that say what to fix, never panics: no unwrap or
// expect outside tests (an invariant that cannot fail says why where it is allowed).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod attrs;
pub mod base;
pub mod closure;
pub mod codec;
pub mod config;
pub mod diff;
pub mod digest;
pub mod error;
pub(crate) mod export;
pub mod image_spec;
pub mod json_file;
pub mod layer;
pub mod output;
pub(crate) mod pipe;
pub mod pipeline;
pub mod plan;
pub(crate) mod progress;
pub mod provenance;
pub mod sbom;
pub mod signature;
pub mod tarball;

pub use error::{Error, Result};
