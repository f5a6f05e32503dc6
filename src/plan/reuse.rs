//! The reuse strategy (`--layering reuse`): layers that survive updates.
//!
//! In Nix, updating a package gives it and every path that depends on it new store paths. A
//! layer is re-pulled whenever any of its paths changed, so the bytes a client pulls for an
//! update are the sizes of the layers holding a changed path. With each path alone that is
//! exactly the changed bytes; the budget forces merging, and a merge costs the bytes of the
//! members that did not change.
//!
//! The rule:
//! - `C(x)`, the number of paths in x's closure, measures how often x changes: x changes when
//!   any of them does.
//! - In the dominator tree of the graph (from a virtual root above the image's roots), x's
//!   immediate dominator `d` depends on x, so whenever x changes, d changes too. Putting x in
//!   d's layer therefore only costs x's bytes on the updates that change d but not x:
//!   `w(x) = size(x) × (C(d) − C(x))`. Paths used by one top-level package end up with it;
//!   shared paths (glibc and friends, dominated only by the root) merge only when tiny, and big
//!   ones keep layers of their own, which images built from the same store then share.
//! - Every path with `w(x) ≤ τ` joins its dominator's layer, where τ is the smallest power of
//!   two that fits the budget. The decision for a path depends only on its own size, its own
//!   closure and its dominator's (and on τ, which moves in steps of two), so an update of one
//!   package does not move unrelated paths between layers.
//! - Layers are ordered from the least to the most likely to change.
//!
//! With a previous plan, every previous layer whose paths are all still in the closure is kept
//! exactly as it was, and only the rest is placed by the rule above.

use petgraph::algo::dominators;
use petgraph::graph::{DiGraph, NodeIndex};
use rayon::prelude::*;

use super::{Budget, Plan, popularity};
use crate::closure::ClosureGraph;
use crate::error::{Error, Result};

/// The store layers of an earlier plan, as `layered-gen plan` printed them.
#[derive(Clone, Debug, Default)]
pub struct PreviousPlan {
    pub layers: Vec<Vec<String>>,
}

impl PreviousPlan {
    /// Reads the `plan` JSON of an earlier release (its store layers).
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(format!(
                "{}: not the JSON `layered-gen plan` prints: {e}",
                path.display()
            ))
        })?;
        let layers = value["layers"].as_array().ok_or_else(|| {
            Error::new(format!(
                "{}: no \"layers\"; pass the JSON `layered-gen plan` printed",
                path.display()
            ))
        })?;
        Ok(PreviousPlan {
            layers: layers
                .iter()
                .filter(|l| l["kind"] == "store")
                .map(|l| {
                    l["paths"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect(),
        })
    }
}

/// Number of paths in each path's closure, itself included.
fn closure_counts(graph: &ClosureGraph) -> Vec<u64> {
    (0..graph.len())
        .into_par_iter()
        .map_init(
            || (vec![usize::MAX; graph.len()], Vec::new()),
            |(seen, stack), x| {
                let mut count = 0;
                seen[x] = x;
                stack.push(x);
                while let Some(y) = stack.pop() {
                    count += 1;
                    for &r in graph.references(y) {
                        if seen[r] != x {
                            seen[r] = x;
                            stack.push(r);
                        }
                    }
                }
                count
            },
        )
        .collect()
}

/// Each path's immediate dominator, None for the roots (dominated by the virtual root only).
fn immediate_dominators(graph: &ClosureGraph) -> Vec<Option<usize>> {
    let n = graph.len();
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(n + 1, 0);
    for _ in 0..=n {
        g.add_node(());
    }
    let virtual_root = NodeIndex::new(n);
    for root in graph.roots() {
        g.add_edge(virtual_root, NodeIndex::new(root), ());
    }
    for x in 0..n {
        for &r in graph.references(x) {
            g.add_edge(NodeIndex::new(x), NodeIndex::new(r), ());
        }
    }
    let tree = dominators::simple_fast(&g, virtual_root);
    (0..n)
        .map(|x| {
            tree.immediate_dominator(NodeIndex::new(x))
                .map(NodeIndex::index)
                .filter(|&d| d != n)
        })
        .collect()
}

/// The paths the image's users install: the roots, or the single root's references.
fn top_level(graph: &ClosureGraph) -> Vec<usize> {
    match graph.roots().as_slice() {
        [root] => graph.references(*root).to_vec(),
        roots => roots.to_vec(),
    }
}

/// How many top-level packages reach `x`.
fn sharers(graph: &ClosureGraph, parents: &[Vec<usize>], tops: &[bool], x: usize) -> usize {
    let mut seen = vec![false; graph.len()];
    let mut stack = vec![x];
    seen[x] = true;
    let mut count = 0;
    while let Some(y) = stack.pop() {
        if tops[y] {
            count += 1;
        }
        for &p in &parents[y] {
            if !seen[p] {
                seen[p] = true;
                stack.push(p);
            }
        }
    }
    count
}

/// Plans the store layers for reuse across updates (see the module doc).
pub fn plan_for_reuse(
    graph: &ClosureGraph,
    budget: Budget,
    previous: Option<&PreviousPlan>,
) -> Result<Plan> {
    let store_layers = budget.store_layers()?;
    let n = graph.len();
    let known_sizes = (0..n).all(|x| graph.nar_size(x).is_some());
    // Without sizes every path weighs the same: the rule still follows the graph.
    let size = |x: usize| -> u128 {
        if known_sizes {
            u128::from(graph.nar_size(x).unwrap_or(0).max(1))
        } else {
            1
        }
    };

    // Previous layers whose paths are all still here stay exactly as they were.
    let mut kept: Vec<Vec<usize>> = Vec::new();
    let mut placed = vec![false; n];
    if let Some(previous) = previous {
        for layer in &previous.layers {
            let indices: Option<Vec<usize>> = layer.iter().map(|p| graph.index_of(p)).collect();
            if let Some(indices) = indices.filter(|i| !i.is_empty()) {
                if kept.len() + 1 < store_layers {
                    for &i in &indices {
                        placed[i] = true;
                    }
                    kept.push(indices);
                }
            }
        }
    }
    let room = store_layers - kept.len();

    let counts = closure_counts(graph);
    let idom = immediate_dominators(graph);
    let candidates: Vec<usize> = (0..n).filter(|&x| !placed[x]).collect();
    // The cost of putting x in its dominator's layer; None when it cannot join one.
    let weight: Vec<Option<u128>> = (0..n)
        .map(|x| match idom[x] {
            Some(d) if !placed[d] => {
                Some(size(x) * u128::from(counts[d].saturating_sub(counts[x])))
            }
            _ => None,
        })
        .collect();
    let mergeable = |tau: u128| {
        candidates
            .iter()
            .filter(|&&x| weight[x].is_some_and(|w| w <= tau))
            .count()
    };
    let mut tau = 0u128;
    while candidates.len() - mergeable(tau) > room && tau < u128::MAX / 2 {
        tau = if tau == 0 { 1 } else { tau * 2 };
    }
    // The head of x's layer: up the dominator tree while the merge rule says so.
    let joins = |x: usize| weight[x].is_some_and(|w| w <= tau);
    let mut head: Vec<usize> = (0..n).collect();
    // Dominators come before what they dominate in topological order (they reach it).
    for &x in graph.topological_order() {
        if !placed[x] && joins(x) {
            if let Some(d) = idom[x] {
                head[x] = head[d];
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &x in &candidates {
        groups.entry(head[x]).or_default().push(x);
    }
    // Layer order: least likely to change first; ties by path.
    let mut ordered: Vec<(usize, Vec<usize>)> = groups.into_iter().collect();
    ordered.sort_by(|(a, _), (b, _)| {
        counts[*a]
            .cmp(&counts[*b])
            .then_with(|| graph.path(*a).cmp(graph.path(*b)))
    });
    // More independent groups than layers (many roots, or a previous plan that leaves little
    // room): the ones most likely to change share the last layer.
    let mut overflowed = false;
    if ordered.len() > room && room > 0 {
        let rest: Vec<usize> = ordered
            .drain(room - 1..)
            .flat_map(|(_, members)| members)
            .collect();
        let last_head = rest[0];
        ordered.push((last_head, rest));
        overflowed = true;
    }

    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for x in 0..n {
        for &r in graph.references(x) {
            parents[r].push(x);
        }
    }
    let mut is_top = vec![false; n];
    for t in top_level(graph) {
        is_top[t] = true;
    }
    let roots = graph.roots();

    let mut layers = Vec::new();
    let mut reasons = Vec::new();
    for layer in kept {
        layers.push(layer);
        reasons.push("unchanged since the previous plan".to_string());
    }
    let count = ordered.len();
    for (i, (head, mut members)) in ordered.into_iter().enumerate() {
        members.sort_by(|&a, &b| graph.path(a).cmp(graph.path(b)));
        let reason = if overflowed && i == count - 1 {
            format!(
                "{} groups most likely to change, merged to fit --max-layers",
                members.len()
            )
        } else if roots.contains(&head) {
            format!(
                "the image root {} (changes with every update) and {} paths only it uses",
                graph.path(head),
                members.len() - 1
            )
        } else if members.len() > 1 {
            format!(
                "dominated by {}: it and {} paths only it uses",
                graph.path(head),
                members.len() - 1
            )
        } else {
            match sharers(graph, &parents, &is_top, head) {
                0 | 1 => match idom[head] {
                    Some(d) => format!(
                        "kept apart from {}, which uses it: large and changes less often",
                        graph.path(d)
                    ),
                    None => "a root of the image".to_string(),
                },
                k => format!("shared by {k} top-level packages"),
            }
        };
        layers.push(members);
        reasons.push(reason);
    }
    Ok(Plan {
        budget,
        layers,
        popularity: popularity(graph),
        reasons,
    })
}
