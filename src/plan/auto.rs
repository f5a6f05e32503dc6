//! `--layering auto`: the grouping nixpkgs' dockerTools uses by default since November 2024
//! (`auto-layer.py`), so that an image shares its layers with one that current dockerTools
//! builds from the same closure.
//!
//! - Paths are taken largest first by narSize; among equal sizes, the one listed last in the
//!   closure file first (what a stable ascending sort followed by taking from the end gives).
//!   Each taken path becomes a *primary* path.
//! - Every path carries the set of primaries that claim it, and a layer is all the paths with
//!   the same set; at the start every path has the empty set (one layer). A new primary `P`
//!   claims itself alone. Each path below `P` (that `P` depends on) drops the primaries that
//!   depend on `P` — `P` already explains them — and then, unless one of its remaining
//!   primaries is itself below `P`, gains `P`.
//! - The first primary that would make more layers than the limit ends the loop; the split
//!   before it stands.
//! - Layers go smallest closure first (the narSize of the layer's paths and of everything they
//!   depend on), which puts every layer after those it depends on. nixpkgs leaves ties to
//!   Python's set order, which changes from run to run; here they go by the layer's first path.
//!
//! Each step touches only the paths above and below its primary, with sets interned, so the
//! cost is the sum of those neighbourhoods rather than a copy of the whole split per step.

use std::collections::HashMap;

use super::reach::{Positions, Walk};
use super::{Budget, Plan, popularity};
use crate::closure::{ClosureGraph, name_of};
use crate::error::{Error, Result, Setting};

/// Plans the store layers as nixpkgs' auto-layer does (see the module doc).
pub fn plan_auto(graph: &ClosureGraph, budget: Budget) -> Result<Plan> {
    let limit = budget.store_layers()?;
    let dag = Dag::of(graph, &sizes(graph)?);
    let split = Split::run(graph, &dag, limit);
    let mut layers = split.layers(graph, &dag);
    let reasons = layers
        .iter()
        .map(|(primaries, _)| reason(graph, primaries))
        .collect();
    for (_, paths) in &mut layers {
        paths.sort_by(|&a, &b| path_key(graph.path(a)).cmp(&path_key(graph.path(b))));
    }
    Ok(Plan {
        budget,
        layers: layers.into_iter().map(|(_, paths)| paths).collect(),
        popularity: popularity(graph),
        reasons,
        layering: super::Layering::Auto,
    })
}

/// Every path's narSize; auto-layer decides by size alone, so all must be known.
fn sizes(graph: &ClosureGraph) -> Result<Vec<u64>> {
    (0..graph.len())
        .map(|x| graph.nar_size(x))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| {
            Error::value(
                "the auto layering sizes paths by narSize, which this closure file does not \
                 give: use a JSON closure (exportReferencesGraph with __structuredAttrs, or \
                 `nix path-info --json --recursive`)",
            )
            .about(Setting::Closure)
        })
}

/// nixpkgs sorts a layer's paths by name, then by the rest of the path.
pub(crate) fn path_key(path: &str) -> (&str, &str) {
    match path.split_once('-') {
        Some((hash, name)) => (name, hash),
        None => (path, ""),
    }
}

/// The graph in positions of its topological order, packed for walks.
struct Dag<'g> {
    /// The path at each position.
    order: &'g [usize],
    size: Vec<u64>,
    down: Positions,
    up: Positions,
}

impl<'g> Dag<'g> {
    fn of(graph: &'g ClosureGraph, sizes: &[u64]) -> Self {
        let order = graph.topological_order();
        let parents = graph.referrers();
        let references = |x: usize| graph.references(x);
        let referrers = |x: usize| parents[x].as_slice();
        let down = Walk {
            next: &references,
            prev: &referrers,
            order,
        };
        let up = Walk {
            next: &referrers,
            prev: &references,
            order,
        };
        Dag {
            order,
            size: order.iter().map(|&x| sizes[x]).collect(),
            down: Positions::of(&down),
            up: Positions::of(&up),
        }
    }
}

/// Where a layer goes: by closure size, then by its first path's name and hash.
type LayerOrder<'g> = (u128, (&'g str, &'g str));

/// The split of the paths (by position) among sets of primaries.
struct Split {
    /// For each path, the id of its set of primaries.
    claim: Vec<usize>,
    /// Each set by id: its primaries, sorted.
    sets: Vec<Vec<usize>>,
    ids: HashMap<Vec<usize>, usize>,
    /// How many paths have each set.
    population: Vec<usize>,
    /// How many sets have any path: the number of layers.
    layers: usize,
}

impl Split {
    /// Works in positions of the topological order (`at`), with the graph packed by
    /// [`Positions`]: the walks below and above each primary are repeated for every primary,
    /// and their neighbours then sit close in memory.
    fn run(graph: &ClosureGraph, dag: &Dag, limit: usize) -> Self {
        let n = graph.len();
        let mut split = Split {
            claim: vec![0; n],
            sets: vec![Vec::new()],
            ids: HashMap::from([(Vec::new(), 0)]),
            population: vec![n],
            layers: usize::from(n > 0),
        };
        let mut by_size: Vec<usize> = (0..n).collect();
        by_size.sort_by(|&a, &b| {
            dag.size[b]
                .cmp(&dag.size[a])
                .then_with(|| graph.listed(dag.order[b]).cmp(&graph.listed(dag.order[a])))
        });
        let (mut below, mut above) = (vec![usize::MAX; n], vec![usize::MAX; n]);
        for (step, &primary) in by_size.iter().enumerate() {
            let deps = reach(primary, &dag.down, &mut below, step);
            reach(primary, &dag.up, &mut above, step);
            let mut changes = vec![(primary, split.intern(vec![primary]))];
            // The new set depends only on the old one: work it out once per set (the paths
            // below one primary hold few distinct sets, at most one per layer).
            let mut moved_to: Vec<(usize, usize)> = Vec::new();
            for &dep in &deps {
                let old = split.claim[dep];
                let new = match moved_to.iter().find(|(from, _)| *from == old) {
                    Some(&(_, new)) => new,
                    None => {
                        let mut set: Vec<usize> = split.sets[old]
                            .iter()
                            .copied()
                            .filter(|&q| above[q] != step)
                            .collect();
                        if !set.iter().any(|&q| below[q] == step) {
                            let at = set.partition_point(|&q| q < primary);
                            set.insert(at, primary);
                        }
                        let new = split.intern(set);
                        moved_to.push((old, new));
                        new
                    }
                };
                if new != old {
                    changes.push((dep, new));
                }
            }
            if !split.apply(&changes, limit) {
                break;
            }
        }
        split
    }

    fn intern(&mut self, set: Vec<usize>) -> usize {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = self.sets.len();
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        self.population.push(0);
        id
    }

    /// Moves paths to their new sets, unless that makes more than `limit` layers; false then
    /// (and nothing moved).
    fn apply(&mut self, changes: &[(usize, usize)], limit: usize) -> bool {
        let mut moved = Vec::with_capacity(changes.len());
        for &(path, to) in changes {
            let from = self.claim[path];
            if from != to {
                self.shift(from, to);
                moved.push((from, to));
            }
        }
        if self.layers > limit {
            for &(from, to) in moved.iter().rev() {
                self.shift(to, from);
            }
            return false;
        }
        for &(path, to) in changes {
            self.claim[path] = to;
        }
        true
    }

    /// One path leaves set `from` for set `to`, keeping the layer count.
    fn shift(&mut self, from: usize, to: usize) {
        self.population[from] -= 1;
        if self.population[from] == 0 {
            self.layers -= 1;
        }
        if self.population[to] == 0 {
            self.layers += 1;
        }
        self.population[to] += 1;
    }

    /// The layers in order, each with its set of primaries, as paths of the graph.
    fn layers<'g>(&self, graph: &'g ClosureGraph, dag: &Dag) -> Vec<(Vec<usize>, Vec<usize>)> {
        let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
        for (at, &id) in self.claim.iter().enumerate() {
            members.entry(id).or_default().push(at);
        }
        let mut seen = vec![usize::MAX; graph.len()];
        let mut layers: Vec<(LayerOrder<'g>, usize, Vec<usize>)> = members
            .into_iter()
            .map(|(id, ats)| {
                let closure = reach_all(&ats, &dag.down, &mut seen, id);
                let size: u128 = closure.iter().map(|&at| u128::from(dag.size[at])).sum();
                let paths: Vec<usize> = ats.iter().map(|&at| dag.order[at]).collect();
                let first = paths
                    .iter()
                    .map(|&p| path_key(graph.path(p)))
                    .min()
                    .unwrap_or_default();
                ((size, first), id, paths)
            })
            .collect();
        layers.sort_by(|a, b| a.0.cmp(&b.0));
        layers
            .into_iter()
            .map(|(_, id, paths)| {
                let primaries = self.sets[id].iter().map(|&at| dag.order[at]).collect();
                (primaries, paths)
            })
            .collect()
    }
}

/// Everything reachable from `start` along `next`, `start` excluded, marked with `stamp`.
fn reach(start: usize, next: &Positions, mark: &mut [usize], stamp: usize) -> Vec<usize> {
    let mut found = reach_all(&[start], next, mark, stamp);
    found.retain(|&x| x != start);
    mark[start] = usize::MAX;
    found
}

/// `starts` and everything reachable from them along `next`, marked with `stamp`.
fn reach_all(starts: &[usize], next: &Positions, mark: &mut [usize], stamp: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for &start in starts {
        if mark[start] != stamp {
            mark[start] = stamp;
            stack.push(start);
        }
    }
    while let Some(x) = stack.pop() {
        found.push(x);
        for &y in next.from(x) {
            let y = y as usize;
            if mark[y] != stamp {
                mark[y] = stamp;
                stack.push(y);
            }
        }
    }
    found
}

/// Why a layer's paths are together.
fn reason(graph: &ClosureGraph, primaries: &[usize]) -> String {
    match primaries {
        [] => "auto: used by none of the large paths".to_string(),
        [one] => format!(
            "auto: the large path {} and what only it uses",
            name_of(graph.path(*one))
        ),
        many => format!(
            "auto: used by the {} large paths {}",
            many.len(),
            many.iter()
                .map(|&p| name_of(graph.path(p)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::tests::sized_record;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A graph listed in `listing` order: node `i` is `name-i` with `sizes[i]` and references
    /// `refs[i]` (lower numbers only, so it is a DAG).
    fn graph(refs: &[Vec<usize>], sizes: &[Option<u64>], listing: &[usize]) -> ClosureGraph {
        let path = |i: usize| {
            let hash: String = (0..32)
                .map(|k| b"0123456789abcdfghijklmnpqrsvwxyz"[(i * 7 + k * 13) % 32] as char)
                .collect();
            format!("/nix/store/{hash}-p{}", i % 5)
        };
        let records = listing
            .iter()
            .map(|&i| {
                sized_record(
                    path(i),
                    refs[i].iter().map(|&r| path(r)).collect(),
                    sizes[i],
                )
            })
            .collect();
        ClosureGraph::from_records(records).unwrap()
    }

    /// The algorithm as nixpkgs writes it, on sets, step by step: a whole new split per
    /// primary, layers counted as distinct sets. Slow, and the reference the fast one must
    /// equal.
    fn literal(g: &ClosureGraph, limit: usize) -> Vec<Vec<usize>> {
        let n = g.len();
        let parents = g.referrers();
        let closure_of = |starts: &[usize], next: &dyn Fn(usize) -> Vec<usize>| {
            let mut done = BTreeSet::new();
            let mut todo: Vec<usize> = starts.to_vec();
            while let Some(x) = todo.pop() {
                if done.insert(x) {
                    todo.extend(next(x));
                }
            }
            done
        };
        let down = |x: usize| g.references(x).to_vec();
        let up = |x: usize| parents[x].clone();
        let mut by_size: Vec<usize> = (0..n).collect();
        // Python: sorted ascending by size (stable in listing order), then pop() from the end.
        by_size.sort_by_key(|&x| (g.nar_size(x).unwrap(), g.listed(x)));
        let mut split: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        while let Some(p) = by_size.pop() {
            let mut new = split.clone();
            new[p] = BTreeSet::from([p]);
            let mut deps = closure_of(&[p], &down);
            deps.remove(&p);
            let mut users = closure_of(&[p], &up);
            users.remove(&p);
            for &d in &deps {
                new[d] = new[d].difference(&users).copied().collect();
                if new[d].intersection(&deps).next().is_none() {
                    new[d].insert(p);
                }
            }
            if new.iter().collect::<BTreeSet<_>>().len() > limit {
                break;
            }
            split = new;
        }
        let sets: BTreeSet<&BTreeSet<usize>> = split.iter().collect();
        let mut layers: Vec<(u128, (&str, &str), Vec<usize>)> = sets
            .into_iter()
            .map(|set| {
                let mut paths: Vec<usize> = (0..n).filter(|&x| &split[x] == set).collect();
                paths.sort_by(|&a, &b| path_key(g.path(a)).cmp(&path_key(g.path(b))));
                let size = closure_of(&paths, &down)
                    .iter()
                    .map(|&x| u128::from(g.nar_size(x).unwrap()))
                    .sum();
                (size, path_key(g.path(paths[0])), paths)
            })
            .collect();
        layers.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        layers.into_iter().map(|(_, _, paths)| paths).collect()
    }

    /// A budget leaving `store_layers` for the store (one more for the customisation layer,
    /// as dockerTools always reserves).
    fn budget(store_layers: usize) -> Budget {
        Budget {
            max_layers: store_layers + 1,
            base_layers: 0,
            prebuilt_layers: 0,
            customisation_layer: true,
        }
    }

    /// app → {lib, big}; lib → libc; big → {libc, only-big}. Worked by hand with a limit of
    /// three: big (largest) takes libc and only-big; libc (next) takes a layer of its own, as
    /// lib also uses it; lib would make a fourth layer, so the split stops there and lib and
    /// app stay in the layer of paths no large path claims. Smallest closure first.
    #[test]
    fn a_large_path_takes_what_only_it_uses_until_the_limit() {
        // 0 libc, 1 lib, 2 big, 3 only-big, 4 app
        let refs = vec![vec![], vec![0], vec![0, 3], vec![], vec![1, 2]];
        let sizes = [Some(50), Some(20), Some(1000), Some(10), Some(5)];
        let g = graph(&refs, &sizes, &[0, 1, 2, 3, 4]);
        let index = |name: &str| (0..g.len()).find(|&x| name_of(g.path(x)) == name).unwrap();
        let [libc, lib, big, only_big, app] = ["p0", "p1", "p2", "p3", "p4"].map(index);
        let plan = plan_auto(&g, budget(3)).unwrap();
        assert_eq!(
            plan.layers,
            vec![vec![libc], vec![big, only_big], vec![lib, app]]
        );
        assert_eq!(
            plan.reasons,
            [
                "auto: the large path p0 and what only it uses",
                "auto: the large path p2 and what only it uses",
                "auto: used by none of the large paths",
            ]
        );
        // With room, every path ends up a primary of its own.
        assert_eq!(plan_auto(&g, budget(10)).unwrap().layers.len(), 5);
        assert_eq!(plan.layers, literal(&g, 3));
    }

    #[test]
    fn the_limit_keeps_the_last_split_that_fits() {
        let refs = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let sizes = [Some(400), Some(300), Some(200), Some(100)];
        let g = graph(&refs, &sizes, &[0, 1, 2, 3]);
        for limit in 1..6 {
            let plan = plan_auto(&g, budget(limit)).unwrap();
            assert!(plan.layers.len() <= limit, "{limit}");
            assert_eq!(plan.layers, literal(&g, limit), "{limit}");
        }
    }

    #[test]
    fn sizes_must_be_known() {
        let g = graph(&[vec![], vec![0]], &[Some(1), None], &[0, 1]);
        let error = plan_auto(&g, budget(3)).unwrap_err();
        assert!(error.to_string().contains("narSize"), "{error}");
    }

    fn arb_case() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<u64>, Vec<usize>, usize)> {
        (1usize..24).prop_flat_map(|n| {
            (
                proptest::collection::vec(
                    proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                    n,
                ),
                // Few distinct sizes: ties everywhere.
                proptest::collection::vec(prop_oneof![Just(100u64), Just(200), 1u64..5000], n),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                1usize..12,
            )
                .prop_map(move |(picks, sizes, listing, limit)| {
                    let refs = picks
                        .into_iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let mut r: Vec<usize> =
                                p.iter().filter(|_| i > 0).map(|ix| ix.index(i)).collect();
                            r.sort_unstable();
                            r.dedup();
                            r
                        })
                        .collect();
                    (refs, sizes, listing, limit)
                })
        })
    }

    /// The shared corpus (761 Debian packages as store paths, with self-references and a root)
    /// planned both ways at several limits. nixpkgs' auto-layer.py itself, run on the same
    /// graph.json, gave the same layers when this was written.
    #[test]
    #[cfg_attr(
        not(feature = "tool-tests"),
        ignore = "needs the shared corpus (../shared/corpus/make-corpus): cargo test --features tool-tests (.ci/run)"
    )]
    fn equals_the_literal_algorithm_on_the_shared_corpus() {
        let work = tempfile::tempdir().unwrap();
        let corpus = work.path().join("corpus");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/make-corpus");
        let status = std::process::Command::new("python3")
            .arg(&script)
            .arg(&corpus)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("python3 runs ../shared/corpus/make-corpus");
        assert!(status.success(), "make-corpus failed");
        let options = crate::closure::LoadOptions::default();
        let g = ClosureGraph::load(&[corpus.join("graph.json")], &options).unwrap();
        for limit in [2, 10, 30, 99] {
            let plan = plan_auto(&g, budget(limit)).unwrap();
            assert_eq!(plan.layers, literal(&g, limit), "{limit}");
            assert!(plan.layers.len() <= limit, "{limit}");
        }
    }

    proptest! {
        #[test]
        fn equals_the_literal_algorithm((refs, sizes, listing, limit) in arb_case()) {
            let sizes: Vec<Option<u64>> = sizes.into_iter().map(Some).collect();
            let g = graph(&refs, &sizes, &listing);
            let plan = plan_auto(&g, budget(limit)).unwrap();
            prop_assert_eq!(&plan.layers, &literal(&g, limit));
            let mut all: Vec<usize> = plan.layers.iter().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..g.len()).collect::<Vec<_>>());
            prop_assert!(plan.layers.len() <= limit);
        }
    }
}
