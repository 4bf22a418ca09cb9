#!/usr/bin/env bash
# Workers benchmark (docs/PERFORMANCE.md, "Workers"): keep-alive requests and
# new connections through sluice and HAProxy (HTTP mode), with 1 and 2
# worker threads, and the proxy's CPU per request / per connection.
#
#   bench/workers.sh [--duration S] [--threads "1 2"] [SLUICE_BINARY...]
#
# Each SLUICE_BINARY (default: target/release/sluice) is measured, then
# HAProxy in HTTP mode and in TCP-inspect mode, in the same run: compare ratios, not absolute rates (the machine
# is shared with the load generators and the backend). Keep-alive: wrk -t1
# -c50; new connections: ab -c32 -n30000 (HTTP/1.0, one request per
# connection). CPU: user+system ticks of the proxy from /proc/PID/stat,
# before and after each test, divided by the requests counted by the client.
# Uses bench/compare/*.in for the configs and `loadgen backend`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=10 THREADS="1 2" BINARIES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) BINARIES+=("$1") ;;
    esac
    shift
done
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=("$TARGET/release/sluice")
LOADGEN=$TARGET/release/loadgen
for tool in wrk ab haproxy "$LOADGEN"; do command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }; done
ulimit -n "$(ulimit -Hn)"
MAXCONN=$(( ($(ulimit -n) - 1024) / 2 ))
TICK=$(getconf CLK_TCK)

DIR=$(mktemp -d /tmp/sluice-workers.XXXXXX)
PIDS=()
cleanup() { [[ -n ${KEEP_LOGS:-} ]] && cat "$DIR"/*.log >&2; for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -keyout "$DIR/key.pem" \
    -out "$DIR/cert.pem" -subj /CN=bench.local -addext subjectAltName=DNS:bench.local 2>/dev/null
cat "$DIR/cert.pem" "$DIR/key.pem" > "$DIR/combined.pem"
mapfile -t PORTS < <("$LOADGEN" free-ports 7)
BACKEND=${PORTS[0]} SLUICE=${PORTS[1]}
render() { # template output threads
    sed -e "s|@DIR@|$DIR|g" -e "s|@THREADS@|$3|g" -e "s|@MAXCONN@|$MAXCONN|g" -e "s|@BACKEND_PORT@|$BACKEND|g" \
        -e "s|@SLUICE_PORT@|$SLUICE|g" -e "s|@HAPROXY_RELAY@|${PORTS[2]}|g" -e "s|@HAPROXY_INSPECT@|${PORTS[3]}|g" \
        -e "s|@HAPROXY_HTTP@|${PORTS[4]}|g" -e "s|@HAPROXY_TLS@|${PORTS[5]}|g" -e "s|@HAPROXY_SPLICE@|${PORTS[6]}|g" \
        -e "s|@FLASH_POLICY@|<cross-domain-policy/>|g" "$ROOT/bench/compare/$1" > "$DIR/$2"
}
render flash.lua.in flash.lua 1
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys() { awk '{print $15}' "/proc/$1/stat"; }
# µs per unit from tick counts: per_unit TICKS UNITS
per_unit() { echo "$1 * 1000000 / $TICK / $2" | bc -l; }

"$LOADGEN" --threads 2 backend --port "$BACKEND" > "$DIR/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND"

measure() { # label pid port
    local label=$1 pid=$2 port=$3 before after out rate n
    wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" > /dev/null 2>&1 # warm-up
    before=$(cpu "$pid") sys_before=$(sys "$pid")
    out=$(wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$port/")
    after=$(cpu "$pid") sys_after=$(sys "$pid")
    rate=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    printf '%s\tkeep-alive req/s\t%.0f\tCPU µs/request\t%.1f\t(kernel %.1f)\t%s\n' "$label" "$rate" \
        "$(per_unit $((after - before)) "$n")" "$(per_unit $((sys_after - sys_before)) "$n")" \
        "$(grep -o 'Non-2xx.*' <<<"$out" || true)"
    before=$(cpu "$pid") sys_before=$(sys "$pid")
    out=$(ab -q -c32 -n30000 "http://127.0.0.1:$port/" 2>&1)
    after=$(cpu "$pid") sys_after=$(sys "$pid")
    rate=$(awk '/^Requests per second/ {print $4}' <<<"$out")
    printf '%s\tnew connections/s\t%.0f\tCPU µs/connection\t%.1f\t(kernel %.1f)\t%s\n' "$label" "$rate" \
        "$(per_unit $((after - before)) 30000)" "$(per_unit $((sys_after - sys_before)) 30000)" \
        "$(grep -E '^(Failed|Non-2xx)' <<<"$out" | tr '\n' ' ')"
}

uptime
for threads in $THREADS; do
    for binary in "${BINARIES[@]}"; do
        render sluice.toml.in sluice.toml "$threads"
        SLUICE_LOG=warn "$binary" run --config "$DIR/sluice.toml" --grace 1s --threads "$threads" > "$DIR/sluice.log" 2>&1 &
        pid=$!; PIDS+=("$pid")
        wait_port "$SLUICE"
        measure "sluice $(basename "$binary") threads=$threads" "$pid" "$SLUICE"
        echo "  RSS after: $(awk '/^VmRSS/ {print $2, $3}' "/proc/$pid/status"), threads: $(ls "/proc/$pid/task" | wc -l)"
        kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    done
    render haproxy.cfg.in haproxy.cfg "$threads"
    haproxy -db -f "$DIR/haproxy.cfg" > "$DIR/haproxy.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_port "${PORTS[4]}"
    measure "haproxy-http threads=$threads" "$pid" "${PORTS[4]}"
    measure "haproxy-inspect threads=$threads" "$pid" "${PORTS[3]}"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
done
uptime
