#!/usr/bin/env bash
# Coordinator ingest benchmark (see bench/README.md):
#  a. 10,000 checks x 3 regions pushed at 1,000 results/s for 60 s, like
#     probes pushing every second: the coordinator's CPU (% of one core)
#     and peak RSS;
#  b. results pushed flat out for 20 s: sustained results/s accepted;
#  c. notify latency p50/p99 from the coordinator's own histogram.
# Usage: bash bench/coordinator.sh
#   (knobs: N_CHECKS REGIONS INTERVAL RATE PACED_SECONDS MAX_SECONDS CONCURRENCY
#    BATCH FAILING PORT BENCH_DIR COORDINATOR_BIN)
set -euo pipefail

N_CHECKS=${N_CHECKS:-10000}
REGIONS=${REGIONS:-eu,us,ap}
INTERVAL=${INTERVAL:-30s}
RATE=${RATE:-1000}            # results/s, all regions: 3 x 10,000 / 30 s
PACED_SECONDS=${PACED_SECONDS:-60}
MAX_SECONDS=${MAX_SECONDS:-20}
CONCURRENCY=${CONCURRENCY:-8} # batches in flight in the flat-out run
BATCH=${BATCH:-500}
FAILING=${FAILING:-0.01}      # fraction of checks down in every region
PORT=${PORT:-19480}
BENCH_DIR=${BENCH_DIR:-/tmp/varde-coordinator-bench}
COORDINATOR_BIN=${COORDINATOR_BIN:-target/release/varde} # run as: BIN coordinator --config ...

cd "$(dirname "$0")/.."
log() { printf '[coordinator-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

log "cargo build --release --examples --bin varde"
cargo build --release --quiet --examples --bin varde
VARDE=target/release/varde
INGEST=target/release/examples/bench_ingest
CLIENT=target/release/examples/bench_client
URL="http://127.0.0.1:$PORT"

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/data"
CONFIG="$BENCH_DIR/config"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- config: checks, one down rule, a token per region -----------------------------
"$INGEST" --write-config "$CONFIG" --checks "$N_CHECKS" --regions "$REGIONS" --interval "$INTERVAL"
"$VARDE" validate "$CONFIG" >&2 || die "generated config does not validate"
IFS=, read -r -a REGION_LIST <<<"$REGIONS"
TOKENS=()
for r in "${REGION_LIST[@]}"; do TOKENS+=(--token-file "$CONFIG/$r.token"); done

# --- the coordinator -----------------------------------------------------------------
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "127.0.0.1:$PORT is already in use; set PORT"
fi
"$COORDINATOR_BIN" coordinator --config "$CONFIG" --data-dir "$BENCH_DIR/data" \
    --listen "127.0.0.1:$PORT" >"$BENCH_DIR/coordinator.log" 2>&1 &
COORD_PID=$!
PIDS+=("$COORD_PID")
for i in $(seq 120); do # up to about 60 s
    kill -0 "$COORD_PID" 2>/dev/null ||
        die "coordinator exited: $(tail -n 20 "$BENCH_DIR/coordinator.log")"
    "$CLIENT" get --url "$URL/healthz" --wait-secs 0 >/dev/null 2>&1 && break
    [ "$i" -lt 120 ] || die "coordinator not healthy within 60 s: $(tail -n 20 "$BENCH_DIR/coordinator.log")"
    sleep 0.5
done
log "coordinator pid $COORD_PID on $URL ($N_CHECKS checks, regions $REGIONS)"

cpu() { # pid -> utime+stime seconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }
alive() { kill -0 "$COORD_PID" 2>/dev/null || die "coordinator exited: $(tail -n 20 "$BENCH_DIR/coordinator.log")"; }

# A phase: runs bench_ingest (bounded by `timeout`) and records the
# coordinator's CPU and wall time around it.  phase NAME SECONDS ARGS...
phase() {
    local name=$1 secs=$2 c0 c1 t0 t1 rc=0
    shift 2
    c0=$(cpu "$COORD_PID"); t0=$(now)
    timeout $((secs + 90)) "$INGEST" --url "$URL" "${TOKENS[@]}" --regions "$REGIONS" \
        --checks "$N_CHECKS" --batch "$BATCH" --failing "$FAILING" --duration "${secs}s" "$@" \
        >"$BENCH_DIR/$name.json" || rc=$?
    alive
    c1=$(cpu "$COORD_PID"); t1=$(now)
    echo "$c0 $c1 $t0 $t1 $(hwm_kib "$COORD_PID") $rc" >"$BENCH_DIR/$name.proc"
    [ "$rc" -eq 0 ] || log "$name: bench_ingest exited $rc (see the errors above)"
}

log "a. paced: $RATE results/s for ${PACED_SECONDS}s"
phase paced "$PACED_SECONDS" --rate "$RATE"
log "b. flat out: $CONCURRENCY batches of $BATCH in flight for ${MAX_SECONDS}s"
phase max "$MAX_SECONDS" --max --concurrency "$CONCURRENCY"
log "c. scraping $URL/metrics"
"$CLIENT" get --url "$URL/metrics" --wait-secs 10 >"$BENCH_DIR/metrics.txt" ||
    die "could not scrape $URL/metrics"

python3 - "$BENCH_DIR" "$(git describe --always --dirty 2>/dev/null || echo '?')" "$(nproc)" <<'EOF'
import json, re, sys
d, rev, cpus = sys.argv[1:]
def load(name):
    s = json.loads(open(f"{d}/{name}.json").read().strip().splitlines()[-1])
    c0, c1, t0, t1, hwm, rc = open(f"{d}/{name}.proc").read().split()
    s["coord_cpu_pct"] = 100 * (float(c1) - float(c0)) / (float(t1) - float(t0))
    s["coord_hwm_mib"] = int(hwm) / 1024
    s["rc"] = int(rc)
    return s
paced, flat = load("paced"), load("max")

buckets, count, results_total = {}, None, None
for line in open(f"{d}/metrics.txt"):
    if line.startswith("#") or not line.strip():
        continue
    name, _, value = line.rstrip().rpartition(" ")
    if name.startswith("varde_coordinator_notify_latency_seconds_bucket"):
        le = re.search(r'le="([^"]+)"', name).group(1)
        le = float("inf") if le == "+Inf" else float(le)
        buckets[le] = buckets.get(le, 0.0) + float(value)  # summed over label sets
    elif name.startswith("varde_coordinator_notify_latency_seconds_count"):
        count = (count or 0.0) + float(value)
    elif name.startswith("varde_coordinator_results_total"):
        results_total = (results_total or 0.0) + float(value)

def pct(q):
    les = sorted(buckets)
    total = buckets[les[-1]]
    le = next(le for le in les if buckets[le] >= q * total)
    return "> largest bucket" if le == float("inf") else f"<= {le * 1000:g} ms"

def req(s):
    r = s["request_ms"]
    return f'request p50 {r["p50"]} ms, p99 {r["p99"]} ms' if r["n"] else "no request acknowledged"

def trouble(s):
    bad = [f'{k} {s[k]}' for k in ("lost", "behind", "duplicates") if s[k]]
    return f' ({", ".join(bad)}; exit {s["rc"]})' if bad or s["rc"] else ""

print(f"varde {rev}; {cpus} CPUs; {paced['checks']} checks x {len(paced['regions'])} regions "
      f"({paced['failing_checks']} down everywhere); rule: one down rule, quorum majority; raw results in {d}")
rows = [
    (f"a. paced {paced['target_rate']:g}/s, {paced['duration_s']:g}s",
     f"accepted {paced['accepted']} ({paced['accepted_per_s']:.0f}/s){trouble(paced)}; {req(paced)}"),
    ("   coordinator CPU", f"{paced['coord_cpu_pct']:.1f}% of one core"),
    ("   coordinator peak RSS", f"{paced['coord_hwm_mib']:.1f} MiB (VmHWM)"),
    (f"b. flat out, {flat['duration_s']:g}s, {flat['concurrency']} in flight",
     f"{flat['accepted_per_s']:.0f} results/s accepted ({flat['accepted']} in {flat['wall_s']:.1f}s){trouble(flat)}; {req(flat)}"),
    ("   coordinator CPU", f"{flat['coord_cpu_pct']:.1f}% of one core; bench_ingest {100 * flat['client_cpu_s'] / flat['wall_s']:.0f}%"),
    ("   coordinator peak RSS", f"{flat['coord_hwm_mib']:.1f} MiB (VmHWM, whole run so far)"),
]
if not buckets or not count:
    rows.append(("c. notify latency", "varde_coordinator_notify_latency_seconds absent from /metrics"
                 if not buckets else "no notification recorded (histogram empty)"))
else:
    rows.append(("c. notify latency", f"p50 {pct(0.5)}, p99 {pct(0.99)} over {count:.0f} notifications (bucket upper bounds)"))
sent = paced["accepted"] + flat["accepted"]
rows.append(("   results_total", "varde_coordinator_results_total absent from /metrics" if results_total is None
             else f"{results_total:.0f} counted by the coordinator; {sent} acknowledged to bench_ingest"))
w = max(len(r[0]) for r in rows)
for k, v in rows:
    print(f"{k:<{w}}  {v}")
EOF
