//! How much clients re-pull after updates, and how much two images share, for each layering
//! (popularity, auto, reuse).
//!
//!     cargo run --release --example simulate -- GRAPH.json [--layers 10,30,100] [--updates 200]
//!
//! GRAPH is a closure graph with NAR sizes (exportReferencesGraph's JSON, e.g. the shared
//! corpus's graph.json). For each strategy and budget it reports:
//! - updates: the mean share of image bytes a client holding version v pulls for v+1, over
//!   random single-package updates (the package and every path depending on it get new store
//!   paths, as in Nix), beside the share of the changed paths alone (the floor);
//! - with previous plan: the same over a sequence of updates, each build given the previous
//!   plan (`--previous-plan`);
//! - sharing: for two images made of disjoint halves of the top-level packages, the share of
//!   the second image's bytes already present as identical layers in the first, beside the
//!   share of paths they have in common.
//!
//! A layer counts as present only when its exact set of store paths is.

use std::collections::HashSet;

use layered_gen::closure::{ClosureGraph, Location, Origin, PathRecord};
use layered_gen::plan::{self, Budget, Layering, Plan, PreviousPlan};

fn fail(message: &str) -> ! {
    eprintln!("simulate: {message}");
    std::process::exit(1);
}

/// A small deterministic random number generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

#[derive(Clone)]
struct Node {
    path: String,
    references: Vec<usize>,
    size: u64,
}

fn graph_of(nodes: &[Node], keep: &[bool]) -> ClosureGraph {
    let records = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| keep[*i])
        .map(|(i, n)| PathRecord {
            path: n.path.clone(),
            references: n
                .references
                .iter()
                .map(|&r| nodes[r].path.clone())
                .collect(),
            nar_size: Some(n.size),
            nar_hash: None,
            origin: Origin {
                file: "simulation".into(),
                at: Location::Line(i + 1),
            },
        })
        .collect();
    ClosureGraph::from_records(records).unwrap_or_else(|e| fail(&e.message()))
}

fn layer_sets(graph: &ClosureGraph, plan: &Plan) -> Vec<(Vec<String>, u64)> {
    plan.layers
        .iter()
        .map(|layer| {
            let mut paths: Vec<String> = layer.iter().map(|&p| graph.path(p).to_string()).collect();
            paths.sort();
            let size = layer.iter().map(|&p| graph.nar_size(p).unwrap_or(0)).sum();
            (paths, size)
        })
        .collect()
}

/// Bytes of `new`'s layers not present, as exact path sets, in `old`.
fn pulled(old: &[(Vec<String>, u64)], new: &[(Vec<String>, u64)]) -> u64 {
    let present: HashSet<&Vec<String>> = old.iter().map(|(p, _)| p).collect();
    new.iter()
        .filter(|(p, _)| !present.contains(p))
        .map(|(_, s)| s)
        .sum()
}

fn make_plan(
    graph: &ClosureGraph,
    layers: usize,
    layering: Layering,
    previous: Option<&PreviousPlan>,
) -> Plan {
    plan::plan(graph, Budget::new(layers), layering, previous)
        .unwrap_or_else(|e| fail(&e.message()))
}

fn previous_of(graph: &ClosureGraph, plan: &Plan) -> PreviousPlan {
    PreviousPlan {
        layers: layer_sets(graph, plan)
            .into_iter()
            .map(|(p, _)| p)
            .collect(),
    }
}

/// The paths that depend on `p`, `p` included.
fn dependents(nodes: &[Node], p: usize) -> Vec<bool> {
    let mut parents = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &r in &n.references {
            parents[r].push(i);
        }
    }
    let mut hit = vec![false; nodes.len()];
    let mut stack = vec![p];
    hit[p] = true;
    while let Some(x) = stack.pop() {
        for &q in &parents[x] {
            if !hit[q] {
                hit[q] = true;
                stack.push(q);
            }
        }
    }
    hit
}

/// A new store path for an updated package: same name, new hash.
fn renamed(path: &str, generation: usize) -> String {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    let (hash, name) = base.split_once('-').unwrap_or((base, ""));
    let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut new_hash: Vec<u8> = hash.bytes().collect();
    let mut g = generation;
    for b in new_hash.iter_mut().take(6) {
        let pos = alphabet.iter().position(|a| a == b).unwrap_or(0);
        *b = alphabet[(pos + 1 + g % 31) % 32];
        g /= 31;
    }
    format!("{dir}/{}-{name}", String::from_utf8_lossy(&new_hash))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(file) = args.first().filter(|a| !a.starts_with("--")) else {
        fail("usage: simulate GRAPH.json [--layers 10,30,100] [--updates 200]");
    };
    let budgets: Vec<usize> = value("--layers")
        .unwrap_or_else(|| "10,30,100".into())
        .split(',')
        .map(|s| s.parse().unwrap_or_else(|_| fail("--layers takes numbers")))
        .collect();
    let updates: usize = value("--updates").map_or(200, |s| s.parse().unwrap_or(200));

    let loaded = ClosureGraph::load(&[file.into()], &Default::default())
        .unwrap_or_else(|e| fail(&e.message()));
    let nodes: Vec<Node> = (0..loaded.len())
        .map(|i| Node {
            path: loaded.path(i).to_string(),
            references: loaded.references(i).to_vec(),
            size: loaded
                .nar_size(i)
                .unwrap_or_else(|| fail("the graph needs NAR sizes (narSize)")),
        })
        .collect();
    let all = vec![true; nodes.len()];
    let total: u64 = nodes.iter().map(|n| n.size).sum();
    let roots = loaded.roots();

    println!(
        "{} paths, {:.2} GB, {updates} updates",
        nodes.len(),
        total as f64 / 1e9
    );
    println!(
        "{:<11} {:>6} {:>10} {:>9} {:>7} {:>13} {:>9} {:>8} {:>7}",
        "layering",
        "layers",
        "re-pulled",
        "changed",
        "ratio",
        "with previous",
        "shared",
        "common",
        "ratio"
    );
    for &layers in &budgets {
        for (name, layering) in [
            ("popularity", Layering::Popularity),
            ("auto", Layering::Auto),
            ("reuse", Layering::Reuse),
        ] {
            // Random single-package updates from the same version.
            let graph = graph_of(&nodes, &all);
            let base_sets = layer_sets(&graph, &make_plan(&graph, layers, layering, None));
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let (mut pulled_sum, mut changed_sum) = (0.0, 0.0);
            for u in 0..updates {
                let p = loop {
                    let p = rng.below(nodes.len());
                    if !roots.contains(&p) {
                        break p;
                    }
                };
                let hit = dependents(&nodes, p);
                let mut next = nodes.clone();
                for (i, n) in next.iter_mut().enumerate() {
                    if hit[i] {
                        n.path = renamed(&n.path, u + 1);
                    }
                }
                let changed: u64 = nodes
                    .iter()
                    .zip(&hit)
                    .filter(|(_, h)| **h)
                    .map(|(n, _)| n.size)
                    .sum();
                let next_graph = graph_of(&next, &all);
                let next_sets =
                    layer_sets(&next_graph, &make_plan(&next_graph, layers, layering, None));
                pulled_sum += pulled(&base_sets, &next_sets) as f64 / total as f64;
                changed_sum += changed as f64 / total as f64;
            }
            let re_pulled = pulled_sum / updates as f64;
            let changed = changed_sum / updates as f64;

            // A sequence of updates, each build given the previous plan.
            let with_previous = if layering == Layering::Reuse {
                let mut current = nodes.clone();
                let mut graph = graph_of(&current, &all);
                let mut plan = make_plan(&graph, layers, layering, None);
                let mut rng = Rng(0x2545_F491_4F6C_DD1D);
                let mut sum = 0.0;
                for u in 0..updates {
                    let p = loop {
                        let p = rng.below(nodes.len());
                        if !roots.contains(&p) {
                            break p;
                        }
                    };
                    let hit = dependents(&current, p);
                    let old_sets = layer_sets(&graph, &plan);
                    let previous = previous_of(&graph, &plan);
                    for (i, n) in current.iter_mut().enumerate() {
                        if hit[i] {
                            n.path = renamed(&n.path, 1000 + u);
                        }
                    }
                    graph = graph_of(&current, &all);
                    plan = make_plan(&graph, layers, layering, Some(&previous));
                    sum += pulled(&old_sets, &layer_sets(&graph, &plan)) as f64 / total as f64;
                }
                format!("{:.1}%", 100.0 * sum / updates as f64)
            } else {
                "-".to_string()
            };

            // Two images from disjoint halves of the top-level packages.
            let (shared, common) = match roots.as_slice() {
                [root] => {
                    let tops = &nodes[*root].references;
                    let half = |parity: usize| -> (Vec<Node>, Vec<bool>) {
                        let mut image = nodes.clone();
                        image[*root].references = tops
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| i % 2 == parity)
                            .map(|(_, &t)| t)
                            .collect();
                        let mut keep = vec![false; nodes.len()];
                        let mut stack = vec![*root];
                        while let Some(x) = stack.pop() {
                            if !keep[x] {
                                keep[x] = true;
                                stack.extend(image[x].references.iter().copied());
                            }
                        }
                        (image, keep)
                    };
                    let (a_nodes, a_keep) = half(0);
                    let (mut b_nodes, b_keep) = half(1);
                    // The second image's root is another store path.
                    b_nodes[*root].path = renamed(&b_nodes[*root].path, 7);
                    let a = graph_of(&a_nodes, &a_keep);
                    let b = graph_of(&b_nodes, &b_keep);
                    let a_sets = layer_sets(&a, &make_plan(&a, layers, layering, None));
                    let b_sets = layer_sets(&b, &make_plan(&b, layers, layering, None));
                    let b_total: u64 = b_sets.iter().map(|(_, s)| s).sum();
                    let already = b_total - pulled(&a_sets, &b_sets);
                    let common: u64 = (0..nodes.len())
                        .filter(|&i| a_keep[i] && b_keep[i] && i != *root)
                        .map(|i| nodes[i].size)
                        .sum();
                    (
                        already as f64 / b_total as f64,
                        common as f64 / b_total as f64,
                    )
                }
                _ => (f64::NAN, f64::NAN),
            };
            println!(
                "{:<11} {:>6} {:>9.1}% {:>8.1}% {:>6.2}x {:>13} {:>8.1}% {:>7.1}% {:>6.2}x",
                name,
                layers,
                100.0 * re_pulled,
                100.0 * changed,
                re_pulled / changed,
                with_previous,
                100.0 * shared,
                100.0 * common,
                shared / common
            );
        }
    }
}
