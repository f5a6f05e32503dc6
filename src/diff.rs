//! Why two images differ (`layered-gen diff`): for when `nix-build --check` says an image is
//! not reproducible.
//!
//! - The manifests and the configs are compared as JSON, value by value, each difference named
//!   by its JSON path (`$.config.Env[1]`).
//! - Layers are matched by position, and by diff_id where a layer moved: a pair with equal
//!   diff_ids holds the same files (if their digests differ, only the compression differs).
//! - The layers of a pair that differs are read side by side as tar streams, verified against
//!   their digests, and each entry is reduced to a record: its path, type, mode, owner, time,
//!   link target, size, the SHA-256 of its content and of its raw header. Records, not
//!   contents, are kept, so memory grows with the number of entries, not their bytes. Records
//!   then say which entries were added or removed, which changed and how, and where the order
//!   of the entries both layers hold first differs. When every field is equal but the header
//!   bytes are not, the difference is in the header's encoding (ustar or GNU, PAX records).

use std::collections::HashMap;
use std::io::{Read, Write};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::base::BaseImage;
use crate::digest::hex;
use crate::error::{Error, Result, shown, shown_bytes};

/// Everything that differs; empty lists when the images are the same.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub identical: bool,
    pub manifest: Vec<JsonChange>,
    pub config: Vec<JsonChange>,
    pub layers: Vec<LayerChange>,
}

/// A value that differs between two JSON documents; None where one has no value there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JsonChange {
    pub path: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

/// A layer of A, or of B, or of both, that is not the same in both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerChange {
    /// Its position in A and in B.
    pub a: Option<usize>,
    pub b: Option<usize>,
    pub status: LayerStatus,
    pub diff_id_a: Option<String>,
    pub diff_id_b: Option<String>,
    pub entries: Vec<EntryChange>,
    /// Where the order of the entries both layers hold first differs.
    pub order: Option<OrderChange>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerStatus {
    /// Other files: see the entries.
    #[default]
    Different,
    /// The same files, stored with other bytes (compression).
    StoredDifferently,
    /// The same layer at another position.
    Moved,
    OnlyInA,
    OnlyInB,
}

/// One entry that differs, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryChange {
    pub path: String,
    pub change: EntryChangeKind,
    pub a: Option<String>,
    pub b: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryChangeKind {
    Added,
    Removed,
    Type,
    Content,
    Mode,
    Owner,
    Mtime,
    LinkTarget,
    HeaderEncoding,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderChange {
    /// The position, among the entries both layers hold.
    pub index: usize,
    pub a: String,
    pub b: String,
}

/// Compares two images.
pub fn diff(a: &BaseImage, b: &BaseImage) -> Result<Report> {
    let mut report = Report {
        manifest: json_changes(&a.manifest, &b.manifest),
        config: json_changes(&parse(&a.config_bytes)?, &parse(&b.config_bytes)?),
        layers: Vec::new(),
        identical: false,
    };
    report.layers = layer_changes(a, b)?;
    report.identical = report.manifest.is_empty()
        && report.config.is_empty()
        && report.layers.is_empty()
        && a.config_bytes == b.config_bytes;
    Ok(report)
}

fn parse(config: &[u8]) -> Result<Value> {
    serde_json::from_slice(config).map_err(|e| Error::value(format!("a config is not JSON: {e}")))
}

/// The values that differ between two JSON documents, in document order.
pub fn json_changes(a: &Value, b: &Value) -> Vec<JsonChange> {
    let mut changes = Vec::new();
    compare_json(Some(a), Some(b), "$".to_string(), &mut changes);
    changes
}

fn compare_json(a: Option<&Value>, b: Option<&Value>, path: String, out: &mut Vec<JsonChange>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for (key, value) in x {
                compare_json(Some(value), y.get(key), format!("{path}.{key}"), out);
            }
            for (key, value) in y {
                if !x.contains_key(key) {
                    compare_json(None, Some(value), format!("{path}.{key}"), out);
                }
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                compare_json(x.get(i), y.get(i), format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => out.push(JsonChange {
            path,
            a: a.cloned(),
            b: b.cloned(),
        }),
        _ => {}
    }
}

/// Layers matched by position, then by diff_id; the pairs that differ are read entry by entry.
fn layer_changes(a: &BaseImage, b: &BaseImage) -> Result<Vec<LayerChange>> {
    let id = |image: &BaseImage, i: usize| image.layers[i].diff_id.clone();
    let find = |image: &BaseImage, wanted: &Option<String>, taken: &[bool]| {
        wanted.as_ref().and_then(|w| {
            (0..image.layers.len())
                .find(|&j| !taken[j] && image.layers[j].diff_id.as_ref() == Some(w))
        })
    };
    let pair = |i: Option<usize>, j: Option<usize>, status| LayerChange {
        a: i,
        b: j,
        status,
        diff_id_a: i.and_then(|i| id(a, i)),
        diff_id_b: j.and_then(|j| id(b, j)),
        ..Default::default()
    };
    let (na, nb) = (a.layers.len(), b.layers.len());
    let mut used_b = vec![false; nb];
    let mut changes = Vec::new();
    for i in 0..na {
        let same_place = i < nb && id(a, i).is_some() && id(a, i) == id(b, i);
        if same_place {
            used_b[i] = true;
            let (x, y) = (&a.layers[i], &b.layers[i]);
            if x.digest != y.digest || x.codec != y.codec {
                changes.push(pair(Some(i), Some(i), LayerStatus::StoredDifferently));
            }
            continue;
        }
        if let Some(j) = find(b, &id(a, i), &used_b) {
            used_b[j] = true;
            changes.push(pair(Some(i), Some(j), LayerStatus::Moved));
            continue;
        }
        let no_taken = vec![false; na];
        if i < nb && !used_b[i] && find(a, &id(b, i), &no_taken).is_none() {
            used_b[i] = true;
            let (entries, order) = entry_changes(&records(a, i)?, &records(b, i)?);
            if entries.is_empty() && order.is_none() {
                // No diff_ids to go by (a legacy image may lack them), but the same entries,
                // header for header: the same files.
                let (x, y) = (&a.layers[i], &b.layers[i]);
                if x.digest != y.digest || x.codec != y.codec {
                    changes.push(pair(Some(i), Some(i), LayerStatus::StoredDifferently));
                }
                continue;
            }
            let mut change = pair(Some(i), Some(i), LayerStatus::Different);
            change.entries = entries;
            change.order = order;
            changes.push(change);
            continue;
        }
        changes.push(pair(Some(i), None, LayerStatus::OnlyInA));
    }
    for j in (0..nb).filter(|&j| !used_b[j]) {
        let no_taken = vec![false; na];
        match find(a, &id(b, j), &no_taken) {
            Some(i) => changes.push(pair(Some(i), Some(j), LayerStatus::Moved)),
            None => changes.push(pair(None, Some(j), LayerStatus::OnlyInB)),
        }
    }
    Ok(changes)
}

/// What is compared of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    path: Vec<u8>,
    kind: u8,
    mode: u32,
    owner: (u64, u64, Vec<u8>, Vec<u8>),
    mtime: u64,
    link: Vec<u8>,
    size: u64,
    content: [u8; 32],
    /// The raw header blocks (the main header and PAX records), hashed.
    header: [u8; 32],
}

/// The records of layer `index` of `image`, read as a stream: a thread writes the verified,
/// decompressed tar into a pipe while this one reads the entries from it.
fn records(image: &BaseImage, index: usize) -> Result<Vec<Record>> {
    let label = format!("{}: layer {index}", shown(&image.describe()));
    let (written, read) = crate::pipe::through(
        |out| image.write_plain(index, out),
        |reader| read_records(reader, &label),
    )?;
    // A broken pipe after a read error says nothing new: report the read's error.
    let records = read?;
    written?;
    Ok(records)
}

fn read_records(reader: impl Read, label: &str) -> Result<Vec<Record>> {
    let bad = |e: std::io::Error| Error::input(label, format!("not a readable tar: {e}"));
    let mut archive = tar::Archive::new(reader);
    let mut records = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let header = entry.header().clone();
        let mut header_hash = Sha256::new();
        header_hash.update(header.as_bytes());
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                header_hash.update(ext.key_bytes());
                header_hash.update(b"=");
                header_hash.update(ext.value_bytes());
                header_hash.update(b"\n");
            }
        }
        // Paths without "./" or a directory's trailing "/": the type tells what an entry is,
        // and a directory that became a file is a change of type, not a removal.
        let raw = entry.path_bytes().into_owned();
        let path = raw
            .strip_prefix(b"./")
            .unwrap_or(&raw)
            .strip_suffix(b"/")
            .unwrap_or(raw.strip_prefix(b"./").unwrap_or(&raw))
            .to_vec();
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let mut content = Sha256::new();
        let size = std::io::copy(&mut entry, &mut HashWriter(&mut content)).map_err(bad)?;
        records.push(Record {
            path,
            kind: header.entry_type().as_byte(),
            mode: header.mode().unwrap_or(0),
            owner: (
                header.uid().unwrap_or(0),
                header.gid().unwrap_or(0),
                header.username_bytes().unwrap_or_default().to_vec(),
                header.groupname_bytes().unwrap_or_default().to_vec(),
            ),
            mtime: header.mtime().unwrap_or(0),
            link,
            size,
            content: content.finalize().into(),
            header: header_hash.finalize().into(),
        });
    }
    Ok(records)
}

/// Feeds what is written into a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn kind_name(kind: u8) -> String {
    match kind {
        b'0' | 0 => "file".to_string(),
        b'1' => "hard link".to_string(),
        b'2' => "symlink".to_string(),
        b'3' => "character device".to_string(),
        b'4' => "block device".to_string(),
        b'5' => "directory".to_string(),
        b'6' => "fifo".to_string(),
        other => format!("type {:?}", other as char),
    }
}

fn owner_text(owner: &(u64, u64, Vec<u8>, Vec<u8>)) -> String {
    let (uid, gid, uname, gname) = owner;
    let names = if uname.is_empty() && gname.is_empty() {
        String::new()
    } else {
        format!(" ({}:{})", shown_bytes(uname), shown_bytes(gname))
    };
    format!("{uid}:{gid}{names}")
}

/// The entries that differ between two layers, and where their common order first differs.
fn entry_changes(a: &[Record], b: &[Record]) -> (Vec<EntryChange>, Option<OrderChange>) {
    let in_b: HashMap<&[u8], &Record> = b.iter().map(|r| (r.path.as_slice(), r)).collect();
    let in_a: HashMap<&[u8], &Record> = a.iter().map(|r| (r.path.as_slice(), r)).collect();
    let mut changes = Vec::new();
    let change = |record: &Record, kind, x: Option<String>, y: Option<String>| EntryChange {
        path: shown_bytes(&record.path),
        change: kind,
        a: x,
        b: y,
    };
    for x in a {
        let Some(y) = in_b.get(x.path.as_slice()) else {
            changes.push(change(
                x,
                EntryChangeKind::Removed,
                Some(kind_name(x.kind)),
                None,
            ));
            continue;
        };
        let before = changes.len();
        if x.kind != y.kind {
            changes.push(change(
                x,
                EntryChangeKind::Type,
                Some(kind_name(x.kind)),
                Some(kind_name(y.kind)),
            ));
        }
        if x.content != y.content {
            let describe =
                |r: &Record| format!("{} bytes, sha256 {}", r.size, &hex(&r.content)[..16]);
            changes.push(change(
                x,
                EntryChangeKind::Content,
                Some(describe(x)),
                Some(describe(y)),
            ));
        }
        if x.mode != y.mode {
            changes.push(change(
                x,
                EntryChangeKind::Mode,
                Some(format!("{:04o}", x.mode)),
                Some(format!("{:04o}", y.mode)),
            ));
        }
        if x.owner != y.owner {
            changes.push(change(
                x,
                EntryChangeKind::Owner,
                Some(owner_text(&x.owner)),
                Some(owner_text(&y.owner)),
            ));
        }
        if x.mtime != y.mtime {
            changes.push(change(
                x,
                EntryChangeKind::Mtime,
                Some(x.mtime.to_string()),
                Some(y.mtime.to_string()),
            ));
        }
        if x.link != y.link {
            changes.push(change(
                x,
                EntryChangeKind::LinkTarget,
                Some(shown_bytes(&x.link)),
                Some(shown_bytes(&y.link)),
            ));
        }
        if changes.len() == before && x.header != y.header {
            changes.push(change(
                x,
                EntryChangeKind::HeaderEncoding,
                Some(hex(&x.header)[..16].to_string()),
                Some(hex(&y.header)[..16].to_string()),
            ));
        }
    }
    for y in b {
        if !in_a.contains_key(y.path.as_slice()) {
            changes.push(change(
                y,
                EntryChangeKind::Added,
                None,
                Some(kind_name(y.kind)),
            ));
        }
    }
    let common_a = a.iter().filter(|r| in_b.contains_key(r.path.as_slice()));
    let common_b = b.iter().filter(|r| in_a.contains_key(r.path.as_slice()));
    let order = common_a
        .zip(common_b)
        .enumerate()
        .find(|(_, (x, y))| x.path != y.path)
        .map(|(index, (x, y))| OrderChange {
            index,
            a: shown_bytes(&x.path),
            b: shown_bytes(&y.path),
        });
    (changes, order)
}

fn json_text(value: &Option<Value>) -> String {
    match value {
        Some(value) => shown(&value.to_string()),
        None => "(none)".to_string(),
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.identical {
            return writeln!(f, "the images are identical");
        }
        for (what, changes) in [("manifest", &self.manifest), ("config", &self.config)] {
            for c in changes {
                writeln!(
                    f,
                    "{what} {}: {} -> {}",
                    shown(&c.path),
                    json_text(&c.a),
                    json_text(&c.b)
                )?;
            }
        }
        for layer in &self.layers {
            let position = |p: Option<usize>| p.map_or("-".to_string(), |p| p.to_string());
            let id = |d: &Option<String>| d.as_deref().map_or("-".to_string(), shown);
            write!(
                f,
                "layer {} of A / {} of B ({} / {}): ",
                position(layer.a),
                position(layer.b),
                id(&layer.diff_id_a),
                id(&layer.diff_id_b)
            )?;
            match layer.status {
                LayerStatus::StoredDifferently => {
                    writeln!(f, "the same files, stored with other bytes (compression)")?
                }
                LayerStatus::Moved => writeln!(f, "the same layer at another position")?,
                LayerStatus::OnlyInA => writeln!(f, "only in A")?,
                LayerStatus::OnlyInB => writeln!(f, "only in B")?,
                LayerStatus::Different => {
                    writeln!(f, "{} entries differ", layer.entries.len())?;
                    for e in &layer.entries {
                        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                        match e.change {
                            EntryChangeKind::Added => {
                                writeln!(f, "  + {} ({})", e.path, text(&e.b))?
                            }
                            EntryChangeKind::Removed => {
                                writeln!(f, "  - {} ({})", e.path, text(&e.a))?
                            }
                            kind => writeln!(
                                f,
                                "  {}: {}: {} -> {}",
                                e.path,
                                serde_json::to_value(kind)
                                    .ok()
                                    .and_then(|v| v.as_str().map(str::to_string))
                                    .unwrap_or_default(),
                                text(&e.a),
                                text(&e.b)
                            )?,
                        }
                    }
                    if let Some(order) = &layer.order {
                        writeln!(
                            f,
                            "  order: the entries both hold first differ at {}: {} in A, {} in B",
                            order.index, order.a, order.b
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(path: &str, content: u8) -> Record {
        Record {
            path: path.as_bytes().to_vec(),
            kind: b'0',
            mode: 0o444,
            owner: (0, 0, Vec::new(), Vec::new()),
            mtime: 1,
            link: Vec::new(),
            size: 1,
            content: [content; 32],
            header: [content; 32],
        }
    }

    #[test]
    fn json_changes_name_their_paths() {
        let a = json!({"created": "1", "config": {"Env": ["A=1", "B=2"]}, "gone": 1});
        let b = json!({"created": "2", "config": {"Env": ["A=1"]}, "new": true});
        let paths: Vec<String> = json_changes(&a, &b).into_iter().map(|c| c.path).collect();
        assert_eq!(paths, ["$.created", "$.config.Env[1]", "$.gone", "$.new"]);
        assert!(json_changes(&a, &a).is_empty());
    }

    #[test]
    fn entry_changes_say_what_and_where() {
        let a = vec![
            record("x", 1),
            record("y", 1),
            record("z", 1),
            record("gone", 1),
        ];
        let mut y2 = record("y", 1);
        y2.mode = 0o555;
        y2.owner = (1000, 100, b"app".to_vec(), Vec::new());
        y2.mtime = 2;
        let mut z2 = record("z", 1);
        z2.header = [9; 32];
        let b = vec![record("x", 2), z2, y2, record("new", 1)];
        let (changes, order) = entry_changes(&a, &b);
        let kinds: Vec<(String, EntryChangeKind)> =
            changes.iter().map(|c| (c.path.clone(), c.change)).collect();
        assert_eq!(
            kinds,
            [
                ("x".to_string(), EntryChangeKind::Content),
                ("y".to_string(), EntryChangeKind::Mode),
                ("y".to_string(), EntryChangeKind::Owner),
                ("y".to_string(), EntryChangeKind::Mtime),
                ("z".to_string(), EntryChangeKind::HeaderEncoding),
                ("gone".to_string(), EntryChangeKind::Removed),
                ("new".to_string(), EntryChangeKind::Added),
            ]
        );
        assert_eq!(changes[2].b.as_deref(), Some("1000:100 (app:)"));
        assert_eq!(
            order,
            Some(OrderChange {
                index: 1,
                a: "y".into(),
                b: "z".into()
            })
        );
    }
}
