//! Where images travel to over a connection: image references (`reference`), a registry over
//! the distribution API (`registry`: client, credentials, the push), and the local Docker
//! Engine (`daemon`). A push takes its blobs from `super::blobs` and its documents from
//! `super::image::manifest`, so what it sends is what a layout holds.

pub mod daemon;
pub mod reference;
pub mod registry;
