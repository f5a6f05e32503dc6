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
//! - Sizes are seen as powers of four: a rebuild moves a package's size a little, and a size
//!   that stays in its class changes nothing (exact sizes made such moves reshuffle layers
//!   that hold no changed path).
//! - Layers are ordered from the least to the most likely to change.
//!
//! With a previous plan, every previous layer whose paths are all still in the closure is kept
//! exactly as it was, and only the rest is placed by the rule above.

use petgraph::algo::dominators;
use petgraph::graph::{DiGraph, NodeIndex};

use super::reach::{Walk, reach_counts};
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

/// Each path's place among the names without hashes, equal names equal.
fn name_ranks(graph: &ClosureGraph) -> Vec<usize> {
    let names: Vec<&str> = (0..graph.len()).map(|x| name_key(graph, x)).collect();
    let mut by_name: Vec<usize> = (0..graph.len()).collect();
    by_name.sort_by_key(|&x| names[x]);
    let mut rank = vec![0; graph.len()];
    for (i, pair) in by_name.windows(2).enumerate() {
        let same = names[pair[0]] == names[pair[1]];
        rank[pair[1]] = if same { rank[pair[0]] } else { i + 1 };
    }
    rank
}

/// A layer in the making.
struct Group {
    head: usize,
    members: Vec<usize>,
    bytes: u128,
    /// Paths whose update changes the group (an upper bound once groups are merged).
    changes: u128,
    /// The rank of the head's name without its hash: ties are broken by names, which updates
    /// keep (a rank, not the name, so that the heap compares numbers).
    key: usize,
}

impl Group {
    /// What merging it costs: the bytes re-pulled per update that changes it, as a size
    /// class too (ties go by name), so that a size that moved does not reorder the merges.
    fn cost(&self) -> u128 {
        quantised(self.bytes.saturating_mul(self.changes))
    }
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
    // u128: a closure file's narSizes may add up past 64 bits.
    let bytes = |layer: &[usize]| -> u128 {
        layer
            .iter()
            .map(|&i| u128::from(graph.nar_size(i).unwrap_or(1)))
            .sum()
    };
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
        layering: super::Layering::Reuse,
    }
}

/// A size as the rule sees it: rounded down to a power of QUANTUM_BASE. A rebuilt package's
/// size moves by a few percent, and a move that stays within its class changes no decision;
/// exact sizes let every such move reorder the size ranking and the merges, and re-pull
/// unrelated layers. Measured with examples/simulate.rs on the shared corpus (±10% on the
/// changed paths' sizes, 100 layers): exact sizes re-pull 11.2% per update, powers of two
/// 7.7%, of four 7.0%, of sixteen 7.2% (and share less at 30 layers than auto); merge costs
/// in classes too, 6.9%.
fn quantised(size: u128) -> u128 {
    let mut q = 1u128;
    while q.saturating_mul(QUANTUM_BASE) <= size {
        q *= QUANTUM_BASE;
    }
    q
}

/// The step between size classes (see [`quantised`]).
const QUANTUM_BASE: u128 = 4;

/// What the rule needs to know of every path.
struct Facts {
    /// NAR size (at least 1), or 1 for every path when the closure lacks sizes: the rule then
    /// follows the graph alone.
    size: Vec<u128>,
    /// `C(x)`: the paths in x's closure, itself included (how often x changes).
    counts: Vec<u64>,
    idom: Vec<Option<usize>>,
    /// How many top-level packages use each path.
    sharers: Vec<u64>,
    /// The roots that get layers apart (none when there are too many roots).
    is_root: Vec<bool>,
    /// Each path's place among the names without hashes.
    name_rank: Vec<usize>,
}

impl Facts {
    fn of(graph: &ClosureGraph, store_layers: usize) -> Self {
        let n = graph.len();
        let known_sizes = (0..n).all(|x| graph.nar_size(x).is_some());
        let size = (0..n)
            .map(|x| match graph.nar_size(x) {
                Some(s) if known_sizes => quantised(u128::from(s.max(1))),
                _ => 1,
            })
            .collect();
        let parents = graph.referrers();
        let mut is_top = vec![false; n];
        for t in top_level(graph) {
            is_top[t] = true;
        }
        // A few roots (an image's own root, which changes with every update) get layers apart;
        // a graph with many roots has its roots treated like any other path.
        let roots = graph.roots();
        let mut is_root = vec![false; n];
        if roots.len() <= (store_layers / ROOTS_APART_SHARE).max(1) {
            for &x in &roots {
                is_root[x] = true;
            }
        }
        let downwards = graph.topological_order();
        let upwards: Vec<usize> = downwards.iter().rev().copied().collect();
        let references = |x| graph.references(x);
        let referrers = |x: usize| parents[x].as_slice();
        let down = Walk {
            next: &references,
            prev: &referrers,
            order: downwards,
        };
        let up = Walk {
            next: &referrers,
            prev: &references,
            order: &upwards,
        };
        // Independent, and the dominators run on one thread: side by side.
        let (idom, (counts, sharers)) = rayon::join(
            || immediate_dominators(graph),
            || {
                rayon::join(
                    || reach_counts(&down, |_| true),
                    || reach_counts(&up, |x| is_top[x]),
                )
            },
        );
        Facts {
            size,
            counts,
            idom,
            sharers,
            is_root,
            name_rank: name_ranks(graph),
        }
    }
}

/// Phase 1, size classes: the largest paths (not the roots) get layers of their own; the rest
/// are "small" and share `buckets` layers (SMALL_PERCENT of those left after the roots).
struct Classes {
    single: Vec<bool>,
    /// The small paths, largest first.
    small: Vec<usize>,
    buckets: usize,
}

fn size_classes(graph: &ClosureGraph, facts: &Facts, store_layers: usize) -> Classes {
    let n = graph.len();
    let mut by_size: Vec<usize> = (0..n).filter(|&x| !facts.is_root[x]).collect();
    by_size.sort_by(|&a, &b| {
        facts.size[b]
            .cmp(&facts.size[a])
            .then_with(|| facts.name_rank[a].cmp(&facts.name_rank[b]))
            .then_with(|| graph.path(a).cmp(graph.path(b)))
    });
    let root_count = n - by_size.len();
    let for_paths = store_layers.saturating_sub(root_count).max(1);
    let singles = if by_size.len() <= for_paths {
        by_size.len()
    } else {
        for_paths - (for_paths * SMALL_PERCENT / 100).max(1)
    };
    let mut single = vec![false; n];
    for &x in &by_size[..singles] {
        single[x] = true;
    }
    Classes {
        single,
        small: by_size[singles..].to_vec(),
        buckets: for_paths - singles,
    }
}

/// Phase 2, dominator grouping: a small path joins its immediate dominator's group (never a
/// root's or a single's) when `w(x) = size(x) × (C(d) − C(x)) ≤ τ`, with τ the smallest power
/// of two that leaves at most PHASE_ONE_FACTOR groups per bucket. Returns each group's members
/// by head, every path in exactly one group.
fn dominator_groups(
    graph: &ClosureGraph,
    facts: &Facts,
    classes: &Classes,
) -> std::collections::BTreeMap<usize, Vec<usize>> {
    let n = graph.len();
    let weight: Vec<Option<u128>> = (0..n)
        .map(|x| match facts.idom[x] {
            Some(d) if !facts.is_root[d] && !classes.single[d] && !classes.single[x] => {
                let extra = facts.counts[d].saturating_sub(facts.counts[x]);
                Some(facts.size[x].saturating_mul(u128::from(extra)))
            }
            _ => None,
        })
        .collect();
    let target = classes.buckets.saturating_mul(PHASE_ONE_FACTOR);
    let mergeable = |tau: u128| {
        classes
            .small
            .iter()
            .filter(|&&x| weight[x].is_some_and(|w| w <= tau))
            .count()
    };
    let mut tau = 0u128;
    while classes.small.len() - mergeable(tau) > target && tau < u128::MAX / 4 {
        tau = if tau == 0 { 1 } else { tau * 2 };
    }
    let mut head: Vec<usize> = (0..n).collect();
    // Dominators come before what they dominate in topological order (they reach it).
    for &x in graph.topological_order() {
        if let (Some(d), true) = (facts.idom[x], weight[x].is_some_and(|w| w <= tau)) {
            head[x] = head[d];
        }
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (x, &h) in head.iter().enumerate() {
        groups.entry(h).or_default().push(x);
    }
    groups
}

/// Phase 3, cost merge: while more small groups than buckets remain, the two that cost least
/// on their own (bytes × how often they change) merge, like Huffman coding. Roots and singles
/// stay apart.
fn merge_by_cost(
    groups: std::collections::BTreeMap<usize, Vec<usize>>,
    facts: &Facts,
    classes: &Classes,
) -> Vec<Group> {
    use std::cmp::Reverse;
    let mut merged: Vec<Group> = groups
        .into_iter()
        .map(|(head, members)| Group {
            bytes: members.iter().map(|&m| facts.size[m]).sum(),
            changes: u128::from(facts.counts[head]),
            key: facts.name_rank[head],
            head,
            members,
        })
        .collect();
    let mut heap: std::collections::BinaryHeap<Reverse<(u128, usize, usize)>> = merged
        .iter()
        .enumerate()
        .filter(|(_, g)| !facts.is_root[g.head] && !classes.single[g.head])
        .map(|(i, g)| Reverse((g.cost(), g.key, i)))
        .collect();
    let mut alive = heap.len();
    while alive > classes.buckets && heap.len() >= 2 {
        let (Some(Reverse((_, _, a))), Some(Reverse((_, _, b)))) = (heap.pop(), heap.pop()) else {
            break;
        };
        let taken = std::mem::take(&mut merged[b].members);
        merged[a].members.extend(taken);
        merged[a].bytes += merged[b].bytes;
        merged[a].changes += merged[b].changes;
        let g = &merged[a];
        heap.push(Reverse((g.cost(), g.key, a)));
        alive -= 1;
    }
    merged.retain(|g| !g.members.is_empty());
    merged
}

/// Phase 4, fitting the budget: layers ordered from the least to the most likely to change
/// (ties by path); when there are still more than `store_layers` (many roots), the last layer
/// takes the rest. Returns (head, members sorted by path) per layer, and whether the last one
/// overflowed.
fn fit_budget(
    graph: &ClosureGraph,
    groups: Vec<Group>,
    facts: &Facts,
    store_layers: usize,
) -> (Vec<(usize, Vec<usize>)>, bool) {
    let mut ordered: Vec<(usize, Vec<usize>)> =
        groups.into_iter().map(|g| (g.head, g.members)).collect();
    ordered.sort_by(|(a, _), (b, _)| {
        facts.counts[*a]
            .cmp(&facts.counts[*b])
            .then_with(|| graph.path(*a).cmp(graph.path(*b)))
    });
    let mut overflowed = false;
    if ordered.len() > store_layers && store_layers > 0 {
        let rest: Vec<usize> = ordered
            .drain(store_layers - 1..)
            .flat_map(|(_, members)| members)
            .collect();
        ordered.push((rest[0], rest));
        overflowed = true;
    }
    for (_, members) in &mut ordered {
        members.sort_by(|&a, &b| graph.path(a).cmp(graph.path(b)));
    }
    (ordered, overflowed)
}

/// Phase 5, reasons: why each layer's paths are together, for the plan JSON.
fn reason(
    graph: &ClosureGraph,
    facts: &Facts,
    head: usize,
    members: &[usize],
    overflow: bool,
) -> String {
    if overflow {
        return format!(
            "{} groups most likely to change, merged to fit the layer limit",
            members.len()
        );
    }
    if facts.is_root[head] {
        return format!(
            "the image root {} (changes with every update) and {} paths only it uses",
            graph.path(head),
            members.len() - 1
        );
    }
    if members.len() > 1 {
        return format!(
            "dominated by {}: it and {} paths only it uses",
            graph.path(head),
            members.len() - 1
        );
    }
    match (facts.sharers[head], facts.idom[head]) {
        (0 | 1, Some(d)) => format!(
            "kept apart from {}, which uses it: large and changes less often",
            graph.path(d)
        ),
        (0 | 1, None) => "a root of the image".to_string(),
        (k, _) => format!("shared by {k} top-level packages"),
    }
}

/// The plan from scratch: the phases above in order.
fn plan_fresh(graph: &ClosureGraph, budget: Budget) -> Result<Plan> {
    let store_layers = budget.store_layers()?;
    let (facts, popularity) = rayon::join(|| Facts::of(graph, store_layers), || popularity(graph));
    let classes = size_classes(graph, &facts, store_layers);
    let groups = dominator_groups(graph, &facts, &classes);
    let merged = merge_by_cost(groups, &facts, &classes);
    let (ordered, overflowed) = fit_budget(graph, merged, &facts, store_layers);
    let count = ordered.len();
    let mut layers = Vec::with_capacity(count);
    let mut reasons = Vec::with_capacity(count);
    for (i, (head, members)) in ordered.into_iter().enumerate() {
        reasons.push(reason(
            graph,
            &facts,
            head,
            &members,
            overflowed && i + 1 == count,
        ));
        layers.push(members);
    }
    Ok(Plan {
        budget,
        layers,
        popularity,
        reasons,
        layering: super::Layering::Reuse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::tests::sized_record;
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
                .map(|i| {
                    let references = self.edges[i].iter().map(|&r| self.path(r)).collect();
                    sized_record(self.path(i), references, Some(self.sizes[i]))
                })
                .collect();
            ClosureGraph::from_records(records).unwrap()
        }

        /// Updates package p as Nix would: p and everything depending on it get new hashes.
        /// [`Store::update`] that also moves each changed path's size by up to ±10%, as a
        /// rebuilt package's size moves.
        fn update_resized(&self, p: usize, generation: u64) -> (Store, BTreeSet<usize>) {
            let (mut updated, hit) = self.update(p, generation);
            let mut x = generation.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for &i in &hit {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let factor = 0.9 + 0.2 * ((x >> 11) as f64 / (1u64 << 53) as f64);
                updated.sizes[i] = ((updated.sizes[i] as f64) * factor).round().max(1.0) as u64;
            }
            (updated, hit)
        }

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

        /// With the previous plan, every previous layer of unchanged paths is kept as it was,
        /// also when the update moves the changed paths' sizes by up to ±10%, as a rebuild
        /// does. (Without a previous plan no rule under a fixed budget can promise that: a
        /// changed path that grows into a larger size class may take the layer of its own that
        /// an unchanged path had, which then joins a group.)
        #[test]
        fn previous_layers_of_unchanged_paths_are_kept(n in 3usize..100, seed in 1u64..1000, max in 3usize..40, pick in 0usize..1000, resized: bool) {
            let store = Store::random(n, seed);
            let graph = store.graph();
            let plan = plan_for_reuse(&graph, Budget::new(max), None).unwrap();
            let previous = PreviousPlan { layers: layer_sets(&graph, &plan).into_iter().collect() };
            let p = 1 + pick % (n - 1);
            let (updated, _) = if resized {
                store.update_resized(p, seed + 1)
            } else {
                store.update(p, seed + 1)
            };
            let after_graph = updated.graph();
            let after = plan_for_reuse(&after_graph, Budget::new(max), Some(&previous)).unwrap();
            prop_assert!(after.layers.len() <= max);
            let after_sets = layer_sets(&after_graph, &after);
            let unchanged: Vec<&Vec<String>> = previous.layers.iter()
                .filter(|l| l.iter().all(|p| after_graph.index_of(p).is_some()))
                .collect();
            let kept = unchanged.iter().filter(|l| after_sets.contains(**l)).count();
            // Every one: the update changed a path, so at least one previous layer is not
            // kept and leaves its place for what is new.
            prop_assert_eq!(kept, unchanged.len());
        }
    }

    /// root -> app, tool; app -> libbig (shared), helper (app's own); tool -> libbig.
    fn small_store() -> (Store, ClosureGraph) {
        let names = ["root", "app", "tool", "libbig", "helper"];
        let store = Store {
            names: names.iter().map(|n| format!("{n}-1")).collect(),
            hashes: (0..5).map(hash).collect(),
            edges: vec![vec![1, 2], vec![3, 4], vec![3], vec![], vec![]],
            sizes: vec![1, 10, 10, 1_000_000, 5],
        };
        let graph = store.graph();
        (store, graph)
    }

    fn index(store: &Store, graph: &ClosureGraph, i: usize) -> usize {
        graph.index_of(&store.path(i)).unwrap()
    }

    #[test]
    fn size_classes_give_the_largest_paths_layers_of_their_own() {
        let (store, graph) = small_store();
        let facts = Facts::of(&graph, 4);
        assert!(facts.is_root[index(&store, &graph, 0)], "one root: apart");
        assert_eq!(
            facts.counts[index(&store, &graph, 1)],
            3,
            "app, libbig, helper"
        );
        let classes = size_classes(&graph, &facts, 4);
        // 4 layers - 1 root = 3 for paths; 45% of 3 rounds down to 1 bucket, 2 singles.
        assert_eq!(classes.buckets, 1);
        assert!(
            classes.single[index(&store, &graph, 3)],
            "libbig is largest"
        );
        assert_eq!(classes.small.len(), 2);
        let roomy = size_classes(&graph, &facts, 10);
        assert!(roomy.small.is_empty(), "room for every path alone");
        assert!((0..graph.len()).all(|x| roomy.single[x] != facts.is_root[x]));
    }

    #[test]
    fn dominator_groups_put_private_paths_with_their_user() {
        let (store, graph) = small_store();
        let facts = Facts::of(&graph, 4);
        let classes = size_classes(&graph, &facts, 4);
        let groups = dominator_groups(&graph, &facts, &classes);
        let mut all: Vec<usize> = groups.values().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..graph.len()).collect::<Vec<_>>(), "each path once");
        let helper = index(&store, &graph, 4);
        let app = index(&store, &graph, 1);
        if classes.small.contains(&helper) && !classes.single[app] {
            assert!(groups[&app].contains(&helper), "{groups:?}");
        }
    }

    #[test]
    fn merge_by_cost_leaves_at_most_the_buckets_of_small_groups() {
        let store = Store::random(60, 7);
        let graph = store.graph();
        let facts = Facts::of(&graph, 12);
        let classes = size_classes(&graph, &facts, 12);
        let groups = dominator_groups(&graph, &facts, &classes);
        let merged = merge_by_cost(groups, &facts, &classes);
        let small_groups = merged
            .iter()
            .filter(|g| !facts.is_root[g.head] && !classes.single[g.head])
            .count();
        assert!(small_groups <= classes.buckets.max(1), "{small_groups}");
        let members: usize = merged.iter().map(|g| g.members.len()).sum();
        assert_eq!(members, graph.len());
    }

    #[test]
    fn fit_budget_orders_by_change_and_merges_the_overflow() {
        let (store, graph) = small_store();
        let facts = Facts::of(&graph, 10);
        let groups: Vec<Group> = (0..graph.len())
            .map(|x| Group {
                head: x,
                members: vec![x],
                bytes: 1,
                changes: 1,
                key: 0,
            })
            .collect();
        let (ordered, overflowed) = fit_budget(&graph, groups, &facts, 3);
        assert!(overflowed);
        assert_eq!(ordered.len(), 3);
        // The least likely to change (libbig and helper, closures of one) come first; the
        // root, which changes with everything, is in the merged last layer.
        assert_eq!(facts.counts[ordered[0].0], 1);
        assert!(ordered[2].1.contains(&index(&store, &graph, 0)));
        assert_eq!(ordered.iter().map(|(_, m)| m.len()).sum::<usize>(), 5);
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
