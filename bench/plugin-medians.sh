#!/bin/sh
# Print the median of every plugin-decision bench from criterion's last run
# (`cargo bench --bench plugin` prints means; the target is a median).
set -eu
dir="${CARGO_TARGET_DIR:-$(dirname "$0")/../target}/criterion"
python3 - "$dir" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for group in ("sniff-decision", "route-decision"):
    for estimates in sorted((root / group).glob("*/new/estimates.json")):
        median = json.loads(estimates.read_text())["median"]
        low, high = median["confidence_interval"]["lower_bound"], median["confidence_interval"]["upper_bound"]
        case = estimates.parent.parent.name
        print(f"{group}/{case:<28} median {median['point_estimate'] / 1000:7.2f} us"
              f"  [{low / 1000:.2f} .. {high / 1000:.2f}]")
PY
