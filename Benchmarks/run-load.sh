#!/usr/bin/env bash
# Relay load benchmarks (Benchmarks/README.md, "Relay load"): builds flitz-relay and flitz-bench in release,
# starts a fresh relay on a temporary database (and the echo server for the floor), runs every mode with
# issue 4's parameters and prints a summary table of medians. Raw output stays in $OUT.
#
# Usage: Benchmarks/run-load.sh            (from anywhere; about 15–25 minutes on 2 cores after the builds)
# Environment (defaults in brackets):
#   RUNS [3]  PAIRS [100]  SIZE [256]  WINDOW [16]  WARMUP [2]  DURATION [10]  THREADS [1]
#   TARGET_RATE [31000]   the fixed rate for p99, lowered to half the saturation rate when that is less
#   CONNECTIONS [10000,max]  idle connection counts ("max": the hard open-files limit less 200)
#   SOURCES [4]  source addresses 127.0.0.2… for the connections mode
#   BACKLOG [20000]  MODES ["floor throughput rate connections backlog"]
#   RELAY_ARGS [""]  extra `flitz-relay serve` flags (e.g. one that disables rate limits)
#   SKIP_BUILD [0]  OUT [a new temp directory]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RUNS=${RUNS:-3}
PAIRS=${PAIRS:-100}
SIZE=${SIZE:-256}
WINDOW=${WINDOW:-16}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
TARGET_RATE=${TARGET_RATE:-31000}
CONNECTIONS=${CONNECTIONS:-10000,max}
SOURCES=${SOURCES:-4}
BACKLOG=${BACKLOG:-20000}
MODES=${MODES:-floor throughput rate connections backlog}
RELAY_ARGS=${RELAY_ARGS:-}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-$(mktemp -d /tmp/flitz-load.XXXXXX)}
mkdir -p "$OUT"

say() { printf '== %s\n' "$*" >&2; }

# Both processes need one descriptor per connection.
say "ulimit -Hn: $(ulimit -Hn) (soft was $(ulimit -Sn); raising it to the hard limit)"
ulimit -n "$(ulimit -Hn)"

if [ "$SKIP_BUILD" != 1 ]; then
    # Both from this package: flitz-relay is the root package's product (a path dependency, so this is the
    # work tree's relay), and building it here shares one release build of NIO, Hummingbird, protobuf.
    say "building flitz-relay and flitz-bench (release, in $HERE/.build)"
    (cd "$HERE" && swift build -c release --product flitz-relay && swift build -c release --product flitz-bench) >"$OUT/build.log" 2>&1 ||
        { tail -30 "$OUT/build.log"; exit 1; }
fi
RELAY="$HERE/.build/release/flitz-relay"
BENCH="$HERE/.build/release/flitz-bench"
[ -x "$RELAY" ] && [ -x "$BENCH" ] || { echo "missing $RELAY or $BENCH" >&2; exit 1; }

SERVER_PID=""
SERVER_PORT=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=""
}
trap cleanup EXIT

# start_server NAME COMMAND...: starts a server that prints "listening on HOST:PORT"; sets SERVER_PID/PORT.
start_server() {
    local name=$1
    shift
    # The child truncates the file only once it runs: remove the previous server's first.
    rm -f "$OUT/$name.out" "$OUT/$name.err"
    "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    SERVER_PID=$!
    SERVER_PORT=""
    for _ in $(seq 1 300); do
        SERVER_PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$OUT/$name.out" 2>/dev/null | head -1)
        if [ -n "$SERVER_PORT" ]; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$OUT/$name.err" >&2
    exit 1
}

# A fresh relay on a new database (WAL files beside it).
start_relay() {
    cleanup
    local db="$OUT/relay-$RANDOM$RANDOM.sqlite"
    # shellcheck disable=SC2086
    # Rate limits off: one generator registers thousands of devices from one address and pushes each pair
    # far past the per-pair limit; the limits are measured by their own tests, not here.
    start_server relay "$RELAY" serve --port 0 --database "$db" --log-level warning --rate-limits off \
        --max-queued-envelopes $((BACKLOG + 1000)) $RELAY_ARGS
}

# bench LABEL ARGS...: runs flitz-bench, keeps its output, appends its RESULT line to results.txt.
bench() {
    local label=$1
    shift
    say "$label: flitz-bench $*"
    if "$BENCH" "$@" >"$OUT/$label.out" 2>"$OUT/$label.err"; then
        cat "$OUT/$label.out" >&2
        grep '^RESULT' "$OUT/$label.out" | sed "s/^RESULT/RESULT label=$label/" >>"$OUT/results.txt"
    else
        echo "   failed (exit $?):" >&2
        tail -5 "$OUT/$label.err" >&2
        echo "FAILED label=$label" >>"$OUT/results.txt"
    fi
}

# field LABEL_PREFIX KEY: the KEY values of RESULT lines whose label starts with LABEL_PREFIX.
field() {
    { grep "^RESULT label=$1" "$OUT/results.txt" 2>/dev/null || true; } | tr ' ' '\n' | sed -n "s/^$2=//p"
}
# median LABEL_PREFIX KEY: their median ("na" when none is numeric).
median() {
    field "$1" "$2" | { grep -E '^[0-9.]+$' || true; } | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "na"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
all() { field "$1" "$2" | paste -sd/ -; }

: >"$OUT/results.txt"
COMMON=(--threads "$THREADS")
TIMING=(--warmup "$WARMUP" --duration "$DURATION")
has_mode() { [[ " $MODES " == *" $1 "* ]]; }

if has_mode floor; then
    cleanup
    start_server echo "$BENCH" echo-server --port 0
    for run in $(seq 1 "$RUNS"); do
        bench "floor-closed-$run" floor --port "$SERVER_PORT" --server-pid "$SERVER_PID" --connections "$PAIRS" --size "$SIZE" \
            --window "$WINDOW" "${TIMING[@]}" "${COMMON[@]}"
    done
    cleanup
fi

if has_mode throughput; then
    for run in $(seq 1 "$RUNS"); do
        start_relay
        bench "throughput-closed-$run" throughput --port "$SERVER_PORT" --server-pid "$SERVER_PID" --pairs "$PAIRS" --size "$SIZE" \
            --window "$WINDOW" "${TIMING[@]}" "${COMMON[@]}"
    done
    cleanup
fi

SATURATION=$(median throughput-closed rate)
RATE=$TARGET_RATE
if [ "$SATURATION" != na ] && awk "BEGIN { exit !($SATURATION / 2 < $TARGET_RATE) }"; then
    RATE=$(awk "BEGIN { printf \"%d\", $SATURATION / 2 }")
fi
[ "$RATE" -gt 0 ] 2>/dev/null || RATE=1

if has_mode rate; then
    # In flight per pair at the fixed rate: generous, so the schedule rather than the cap sets the pace.
    for run in $(seq 1 "$RUNS"); do
        start_relay
        bench "throughput-open-$run" throughput --port "$SERVER_PORT" --server-pid "$SERVER_PID" --pairs "$PAIRS" --size "$SIZE" \
            --rate "$RATE" --window 1000 "${TIMING[@]}" "${COMMON[@]}"
    done
    cleanup
    start_server echo "$BENCH" echo-server --port 0
    for run in $(seq 1 "$RUNS"); do
        bench "floor-open-$run" floor --port "$SERVER_PORT" --server-pid "$SERVER_PID" --connections "$PAIRS" --size "$SIZE" \
            --rate "$RATE" --window 1000 "${TIMING[@]}" "${COMMON[@]}"
    done
    cleanup
fi

if has_mode connections; then
    # Once per count (registering ~20 000 devices takes a while), each on a fresh relay: memory freed by
    # closed connections stays in the relay's heap and would flatter a second count on the same relay.
    for count in ${CONNECTIONS//,/ }; do
        start_relay
        bench "connections-$count" connections --port "$SERVER_PORT" --server-pid "$SERVER_PID" --counts "$count" --source-addresses "$SOURCES" "${COMMON[@]}"
    done
    cleanup
fi

if has_mode backlog; then
    for run in $(seq 1 "$RUNS"); do
        start_relay
        bench "backlog-$run" backlog --port "$SERVER_PORT" --server-pid "$SERVER_PID" --envelopes "$BACKLOG" --size "$SIZE"
    done
    cleanup
fi

# Summary.
{
    echo
    echo "Flitz relay load, $(date -u '+%Y-%m-%d %H:%M UTC'), relay $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ulimit -Hn $(ulimit -Hn); $RUNS runs per row where run, medians (the runs' values after the slash-separated column)"
    echo
    printf '%-52s %12s %10s %10s %10s %9s %9s  %s\n' "measurement" "rate/s" "p50 µs" "p99 µs" "p99.9 µs" "gen CPU%" "srv CPU%" "runs (rate/s)"
    row() {
        grep -q "^RESULT label=$2" "$OUT/results.txt" || return 0
        printf '%-52s %12s %10s %10s %10s %9s %9s  %s\n' "$1" "$(median "$2" rate)" "$(median "$2" p50_us)" "$(median "$2" p99_us)" \
            "$(median "$2" p999_us)" "$(median "$2" gen_cpu)" "$(median "$2" server_cpu)" "$(all "$2" rate)"
    }
    row "floor: echo round trips, closed loop" floor-closed
    row "relay: $PAIRS pairs × ${SIZE} B, closed loop (saturation)" throughput-closed
    row "relay: open loop at $RATE/s" throughput-open
    row "floor: echo round trips at $RATE/s" floor-open
    FLOOR=$(median floor-closed rate)
    if [ "$SATURATION" != na ] && [ "$FLOOR" != na ]; then
        echo
        echo "saturation ÷ floor round trips: $(awk "BEGIN { printf \"%.3f\", $SATURATION / $FLOOR }")   (aim: ≥ 45 000 envelopes/s; p99 ≤ 2000 µs at 31 000/s)"
    fi
    if grep -q '^RESULT label=connections' "$OUT/results.txt"; then
        echo
        printf '%-12s %14s %14s %14s %16s %12s\n' "connections" "relay RSS MiB" "held MiB" "after close" "bytes/connection" "setup s"
        grep '^RESULT label=connections' "$OUT/results.txt" | while read -r line; do
            get() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
            printf '%-12s %14.1f %14.1f %14.1f %16s %12s\n' "$(get count)" "$(awk "BEGIN { print $(get rss_before) / 1048576 }")" \
                "$(awk "BEGIN { print $(get rss_held) / 1048576 }")" "$(awk "BEGIN { print $(get rss_after_close) / 1048576 }")" \
                "$(get bytes_per_connection)" "$(get setup_s)"
        done
        echo "(aim: ≤ 16 384 bytes per idle connection; registering the devices took $(all connections registration_s) s)"
    fi
    if grep -q '^RESULT label=backlog' "$OUT/results.txt"; then
        echo
        echo "backlog $BACKLOG × ${SIZE} B: Authenticate → QueueDrained $(median backlog drained_ms) ms ($(all backlog drained_ms)), → all acknowledged $(median backlog acked_ms) ms ($(all backlog acked_ms)); queueing took $(median backlog queue_ms) ms; CPU during drain: generator $(median backlog gen_cpu) %, relay $(median backlog server_cpu) %   (aim: ≤ 150 ms)"
    fi
    if grep -q '^FAILED' "$OUT/results.txt"; then
        echo
        echo "FAILED runs: $(grep '^FAILED' "$OUT/results.txt" | sed 's/FAILED label=//' | paste -sd' ' -) (see $OUT/*.err)"
    fi
    echo
    echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
