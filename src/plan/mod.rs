//! Stage 2: the layer plan — which store paths go into which layer.
//!
//! The popularity strategy is nixpkgs' `referencesByPopularity`, so images share layers with the
//! grouping users already rely on:
//!
//! - Unfold the graph from its roots (the paths nothing references) into a tree, a path reached
//!   along several routes once per route. nixpkgs scores a forest `F` by `pop[p] += 1` for each
//!   top-level `p`, and for each top-level `(q, S)`, `pop[x] += pop_S[x] + 1` for every `x` in
//!   the subtree `S`.
//! - Unrolling that recursion gives a closed form we can compute without unfolding (the tree is
//!   exponential): with `N(y)` the number of root-to-`y` routes, `pop[x]` is the sum of `N(y)`
//!   over every `y` that reaches `x`, `x` included. `N` is one pass in topological order; the
//!   sums come from a chain cover of the graph (`reach.rs`), near-linear on the graphs Nix
//!   makes. Both are exact integers (`u128`, redone wider if that ever overflows).
//! - Order by popularity, highest first; ties by nixpkgs' `package_name` key, which is the name
//!   after the hash, then `-`, then the store directory and hash, so the order is total.
//! - With `L` store layers, the first `L - 1` paths get a layer each and the rest share the last.

mod auto;
pub(crate) use auto::path_key;
mod json;
mod layering_pipeline;
mod reach;
mod reuse;

pub use layering_pipeline::Pipeline;

pub use auto::plan_auto;
pub use json::{BaseKind, BaseLayerJson, PlanJson, PlanLayerJson, PreviousPlan};
pub use reuse::plan_for_reuse;

use num_bigint::BigUint;
use reach::{Count, Limbs, Walk, reach_sums};

use crate::closure::{ClosureGraph, name_of};
use crate::error::{Error, Result, Setting};

/// How many layers the image may have and who else takes some.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub max_layers: usize,
    /// Layers of a base image (`--from-image`), kept as they are.
    pub base_layers: usize,
    /// Layers built before the image (`--layer`), after the base's.
    pub prebuilt_layers: usize,
    /// Whether a customisation layer (contents at `/`) comes last.
    pub customisation_layer: bool,
}

impl Budget {
    pub fn new(max_layers: usize) -> Self {
        Budget {
            max_layers,
            base_layers: 0,
            prebuilt_layers: 0,
            customisation_layer: false,
        }
    }

    /// The number of layers left for store paths.
    pub fn store_layers(&self) -> Result<usize> {
        if self.max_layers < 2 {
            return Err(Error::value(format!(
                "a limit of {} layers is too small: it must be at least 2",
                self.max_layers
            ))
            .about(Setting::MaxLayers));
        }
        let taken = self.taken();
        if self.max_layers <= taken {
            let mut takers = Vec::new();
            if self.base_layers > 0 {
                takers.push(format!("the base image has {} layers", self.base_layers));
            }
            if self.prebuilt_layers > 0 {
                takers.push(format!("--layer gives {}", self.prebuilt_layers));
            }
            if self.customisation_layer {
                takers.push("the customisation layer takes 1".to_string());
            }
            return Err(Error::value(format!(
                "a limit of {} layers leaves no layer for the store paths: {}; allow {} or more",
                self.max_layers,
                takers.join(" and "),
                taken + 1
            ))
            .about(Setting::MaxLayers));
        }
        Ok(self.max_layers - taken)
    }

    /// The layers that are not store layers of the plan.
    pub fn taken(&self) -> usize {
        self.base_layers + self.prebuilt_layers + usize::from(self.customisation_layer)
    }

    /// An image with no store paths left to plan (all in base or prebuilt layers): it only
    /// has to fit.
    pub fn check_without_store_layers(&self) -> Result<()> {
        if self.taken() > self.max_layers {
            return Err(Error::value(format!(
                "a limit of {} layers is too small for the {} layers the image has without any \
                 store layer of its own; allow {} or more",
                self.max_layers,
                self.taken(),
                self.taken()
            ))
            .about(Setting::MaxLayers));
        }
        Ok(())
    }
}

impl Plan {
    /// The plan of a closure with nothing left to plan.
    pub fn empty(budget: Budget, layering: Layering) -> Self {
        Plan {
            budget,
            layers: Vec::new(),
            popularity: Vec::new(),
            reasons: Vec::new(),
            layering,
        }
    }
}

/// The store layers of an image, most popular first, each a list of graph indices.
#[derive(Clone, Debug)]
pub struct Plan {
    pub budget: Budget,
    pub layers: Vec<Vec<usize>>,
    pub popularity: Vec<BigUint>,
    /// Why each layer's paths are together.
    pub reasons: Vec<String>,
    /// The strategy that made the plan.
    pub layering: Layering,
}

/// How store paths are grouped into layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Layering {
    /// nixpkgs' grouping (the default).
    #[default]
    Popularity,
    /// Layers that survive updates (see `reuse`).
    Reuse,
    /// nixpkgs' current default (dockerTools' auto-layer): the largest paths with what only
    /// they use, shared paths grouped by who uses them. Needs narSizes.
    Auto,
    /// nixpkgs' layeringPipeline (`--layering-pipeline`), not a `--layering` value.
    #[value(skip)]
    Pipeline,
}

impl Layering {
    /// Its name, as `--layering` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Layering::Popularity => "popularity",
            Layering::Reuse => "reuse",
            Layering::Auto => "auto",
            Layering::Pipeline => "pipeline",
        }
    }
}

/// Plans the store layers with the chosen strategy.
pub fn plan(
    graph: &ClosureGraph,
    budget: Budget,
    layering: Layering,
    previous: Option<&PreviousPlan>,
) -> Result<Plan> {
    match layering {
        Layering::Popularity => plan_by_popularity(graph, budget),
        Layering::Reuse => plan_for_reuse(graph, budget, previous),
        Layering::Auto => plan_auto(graph, budget),
        Layering::Pipeline => Err(Error::value(
            "the pipeline layering takes its operations from --layering-pipeline",
        )),
    }
}

/// Plans the store layers with nixpkgs' layeringPipeline (`layering_pipeline.rs`). Its layers must fit
/// the budget: a pipeline ends with `limit_layers` for that.
pub fn plan_by_pipeline(graph: &ClosureGraph, budget: Budget, pipeline: &Pipeline) -> Result<Plan> {
    let store_layers = budget.store_layers()?;
    let whole_popularity = std::cell::OnceCell::new();
    let layers = pipeline.layers_with(graph, &whole_popularity)?;
    if layers.len() > store_layers {
        return Err(Error::value(format!(
            "the layering pipeline makes {} layers, more than the {store_layers} the layer \
             limit leaves for store paths: end it with [\"limit_layers\", {store_layers}]",
            layers.len()
        ))
        .about(Setting::LayeringPipeline));
    }
    let count = layers.len();
    Ok(Plan {
        budget,
        reasons: (0..count)
            .map(|i| format!("pipeline: its layer {} of {count}", i + 1))
            .collect(),
        layers,
        popularity: whole_popularity
            .into_inner()
            .unwrap_or_else(|| popularity(graph)),
        layering: Layering::Pipeline,
    })
}

/// Plans the store layers by popularity, as nixpkgs does.
pub fn plan_by_popularity(graph: &ClosureGraph, budget: Budget) -> Result<Plan> {
    let store_layers = budget.store_layers()?;
    let popularity = popularity(graph);
    let order = popularity_order(graph, &popularity);
    let mut layers: Vec<Vec<usize>> = Vec::new();
    for (rank, path) in order.into_iter().enumerate() {
        if rank < store_layers {
            layers.push(vec![path]);
        } else {
            layers[store_layers - 1].push(path);
        }
    }
    let count = layers.len();
    let reasons = (0..count)
        .map(|i| {
            if i + 1 == count && layers[i].len() > 1 {
                format!(
                    "the {} least popular paths, beyond the budget",
                    layers[i].len()
                )
            } else {
                format!("popularity rank {}", i + 1)
            }
        })
        .collect();
    Ok(Plan {
        budget,
        layers,
        popularity,
        reasons,
        layering: Layering::Popularity,
    })
}

/// Paths ordered most popular first, ties by nixpkgs' `package_name` key.
pub fn popularity_order(graph: &ClosureGraph, popularity: &[BigUint]) -> Vec<usize> {
    let keys: Vec<String> = (0..graph.len())
        .map(|i| tie_break_key(graph.store_dir(), graph.path(i)))
        .collect();
    let mut order: Vec<usize> = (0..graph.len()).collect();
    order.sort_by(|&a, &b| {
        popularity[b]
            .cmp(&popularity[a])
            .then_with(|| keys[a].cmp(&keys[b]))
    });
    order
}

/// nixpkgs' `package_name`: the path split at `-` with its first piece moved to the end, i.e.
/// `<name>-<store dir>/<hash>`. Built from the name so that a `-` in a test store directory
/// does not change the order.
fn tie_break_key(store_dir: &str, path: &str) -> String {
    let base = &path[store_dir.len() + 1..];
    let hash = base.split('-').next().unwrap_or(base);
    format!("{}-{store_dir}/{hash}", name_of(path))
}

/// The popularity of every path of the graph (see the module doc).
pub fn popularity(graph: &ClosureGraph) -> Vec<BigUint> {
    // The narrowest exact counter that fits; almost always the first.
    popularity_with::<u128>(graph)
        .or_else(|| popularity_with::<Limbs<4>>(graph))
        .or_else(|| popularity_with::<Limbs<16>>(graph))
        .or_else(|| popularity_with::<BigUint>(graph))
        .unwrap_or_default()
}

fn popularity_with<C: Count>(graph: &ClosureGraph) -> Option<Vec<BigUint>> {
    let parents = graph.referrers();
    // routes[y]: how often y occurs in the tree unfolded from the roots.
    let mut routes: Vec<C> = vec![C::zero(); graph.len()];
    for &y in graph.topological_order() {
        if parents[y].is_empty() {
            routes[y] = C::one();
        }
        let here = routes[y].clone();
        for &child in graph.references(y) {
            if !routes[child].add(&here) {
                return None;
            }
        }
    }
    // pop[x]: the routes of every path that reaches x, x included.
    let upwards: Vec<usize> = graph.topological_order().iter().rev().copied().collect();
    let walk = Walk {
        next: &|y| parents[y].as_slice(),
        prev: &|y| graph.references(y),
        order: &upwards,
    };
    let sums = reach_sums(&walk, |y| routes[y].clone())?;
    Some(sums.into_iter().map(C::into_big).collect())
}

impl Plan {
    /// The sum of the NAR sizes of a layer's paths, when the closure file gave them all.
    /// None also when the sum does not fit in 64 bits (narSizes a closure file made up).
    pub fn nar_size(&self, graph: &ClosureGraph, layer: usize) -> Option<u64> {
        self.layers[layer]
            .iter()
            .try_fold(0u64, |sum, &p| sum.checked_add(graph.nar_size(p)?))
    }

    /// The plan as `layered-gen plan` prints it, the base image's layers first.
    pub fn to_json(&self, graph: &ClosureGraph, base_layers: &[BaseLayerJson]) -> Result<String> {
        PlanJson::new(self, graph, base_layers)?.to_string_pretty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::tests::sized_record;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

    /// A valid store path for node `i` with the given name.
    fn store_path(i: usize, name: &str) -> String {
        let mut hash = String::new();
        let mut n = i;
        for _ in 0..32 {
            hash.push(ALPHABET[n % 32] as char);
            n /= 32;
        }
        format!("/nix/store/{hash}-{name}")
    }

    fn graph(edges: &[(usize, &[usize])], names: &[&str]) -> ClosureGraph {
        let paths: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| store_path(i, n))
            .collect();
        let records = edges
            .iter()
            .map(|(from, refs)| {
                let references = refs.iter().map(|&r| paths[r].clone()).collect();
                sized_record(paths[*from].clone(), references, Some(1))
            })
            .collect();
        ClosureGraph::from_records(records).unwrap()
    }

    fn pop_by_name(g: &ClosureGraph) -> BTreeMap<String, BigUint> {
        let pop = popularity(g);
        (0..g.len())
            .map(|i| (name_of(g.path(i)).to_string(), pop[i].clone()))
            .collect()
    }

    /// nixpkgs' recursion, run literally on the unfolded tree: the reference our closed form
    /// must equal. Exponential, so only for small graphs.
    fn unfolded_popularity(g: &ClosureGraph) -> Vec<BigUint> {
        fn contest(g: &ClosureGraph, forest: &[usize]) -> BTreeMap<usize, BigUint> {
            let mut pop: BTreeMap<usize, BigUint> = BTreeMap::new();
            for &top in forest {
                *pop.entry(top).or_default() += 1u8;
                for (x, n) in contest(g, g.references(top)) {
                    *pop.entry(x).or_default() += n + 1u8;
                }
            }
            pop
        }
        let pop = contest(g, &g.roots());
        (0..g.len())
            .map(|i| pop.get(&i).cloned().unwrap_or_default())
            .collect()
    }

    #[test]
    fn chain_popularity_grows_downwards() {
        // r -> a -> b
        let g = graph(&[(0, &[1]), (1, &[2]), (2, &[])], &["r", "a", "b"]);
        let pop = pop_by_name(&g);
        assert_eq!(pop["r"], 1u8.into());
        assert_eq!(pop["a"], 2u8.into());
        assert_eq!(pop["b"], 3u8.into());
    }

    #[test]
    fn diamond_worked_by_hand() {
        // r -> a, r -> b, a -> c, b -> c. Unfolded: r{a{c}, b{c}}.
        // contest({c}) = {c:1}; contest(S_r = {a{c}, b{c}}) = {a:1, b:1, c:2+2};
        // top level: r:1, a:1+1, b:1+1, c:4+1.
        let g = graph(
            &[(0, &[1, 2]), (1, &[3]), (2, &[3]), (3, &[])],
            &["r", "a", "b", "c"],
        );
        let pop = pop_by_name(&g);
        assert_eq!(pop["r"], 1u8.into());
        assert_eq!(pop["a"], 2u8.into());
        assert_eq!(pop["b"], 2u8.into());
        assert_eq!(pop["c"], 5u8.into());
        assert_eq!(popularity(&g), unfolded_popularity(&g));
    }

    /// A ladder of diamonds: the number of routes doubles at every rung, so popularity at the
    /// bottom is about 2^(rungs+1): beyond u64 at 70 rungs and beyond u128 at 130.
    fn ladder(rungs: usize) -> ClosureGraph {
        let mut edges: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut names = Vec::new();
        for r in 0..rungs {
            let (top, left, right) = (3 * r, 3 * r + 1, 3 * r + 2);
            edges.push((top, vec![left, right]));
            edges.push((left, vec![top + 3]));
            edges.push((right, vec![top + 3]));
            names.extend([format!("t{r}"), format!("l{r}"), format!("r{r}")]);
        }
        edges.push((3 * rungs, vec![]));
        names.push("bottom".to_string());
        let edge_refs: Vec<(usize, &[usize])> =
            edges.iter().map(|(f, t)| (*f, t.as_slice())).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        graph(&edge_refs, &name_refs)
    }

    /// Closed form for the ladder: the rung-k top is reached by 2^k routes, each side by 2^k,
    /// and everything above reaches the bottom, so pop(bottom) = sum of routes above it.
    fn ladder_bottom(rungs: usize) -> BigUint {
        let mut sum = BigUint::ZERO;
        for k in 0..rungs {
            sum += BigUint::from(3u8) << k; // top (2^k) + two sides (2^k each)
        }
        sum + (BigUint::from(1u8) << rungs) // the bottom itself
    }

    #[test]
    fn deep_ladders_stay_exact_beyond_u64_and_u128() {
        for rungs in [3, 70, 140] {
            let g = ladder(rungs);
            let pop = pop_by_name(&g);
            assert_eq!(pop["bottom"], ladder_bottom(rungs), "{rungs} rungs");
        }
        assert!(ladder_bottom(70) > BigUint::from(u64::MAX));
        assert!(ladder_bottom(140) > BigUint::from(u128::MAX));
        let small = ladder(4);
        assert_eq!(popularity(&small), unfolded_popularity(&small));
    }

    #[test]
    fn order_breaks_ties_like_nixpkgs_package_name() {
        // Equal popularity (three roots). nixpkgs sorts by "<name>-/nix/store/<hash>", so
        // "foo-1.0+x" comes before "foo-1.0" ('+' < '-'), although "foo-1.0" is a prefix of it.
        let g = graph(
            &[(0, &[]), (1, &[]), (2, &[])],
            &["foo-1.0", "foo-1.0+x", "bar"],
        );
        let order = popularity_order(&g, &popularity(&g));
        let names: Vec<&str> = order.iter().map(|&i| name_of(g.path(i))).collect();
        assert_eq!(names, vec!["bar", "foo-1.0+x", "foo-1.0"]);
    }

    #[test]
    fn first_paths_get_own_layers_rest_share_the_last() {
        let g = graph(
            &[(0, &[1, 2]), (1, &[3]), (2, &[3]), (3, &[])],
            &["r", "a", "b", "c"],
        );
        let plan = plan_by_popularity(&g, Budget::new(2)).unwrap();
        let names = |l: &Vec<usize>| l.iter().map(|&i| name_of(g.path(i))).collect::<Vec<_>>();
        assert_eq!(plan.layers.len(), 2);
        assert_eq!(names(&plan.layers[0]), vec!["c"]);
        assert_eq!(names(&plan.layers[1]), vec!["a", "b", "r"]);
        let roomy = plan_by_popularity(&g, Budget::new(100)).unwrap();
        assert_eq!(roomy.layers.len(), 4);
    }

    #[test]
    fn budget_errors_say_the_numbers() {
        assert_eq!(
            Budget::new(1).store_layers().unwrap_err().message(),
            "a limit of 1 layers is too small: it must be at least 2"
        );
        let budget = Budget {
            max_layers: 5,
            base_layers: 4,
            prebuilt_layers: 0,
            customisation_layer: true,
        };
        assert_eq!(
            budget.store_layers().unwrap_err().message(),
            "a limit of 5 layers leaves no layer for the store paths: the base image has 4 layers \
             and the customisation layer takes 1; allow 6 or more"
        );
        let budget = Budget {
            max_layers: 10,
            base_layers: 3,
            prebuilt_layers: 0,
            customisation_layer: true,
        };
        assert_eq!(budget.store_layers().unwrap(), 6);
    }

    #[test]
    fn sizes_beyond_64_bits_are_unknown_not_a_panic() {
        let paths: Vec<String> = (0..3).map(|i| store_path(i, "big")).collect();
        let records = (0..3)
            .map(|i| {
                let references = if i == 0 { paths[1..].to_vec() } else { vec![] };
                sized_record(paths[i].clone(), references, Some(u64::MAX))
            })
            .collect();
        let g = ClosureGraph::from_records(records).unwrap();
        for layering in [Layering::Popularity, Layering::Reuse] {
            let plan = plan(&g, Budget::new(2), layering, None).unwrap();
            let merged = plan.layers.iter().position(|l| l.len() > 1).unwrap();
            assert_eq!(plan.nar_size(&g, merged), None, "{layering:?}");
            let previous = PreviousPlan {
                layers: vec![vec![paths[1].clone()], vec![paths[2].clone()]],
            };
            plan_for_reuse(&g, Budget::new(2), Some(&previous)).unwrap();
        }
        // auto sums closure sizes: past 64 bits too, without wrapping or panicking.
        let auto = plan(&g, Budget::new(2), Layering::Auto, None).unwrap();
        assert_eq!(auto.layers.iter().flatten().count(), 3);
    }

    #[test]
    fn plan_json_shape() {
        let g = graph(&[(0, &[1]), (1, &[])], &["app", "lib"]);
        let plan = plan_by_popularity(&g, Budget::new(10)).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&plan.to_json(&g, &[]).unwrap()).unwrap();
        assert_eq!(json["maxLayers"], 10);
        assert_eq!(json["layers"][0]["paths"][0], g.path(1));
        assert_eq!(json["layers"][0]["popularity"], 2);
        assert_eq!(json["layers"][0]["narSize"], 1);
        assert_eq!(json["popularities"][g.path(0)], 1);
    }

    /// Random DAGs: edges only go from lower to higher node numbers.
    fn arb_dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..9).prop_flat_map(|n| {
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n).prop_map(
                move |m| {
                    (0..n)
                        .map(|i| ((i + 1)..n).filter(|&j| m[i][j]).collect())
                        .collect()
                },
            )
        })
    }

    fn dag_graph(dag: &[Vec<usize>], permutation_seed: usize) -> ClosureGraph {
        let n = dag.len();
        let names: Vec<String> = (0..n).map(|i| format!("n{}", i % 3)).collect();
        let paths: Vec<String> = (0..n).map(|i| store_path(i, &names[i])).collect();
        let mut records: Vec<_> = dag
            .iter()
            .enumerate()
            .map(|(i, refs)| {
                let references = refs.iter().map(|&r| paths[r].clone()).collect();
                sized_record(paths[i].clone(), references, None)
            })
            .collect();
        records.rotate_left(permutation_seed % n.max(1));
        records.reverse();
        ClosureGraph::from_records(records).unwrap()
    }

    proptest! {
        #[test]
        fn closed_form_equals_unfolded_recursion(dag in arb_dag()) {
            let g = dag_graph(&dag, 0);
            prop_assert_eq!(popularity(&g), unfolded_popularity(&g));
        }

        #[test]
        fn plan_invariants(dag in arb_dag(), max_layers in 2usize..6, seed in 0usize..10) {
            let g = dag_graph(&dag, 0);
            let plan = plan_by_popularity(&g, Budget::new(max_layers)).unwrap();
            // every path in exactly one layer
            let mut all: Vec<usize> = plan.layers.iter().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..g.len()).collect::<Vec<_>>());
            // within the budget
            prop_assert!(plan.layers.len() <= max_layers);
            prop_assert!(plan.layers.iter().all(|l| !l.is_empty()));
            // popular first: no path is more popular than one in an earlier layer
            let flat: Vec<usize> = plan.layers.iter().flatten().copied().collect();
            for w in flat.windows(2) {
                prop_assert!(plan.popularity[w[0]] >= plan.popularity[w[1]]);
            }
            // deterministic under permutation of the input records
            let permuted = dag_graph(&dag, seed);
            let again = plan_by_popularity(&permuted, Budget::new(max_layers)).unwrap();
            prop_assert_eq!(plan.to_json(&g, &[]).unwrap(), again.to_json(&permuted, &[]).unwrap());
        }
    }
}
