#!/usr/bin/env bash
# Start the whole example: the web app (twice: `web` and `api`), two
# Socket.IO nodes and sluice in front of them, all reached on one port, over
# http:// and https://. Ctrl-C (or SIGTERM) stops everything.
#
#   ./run.sh                       # from any directory
#   SLUICE_BIN=/path/to/sluice ./run.sh
#   SLUICE_LOG=warn,sluice::access=info ./run.sh
#
# - makes a self-signed certificate in certs/ with openssl if there is none
#   (or it expires within a day);
# - writes the Socket.IO nodes' process ids to .run/pids (`node-a=PID`), which
#   e2e.mjs reads to kill a node in its failover check;
# - restarts a Socket.IO node that exits (after RESTART_DELAY seconds, default
#   3), so the demo survives that check; any other process exiting stops all.
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
RESTART_DELAY="${RESTART_DELAY:-3}"
CERT="$here/certs/localhost.pem"
KEY="$here/certs/localhost-key.pem"

say() { printf '[run.sh] %s\n' "$*"; }

command -v node >/dev/null || { say "node is not installed (Node 20+ needed)"; exit 1; }

# The certificate for https://localhost:8080/ and https://127.0.0.1:8080/.
if [[ ! -s "$CERT" || ! -s "$KEY" ]] || ! openssl x509 -checkend 86400 -noout -in "$CERT" >/dev/null 2>&1; then
  command -v openssl >/dev/null || { say "openssl is needed to make certs/localhost.pem"; exit 1; }
  say "making a self-signed certificate for localhost, api.localhost, 127.0.0.1 in certs/"
  mkdir -p "$here/certs"
  if ! out=$(openssl req -x509 -newkey rsa:2048 -sha256 -days 365 -nodes \
      -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,DNS:api.localhost,IP:127.0.0.1" \
      -addext "basicConstraints=critical,CA:FALSE" \
      -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
      -addext "extendedKeyUsage=serverAuth" \
      -keyout "$KEY" -out "$CERT" 2>&1); then
    printf '%s\n' "$out"
    say "openssl could not make the certificate"
    exit 1
  fi
  chmod 600 "$KEY"
fi

if [[ ! -d node_modules/socket.io || ! -d node_modules/socket.io-client || ! -d node_modules/playwright-core ]]; then
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

pids=()                # every process running now, for stop_all and wait
declare -A name_of=()  # pid -> name
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
  rm -f "$here/.run/pids"
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
  name_of[$!]=$name
}

# .run/pids: one "node-a=PID" line per running Socket.IO node, for e2e.mjs.
write_pids() {
  local pid
  mkdir -p "$here/.run"
  : >"$here/.run/pids.tmp"
  for pid in "${!name_of[@]}"; do
    case ${name_of[$pid]} in node-*) echo "${name_of[$pid]}=$pid" >>"$here/.run/pids.tmp" ;; esac
  done
  mv "$here/.run/pids.tmp" "$here/.run/pids"
}
declare -A node_port=([node-a]=$NODE_A_PORT [node-b]=$NODE_B_PORT)
start_node() { # name
  start "$1" node node.js "${node_port[$1]}" "$1"
  write_pids
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
start_node node-a
start_node node-b
wait_for "web (port $WEB_PORT)" http_ok "$WEB_PORT"
wait_for "api (port $API_PORT)" http_ok "$API_PORT"
wait_for "node-a (port $NODE_A_PORT)" http_ok "$NODE_A_PORT"
wait_for "node-b (port $NODE_B_PORT)" http_ok "$NODE_B_PORT"

# A short grace period: the Socket.IO nodes are stopped at the same time and
# close their connections themselves.
start sluice "$SLUICE_BIN" run --config "$CONFIG" --grace 3s
wait_for "sluice (HTTP on port $PUBLIC_PORT)" http_ok "$PUBLIC_PORT"
wait_for "sluice (Flash policy on port $POLICY_PORT)" policy_ok "$POLICY_PORT"

cat <<EOF

  Open       http://127.0.0.1:$PUBLIC_PORT/   or   https://localhost:$PUBLIC_PORT/   (one port; the certificate is
             self-signed: accept the browser's warning, or trust certs/localhost.pem)
  API host   http://api.localhost:$PUBLIC_PORT/whoami  (or: curl -H 'Host: api.localhost' http://127.0.0.1:$PUBLIC_PORT/whoami)
  Headers    curl http://127.0.0.1:$PUBLIC_PORT/whoami
             curl --cacert certs/localhost.pem https://localhost:$PUBLIC_PORT/whoami
  Flash      printf '<policy-file-request/>\\0' | nc -q1 127.0.0.1 $PUBLIC_PORT   (or port $POLICY_PORT)
  Test       node e2e.mjs      node browser.mjs      (in $here)

  Ctrl-C stops everything.

EOF

# Run until Ctrl-C / SIGTERM, or until a process other than a Socket.IO node
# exits on its own. A node that exits (crashed, or killed by e2e.mjs) is
# started again after RESTART_DELAY seconds; meanwhile sluice sends its
# clients to the other node.
set +e
while true; do
  exited=""
  wait -n -p exited "${pids[@]}"
  code=$?
  if [[ -z $exited ]]; then
    say "wait failed (status $code)"
    stop_all 1
  fi
  name=${name_of[$exited]:-unknown}
  unset "name_of[$exited]"
  remaining=()
  for pid in "${pids[@]}"; do [[ $pid == "$exited" ]] || remaining+=("$pid"); done
  pids=("${remaining[@]}")
  case $name in
    node-a|node-b)
      say "$name exited (status $code); starting it again in ${RESTART_DELAY}s"
      write_pids
      sleep "$RESTART_DELAY"
      start_node "$name"
      ;;
    *)
      say "$name exited on its own (status $code)"
      stop_all 1
      ;;
  esac
done
