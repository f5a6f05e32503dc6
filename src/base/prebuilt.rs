//! Layers made before the image (`layered-gen layer`, nix/'s `buildLayer`): a directory
//! holding `layer.json` and the layer's blobs, compressed as asked. An image takes them as it
//! takes a base image's layers: each blob is copied (for a push, first only asked about), its
//! size and digest checked on the way, and never rebuilt.
//!
//! The diffId is the one claim only decompressing the blob can check, which costs several
//! times the copy (the uncompressed bytes are hashed too). `layered-gen layer` took it from
//! the tar it made, and the directory is trusted for it as the store that holds it is (as the
//! layer cache is): a blob changed since is caught by its digest, and a layer.json written by
//! hand with a wrong diffId gives an image that `docker load` refuses.
//! `--verify-layers` ([`BlobCheck::Full`]) decompresses every blob and checks its diffId too.
//!
//! `layer.json` (`LayerFile`):
//!
//! ```json
//! {"layeredGenLayer": 1, "diffId": "sha256:…", "tarSize": 10240,
//!  "paths": ["/nix/store/…-glibc-2.39"],
//!  "blobs": [{"compression": "gzip", "digest": "sha256:…", "size": 3012, "file": "layer.tar.gz"}]}
//! ```
//!
//! The directory is input like any other: its JSON is bounded and strictly typed, its blob
//! files must be regular files directly inside it, and what it says of them is checked when
//! they are read.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Decode, Expected, copy_checked};
use crate::codec::Codec;
use crate::digest::{BlobInfo, BlobSource};
use crate::error::{Error, Result, Setting, shown, shown_path};
pub use crate::image_spec::{BlobCompression, LAYER_FORMAT, LAYER_JSON, LayerFile, StoredBlob};

/// The most `layer.json` may hold: a layer of 100,000 paths takes about 10 MB.
const MAX_LAYER_JSON: u64 = 64 << 20;

/// A layer directory, read and checked.
#[derive(Debug)]
pub struct PrebuiltLayer {
    pub dir: PathBuf,
    pub layer: LayerFile,
}

impl PrebuiltLayer {
    /// Reads `DIR/layer.json` and checks what it says of itself.
    pub fn load(dir: &Path) -> Result<Self> {
        let at = || shown_path(dir);
        let meta = std::fs::metadata(dir)
            .map_err(|e| Error::io("reading the layer directory", dir, e).about(Setting::Layer))?;
        if !meta.is_dir() {
            return Err(Error::input(
                at(),
                "it is not a directory; a layer is the directory `layered-gen layer` writes",
            )
            .about(Setting::Layer));
        }
        let json = dir.join(LAYER_JSON);
        let bytes = {
            use std::io::Read;
            let mut bytes = Vec::new();
            open_regular(&json)?
                .take(MAX_LAYER_JSON + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io("reading", &json, e).about(Setting::Layer))?;
            if bytes.len() as u64 > MAX_LAYER_JSON {
                return Err(Error::input(
                    shown_path(&json),
                    format!("it holds more than {MAX_LAYER_JSON} bytes, the limit for this input"),
                )
                .about(Setting::Layer));
            }
            bytes
        };
        let layer: LayerFile = crate::json_file::parse_typed(&json.display().to_string(), &bytes)
            .map_err(|e| e.about(Setting::Layer))?;
        check(&layer).map_err(|why| Error::input(shown_path(&json), why).about(Setting::Layer))?;
        Ok(PrebuiltLayer {
            dir: dir.to_path_buf(),
            layer,
        })
    }

    /// The layer in messages: its directory.
    pub fn describe(&self) -> String {
        shown_path(&self.dir)
    }

    /// Its blob compressed with `codec`, if it has one, to be checked as `check` says.
    pub fn blob(&self, codec: Codec, check: BlobCheck) -> Option<PrebuiltBlob<'_>> {
        self.layer
            .blobs
            .iter()
            .find(|b| b.compression.codec() == codec)
            .map(|blob| PrebuiltBlob {
                layer: self,
                blob,
                check,
            })
    }

    /// The compressions it has, for messages.
    pub fn compressions(&self) -> String {
        let names: Vec<&str> = self
            .layer
            .blobs
            .iter()
            .map(|b| b.compression.codec().name())
            .collect();
        names.join(", ")
    }
}

/// What `layer.json` must say of itself.
fn check(layer: &LayerFile) -> std::result::Result<(), String> {
    if layer.layered_gen_layer != LAYER_FORMAT {
        return Err(format!(
            "it is format {} of layered-gen's layer.json; this layered-gen reads format \
             {LAYER_FORMAT}: build the layer again with it",
            layer.layered_gen_layer
        ));
    }
    if layer.blobs.is_empty() {
        return Err("it lists no blob".to_string());
    }
    for (i, blob) in layer.blobs.iter().enumerate() {
        if layer.blobs[..i]
            .iter()
            .any(|b| b.compression == blob.compression)
        {
            return Err(format!(
                "it lists two {} blobs",
                blob.compression.codec().name()
            ));
        }
        let plain = !blob.file.is_empty()
            && blob.file != "."
            && blob.file != ".."
            && blob.file != LAYER_JSON
            && !blob.file.contains('/')
            && !blob.file.contains('\0');
        if !plain {
            return Err(format!(
                "the blob file {} is not a plain file name inside the directory",
                shown(&blob.file)
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for path in &layer.paths {
        if !path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!("{} is not an absolute store path", shown(path)));
        }
        if !seen.insert(path.as_str()) {
            return Err(format!("it lists {} twice", shown(path)));
        }
    }
    Ok(())
}

/// Opens a file of a layer directory (see `super::store::open_regular_in`).
fn open_regular(path: &Path) -> Result<File> {
    super::store::open_regular_in(path, "a layer directory").map_err(|e| e.about(Setting::Layer))
}

/// Reads layer directories in order and checks them apart (see [`check_apart`]).
pub fn load_all(dirs: &[PathBuf]) -> Result<Vec<PrebuiltLayer>> {
    let layers = dirs
        .iter()
        .map(|dir| PrebuiltLayer::load(dir))
        .collect::<Result<Vec<_>>>()?;
    check_apart(&layers)?;
    Ok(layers)
}

/// Refuses layers given twice, and two layers holding the same store path: the image would
/// hold its files twice, and the order would decide which copy wins.
pub fn check_apart(layers: &[PrebuiltLayer]) -> Result<()> {
    let mut holder: HashMap<&str, usize> = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        if let Some(earlier) = layers[..i]
            .iter()
            .find(|l| l.layer.diff_id == layer.layer.diff_id)
        {
            let also = if earlier.dir == layer.dir {
                String::new()
            } else {
                format!(" (also as {})", earlier.describe())
            };
            return Err(Error::value(format!(
                "the layer {} is given twice{also}: give each layer once",
                layer.describe()
            ))
            .about(Setting::Layer));
        }
        for path in &layer.layer.paths {
            if let Some(&j) = holder.get(path.as_str()) {
                return Err(Error::value(format!(
                    "the layers {} and {} both hold {}: a store path goes in one layer (build \
                     the second with the first in its `layers`)",
                    layers[j].describe(),
                    layer.describe(),
                    shown(path)
                ))
                .about(Setting::Layer));
            }
            holder.insert(path, i);
        }
    }
    Ok(())
}

/// How much of a prebuilt blob is checked as it is copied (see the module's docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlobCheck {
    /// Its size and digest, hashed as it is copied; its diffId is layer.json's.
    #[default]
    Digest,
    /// Its diffId too, by decompressing it (`--verify-layers`).
    Full,
}

/// One blob of a prebuilt layer, as an image copies it.
pub struct PrebuiltBlob<'a> {
    layer: &'a PrebuiltLayer,
    blob: &'a StoredBlob,
    check: BlobCheck,
}

impl BlobSource for PrebuiltBlob<'_> {
    fn size(&self) -> u64 {
        self.blob.size
    }

    /// What layer.json says: the blob is checked against it whenever it is read, and a
    /// registry that holds a blob of that digest and size holds these bytes.
    fn known(&self) -> Option<BlobInfo> {
        Some(BlobInfo {
            diff_id: self.layer.layer.diff_id.clone(),
            digest: self.blob.digest.clone(),
            size: self.blob.size,
        })
    }

    fn codec(&self) -> Codec {
        self.blob.compression.codec()
    }

    fn copy_to(&self, out: &mut dyn Write) -> Result<BlobInfo> {
        let path = self.layer.dir.join(&self.blob.file);
        let mut file = open_regular(&path)?;
        let at = shown_path(&path);
        let decode = match self.check {
            BlobCheck::Digest => Decode::Trust(&self.layer.layer.diff_id),
            BlobCheck::Full => Decode::Check(self.codec()),
        };
        copy_checked(
            &mut file,
            decode,
            Expected {
                digest: Some(&self.blob.digest),
                diff_id: Some(&self.layer.layer.diff_id),
                size: Some(self.blob.size),
                by: "layer.json",
                diff_id_by: "layer.json's diffId",
            },
            Some(out),
            None,
            (&at, |at, message| {
                Error::input(
                    at,
                    format!("{message}; the layer directory is damaged or was changed"),
                )
            }),
        )
        .map_err(|e| e.about(Setting::Layer))
    }
}
