#!/usr/bin/env bash
# User-space instructions per request (or per new connection) of sluice,
# counted by callgrind: the same binary and load give the same count within
# ~1%, whatever else the machine is doing, so a change of a few percent shows
# where timed runs on this shared 2-core box cannot (docs/PERFORMANCE.md).
# Kernel time is not counted: compare system calls with `strace -c`.
#
# Usage: bench/instructions.sh [--mode keepalive|conn] [--requests N] [--keep DIR] [SLUICE_BINARY...]
#   --mode       keepalive (default): `ab -k -c10`, one pooled backend connection per client;
#                conn: `ab -c10`, HTTP/1.0, one request per connection (sniff + route + accept)
#   --requests   requests counted after a 500-request warm-up (default 2000)
#   --keep DIR   keep each callgrind profile in DIR (read with `callgrind_annotate --inclusive=yes`)
# Each binary is measured in turn behind one nginx backend, with the built-in
# sniff and path plugins. Needs valgrind, nginx and ab; only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=keepalive REQUESTS=2000 KEEP="" BINARIES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mode) MODE=$2; shift ;;
        --requests) REQUESTS=$2; shift ;;
        --keep) KEEP=$2; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) BINARIES+=("$1") ;;
    esac
    shift
done
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=(target/release/sluice)
[[ $MODE == keepalive || $MODE == conn ]] || { echo "--mode is keepalive or conn" >&2; exit 2; }
for tool in valgrind callgrind_control nginx ab; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y valgrind nginx apache2-utils)" >&2; exit 1; }
done
[[ -z $KEEP ]] || mkdir -p "$KEEP"

DIR=$(mktemp -d) PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
BACKEND=$(free_port) PORT=$(free_port)
cat > "$DIR/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $DIR/nginx.pid; error_log $DIR/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
 server { listen 127.0.0.1:$BACKEND; location / { return 200 "hello from nginx\n"; } } }
EOF
nginx -c "$DIR/nginx.conf" -p "$DIR" & PIDS+=($!)
cat > "$DIR/sluice.toml" <<EOF
[[listeners]]
name = "bench"
bind = "127.0.0.1:$PORT"
sniff = "sniff"
route = "path"
[listeners.per-client]
max-connections = 0
[backends.web]
servers = ["127.0.0.1:$BACKEND"]
idle-timeout = "1h"
forwarded-headers = ["x-forwarded-for"]
[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
EOF
wait_port "$BACKEND"
load() { # requests
    local keep_alive=(); [[ $MODE == keepalive ]] && keep_alive=(-k)
    ab -q "${keep_alive[@]}" -c10 -n"$1" "http://127.0.0.1:$PORT/" > /dev/null 2>&1
}

for binary in "${BINARIES[@]}"; do
    # The wasm instance pool reserves more address space than valgrind can map.
    SLUICE_WASM_ON_DEMAND=1 SLUICE_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$DIR/callgrind.out" "$binary" run --config "$DIR/sluice.toml" --threads 1 --no-watch \
        > "$DIR/sluice.log" 2>&1 &
    pid=$!
    wait_port "$PORT" || { cat "$DIR/sluice.log" >&2; exit 1; }
    load 500
    callgrind_control -i on "$pid" > /dev/null 2>&1
    load "$REQUESTS"
    callgrind_control -d "$pid" > /dev/null 2>&1
    sleep 1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    profile=$(ls "$DIR"/callgrind.out.* 2>/dev/null | head -1)
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$profile")
    unit=$([[ $MODE == keepalive ]] && echo request || echo connection)
    printf '%s\t%s\t%d instructions per %s (%d over %d)\n' "$binary" "$MODE" $((total / REQUESTS)) "$unit" "$total" "$REQUESTS"
    [[ -z $KEEP ]] || cp "$profile" "$KEEP/$(basename "$binary").$MODE.callgrind"
    rm -f "$DIR"/callgrind.out*
done
