//! Sums over reachable sets, the scores both planners are made of.
//!
//! Popularity needs, for every path `x`, a weight summed over every path that reaches `x`; reuse
//! needs how many paths each path reaches and how many top-level packages reach it. Walking the
//! reachable set from every path costs the sum of their sizes, which is quadratic on a chain
//! (100,000 paths: minutes). Instead, a compressed transitive closure (Jagadish, 1990):
//!
//! - Cover the graph with chains, each path on exactly one: sequences in which every path's
//!   successor is one of the paths it points to (`next`). Greedy, from the paths nothing points
//!   to, each step taking the unchained successor that comes first in topological order.
//! - A path that reaches the `i`-th path of a chain reaches every later one, so what it reaches
//!   of a chain is a suffix, known by its first index, and the weight of that suffix is a
//!   suffix sum of the chain.
//! - For one chain, every path's first index comes from walking backwards (along `prev`) from
//!   the chain's first path, marking all it finds with 0, then from the second path, marking
//!   only what is still unmarked with 1, and so on: a path already marked reaches an earlier
//!   index, and so does everything behind it.
//!
//! Each path is visited once per chain it reaches. That is linear for chains, trees, stars and
//! graphs made of a few long chains with hubs (what Nix closures look like). On wide, densely
//! connected graphs (thousands of chains, each reached by most paths) it is the number of
//! chains times the size; there, once the walks have cost what bitsets would, they stop and
//! bitsets take over:
//!
//! - Take the paths 1,024 at a time as targets; one pass backwards through the order gives
//!   each path the set of targets it reaches (its own bit or'ed with the sets of what it
//!   points to, sixteen words per path), and the set's weight comes from a `popcount` (counts)
//!   or from tables of precomputed sums per byte and per full word (weights). A path pointing
//!   to one that reaches every target reaches every target too: on dense graphs most paths
//!   do, and cost a byte per edge and one addition. The work is the number of paths over
//!   1,024 times the paths and edges, whatever the shape.
//!
//! Chains and passes are independent and run in parallel; the sums are exact integers, so the
//! result never depends on the thread count, nor on which of the two ways made it.

use num_bigint::BigUint;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An exact counter that may overflow (then the caller retries with a wider type).
pub(crate) trait Count: Clone + Send + Sync {
    fn zero() -> Self;
    fn one() -> Self;
    /// Adds `other`; false when the sum does not fit.
    fn add(&mut self, other: &Self) -> bool;
    fn into_big(self) -> BigUint;
}

/// The machine integers, checked.
macro_rules! count_for_integer {
    ($($t:ty),*) => {$(
        impl Count for $t {
            fn zero() -> Self {
                0
            }
            fn one() -> Self {
                1
            }
            fn add(&mut self, other: &Self) -> bool {
                self.checked_add(*other).map(|sum| *self = sum).is_some()
            }
            fn into_big(self) -> BigUint {
                BigUint::from(self)
            }
        }
    )*};
}

count_for_integer!(u64, u128);

/// A fixed-width counter of `L` 64-bit limbs, little-endian: route counts outgrow `u128` on
/// deep graphs with many routes, and big integers are many times slower to add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limbs<const L: usize>([u64; L]);

impl<const L: usize> Count for Limbs<L> {
    fn zero() -> Self {
        Limbs([0; L])
    }
    fn one() -> Self {
        let mut limbs = [0; L];
        limbs[0] = 1;
        Limbs(limbs)
    }
    fn add(&mut self, other: &Self) -> bool {
        let mut carry = 0u64;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            let sum = u128::from(*a) + u128::from(b) + u128::from(carry);
            *a = sum as u64;
            carry = (sum >> 64) as u64;
        }
        carry == 0
    }
    fn into_big(self) -> BigUint {
        BigUint::from_slice(
            &self
                .0
                .iter()
                .flat_map(|l| [*l as u32, (l >> 32) as u32])
                .collect::<Vec<_>>(),
        )
    }
}

impl Count for BigUint {
    fn zero() -> Self {
        BigUint::ZERO
    }
    fn one() -> Self {
        BigUint::from(1u8)
    }
    fn add(&mut self, other: &Self) -> bool {
        *self += other;
        true
    }
    fn into_big(self) -> BigUint {
        self
    }
}

/// A graph seen in one direction.
pub(crate) struct Walk<'a> {
    /// What each path points to in this direction.
    pub next: &'a (dyn Fn(usize) -> &'a [usize] + Sync),
    /// The reverse of `next`.
    pub prev: &'a (dyn Fn(usize) -> &'a [usize] + Sync),
    /// Every path, each before all those it points to.
    pub order: &'a [usize],
}

/// For each path `x`, the sum of `weight(y)` over every `y` that `x` reaches along `next` (`x`
/// included). None when a sum does not fit in `C`.
pub(crate) fn reach_sums<C: Count>(
    walk: &Walk,
    weight: impl Fn(usize) -> C + Sync,
) -> Option<Vec<C>> {
    let every_path: Vec<usize> = (0..walk.order.len()).collect();
    match by_chains(walk, &weight, chain_budget(walk, every_path.len())) {
        Ok(sums) => Some(sums),
        Err(Stop::Overflow) => None,
        Err(Stop::OverBudget) => by_bitsets(
            walk,
            &every_path,
            |targets| Tables::of(targets, &weight),
            |tables, reached, sum: &mut C| tables.weigh(reached, sum),
        ),
    }
}

/// For each path `x`, how many of the paths it reaches along `next` (itself included) `counts`.
/// The same as [`reach_sums`] with weights 0 and 1, but counted with `popcount` on bitsets.
pub(crate) fn reach_counts(walk: &Walk, counts: impl Fn(usize) -> bool + Sync) -> Vec<u64> {
    let counted = walk.order.iter().filter(|&&y| counts(y)).count();
    reach_counts_within(walk, counts, chain_budget(walk, counted))
}

/// [`reach_counts`] with chains given up after `budget` steps.
fn reach_counts_within(
    walk: &Walk,
    counts: impl Fn(usize) -> bool + Sync,
    budget: usize,
) -> Vec<u64> {
    let weight = |y| u64::from(counts(y));
    // A count never exceeds the number of paths, so it always fits.
    match by_chains(walk, &weight, budget) {
        Ok(sums) => sums,
        // Only the counted paths are targets: passes over them alone (the sharers of reuse are
        // the top-level packages, a few of the paths), each reached target counting one.
        Err(_) => {
            let counted: Vec<usize> = (0..walk.order.len())
                .filter(|&at| counts(walk.order[at]))
                .collect();
            by_bitsets(
                walk,
                &counted,
                |targets| Some(targets.len() as u64),
                |all, reached, sum: &mut u64| {
                    *sum += match reached {
                        Reached::All => *all,
                        Reached::Some(set) => set.iter().map(|s| u64::from(s.count_ones())).sum(),
                    };
                    true
                },
            )
            .unwrap_or_default()
        }
    }
}

/// How many steps the chains may take before the bitsets are cheaper: the bitsets make one
/// pass over the paths and edges per TARGETS of the `targets` paths that count, and a step of
/// a chain's walk (a random access) costs about as much as 16 of theirs (calibrated on the
/// shapes of `bench --plans`).
fn chain_budget(walk: &Walk, targets: usize) -> usize {
    let n = walk.order.len();
    let edges: usize = walk.order.iter().map(|&x| (walk.next)(x).len()).sum();
    (targets / TARGETS + 1).saturating_mul(n + edges) / 16
}

/// Why a way of summing gave up.
enum Stop {
    /// A sum does not fit the counter.
    Overflow,
    /// The chains cost more than the bitsets would.
    OverBudget,
}

/// The sums from a chain cover (the module doc), giving up once the walks have cost `budget`
/// steps: dense graphs with many chains are cheaper with bitsets.
fn by_chains<C: Count>(
    walk: &Walk,
    weight: &(impl Fn(usize) -> C + Sync),
    budget: usize,
) -> Result<Vec<C>, Stop> {
    let n = walk.order.len();
    let chains = chains(walk);
    let spent = AtomicUsize::new(0);
    // A few blocks of chains per thread; each block keeps its own marks and sums.
    let block = chains
        .len()
        .div_ceil(rayon::current_num_threads() * 4)
        .max(1);
    let prev = walk.prev;
    chains
        .par_chunks(block)
        .map(|block| {
            let mut sums = vec![C::zero(); n];
            let mut mark = vec![usize::MAX; n];
            let mut stack = Vec::new();
            for (id, chain) in block.iter().enumerate() {
                let suffix = suffix_sums(chain, weight).ok_or(Stop::Overflow)?;
                let mut steps = 0;
                for (i, &start) in chain.iter().enumerate() {
                    if mark[start] == id {
                        continue;
                    }
                    mark[start] = id;
                    stack.push(start);
                    while let Some(z) = stack.pop() {
                        if !sums[z].add(&suffix[i]) {
                            return Err(Stop::Overflow);
                        }
                        steps += 1 + prev(z).len();
                        for &p in prev(z) {
                            if mark[p] != id {
                                mark[p] = id;
                                stack.push(p);
                            }
                        }
                    }
                }
                if spent.fetch_add(steps, Ordering::Relaxed) + steps > budget {
                    return Err(Stop::OverBudget);
                }
            }
            Ok(sums)
        })
        .try_reduce(|| vec![C::zero(); n], add_all)
}

/// Adds `b` into `a`, path by path.
fn add_all<C: Count>(mut a: Vec<C>, b: Vec<C>) -> Result<Vec<C>, Stop> {
    for (x, y) in a.iter_mut().zip(&b) {
        if !x.add(y) {
            return Err(Stop::Overflow);
        }
    }
    Ok(a)
}

/// Bitset words per path in one pass of [`by_bitsets`].
const WORDS: usize = 16;
/// Target paths per pass.
const TARGETS: usize = 64 * WORDS;
/// Words with at most this many bits set are weighed bit by bit.
const SPARSE: u32 = 8;

/// The set of one pass's targets that a path reaches.
type Set = [u64; WORDS];

/// What a path reaches of one pass's targets, as `weigh` is given it.
enum Reached<'a> {
    /// Every target: on dense graphs most paths, weighed with one addition.
    All,
    /// Some of them, not none.
    Some(&'a Set),
}

/// A path's standing in one pass: [`Reached`], and also none.
#[derive(Clone, Copy, PartialEq)]
enum Standing {
    None,
    /// Its set is in `bits`.
    Some,
    All,
}

/// The sums from bitsets, for graphs where chains cost too much: the `targets` (positions in
/// `order`, ascending) are taken TARGETS at a time; one pass backwards through `order` gives
/// each path the set of those targets it reaches (its own bit, or'ed with those of what it
/// points to), and `weigh` adds the set's weight, with what `prepare` made of the pass's
/// targets. A path that points to one reaching every target reaches every target too, without
/// reading any set: on dense graphs, where most paths do, a pass touches a byte per edge.
/// Work: the number of targets over TARGETS times the paths and edges, whatever the shape.
fn by_bitsets<C: Count, P>(
    walk: &Walk,
    targets: &[usize],
    prepare: impl Fn(&[usize]) -> Option<P> + Sync,
    weigh: impl Fn(&P, Reached, &mut C) -> bool + Sync,
) -> Option<Vec<C>> {
    let n = walk.order.len();
    let next = Positions::of(walk);
    let passes: Vec<&[usize]> = targets.chunks(TARGETS).collect();
    let block = passes
        .len()
        .div_ceil(rayon::current_num_threads() * 4)
        .max(1);
    let by_position = passes
        .par_chunks(block)
        .map(|block| {
            let mut sums = vec![C::zero(); n];
            let mut bits: Vec<Set> = vec![[0; WORDS]; n];
            let mut standing = vec![Standing::None; n];
            // Each target's bit in its pass; NO_BIT elsewhere.
            let mut own = vec![NO_BIT; n];
            for pass in block {
                let end = pass.last().map_or(0, |&last| last + 1);
                let nodes: Vec<usize> = pass.iter().map(|&at| walk.order[at]).collect();
                let prepared = prepare(&nodes).ok_or(Stop::Overflow)?;
                let every = first_bits(pass.len());
                for (bit, &at) in pass.iter().enumerate() {
                    own[at] = bit as u16;
                }
                // Paths after the last target in `order` cannot reach the targets, and are
                // not read: `standing` and `bits` need no clearing between passes.
                for at in (0..end).rev() {
                    let mut set = [0u64; WORDS];
                    if own[at] != NO_BIT {
                        let bit = usize::from(own[at]);
                        set[bit / 64] |= 1 << (bit % 64);
                    }
                    let mut all = false;
                    for &to in next.from(at) {
                        let to = to as usize;
                        if to >= end {
                            continue;
                        }
                        match standing[to] {
                            Standing::None => {}
                            Standing::Some => {
                                for (s, b) in set.iter_mut().zip(&bits[to]) {
                                    *s |= b;
                                }
                            }
                            Standing::All => {
                                all = true;
                                break;
                            }
                        }
                    }
                    let reached = if all || set.iter().zip(&every).all(|(s, e)| s == e) {
                        standing[at] = Standing::All;
                        Reached::All
                    } else if set.iter().any(|&w| w != 0) {
                        standing[at] = Standing::Some;
                        bits[at] = set;
                        Reached::Some(&bits[at])
                    } else {
                        standing[at] = Standing::None;
                        continue;
                    };
                    if !weigh(&prepared, reached, &mut sums[at]) {
                        return Err(Stop::Overflow);
                    }
                }
                for &at in pass.iter() {
                    own[at] = NO_BIT;
                }
            }
            Ok(sums)
        })
        .try_reduce(|| vec![C::zero(); n], add_all)
        .ok()?;
    let mut sums = vec![C::zero(); n];
    for (at, sum) in by_position.into_iter().enumerate() {
        sums[walk.order[at]] = sum;
    }
    Some(sums)
}

/// No target's bit (TARGETS is far below it).
const NO_BIT: u16 = u16::MAX;

/// The set of the first `count` targets.
fn first_bits(count: usize) -> Set {
    std::array::from_fn(|w| match count.saturating_sub(w * 64) {
        0 => 0,
        bits if bits >= 64 => u64::MAX,
        bits => (1 << bits) - 1,
    })
}

/// `next` in positions of `order`, packed in one array: walks over it stay in cache.
pub(super) struct Positions {
    start: Vec<usize>,
    to: Vec<u32>,
}

impl Positions {
    pub(super) fn of(walk: &Walk) -> Self {
        // Closures are bounded far below 2^32 paths (`--max-closure-size`).
        let mut position = vec![0u32; walk.order.len()];
        for (i, &x) in walk.order.iter().enumerate() {
            position[x] = i as u32;
        }
        let mut start = Vec::with_capacity(walk.order.len() + 1);
        let mut to = Vec::new();
        for &x in walk.order {
            start.push(to.len());
            to.extend((walk.next)(x).iter().map(|&z| position[z]));
        }
        start.push(to.len());
        Positions { start, to }
    }

    pub(super) fn from(&self, at: usize) -> &[u32] {
        &self.to[self.start[at]..self.start[at + 1]]
    }
}

/// The weights of one pass's targets, ready to weigh a set of them.
struct Tables<C> {
    /// Each target's weight, for words with few bits set: read straight from a small array,
    /// they cost less than byte lookups into the large tables, which miss the cache.
    one: Vec<C>,
    /// For each byte of the set, the weight of each value it can take.
    bytes: Vec<[C; 256]>,
    /// For each word of the set, its weight when all its bits are set: on dense graphs most
    /// words are, and one addition replaces eight.
    full: Vec<C>,
    /// The weight of all the targets: on dense graphs most paths reach every one.
    all: C,
}

impl<C: Count> Tables<C> {
    fn of(targets: &[usize], weight: &impl Fn(usize) -> C) -> Option<Self> {
        let mut bytes = Vec::with_capacity(TARGETS / 8);
        for byte in 0..TARGETS / 8 {
            let eight = targets.get(byte * 8..).unwrap_or(&[]);
            let mut table: [C; 256] = std::array::from_fn(|_| C::zero());
            for value in 1..256usize {
                let low = value.trailing_zeros() as usize;
                let mut sum = table[value & (value - 1)].clone();
                if let Some(&target) = eight.get(low).filter(|_| low < 8) {
                    if !sum.add(&weight(target)) {
                        return None;
                    }
                }
                table[value] = sum;
            }
            bytes.push(table);
        }
        let mut full = Vec::with_capacity(WORDS);
        let mut all = C::zero();
        for eight in bytes.chunks(8) {
            let mut sum = C::zero();
            for table in eight {
                if !sum.add(&table[255]) {
                    return None;
                }
            }
            if !all.add(&sum) {
                return None;
            }
            full.push(sum);
        }
        let one = (0..TARGETS)
            .map(|t| targets.get(t).map_or_else(C::zero, |&y| weight(y)))
            .collect();
        Some(Tables {
            one,
            bytes,
            full,
            all,
        })
    }

    /// Adds the weight of what a path reached to `sum`; false when it does not fit.
    fn weigh(&self, reached: Reached, sum: &mut C) -> bool {
        let set = match reached {
            Reached::All => return sum.add(&self.all),
            Reached::Some(set) => set,
        };
        set.iter().enumerate().all(|(w, &word)| match word {
            0 => true,
            u64::MAX => sum.add(&self.full[w]),
            _ if word.count_ones() <= SPARSE => {
                let mut rest = word;
                while rest != 0 {
                    if !sum.add(&self.one[w * 64 + rest.trailing_zeros() as usize]) {
                        return false;
                    }
                    rest &= rest - 1;
                }
                true
            }
            _ => word.to_le_bytes().iter().enumerate().all(|(byte, &value)| {
                value == 0 || sum.add(&self.bytes[w * 8 + byte][usize::from(value)])
            }),
        })
    }
}

/// `suffix[i]`: the weight of the chain from its `i`-th path on.
fn suffix_sums<C: Count>(chain: &[usize], weight: &impl Fn(usize) -> C) -> Option<Vec<C>> {
    let mut suffix = vec![C::zero(); chain.len()];
    let mut total = C::zero();
    for (i, &x) in chain.iter().enumerate().rev() {
        if !total.add(&weight(x)) {
            return None;
        }
        suffix[i] = total.clone();
    }
    Some(suffix)
}

/// A greedy chain cover: every path on exactly one chain, each path followed by one it points
/// to. Chains start at the first unchained path in `order` and take, at each step, the
/// unchained successor that comes first in `order`, so that chains skip as little as possible.
/// (A minimum cover, from a maximum matching, was measured: it halves the chains only on wide
/// random graphs, which have thousands of chains either way and go to the bitsets.)
fn chains(walk: &Walk) -> Vec<Vec<usize>> {
    let n = walk.order.len();
    let mut position = vec![0; n];
    for (i, &x) in walk.order.iter().enumerate() {
        position[x] = i;
    }
    let mut chained = vec![false; n];
    let mut chains = Vec::new();
    for &start in walk.order {
        if chained[start] {
            continue;
        }
        chained[start] = true;
        let mut chain = vec![start];
        let mut at = start;
        while let Some(&step) = (walk.next)(at)
            .iter()
            .filter(|&&z| !chained[z])
            .min_by_key(|&&z| position[z])
        {
            chained[step] = true;
            chain.push(step);
            at = step;
        }
        chains.push(chain);
    }
    chains
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A DAG on `0..n` whose edges go from lower to higher numbers.
    fn arb_dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..40).prop_flat_map(|n| {
            proptest::collection::vec(
                proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                n,
            )
            .prop_map(move |picks| {
                picks
                    .into_iter()
                    .enumerate()
                    .map(|(x, p)| {
                        let mut next: Vec<usize> = p
                            .iter()
                            .filter(|_| x + 1 < n)
                            .map(|i| x + 1 + i.index(n - x - 1))
                            .collect();
                        next.sort_unstable();
                        next.dedup();
                        next
                    })
                    .collect()
            })
        })
    }

    fn reverse(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let mut prev = vec![Vec::new(); next.len()];
        for (x, targets) in next.iter().enumerate() {
            for &y in targets {
                prev[y].push(x);
            }
        }
        prev
    }

    /// The definition, walked from every path.
    fn walked(next: &[Vec<usize>], weight: &[u64]) -> Vec<u64> {
        (0..next.len())
            .map(|x| {
                let mut seen = vec![false; next.len()];
                let mut stack = vec![x];
                seen[x] = true;
                let mut sum = 0;
                while let Some(y) = stack.pop() {
                    sum += weight[y];
                    for &z in &next[y] {
                        if !seen[z] {
                            seen[z] = true;
                            stack.push(z);
                        }
                    }
                }
                sum
            })
            .collect()
    }

    /// Which way to sum: as `reach_sums` chooses, or forced.
    #[derive(Clone, Copy, Debug)]
    enum Way {
        Chosen,
        Chains,
        Bitsets,
    }

    /// Runs `f` on the walk along `next` (numbered in topological order).
    fn with_walk<T>(next: &[Vec<usize>], f: impl FnOnce(&Walk) -> T) -> T {
        let prev = reverse(next);
        let order: Vec<usize> = (0..next.len()).collect();
        let next_of = |x: usize| next[x].as_slice();
        let prev_of = |x: usize| prev[x].as_slice();
        f(&Walk {
            next: &next_of,
            prev: &prev_of,
            order: &order,
        })
    }

    fn sums_by(way: Way, next: &[Vec<usize>], weight: &[u64]) -> Option<Vec<u64>> {
        let weight = |x: usize| weight[x];
        with_walk(next, |walk| match way {
            Way::Chosen => reach_sums(walk, weight),
            Way::Chains => by_chains(walk, &weight, usize::MAX).ok(),
            Way::Bitsets => by_bitsets(
                walk,
                &(0..walk.order.len()).collect::<Vec<_>>(),
                |targets| Tables::of(targets, &weight),
                |tables, reached, sum: &mut u64| tables.weigh(reached, sum),
            ),
        })
    }

    fn sums(next: &[Vec<usize>], weight: &[u64]) -> Option<Vec<u64>> {
        sums_by(Way::Chosen, next, weight)
    }

    fn counts(next: &[Vec<usize>], counted: &[bool], budget: usize) -> Vec<u64> {
        with_walk(next, |walk| {
            reach_counts_within(walk, |x| counted[x], budget)
        })
    }

    /// A random DAG, dense enough that chains cost more than bitsets, and larger than one
    /// bitset pass.
    fn dense_dag(n: usize, seed: u64) -> Vec<Vec<usize>> {
        let mut state = seed | 1;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        (0..n)
            .map(|x| {
                let mut out: Vec<usize> = (0..3)
                    .filter(|_| x + 1 < n)
                    .map(|_| x + 1 + next((n - x - 1).min(40)))
                    .collect();
                out.sort_unstable();
                out.dedup();
                out
            })
            .collect()
    }

    #[test]
    fn both_ways_agree_on_a_graph_of_several_passes() {
        let next = dense_dag(3 * TARGETS + 17, 7);
        let weight: Vec<u64> = (0..next.len() as u64).map(|x| x * 7919 % 1000).collect();
        let expected = walked(&next, &weight);
        for way in [Way::Chosen, Way::Chains, Way::Bitsets] {
            assert_eq!(
                sums_by(way, &next, &weight),
                Some(expected.clone()),
                "{way:?}"
            );
        }
        let counted: Vec<bool> = (0..next.len()).map(|x| x % 3 == 0).collect();
        let ones: Vec<u64> = counted.iter().map(|&c| u64::from(c)).collect();
        let expected = walked(&next, &ones);
        assert_eq!(counts(&next, &counted, 0), expected, "bitsets");
        assert_eq!(counts(&next, &counted, usize::MAX), expected, "chains");
    }

    /// Paths that reach every target of a pass are weighed as all of them, without their set:
    /// a chain under every path makes each reach all that follows, in full passes and in the
    /// last, shorter one; the weights are large enough to carry across limbs.
    #[test]
    fn a_path_reaching_every_target_weighs_them_all() {
        let n = 2 * TARGETS + 5;
        let mut next = dense_dag(n, 11);
        for (x, out) in next.iter_mut().enumerate().take(n - 1) {
            if !out.contains(&(x + 1)) {
                out.insert(0, x + 1);
            }
        }
        let weight: Vec<u64> = (0..n as u64).map(|x| u64::MAX / 4 - x).collect();
        let big = |x: usize| Limbs::<4>([weight[x], 0, 0, 0]);
        let expected: Vec<u128> = (0..n)
            .map(|x| weight[x..].iter().map(|&w| u128::from(w)).sum())
            .collect();
        let by_bits = with_walk(&next, |walk| {
            by_bitsets(
                walk,
                &(0..walk.order.len()).collect::<Vec<_>>(),
                |targets| Tables::of(targets, &big),
                |tables, reached, sum: &mut Limbs<4>| tables.weigh(reached, sum),
            )
        });
        let got: Vec<u128> = by_bits
            .expect("fits")
            .into_iter()
            .map(|l| u128::from(l.0[0]) | u128::from(l.0[1]) << 64)
            .collect();
        assert_eq!(got, expected);
        let counted = vec![true; n];
        let expected: Vec<u64> = (0..n as u64).map(|x| n as u64 - x).collect();
        assert_eq!(counts(&next, &counted, 0), expected);
    }

    /// The work the chains take on the shapes Nix closures are made of is near-linear: at most
    /// the paths and edges times log2 of the paths (a tree's depth), counted, not timed.
    /// Walking from every path, as before, took 5·10^9 steps on the chain.
    #[test]
    fn chains_take_near_linear_work_on_chains_trees_stars_and_hubs() {
        const N: usize = 100_000;
        let shapes: [(&str, Vec<Vec<usize>>); 5] = [
            (
                "chain",
                (0..N)
                    .map(|x| if x + 1 < N { vec![x + 1] } else { vec![] })
                    .collect(),
            ),
            (
                "star",
                (0..N)
                    .map(|x| if x == 0 { (1..N).collect() } else { vec![] })
                    .collect(),
            ),
            (
                "fan-in",
                (0..N)
                    .map(|x| if x + 1 < N { vec![N - 1] } else { vec![] })
                    .collect(),
            ),
            (
                "binary tree",
                (0..N)
                    .map(|x| {
                        [2 * x + 1, 2 * x + 2]
                            .into_iter()
                            .filter(|&c| c < N)
                            .collect()
                    })
                    .collect(),
            ),
            (
                "chain with hubs",
                (0..N)
                    .map(|x| {
                        let mut next: Vec<usize> = [x + 1, N - 1, N - 2]
                            .into_iter()
                            .filter(|&y| y > x && y < N)
                            .collect();
                        next.dedup();
                        next
                    })
                    .collect(),
            ),
        ];
        for (shape, next) in shapes {
            let prev = reverse(&next);
            let edges: usize = next.iter().map(Vec::len).sum();
            let budget = (N + edges) * N.ilog2() as usize;
            for (forward, backward) in [(&next, &prev), (&prev, &next)] {
                let mut order: Vec<usize> = (0..N).collect();
                if std::ptr::eq(forward, &prev) {
                    order.reverse();
                }
                let next_of = |x: usize| forward[x].as_slice();
                let prev_of = |x: usize| backward[x].as_slice();
                let walk = Walk {
                    next: &next_of,
                    prev: &prev_of,
                    order: &order,
                };
                assert!(by_chains(&walk, &|_| 1u64, budget).is_ok(), "{shape}");
            }
        }
    }

    #[test]
    fn bitsets_report_an_overflow() {
        let next = vec![vec![1], vec![2], vec![]];
        assert_eq!(sums_by(Way::Bitsets, &next, &[1, u64::MAX, 1]), None);
        assert_eq!(
            sums_by(Way::Bitsets, &next, &[u64::MAX - 2, 1, 1]),
            Some(vec![u64::MAX, 2, 1])
        );
    }

    #[test]
    fn a_chain_reaches_its_suffix() {
        let next: Vec<Vec<usize>> = (0..5)
            .map(|x| if x < 4 { vec![x + 1] } else { vec![] })
            .collect();
        assert_eq!(sums(&next, &[1, 2, 3, 4, 5]), Some(vec![15, 14, 12, 9, 5]));
    }

    #[test]
    fn a_diamond_counts_the_bottom_once() {
        let next = vec![vec![1, 2], vec![3], vec![3], vec![]];
        assert_eq!(
            sums(&next, &[1, 10, 100, 1000]),
            Some(vec![1111, 1010, 1100, 1000])
        );
    }

    #[test]
    fn limbs_carry_and_convert() {
        let mut a = Limbs::<2>([u64::MAX, 0]);
        assert!(a.add(&Limbs::one()));
        assert_eq!(a, Limbs([0, 1]));
        assert_eq!(a.into_big(), BigUint::from(1u128 << 64));
        let mut full = Limbs::<2>([u64::MAX, u64::MAX]);
        assert!(!full.add(&Limbs::one()));
        let big = Limbs::<3>([5, 6, 7]).into_big();
        assert_eq!(
            big,
            (BigUint::from(7u8) << 128) + (BigUint::from(6u8) << 64) + 5u8
        );
    }

    #[test]
    fn an_overflow_is_reported_not_wrapped() {
        let next = vec![vec![1], vec![]];
        assert_eq!(sums(&next, &[u64::MAX, 1]), None);
    }

    #[test]
    fn the_thread_count_changes_nothing() {
        let next: Vec<Vec<usize>> = (0..300)
            .map(|x: usize| (1..4).map(|k| x + k * 7).filter(|&y| y < 300).collect())
            .collect();
        let weight: Vec<u64> = (0..300).map(|x| x as u64 % 13 + 1).collect();
        let expected = walked(&next, &weight);
        for threads in [1, 2, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(
                pool.install(|| sums(&next, &weight)),
                Some(expected.clone())
            );
        }
    }

    proptest! {
        #[test]
        fn both_ways_equal_the_walk(next in arb_dag(), seed in any::<u64>()) {
            let weight: Vec<u64> = (0..next.len() as u64).map(|x| (x ^ seed) % 1000).collect();
            let expected = Some(walked(&next, &weight));
            prop_assert_eq!(&sums_by(Way::Chains, &next, &weight), &expected);
            prop_assert_eq!(&sums_by(Way::Bitsets, &next, &weight), &expected);
            let counted: Vec<bool> = weight.iter().map(|w| w % 2 == 0).collect();
            let ones: Vec<u64> = counted.iter().map(|&c| u64::from(c)).collect();
            let expected = walked(&next, &ones);
            prop_assert_eq!(&counts(&next, &counted, 0), &expected);
            prop_assert_eq!(&counts(&next, &counted, usize::MAX), &expected);
        }
    }
}
