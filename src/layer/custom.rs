//! The customisation layer: what sits at the image root around the store.
//!
//! - `--contents P`: P's tree appears at `/` the way nixpkgs' `symlinkJoin` (lndir) builds it:
//!   directories become real directories, merged across contents; files and symlinks become
//!   symlinks to their place in the store (`/bin/sh -> /nix/store/...-bash/bin/sh`). Two contents
//!   providing one name is an error, unless both point at the same target.
//! - `--extra-dir D`: D's tree copied in as it is (what `extraCommands` produce), keeping its
//!   permission bits; it wins over contents.
//! - `--remove /path`: an OCI whiteout (`.wh.<name>`) that hides a base image's path.
//! - `--perms FILE`: ownership and modes for entries of this layer, no fakeroot needed.

use std::collections::btree_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::Error as _;

use super::{
    Entry, LayerOptions, LayerTree, Owner, Source, TarCompat, sorted_children, special_file,
};
use crate::error::{Error, Result, Setting, quoted, shown, shown_path};

/// What the user puts at the image root.
#[derive(Clone, Debug, Default)]
pub struct Customisation {
    /// Store paths whose trees are linked at `/`.
    pub contents: Vec<String>,
    pub extra_dirs: Vec<PathBuf>,
    pub perms: Vec<PermRule>,
    /// Absolute image paths to hide with whiteouts.
    pub remove: Vec<String>,
}

/// One `--perms` rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermRule {
    pub path: String,
    pub regex: bool,
    pub recursive: bool,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub uname: Option<String>,
    pub gname: Option<String>,
    pub mode: Option<u32>,
    /// Where the rule was written, for messages.
    pub origin: String,
}

enum Node {
    Dir {
        mode: u32,
        children: BTreeMap<Vec<u8>, Node>,
    },
    Link {
        target: Vec<u8>,
        /// The absolute target of the linked store entry when it is itself a symlink: two
        /// contents linking to the same final target do not conflict.
        resolves_to: Option<Vec<u8>>,
        origin: String,
    },
    File {
        source: PathBuf,
        size: u64,
        mode: u32,
    },
    Whiteout,
}

impl Node {
    fn empty_dir() -> Node {
        Node::Dir {
            mode: 0o755,
            children: BTreeMap::new(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Node::Dir { .. } => "a directory".to_string(),
            Node::Link { origin, .. } => format!("a link from {origin}"),
            Node::File { source, .. } => format!("the file {}", source.display()),
            Node::Whiteout => "a whiteout".to_string(),
        }
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = parent.to_vec();
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

fn shown_image_path(path: &[u8]) -> String {
    crate::error::shown_bytes(path)
}

/// Links `source` (a directory of store path `store_path`, at `image_path` in the image) into
/// `dir`, lndir-style.
fn link_tree(
    dir: &mut BTreeMap<Vec<u8>, Node>,
    source: &Path,
    store_location: &[u8],
    image_path: &[u8],
    origin: &str,
) -> Result<()> {
    for name in sorted_children(source, TarCompat::None)? {
        let name = name.as_bytes().to_vec();
        let child = source.join(std::ffi::OsStr::from_bytes(&name));
        let meta = fs::symlink_metadata(&child).map_err(|e| Error::io("reading", &child, e))?;
        let location = join(store_location, &name);
        let child_image = join(image_path, &name);
        let conflict = |existing: &Node| {
            Error::value(format!(
                "{} is provided twice: {} and a {} from {origin}; drop one of them from the \
                 contents or make them agree",
                shown_image_path(&child_image),
                existing.describe(),
                if meta.is_dir() { "directory" } else { "link" },
            ))
        };
        if meta.is_dir() {
            let node = dir.entry(name).or_insert_with(Node::empty_dir);
            match node {
                Node::Dir { children, .. } => {
                    link_tree(children, &child, &location, &child_image, origin)?
                }
                other => return Err(conflict(other)),
            }
        } else if meta.is_file() || meta.file_type().is_symlink() {
            let resolves_to = if meta.file_type().is_symlink() {
                let target = fs::read_link(&child).map_err(|e| Error::io("reading", &child, e))?;
                Some(target.as_os_str().as_bytes().to_vec()).filter(|t| t.starts_with(b"/"))
            } else {
                None
            };
            match dir.entry(name) {
                Slot::Vacant(slot) => {
                    slot.insert(Node::Link {
                        target: location,
                        resolves_to,
                        origin: origin.to_string(),
                    });
                }
                Slot::Occupied(slot) => {
                    let same = match slot.get() {
                        Node::Link {
                            target,
                            resolves_to: other,
                            ..
                        } => {
                            *target == location || (resolves_to.is_some() && *other == resolves_to)
                        }
                        _ => false,
                    };
                    if !same {
                        return Err(conflict(slot.get()));
                    }
                }
            }
        } else {
            return Err(special_file(&child, &meta, "a contents path"));
        }
    }
    Ok(())
}

/// The tree the contents make at `/`, lndir-style (the module doc).
fn contents_tree(contents: &[String], options: &LayerOptions) -> Result<BTreeMap<Vec<u8>, Node>> {
    let mut root: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
    for store_path in contents {
        let source = options.source_of(&resolve_in_store(store_path, options)?);
        let meta = fs::metadata(&source).map_err(|e| Error::io("reading", &source, e))?;
        if !meta.is_dir() {
            return Err(Error::value(format!(
                "the contents {} is not a directory; contents are linked at / by their \
                 top-level tree",
                shown(store_path)
            ))
            .about(Setting::Contents));
        }
        let origin = format!("the contents {}", shown(store_path));
        link_tree(&mut root, &source, store_path.as_bytes(), b"", &origin)?;
    }
    Ok(root)
}

/// Writes the tree the contents make at `/` into the empty directory `dir`: directories (mode
/// 0755) and symlinks into the store, as dockerTools' symlinkJoin leaves it for extraCommands
/// to change before it becomes an `--extra-dir`.
pub fn link_contents(contents: &[String], options: &LayerOptions, dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    let empty = fs::read_dir(dir)
        .map_err(|e| Error::io("reading", dir, e))?
        .next()
        .is_none();
    if !empty {
        return Err(Error::value(format!(
            "{} is not empty: the contents are linked into an empty directory",
            shown_path(dir)
        )));
    }
    write_tree(&contents_tree(contents, options)?, dir)
}

fn write_tree(dir: &BTreeMap<Vec<u8>, Node>, at: &Path) -> Result<()> {
    for (name, node) in dir {
        let path = at.join(std::ffi::OsStr::from_bytes(name));
        match node {
            Node::Dir { mode, children } => {
                fs::create_dir(&path).map_err(|e| Error::io("creating", &path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
                    .map_err(|e| Error::io("setting the mode of", &path, e))?;
                write_tree(children, &path)?;
            }
            Node::Link { target, .. } => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                    .map_err(|e| Error::io("creating the link", &path, e))?;
            }
            // Contents make directories and links only.
            Node::File { .. } | Node::Whiteout => {}
        }
    }
    Ok(())
}

/// `--perms` rules that give every directory and regular file under `dir` the mode it has
/// there, as JSON: the store keeps only 0444 and 0555, so a tree that passes through it (an
/// extraCommands result) takes its modes along this way. Symlinks have no mode of their own.
/// With `owners`, every entry (symlinks too) also keeps its numeric owner and group: what
/// fakeRootCommands made under fakeroot, which answers with the owners it faked.
pub fn record_modes(dir: &Path, owners: bool) -> Result<String> {
    let mut rules = Vec::new();
    record_modes_under(dir, "", owners, &mut rules)?;
    // A rule a line, without indentation: a tree of 300,000 entries stays within the 16 MiB
    // a perms file may hold.
    let lines: Vec<String> = rules.iter().map(|rule| rule.to_string()).collect();
    Ok(format!("[\n{}\n]", lines.join(",\n")))
}

fn record_modes_under(
    dir: &Path,
    prefix: &str,
    owners: bool,
    rules: &mut Vec<serde_json::Value>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for name in sorted_children(dir, TarCompat::None)? {
        let child = dir.join(&name);
        let Some(name) = name.to_str() else {
            return Err(Error::value(format!(
                "{} has a name that is not UTF-8, which a permission rule cannot name",
                shown_path(&child)
            )));
        };
        let meta = fs::symlink_metadata(&child).map_err(|e| Error::io("reading", &child, e))?;
        let path = format!("{prefix}/{name}");
        let kind = meta.file_type();
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            return Err(special_file(
                &child,
                &meta,
                "a tree whose modes are recorded",
            ));
        }
        let mut rule = serde_json::Map::new();
        rule.insert("path".into(), path.clone().into());
        if !kind.is_symlink() {
            let mode = format!("{:04o}", meta.permissions().mode() & 0o7777);
            rule.insert("mode".into(), mode.into());
        }
        if owners {
            rule.insert("uid".into(), meta.uid().into());
            rule.insert("gid".into(), meta.gid().into());
        }
        if rule.len() > 1 {
            rules.push(rule.into());
        }
        if kind.is_dir() {
            record_modes_under(&child, &path, owners, rules)?;
        }
    }
    Ok(())
}

/// Copies `source` into `dir` as it is, replacing what contents put there.
fn copy_tree(dir: &mut BTreeMap<Vec<u8>, Node>, source: &Path) -> Result<()> {
    for name in sorted_children(source, TarCompat::None)? {
        let name = name.as_bytes().to_vec();
        let child = source.join(std::ffi::OsStr::from_bytes(&name));
        let meta = fs::symlink_metadata(&child).map_err(|e| Error::io("reading", &child, e))?;
        let mode = meta.permissions().mode() & 0o7777;
        if name.starts_with(b".wh.") {
            return Err(Error::value(format!(
                "{} has a whiteout's name: in the customisation layer it would hide what lower \
                 layers hold (the store paths too); hide a base image's path with a removal \
                 instead",
                shown_path(&child)
            ))
            .about(Setting::ExtraDir));
        }
        if meta.is_dir() {
            let node = dir.entry(name).or_insert_with(Node::empty_dir);
            if !matches!(node, Node::Dir { .. }) {
                *node = Node::empty_dir();
            }
            if let Node::Dir {
                mode: dir_mode,
                children,
            } = node
            {
                *dir_mode = mode;
                copy_tree(children, &child)?;
            }
        } else if meta.is_file() {
            dir.insert(
                name,
                Node::File {
                    source: child,
                    size: meta.len(),
                    mode,
                },
            );
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&child).map_err(|e| Error::io("reading", &child, e))?;
            dir.insert(
                name,
                Node::Link {
                    target: target.as_os_str().as_bytes().to_vec(),
                    resolves_to: None,
                    origin: format!("the extra directory {}", shown_path(source)),
                },
            );
        } else {
            return Err(special_file(&child, &meta, "an extra directory"));
        }
    }
    Ok(())
}

/// A contents path that is itself a symlink (a derivation's output may be one) is followed,
/// but only while it stays in the store: a link to a host directory would put the host's
/// tree into the image.
fn resolve_in_store(store_path: &str, options: &LayerOptions) -> Result<String> {
    let store_dir = store_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut path = store_path.to_string();
    for _ in 0..40 {
        let source = options.source_of(&path);
        let meta = fs::symlink_metadata(&source).map_err(|e| Error::io("reading", &source, e))?;
        if !meta.file_type().is_symlink() {
            return Ok(path);
        }
        let target = fs::read_link(&source).map_err(|e| Error::io("reading", &source, e))?;
        let target = target.to_string_lossy();
        let absolute = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("{store_dir}/{target}")
        };
        let inside = absolute
            .strip_prefix(store_dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|name| !name.is_empty() && !name.contains('/') && name != "..");
        if !inside {
            return Err(Error::value(format!(
                "the contents {} is a symlink to {}, outside the store {}; contents are store \
                 paths",
                shown(store_path),
                shown(&absolute),
                shown(store_dir)
            ))
            .about(Setting::Contents));
        }
        path = absolute;
    }
    Err(Error::value(format!(
        "the contents {} is a chain of too many symlinks",
        shown(store_path)
    ))
    .about(Setting::Contents))
}

/// Checks an absolute, normalised image path and splits it into components.
/// Checks that `path` can name a file in the image: absolute and normalised.
pub fn check_image_path(path: &str) -> Result<()> {
    components(path).map(|_| ()).map_err(Error::value)
}

/// Lays `content` out at image path `path` under `root`, as a file of mode 0644 in
/// directories of mode 0755 (an extra dir holding it then adds it to the layer).
pub fn write_image_file(root: &Path, path: &str, content: &[u8]) -> Result<()> {
    let parts = components(path).map_err(Error::value)?;
    let mut at = root.to_path_buf();
    for (n, part) in parts.iter().enumerate() {
        at.push(part);
        let last = n + 1 == parts.len();
        if last {
            fs::write(&at, content).map_err(|e| Error::io("writing", &at, e))?;
        } else if !at.is_dir() {
            fs::create_dir(&at).map_err(|e| Error::io("creating", &at, e))?;
        }
        let mode = if last { 0o644 } else { 0o755 };
        fs::set_permissions(&at, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("setting the mode of", &at, e))?;
    }
    Ok(())
}

fn components(path: &str) -> Result<Vec<&str>, String> {
    let parts: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
    let ok = path.starts_with('/')
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..");
    if ok {
        Ok(parts)
    } else {
        Err(format!(
            "{} is not an absolute, normalised path like /etc/motd",
            quoted(path)
        ))
    }
}

fn add_whiteout(root: &mut BTreeMap<Vec<u8>, Node>, path: &str) -> Result<()> {
    let parts = components(path).map_err(|e| Error::value(e).about(Setting::Remove))?;
    let (leaf, parents) = parts.split_last().unwrap_or((&"", &[]));
    let mut dir = root;
    for part in parents {
        let node = dir
            .entry(part.as_bytes().to_vec())
            .or_insert_with(Node::empty_dir);
        match node {
            Node::Dir { children, .. } => dir = children,
            other => {
                return Err(Error::value(format!(
                    "removing {}: /{} is {} in the customisation layer, not a directory",
                    shown(path),
                    shown(part),
                    other.describe()
                ))
                .about(Setting::Remove));
            }
        }
    }
    if dir.contains_key(leaf.as_bytes()) {
        return Err(Error::value(format!(
            "{} is to be removed, but the customisation layer itself provides it",
            shown(path)
        ))
        .about(Setting::Remove));
    }
    dir.insert(format!(".wh.{leaf}").into_bytes(), Node::Whiteout);
    Ok(())
}

fn flatten(tree: &mut LayerTree, dir: BTreeMap<Vec<u8>, Node>, prefix: &[u8]) {
    for (name, node) in dir {
        let mut path = prefix.to_vec();
        path.extend_from_slice(&name);
        match node {
            Node::Dir { mode, children } => {
                path.push(b'/');
                tree.push(Entry::directory(path.clone(), mode));
                flatten(tree, children, &path);
            }
            Node::Link { target, .. } => tree.push(Entry::symlink(path, target)),
            Node::File { source, size, mode } => tree.push(Entry::file(
                path,
                mode,
                size,
                Source::Path(source.into_boxed_path()),
            )),
            Node::Whiteout => tree.push(Entry::file(path, 0o644, 0, Source::Empty)),
        }
    }
}

impl Customisation {
    /// No contents, extra directories or removals: no customisation layer at all.
    pub fn is_empty(&self) -> bool {
        self.contents.is_empty() && self.extra_dirs.is_empty() && self.remove.is_empty()
    }

    /// Removals hide a base image's paths. A removal of the store directory, one of its
    /// parents, or a path in one of the image's own store paths would hide the image's own
    /// layers (whether or not it has a base): refused.
    pub fn check_removals(&self, store_dir: &str, own_paths: &[String]) -> Result<()> {
        for path in &self.remove {
            components(path).map_err(|e| Error::value(e).about(Setting::Remove))?;
        }
        for path in &self.remove {
            let covers_store = store_dir == path.as_str()
                || store_dir
                    .strip_prefix(path.as_str())
                    .is_some_and(|rest| rest.starts_with('/') || path == "/");
            let own = own_paths.iter().find(|own| {
                path == *own
                    || path
                        .strip_prefix(own.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            });
            if covers_store || own.is_some() {
                return Err(Error::value(format!(
                    "removing {} would hide the image's own store paths ({})",
                    shown(path),
                    shown(own.map_or(store_dir, String::as_str))
                ))
                .about(Setting::Remove));
            }
        }
        Ok(())
    }

    /// Checks what can be checked before anything is read: permission rules need a layer.
    pub fn check(&self) -> Result<()> {
        if self.is_empty() && !self.perms.is_empty() {
            return Err(Error::value(
                "permission rules apply to the customisation layer, which is empty: add \
                 contents, an extra directory or a removal",
            )
            .about(Setting::Perms));
        }
        Ok(())
    }

    /// Builds the layer. `options` gives the mtime, the default owner and the store root.
    pub fn layer(&self, options: &LayerOptions) -> Result<LayerTree> {
        let mut root = contents_tree(&self.contents, options)?;
        for dir in &self.extra_dirs {
            let meta = fs::metadata(dir).map_err(|e| {
                Error::io("reading the extra directory", dir, e).about(Setting::ExtraDir)
            })?;
            if !meta.is_dir() {
                return Err(Error::value(format!(
                    "the extra directory {} is not a directory",
                    shown_path(dir)
                ))
                .about(Setting::ExtraDir));
            }
            copy_tree(&mut root, dir)?;
        }
        for path in &self.remove {
            add_whiteout(&mut root, path)?;
        }
        // As dockerTools' (made by fakeroot): root's, whatever the store layers' owner; --perms
        // gives other owners.
        let root_owned = LayerOptions {
            uid: 0,
            gid: 0,
            ..options.clone()
        };
        let mut tree = LayerTree::empty(&root_owned);
        flatten(&mut tree, root, b"");
        self.apply_perms(&mut tree)?;
        Ok(tree)
    }

    fn apply_perms(&self, tree: &mut LayerTree) -> Result<()> {
        let (uid, gid) = (tree.uid, tree.gid);
        let entries = tree.listed_mut();
        // Each entry's image path once; exact rules (a recorded tree has one per entry) are
        // found by path instead of tried against every entry.
        let paths: Vec<Vec<u8>> = entries
            .iter()
            .map(|entry| {
                let mut path = b"/".to_vec();
                path.extend_from_slice(entry.name.strip_suffix(b"/").unwrap_or(&entry.name));
                path
            })
            .collect();
        let by_path: HashMap<&[u8], usize> = paths
            .iter()
            .enumerate()
            .map(|(i, path)| (path.as_slice(), i))
            .collect();
        for rule in &self.perms {
            let matcher = Matcher::new(rule)?;
            let hits: Vec<usize> = if rule.regex || rule.recursive {
                (0..paths.len())
                    .filter(|&i| matcher.matches(&paths[i]))
                    .collect()
            } else {
                by_path
                    .get(rule.path.as_bytes())
                    .copied()
                    .into_iter()
                    .collect()
            };
            let matched = hits.len();
            for i in hits {
                let entry = &mut entries[i];
                let owner = entry.owner.get_or_insert_with(|| {
                    Box::new(Owner {
                        uid,
                        gid,
                        uname: String::new(),
                        gname: String::new(),
                    })
                });
                if let Some(uid) = rule.uid {
                    owner.uid = uid;
                }
                if let Some(gid) = rule.gid {
                    owner.gid = gid;
                }
                if let Some(uname) = &rule.uname {
                    owner.uname = uname.clone();
                }
                if let Some(gname) = &rule.gname {
                    owner.gname = gname.clone();
                }
                if let (Some(mode), false) =
                    (rule.mode, entry.kind == crate::tarball::Kind::Symlink)
                {
                    entry.mode = mode;
                }
            }
            if matched == 0 {
                return Err(Error::input(
                    &rule.origin,
                    format!(
                        "the rule for {} matches nothing in the customisation layer; is the \
                         path spelled right?",
                        quoted(&rule.path)
                    ),
                )
                .about(Setting::Perms));
            }
        }
        // A large uid or gid needs a PAX record: count again.
        tree.recount();
        Ok(())
    }
}

/// Decides whether a rule applies to an image path.
struct Matcher<'a> {
    rule: &'a PermRule,
    regex: Option<regex::bytes::Regex>,
}

impl<'a> Matcher<'a> {
    fn new(rule: &'a PermRule) -> Result<Self> {
        let regex = if rule.regex {
            Some(
                regex::bytes::Regex::new(&format!("^(?:{})$", rule.path)).map_err(|e| {
                    Error::input(
                        &rule.origin,
                        format!(
                            "{} is not a valid regular expression: {e}",
                            quoted(&rule.path)
                        ),
                    )
                    .about(Setting::Perms)
                })?,
            )
        } else {
            None
        };
        Ok(Matcher { rule, regex })
    }

    fn matches_exactly(&self, path: &[u8]) -> bool {
        match &self.regex {
            Some(regex) => regex.is_match(path),
            None => path == self.rule.path.as_bytes(),
        }
    }

    /// The path itself, or with `recursive` any of its parents.
    fn matches(&self, path: &[u8]) -> bool {
        if self.matches_exactly(path) {
            return true;
        }
        if !self.rule.recursive {
            return false;
        }
        let mut end = path.len();
        while let Some(slash) = path[..end].iter().rposition(|&b| b == b'/') {
            if slash == 0 {
                return false;
            }
            if self.matches_exactly(&path[..slash]) {
                return true;
            }
            end = slash;
        }
        false
    }
}

/// One rule as the perms file writes it; unknown or repeated keys are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleJson {
    path: String,
    #[serde(default)]
    regex: bool,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default, deserialize_with = "user_name")]
    uname: Option<String>,
    #[serde(default, deserialize_with = "user_name")]
    gname: Option<String>,
    #[serde(default, deserialize_with = "octal_mode")]
    mode: Option<u32>,
}

/// A user or group name as a tar header holds it.
fn user_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    if name.len() <= 31 && name.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Some(name))
    } else {
        Err(D::Error::custom(format!(
            "{} is not a name of at most 31 printable ASCII characters",
            quoted(&name)
        )))
    }
}

/// A mode as an octal string ("0750"), so that it reads as `chmod` takes it.
fn octal_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(d)?;
    match u32::from_str_radix(&text, 8) {
        Ok(mode) if mode <= 0o7777 && !text.is_empty() => Ok(Some(mode)),
        _ => Err(D::Error::custom(format!(
            "{} is not an octal mode like \"0750\"",
            quoted(&text)
        ))),
    }
}

/// Reads a perms file: a JSON list of rules.
pub fn read_perms(path: &Path) -> Result<Vec<PermRule>> {
    crate::json_file::read_bytes(path)
        .and_then(|bytes| parse_perms(&path.display().to_string(), &bytes))
        .map_err(|e| e.about(Setting::Perms))
}

/// Parses a `--perms` file's bytes (`name` is used in messages).
pub fn parse_perms(name: &str, bytes: &[u8]) -> Result<Vec<PermRule>> {
    let rules: Vec<RuleJson> = crate::json_file::parse_typed(name, bytes)?;
    rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            let at = format!("{}: $[{i}]", shown(name));
            if !rule.regex {
                components(&rule.path).map_err(|e| Error::input(&at, e))?;
            }
            Ok(PermRule {
                path: rule.path,
                regex: rule.regex,
                recursive: rule.recursive,
                uid: rule.uid.map(u64::from),
                gid: rule.gid.map(u64::from),
                uname: rule.uname,
                gname: rule.gname,
                mode: rule.mode,
                origin: at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tarball::{Kind, TarStream};
    use serde_json::json;
    use std::os::unix::fs::symlink;

    use crate::layer::tests::options;

    fn bytes(value: serde_json::Value) -> Vec<u8> {
        value.to_string().into_bytes()
    }

    fn listing(tree: &LayerTree) -> Vec<(String, Kind, u32, String, u64)> {
        tree.listed()
            .iter()
            .map(|e| {
                (
                    shown_image_path(&e.name),
                    e.kind,
                    e.mode,
                    shown_image_path(&e.link),
                    e.owner.as_ref().map_or(0, |o| o.uid),
                )
            })
            .collect()
    }

    /// Two packages with a shared bin/ directory.
    fn packages(root: &Path) -> (String, String) {
        let a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-busybox".to_string();
        let b = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app".to_string();
        let da = root.join(a.trim_start_matches('/'));
        let db = root.join(b.trim_start_matches('/'));
        fs::create_dir_all(da.join("bin")).unwrap();
        fs::create_dir_all(db.join("bin")).unwrap();
        fs::create_dir_all(db.join("share/app")).unwrap();
        fs::write(da.join("bin/busybox"), "bb").unwrap();
        symlink("busybox", da.join("bin/sh")).unwrap();
        fs::write(db.join("bin/app"), "app").unwrap();
        fs::write(db.join("share/app/data"), "d").unwrap();
        (a, b)
    }

    #[test]
    fn contents_merge_like_symlink_join() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = packages(dir.path());
        let custom = Customisation {
            contents: vec![a.clone(), b.clone()],
            ..Default::default()
        };
        let tree = custom.layer(&options(dir.path())).unwrap();
        let entries: Vec<(String, String)> = listing(&tree)
            .into_iter()
            .map(|(n, _, _, l, _)| (n, l))
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin/".to_string(), String::new()),
                ("bin/app".to_string(), format!("{b}/bin/app")),
                ("bin/busybox".to_string(), format!("{a}/bin/busybox")),
                ("bin/sh".to_string(), format!("{a}/bin/sh")),
                ("share/".to_string(), String::new()),
                ("share/app/".to_string(), String::new()),
                ("share/app/data".to_string(), format!("{b}/share/app/data")),
            ]
        );
        let mut out = Vec::new();
        tree.write_to(&mut out).unwrap();
        assert_eq!(out.len() as u64, tree.tar_len());
    }

    #[test]
    fn conflicting_contents_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = packages(dir.path());
        fs::write(
            dir.path().join(b.trim_start_matches('/')).join("bin/sh"),
            "other",
        )
        .unwrap();
        let custom = Customisation {
            contents: vec![a.clone(), b.clone()],
            ..Default::default()
        };
        let err = custom.layer(&options(dir.path())).unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "/bin/sh is provided twice: a link from the contents {a} and a link from the \
                 contents {b}; drop one of them from the contents or make them agree"
            )
        );
        // The same path twice is no conflict.
        let same = Customisation {
            contents: vec![a.clone(), a],
            ..Default::default()
        };
        assert!(same.layer(&options(dir.path())).is_ok());
    }

    /// What nix/ does with extraCommands: the contents linked into a directory, commands
    /// changing it, the modes recorded, the tree stored (the store keeps 0555 and 0444), then
    /// given back as an extra directory with the recorded modes.
    #[test]
    fn linked_contents_with_recorded_modes_survive_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = packages(dir.path());
        let tree = dir.path().join("out/tree");
        link_contents(&[a.clone(), b.clone()], &options(dir.path()), &tree).unwrap();
        assert_eq!(
            fs::read_link(tree.join("bin/sh")).unwrap(),
            Path::new(&format!("{a}/bin/sh"))
        );
        assert_eq!(
            fs::read_link(tree.join("share/app/data")).unwrap(),
            Path::new(&format!("{b}/share/app/data"))
        );
        // The commands.
        fs::create_dir(tree.join("tmp")).unwrap();
        fs::set_permissions(tree.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(tree.join("key"), "secret").unwrap();
        fs::set_permissions(tree.join("key"), fs::Permissions::from_mode(0o600)).unwrap();
        let recorded = record_modes(&tree, false).unwrap();
        let rules = parse_perms("perms.json", recorded.as_bytes()).unwrap();
        assert_eq!(
            rules.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["/bin", "/key", "/share", "/share/app", "/tmp"]
        );
        // The store's modes.
        for (path, mode) in [("tmp", 0o555), ("key", 0o444), ("bin", 0o555)] {
            fs::set_permissions(tree.join(path), fs::Permissions::from_mode(mode)).unwrap();
        }
        let custom = Customisation {
            extra_dirs: vec![tree.clone()],
            perms: rules,
            ..Default::default()
        };
        let l = listing(&custom.layer(&options(dir.path())).unwrap());
        let mode_of = |name: &str| l.iter().find(|e| e.0 == name).map(|e| e.2);
        assert_eq!(mode_of("tmp/"), Some(0o1777));
        assert_eq!(mode_of("key"), Some(0o600));
        assert_eq!(mode_of("bin/"), Some(0o755));
        assert_eq!(mode_of("bin/sh"), Some(0o777), "a symlink keeps its mode");
        for (path, mode) in [("tmp", 0o755), ("bin", 0o755)] {
            fs::set_permissions(tree.join(path), fs::Permissions::from_mode(mode)).unwrap();
        }

        let err = link_contents(&[a], &options(dir.path()), &tree).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
    }

    /// With owners, every entry keeps its numeric owner, links too (without a mode).
    #[test]
    fn recorded_owners_cover_every_entry() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("data")).unwrap();
        fs::write(tree.join("data/file"), "x").unwrap();
        fs::set_permissions(tree.join("data"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(tree.join("data/file"), fs::Permissions::from_mode(0o644)).unwrap();
        symlink("data/file", tree.join("link")).unwrap();
        let meta = fs::symlink_metadata(tree.join("link")).unwrap();
        let rules: serde_json::Value =
            serde_json::from_str(&record_modes(&tree, true).unwrap()).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        assert_eq!(
            rules,
            json!([
                {"path": "/data", "mode": "0755", "uid": uid, "gid": gid},
                {"path": "/data/file", "mode": "0644", "uid": uid, "gid": gid},
                {"path": "/link", "uid": uid, "gid": gid},
            ])
        );
        let parsed = parse_perms("perms.json", rules.to_string().as_bytes()).unwrap();
        assert_eq!(parsed[2].mode, None);
        assert_eq!(parsed[2].uid, Some(u64::from(uid)));
    }

    /// A FIFO in a recorded tree is named and refused, never opened (which would block).
    #[test]
    fn recording_a_tree_with_a_fifo_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let err = record_modes(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("pipe") && err.contains("a fifo"), "{err}");
    }

    #[test]
    fn extra_dirs_keep_modes_and_win_over_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = packages(dir.path());
        let extra = dir.path().join("extra");
        fs::create_dir_all(extra.join("bin")).unwrap();
        fs::create_dir_all(extra.join("tmp")).unwrap();
        fs::set_permissions(extra.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(extra.join("bin/sh"), "replaced").unwrap();
        fs::set_permissions(extra.join("bin/sh"), fs::Permissions::from_mode(0o750)).unwrap();
        let custom = Customisation {
            contents: vec![a],
            extra_dirs: vec![extra],
            ..Default::default()
        };
        let tree = custom.layer(&options(dir.path())).unwrap();
        let l = listing(&tree);
        assert!(l.contains(&(
            "tmp/".to_string(),
            Kind::Directory,
            0o1777,
            String::new(),
            0
        )));
        assert!(l.contains(&("bin/sh".to_string(), Kind::File, 0o750, String::new(), 0)));
    }

    #[test]
    fn the_customisation_layer_is_roots_whatever_the_store_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = packages(dir.path());
        let custom = Customisation {
            contents: vec![a],
            ..Default::default()
        };
        let store_owner = LayerOptions {
            uid: 1000,
            gid: 100,
            ..options(dir.path())
        };
        let tree = custom.layer(&store_owner).unwrap();
        let l = listing(&tree);
        assert!(!l.is_empty());
        assert!(l.iter().all(|(_, _, _, _, uid)| *uid == 0), "{l:?}");
    }

    #[test]
    fn perms_set_owner_and_mode_recursively_and_typos_fail() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra");
        fs::create_dir_all(extra.join("var/lib/app/cache")).unwrap();
        fs::write(extra.join("var/lib/app/cache/x"), "x").unwrap();
        fs::write(extra.join("var/lib/other"), "o").unwrap();
        let rules = parse_perms(
            "perms.json",
            &bytes(
                json!([{"path": "/var/lib/app", "recursive": true, "uid": 1000, "gid": 1000,
                     "uname": "app", "gname": "app", "mode": "0750"}]),
            ),
        )
        .unwrap();
        let custom = Customisation {
            extra_dirs: vec![extra.clone()],
            perms: rules,
            ..Default::default()
        };
        let tree = custom.layer(&options(dir.path())).unwrap();
        let owned: Vec<String> = listing(&tree)
            .into_iter()
            .filter(|(_, _, _, _, uid)| *uid == 1000)
            .map(|(n, _, mode, _, _)| format!("{n} {mode:o}"))
            .collect();
        assert_eq!(
            owned,
            vec![
                "var/lib/app/ 750",
                "var/lib/app/cache/ 750",
                "var/lib/app/cache/x 750"
            ]
        );
        let typo = Customisation {
            extra_dirs: vec![extra],
            perms: parse_perms(
                "perms.json",
                &bytes(json!([{"path": "/var/lib/ap", "uid": 1}])),
            )
            .unwrap(),
            ..Default::default()
        };
        assert_eq!(
            typo.layer(&options(dir.path())).unwrap_err().message(),
            "perms.json: $[0]: the rule for \"/var/lib/ap\" matches nothing in the customisation \
             layer; is the path spelled right?"
        );
        let regex = Customisation {
            extra_dirs: vec![dir.path().join("extra")],
            perms: parse_perms(
                "p",
                &bytes(json!([{"path": "/var/lib/[a-z]+", "regex": true, "gid": 5}])),
            )
            .unwrap(),
            ..Default::default()
        };
        let tree = regex.layer(&options(dir.path())).unwrap();
        let with_gid: Vec<String> = tree
            .listed()
            .iter()
            .filter(|e| e.owner.as_ref().is_some_and(|o| o.gid == 5))
            .map(|e| shown_image_path(&e.name))
            .collect();
        assert_eq!(with_gid, vec!["var/lib/app/", "var/lib/other"]);
    }

    #[test]
    fn perms_file_errors() {
        let cases = [
            ("{}", "p:1:1: expected a sequence, found an object"),
            (
                r#"[{"path": "/x", "usr": 1}]"#,
                "p:1:21: $[0]: unknown key \"usr\"; the keys are: path, regex, recursive, uid, gid, uname, gname, mode",
            ),
            (r#"[{"uid": 1}]"#, "p:1:11: $[0]: missing \"path\""),
            (
                r#"[{"path": "/x", "mode": "999"}]"#,
                "p:1:30: $[0].mode: \"999\" is not an octal mode like \"0750\"",
            ),
            (
                r#"[{"path": "/x", "uid": -1}]"#,
                "p:1:25: $[0].uid: expected an integer from 0 to 4294967295, found -1",
            ),
            (
                r#"[{"path": "/x", "gid": 4294967296}]"#,
                "p:1:33: $[0].gid: expected an integer from 0 to 4294967295, found 4294967296",
            ),
            (
                r#"[{"path": "x/y"}]"#,
                "p: $[0]: \"x/y\" is not an absolute, normalised path like /etc/motd",
            ),
            (
                r#"[{"path": "/x", "uid": 1, "uid": 2}]"#,
                "p:1:31: $[0]: the key \"uid\" is given twice",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                parse_perms("p", text.as_bytes()).unwrap_err().message(),
                message,
                "{text}"
            );
        }
    }

    #[test]
    fn whiteouts_hide_base_paths() {
        let dir = tempfile::tempdir().unwrap();
        let custom = Customisation {
            remove: vec!["/etc/motd".to_string()],
            ..Default::default()
        };
        let tree = custom.layer(&options(dir.path())).unwrap();
        let names: Vec<String> = listing(&tree).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["etc/", "etc/.wh.motd"]);
        let bad = Customisation {
            remove: vec!["etc/../x".to_string()],
            ..Default::default()
        };
        assert_eq!(
            bad.layer(&options(dir.path())).unwrap_err().message(),
            "\"etc/../x\" is not an absolute, normalised path like /etc/motd"
        );
    }
}
