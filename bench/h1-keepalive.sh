#!/usr/bin/env bash
# Keep-alive HTTP/1.1 through sluice (`--threads 1`) and HAProxy in HTTP mode
# (`nbthread 1`), in front of the same nginx, in one run: req/s and the proxy's
# CPU (user+system from /proc/PID/stat) per request. For the lean HTTP/1 path
# (docs/PERFORMANCE.md, "HTTP/1 fast path").
#
# Usage: bench/h1-keepalive.sh [--sluice BIN]... [--duration S] [--connections N] [--perf DIR]
#   --sluice BIN   a sluice binary to measure (repeatable: before/after builds side by side)
#   --perf DIR     also record `perf record -g` of HAProxy's and each sluice run into DIR
# Wrap it in `flock /work/bench.lock` on a shared machine. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICES=()
DURATION=10
CONNECTIONS=50
PERF_DIR=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sluice) SLUICES+=("$2"); shift ;;
        --duration) DURATION="$2"; shift ;;
        --connections) CONNECTIONS="$2"; shift ;;
        --perf) PERF_DIR="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[[ ${#SLUICES[@]} -gt 0 ]] || SLUICES=(target/release/sluice)
for tool in wrk nginx haproxy; do command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y haproxy nginx wrk)" >&2; exit 1; }; done

DIR=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
# TCP segments sent by the whole machine (loopback: every segment of the run).
out_segments() { awk '/^Tcp:/ { n++; if (n == 2) print $12 }' /proc/net/snmp; }

BACKEND=$(free_port)
cat > "$DIR/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from nginx\n"; } }
}
EOF
nginx -c "$DIR/nginx.conf" -p "$DIR" & PIDS+=($!)
wait_port "$BACKEND"

HAPROXY=$(free_port)
cat > "$DIR/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout http-request 10s
    timeout http-keep-alive 10s
frontend http
    bind 127.0.0.1:$HAPROXY
    option forwardfor
    default_backend web
backend web
    http-reuse always
    server s1 127.0.0.1:$BACKEND
EOF
haproxy -f "$DIR/haproxy.cfg" -db & PIDS+=($!)
HAPROXY_PID=$!
wait_port "$HAPROXY"

# One wrk run against 127.0.0.1:$2; prints "name req/s cpu-µs/request".
measure() {
    local name=$1 port=$2 pid=$3 before after sys_before sys_after segs_before segs_after out requests rate
    wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port/" >/dev/null  # warm the pools
    before=$(cpu_ticks "$pid"); sys_before=$(sys_ticks "$pid"); segs_before=$(out_segments)
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/")
    after=$(cpu_ticks "$pid"); sys_after=$(sys_ticks "$pid"); segs_after=$(out_segments)
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then echo "  ($name: $(grep 'Non-2xx\|Socket errors' <<<"$out" | tr '\n' ' '))"; fi
    awk -v n="$name" -v r="$rate" -v q="$requests" -v c=$((after - before)) -v s=$((sys_after - sys_before)) -v t="$TICK" -v g=$((segs_after - segs_before)) \
        'BEGIN { printf "%-34s %10.0f req/s %8.1f µs CPU/request (%.1f in the kernel), %.2f TCP segments/request\n", n, r, c * 1e6 / t / q, s * 1e6 / t / q, g / q }'
}

echo "uptime: $(uptime)"
if [[ -n $PERF_DIR ]]; then
    mkdir -p "$PERF_DIR"
    perf record -g -o "$PERF_DIR/haproxy.data" -p "$HAPROXY_PID" -- sleep "$((DURATION + 1))" >/dev/null 2>&1 &
    perf_pid=$!
fi
measure "haproxy (http mode, nbthread 1)" "$HAPROXY" "$HAPROXY_PID"
[[ -z $PERF_DIR ]] || wait "$perf_pid" || true
for i in "${!SLUICES[@]}"; do
    bin=${SLUICES[$i]}
    port=$(free_port)
    sed -e "s/@PORT@/$port/" -e "s/@BACKEND@/$BACKEND/" > "$DIR/sluice$i.toml" <<'EOF'
[[listeners]]
name = "bench"
bind = "127.0.0.1:@PORT@"
sniff = "sniff"
route = "path"
[listeners.per-client]
max-connections = 0
[backends.web]
servers = ["127.0.0.1:@BACKEND@"]
idle-timeout = "1h"
forwarded-headers = ["x-forwarded-for"]
[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
EOF
    SLUICE_LOG=warn "$bin" run --config "$DIR/sluice$i.toml" --threads 1 --no-watch > "$DIR/sluice$i.log" 2>&1 & PIDS+=($!)
    pid=$!
    wait_port "$port"
    if [[ -n $PERF_DIR ]]; then
        mkdir -p "$PERF_DIR"
        perf record -g -o "$PERF_DIR/sluice$i.data" -p "$pid" -- sleep "$((DURATION + 1))" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    measure "sluice $bin" "$port" "$pid"
    [[ -z $PERF_DIR ]] || wait "$perf_pid" || true
    kill "$pid"
done
measure "haproxy again" "$HAPROXY" "$HAPROXY_PID"
echo "uptime: $(uptime)"
