//! layered-gen: turn a Nix store closure into a layered, reproducible container image.
//!
//! One module per pipeline stage:
//! [`closure`] reads the graph, [`plan`] splits it into layers, [`layer`] writes each layer as a
//! deterministic tarball, [`config`] describes the image, [`output`] writes docker-archive or
//! OCI layouts. [`pipeline`] runs them in order for the command line.

pub mod attrs;
pub mod base;
pub mod closure;
pub mod config;
pub mod error;
pub mod json_file;
pub mod layer;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod tarball;

pub use error::{Error, Result};
