#!/usr/bin/env bash
# Single-stream relay throughput: through sluice vs straight to the backend.
# Usage: bench/relay.sh [MiB per direction, default 2048]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
RELAY_MIB="${1:-2048}" cargo bench --quiet --bench relay
