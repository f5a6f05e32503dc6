//! How much clients re-pull after updates, and how much two images share, for each layering
//! side by side: popularity, auto, reuse, and reuse given the previous plan.
//!
//!     cargo run --release --example simulate -- GRAPH.json [--layers 10,30,100] [--updates 200]
//!         [--size-jitter 0.1]
//!
//! GRAPH is a closure graph with NAR sizes (exportReferencesGraph's JSON, e.g. the shared
//! corpus's graph.json). An update is a single package: it and every path depending on it get
//! new store paths, as in Nix, and each of those paths' sizes moves by a random factor within
//! ±`--size-jitter` (a rebuilt package rarely keeps its exact size). For each strategy and
//! budget it reports:
//! - re-pulled: the mean share of image bytes a client holding version v pulls for v+1, over
//!   random updates from one version, beside the share of the changed paths alone (the
//!   floor); "reuse+previous" plans v+1 given v's plan (`--previous-plan`);
//! - series: the same over a sequence of updates, each from the last ("reuse+previous" given
//!   the last plan each time);
//! - sharing: for two images made of disjoint halves of the top-level packages, the share of
//!   the second image's bytes already present as identical layers in the first, beside the
//!   share of paths they have in common (a previous plan has no part in it).
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
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// Uniform in [-1, 1].
    fn signed_unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
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
            deriver: None,
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

/// One strategy as the table shows it.
struct Strategy {
    name: &'static str,
    layering: Layering,
    /// Each build is given the previous version's plan.
    with_previous: bool,
}

const STRATEGIES: [Strategy; 4] = [
    Strategy {
        name: "popularity",
        layering: Layering::Popularity,
        with_previous: false,
    },
    Strategy {
        name: "auto",
        layering: Layering::Auto,
        with_previous: false,
    },
    Strategy {
        name: "reuse",
        layering: Layering::Reuse,
        with_previous: false,
    },
    Strategy {
        name: "reuse+previous",
        layering: Layering::Reuse,
        with_previous: true,
    },
];

/// The closure after a single-package update of `p`: it and its dependents renamed, their
/// sizes jittered. Also the changed paths' bytes, after the update.
fn update(
    nodes: &[Node],
    p: usize,
    generation: usize,
    jitter: f64,
    rng: &mut Rng,
) -> (Vec<Node>, u64) {
    let hit = dependents(nodes, p);
    let mut next = nodes.to_vec();
    let mut changed = 0;
    for (n, _) in next.iter_mut().zip(&hit).filter(|(_, h)| **h) {
        n.path = renamed(&n.path, generation);
        n.size = ((n.size as f64) * (1.0 + jitter * rng.signed_unit())).round() as u64;
        changed += n.size;
    }
    (next, changed)
}

/// A random path to update: any but the image roots.
fn pick(rng: &mut Rng, nodes: &[Node], roots: &[usize]) -> usize {
    loop {
        let p = rng.below(nodes.len());
        if !roots.contains(&p) {
            return p;
        }
    }
}

fn total(nodes: &[Node]) -> u64 {
    nodes.iter().map(|n| n.size).sum()
}

/// Mean shares re-pulled and changed over `updates` updates: each from `nodes`, or, in a
/// series, each from the last (as releases follow one another).
fn measure_updates(
    nodes: &[Node],
    roots: &[usize],
    layers: usize,
    strategy: &Strategy,
    updates: usize,
    jitter: f64,
    in_series: bool,
) -> (f64, f64) {
    let all = vec![true; nodes.len()];
    let mut current = nodes.to_vec();
    let mut graph = graph_of(&current, &all);
    let mut plan = make_plan(&graph, layers, strategy.layering, None);
    // Other updates for the series than from one version, each drawn the same for every
    // strategy.
    let (mut rng, mut sizes, first_generation) = if in_series {
        (Rng(0x2545_F491_4F6C_DD1D), Rng(0x1234_5678_9ABC_DEF1), 1000)
    } else {
        (Rng(0x9E37_79B9_7F4A_7C15), Rng(0x5DEE_CE66_D1CE_4E5B), 1)
    };
    let (mut pulled_sum, mut changed_sum) = (0.0, 0.0);
    for u in 0..updates {
        let p = pick(&mut rng, &current, roots);
        let old_sets = layer_sets(&graph, &plan);
        let previous = previous_of(&graph, &plan);
        let (next, changed) = update(&current, p, first_generation + u, jitter, &mut sizes);
        let next_graph = graph_of(&next, &all);
        let given = strategy.with_previous.then_some(&previous);
        let next_plan = make_plan(&next_graph, layers, strategy.layering, given);
        let next_total = total(&next) as f64;
        pulled_sum += pulled(&old_sets, &layer_sets(&next_graph, &next_plan)) as f64 / next_total;
        changed_sum += changed as f64 / next_total;
        if in_series {
            (current, graph, plan) = (next, next_graph, next_plan);
        }
    }
    (pulled_sum / updates as f64, changed_sum / updates as f64)
}

/// Shares of the second image's bytes present in the first, as layers and as paths, for two
/// images made of disjoint halves of the top-level packages (one root over them).
fn sharing(nodes: &[Node], roots: &[usize], layers: usize, layering: Layering) -> (f64, f64) {
    let [root] = roots else {
        return (f64::NAN, f64::NAN);
    };
    let tops = &nodes[*root].references;
    let half = |parity: usize| -> (Vec<Node>, Vec<bool>) {
        let mut image = nodes.to_vec();
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(file) = args.first().filter(|a| !a.starts_with("--")) else {
        fail("usage: simulate GRAPH.json [--layers 10,30,100] [--updates 200] [--size-jitter 0.1]");
    };
    let budgets: Vec<usize> = value("--layers")
        .unwrap_or_else(|| "10,30,100".into())
        .split(',')
        .map(|s| s.parse().unwrap_or_else(|_| fail("--layers takes numbers")))
        .collect();
    let updates: usize = value("--updates").map_or(200, |s| {
        s.parse()
            .unwrap_or_else(|_| fail("--updates takes a number"))
    });
    let jitter: f64 = value("--size-jitter").map_or(0.1, |s| {
        s.parse()
            .ok()
            .filter(|j: &f64| (0.0..1.0).contains(j))
            .unwrap_or_else(|| fail("--size-jitter takes a fraction in [0, 1)"))
    });

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
    let roots = loaded.roots();

    println!(
        "{} paths, {:.2} GB, {updates} updates, sizes of changed paths within ±{:.0}%",
        nodes.len(),
        total(&nodes) as f64 / 1e9,
        jitter * 100.0
    );
    println!(
        "{:<15} {:>6} {:>10} {:>8} {:>7} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7}",
        "layering",
        "layers",
        "re-pulled",
        "changed",
        "ratio",
        "series",
        "changed",
        "ratio",
        "shared",
        "common",
        "ratio"
    );
    for &layers in &budgets {
        for strategy in &STRATEGIES {
            let (re_pulled, changed) =
                measure_updates(&nodes, &roots, layers, strategy, updates, jitter, false);
            let (in_series, series_changed) =
                measure_updates(&nodes, &roots, layers, strategy, updates, jitter, true);
            let shared = if strategy.with_previous {
                "       -        -       -".to_string()
            } else {
                let (shared, common) = sharing(&nodes, &roots, layers, strategy.layering);
                format!(
                    "{:>7.1}% {:>7.1}% {:>6.2}x",
                    100.0 * shared,
                    100.0 * common,
                    shared / common
                )
            };
            println!(
                "{:<15} {:>6} {:>9.1}% {:>7.1}% {:>6.2}x {:>7.1}% {:>7.1}% {:>6.2}x {shared}",
                strategy.name,
                layers,
                100.0 * re_pulled,
                100.0 * changed,
                re_pulled / changed,
                100.0 * in_series,
                100.0 * series_changed,
                in_series / series_changed,
            );
        }
    }
}
