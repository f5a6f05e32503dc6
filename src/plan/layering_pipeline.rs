//! nixpkgs' `layeringPipeline` (`--layering-pipeline FILE`): a JSON list of operations that
//! cut the closure graph into layers, as dockerTools' `flatten_references_graph` runs them.
//!
//! Values are graphs (a set of paths with the references between them), lists and dicts
//! (ordered, as Python's); the pipeline starts from the whole graph and its result is
//! flattened into a list of graphs, one layer each. The operations:
//!
//! - `["popularity_contest"]`: graph → one single-path graph per path, most popular first
//!   (nixpkgs' referencesByPopularity order, counted within the graph).
//! - `["subcomponent_out", [PATHS]]` / `["subcomponent_in", [PATHS]]`: graph →
//!   `{"main": the paths and all they reference (or all that reference them), "rest": the
//!   others}`.
//! - `["split_paths", [SPECS]]`: graph → `{"main": the paths and what only they reach,
//!   "common": what they share with the rest, "rest": the rest}`, empty parts left out (a spec
//!   is a path or `{"children_of": PATH or [PATHS]}`); edges into the split paths are cut.
//! - `["split_every", N]`: graph → its paths N at a time, in graph order.
//! - `["limit_layers", N]`: list → its first N−1 items and one graph of all the others.
//! - `["remove_paths", PATH or [PATHS]]`: graph → the graph without them.
//! - `["reverse"]`, `["flatten"]`; `["over", KEY, OP]` applies OP to a dict's KEY;
//!   `["map", OP]` to every item of a list; `["pipe", [OPS]]` runs OPS in order.
//!
//! A graph's order is nixpkgs' (igraph's vertex order): paths by NAR size, ties in the order
//! the closure file lists them; a part of a graph keeps that order, and the graph `limit_layers`
//! merges lists its parts one after another. Paths are named as the closure names them; a name
//! the graph does not hold is skipped, as in nixpkgs. Where nixpkgs fails at run time on a
//! well-formed pipeline, this does not: `limit_layers` given fewer than N items keeps them
//! (nixpkgs raises), parts that overlap are no crash (igraph's is), and `over` on a key the
//! dict lacks says which keys it has.

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use num_bigint::BigUint;
use serde_json::Value as Json;

use super::popularity;
use super::popularity_order;
use crate::closure::ClosureGraph;
use crate::error::{Error, Result, Setting, quoted, shown};

/// A part of the closure graph: paths (indices into the closure graph) in graph order, and the
/// references between them that survive (split_paths cuts some).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Graph {
    nodes: Vec<usize>,
    /// `(from, to)` in closure indices, both in `nodes`.
    edges: BTreeSet<(usize, usize)>,
}

/// What an operation takes and gives.
#[derive(Clone, Debug)]
enum Value {
    Graph(Graph),
    List(Vec<Value>),
    Dict(Vec<(String, Value)>),
}

/// One parsed operation.
#[derive(Clone, Debug)]
enum Op {
    PopularityContest,
    Subcomponent { inward: bool, paths: Vec<String> },
    SplitPaths(Vec<Spec>),
    SplitEvery(usize),
    LimitLayers(usize),
    RemovePaths(Vec<String>),
    Reverse,
    Flatten,
    Over(String, Box<Op>),
    Map(Box<Op>),
    Pipe(Vec<Op>),
}

/// A split_paths spec.
#[derive(Clone, Debug)]
enum Spec {
    Path(String),
    ChildrenOf(Vec<String>),
}

/// A parsed `layeringPipeline`.
#[derive(Clone, Debug)]
pub struct Pipeline {
    ops: Vec<Op>,
}

impl Pipeline {
    /// Reads a pipeline file: a JSON list of operations (the module doc), at most as large as
    /// any JSON input.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            crate::json_file::read_bytes(path).map_err(|e| e.about(Setting::LayeringPipeline))?;
        Self::parse(&path.display().to_string(), &bytes)
    }

    /// Parses a pipeline; `file` names it in errors.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self> {
        let json = crate::json_file::parse_value(file, bytes)
            .map_err(|e| e.about(Setting::LayeringPipeline))?;
        Self::from_json(&json).map_err(|e| e.context(shown(file)))
    }

    pub fn from_json(json: &Json) -> Result<Self> {
        Ok(Pipeline {
            ops: ops(json, "$")?,
        })
    }

    /// The layers the pipeline makes of `graph`, each a list of path indices; empty parts make
    /// no layer.
    pub fn layers(&self, graph: &ClosureGraph) -> Result<Vec<Vec<usize>>> {
        self.layers_with(graph, &OnceCell::new())
    }

    /// [`Self::layers`], with the whole graph's popularity kept in `whole` once a contest on
    /// the whole graph computed it (the plan JSON needs it too: it is not counted twice).
    pub fn layers_with(
        &self,
        graph: &ClosureGraph,
        whole_popularity: &OnceCell<Vec<BigUint>>,
    ) -> Result<Vec<Vec<usize>>> {
        let run = Run {
            graph,
            whole_edges: (0..graph.len()).map(|x| graph.references(x).len()).sum(),
            whole_popularity,
        };
        let mut value = Value::Graph(whole(graph));
        for op in &self.ops {
            value = run.apply(op, value)?;
        }
        let mut layers = Vec::new();
        flatten_into(value, &mut layers);
        Ok(layers
            .into_iter()
            .map(|g| g.nodes)
            .filter(|nodes| !nodes.is_empty())
            .collect())
    }
}

fn bad(at: &str, why: impl Into<String>) -> Error {
    Error::value(format!("the layering pipeline at {at}: {}", why.into()))
        .about(Setting::LayeringPipeline)
}

/// An error while running an operation (`op`, as the pipeline names it).
fn failed(op: &str, why: impl Into<String>) -> Error {
    Error::value(format!("the layering pipeline's {op}: {}", why.into()))
        .about(Setting::LayeringPipeline)
}

/// The operations of a JSON list of them.
fn ops(json: &Json, at: &str) -> Result<Vec<Op>> {
    let Json::Array(items) = json else {
        return Err(bad(at, "expected a list of operations"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| op(item, &format!("{at}[{i}]")))
        .collect()
}

/// One operation: `[NAME, ARGS...]`.
fn op(json: &Json, at: &str) -> Result<Op> {
    let Some((Json::String(name), args)) = json.as_array().and_then(|a| a.split_first()) else {
        return Err(bad(
            at,
            "expected an operation like [\"popularity_contest\"]",
        ));
    };
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(bad(
                at,
                format!("{} takes {n} argument(s), not {}", quoted(name), args.len()),
            ))
        }
    };
    let count = |json: &Json| {
        json.as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad(at, format!("{} takes a positive count", quoted(name))))
    };
    Ok(match name.as_str() {
        "popularity_contest" => {
            arity(0)?;
            Op::PopularityContest
        }
        "subcomponent_in" | "subcomponent_out" => {
            arity(1)?;
            Op::Subcomponent {
                inward: name == "subcomponent_in",
                paths: path_list(&args[0], at)?,
            }
        }
        "split_paths" => {
            arity(1)?;
            let Json::Array(specs) = &args[0] else {
                return Err(bad(at, "split_paths takes a list of paths"));
            };
            Op::SplitPaths(
                specs
                    .iter()
                    .map(|spec| match spec {
                        Json::String(p) => Ok(Spec::Path(p.clone())),
                        Json::Object(o) if o.len() == 1 && o.contains_key("children_of") => {
                            Ok(Spec::ChildrenOf(path_list(&o["children_of"], at)?))
                        }
                        _ => Err(bad(
                            at,
                            "a split_paths spec is a path or {\"children_of\": PATHS}",
                        )),
                    })
                    .collect::<Result<_>>()?,
            )
        }
        "split_every" => {
            arity(1)?;
            Op::SplitEvery(count(&args[0])?)
        }
        "limit_layers" => {
            arity(1)?;
            Op::LimitLayers(count(&args[0])?)
        }
        "remove_paths" => {
            arity(1)?;
            Op::RemovePaths(path_list(&args[0], at)?)
        }
        "reverse" => {
            arity(0)?;
            Op::Reverse
        }
        "flatten" => {
            arity(0)?;
            Op::Flatten
        }
        "over" => {
            arity(2)?;
            let Json::String(key) = &args[0] else {
                return Err(bad(at, "over takes a key, then an operation"));
            };
            Op::Over(key.clone(), Box::new(op(&args[1], &format!("{at}[2]"))?))
        }
        "map" => {
            arity(1)?;
            Op::Map(Box::new(op(&args[0], &format!("{at}[1]"))?))
        }
        "pipe" => {
            arity(1)?;
            Op::Pipe(ops(&args[0], &format!("{at}[1]"))?)
        }
        other => {
            return Err(bad(
                at,
                format!(
                    "unknown operation {}; the operations are popularity_contest, \
                     subcomponent_in, subcomponent_out, split_paths, split_every, \
                     limit_layers, remove_paths, reverse, flatten, over, map, pipe",
                    quoted(other)
                ),
            ));
        }
    })
}

/// A path or a list of them.
fn path_list(json: &Json, at: &str) -> Result<Vec<String>> {
    match json {
        Json::String(p) => Ok(vec![p.clone()]),
        Json::Array(items) => items
            .iter()
            .map(|p| {
                p.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(at, "expected store paths"))
            })
            .collect(),
        _ => Err(bad(at, "expected a store path or a list of them")),
    }
}

/// The whole closure as nixpkgs' first graph: by NAR size, ties in listing order.
fn whole(graph: &ClosureGraph) -> Graph {
    let mut nodes: Vec<usize> = (0..graph.len()).collect();
    nodes.sort_by_key(|&x| (graph.nar_size(x).unwrap_or(0), graph.listed(x)));
    let edges = (0..graph.len())
        .flat_map(|x| graph.references(x).iter().map(move |&r| (x, r)))
        .collect();
    Graph { nodes, edges }
}

impl Graph {
    fn empty() -> Self {
        Graph {
            nodes: Vec::new(),
            edges: BTreeSet::new(),
        }
    }

    /// The part of the graph on `keep`, in the graph's order, with the edges between them.
    fn induced(&self, keep: &BTreeSet<usize>) -> Graph {
        Graph {
            nodes: self
                .nodes
                .iter()
                .copied()
                .filter(|x| keep.contains(x))
                .collect(),
            edges: self
                .edges
                .iter()
                .copied()
                .filter(|(a, b)| keep.contains(a) && keep.contains(b))
                .collect(),
        }
    }

    fn without(&self, drop: &BTreeSet<usize>) -> Graph {
        let keep = self
            .nodes
            .iter()
            .copied()
            .filter(|x| !drop.contains(x))
            .collect();
        self.induced(&keep)
    }

    /// The graph's paths among `names`, skipping names it does not hold.
    fn find(&self, graph: &ClosureGraph, names: &[String]) -> Vec<usize> {
        names
            .iter()
            .filter_map(|n| graph.index_of(n))
            .filter(|x| self.nodes.contains(x))
            .collect()
    }

    /// Each path's neighbours along the edges (`inward`: against them).
    fn adjacency(&self, inward: bool) -> HashMap<usize, Vec<usize>> {
        let mut next: HashMap<usize, Vec<usize>> = HashMap::new();
        for &(a, b) in &self.edges {
            let (here, there) = if inward { (b, a) } else { (a, b) };
            next.entry(here).or_default().push(there);
        }
        next
    }

    /// Everything reachable from `from` (included) along edges, or against them.
    fn reach(&self, from: &[usize], inward: bool) -> BTreeSet<usize> {
        let next = self.adjacency(inward);
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut stack: Vec<usize> = from.to_vec();
        while let Some(x) = stack.pop() {
            if seen.insert(x) {
                stack.extend(next.get(&x).into_iter().flatten().copied());
            }
        }
        seen
    }

    /// Disjoint union: `self`'s paths, then `other`'s.
    fn merged(mut self, other: Graph) -> Graph {
        self.nodes.extend(other.nodes);
        self.edges.extend(other.edges);
        self
    }
}

fn graph_of(value: Value, op: &str) -> Result<Graph> {
    match value {
        Value::Graph(g) => Ok(g),
        _ => Err(failed(op, "takes a graph, and was given a list or dict")),
    }
}

fn list_of(value: Value, op: &str) -> Result<Vec<Value>> {
    match value {
        Value::List(items) => Ok(items),
        Value::Dict(entries) => Ok(entries.into_iter().map(|(_, v)| v).collect()),
        Value::Graph(_) => Err(failed(op, "takes a list, and was given a graph")),
    }
}

fn dict(entries: Vec<(&str, Graph)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, g)| (k.to_string(), Value::Graph(g)))
            .collect(),
    )
}

/// What every operation reads: the closure graph, and its popularity once counted.
struct Run<'a> {
    graph: &'a ClosureGraph,
    /// How many references the whole graph has: a part with as many paths and edges is it.
    whole_edges: usize,
    whole_popularity: &'a OnceCell<Vec<BigUint>>,
}

impl Run<'_> {
    fn apply(&self, op: &Op, value: Value) -> Result<Value> {
        let graph = self.graph;
        Ok(match op {
            Op::PopularityContest => {
                let g = graph_of(value, "popularity_contest")?;
                Value::List(
                    self.contest(&g)?
                        .into_iter()
                        .map(|x| {
                            Value::Graph(Graph {
                                nodes: vec![x],
                                edges: BTreeSet::new(),
                            })
                        })
                        .collect(),
                )
            }
            Op::Subcomponent { inward, paths } => {
                let g = graph_of(value, "subcomponent")?;
                let main = g.reach(&g.find(graph, paths), *inward);
                dict(vec![("main", g.induced(&main)), ("rest", g.without(&main))])
            }
            Op::SplitPaths(specs) => split_paths(graph_of(value, "split_paths")?, specs, graph),
            Op::SplitEvery(n) => {
                let g = graph_of(value, "split_every")?;
                // Each edge goes to the chunk holding both its ends, if one does: one pass over
                // the edges, however many chunks.
                let chunk_of: HashMap<usize, usize> = g
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x, i / n))
                    .collect();
                let mut chunks: Vec<Graph> = g
                    .nodes
                    .chunks(*n)
                    .map(|nodes| Graph {
                        nodes: nodes.to_vec(),
                        edges: BTreeSet::new(),
                    })
                    .collect();
                for &(a, b) in &g.edges {
                    if let (Some(&ca), Some(&cb)) = (chunk_of.get(&a), chunk_of.get(&b)) {
                        if ca == cb {
                            chunks[ca].edges.insert((a, b));
                        }
                    }
                }
                Value::List(chunks.into_iter().map(Value::Graph).collect())
            }
            Op::LimitLayers(n) => {
                let mut items = list_of(value, "limit_layers")?;
                if items.len() > *n {
                    let rest = items.split_off(n - 1);
                    let mut merged = Graph::empty();
                    for item in rest {
                        merged = merged.merged(graph_of(item, "limit_layers")?);
                    }
                    items.push(Value::Graph(merged));
                }
                Value::List(items)
            }
            Op::RemovePaths(paths) => {
                let g = graph_of(value, "remove_paths")?;
                let drop = g.find(graph, paths).into_iter().collect();
                Value::Graph(g.without(&drop))
            }
            Op::Reverse => {
                let mut items = list_of(value, "reverse")?;
                items.reverse();
                Value::List(items)
            }
            Op::Flatten => {
                let mut graphs = Vec::new();
                flatten_into(value, &mut graphs);
                Value::List(graphs.into_iter().map(Value::Graph).collect())
            }
            Op::Over(key, inner) => {
                let op = format!("over {}", quoted(key));
                let Value::Dict(mut entries) = value else {
                    return Err(failed(&op, "takes a dict, and was given a graph or list"));
                };
                let Some(slot) = entries.iter_mut().find(|(k, _)| k == key) else {
                    let keys: Vec<String> = entries.iter().map(|(k, _)| quoted(k)).collect();
                    return Err(failed(
                        &op,
                        format!(
                            "the dict has no {} (it has {}); split_paths leaves out empty parts",
                            quoted(key),
                            keys.join(", ")
                        ),
                    ));
                };
                let taken = std::mem::replace(&mut slot.1, Value::List(Vec::new()));
                slot.1 = self.apply(inner, taken)?;
                Value::Dict(entries)
            }
            Op::Map(inner) => Value::List(
                list_of(value, "map")?
                    .into_iter()
                    .map(|item| self.apply(inner, item))
                    .collect::<Result<_>>()?,
            ),
            Op::Pipe(ops) => {
                let mut value = value;
                for op in ops {
                    value = self.apply(op, value)?;
                }
                value
            }
        })
    }

    /// nixpkgs' popularity contest within `g`: its paths, most popular first.
    fn contest(&self, g: &Graph) -> Result<Vec<usize>> {
        let graph = self.graph;
        if g.nodes.len() == graph.len() && g.edges.len() == self.whole_edges {
            let popularity = self.whole_popularity.get_or_init(|| popularity(graph));
            return Ok(popularity_order(graph, popularity));
        }
        let mut keep = g.nodes.clone();
        keep.sort_unstable();
        let sub = graph.part(&keep, g.edges.iter().copied())?;
        let order = popularity_order(&sub, &popularity(&sub));
        Ok(order.into_iter().map(|i| keep[i]).collect())
    }
}

/// The graphs in `value`, depth first, dicts in their order.
fn flatten_into(value: Value, out: &mut Vec<Graph>) {
    match value {
        Value::Graph(g) => out.push(g),
        Value::List(items) => items.into_iter().for_each(|v| flatten_into(v, out)),
        Value::Dict(entries) => entries.into_iter().for_each(|(_, v)| flatten_into(v, out)),
    }
}

/// nixpkgs' split_paths (the module doc).
fn split_paths(g: Graph, specs: &[Spec], graph: &ClosureGraph) -> Value {
    let children = g.adjacency(false);
    let mut split: Vec<usize> = Vec::new();
    for spec in specs {
        match spec {
            Spec::Path(p) => split.extend(g.find(graph, std::slice::from_ref(p))),
            Spec::ChildrenOf(parents) => {
                for parent in g.find(graph, parents) {
                    split.extend(children.get(&parent).into_iter().flatten().copied());
                }
            }
        }
    }
    if split.is_empty() {
        return dict(vec![("rest", g)]);
    }
    let has_parent: BTreeSet<usize> = g.edges.iter().map(|&(_, b)| b).collect();
    let roots: Vec<usize> = g
        .nodes
        .iter()
        .copied()
        .filter(|x| !has_parent.contains(x))
        .collect();
    // The single root is split off itself: all of the graph is "main".
    if let [root] = roots.as_slice() {
        if split.contains(root) {
            return dict(vec![("main", g)]);
        }
    }
    let split_off = g.reach(&split, false);
    let split_set: BTreeSet<usize> = split.iter().copied().collect();
    // nixpkgs walks from one root above all: a root that is split off is not walked from.
    let starts: Vec<usize> = roots
        .iter()
        .copied()
        .filter(|r| !split_set.contains(r))
        .collect();
    let cut = Graph {
        nodes: g.nodes.clone(),
        edges: g
            .edges
            .iter()
            .copied()
            .filter(|(_, b)| !split_set.contains(b))
            .collect(),
    };
    // From the roots (nixpkgs adds one root above several), with the edges into the split
    // paths cut.
    let rest_with_common = cut.reach(&starts, false);
    let common: BTreeSet<usize> = split_off.intersection(&rest_with_common).copied().collect();
    let rest: BTreeSet<usize> = rest_with_common.difference(&common).copied().collect();
    let main: BTreeSet<usize> = split_off.difference(&common).copied().collect();
    let parts = [("main", main), ("common", common), ("rest", rest)];
    Value::Dict(
        parts
            .into_iter()
            .filter(|(_, set)| !set.is_empty())
            .map(|(k, set)| (k.to_string(), Value::Graph(cut.induced(&set))))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::tests::sized_record;
    use serde_json::json;

    /// The nixpkgs tests' shape: root → app, tool; app → lib, helper; tool → lib; lib → libc.
    /// Sizes give the graph order: libc, helper, lib, tool, app, root.
    fn store() -> ClosureGraph {
        let path = |n: &str| {
            format!(
                "/nix/store/{}-{n}",
                n.repeat(32)[..32].replace(['o', 'e', 't', 'u'], "0")
            )
        };
        let nodes: [(&str, &[&str], u64); 6] = [
            ("root", &["app", "tool"], 60),
            ("app", &["lib", "helper"], 50),
            ("tool", &["lib"], 40),
            ("lib", &["libc"], 30),
            ("helper", &[], 20),
            ("libc", &[], 10),
        ];
        let records = nodes
            .iter()
            .map(|(n, refs, size)| {
                sized_record(path(n), refs.iter().map(|r| path(r)).collect(), Some(*size))
            })
            .collect();
        ClosureGraph::from_records(records).unwrap()
    }

    fn p(g: &ClosureGraph, name: &str) -> String {
        (0..g.len())
            .map(|i| g.path(i))
            .find(|path| path.ends_with(&format!("-{name}")))
            .unwrap()
            .to_string()
    }

    /// The layers a pipeline makes of `store()`, by name.
    fn layers(pipeline: Json) -> Vec<Vec<String>> {
        let g = store();
        Pipeline::from_json(&pipeline)
            .unwrap()
            .layers(&g)
            .unwrap()
            .into_iter()
            .map(|l| {
                l.into_iter()
                    .map(|x| crate::closure::name_of(g.path(x)).to_string())
                    .collect()
            })
            .collect()
    }

    fn names(layers: &[&[&str]]) -> Vec<Vec<String>> {
        layers
            .iter()
            .map(|l| l.iter().map(|n| n.to_string()).collect())
            .collect()
    }

    #[test]
    fn the_whole_graph_is_one_layer_in_size_order() {
        assert_eq!(
            layers(json!([])),
            names(&[&["libc", "helper", "lib", "tool", "app", "root"]])
        );
    }

    #[test]
    fn popularity_contest_and_limit_layers() {
        // Most popular first: libc, lib, helper, app, tool, root (nixpkgs gives the same,
        // run on this graph); the merged rest in that order.
        assert_eq!(
            layers(json!([["popularity_contest"], ["limit_layers", 3]])),
            names(&[&["libc"], &["lib"], &["helper", "app", "tool", "root"]])
        );
        assert_eq!(
            layers(json!([
                ["popularity_contest"],
                ["reverse"],
                ["limit_layers", 2]
            ])),
            names(&[&["root"], &["tool", "app", "helper", "lib", "libc"]])
        );
    }

    #[test]
    fn subcomponents_out_and_in() {
        let g = store();
        let app = p(&g, "app");
        assert_eq!(
            layers(json!([["subcomponent_out", [app]]])),
            names(&[&["libc", "helper", "lib", "app"], &["tool", "root"]])
        );
        assert_eq!(
            layers(json!([["subcomponent_in", [app]]])),
            names(&[&["app", "root"], &["libc", "helper", "lib", "tool"]])
        );
        // A name the graph does not hold is skipped: all is rest.
        assert_eq!(
            layers(json!([["subcomponent_out", ["/nix/store/x-none"]]])),
            names(&[&["libc", "helper", "lib", "tool", "app", "root"]])
        );
    }

    #[test]
    fn split_paths_main_common_and_rest() {
        let g = store();
        // app and what only it reaches (helper); what tool shares with it (lib, libc); the
        // rest (tool, root).
        assert_eq!(
            layers(json!([
                ["split_paths", [p(&g, "app")]],
                ["over", "main", ["popularity_contest"]]
            ])),
            names(&[&["helper"], &["app"], &["libc", "lib"], &["tool", "root"]])
        );
        // children_of root: app and tool, which together reach everything below them.
        assert_eq!(
            layers(json!([["split_paths", [{"children_of": p(&g, "root")}]]])),
            names(&[&["libc", "helper", "lib", "tool", "app"], &["root"]])
        );
        // Splitting off the only root: all of it is main.
        assert_eq!(
            layers(json!([
                ["split_paths", [p(&g, "root")]],
                ["over", "main", ["split_every", 4]]
            ])),
            names(&[&["libc", "helper", "lib", "tool"], &["app", "root"]])
        );
    }

    #[test]
    fn split_every_remove_paths_map_and_pipe() {
        let g = store();
        assert_eq!(
            layers(json!([
                ["remove_paths", p(&g, "helper")],
                ["split_every", 2],
                ["map", ["pipe", [["remove_paths", [p(&g, "libc")]]]]]
            ])),
            names(&[&["lib"], &["tool", "app"], &["root"]])
        );
    }

    /// Where nixpkgs fails at run time: limit_layers given fewer items than its count keeps
    /// them; over a key the dict lacks is an error that says so.
    #[test]
    fn what_nixpkgs_fails_on() {
        let g = store();
        assert_eq!(
            layers(json!([["popularity_contest"], ["limit_layers", 10]])).len(),
            6
        );
        let pipeline = Pipeline::from_json(&json!([
            ["split_paths", ["/nix/store/x-none"]],
            ["over", "main", ["popularity_contest"]]
        ]))
        .unwrap();
        let err = pipeline.layers(&g).unwrap_err().to_string();
        assert!(
            err.contains("pipeline's over \"main\": the dict has no \"main\" (it has \"rest\")"),
            "{err}"
        );
    }

    #[test]
    fn malformed_pipelines_are_refused_with_the_place() {
        for (pipeline, words) in [
            (json!({"a": 1}), "$: expected a list of operations"),
            (json!([["popular"]]), "$[0]: unknown operation \"popular\""),
            (
                json!([["limit_layers", 0]]),
                "limit_layers\" takes a positive count",
            ),
            (json!([["split_every"]]), "takes 1 argument(s), not 0"),
            (
                json!([["over", "main", ["nope"]]]),
                "$[0][2]: unknown operation",
            ),
            (
                json!([["split_paths", [5]]]),
                "a split_paths spec is a path",
            ),
            (
                json!([["subcomponent_in", 5]]),
                "expected a store path or a list of them",
            ),
        ] {
            let err = Pipeline::from_json(&pipeline).unwrap_err().to_string();
            assert!(err.contains(words), "{pipeline}: {err}");
        }
    }
}
