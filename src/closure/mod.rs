//! Stage 1: the closure graph — the store paths of an image and the references between them,
//! read from any of the formats Nix writes.
//!
//! The format of each file is detected from its content:
//! - `exportReferencesGraph`'s text format (path, deriver, count, references),
//! - closureInfo's `registration` (`nix-store --load-db`: path, narHash, narSize, deriver, count,
//!   references),
//! - JSON: `exportReferencesGraph` with `__structuredAttrs` (a list of `{path, references, ...}`,
//!   alone or inside the whole `.attrs.json`), and `nix path-info --json --recursive` in its
//!   older list form and its newer object form keyed by path.
//!
//! Several files are merged into one graph. The graph is checked the way Nix guarantees it:
//! absolute normalised store paths in one store directory, every reference inside the graph,
//! no cycle between distinct paths (a self-reference is normal and dropped).

mod json;
mod text;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::error::{Error, Result, Setting, quoted, shown};

/// Where a record came from, for error messages: `file:line` or `file: $[3]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Shared by every record of a file: a closure has 100,000 of them.
    pub file: Arc<str>,
    pub at: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Line(usize),
    JsonPath(String),
    /// The `index`-th item of the list at the JSON path `list`, spelt out only for a message.
    JsonItem {
        list: Arc<str>,
        index: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Location::Line(line) => write!(f, "{}:{line}", shown(&self.file)),
            Location::JsonPath(path) => write!(f, "{}: {}", shown(&self.file), shown(path)),
            Location::JsonItem { list, index } => {
                write!(
                    f,
                    "{}: {}",
                    shown(&self.file),
                    shown(&format!("{list}[{index}]"))
                )
            }
        }
    }
}

/// One store path as a closure file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRecord {
    pub path: String,
    pub references: Vec<String>,
    pub nar_size: Option<u64>,
    pub nar_hash: Option<String>,
    /// The `.drv` that built it, where the format names one.
    pub deriver: Option<String>,
    pub origin: Origin,
}

/// A validated closure: store paths sorted bytewise, references as indices into them.
#[derive(Clone, Debug)]
pub struct ClosureGraph {
    store_dir: String,
    paths: Vec<String>,
    references: Vec<Vec<usize>>,
    /// The reverse of `references`: every planner walks both ways.
    referrers: Vec<Vec<usize>>,
    nar_sizes: Vec<Option<u64>>,
    /// The NAR hashes the closure gives (the layer cache keys layers by them).
    nar_hashes: Vec<Option<String>>,
    derivers: Vec<Option<String>>,
    /// Where each path was first listed in the closure files (in the order given), the order
    /// nixpkgs' own tools see and break ties by.
    listed: Vec<usize>,
    /// Every path after all the paths that reference it.
    topological_order: Vec<usize>,
    /// Which paths reference themselves: the graph drops those references (they carry no
    /// order), a Nix database registers them.
    self_referencing: Vec<bool>,
}

/// Options of `load`: which key of an `.attrs.json` holds the graph.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub closure_key: Option<String>,
    /// The most bytes one closure file may hold (0: the default,
    /// [`crate::json_file::DEFAULT_MAX_CLOSURE`]).
    pub max_size: u64,
    /// Paths of the closure left out of the graph, as nixpkgs' `excludePaths`: files that are
    /// roots only to bring in what they reference (the image's config, the customisation
    /// tree), which are not themselves part of the image.
    pub exclude: Vec<String>,
}

impl ClosureGraph {
    /// Reads and merges the closure files.
    pub fn load(files: &[PathBuf], options: &LoadOptions) -> Result<Self> {
        if files.is_empty() {
            return Err(Error::value(
                "no closure file given: give exportReferencesGraph's output, closureInfo's \
                 registration or the output of nix path-info --json --recursive",
            )
            .about(Setting::Closure));
        }
        let mut records = Vec::new();
        for file in files {
            let limit = match options.max_size {
                0 => crate::json_file::DEFAULT_MAX_CLOSURE,
                limit => limit,
            };
            let bytes = crate::json_file::read_limited(file, limit)
                .map_err(|e| e.about(Setting::Closure))?;
            records.extend(parse(file, &bytes, options).map_err(|e| e.about(Setting::Closure))?);
        }
        let store_dir = common_store_dir(&records).map_err(|e| e.about(Setting::Closure))?;
        // What is left may be nothing: an image of a config alone has no store path.
        let records = leave_out(records, &options.exclude)?;
        Self::from_records_in(store_dir, records).map_err(|e| e.about(Setting::Closure))
    }

    /// Merges and validates records from one or more files.
    pub fn from_records(records: Vec<PathRecord>) -> Result<Self> {
        let store_dir = common_store_dir(&records)?;
        Self::from_records_in(store_dir, records)
    }

    /// [`Self::from_records`] of records all in `store_dir`.
    fn from_records_in(store_dir: String, records: Vec<PathRecord>) -> Result<Self> {
        let (merged, listed) = merge_duplicates(records)?;
        let references = resolve_references(&merged)?;
        let self_referencing = merged
            .iter()
            .map(|r| r.references.contains(&r.path))
            .collect();
        let referrers = reverse(&references);
        let nar_sizes = merged.iter().map(|r| r.nar_size).collect();
        let nar_hashes = merged.iter().map(|r| r.nar_hash.clone()).collect();
        let derivers = merged.iter().map(|r| r.deriver.clone()).collect();
        let paths = merged.into_iter().map(|r| r.path).collect();
        let mut graph = ClosureGraph {
            store_dir,
            paths,
            references,
            referrers,
            nar_sizes,
            nar_hashes,
            derivers,
            listed,
            topological_order: Vec::new(),
            self_referencing,
        };
        graph.sort_topologically()?;
        Ok(graph)
    }

    /// The graph on some of its paths (`keep`, ascending indices) with some of the references
    /// between them (`edges`, pairs of indices into this graph): a part of a graph is a graph
    /// with no need to read or check anything again. Index `i` of the part is `keep[i]` here.
    pub fn part(
        &self,
        keep: &[usize],
        edges: impl Iterator<Item = (usize, usize)>,
    ) -> Result<Self> {
        let mut position = vec![usize::MAX; self.len()];
        for (i, &x) in keep.iter().enumerate() {
            position[x] = i;
        }
        let mut references = vec![Vec::new(); keep.len()];
        for (a, b) in edges {
            if position[a] != usize::MAX && position[b] != usize::MAX {
                references[position[a]].push(position[b]);
            }
        }
        for refs in &mut references {
            refs.sort_unstable();
            refs.dedup();
        }
        let mut graph = ClosureGraph {
            store_dir: self.store_dir.clone(),
            paths: keep.iter().map(|&x| self.paths[x].clone()).collect(),
            referrers: reverse(&references),
            references,
            nar_sizes: keep.iter().map(|&x| self.nar_sizes[x]).collect(),
            nar_hashes: keep.iter().map(|&x| self.nar_hashes[x].clone()).collect(),
            derivers: keep.iter().map(|&x| self.derivers[x].clone()).collect(),
            listed: keep.iter().map(|&x| self.listed[x]).collect(),
            topological_order: Vec::new(),
            self_referencing: keep.iter().map(|&x| self.self_referencing[x]).collect(),
        };
        graph.sort_topologically()?;
        Ok(graph)
    }

    /// Orders the paths so that every path comes after all paths that reference it (Kahn's
    /// algorithm); a path left over sits on a cycle, which is named in the error.
    fn sort_topologically(&mut self) -> Result<()> {
        let mut pending = vec![0usize; self.len()];
        for refs in &self.references {
            for &r in refs {
                pending[r] += 1;
            }
        }
        let mut order: Vec<usize> = (0..self.len()).filter(|&i| pending[i] == 0).collect();
        let mut next = 0;
        while next < order.len() {
            let from = order[next];
            next += 1;
            for &to in &self.references[from] {
                pending[to] -= 1;
                if pending[to] == 0 {
                    order.push(to);
                }
            }
        }
        if order.len() == self.len() {
            self.topological_order = order;
            return Ok(());
        }
        Err(self.name_a_cycle())
    }

    fn name_a_cycle(&self) -> Error {
        let mut g: DiGraph<(), ()> = DiGraph::with_capacity(self.len(), 0);
        let nodes: Vec<NodeIndex> = (0..self.len()).map(|_| g.add_node(())).collect();
        for (from, refs) in self.references.iter().enumerate() {
            for &to in refs {
                g.add_edge(nodes[from], nodes[to], ());
            }
        }
        // Name one cycle: inside the first strongly connected component with several paths,
        // walk from its smallest path along references that stay in the component.
        let mut components: Vec<Vec<usize>> = petgraph::algo::tarjan_scc(&g)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut c: Vec<usize> = c.into_iter().map(|n| n.index()).collect();
                c.sort_unstable();
                c
            })
            .collect();
        components.sort();
        let component = &components[0];
        let mut walk = vec![component[0]];
        loop {
            let last = walk[walk.len() - 1];
            let next = self.references[last]
                .iter()
                .copied()
                .find(|r| component.binary_search(r).is_ok())
                .unwrap_or(component[0]);
            if let Some(start) = walk.iter().position(|&p| p == next) {
                let mut cycle: Vec<&str> = walk[start..].iter().map(|&p| self.path(p)).collect();
                cycle.push(self.path(next));
                return Error::input(
                    "",
                    format!(
                        "the closure graph has a cycle, which a Nix closure cannot have: {}",
                        shown(&cycle.join(" -> "))
                    ),
                );
            }
            walk.push(next);
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The store directory all paths live in, e.g. `/nix/store`.
    pub fn store_dir(&self) -> &str {
        &self.store_dir
    }

    pub fn path(&self, index: usize) -> &str {
        &self.paths[index]
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Direct references of a path, without itself, sorted.
    pub fn references(&self, index: usize) -> &[usize] {
        &self.references[index]
    }

    /// Path indices, each after every path that references it (roots first).
    pub fn topological_order(&self) -> &[usize] {
        &self.topological_order
    }

    pub fn nar_size(&self, index: usize) -> Option<u64> {
        self.nar_sizes[index]
    }

    /// The path's NAR hash, when the closure format gives one.
    pub fn nar_hash(&self, index: usize) -> Option<&str> {
        self.nar_hashes[index].as_deref()
    }

    /// The `.drv` path that built path `index`, when the closure file names it.
    pub fn deriver(&self, index: usize) -> Option<&str> {
        self.derivers[index].as_deref()
    }

    /// The closure as `nix-store --load-db` reads it (closureInfo's `registration`): for each
    /// path, its NAR hash and size, an empty deriver, and its references, itself included
    /// where it references itself. Needs a closure file that gives hashes and sizes.
    pub fn registration(&self) -> Result<String> {
        let mut out = String::new();
        for (i, path) in self.paths.iter().enumerate() {
            let (Some(hash), Some(size)) = (self.nar_hash(i), self.nar_size(i)) else {
                return Err(Error::value(format!(
                    "the closure gives no NAR hash or size for {}, which a Nix database \
                     registers: give exportReferencesGraph's JSON (__structuredAttrs), \
                     closureInfo's registration or nix path-info --json --recursive",
                    shown(path)
                ))
                .about(Setting::Closure));
            };
            let mut references: Vec<&str> =
                self.references[i].iter().map(|&r| self.path(r)).collect();
            if self.self_referencing[i] {
                references.push(path);
            }
            references.sort_unstable();
            out.push_str(&format!("{path}\n{hash}\n{size}\n\n{}\n", references.len()));
            for reference in references {
                out.push_str(reference);
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// Where the path was first listed in the closure files, counting across them in order.
    pub fn listed(&self, index: usize) -> usize {
        self.listed[index]
    }

    pub fn index_of(&self, path: &str) -> Option<usize> {
        self.paths.binary_search_by(|p| p.as_str().cmp(path)).ok()
    }

    /// For each path, the paths that reference it (computed once, with the graph).
    pub fn referrers(&self) -> &[Vec<usize>] {
        &self.referrers
    }

    /// The paths that no other path references, in path order.
    pub fn roots(&self) -> Vec<usize> {
        let mut referenced = vec![false; self.len()];
        for refs in &self.references {
            for &r in refs {
                referenced[r] = true;
            }
        }
        (0..self.len()).filter(|&i| !referenced[i]).collect()
    }
}

/// For each path, the paths whose references name it.
fn reverse(references: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut referrers = vec![Vec::new(); references.len()];
    for (from, refs) in references.iter().enumerate() {
        for &to in refs {
            referrers[to].push(from);
        }
    }
    referrers
}

/// The records without the excluded paths. Each must be in the closure (a typo would
/// otherwise leave the file in the image), and no path that stays may reference one: the
/// image would hold a dangling reference.
fn leave_out(records: Vec<PathRecord>, exclude: &[String]) -> Result<Vec<PathRecord>> {
    if exclude.is_empty() {
        return Ok(records);
    }
    let excluded: HashSet<&str> = exclude.iter().map(String::as_str).collect();
    for path in exclude {
        if !records.iter().any(|r| r.path == *path) {
            return Err(Error::value(format!(
                "{} is not in the closure, so it cannot be left out of it",
                shown(path)
            ))
            .about(Setting::Exclude));
        }
    }
    let (out, kept): (Vec<PathRecord>, Vec<PathRecord>) = records
        .into_iter()
        .partition(|r| excluded.contains(r.path.as_str()));
    for record in &kept {
        if let Some(reference) = record
            .references
            .iter()
            .find(|r| excluded.contains(r.as_str()))
        {
            return Err(Error::input(
                &record.origin,
                format!(
                    "{} references {}, which is left out of the image: it would dangle there",
                    shown(&record.path),
                    shown(reference)
                ),
            )
            .about(Setting::Exclude));
        }
    }
    drop(out);
    Ok(kept)
}

/// The one store directory every record's path is in.
fn common_store_dir(records: &[PathRecord]) -> Result<String> {
    let mut store_dir: Option<(&str, &Origin)> = None;
    for record in records {
        let dir = store_dir_of(&record.path).map_err(|why| Error::input(&record.origin, why))?;
        match store_dir {
            None => store_dir = Some((dir, &record.origin)),
            Some((first, first_origin)) if first != dir => {
                return Err(Error::input(
                    &record.origin,
                    format!(
                        "{} is in the store directory {}, but {first_origin} has a path in {}; \
                         a closure lives in one store directory",
                        shown(&record.path),
                        shown(dir),
                        shown(first)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    match store_dir {
        Some((dir, _)) => Ok(dir.to_string()),
        None => Err(Error::input(
            "",
            "the closure is empty: no store path was given",
        )),
    }
}

/// Records sorted by path, each path once: a path listed again must list the same references
/// (its NAR size and hash are taken from whichever record has them).
fn merge_duplicates(records: Vec<PathRecord>) -> Result<(Vec<PathRecord>, Vec<usize>)> {
    // Positions sorted, not the records themselves, which are large to move. Stable, so the
    // first occurrence stays first.
    let mut by_path: Vec<usize> = (0..records.len()).collect();
    by_path.sort_by(|&a, &b| records[a].path.cmp(&records[b].path));
    let mut records: Vec<Option<PathRecord>> = records.into_iter().map(Some).collect();
    let mut merged: Vec<PathRecord> = Vec::with_capacity(records.len());
    let mut listed = Vec::with_capacity(records.len());
    for position in by_path {
        let Some(mut record) = records[position].take() else {
            continue;
        };
        record.references.sort_unstable();
        record.references.dedup();
        match merged.last_mut() {
            Some(existing) if existing.path == record.path => {
                if existing.references != record.references {
                    return Err(Error::input(
                        &record.origin,
                        format!(
                            "{} is listed twice with different references: {} gives [{}], here \
                             it has [{}]",
                            shown(&record.path),
                            existing.origin,
                            shown(&existing.references.join(", ")),
                            shown(&record.references.join(", "))
                        ),
                    ));
                }
                existing.nar_size = existing.nar_size.or(record.nar_size);
                existing.nar_hash = existing.nar_hash.take().or(record.nar_hash);
                existing.deriver = existing.deriver.take().or(record.deriver);
            }
            _ => {
                merged.push(record);
                listed.push(position);
            }
        }
    }
    Ok((merged, listed))
}

/// Each record's references as sorted indices into `merged`; self-references are dropped
/// (normal in Nix, they carry no order) and a reference outside the graph is an error.
fn resolve_references(merged: &[PathRecord]) -> Result<Vec<Vec<usize>>> {
    let index: HashMap<&str, usize, foldhash::quality::RandomState> = merged
        .iter()
        .enumerate()
        .map(|(i, r)| (r.path.as_str(), i))
        .collect();
    merged
        .iter()
        .map(|record| {
            let mut refs = record
                .references
                .iter()
                .filter(|r| **r != record.path)
                .map(|r| {
                    index
                        .get(r.as_str())
                        .copied()
                        .ok_or_else(|| unknown_reference(record, r))
                })
                .collect::<Result<Vec<_>>>()?;
            refs.sort_unstable();
            Ok(refs)
        })
        .collect()
}

/// The error for a reference outside the graph: a malformed path says so, a valid one is missing.
fn unknown_reference(record: &PathRecord, reference: &str) -> Error {
    match store_dir_of(reference) {
        Err(why) => Error::input(
            &record.origin,
            format!("a reference of {}: {why}", shown(&record.path)),
        ),
        Ok(_) => Error::input(
            &record.origin,
            format!(
                "{} references {}, which is not in the closure graph (a closure file lists \
                 every path its paths reference)",
                shown(&record.path),
                shown(reference)
            ),
        ),
    }
}

/// Parses one closure file, detecting its format from the content.
pub fn parse(file: &Path, bytes: &[u8], options: &LoadOptions) -> Result<Vec<PathRecord>> {
    let name = file.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::input(
            format!("{}:{line}", shown(&name)),
            "not UTF-8 text; a closure file is text or JSON written by Nix",
        )
    })?;
    let start = text.trim_start();
    if start.starts_with('[') || start.starts_with('{') {
        json::parse(&name, text, options.closure_key.as_deref())
    } else {
        if options.closure_key.is_some() {
            return Err(Error::input(
                shown(&name),
                "a closure key selects a key of a JSON file (.attrs.json), but this file is not \
                 JSON",
            )
            .about(Setting::ClosureKey));
        }
        text::parse(&name, text)
    }
}

/// Nix's base-32 alphabet, used in the hash part of store path names.
const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Which bytes are in [`NIX_BASE32`]: a table, as every path of a closure is checked.
const IS_NIX_BASE32: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < NIX_BASE32.len() {
        table[NIX_BASE32[i] as usize] = true;
        i += 1;
    }
    table
};

/// Checks that `path` is an absolute, normalised store path `<store dir>/<hash>-<name>` and
/// returns its store directory.
pub fn store_dir_of(path: &str) -> Result<&str, String> {
    let expected = "expected an absolute, normalised store path like \
                    /nix/store/<32-character hash>-<name>";
    let bad = |why: &str| {
        Err(format!(
            "{} is not a store path ({why}); {expected}",
            quoted(path)
        ))
    };
    if !path.starts_with('/') {
        return bad("not absolute");
    }
    if path.ends_with('/') {
        return bad("ends with a slash");
    }
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    if dir.is_empty() {
        return bad("no store directory");
    }
    if dir[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("not normalised");
    }
    let Some((hash, name)) = base.split_once('-') else {
        return bad("no '-' after the hash");
    };
    if hash.len() != 32 || !hash.bytes().all(|b| IS_NIX_BASE32[usize::from(b)]) {
        return bad("the hash part is not 32 characters of Nix's base-32");
    }
    let name_ok = !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
    if !name_ok {
        return bad(
            "the name part is empty, too long, starts with '.' or has a character Nix does not allow",
        );
    }
    Ok(dir)
}

/// The name part of a store path: `/nix/store/<hash>-<name>` gives `<name>`.
pub fn name_of(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const H: [&str; 6] = [
        "00000000000000000000000000000000",
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
        "33333333333333333333333333333333",
        "44444444444444444444444444444444",
        "55555555555555555555555555555555",
    ];

    fn record(path: &str, refs: &[&str]) -> PathRecord {
        sized_record(
            path.to_string(),
            refs.iter().map(|r| r.to_string()).collect(),
            None,
        )
    }

    /// A record as a closure file would give it, for tests of the later stages too.
    pub(crate) fn sized_record(
        path: String,
        references: Vec<String>,
        nar_size: Option<u64>,
    ) -> PathRecord {
        PathRecord {
            path,
            references,
            nar_size,
            nar_hash: None,
            deriver: None,
            origin: Origin {
                file: "t".into(),
                at: Location::Line(1),
            },
        }
    }

    fn p(i: usize, name: &str) -> String {
        format!("/nix/store/{}-{name}", H[i])
    }

    #[test]
    fn store_paths_are_validated() {
        assert_eq!(store_dir_of(&p(0, "hello-2.12")), Ok("/nix/store"));
        assert_eq!(
            store_dir_of(&format!("/tmp/a/b/{}-x", H[1])),
            Ok("/tmp/a/b")
        );
        for bad in [
            format!("nix/store/{}-x", H[0]),
            format!("/nix/store/{}-x/", H[0]),
            format!("/nix//store/{}-x", H[0]),
            format!("/nix/./store/{}-x", H[0]),
            format!("/nix/store/../{}-x", H[0]),
            "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x".to_string(),
            "/nix/store/short-x".to_string(),
            format!("/nix/store/{}", H[0]),
            format!("/nix/store/{}-", H[0]),
            format!("/nix/store/{}-a b", H[0]),
            format!("/{}-x", H[0]),
        ] {
            assert!(store_dir_of(&bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            store_dir_of("relative").unwrap_err(),
            "\"relative\" is not a store path (not absolute); expected an absolute, normalised \
             store path like /nix/store/<32-character hash>-<name>"
        );
    }

    /// The registration reads back as the same closure, self-references included; without
    /// hashes there is none.
    #[test]
    fn registration_reads_back_as_the_closure() {
        let (a, b) = (p(0, "app"), p(1, "lib"));
        let hashed = |path: &str, refs: &[&str], i: u64| PathRecord {
            nar_hash: Some(format!("sha256:{}", "1".repeat(52))),
            deriver: None,
            nar_size: Some(100 + i),
            ..record(path, refs)
        };
        let g =
            ClosureGraph::from_records(vec![hashed(&a, &[&b], 0), hashed(&b, &[&b], 1)]).unwrap();
        let registration = g.registration().unwrap();
        let back = parse(
            Path::new("registration"),
            registration.as_bytes(),
            &LoadOptions::default(),
        )
        .unwrap();
        let seen: Vec<_> = back
            .iter()
            .map(|r| {
                (
                    r.path.as_str(),
                    r.references.iter().map(String::as_str).collect(),
                    r.nar_size,
                    r.nar_hash.as_deref(),
                )
            })
            .collect();
        let hash = format!("sha256:{}", "1".repeat(52));
        assert_eq!(
            seen,
            [
                (a.as_str(), vec![b.as_str()], Some(100), Some(hash.as_str())),
                (b.as_str(), vec![b.as_str()], Some(101), Some(hash.as_str())),
            ]
        );
        let unhashed = ClosureGraph::from_records(vec![record(&a, &[])]).unwrap();
        let err = unhashed.registration().unwrap_err().to_string();
        assert!(err.contains("no NAR hash"), "{err}");
    }

    #[test]
    fn excluded_paths_leave_their_references_behind() {
        let (config, app, lib) = (p(0, "config.json"), p(1, "app"), p(2, "lib"));
        let records = || {
            vec![
                record(&config, &[&app]),
                record(&app, &[&lib]),
                record(&lib, &[]),
            ]
        };
        let kept = leave_out(records(), std::slice::from_ref(&config)).unwrap();
        let g = ClosureGraph::from_records(kept).unwrap();
        assert_eq!(g.paths(), &[app.clone(), lib.clone()]);
        assert_eq!(g.roots(), vec![0]);

        let missing = leave_out(records(), &[p(3, "typo")])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("is not in the closure"), "{missing}");
        let dangling = leave_out(records(), std::slice::from_ref(&lib))
            .unwrap_err()
            .to_string();
        assert!(
            dangling.contains("references") && dangling.contains("it would dangle"),
            "{dangling}"
        );
    }

    #[test]
    fn self_references_are_dropped_and_roots_found() {
        let (a, b) = (p(0, "a"), p(1, "b"));
        let g = ClosureGraph::from_records(vec![record(&a, &[&a, &b]), record(&b, &[&b])]).unwrap();
        assert_eq!(g.references(0), &[1]);
        assert!(g.references(1).is_empty());
        assert_eq!(g.roots(), vec![0]);
    }

    #[test]
    fn missing_reference_is_an_error() {
        let (a, b) = (p(0, "a"), p(1, "b"));
        let err = ClosureGraph::from_records(vec![record(&a, &[&b])]).unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "t:1: {a} references {b}, which is not in the closure graph (a closure file \
                 lists every path its paths reference)"
            )
        );
    }

    #[test]
    fn duplicates_merge_when_equal_and_fail_when_different() {
        let (a, b) = (p(0, "a"), p(1, "b"));
        let g = ClosureGraph::from_records(vec![
            record(&a, &[&b]),
            record(&b, &[]),
            record(&a, &[&b, &b]),
        ])
        .unwrap();
        assert_eq!(g.len(), 2);
        let err =
            ClosureGraph::from_records(vec![record(&a, &[&b]), record(&b, &[]), record(&a, &[])])
                .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "t:1: {a} is listed twice with different references: t:1 gives [{b}], here it \
                 has []"
            )
        );
    }

    #[test]
    fn two_store_directories_are_an_error() {
        let a = p(0, "a");
        let b = format!("/other/store/{}-b", H[1]);
        let err = ClosureGraph::from_records(vec![record(&a, &[]), record(&b, &[])]).unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "t:1: {b} is in the store directory /other/store, but t:1 has a path in \
                 /nix/store; a closure lives in one store directory"
            )
        );
    }

    #[test]
    fn cycles_are_named() {
        let (a, b, c) = (p(0, "a"), p(1, "b"), p(2, "c"));
        let err = ClosureGraph::from_records(vec![
            record(&a, &[&b]),
            record(&b, &[&c]),
            record(&c, &[&b]),
        ])
        .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "the closure graph has a cycle, which a Nix closure cannot have: {b} -> {c} -> {b}"
            )
        );
    }

    #[test]
    fn name_of_strips_dir_and_hash() {
        assert_eq!(name_of(&p(0, "hello-2.12")), "hello-2.12");
    }
}
