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

use super::{Budget, Plan, PreviousPlan, popularity};
use crate::closure::ClosureGraph;
use crate::error::Result;

/// Phase 1 stops at this many groups per layer; phase 2 merges the rest.
const PHASE_ONE_FACTOR: usize = 2;

/// The share of layers (in percent) that hold grouped small paths; the others hold one large
/// path each. Measured with examples/simulate.rs on the shared corpus: fewer group layers make
/// each group larger (more re-pulled per update), more leave fewer large paths alone.
const SMALL_PERCENT: usize = 45;

/// With more roots than a quarter of the layers, roots are not given layers apart.
const ROOTS_APART_SHARE: usize = 4;

/// A path's name without its hash: what stays when the package is rebuilt.
fn name_key(graph: &ClosureGraph, x: usize) -> &str {
    crate::closure::name_of(graph.path(x))
}

/// A layer in the making.
struct Group {
    head: usize,
    members: Vec<usize>,
    bytes: u128,
    /// Paths whose update changes the group (an upper bound once groups are merged).
    changes: u128,
    /// How many top-level packages use it: paths many use are likely in other images of the
    /// same store too, so merging them costs sharing as well.
    sharers: u128,
    /// The head's name without its hash: ties are broken by names, which updates keep.
    key: String,
}

impl Group {
    /// What merging it costs: bytes re-pulled per update, times how widely it is shared.
    fn cost(&self) -> u128 {
        self.bytes.saturating_mul(self.changes)
    }
}

/// For each path, how many of the paths it reaches along `next` (itself included) `counts`.
fn reach_counts<'a>(
    n: usize,
    next: impl Fn(usize) -> &'a [usize] + Sync,
    counts: impl Fn(usize) -> bool + Sync,
) -> Vec<u64> {
    (0..n)
        .into_par_iter()
        .map_init(
            || (vec![usize::MAX; n], Vec::new()),
            |(seen, stack), x| {
                let mut count = 0;
                seen[x] = x;
                stack.push(x);
                while let Some(y) = stack.pop() {
                    count += u64::from(counts(y));
                    for &z in next(y) {
                        if seen[z] != x {
                            seen[z] = x;
                            stack.push(z);
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

/// Plans the store layers for reuse across updates (see the module doc).
pub fn plan_for_reuse(
    graph: &ClosureGraph,
    budget: Budget,
    previous: Option<&PreviousPlan>,
) -> Result<Plan> {
    let fresh = plan_fresh(graph, budget)?;
    match previous {
        None => Ok(fresh),
        Some(previous) => Ok(keep_previous(graph, fresh, previous)),
    }
}

/// Keeps every previous layer whose paths are all still in the closure, exactly as it was;
/// the other paths go where the fresh plan puts them (without the kept ones), and if that
/// makes too many layers, the smallest new ones are merged.
fn keep_previous(graph: &ClosureGraph, fresh: Plan, previous: &PreviousPlan) -> Plan {
    let limit = fresh
        .layers
        .len()
        .max(1)
        .max(fresh.budget.store_layers().unwrap_or(1));
    let mut kept: Vec<Vec<usize>> = Vec::new();
    let mut is_kept = vec![false; graph.len()];
    for layer in &previous.layers {
        let indices: Option<Vec<usize>> = layer.iter().map(|p| graph.index_of(p)).collect();
        if let Some(indices) = indices.filter(|i| !i.is_empty()) {
            // One layer always stays free for what is new.
            if kept.len() + 1 < limit && indices.iter().all(|&i| !is_kept[i]) {
                for &i in &indices {
                    is_kept[i] = true;
                }
                kept.push(indices);
            }
        }
    }
    let mut new: Vec<(Vec<usize>, String)> = fresh
        .layers
        .into_iter()
        .zip(fresh.reasons)
        .filter_map(|(layer, reason)| {
            let rest: Vec<usize> = layer.into_iter().filter(|&i| !is_kept[i]).collect();
            (!rest.is_empty()).then_some((rest, reason))
        })
        .collect();
    let bytes =
        |layer: &[usize]| -> u64 { layer.iter().map(|&i| graph.nar_size(i).unwrap_or(1)).sum() };
    while kept.len() + new.len() > limit && new.len() >= 2 {
        // Merge the smallest new layer into the next smallest; ties by first path.
        let mut order: Vec<usize> = (0..new.len()).collect();
        order.sort_by(|&a, &b| {
            bytes(&new[a].0)
                .cmp(&bytes(&new[b].0))
                .then_with(|| graph.path(new[a].0[0]).cmp(graph.path(new[b].0[0])))
        });
        let (small, next) = (order[0].max(order[1]), order[0].min(order[1]));
        let (paths, _) = new.remove(small);
        new[next].0.extend(paths);
        new[next]
            .0
            .sort_by(|&a, &b| graph.path(a).cmp(graph.path(b)));
        new[next].1 = "new paths merged to fit the layer limit".to_string();
    }
    let mut reasons = vec!["unchanged since the previous plan".to_string(); kept.len()];
    let mut layers = kept;
    for (layer, reason) in new {
        layers.push(layer);
        reasons.push(reason);
    }
    Plan {
        budget: fresh.budget,
        layers,
        popularity: fresh.popularity,
        reasons,
    }
}

/// The plan from scratch.
fn plan_fresh(graph: &ClosureGraph, budget: Budget) -> Result<Plan> {
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

    let room = store_layers;

    // C(x): the paths in x's closure, itself included.
    let counts = reach_counts(n, |x| graph.references(x), |_| true);
    let idom = immediate_dominators(graph);
    let parents = graph.referrers();
    let mut is_top = vec![false; n];
    for t in top_level(graph) {
        is_top[t] = true;
    }
    // How many top-level packages use each path.
    let sharers = reach_counts(n, |x| parents[x].as_slice(), |x| is_top[x]);
    let roots = graph.roots();
    // A few roots (an image's own root, which changes with every update) get layers apart;
    // a graph with many roots has its roots treated like any other path.
    let is_root = {
        let mut r = vec![false; n];
        if roots.len() <= (store_layers / ROOTS_APART_SHARE).max(1) {
            for &x in &roots {
                r[x] = true;
            }
        }
        r
    };
    let candidates: Vec<usize> = (0..n).collect();
    // The largest paths get layers of their own: most bytes then sit in layers that change
    // exactly when their path does, and that other images of the same store share. The
    // roots, which change with every update, stay apart too. The small rest is grouped into
    // SMALL_PERCENT of the layers.
    let mut by_size: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&x| !is_root[x])
        .collect();
    by_size.sort_by(|&a, &b| {
        size(b)
            .cmp(&size(a))
            .then_with(|| name_key(graph, a).cmp(name_key(graph, b)))
            .then_with(|| graph.path(a).cmp(graph.path(b)))
    });
    let root_count = candidates.len() - by_size.len();
    let for_paths = room.saturating_sub(root_count).max(1);
    let singles = if by_size.len() <= for_paths {
        by_size.len()
    } else {
        for_paths - (for_paths * SMALL_PERCENT / 100).max(1)
    };
    let buckets = for_paths - singles;
    let mut single = vec![false; n];
    for &x in &by_size[..singles] {
        single[x] = true;
    }
    let small: Vec<usize> = by_size[singles..].to_vec();

    // The small paths, along the dominator tree first: x may join its dominator's layer (never
    // a root's or a single's), at the cost of x's bytes on the updates that change the
    // dominator but not x.
    let weight: Vec<Option<u128>> = (0..n)
        .map(|x| match idom[x] {
            Some(d) if !is_root[d] && !single[d] && !single[x] => {
                Some(size(x) * u128::from(counts[d].saturating_sub(counts[x])))
            }
            _ => None,
        })
        .collect();
    let phase_one_target = buckets.saturating_mul(PHASE_ONE_FACTOR);
    let mergeable = |tau: u128| {
        small
            .iter()
            .filter(|&&x| weight[x].is_some_and(|w| w <= tau))
            .count()
    };
    let mut tau = 0u128;
    while small.len() - mergeable(tau) > phase_one_target && tau < u128::MAX / 4 {
        tau = if tau == 0 { 1 } else { tau * 2 };
    }
    let joins = |x: usize| weight[x].is_some_and(|w| w <= tau);
    let mut head: Vec<usize> = (0..n).collect();
    // Dominators come before what they dominate in topological order (they reach it).
    for &x in graph.topological_order() {
        if joins(x) {
            if let Some(d) = idom[x] {
                head[x] = head[d];
            }
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &x in &candidates {
        groups.entry(head[x]).or_default().push(x);
    }
    // Phase 2, while there are more groups than layers: merge the two groups that cost least
    // on their own (bytes × how often they change), like Huffman coding; the roots stay apart.
    let mut merged: Vec<Group> = groups
        .into_iter()
        .map(|(head, members)| Group {
            bytes: members.iter().map(|&m| size(m)).sum(),
            changes: u128::from(counts[head]),
            sharers: u128::from(sharers[head].max(1)),
            key: name_key(graph, head).to_string(),
            head,
            members,
        })
        .collect();
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u128, String, usize)>> = merged
        .iter()
        .enumerate()
        .filter(|(_, g)| !is_root[g.head] && !single[g.head])
        .map(|(i, g)| std::cmp::Reverse((g.cost(), g.key.clone(), i)))
        .collect();
    let mut alive = heap.len();
    while alive > buckets && heap.len() >= 2 {
        let (Some(std::cmp::Reverse((_, _, a))), Some(std::cmp::Reverse((_, _, b)))) =
            (heap.pop(), heap.pop())
        else {
            break;
        };
        let taken = std::mem::take(&mut merged[b].members);
        merged[a].members.extend(taken);
        merged[a].bytes += merged[b].bytes;
        merged[a].changes += merged[b].changes;
        merged[a].sharers = merged[a].sharers.max(merged[b].sharers);
        let g = &merged[a];
        heap.push(std::cmp::Reverse((g.cost(), g.key.clone(), a)));
        alive -= 1;
    }
    let mut ordered: Vec<(usize, Vec<usize>)> = merged
        .into_iter()
        .filter(|g| !g.members.is_empty())
        .map(|g| (g.head, g.members))
        .collect();
    // Layer order: least likely to change first; ties by path.
    ordered.sort_by(|(a, _), (b, _)| {
        counts[*a]
            .cmp(&counts[*b])
            .then_with(|| graph.path(*a).cmp(graph.path(*b)))
    });
    // More roots than layers: the last layer takes the rest.
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

    let mut layers = Vec::new();
    let mut reasons = Vec::new();
    let count = ordered.len();
    for (i, (head, mut members)) in ordered.into_iter().enumerate() {
        members.sort_by(|&a, &b| graph.path(a).cmp(graph.path(b)));
        let reason = if overflowed && i == count - 1 {
            format!(
                "{} groups most likely to change, merged to fit the layer limit",
                members.len()
            )
        } else if is_root[head] {
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
            match sharers[head] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::{Location, Origin, PathRecord};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A store like a distribution's: one root over `tops` top-level packages, which use
    /// libraries below them; `edges[i]` are the references of path i (to higher indices).
    struct Store {
        names: Vec<String>,
        hashes: Vec<String>,
        edges: Vec<Vec<usize>>,
        sizes: Vec<u64>,
    }

    fn hash(seed: u64) -> String {
        let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..32)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % 32) as usize] as char
            })
            .collect()
    }

    impl Store {
        fn random(n: usize, seed: u64) -> Store {
            let mut x = seed | 1;
            let mut next = |bound: usize| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % bound as u64) as usize
            };
            let tops = (n / 3).max(1);
            let mut edges = vec![Vec::new(); n];
            edges[0] = (1..=tops.min(n - 1)).collect();
            for (i, refs) in edges.iter_mut().enumerate().skip(1) {
                if i + 1 < n {
                    for _ in 0..next(4) {
                        let target = i + 1 + next(n - i - 1);
                        if !refs.contains(&target) {
                            refs.push(target);
                        }
                    }
                }
            }
            let sizes = (0..n)
                .map(|_| {
                    let bits = 4 + next(20);
                    1 + next(1 << bits) as u64
                })
                .collect();
            Store {
                names: (0..n).map(|i| format!("pkg{i}-1.0")).collect(),
                hashes: (0..n).map(|i| hash(seed * 1000 + i as u64)).collect(),
                edges,
                sizes,
            }
        }

        fn path(&self, i: usize) -> String {
            format!("/nix/store/{}-{}", self.hashes[i], self.names[i])
        }

        fn graph(&self) -> ClosureGraph {
            let records = (0..self.names.len())
                .map(|i| PathRecord {
                    path: self.path(i),
                    references: self.edges[i].iter().map(|&r| self.path(r)).collect(),
                    nar_size: Some(self.sizes[i]),
                    nar_hash: None,
                    origin: Origin {
                        file: "t".into(),
                        at: Location::Line(i + 1),
                    },
                })
                .collect();
            ClosureGraph::from_records(records).unwrap()
        }

        /// Updates package p as Nix would: p and everything depending on it get new hashes.
        fn update(&self, p: usize, generation: u64) -> (Store, BTreeSet<usize>) {
            let mut hit = BTreeSet::from([p]);
            let mut changed = true;
            while changed {
                changed = false;
                for (i, refs) in self.edges.iter().enumerate() {
                    if !hit.contains(&i) && refs.iter().any(|r| hit.contains(r)) {
                        hit.insert(i);
                        changed = true;
                    }
                }
            }
            let hashes = (0..self.hashes.len())
                .map(|i| {
                    if hit.contains(&i) {
                        hash(generation * 7919 + i as u64)
                    } else {
                        self.hashes[i].clone()
                    }
                })
                .collect();
            (
                Store {
                    names: self.names.clone(),
                    hashes,
                    edges: self.edges.clone(),
                    sizes: self.sizes.clone(),
                },
                hit,
            )
        }
    }

    fn layer_sets(graph: &ClosureGraph, plan: &Plan) -> BTreeSet<Vec<String>> {
        plan.layers
            .iter()
            .map(|l| {
                let mut paths: Vec<String> = l.iter().map(|&i| graph.path(i).to_string()).collect();
                paths.sort();
                paths
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_path_once_within_the_budget(n in 2usize..120, seed in 1u64..1000, max in 2usize..40) {
            let store = Store::random(n, seed);
            let graph = store.graph();
            let plan = plan_for_reuse(&graph, Budget::new(max), None).unwrap();
            prop_assert!(plan.layers.len() <= max);
            let mut all: Vec<usize> = plan.layers.iter().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(plan.reasons.len(), plan.layers.len());
            prop_assert!(plan.reasons.iter().all(|r| !r.is_empty()));
            // Deterministic: the same graph from records in another order plans the same.
            let again = plan_for_reuse(&store.graph(), Budget::new(max), None).unwrap();
            prop_assert_eq!(plan.to_json(&graph, &[]).unwrap(), again.to_json(&graph, &[]).unwrap());
        }

        /// An update of one package leaves every layer that holds neither it nor a path
        /// depending on it exactly as it was.
        #[test]
        fn updates_leave_unrelated_layers_alone(n in 3usize..150, seed in 1u64..1000, max in 2usize..60, pick in 0usize..1000) {
            let store = Store::random(n, seed);
            let p = 1 + pick % (n - 1);
            let (updated, hit) = store.update(p, seed);
            let (before_graph, after_graph) = (store.graph(), updated.graph());
            let before = plan_for_reuse(&before_graph, Budget::new(max), None).unwrap();
            let after = layer_sets(&after_graph, &plan_for_reuse(&after_graph, Budget::new(max), None).unwrap());
            let store_index: std::collections::HashMap<String, usize> =
                (0..n).map(|s| (store.path(s), s)).collect();
            for layer in &before.layers {
                if layer.iter().all(|&i| !hit.contains(&store_index[before_graph.path(i)])) {
                    let mut paths: Vec<String> = layer.iter().map(|&i| before_graph.path(i).to_string()).collect();
                    paths.sort();
                    prop_assert!(after.contains(&paths), "layer {:?} moved", paths);
                }
            }
        }

        /// With the previous plan, every previous layer of unchanged paths is kept as it was.
        #[test]
        fn previous_layers_of_unchanged_paths_are_kept(n in 3usize..100, seed in 1u64..1000, max in 3usize..40, pick in 0usize..1000) {
            let store = Store::random(n, seed);
            let graph = store.graph();
            let plan = plan_for_reuse(&graph, Budget::new(max), None).unwrap();
            let previous = PreviousPlan { layers: layer_sets(&graph, &plan).into_iter().collect() };
            let (updated, _) = store.update(1 + pick % (n - 1), seed + 1);
            let after_graph = updated.graph();
            let after = plan_for_reuse(&after_graph, Budget::new(max), Some(&previous)).unwrap();
            prop_assert!(after.layers.len() <= max);
            let after_sets = layer_sets(&after_graph, &after);
            let unchanged: Vec<&Vec<String>> = previous.layers.iter()
                .filter(|l| l.iter().all(|p| after_graph.index_of(p).is_some()))
                .collect();
            let kept = unchanged.iter().filter(|l| after_sets.contains(**l)).count();
            // All but at most one (a layer always stays free for what is new) are kept.
            prop_assert!(kept + 1 >= unchanged.len().min(max - 1) , "kept {} of {}", kept, unchanged.len());
        }
    }

    #[test]
    fn reasons_explain_the_groups() {
        // root -> app, tool; app -> big shared lib, small private helper; tool -> lib.
        let names = ["root", "app", "tool", "libbig", "helper"];
        let edges: Vec<Vec<usize>> = vec![vec![1, 2], vec![3, 4], vec![3], vec![], vec![]];
        let store = Store {
            names: names.iter().map(|n| format!("{n}-1")).collect(),
            hashes: (0..5).map(hash).collect(),
            edges,
            sizes: vec![1, 10, 10, 1_000_000, 5],
        };
        let graph = store.graph();
        let plan = plan_for_reuse(&graph, Budget::new(10), None).unwrap();
        let reason_of = |name: &str| {
            let i = graph
                .index_of(&store.path(names.iter().position(|n| *n == name).unwrap()))
                .unwrap();
            let layer = plan.layers.iter().position(|l| l.contains(&i)).unwrap();
            plan.reasons[layer].clone()
        };
        assert_eq!(reason_of("libbig"), "shared by 2 top-level packages");
        assert!(
            reason_of("root").starts_with("the image root /nix/store/"),
            "{}",
            reason_of("root")
        );
    }
}
