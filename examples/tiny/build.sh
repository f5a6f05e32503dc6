#!/usr/bin/env bash
# Builds the tiny example into an image that Docker runs, without Nix, and loads it:
#
#   examples/tiny/build.sh && docker run --rm example/tiny:latest
#
# The store in root/ is used as it is, except that hello's bin/hello (a shell script there,
# which the golden-hash tests read) becomes the greeter compiled from hello.rs: a static
# executable, since the image has neither libc nor a shell. Everything goes to target/tiny/
# (or $TINY_OUT); $LAYERED_GEN picks the binary (default: a release build of this checkout).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${TINY_OUT:-$repo/target/tiny}
hello=/nix/store/km12j1fnhr9qrdvclxqv9jjbj9x8xil3-hello-1.0

rm -rf "$out"
mkdir -p "$out"
cp -R "$here/root" "$out/root"
chmod -R u+w "$out/root"
rustc --edition 2021 -C opt-level=s -C strip=symbols -C panic=abort \
    -C target-feature=+crt-static -o "$out/root$hello/bin/hello" "$here/hello.rs"

# Before anything is compiled, say what is needed: Rust (rustc, cargo) and a running Docker.
for tool in rustc cargo docker; do
    command -v "$tool" >/dev/null || { echo "build.sh: needs $tool on PATH (Rust from rustup.rs, Docker Engine)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "build.sh: the Docker daemon is not running (start it: sudo systemctl start docker, or dockerd &)" >&2; exit 1; }

layered_gen=${LAYERED_GEN:-}
if [ -z "$layered_gen" ]; then
    echo "building layered-gen (cargo build --release; about 2 minutes on a fresh clone) ..." >&2
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    layered_gen=$repo/target/release/layered-gen
fi
"$layered_gen" --closure "$here/closure" --store-root "$out/root" \
    --config "$here/config.json" --contents "$hello" \
    --name example/tiny --tag latest -o "$out/tiny.tar"
docker load -i "$out/tiny.tar"
