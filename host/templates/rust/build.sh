#!/usr/bin/env bash
# Build the plugin into a WebAssembly component for sluice:
#
#   ./build.sh [OUT.wasm]          (default: {{name}}.wasm next to this script)
#
# Needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
# Extra arguments after OUT go to cargo (e.g. --offline).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/{{name}}.wasm}"
shift || true
cargo build --manifest-path "$here/Cargo.toml" --release --target wasm32-wasip2 "$@"
target="${CARGO_TARGET_DIR:-$here/target}"
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" "$out"
echo "wrote $out ($(wc -c < "$out") bytes)"
