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

common=(--arg corpus "$corpus" --arg layeredGenDir "$work/lg" --arg busyboxDir "$work/bb")
nix_build() { nix-build -j auto --no-out-link "$here/bench.nix" "${common[@]}" --arg imported "$work/imported.json" "$@"; }
nix_instantiate() { nix-instantiate -j auto "$here/bench.nix" "${common[@]}" --arg imported "$work/imported.json" "$@" 2>>"$work/nix.log"; }
nix_eval() { nix-instantiate -j auto --read-write-mode --eval --strict --json "$here/bench.nix" \
    "${common[@]}" --arg imported "$work/imported.json" "$@" 2>>"$work/nix.log"; }
layer_outs() { nix_eval "$@" | jq -r '.[]'; }
now() { date +%s.%N; }
seconds() { echo "$2 - $1" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
tar_bytes() { local total=0 size; for l in "$@"; do size=$(jq .tarSize "$l/layer.json"); total=$((total + size)); done; echo $total; }
du_bytes() { [ $# -eq 0 ] && { echo 0; return; }; du -sbc "$@" | tail -1 | cut -f1; }
mb() { echo "scale=1; $1 / 1000000" | bc; }
# The layers of $2... that are not among those of $1 (a file of paths, one per line).
not_in() { local known=$1; shift; for l in "$@"; do grep -qx "$l" "$known" || echo "$l"; done; }

echo "corpus: $(jq .paths "$corpus/summary.json") paths, $(mb "$(jq .bytes "$corpus/summary.json")") MB; update: $updated; sibling without: $without" >&2
# The packages, imported and wrapped, before and after the update: not part of any image
# build's time. They are kept (GC roots in WORKDIR), and their content's store paths are noted
# so that evaluations do not hash the corpus again; everything else unreferenced goes, so that
# every image and layer below is built from scratch.
nix-instantiate --read-write-mode --eval --strict --json "$here/bench.nix" "${common[@]}" \
    -A contentPaths > "$work/imported.json" 2>>"$work/nix.log"
nix_build -A packages -o "$work/packages" >/dev/null 2>>"$work/nix.log"
nix_build --argstr updated "$updated" -A packages -o "$work/updated" >/dev/null 2>>"$work/nix.log"
nix-store --gc >/dev/null 2>>"$work/nix.log"
up=(--argstr updated "$updated")

# First builds: one derivation, then layer derivations (the layers, the plan and the image).
t=$(now); whole1=$(nix_build -A whole 2>>"$work/nix.log"); whole1_s=$(seconds "$t" "$(now)")
t=$(now); split1=$(nix_build -A split 2>>"$work/nix.log"); split1_s=$(seconds "$t" "$(now)")
layer_outs -A splitLayers > "$work/layers1"
mapfile -t layers1 < "$work/layers1"
closure_bytes=$(tar_bytes "${layers1[@]}")

# After the update: one derivation; the stream image with layer derivations (the changed
# layers, the plan and a script); then the image file from the same layers (assembly only).
t=$(now); whole2=$(nix_build "${up[@]}" -A whole 2>>"$work/nix.log"); whole2_s=$(seconds "$t" "$(now)")
t=$(now); stream_drv=$(nix_instantiate "${up[@]}" -A streamSplit); eval2_s=$(seconds "$t" "$(now)")
t=$(now); stream2=$(nix-store --realise "$stream_drv" 2>>"$work/nix.log"); stream2_s=$(seconds "$t" "$(now)")
t=$(now); split2=$(nix_build "${up[@]}" -A split 2>>"$work/nix.log"); assemble2_s=$(seconds "$t" "$(now)")
mapfile -t changed < <(not_in "$work/layers1" $(layer_outs "${up[@]}" -A splitLayers))
changed_bytes=$(tar_bytes "${changed[@]}")
# Evaluating the same expression again (the plan built): what evaluation alone costs.
t=$(now); nix_instantiate "${up[@]}" -A streamSplit >/dev/null; eval_again_s=$(seconds "$t" "$(now)")
# The changed layers built alone: removed again, then realised by their derivations only.
changed_drvs=()
for l in "${changed[@]}"; do changed_drvs+=("$(nix-store -q --deriver "$l")"); done
nix-store --delete "$split2" "$stream2" "${changed[@]}" >/dev/null 2>>"$work/nix.log"
t=$(now); nix-store --realise "${changed_drvs[@]}" >/dev/null 2>>"$work/nix.log"; alone_s=$(seconds "$t" "$(now)")
stream2=$(nix-store --realise "$stream_drv" 2>>"$work/nix.log")
split2=$(nix_build "${up[@]}" -A split 2>>"$work/nix.log")
# Streaming the image of layer derivations (what `| docker load` reads): blobs copied.
t=$(now); stream_bytes=$("$stream2" | wc -c); streamrun_s=$(seconds "$t" "$(now)")

# A sibling image without one top-level package: only its own layers are built.
t=$(now); sibling=$(nix_build --argstr without "$without" -A sibling 2>>"$work/nix.log"); sibling_s=$(seconds "$t" "$(now)")
mapfile -t own < <(not_in "$work/layers1" $(layer_outs --argstr without "$without" -A siblingLayers))
own_bytes=$(tar_bytes "${own[@]}")
sibling_layers=$(layer_outs --argstr without "$without" -A siblingLayers | wc -l)

cat <<TABLE
| build | time | tar bytes read | new store space |
| --- | --- | --- | --- |
| first build, one derivation | ${whole1_s} s | $(mb "$closure_bytes") MB | $(mb "$(du_bytes "$whole1")") MB |
| first build, layer derivations | ${split1_s} s | $(mb "$closure_bytes") MB | $(mb "$(du_bytes "$split1" "${layers1[@]}")") MB (${#layers1[@]} layers + image) |
| after the update, one derivation | ${whole2_s} s | $(mb "$closure_bytes") MB | $(mb "$(du_bytes "$whole2")") MB |
| after the update, streamLayeredImage, layer derivations | $(echo "$eval2_s + $stream2_s" | bc) s (evaluation and plan ${eval2_s} s, then ${stream2_s} s) | $(mb "$changed_bytes") MB (${#changed[@]} layers) | $(mb "$(du_bytes "$stream2" "${changed[@]}")") MB |
| then buildLayeredImage of the same layers (assembly) | ${assemble2_s} s | 0 MB | $(mb "$(du_bytes "$split2")") MB |
| the changed layers alone | ${alone_s} s | $(mb "$changed_bytes") MB | |
| evaluation alone, for reference | ${eval_again_s} s | | |
| sibling image, layer derivations | ${sibling_s} s | $(mb "$own_bytes") MB (${#own[@]} of ${sibling_layers} layers its own) | $(mb "$(du_bytes "$sibling" "${own[@]}")") MB |

streamLayeredImage after the update, built (${stream2_s} s) / the changed layers alone: $(ratio "$stream2_s" "$alone_s")×; with evaluation and plan: $(ratio "$(echo "$eval2_s + $stream2_s" | bc)" "$alone_s")×
buildLayeredImage after the update, layers and assembly / the changed layers alone: $(ratio "$(echo "$stream2_s + $assemble2_s" | bc)" "$alone_s")×
streaming the image of layer derivations: ${streamrun_s} s for $(mb "$stream_bytes") MB
TABLE
