#!/usr/bin/env bash
# Run the plugin's tests natively: write the Python bindings for wit/ into
# .bindings/ (what the component build generates internally), then unittest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ ! -x "$here/.venv/bin/componentize-py" ]]; then
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet --require-hashes -r "$here/requirements.txt"
fi
rm -rf "$here/.bindings"
"$here/.venv/bin/componentize-py" -d "$here/wit" -w {{world}} bindings "$here/.bindings"
cd "$here"
PYTHONPATH="$here/.bindings:$here" "$here/.venv/bin/python" -m unittest -v test_app "$@"
