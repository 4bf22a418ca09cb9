#!/usr/bin/env bash
# The route decision as the running proxy measures it (sluice_plugin_decision_seconds, from
# /metrics) under keep-alive load, with the built-in path plugin and four rules, one worker;
# the proxy's CPU per request; then single-connection latency (wrk -c1) through HAProxy HTTP
# mode, sluice and straight to the backend, twice, interleaved. Loopback only; every load is
# bounded in time. Wrap it in `flock /work/bench.lock` on a shared machine.
#
# Usage: bench/decision.sh [SLUICE_BINARY] [SECONDS]   (PERF=FILE also records `perf record -g`)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/sluice}
DUR=${2:-10}
for tool in wrk nginx haproxy curl; do command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
DIR=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }
B=$(free_port); P=$(free_port); A=$(free_port)
cat > $DIR/nginx.conf <<EOF
daemon off; worker_processes 1; pid $DIR/nginx.pid; error_log $DIR/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
 server { listen 127.0.0.1:$B; location / { return 200 "hello from nginx\n"; } } }
EOF
nginx -c $DIR/nginx.conf -p $DIR & PIDS+=($!)
cat > $DIR/s.toml <<EOF
[admin]
bind = "127.0.0.1:$A"
[[listeners]]
name = "bench"
bind = "127.0.0.1:$P"
sniff = "sniff"
route = "path"
[listeners.per-client]
max-connections = 0
[backends.web]
servers = ["127.0.0.1:$B"]
idle-timeout = "1h"
forwarded-headers = ["x-forwarded-for"]
[backends.api]
servers = ["127.0.0.1:$B"]
[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
[[plugins.path.settings.rules]]
path-prefix = "/api/"
backend = "api"
[[plugins.path.settings.rules]]
path-prefix = "/socket.io/"
backend = "api"
[[plugins.path.settings.rules]]
host = "admin.example"
backend = "api"
[[plugins.path.settings.rules]]
path-prefix = "/old-home"
respond = { status = 301, headers = { location = "/" } }
EOF
SLUICE_LOG=warn $BIN run --config $DIR/s.toml --threads 1 --no-watch > $DIR/s.log 2>&1 & PIDS+=($!); SP=$!
wait_port $B; wait_port $P
wrk -t1 -c50 -d1s http://127.0.0.1:$P/ >/dev/null
t0=$(awk '{print $14+$15}' /proc/$SP/stat)
curl -s http://127.0.0.1:$A/metrics | grep 'sluice_plugin_decision_seconds.*plugin="path"' > $DIR/m0
[[ -n ${PERF:-} ]] && { perf record -F 2000 -g -o $PERF -p $SP -- sleep $((DUR+1)) >/dev/null 2>&1 & }
out=$(wrk -t1 -c50 -d${DUR}s http://127.0.0.1:$P/)
sleep 1.2
t1=$(awk '{print $14+$15}' /proc/$SP/stat)
curl -s http://127.0.0.1:$A/metrics | grep 'sluice_plugin_decision_seconds.*plugin="path"' > $DIR/m1
echo "$out" | grep -E "Requests/sec|requests in|Non-2xx|Latency"
q=$(awk '/requests in/ {print $1}' <<<"$out")
awk -v c=$((t1-t0)) -v q=$q 'BEGIN{printf "CPU/request %.1f us\n", c*1e4/q}'
echo "decisions during the run, cumulative by bucket (seconds):"
paste -d' ' $DIR/m0 $DIR/m1 | awk '{print $1, $4 - $2}' | grep -E 'bucket|count|sum'
# single connection, HAProxy HTTP mode for comparison
H=$(free_port)
cat > $DIR/h.cfg <<EOF2
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend http
    bind 127.0.0.1:$H
    option forwardfor
    default_backend web
backend web
    http-reuse always
    server s1 127.0.0.1:$B
EOF2
haproxy -f $DIR/h.cfg -db & PIDS+=($!)
wait_port $H
for round in 1 2; do
out=$(wrk -t1 -c1 -d3s --latency http://127.0.0.1:$H/); echo "haproxy:"; echo "$out" | grep -E "Requests/sec|50%|99%"

out=$(wrk -t1 -c1 -d3s --latency http://127.0.0.1:$P/); echo "sluice:"; echo "$out" | grep -E "Requests/sec|50%|99%"
out=$(wrk -t1 -c1 -d3s --latency http://127.0.0.1:$B/); echo "direct:"; echo "$out" | grep -E "Requests/sec|50%|99%"
done
