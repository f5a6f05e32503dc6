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

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as Slot;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Entry, LayerOptions, LayerTree, Owner, Source, sorted_children, special_file};
use crate::error::{Error, Result};

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

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
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
    for name in sorted_children(source)? {
        let name = name.as_bytes().to_vec();
        let child = source.join(std::ffi::OsStr::from_bytes(&name));
        let meta = fs::symlink_metadata(&child).map_err(|e| Error::io("reading", &child, e))?;
        let location = join(store_location, &name);
        let child_image = join(image_path, &name);
        let conflict = |existing: &Node| {
            Error::new(format!(
                "{} is provided twice: {} and a {} from {origin}; drop one of them from the \
                 contents or make them agree",
                shown(&child_image),
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

/// Copies `source` into `dir` as it is, replacing what contents put there.
fn copy_tree(dir: &mut BTreeMap<Vec<u8>, Node>, source: &Path) -> Result<()> {
    for name in sorted_children(source)? {
        let name = name.as_bytes().to_vec();
        let child = source.join(std::ffi::OsStr::from_bytes(&name));
        let meta = fs::symlink_metadata(&child).map_err(|e| Error::io("reading", &child, e))?;
        let mode = meta.permissions().mode() & 0o7777;
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
                    origin: format!("--extra-dir {}", source.display()),
                },
            );
        } else {
            return Err(special_file(&child, &meta, "an --extra-dir"));
        }
    }
    Ok(())
}

/// Checks an absolute, normalised image path and splits it into components.
fn components<'a>(flag: &str, path: &'a str) -> Result<Vec<&'a str>> {
    let parts: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
    let ok = path.starts_with('/')
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != "..");
    if ok {
        Ok(parts)
    } else {
        Err(Error::new(format!(
            "{flag} {path:?} is not an absolute, normalised path like /etc/motd"
        )))
    }
}

fn add_whiteout(root: &mut BTreeMap<Vec<u8>, Node>, path: &str) -> Result<()> {
    let parts = components("--remove", path)?;
    let (leaf, parents) = parts.split_last().unwrap_or((&"", &[]));
    let mut dir = root;
    for part in parents {
        let node = dir
            .entry(part.as_bytes().to_vec())
            .or_insert_with(Node::empty_dir);
        match node {
            Node::Dir { children, .. } => dir = children,
            other => {
                return Err(Error::new(format!(
                    "--remove {path}: /{} is {} in the customisation layer, not a directory",
                    part,
                    other.describe()
                )));
            }
        }
    }
    if dir.contains_key(leaf.as_bytes()) {
        return Err(Error::new(format!(
            "--remove {path}, but the customisation layer itself provides {path}"
        )));
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

    /// Builds the layer. `options` gives the mtime, the default owner and the store root.
    pub fn layer(&self, options: &LayerOptions) -> Result<LayerTree> {
        let mut root: BTreeMap<Vec<u8>, Node> = BTreeMap::new();
        for store_path in &self.contents {
            let source = options.source_of(store_path);
            let meta = fs::metadata(&source).map_err(|e| Error::io("reading", &source, e))?;
            if !meta.is_dir() {
                return Err(Error::new(format!(
                    "--contents {store_path} is not a directory; contents are linked at / by \
                     their top-level tree"
                )));
            }
            let origin = format!("--contents {store_path}");
            link_tree(&mut root, &source, store_path.as_bytes(), b"", &origin)?;
        }
        for dir in &self.extra_dirs {
            let meta = fs::metadata(dir).map_err(|e| Error::io("reading --extra-dir", dir, e))?;
            if !meta.is_dir() {
                return Err(Error::new(format!(
                    "--extra-dir {} is not a directory",
                    dir.display()
                )));
            }
            copy_tree(&mut root, dir)?;
        }
        for path in &self.remove {
            add_whiteout(&mut root, path)?;
        }
        let mut tree = LayerTree::empty(options);
        flatten(&mut tree, root, b"");
        self.apply_perms(&mut tree)?;
        Ok(tree)
    }

    fn apply_perms(&self, tree: &mut LayerTree) -> Result<()> {
        for rule in &self.perms {
            let matcher = Matcher::new(rule)?;
            let mut matched = 0;
            let (uid, gid) = (tree.uid, tree.gid);
            for entry in tree.listed_mut() {
                let mut path = b"/".to_vec();
                path.extend_from_slice(entry.name.strip_suffix(b"/").unwrap_or(&entry.name));
                if !matcher.matches(&path) {
                    continue;
                }
                matched += 1;
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
                return Err(Error::new(format!(
                    "{}: the rule for {:?} matches nothing in the customisation layer; is the \
                     path spelled right?",
                    rule.origin, rule.path
                )));
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
                    Error::new(format!(
                        "{}: {:?} is not a valid regular expression: {e}",
                        rule.origin, rule.path
                    ))
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

/// Reads `--perms FILE`: a JSON list of rules.
pub fn read_perms(path: &Path) -> Result<Vec<PermRule>> {
    let value = crate::json_file::read(path)?;
    parse_perms(&path.display().to_string(), &value)
}

const PERM_KEYS: &[&str] = &[
    "path",
    "regex",
    "recursive",
    "uid",
    "gid",
    "uname",
    "gname",
    "mode",
];

fn parse_perms(name: &str, value: &Value) -> Result<Vec<PermRule>> {
    let Value::Array(items) = value else {
        return Err(Error::new(format!(
            "{name}: expected a list of rules like [{{\"path\": \"/var/lib/app\", \"uid\": 1000}}]"
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{name}: $[{i}]");
            let fail = |what: String| Error::new(format!("{at}: {what}"));
            let Value::Object(fields) = item else {
                return Err(fail("expected an object".to_string()));
            };
            for key in fields.keys() {
                if !PERM_KEYS.contains(&key.as_str()) {
                    return Err(fail(format!(
                        "unknown key {key:?}; the keys are: {}",
                        PERM_KEYS.join(", ")
                    )));
                }
            }
            let path = match fields.get("path") {
                Some(Value::String(p)) => p.clone(),
                _ => {
                    return Err(fail(
                        "\"path\" must be a string like \"/var/lib/app\"".into(),
                    ));
                }
            };
            let flag = |key: &str| match fields.get(key) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(fail(format!("{key:?} must be true or false"))),
            };
            let id = |key: &str| match fields.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| fail(format!("{key:?} must be a non-negative integer"))),
            };
            let user_name = |key: &str| match fields.get(key) {
                None => Ok(None),
                Some(Value::String(s))
                    if s.len() <= 31 && s.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Ok(Some(s.clone()))
                }
                Some(_) => Err(fail(format!(
                    "{key:?} must be a name of at most 31 printable ASCII characters"
                ))),
            };
            let mode = match fields.get("mode") {
                None => None,
                Some(Value::String(s)) => match u32::from_str_radix(s, 8) {
                    Ok(m) if m <= 0o7777 && !s.is_empty() => Some(m),
                    _ => {
                        return Err(fail(format!(
                            "\"mode\" {s:?} is not an octal mode like \"0750\""
                        )));
                    }
                },
                Some(_) => {
                    return Err(fail(
                        "\"mode\" must be an octal string like \"0750\"".into(),
                    ));
                }
            };
            let regex = flag("regex")?;
            if !regex {
                components("a perms path", &path).map_err(|e| fail(e.message().to_string()))?;
            }
            Ok(PermRule {
                regex,
                recursive: flag("recursive")?,
                uid: id("uid")?,
                gid: id("gid")?,
                uname: user_name("uname")?,
                gname: user_name("gname")?,
                mode,
                origin: at.clone(),
                path,
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

    fn listing(tree: &LayerTree) -> Vec<(String, Kind, u32, String, u64)> {
        tree.listed()
            .iter()
            .map(|e| {
                (
                    shown(&e.name),
                    e.kind,
                    e.mode,
                    shown(&e.link),
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
                "/bin/sh is provided twice: a link from --contents {a} and a link from \
                 --contents {b}; drop one of them from the contents or make them agree"
            )
        );
        // The same path twice is no conflict.
        let same = Customisation {
            contents: vec![a.clone(), a],
            ..Default::default()
        };
        assert!(same.layer(&options(dir.path())).is_ok());
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
    fn perms_set_owner_and_mode_recursively_and_typos_fail() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra");
        fs::create_dir_all(extra.join("var/lib/app/cache")).unwrap();
        fs::write(extra.join("var/lib/app/cache/x"), "x").unwrap();
        fs::write(extra.join("var/lib/other"), "o").unwrap();
        let rules = parse_perms(
            "perms.json",
            &json!([{"path": "/var/lib/app", "recursive": true, "uid": 1000, "gid": 1000,
                     "uname": "app", "gname": "app", "mode": "0750"}]),
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
            perms: parse_perms("perms.json", &json!([{"path": "/var/lib/ap", "uid": 1}])).unwrap(),
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
                &json!([{"path": "/var/lib/[a-z]+", "regex": true, "gid": 5}]),
            )
            .unwrap(),
            ..Default::default()
        };
        let tree = regex.layer(&options(dir.path())).unwrap();
        let with_gid: Vec<String> = tree
            .listed()
            .iter()
            .filter(|e| e.owner.as_ref().is_some_and(|o| o.gid == 5))
            .map(|e| shown(&e.name))
            .collect();
        assert_eq!(with_gid, vec!["var/lib/app/", "var/lib/other"]);
    }

    #[test]
    fn perms_file_errors() {
        let cases = [
            (
                json!({}),
                "p: expected a list of rules like [{\"path\": \"/var/lib/app\", \"uid\": 1000}]",
            ),
            (
                json!([{"path": "/x", "usr": 1}]),
                "p: $[0]: unknown key \"usr\"; the keys are: path, regex, recursive, uid, gid, uname, gname, mode",
            ),
            (
                json!([{"uid": 1}]),
                "p: $[0]: \"path\" must be a string like \"/var/lib/app\"",
            ),
            (
                json!([{"path": "/x", "mode": "999"}]),
                "p: $[0]: \"mode\" \"999\" is not an octal mode like \"0750\"",
            ),
            (
                json!([{"path": "/x", "uid": -1}]),
                "p: $[0]: \"uid\" must be a non-negative integer",
            ),
            (
                json!([{"path": "x/y"}]),
                "p: $[0]: a perms path \"x/y\" is not an absolute, normalised path like /etc/motd",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(parse_perms("p", &value).unwrap_err().message(), message);
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
            "--remove \"etc/../x\" is not an absolute, normalised path like /etc/motd"
        );
    }
}
