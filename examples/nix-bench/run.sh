#!/usr/bin/env bash
# Layers as Nix derivations, measured with a real nix-build on the shared corpus:
#
#   examples/nix-bench/run.sh [--small] [WORKDIR]
#
# builds an OCI image of the corpus (reuse layering, 100 layers) as one derivation and with
# layerDerivations, then after a one-package update (a top-level package's content changes),
# then a sibling image without one top-level package, and prints a Markdown table: wall time,
# bytes of tar the builds read, store space. Needs nix-build (see ../shared/README.md), the
# corpus tool at ../shared/corpus/make-corpus and a release build (made if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
small=()
if [ "${1:-}" = "--small" ]; then small=(--roots coreutils,bash,perl-base,gzip,tar,findutils); shift; fi
work=${1:-/tmp/layered-gen-nix-bench}
mkdir -p "$work"
corpus=$work/corpus
if [ ! -f "$corpus/graph.json" ]; then
    "$repo/../shared/corpus/make-corpus" "${small[@]}" "$corpus" >/dev/null
fi
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
mkdir -p "$work/lg/bin" "$work/bb/bin"
cp "$repo/target/release/layered-gen" "$work/lg/bin/"
cp "$(command -v busybox)" "$work/bb/bin/busybox"
ln -sf busybox "$work/bb/bin/sh"

# A top-level package of a few MB to update, and another the sibling leaves out.
pick() {
    jq -r --arg root "$(cat "$corpus/root")" --argjson skip "$1" '
        (map(select(.path == $root)) | .[0].references) as $top
        | map(select(.path != $root and (.path as $p | $top | index($p)) and .narSize > 200000))
        | sort_by(.narSize) | .[(length / 2 | floor) + $skip].path
        | sub(".*/[a-z0-9]{32}-"; "") | gsub("[~:]"; "_")' "$corpus/graph.json"
}
updated=$(pick 0)
without=$(pick 1)

nix_build() { nix-build --no-out-link "$here/bench.nix" --arg corpus "$corpus" \
    --arg layeredGenDir "$work/lg" --arg busyboxDir "$work/bb" "$@"; }
layer_outs() { nix-instantiate --read-write-mode --eval --strict --json "$here/bench.nix" \
    --arg corpus "$corpus" --arg layeredGenDir "$work/lg" --arg busyboxDir "$work/bb" "$@" |
    jq -r '.[]'; }
layer_drvs() { nix-instantiate "$here/bench.nix" --arg corpus "$corpus" \
    --arg layeredGenDir "$work/lg" --arg busyboxDir "$work/bb" "$@" 2>/dev/null; }
now() { date +%s.%N; }
seconds() { echo "$2 - $1" | bc; }
tar_bytes() { local total=0 size; for l in "$@"; do size=$(jq .tarSize "$l/layer.json"); total=$((total + size)); done; echo $total; }
du_bytes() { [ $# -eq 0 ] && { echo 0; return; }; du -sbc "$@" | tail -1 | cut -f1; }
mb() { echo "scale=1; $1 / 1000000" | bc; }

echo "corpus: $(jq .paths "$corpus/summary.json") paths, $(mb "$(jq .bytes "$corpus/summary.json")") MB; update: $updated; sibling without: $without" >&2
# The packages, imported and wrapped, before and after the update: not part of any image
# build's time. They are kept (GC roots in WORKDIR); everything else unreferenced goes, so that
# every image and layer below is built from scratch.
nix-build "$here/bench.nix" --arg corpus "$corpus" --arg layeredGenDir "$work/lg" \
    --arg busyboxDir "$work/bb" -A packages -o "$work/packages" >/dev/null
nix-build "$here/bench.nix" --arg corpus "$corpus" --arg layeredGenDir "$work/lg" \
    --arg busyboxDir "$work/bb" --argstr updated "$updated" -A packages -o "$work/updated" >/dev/null
nix-store --gc >/dev/null 2>>"$work/nix.log"

t=$(now); whole1=$(nix_build -A whole 2>>"$work/nix.log"); whole1_s=$(seconds "$t" "$(now)")
t=$(now); nix_build -A splitLayers >/dev/null 2>>"$work/nix.log"; split1=$(nix_build -A split 2>>"$work/nix.log"); split1_s=$(seconds "$t" "$(now)")
mapfile -t layers1 < <(layer_outs -A splitLayers)
closure_bytes=$(tar_bytes "${layers1[@]}")

t=$(now); whole2=$(nix_build --argstr updated "$updated" -A whole 2>>"$work/nix.log"); whole2_s=$(seconds "$t" "$(now)")
t=$(now); nix_build --argstr updated "$updated" -A splitLayers >/dev/null 2>>"$work/nix.log"; layers2_s=$(seconds "$t" "$(now)")
t=$(now); split2=$(nix_build --argstr updated "$updated" -A split 2>>"$work/nix.log"); assemble2_s=$(seconds "$t" "$(now)")
split2_s=$(echo "$layers2_s + $assemble2_s" | bc)
mapfile -t layers2 < <(layer_outs --argstr updated "$updated" -A splitLayers)
changed=()
for l in "${layers2[@]}"; do printf '%s\n' "${layers1[@]}" | grep -qx "$l" || changed+=("$l"); done
changed_bytes=$(tar_bytes "${changed[@]}")
# The changed layers built alone: removed again, then realised by their derivations only.
mapfile -t drvs2 < <(layer_drvs --argstr updated "$updated" -A splitLayers)
changed_drvs=()
for d in "${drvs2[@]}"; do
    out=$(nix-store -q --outputs "$d")
    printf '%s\n' "${changed[@]}" | grep -qx "$out" && changed_drvs+=("$d")
done
nix-store --delete "$split2" "${changed[@]}" >/dev/null 2>>"$work/nix.log"
t=$(now); nix-store --realise "${changed_drvs[@]}" >/dev/null 2>>"$work/nix.log"; alone_s=$(seconds "$t" "$(now)")
nix_build --argstr updated "$updated" -A split >/dev/null 2>>"$work/nix.log"

t=$(now); nix_build --argstr without "$without" -A siblingLayers >/dev/null 2>>"$work/nix.log"; sibling=$(nix_build --argstr without "$without" -A sibling 2>>"$work/nix.log"); sibling_s=$(seconds "$t" "$(now)")
mapfile -t layers3 < <(layer_outs --argstr without "$without" -A siblingLayers)
own=()
for l in "${layers3[@]}"; do printf '%s\n' "${layers1[@]}" | grep -qx "$l" || own+=("$l"); done
own_bytes=$(tar_bytes "${own[@]}")

cat <<TABLE
| build | time | tar bytes read | new store space |
| --- | --- | --- | --- |
| first build, one derivation | ${whole1_s} s | $(mb "$closure_bytes") MB | $(mb "$(du_bytes "$whole1")") MB |
| first build, layer derivations | ${split1_s} s | $(mb "$closure_bytes") MB | $(mb "$(du_bytes "$split1" "${layers1[@]}")") MB (${#layers1[@]} layers + image) |
| after the update, one derivation | ${whole2_s} s | $(mb "$closure_bytes") MB | $(mb "$(du_bytes "$whole2")") MB |
| after the update, layer derivations | ${split2_s} s (layers ${layers2_s} s, image ${assemble2_s} s) | $(mb "$changed_bytes") MB (${#changed[@]} layers) | $(mb "$(du_bytes "$split2" "${changed[@]}")") MB |
| the changed layers alone | ${alone_s} s | $(mb "$changed_bytes") MB | |
| sibling image, layer derivations | ${sibling_s} s | $(mb "$own_bytes") MB (${#own[@]} own layers) | $(mb "$(du_bytes "$sibling" "${own[@]}")") MB |

layer derivations after the update / the changed layers alone: $(echo "scale=2; $split2_s / $alone_s" | bc)×
TABLE
