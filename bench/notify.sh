#!/usr/bin/env bash
# Delivery benchmark (see bench/README.md, "Delivery"):
#  1. latency: LAT_CHECKS incidents fired at LAT_RATE per second, one check
#     per POST, one webhook contact answering at once: receipt at the
#     receiver minus the notification's `at` (the engine's clock when it
#     wrote the outbox row), p50/p90/p99/max; and from the POST that fired
#     the incident to receipt;
#  2. throughput: THR_CHECKS incidents fired in POSTs of THR_BATCH checks,
#     each notification going to two webhook contacts, `fast` (answers at
#     once) and `slow` (answers after SLOW_DELAY), once per value of
#     MAX_IN_FLIGHT (the channels' max_in_flight): when each receiver had
#     everything, messages/s, the most requests the slow receiver held at
#     once, the coordinator's CPU and peak RSS.
# Every notification must arrive exactly once per contact, signed: the
# script exits 1 otherwise (after printing the table).
# Usage: bash bench/notify.sh
#   (knobs: LAT_CHECKS LAT_RATE THR_CHECKS THR_BATCH SLOW_DELAY MAX_IN_FLIGHT
#    MAX_WAIT BENCH_DIR COORDINATOR_BIN)
set -euo pipefail

LAT_CHECKS=${LAT_CHECKS:-300}
LAT_RATE=${LAT_RATE:-20}          # incidents fired per second in phase 1
THR_CHECKS=${THR_CHECKS:-1000}
THR_BATCH=${THR_BATCH:-100}       # checks per POST in phase 2
SLOW_DELAY=${SLOW_DELAY:-100ms}
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-4 16}
MAX_WAIT=${MAX_WAIT:-240}         # seconds a receiver waits for everything
BENCH_DIR=${BENCH_DIR:-/tmp/varde-notify-bench}
COORDINATOR_BIN=${COORDINATOR_BIN:-target/release/varde} # run as: BIN coordinator --config ...

cd "$(dirname "$0")/.."
log() { printf '[notify-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

log "cargo build --release --examples --bin varde"
cargo build --release --quiet --examples --bin varde
VARDE=target/release/varde
NB=target/release/examples/bench_notify
CLIENT=target/release/examples/bench_client

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

VARDE_BENCH_HOOK_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export VARDE_BENCH_HOOK_SECRET

cpu() { # pid -> utime+stime seconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# wait_file FILE SECONDS: until FILE exists and is not empty.
wait_file() {
    local i
    for i in $(seq $(($2 * 10))); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

# receiver DIR NAME DELAY EXPECT: starts one; sets RECV_PID and RECV_PORT.
receiver() {
    local d=$1 name=$2
    "$NB" receiver --port-file "$d/$name.port" --out "$d/$name.jsonl" --delay "$3" \
        --expect "$4" --max-wait "${MAX_WAIT}s" >"$d/$name.summary" 2>"$d/$name.log" &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    wait_file "$d/$name.port" 10 || die "receiver $name did not start: $(cat "$d/$name.log")"
    RECV_PORT=$(cat "$d/$name.port")
}

# phase NAME CHECKS SLOW(0|1) MAX_IN_FLIGHT PUSH_ARGS...
phase() {
    local name=$1 checks=$2 slow=$3 mif=$4 d="$BENCH_DIR/$1" fast_pid slow_pid="" coord addr
    local slow_args=() seq c0 t0 rc=0
    shift 4
    mkdir -p "$d"
    receiver "$d" fast 0ms "$checks"
    fast_pid=$RECV_PID
    if [ "$slow" = 1 ]; then
        receiver "$d" slow "$SLOW_DELAY" "$checks"
        slow_pid=$RECV_PID
        slow_args=(--slow-port "$RECV_PORT")
    fi
    "$NB" write-config "$d/config" --checks "$checks" --fast-port "$(cat "$d/fast.port")" \
        "${slow_args[@]}" --max-in-flight "$mif"
    "$VARDE" validate "$d/config" >"$d/validate.log" 2>&1 ||
        die "generated config does not validate: $(cat "$d/validate.log")"
    NO_COLOR=1 RUST_LOG=info "$COORDINATOR_BIN" coordinator --config "$d/config" \
        --data-dir "$d/data" --listen 127.0.0.1:0 >"$d/coordinator.log" 2>&1 &
    coord=$!
    PIDS+=("$coord")
    addr=""
    for _ in $(seq 200); do # up to about 20 s
        kill -0 "$coord" 2>/dev/null || die "coordinator exited: $(tail -n 20 "$d/coordinator.log")"
        addr=$(grep -o 'listen=[0-9.:]*' "$d/coordinator.log" | head -n1 | cut -d= -f2 || true)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || die "coordinator printed no listen= within 20 s"
    "$CLIENT" get --url "http://$addr/healthz" --wait-secs 20 >/dev/null ||
        die "coordinator not healthy: $(tail -n 20 "$d/coordinator.log")"
    log "$name: coordinator pid $coord on $addr; $checks checks; max_in_flight $mif"

    # First failure of every check (no incident yet: fail_after = 2).
    timeout 120 "$NB" push --url "http://$addr" --token-file "$d/config/eu.token" \
        --checks "$checks" --prime >"$d/prime.json" || die "$name: priming failed"
    seq=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["next_seq"])' "$d/prime.json")
    sleep 1
    c0=$(cpu "$coord")
    t0=$(date +%s%6N)
    timeout 300 "$NB" push --url "http://$addr" --token-file "$d/config/eu.token" \
        --checks "$checks" --seq "$seq" --out "$d/pushes.jsonl" "$@" >"$d/push.json" || rc=$?
    [ "$rc" -eq 0 ] || log "$name: push exited $rc"
    wait "$fast_pid" || log "$name: fast receiver exited $? ($(cat "$d/fast.log"))"
    if [ -n "$slow_pid" ]; then
        wait "$slow_pid" || log "$name: slow receiver exited $? ($(cat "$d/slow.log"))"
    fi
    kill -0 "$coord" 2>/dev/null || die "coordinator exited: $(tail -n 20 "$d/coordinator.log")"
    echo "$c0 $(cpu "$coord") $t0 $(hwm_kib "$coord") $mif $rc" >"$d/proc"
    "$CLIENT" get --url "http://$addr/metrics" --wait-secs 5 >"$d/metrics.txt" ||
        log "$name: could not scrape /metrics"
    kill "$coord" 2>/dev/null || true
    for _ in $(seq 100); do # up to about 10 s for a graceful stop
        kill -0 "$coord" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$coord" 2>/dev/null || true
    wait "$coord" 2>/dev/null || true
}

log "1. latency: $LAT_CHECKS incidents at $LAT_RATE/s, one webhook contact"
phase latency "$LAT_CHECKS" 0 4 --rate "$LAT_RATE"
PHASES=(latency)
for mif in $MAX_IN_FLIGHT; do
    log "2. throughput: $THR_CHECKS incidents in POSTs of $THR_BATCH, fast + slow ($SLOW_DELAY), max_in_flight $mif"
    phase "throughput-$mif" "$THR_CHECKS" 1 "$mif" --batch "$THR_BATCH"
    PHASES+=("throughput-$mif")
done

python3 - "$BENCH_DIR" "$(git describe --always --dirty 2>/dev/null || echo '?')" "$(nproc)" \
    "$SLOW_DELAY" "$THR_BATCH" "${PHASES[@]}" <<'EOF'
import json, os, re, sys
d, rev, cpus, slow_delay, batch, *phases = sys.argv[1:]
problems = []

def jsonl(path):
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []

def pct(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    i = max(1, min(len(v), -(-int(q * len(v) * 1000) // 1000)))
    return v[i - 1]

def dist(v):
    return (f"p50 {pct(v, .5):.1f}  p90 {pct(v, .9):.1f}  p99 {pct(v, .99):.1f}  "
            f"max {max(v) if v else float('nan'):.1f} ms (n={len(v)})")

def metrics(p):
    out = {}
    for line in open(f"{d}/{p}/metrics.txt") if os.path.exists(f"{d}/{p}/metrics.txt") else []:
        m = re.match(r'varde_coordinator_deliveries_total\{(.*)\} (\S+)', line)
        if m:
            lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[lab.get("result", "?")] = out.get(lab.get("result", "?"), 0) + float(m.group(2))
    return out

def receiver(p, name, expected_checks, mif):
    s = json.loads(open(f"{d}/{p}/{name}.summary").read() or "{}") \
        if os.path.exists(f"{d}/{p}/{name}.summary") else {}
    rows = jsonl(f"{d}/{p}/{name}.jsonl")
    checks = {}
    for r in rows:
        checks[r["check"]] = checks.get(r["check"], 0) + 1
    tag = f"{p}/{name}"
    if not s.get("complete"):
        problems.append(f"{tag}: not complete within MAX_WAIT ({s.get('distinct_keys', 0)} of "
                        f"{expected_checks} keys, then 2 s without a request)")
    if s.get("duplicates"):
        problems.append(f"{tag}: {s['duplicates']} duplicate Idempotency-Key(s)")
    if s.get("bad_signatures"):
        problems.append(f"{tag}: {s['bad_signatures']} bad signature(s)")
    if s.get("unreadable"):
        problems.append(f"{tag}: {s['unreadable']} unreadable request(s)")
    if len(rows) != expected_checks or len(checks) != expected_checks or any(n != 1 for n in checks.values()):
        problems.append(f"{tag}: {len(rows)} requests for {len(checks)} checks, expected exactly {expected_checks} x 1")
    if any(r.get("items") != 1 for r in rows):
        problems.append(f"{tag}: digests (items != 1)")
    if mif is not None and s.get("max_in_flight", 0) > mif:
        problems.append(f"{tag}: {s['max_in_flight']} requests in flight > max_in_flight {mif}")
    return s, rows

def proc(p):
    c0, c1, t0, hwm, mif, rc = open(f"{d}/{p}/proc").read().split()
    if int(rc):
        problems.append(f"{p}: push exited {rc}")
    return float(c0), float(c1), int(t0), int(hwm) / 1024, int(mif)

print(f"varde {rev}; {cpus} CPUs; raw results in {d}")
rows = []
for p in phases:
    pushes = jsonl(f"{d}/{p}/pushes.jsonl")
    posted = {r["check"]: r["posted_us"] for r in pushes}
    c0, c1, t0, hwm, mif = proc(p)
    n = len(pushes)
    first_post = min(posted.values()) if posted else t0
    last_ack = max(r["acked_us"] for r in pushes) if pushes else t0
    m = metrics(p)
    mtxt = ", ".join(f"{k} {v:.0f}" for k, v in sorted(m.items()))
    if p == "latency":
        s, got = receiver(p, "fast", n, None)
        lat = [r["latency_ms"] for r in got if r.get("latency_ms") is not None]
        e2e = [(r["recv_us"] - posted[r["check"]]) / 1e3 for r in got if r["check"] in posted]
        rate = n / max(1e-9, (last_ack - first_post) / 1e6)
        rows += [
            (f"1. latency, {n} incidents at {rate:.1f}/s", f"one webhook contact answering at once; {mtxt}"),
            ("   outbox row -> receipt", dist(lat) + ("  (target p99 < 20 ms: " + ("met" if pct(lat, .99) < 20 else "NOT met") + ")")),
            ("   POST sent -> receipt", dist(e2e)),
            ("   coordinator", f"CPU {100 * (c1 - c0) / max(1e-9, (s.get('last_us', t0) - t0) / 1e6):.1f}% of one core; peak RSS {hwm:.1f} MiB"),
        ]
        continue
    fs, fast = receiver(p, "fast", n, mif)
    ss, slow = receiver(p, "slow", n, mif)
    def took(s):
        return (s.get("last_us", first_post) - first_post) / 1e6
    end = max(fs.get("last_us", t0), ss.get("last_us", t0))
    flat = [r["latency_ms"] for r in fast if r.get("latency_ms") is not None]
    slat = [r["latency_ms"] for r in slow if r.get("latency_ms") is not None]
    rows += [
        (f"2. {n} incidents, max_in_flight {mif}", f"POSTs of {batch} checks, all acknowledged after {(last_ack - first_post) / 1e6:.2f}s; {mtxt}"),
        ("   fast (answers at once)", f"{len(fast)} in {took(fs):.2f}s = {len(fast) / max(1e-9, took(fs)):.0f}/s; most in flight {fs.get('max_in_flight')}; outbox -> receipt {dist(flat)}"),
        (f"   slow (answers after {slow_delay})", f"{len(slow)} in {took(ss):.2f}s = {len(slow) / max(1e-9, took(ss)):.1f}/s; most in flight {ss.get('max_in_flight')} (bound {mif}); outbox -> receipt p50 {pct(slat, .5):.0f} max {max(slat) if slat else 0:.0f} ms"),
        ("   coordinator", f"CPU {100 * (c1 - c0) / max(1e-9, (end - t0) / 1e6):.1f}% of one core over {(end - t0) / 1e6:.1f}s; peak RSS {hwm:.1f} MiB"),
    ]
w = max(len(r[0]) for r in rows)
for k, v in rows:
    print(f"{k:<{w}}  {v}")
if problems:
    print("FAILED:")
    for x in problems:
        print(f"  {x}")
    sys.exit(1)
print("every notification arrived exactly once per contact, signed")
EOF
