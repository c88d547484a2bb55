#!/usr/bin/env bash
# Side-by-side benchmark: varde vs prometheus-blackbox-exporter doing the same
# HTTP and HTTPS checks (fresh connection, full TLS handshake) against a local
# server, plus varde's processing-phase accuracy at a fixed check rate.
# See bench/README.md. Usage: bash bench/run.sh
#
# Knobs (environment): ROUNDS HTTP_CHECKS HTTPS_CHECKS CONCURRENCY WARMUP
# ACCURACY_RATE ACCURACY_SECONDS ACCURACY_DELAY_MS ACCURACY_HTTPS
# SERVER_THREADS BB_PORT BENCH_DIR
set -euo pipefail

ROUNDS=${ROUNDS:-5}
HTTP_CHECKS=${HTTP_CHECKS:-20000}
HTTPS_CHECKS=${HTTPS_CHECKS:-5000}
CONCURRENCY=${CONCURRENCY:-32}
WARMUP=${WARMUP:-200}
ACCURACY_RATE=${ACCURACY_RATE:-1000}
ACCURACY_SECONDS=${ACCURACY_SECONDS:-10}
ACCURACY_DELAY_MS=${ACCURACY_DELAY_MS:-20}
ACCURACY_HTTPS=${ACCURACY_HTTPS:-1}
SERVER_THREADS=${SERVER_THREADS:-1}
BB_PORT=${BB_PORT:-19115}
BENCH_DIR=${BENCH_DIR:-/tmp/varde-bench}
BLACKBOX=/usr/bin/prometheus-blackbox-exporter

cd "$(dirname "$0")/.."
log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- blackbox_exporter from Debian --------------------------------------------
if [ ! -x "$BLACKBOX" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    log "installing prometheus-blackbox-exporter (apt-get)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        prometheus-blackbox-exporter >/dev/null
fi
BB_VERSION=$("$BLACKBOX" --version 2>&1 | head -n1 || true)

# --- build --------------------------------------------------------------------
log "cargo build --release --examples"
cargo build --release --examples --quiet
BIN=target/release/examples
CLIENT=$BIN/bench_client

mkdir -p "$BENCH_DIR"
rm -f "$BENCH_DIR"/*.json "$BENCH_DIR"/*.log "$BENCH_DIR"/ca.pem

SERVER_PID=""
BB_PID=""
cleanup() {
    local pid
    for pid in $BB_PID $SERVER_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $BB_PID $SERVER_PID; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- target server (own process: its CPU is never counted) ----------------------
# Every phase gets its own pair of listening ports (see bench/README.md, TIME_WAIT).
LISTENERS=$((2 * ROUNDS + 1))
"$BIN/bench_server" --ca-out "$BENCH_DIR/ca.pem" --threads "$SERVER_THREADS" --listeners "$LISTENERS" \
    >"$BENCH_DIR/server.out" 2>"$BENCH_DIR/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    [ -s "$BENCH_DIR/server.out" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "bench_server exited: $(cat "$BENCH_DIR/server.log")"
    sleep 0.1
done
READY=$(head -n1 "$BENCH_DIR/server.out")
read -r -a HTTP_PORTS <<<"$(sed -n 's/.*"http_ports":\[\([0-9,]*\)\].*/\1/p' <<<"$READY" | tr , ' ')"
read -r -a HTTPS_PORTS <<<"$(sed -n 's/.*"https_ports":\[\([0-9,]*\)\].*/\1/p' <<<"$READY" | tr , ' ')"
[ "${#HTTP_PORTS[@]}" -eq "$LISTENERS" ] && [ "${#HTTPS_PORTS[@]}" -eq "$LISTENERS" ] ||
    die "bench_server did not report its ports: $READY"
NEXT_PORT=0 # index of the next unused listener pair
STATS="http://127.0.0.1:${HTTP_PORTS[0]}"
log "bench_server pid $SERVER_PID: $READY"

# --- accuracy: processing phase vs the server's own measured delay --------------
# Run first, on a quiet machine and a clean ephemeral port space; blackbox
# is not started yet.
url="http://127.0.0.1:${HTTP_PORTS[$NEXT_PORT]}/delay?ms=$ACCURACY_DELAY_MS"
log "accuracy http: $ACCURACY_RATE checks/s for ${ACCURACY_SECONDS}s against $url"
"$CLIENT" accuracy --url "$url" --stats-url "$STATS" --server-pid "$SERVER_PID" \
    --rate "$ACCURACY_RATE" --seconds "$ACCURACY_SECONDS" --label http \
    >"$BENCH_DIR/accuracy_http.json" || log "accuracy http run had failures"
if [ "$ACCURACY_HTTPS" = 1 ]; then
    url="https://127.0.0.1:${HTTPS_PORTS[$NEXT_PORT]}/delay?ms=$ACCURACY_DELAY_MS"
    log "accuracy https: $ACCURACY_RATE checks/s for ${ACCURACY_SECONDS}s against $url"
    "$CLIENT" accuracy --url "$url" --ca "$BENCH_DIR/ca.pem" \
        --stats-url "$STATS" --server-pid "$SERVER_PID" --rate "$ACCURACY_RATE" --seconds "$ACCURACY_SECONDS" --label https \
        >"$BENCH_DIR/accuracy_https.json" || log "accuracy https run had failures"
fi
NEXT_PORT=$((NEXT_PORT + 1))

# --- blackbox_exporter ----------------------------------------------------------
if (exec 3<>"/dev/tcp/127.0.0.1/$BB_PORT") 2>/dev/null; then
    die "127.0.0.1:$BB_PORT is already in use; set BB_PORT"
fi
sed "s#/tmp/varde-bench/ca.pem#$BENCH_DIR/ca.pem#g" bench/blackbox.yml >"$BENCH_DIR/blackbox.yml"
"$BLACKBOX" --config.file="$BENCH_DIR/blackbox.yml" \
    --web.listen-address="127.0.0.1:$BB_PORT" >"$BENCH_DIR/blackbox.log" 2>&1 &
BB_PID=$!
"$CLIENT" get --url "http://127.0.0.1:$BB_PORT/-/healthy" --wait-secs 10 >/dev/null ||
    die "blackbox_exporter did not start: $(cat "$BENCH_DIR/blackbox.log")"
log "blackbox_exporter pid $BB_PID on 127.0.0.1:$BB_PORT ($BB_VERSION)"

probe_url() { echo "http://127.0.0.1:$BB_PORT/probe?module=$1&target=$2"; }

# --- throughput: same checks, same concurrency, alternating, ROUNDS times --------
# Each (round, prober) uses a fresh server port pair.
target() { # proto port-index
    if [ "$1" = http ]; then
        echo "http://127.0.0.1:${HTTP_PORTS[$2]}/"
    else
        echo "https://127.0.0.1:${HTTPS_PORTS[$2]}/"
    fi
}
for round in $(seq "$ROUNDS"); do
    for proto in http https; do
        if [ "$proto" = http ]; then
            n=$HTTP_CHECKS module=http_2xx ca=()
        else
            n=$HTTPS_CHECKS module=https_2xx ca=(--ca "$BENCH_DIR/ca.pem")
        fi
        url=$(target "$proto" "$NEXT_PORT")
        log "round $round/$ROUNDS $proto: varde, $n checks, concurrency $CONCURRENCY, $url"
        "$CLIENT" throughput --url "$url" "${ca[@]}" --checks "$n" \
            --concurrency "$CONCURRENCY" --warmup "$WARMUP" --label "$proto" \
            >>"$BENCH_DIR/varde_$proto.json" || log "varde $proto run had failures"
        url=$(target "$proto" $((NEXT_PORT + 1)))
        log "round $round/$ROUNDS $proto: blackbox_exporter, $n probes, concurrency $CONCURRENCY, $url"
        "$CLIENT" get --url "$STATS/reset" >/dev/null
        "$CLIENT" blackbox --url "$(probe_url "$module" "$url")" --pid "$BB_PID" \
            --requests "$n" --concurrency "$CONCURRENCY" --warmup "$WARMUP" --label "$proto" \
            >>"$BENCH_DIR/blackbox_$proto.json" || log "blackbox $proto run had failures"
        "$CLIENT" get --url "$STATS/stats" >"$BENCH_DIR/server_${proto}_blackbox.json"
    done
    NEXT_PORT=$((NEXT_PORT + 2))
done

echo "varde $(git describe --always --dirty 2>/dev/null || echo '?') vs $BB_VERSION;" \
    "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1));" \
    "server: bench_server, $SERVER_THREADS worker thread(s); raw results in $BENCH_DIR"
"$CLIENT" report --dir "$BENCH_DIR"
