#!/usr/bin/env bash
# sluice, HAProxy and nginx side by side on this machine, in front of the same
# loopback backend, with equivalent configs (templates in bench/compare/).
# Prints one Markdown table of figures and ratios: every rate comes with the
# proxy's CPU per unit (user+system of its processes from /proc/PID/stat,
# divided by requests, connections, handshakes or GiB), every memory figure
# in bytes per connection.
#
# Usage: bench/compare.sh [TEST...] [--quick] [--mib N] [--duration S] [--threads "1 2"]
#                         [--ws-counts "1000 10000"] [--concurrency N]
#                         [--repeat N] [--plugin-bench] [--only LIST] [--keep]
#
#   TEST...          run only these: relay conn keepalive flash tls ws idle
#                    (e.g. `bench/compare.sh tls idle`; default all)
#   --quick          short run: 256 MiB relays, 3 s per rate
#   --mib N          MiB per direction for the relay (default 2048)
#   --duration S     seconds per rate measurement (default 10)
#   --threads LIST   worker threads / processes to try (default "1 2")
#   --ws-counts LIST idle connection counts, WebSocket and keep-alive (default "1000 10000"; capped by the fd limit)
#   --concurrency N  connections in flight for the rate tests and wrk (default 64)
#   --repeat N       run the throughput and rate tests N times, interleaved; the table shows medians
#   --plugin-bench   also run `cargo bench --bench plugin` (slow) and add its medians
#   --only LIST      the same as TEST..., comma-separated: relay,conn,keepalive,flash,tls,ws,idle
#   --cert KIND      the certificate of all three proxies: ecdsa (P-256, default) or rsa (2048)
#   --keep           keep the temp dir (configs, logs, raw outputs)
#
# Run as root on Debian: missing haproxy, nginx (with libnginx-mod-stream) and
# wrk are installed with apt-get. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# How sluice is told its number of worker threads: `sluice run --threads N`.
# With SLUICE_THREADS_FLAG="" it falls back to tokio's TOKIO_WORKER_THREADS.
SLUICE_THREADS_FLAG="${SLUICE_THREADS_FLAG---threads}"
SLUICE_THREADS_ENV="${SLUICE_THREADS_ENV:-TOKIO_WORKER_THREADS}"

MIB=2048
DURATION=10
THREADS="1 2"
WS_COUNTS="1000 10000"
CONCURRENCY=64
REPEAT=1
PLUGIN_BENCH=0
KEEP=0
CERT=ecdsa
ONLY="relay,conn,keepalive,flash,tls,ws,idle"
TESTS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) MIB=256; DURATION=3 ;;
        --mib) MIB="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --ws-counts) WS_COUNTS="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --repeat) REPEAT="$2"; shift ;;
        --plugin-bench) PLUGIN_BENCH=1 ;;
        --haproxy-splice) ;; # HAProxy with splice-auto is now always its own column
        --only) ONLY="$2"; shift ;;
        --keep) KEEP=1 ;;
        --cert) CERT="$2"; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        relay|conn|keepalive|flash|tls|ws|idle) TESTS+=("$1") ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ ${#TESTS[@]} -gt 0 ]]; then ONLY=$(IFS=,; echo "${TESTS[*]}"); fi
wants() { [[ ",$ONLY," == *",$1,"* ]]; }
log() { echo "[compare] $*" >&2; }

# --- tools ------------------------------------------------------------------
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
command -v wrk >/dev/null || missing+=(wrk)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
fi
# Debian starts the packaged services; they are not ours to stop, and they
# listen on other ports, so they are left alone.

log "building sluice and loadgen (release)"
cargo build --release --locked --quiet -p sluice -p loadgen || { echo "build failed" >&2; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=$TARGET_DIR/release/sluice
LOADGEN=$TARGET_DIR/release/loadgen

# --- file descriptors -------------------------------------------------------
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# A proxied WebSocket costs the proxy two descriptors (client and backend side);
# keep 2000 spare: with 1000, nginx (1 worker, limit 20000) already logged
# "worker_connections are not enough, reusing connections" and reset ~2% of them.
WS_MAX=$(( (NOFILE - 2000) / 2 ))
# HAProxy refuses to start if 2 * maxconn + its pipes and listeners exceed the limit.
MAXCONN=$(( (NOFILE - 1024) / 2 ))
log "open files limit $NOFILE: at most $WS_MAX proxied connections per proxy"

# --- workspace --------------------------------------------------------------
DIR=$(mktemp -d /tmp/sluice-compare.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $KEEP == 1 ]]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
mkdir -p "$DIR/nginx-tmp"
RESULTS=$DIR/results.tsv
NOTES=$DIR/notes.txt
: > "$RESULTS"; : > "$NOTES"
export RUST_BACKTRACE=0

case $CERT in
    ecdsa) KEY_ARGS=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) KEY_ARGS=(-newkey rsa:2048) ;;
    *) echo "--cert $CERT: expected ecdsa or rsa" >&2; exit 2 ;;
esac
openssl req -x509 "${KEY_ARGS[@]}" -nodes -days 2 \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" -subj /CN=bench.local \
    -addext subjectAltName=DNS:bench.local 2>/dev/null
cat "$DIR/cert.pem" "$DIR/key.pem" > "$DIR/combined.pem"

mapfile -t PORTS < <("$LOADGEN" free-ports 11)
[[ ${#PORTS[@]} == 11 ]] || { echo "could not find free ports" >&2; exit 1; }
BACKEND_PORT=${PORTS[0]} SLUICE_PORT=${PORTS[1]}
HAPROXY_RELAY=${PORTS[2]} HAPROXY_INSPECT=${PORTS[3]} HAPROXY_HTTP=${PORTS[4]} HAPROXY_TLS=${PORTS[5]}
NGINX_RELAY=${PORTS[6]} NGINX_FLASH=${PORTS[7]} NGINX_HTTP=${PORTS[8]} NGINX_TLS=${PORTS[9]}
HAPROXY_SPLICE=${PORTS[10]}
FLASH_POLICY='<cross-domain-policy><allow-access-from domain="*" to-ports="*"/></cross-domain-policy>'

render() { # template output [threads]
    sed -e "s|@DIR@|$DIR|g" -e "s|@THREADS@|${3:-1}|g" -e "s|@NOFILE@|$NOFILE|g" \
        -e "s|@MAXCONN@|$MAXCONN|g" -e "s|@WORKER_CONNECTIONS@|$((NOFILE - 128))|g" \
        -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" -e "s|@SLUICE_PORT@|$SLUICE_PORT|g" \
        -e "s|@HAPROXY_RELAY@|$HAPROXY_RELAY|g" -e "s|@HAPROXY_INSPECT@|$HAPROXY_INSPECT|g" \
        -e "s|@HAPROXY_HTTP@|$HAPROXY_HTTP|g" -e "s|@HAPROXY_TLS@|$HAPROXY_TLS|g" \
        -e "s|@NGINX_RELAY@|$NGINX_RELAY|g" -e "s|@NGINX_FLASH@|$NGINX_FLASH|g" \
        -e "s|@NGINX_HTTP@|$NGINX_HTTP|g" -e "s|@NGINX_TLS@|$NGINX_TLS|g" \
        -e "s|@FLASH_POLICY@|$FLASH_POLICY|g" -e "s|@HAPROXY_SPLICE@|$HAPROXY_SPLICE|g" "$ROOT/bench/compare/$1" > "$DIR/$2"
}
render flash.lua.in flash.lua

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# --- processes --------------------------------------------------------------
"$LOADGEN" --threads 2 backend --port "$BACKEND_PORT" > "$DIR/backend.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND_PORT" "${PIDS[0]}" || { echo "the backend did not start: $(cat "$DIR/backend.log")" >&2; exit 1; }

PROXY_PID=""
start_proxy() { # name threads
    local name=$1 threads=$2 port
    case "$name" in
        sluice)
            render sluice.toml.in sluice.toml "$threads"
            local flag=()
            [[ -n $SLUICE_THREADS_FLAG ]] && flag=("$SLUICE_THREADS_FLAG" "$threads")
            env SLUICE_LOG=warn "$SLUICE_THREADS_ENV=$threads" \
                "$SLUICE" run --config "$DIR/sluice.toml" --grace 1s "${flag[@]}" \
                >> "$DIR/sluice.log" 2>&1 &
            PROXY_PID=$!; port=$SLUICE_PORT ;;
        haproxy)
            render haproxy.cfg.in "haproxy-$threads.cfg" "$threads"
            haproxy -db -f "$DIR/haproxy-$threads.cfg" >> "$DIR/haproxy.log" 2>&1 &
            PROXY_PID=$!; port=$HAPROXY_HTTP ;;
        nginx)
            render nginx.conf.in "nginx-$threads.conf" "$threads"
            nginx -e "$DIR/nginx-error.log" -c "$DIR/nginx-$threads.conf" >> "$DIR/nginx.log" 2>&1 &
            PROXY_PID=$!; port=$NGINX_HTTP ;;
    esac
    PIDS+=("$PROXY_PID")
    if ! wait_port "$port" "$PROXY_PID"; then
        echo "- $name, threads=$threads, did not start: $(tail -n 3 "$DIR/$name.log" | tr '\n' ' ')" >> "$NOTES"
        log "$name did not start (see the notes under the table)"
        return 1
    fi
}
forget() { # pid: it has exited, never signal that number again
    local keep=() pid
    for pid in "${PIDS[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    PIDS=("${keep[@]}")
}
stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    forget "$PROXY_PID"
    PROXY_PID=""
}
# The proxy's memory: the process and its children (nginx workers), in KiB.
rss_kib() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$(( total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) ))
    done
    echo "$total"
}

# The proxy's CPU so far (user + system, the process and its children), in clock ticks.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
        total=$(( total + $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0) ))
    done
    echo "$total"
}
CPU_START=0
cpu_start() { [[ -n $PROXY_PID ]] && CPU_START=$(cpu_ticks "$PROXY_PID") || CPU_START=""; }
# Proxy CPU since cpu_start, per unit: cpu_per threads metric unit target count scale
# (scale: 1e6 for µs, 1e3 for ms, "rate" for units per CPU-second).
cpu_per() {
    local t=$1 metric=$2 unit=$3 target=$4 count=$5 scale=$6 ticks
    [[ -z $CPU_START || -z $PROXY_PID || -z $count ]] && return 0
    ticks=$(( $(cpu_ticks "$PROXY_PID") - CPU_START ))
    record "$t" "$metric" "$unit" "$target" "$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$count" -v s="$scale" '
        BEGIN { sec = t / hz; if (n + 0 <= 0) exit; if (s == "rate") { if (sec > 0) printf "%.0f", n / sec } else printf "%.1f", sec * s / n }')"
}

# Addresses per test and proxy ("" = not applicable).
addr_for() { # test proxy
    local p=""
    case "$1:$2" in
        relay:direct|conn:direct|keepalive:direct|ws:direct) p=$BACKEND_PORT ;;
        *:sluice) p=$SLUICE_PORT ;;
        relay:haproxy) p=$HAPROXY_RELAY ;;
        relay:haproxy-splice) p=$HAPROXY_SPLICE ;;
        conn:haproxy|flash:haproxy) p=$HAPROXY_INSPECT ;;
        keepalive:haproxy|ws:haproxy|idle:haproxy) p=$HAPROXY_HTTP ;;
        tls:haproxy) p=$HAPROXY_TLS ;;
        relay:nginx) p=$NGINX_RELAY ;;
        flash:nginx) p=$NGINX_FLASH ;;
        conn:nginx|keepalive:nginx|ws:nginx|idle:nginx) p=$NGINX_HTTP ;;
        tls:nginx) p=$NGINX_TLS ;;
    esac
    [[ -n $p ]] && echo "127.0.0.1:$p"
}

record() { # threads metric unit target value
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RESULTS"
}
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" | head -1; }
to_ms() { # wrk latency like 812.00us, 1.20ms, 1.01s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

# Run loadgen; print its stdout. Failures and errors become notes under the table.
lg() { # label loadgen-args...
    local label=$1 out status=0; shift
    out=$("$LOADGEN" "$@" 2>"$DIR/lg.err") || status=$?
    if [[ $status != 0 ]] || grep -q 'errors=[1-9]' <<<"$out"; then
        echo "- $label: $(grep -v '^relay' <<<"$out" | tr '\n' ' ')$(head -c 300 "$DIR/lg.err" | tr '\n' ' ')" >> "$NOTES"
    fi
    cat "$DIR/lg.err" >> "$DIR/loadgen.err"
    echo "$out"
}

run_tests() { # threads target (direct|sluice|haproxy|haproxy-splice|nginx)
    local t=$1 target=$2 addr out ok
    if wants relay && addr=$(addr_for relay "$target"); then
        for dir in upload download both; do
            cpu_start
            out=$(lg "relay $dir, $target, threads=$t" relay --addr "$addr" --mib "$MIB" --direction "$dir")
            record "$t" "relay $dir, $MIB MiB" "MiB/s" "$target" "$(grep "direction=$dir " <<<"$out" | field mibps)"
            local mib=$MIB; [[ $dir == both ]] && mib=$((2 * MIB))
            [[ -n $(field mibps <<<"$out") ]] && cpu_per "$t" "relay $dir: proxy CPU per GiB" "ms (lower better)" "$target" \
                "$(awk -v m="$mib" 'BEGIN { print m / 1024 }')" 1e3
        done
    fi
    if wants conn && addr=$(addr_for conn "$target"); then
        cpu_start
        out=$(lg "conn-rate, $target, threads=$t" conn-rate --addr "$addr" --duration "${DURATION}s" --concurrency "$CONCURRENCY")
        record "$t" "new conns/s, HTTP/1.0 sniffed + routed" "conn/s" "$target" "$(field rate <<<"$out")"
        cpu_per "$t" "new conns: proxy CPU per connection" "µs (lower better)" "$target" "$(field ok <<<"$out")" 1e6
    fi
    if wants keepalive && addr=$(addr_for keepalive "$target"); then
        cpu_start
        out=$(wrk -t 2 -c "$CONCURRENCY" -d "${DURATION}s" --latency "http://$addr/" 2>&1) || out=""
        echo "$target/$t: $out" >> "$DIR/wrk.log"
        record "$t" "keep-alive HTTP/1.1 req/s (wrk -c$CONCURRENCY)" "req/s" "$target" \
            "$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")"
        cpu_per "$t" "keep-alive: proxy CPU per request" "µs (lower better)" "$target" \
            "$(awk '/requests in/ {print $1}' <<<"$out")" 1e6
        record "$t" "keep-alive latency p50" "ms (lower better)" "$target" \
            "$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
        record "$t" "keep-alive latency p99" "ms (lower better)" "$target" \
            "$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
        if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
            echo "- wrk, $target, threads=$t: $(grep 'Non-2xx\|Socket errors' <<<"$out" | tr '\n' ' ')" >> "$NOTES"
        fi
    fi
    if wants flash && addr=$(addr_for flash "$target"); then
        cpu_start
        out=$(lg "flash-rate, $target, threads=$t" flash-rate --addr "$addr" --duration "${DURATION}s" --concurrency "$CONCURRENCY")
        record "$t" "Flash policy replies/s" "conn/s" "$target" "$(field rate <<<"$out")"
        cpu_per "$t" "Flash: proxy CPU per reply" "µs (lower better)" "$target" "$(field ok <<<"$out")" 1e6
    fi
    if wants tls && addr=$(addr_for tls "$target"); then
        # Full TLS 1.3; TLS 1.3 resumed with a ticket; TLS 1.2 resumed. Each
        # connection then sends one HTTP/1.0 request, read to the close.
        local kind label
        for kind in none tls13 tls12; do
            case $kind in
                none) label="TLS 1.3 full handshakes" ;;
                tls13) label="TLS 1.3 resumed handshakes (tickets)" ;;
                tls12) label="TLS 1.2 resumed handshakes" ;;
            esac
            cpu_start
            out=$(lg "tls-rate --resume $kind, $target, threads=$t" tls-rate --addr "$addr" --duration "${DURATION}s" \
                --concurrency "$CONCURRENCY" --resume "$kind")
            ok=$(field ok <<<"$out")
            record "$t" "$label/s (+1 HTTP/1.0 req)" "conn/s" "$target" "$(field rate <<<"$out")"
            cpu_per "$t" "$label per proxy CPU-second" "handshakes/CPU-s" "$target" "$ok" rate
            if [[ $kind != none && -n $ok ]] && (( ok > 0 )); then
                record "$t" "$label: share resumed" "%" "$target" \
                    "$(awk -v r="$(field resumed <<<"$out")" -v n="$ok" 'BEGIN { printf "%.0f", 100 * r / n }')"
            fi
        done
    fi
}

# The kernel's TCP socket buffers, all sockets of the machine, in pages (/proc/net/sockstat "mem").
sock_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }

# Memory per idle connection: fresh proxy, one warm-up connection, baseline
# RSS, N idle connections (WebSockets after the 101, or keep-alive HTTP/1.1
# connections after one request each), RSS again; (after - before) / N, in
# bytes. The kernel's socket memory (every socket: client, proxy, backend)
# is reported on its own row, from /proc/net/sockstat.
idle_memory() { # threads proxy count kind (ws|idle)
    local t=$1 proxy=$2 n=$3 kind=$4 addr before after ready fifo=$DIR/ws.ctl label loadgen_kind sock_before sock_after
    case $kind in
        ws) label="idle WebSocket after the 101"; loadgen_kind=websocket ;;
        idle) label="idle keep-alive HTTP connection"; loadgen_kind=keepalive ;;
    esac
    addr=$(addr_for "$kind" "$proxy")
    if ! start_proxy "$proxy" "$t"; then
        stop_proxy
        return 0
    fi
    "$LOADGEN" --threads 1 ws-idle --kind "$loadgen_kind" --addr "$addr" --count 1 --hold 1ms > /dev/null 2>>"$DIR/loadgen.err" </dev/null || true
    sleep 0.5
    before=$(rss_kib "$PROXY_PID")
    sock_before=$(sock_pages)
    rm -f "$fifo"; mkfifo "$fifo"
    "$LOADGEN" --threads 2 ws-idle --kind "$loadgen_kind" --addr "$addr" --count "$n" --hold 300s < "$fifo" > "$DIR/ws.out" 2>"$DIR/ws.err" &
    local ws_pid=$!
    PIDS+=("$ws_pid")
    exec 9>"$fifo"
    for _ in $(seq 1200); do
        grep -q '^ready' "$DIR/ws.out" && break
        kill -0 "$ws_pid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 1
    after=$(rss_kib "$PROXY_PID")
    sock_after=$(sock_pages)
    ready=$(grep '^ready' "$DIR/ws.out" || echo "ready open=0")
    exec 9>&-
    wait "$ws_pid" 2>/dev/null || true
    forget "$ws_pid"
    local open; open=$(field open <<<"$ready")
    [[ $open == "$n" ]] || echo "- $kind, $proxy x$n, threads=$t: $ready $(head -c 300 "$DIR/ws.err" | tr '\n' ' ')" >> "$NOTES"
    cat "$DIR/ws.err" >> "$DIR/loadgen.err"
    if [[ ${open:-0} -gt 0 ]]; then
        record "$t" "$label @ $n: RSS per connection" "bytes (lower better)" "$proxy" \
            "$(awk -v a="$after" -v b="$before" -v n="$open" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')"
        record "$t" "$label @ $n: kernel TCP memory per connection, all sockets" "bytes (lower better)" "$proxy" \
            "$(awk -v a="$sock_after" -v b="$sock_before" -v n="$open" -v p="$(getconf PAGESIZE)" 'BEGIN { printf "%.0f", (a - b) * p / n }')"
    else
        record "$t" "$label @ $n: RSS per connection" "bytes (lower better)" "$proxy" ""
    fi
    stop_proxy
}

# --- run --------------------------------------------------------------------
log "temp dir $DIR; backend 127.0.0.1:$BACKEND_PORT; $MIB MiB relays, ${DURATION}s rates, threads: $THREADS, rounds: $REPEAT"
for t in $THREADS; do
    # Repetitions go round all four targets, so a change in background load
    # hits each of them alike; the table shows the median.
    for r in $(seq "$REPEAT"); do
        log "threads=$t, round $r/$REPEAT: direct"
        run_tests "$t" direct
        for proxy in sluice haproxy nginx; do
            log "threads=$t, round $r/$REPEAT: $proxy"
            if start_proxy "$proxy" "$t"; then
                run_tests "$t" "$proxy"
                # HAProxy's relay with `option splice-auto`: another frontend of the same process.
                if [[ $proxy == haproxy ]] && wants relay; then
                    saved=$ONLY; ONLY=relay; run_tests "$t" haproxy-splice; ONLY=$saved
                fi
            fi
            stop_proxy
        done
    done
    for kind in ws idle; do
        wants "$kind" || continue
        for n in $WS_COUNTS; do
            (( n > WS_MAX )) && { log "$kind: $n idle connections need $((2 * n)) descriptors, limit $NOFILE: using $WS_MAX"; n=$WS_MAX; }
            for proxy in sluice haproxy nginx; do
                log "threads=$t: $proxy, $n idle connections ($kind)"
                idle_memory "$t" "$proxy" "$n" "$kind"
            done
        done
    done
done

if [[ $PLUGIN_BENCH == 1 ]]; then
    log "cargo bench --bench plugin (slow)"
    cargo bench --locked -p sluice --bench plugin 2>/dev/null | tee "$DIR/plugin-bench.txt" >/dev/null || true
    # criterion prints the name, then `time: [low median high]` (same line or the next).
    awk '/^sniff-decision\// { name = $1 } /time:/ { sub(/.*time: *\[/, ""); split($0, v, " "); if (name != "") print name "\t" v[3] " " v[4]; name = "" }' \
        "$DIR/plugin-bench.txt" | while IFS=$'\t' read -r name median; do
        record "-" "plugin $name (criterion median)" "$(cut -d' ' -f2 <<<"$median")" sluice "$(cut -d' ' -f1 <<<"$median")"
    done
fi

# --- the table --------------------------------------------------------------
echo
echo "sluice vs HAProxy $(haproxy -v | awk 'NR==1 {print $3}') vs nginx $(nginx -v 2>&1 | sed 's|.*/||'), $(nproc) CPUs, $(date -u +%Y-%m-%d), loopback"
echo
awk -F'\t' '
    {
        key = $1 SUBSEP $2; if (!(key in seen)) { seen[key] = 1; order[++n] = key; unit[key] = $3 }
        if ($5 != "") { all[key, $4] = ((key, $4) in all) ? all[key, $4] " " $5 : $5 }
    }
    function median(list,   v, c, i, j, x) {
        if (list == "") return ""
        c = split(list, v, " ")
        for (i = 2; i <= c; i++) { x = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
        return c % 2 ? v[(c + 1) / 2] : sprintf("%.6g", (v[c / 2] + v[c / 2 + 1]) / 2)
    }
    function cell(v) { return v == "" ? "n/a" : v }
    function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "" : sprintf("%.2f", a / b) }
    END {
        print "| threads | figure | unit | direct | sluice | haproxy | haproxy splice | nginx | sluice/haproxy | sluice/haproxy splice | sluice/nginx | sluice/direct |"
        print "|---|---|---|---|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, p, SUBSEP)
            d = median(all[k, "direct"]); s = median(all[k, "sluice"]); h = median(all[k, "haproxy"]); x = median(all[k, "nginx"])
            hs = median(all[k, "haproxy-splice"])
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p[1], p[2], unit[k], cell(d), cell(s), cell(h), cell(hs), cell(x), ratio(s, h), ratio(s, hs), ratio(s, x), ratio(s, d)
        }
    }' "$RESULTS"
echo
echo "direct: client straight to the backend (the physical limit). Flash on nginx: dedicated port that"
echo "answers without reading (no inspection). Ratios are sluice / other: above 1 favours sluice, except"
echo "where the unit says lower is better. Rates count successful exchanges only. Rounds: $REPEAT (medians)."
echo "haproxy splice: HAProxy's TCP relay frontend with \`option splice-auto\` (zero-copy). CPU per unit: user +"
echo "system CPU of the proxy's processes (/proc/PID/stat, ${CLK_TCK} Hz ticks) over the test, divided by its count."
echo "Kernel TCP memory (/proc/net/sockstat) counts every socket on the machine: client, proxy and backend."
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
if [[ -s $NOTES ]]; then
    echo
    echo "Errors during the run:"
    cat "$NOTES"
fi
