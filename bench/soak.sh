#!/usr/bin/env bash
# Soak test: sluice (release build) with the built-in plugins under mixed,
# rate-bounded traffic for a while, sampling its memory, descriptors and
# tasks; says whether they stay flat. See docs/TESTING.md.
#
# Usage: bench/soak.sh [--minutes N] [--interval S] [--keep]
#
#   --minutes N    how long the traffic runs (default 10; 60 for a release)
#   --interval S   seconds between samples (default 10)
#   --keep         keep the work dir (config, certificates, logs, CSV)
#
# Traffic (bench/soak.py): HTTP keep-alive and one-request connections,
# WebSockets opened, held 1-10 s and closed, raw TCP relays with half-close,
# TLS terminated by sluice, Flash policy requests, silent connections; the
# config is rewritten every 30 s and one of the two web servers is killed
# every 60 s and restarted 10 s later. Backends: bench/loadgen's backend.
# Needs python3 and openssl; loopback only. Exit status 1 when a series
# grows, sluice dies or logs a panic.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MINUTES=10
INTERVAL=10
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift ;;
        --interval) INTERVAL="$2"; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
log() { echo "[soak] $*" >&2; }

log "building sluice and loadgen (release)"
cargo build --release --locked --quiet -p sluice -p loadgen
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
SLUICE=$BIN/sluice
LOADGEN=$BIN/loadgen

DIR=$(mktemp -d /tmp/sluice-soak.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $KEEP == 1 ]]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" -subj /CN=soak.local \
    -addext subjectAltName=DNS:soak.local 2>/dev/null

mapfile -t PORTS < <("$LOADGEN" free-ports 6)
[[ ${#PORTS[@]} == 6 ]] || { echo "could not find free ports" >&2; exit 1; }
PROXY_PORT=${PORTS[0]} ADMIN_PORT=${PORTS[1]} WEB_A=${PORTS[2]} WEB_B=${PORTS[3]} RAW=${PORTS[4]}

# One listener for everything, as deployed: the sniff plugin answers Flash,
# terminates TLS (and sniffs again inside), serves HTTP through the path
# plugin and relays the rest to `raw`. `web` has two servers and a health
# check, so the one that is killed is taken out and brought back.
cat > "$DIR/sluice.toml.in" <<EOF
# Rewritten every 30 s by bench/soak.py; generation @GENERATION@.
[[listeners]]
name = "soak"
bind = "127.0.0.1:$PROXY_PORT"
sniff = "sniff"
route = "path"
default-backend = "raw"
inspect-timeout = "500ms"
header-timeout = "10s"

[[listeners.certificates]]
cert = "$DIR/cert.pem"
key = "$DIR/key.pem"

[backends.web]
servers = ["127.0.0.1:$WEB_A", "127.0.0.1:$WEB_B"]
connect-timeout = "1s"
retries = 1
health-check = { interval = "1s", timeout = "500ms", rise = 2, fall = 1, http-path = "/health" }

[backends.raw]
servers = ["127.0.0.1:$RAW"]
idle-timeout = "30s"

[plugins.sniff]
builtin = "sniff"

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
[[plugins.path.settings.rules]]
path-prefix = "/generation"
respond = { status = 200, body = "@GENERATION@" }

[admin]
bind = "127.0.0.1:$ADMIN_PORT"
EOF
sed 's/@GENERATION@/0/g' "$DIR/sluice.toml.in" > "$DIR/sluice.toml"
"$SLUICE" check --config "$DIR/sluice.toml" >/dev/null

"$LOADGEN" --threads 1 backend --port "$WEB_A" > "$DIR/web-a.log" 2>&1 & PIDS+=($!)
"$LOADGEN" --threads 1 backend --port "$RAW" > "$DIR/raw.log" 2>&1 & PIDS+=($!)
"$SLUICE" run --config "$DIR/sluice.toml" --threads 2 > "$DIR/sluice.log" 2>&1 & SLUICE_PID=$!
PIDS+=("$SLUICE_PID")

# Ready when the admin port answers (bounded; no fixed sleep).
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" >/dev/null 2>&1 && break
    kill -0 "$SLUICE_PID" 2>/dev/null || { cat "$DIR/sluice.log" >&2; exit 1; }
    sleep 0.1
done
log "sluice pid $SLUICE_PID on 127.0.0.1:$PROXY_PORT for $MINUTES min; work dir $DIR"

status=0
python3 "$ROOT/bench/soak.py" \
    --pid "$SLUICE_PID" --proxy "127.0.0.1:$PROXY_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --config "$DIR/sluice.toml" --config-template "$DIR/sluice.toml.in" --ca "$DIR/cert.pem" \
    --flapping-backend "$LOADGEN --threads 1 backend --port $WEB_B" \
    --log "$DIR/sluice.log" --csv "$DIR/soak.csv" --minutes "$MINUTES" --interval "$INTERVAL" || status=$?
cp "$DIR/soak.csv" "${SOAK_CSV:-/tmp/sluice-soak-last.csv}"
log "CSV: ${SOAK_CSV:-/tmp/sluice-soak-last.csv}"
exit $status
