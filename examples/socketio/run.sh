#!/usr/bin/env bash
# Start the whole example: the web app (twice: `web` and `api`), two
# Socket.IO nodes and sluice in front of them, all reached on one port.
# Ctrl-C (or SIGTERM) stops everything.
#
#   ./run.sh                       # from any directory
#   SLUICE_BIN=/path/to/sluice ./run.sh
#   SLUICE_LOG=warn,sluice::access=info ./run.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

DEFAULT_BIN="$repo/target/release/sluice"
SLUICE_BIN="${SLUICE_BIN:-$DEFAULT_BIN}"
CONFIG="$here/sluice.toml"
PUBLIC_PORT=8080
POLICY_PORT=8843
WEB_PORT=9100
NODE_A_PORT=9101
NODE_B_PORT=9102
API_PORT=9103

say() { printf '[run.sh] %s\n' "$*"; }

command -v node >/dev/null || { say "node is not installed (Node 18+ needed)"; exit 1; }

if [[ ! -d node_modules/socket.io || ! -d node_modules/socket.io-client ]]; then
  say "installing Node dependencies (npm ci)"
  npm ci --no-audit --no-fund
fi

if [[ ! -x "$SLUICE_BIN" ]]; then
  if [[ "$SLUICE_BIN" != "$DEFAULT_BIN" ]]; then
    say "SLUICE_BIN=$SLUICE_BIN is not an executable"
    exit 1
  fi
  say "building sluice (cargo build --release in $repo)"
  (cd "$repo" && cargo build --release)
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $PUBLIC_PORT $POLICY_PORT $WEB_PORT $NODE_A_PORT $NODE_B_PORT $API_PORT; do
  if port_busy "$port"; then
    say "port $port is already in use (another run.sh still running?)"
    exit 1
  fi
done

pids=()
stopping=0
stop_all() {
  local code=${1:-0}
  trap - INT TERM EXIT
  if (( stopping )); then return; fi
  stopping=1
  say "stopping…"
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Give everyone a few seconds to exit cleanly, then insist.
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  say "stopped"
  exit "$code"
}
trap 'stop_all 130' INT
trap 'stop_all 143' TERM
trap 'stop_all $?' EXIT

start() { # name, command...
  local name=$1; shift
  say "starting $name: $*"
  "$@" &
  pids+=("$!")
}

wait_for() { # description, command...
  local what=$1; shift
  for _ in $(seq 100); do
    "$@" 2>/dev/null && return 0
    sleep 0.1
  done
  say "$what did not come up"
  return 1
}

# Readiness probes through sluice use real requests, so they do not show up
# as stray connections in its log.
http_ok() ( # port: GET /health answers (a subshell: fd 3 stays local)
  line=""
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
  read -r -t 3 line <&3 || true
  [[ $line == "HTTP/1.1 200"* ]]
)
policy_ok() ( # port: the Flash policy comes back
  reply=""
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf '<policy-file-request/>\0' >&3
  read -r -d '' -t 3 reply <&3 || true
  [[ $reply == *"<cross-domain-policy>"* ]]
)

start web    node app.js  "$WEB_PORT"    web
start api    node app.js  "$API_PORT"    api
start node-a node node.js "$NODE_A_PORT" node-a
start node-b node node.js "$NODE_B_PORT" node-b
wait_for "web (port $WEB_PORT)" http_ok "$WEB_PORT"
wait_for "api (port $API_PORT)" http_ok "$API_PORT"
wait_for "node-a (port $NODE_A_PORT)" port_busy "$NODE_A_PORT"
wait_for "node-b (port $NODE_B_PORT)" port_busy "$NODE_B_PORT"

# A short grace period: the Socket.IO nodes are stopped at the same time and
# close their connections themselves.
start sluice "$SLUICE_BIN" run --config "$CONFIG" --grace 3s
wait_for "sluice (HTTP on port $PUBLIC_PORT)" http_ok "$PUBLIC_PORT"
wait_for "sluice (Flash policy on port $POLICY_PORT)" policy_ok "$POLICY_PORT"

cat <<EOF

  Open       http://127.0.0.1:$PUBLIC_PORT/          (page from \`web\`, Socket.IO through sluice)
  API host   http://api.localhost:$PUBLIC_PORT/whoami  (or: curl -H 'Host: api.localhost' http://127.0.0.1:$PUBLIC_PORT/whoami)
  Headers    curl http://127.0.0.1:$PUBLIC_PORT/whoami
  Flash      printf '<policy-file-request/>\\0' | nc -q1 127.0.0.1 $PUBLIC_PORT   (or port $POLICY_PORT)
  Test       node e2e.mjs   (in $here)

  Ctrl-C stops everything.

EOF

# Run until Ctrl-C / SIGTERM, or until any process exits on its own.
set +e
wait -n "${pids[@]}"
code=$?
say "a process exited on its own (status $code)"
stop_all 1
