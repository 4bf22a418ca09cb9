#!/usr/bin/env bash
# The cost of shadow mode on the request path (docs/EXPERIMENTS.md):
# the proxy's user+system CPU per request, without and with a candidate that
# shadows 100 % of requests, alternating runs of the same length.
#
#   flock /work/bench.lock host/benches/experiments.sh [SLUICE_BINARY] [ROUNDS] [SECONDS]
#
# The route plugin answers every request itself (a `respond` rule), so no
# backend's CPU mixes in and the plugin work is the largest share of what is
# measured: an upper bound on the relative cost for forwarded requests.
# Needs wrk. CPU comes from /proc/PID/stat (utime + stime, in clock ticks).
set -euo pipefail
bin=${1:-target/release/sluice}
rounds=${2:-3}
seconds=${3:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
tick=$(getconf CLK_TCK)

config() { # $1: port, $2: extra candidate table (or nothing)
  cat <<TOML
[[listeners]]
name = "web"
bind = "127.0.0.1:$1"
sniff = "sniff"
route = "path"
[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
settings = { rules = [{ respond = { status = 200, body = "ok\n" } }] }
$2
TOML
}
config 18571 "" >"$dir/base.toml"
config 18572 '[plugins.path.candidate]
settings = { rules = [{ host = "never.test", respond = { status = 500 } }, { respond = { status = 200, body = "ok\n" } }] }
shadow = true
queue = 65536' >"$dir/shadow.toml"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # $1: config, $2: port -> "requests ticks"
  "$bin" --config "$1" --no-watch >/dev/null 2>"$dir/log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/" >/dev/null && break; sleep 0.1; done
  local before after requests
  before=$(cpu $pid)
  requests=$(wrk -t1 -c4 -d"${seconds}s" "http://127.0.0.1:$2/" | awk '/requests in/ {print $1}')
  after=$(cpu $pid)
  kill $pid; wait $pid 2>/dev/null || true
  echo "$requests $((after - before))"
}

echo "load before: $(uptime)"
for round in $(seq "$rounds"); do
  read -r base_req base_ticks < <(measure "$dir/base.toml" 18571)
  read -r shadow_req shadow_ticks < <(measure "$dir/shadow.toml" 18572)
  awk -v r="$round" -v br="$base_req" -v bt="$base_ticks" -v sr="$shadow_req" -v st="$shadow_ticks" -v hz="$tick" 'BEGIN {
    b = bt / hz / br * 1e6; s = st / hz / sr * 1e6;
    printf "round %d: live only %.1f µs CPU/request (%d requests), with 100%% shadow %.1f µs (%d requests): +%.1f µs (x%.2f)\n", r, b, br, s, sr, s - b, s / b }'
done
echo "load after: $(uptime)"
