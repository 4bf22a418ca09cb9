#!/bin/sh
# Scale benchmark for multi-tenant hosting: see bench/tenants.py.
#   bench/tenants.sh [N]      (builds sluice in release mode first)
set -eu
cd "$(dirname "$0")/.."
cargo build --release --bin sluice
target="${CARGO_TARGET_DIR:-target}"
wasm="$(ls -t "$target"/release/build/sluice-*/out/hostile_route.wasm | head -1)"
exec flock "${BENCH_LOCK:-/work/bench.lock}" python3 bench/tenants.py "$target/release/sluice" "$wasm" "${1:-1000}"
