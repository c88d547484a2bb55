#!/usr/bin/env bash
# Probe daemon benchmark (issue: probe daemon):
#  1. 10,000 configured HTTP checks at a 30 s interval against local servers:
#     peak RSS, CPU per check, scheduler lag p99 (from varde's own histogram).
#  2. /probe driven by wrk, side by side with prometheus-blackbox-exporter on
#     the same target: probes per CPU-second of each exporter process.
# Usage: bash bench/probe.sh      (knobs: N_CHECKS INTERVAL WARMUP MEASURE WRK_SECONDS WRK_CONNS BENCH_DIR)
set -euo pipefail

N_CHECKS=${N_CHECKS:-10000}
INTERVAL=${INTERVAL:-30s}
WARMUP=${WARMUP:-35}      # seconds before measuring (every check has started once)
MEASURE=${MEASURE:-60}    # seconds measured
WRK_SECONDS=${WRK_SECONDS:-15}
WRK_CONNS=${WRK_CONNS:-16}
BENCH_DIR=${BENCH_DIR:-/tmp/varde-probe-bench}
BLACKBOX=/usr/bin/prometheus-blackbox-exporter

cd "$(dirname "$0")/.."
log() { printf '[probe-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_pkg() { # binary package
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then
        log "installing $2 (apt-get)"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2" >/dev/null
    fi
}
need_pkg wrk wrk
need_pkg "$BLACKBOX" prometheus-blackbox-exporter

log "cargo build --release (varde, bench_server)"
cargo build --release --quiet --bin varde --example bench_server
VARDE=target/release/varde

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/probes" "$BENCH_DIR/modules" "$BENCH_DIR/data"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- targets ---------------------------------------------------------------------
target/release/examples/bench_server --ca-out "$BENCH_DIR/ca.pem" --listeners 8 \
    >"$BENCH_DIR/server.out" 2>"$BENCH_DIR/server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
for _ in $(seq 100); do [ -s "$BENCH_DIR/server.out" ] && break; sleep 0.1; done
read -r -a PORTS <<<"$(sed -n 's/.*"http_ports":\[\([0-9,]*\)\].*/\1/p' "$BENCH_DIR/server.out" | tr , ' ')"
[ "${#PORTS[@]}" -ge 2 ] || die "bench_server did not report its ports"

# --- 10,000 checks ------------------------------------------------------------------
python3 - "$N_CHECKS" "$INTERVAL" "$BENCH_DIR/probes/checks.toml" "${PORTS[@]:1}" <<'EOF'
import sys
n, interval, out, ports = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
with open(out, "w") as f:
    f.write(f'[defaults]\ninterval = "{interval}"\ntimeout = "5s"\nlabels = {{ team = "bench" }}\n\n')
    for i in range(n):
        port = ports[i % len(ports)]
        f.write(f'[[check]]\nname = "c{i:05d}"\ntarget = "http://127.0.0.1:{port}/c/{i}"\n\n')
EOF
cat >"$BENCH_DIR/modules/modules.toml" <<'EOF'
[modules.http_2xx]
kind = "http"
timeout = "5s"
net = { ip_preference = "ip4", ip_fallback = false }
EOF
"$VARDE" validate "$BENCH_DIR/probes" >&2

PROBE_PORT=19490
"$VARDE" probe --config "$BENCH_DIR/probes" --listen "127.0.0.1:$PROBE_PORT" \
    --data-dir "$BENCH_DIR/data" --region bench >"$BENCH_DIR/probe.log" 2>&1 &
PROBE_PID=$!
PIDS+=("$PROBE_PID")

cpu() { # pid -> utime+stime seconds
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
metrics() { curl -sf "http://127.0.0.1:$PROBE_PORT/metrics"; }
for _ in $(seq 100); do metrics >/dev/null 2>&1 && break; sleep 0.1; done
log "varde probe pid $PROBE_PID: $N_CHECKS checks every $INTERVAL; warming up ${WARMUP}s"
sleep "$WARMUP"
metrics >"$BENCH_DIR/metrics0.txt"
CPU0=$(cpu "$PROBE_PID")
log "measuring ${MEASURE}s"
sleep "$MEASURE"
metrics >"$BENCH_DIR/metrics1.txt"
CPU1=$(cpu "$PROBE_PID")
RSS_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$PROBE_PID/status")
kill "$PROBE_PID"; wait "$PROBE_PID" 2>/dev/null || true

python3 - "$BENCH_DIR/metrics0.txt" "$BENCH_DIR/metrics1.txt" "$CPU0" "$CPU1" "$RSS_KIB" "$MEASURE" "$N_CHECKS" <<'EOF'
import re, sys
m0, m1, cpu0, cpu1, rss, measure, n = sys.argv[1:]
def parse(path):
    runs, ok, buckets = 0.0, 0.0, {}
    for line in open(path):
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("varde_checks_total{"):
            runs += float(value)
            if 'result="success"' in name:
                ok += float(value)
        elif name.startswith("varde_scheduler_lag_seconds_bucket{"):
            le = re.search(r'le="([^"]+)"', name).group(1)
            buckets[float("inf") if le == "+Inf" else float(le)] = float(value)
    return runs, ok, buckets
r0, ok0, b0 = parse(m0)
r1, ok1, b1 = parse(m1)
runs, ok = r1 - r0, ok1 - ok0
cpu = float(cpu1) - float(cpu0)
les = sorted(b1)
delta = [(le, b1[le] - b0.get(le, 0.0)) for le in les]
total = delta[-1][1] if delta else 0
p = lambda q: next((le for le, c in delta if c >= q * total), float("nan"))
print(f"== {n} HTTP checks, measured over {measure}s ==")
print(f"runs {runs:.0f} ({runs/float(measure):.0f}/s), successful {ok:.0f}")
print(f"CPU {cpu:.2f} s -> {1e6*cpu/max(runs,1):.0f} µs per check")
print(f"peak RSS {int(rss)/1024:.1f} MiB (target < 64 MiB): {'met' if int(rss) < 64*1024 else 'NOT met'}")
print(f"scheduler lag p50 <= {p(0.5)*1000:.1f} ms, p99 <= {p(0.99)*1000:.1f} ms (bucket upper bounds; target p99 < 10 ms): {'met' if p(0.99) <= 0.010 else 'NOT met'}")
EOF

# --- /probe with wrk: varde vs blackbox_exporter ----------------------------------------
TARGET="http://127.0.0.1:${PORTS[0]}/"
"$VARDE" probe --config "$BENCH_DIR/modules" --listen "127.0.0.1:$PROBE_PORT" \
    --data-dir "$BENCH_DIR/data2" --region bench >"$BENCH_DIR/probe2.log" 2>&1 &
PROBE_PID=$!
PIDS+=("$PROBE_PID")
"$BLACKBOX" --config.file=bench/blackbox.yml --web.listen-address=127.0.0.1:19115 \
    >"$BENCH_DIR/blackbox.log" 2>&1 &
BB_PID=$!
PIDS+=("$BB_PID")
sleep 1
wrk_run() { # name pid url
    local c0 c1 out reqs
    curl -sf "$3" | grep -q '^probe_success 1' || die "$1 /probe does not succeed: $(curl -s "$3" | head -5)"
    c0=$(cpu "$2")
    out=$(wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECONDS}s" "$3")
    c1=$(cpu "$2")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v n="$1" -v r="$reqs" -v a="$c0" -v b="$c1" -v s="$WRK_SECONDS" \
        'BEGIN { printf "%-9s %8d probes in %ss, CPU %.2f s -> %.0f probes per CPU-second\n", n, r, s, b - a, r / (b - a) }'
}
echo "== /probe driven by wrk ($WRK_CONNS connections, ${WRK_SECONDS}s), target $TARGET =="
V=$(wrk_run varde "$PROBE_PID" "http://127.0.0.1:$PROBE_PORT/probe?module=http_2xx&target=$TARGET")
B=$(wrk_run blackbox "$BB_PID" "http://127.0.0.1:19115/probe?module=http_2xx&target=$TARGET")
echo "$V"; echo "$B"
vr=$(awk '{print $(NF-3)}' <<<"$V"); br=$(awk '{print $(NF-3)}' <<<"$B")
awk -v v="$vr" -v b="$br" 'BEGIN { printf "ratio %.2fx (target 3x): %s\n", v / b, (v / b >= 3 ? "met" : "NOT met") }'
