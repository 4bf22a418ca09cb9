#!/usr/bin/env bash
# Build app.py into a WebAssembly component for sluice:
#
#   ./build.sh [OUT.wasm]          (default: py-router.wasm next to this script)
#
# componentize-py comes from PyPI, pinned in requirements.txt; it is
# installed into .venv here on first use. A default build (no --stub-wasi):
# print() and the clocks use the virtual WASI sluice provides.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/py-router.wasm}"
if [[ ! -x "$here/.venv/bin/componentize-py" ]]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet --require-hashes -r "$here/requirements.txt"
fi
"$here/.venv/bin/componentize-py" -d "$here/../../../wit" -w router \
  componentize --python-path "$here" app -o "$out"
