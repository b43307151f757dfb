#!/usr/bin/env bash
# Relay cluster measurements (issue 9; Benchmarks/README.md, "Relay cluster"): not part of CI.
#
#   Benchmarks/run-cluster.sh                          # everything: ~15 min after the release build
#   MODES=load CONFIGS="sqlite-1 postgres-2" RUNS=1 Benchmarks/run-cluster.sh
#   MODES=partitioning ROWS=100000 Benchmarks/run-cluster.sh
#   MODES=vacuum Benchmarks/run-cluster.sh             # ~8 min at 1 M rows
#
# load: the load generator (flitz-bench throughput, as run-load.sh) against three set-ups, each run on a fresh
#   relay and a fresh database: `sqlite-1` one node on SQLite, `postgres-1` one node on PostgreSQL, `postgres-2` two
#   nodes on one PostgreSQL database with the senders on node 1 and the recipients on node 2 (half the connections
#   on each; every envelope crosses nodes through LISTEN/NOTIFY). First closed loop (saturation: envelopes/s
#   acknowledged end to end), then open loop at one common rate for all three (RATE, default half the lowest median
#   saturation), whose p99 is the meaningful latency. Medians of RUNS runs.
# partitioning: queue reads and expiry deletes at ROWS stored envelopes, the hash-partitioned table against an
#   unpartitioned copy (Benchmarks/queue-partitioning.sql).
# vacuum: expiry passes at ROWS stored envelopes with autovacuum running, PostgreSQL's default autovacuum trigger
#   against scale factor 0 with thresholds of 5 000 and 500 dead rows per partition (500 alone is `core-v3`'s; the
#   others add vacuum_index_cleanup = on): PASSES passes per copy,
#   one round every PACE seconds, autovacuum_naptime NAPTIME for the run (Benchmarks/queue-vacuum.sql; compressed
#   time, said there). Needs a superuser (ALTER SYSTEM): the server started here is one.
#
# PostgreSQL: POSTGRES_URL (a maintenance URL, e.g. postgres://flitz@127.0.0.1:5432/postgres?sslmode=disable) or,
# without it, a server started here by scripts/postgres.sh in the output directory and stopped at the end.
# Every knob is an environment variable (below; RELAY and BENCH name other binaries, BUILD=0 skips the build).
# Needs psql (postgresql-client).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
MODES=${MODES:-"load partitioning vacuum"}
CONFIGS=${CONFIGS:-"sqlite-1 postgres-1 postgres-2"}
RUNS=${RUNS:-3}
PAIRS=${PAIRS:-100}
SIZE=${SIZE:-256}
WINDOW=${WINDOW:-16}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-10}
THREADS=${THREADS:-1}
RATE=${RATE:-}
ROWS=${ROWS:-1000000}
DEVICES=${DEVICES:-10000}
READS=${READS:-2000}
DELETES=${DELETES:-200}
PASSES=${PASSES:-400}
PACE=${PACE:-0.25}
NAPTIME=${NAPTIME:-1s}
BUILD=${BUILD:-1}
RELAY_ARGS=${RELAY_ARGS:-}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/flitz-cluster.XXXXXX")
chmod 755 "$OUT"    # scripts/postgres.sh runs the server as the postgres user when root: it must reach $OUT/postgres

say() { echo "== $*" >&2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ "$BUILD" = 1 ] && [[ " $MODES " == *" load "* ]]; then
    say "building flitz-relay and flitz-bench (release, in $HERE/.build)"
    (cd "$HERE" && swift build -c release --product flitz-relay && swift build -c release --product flitz-bench) >"$OUT/build.log" 2>&1 ||
        { tail -30 "$OUT/build.log"; exit 1; }
fi
RELAY=${RELAY:-"$HERE/.build/release/flitz-relay"}
BENCH=${BENCH:-"$HERE/.build/release/flitz-bench"}
if [[ " $MODES " == *" load "* ]]; then
    [ -x "$RELAY" ] && [ -x "$BENCH" ] || { echo "missing $RELAY or $BENCH" >&2; exit 1; }
fi
command -v psql >/dev/null || { echo "psql is missing: apt-get install postgresql-client" >&2; exit 1; }

NODE_PIDS=()
NODE_PORTS=()
STARTED_POSTGRES=""
stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
    NODE_PORTS=()
}
cleanup() {
    stop_nodes
    if [ -f "$OUT/databases" ]; then
        while read -r name; do psql_admin "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true; done <"$OUT/databases"
    fi
    if [ -n "$STARTED_POSTGRES" ]; then "$ROOT/scripts/postgres.sh" stop "$STARTED_POSTGRES" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [ -z "${POSTGRES_URL:-}" ]; then
    STARTED_POSTGRES="$OUT/postgres"
    POSTGRES_URL=$("$ROOT/scripts/postgres.sh" start "$STARTED_POSTGRES" | grep '^postgres://' | tail -1)
fi
# with_database URL NAME: URL with its database replaced by NAME (query string kept).
with_database() { echo "$1" | sed -E "s#^(postgres(ql)?://[^/]*)/[^?]*#\1/$2#"; }
psql_admin() { psql "$POSTGRES_URL" -v ON_ERROR_STOP=1 -qAt -c "$1"; }
# fresh_database: creates an empty database (dropped at exit) and prints its URL.
fresh_database() {
    local name="flitz_cluster_$$_$RANDOM$RANDOM"
    psql_admin "CREATE DATABASE $name" >/dev/null
    echo "$name" >>"$OUT/databases"
    with_database "$POSTGRES_URL" "$name"
}

# start_node NAME ARGS...: a relay that prints "listening on HOST:PORT"; appends its pid and port.
start_node() {
    local name=$1
    shift
    rm -f "$OUT/$name.out" "$OUT/$name.err"
    # shellcheck disable=SC2086
    "$RELAY" serve --port 0 --log-level warning --rate-limits off --max-queued-envelopes 100000 --blob-dir "$OUT/blobs" \
        "$@" $RELAY_ARGS >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local pid=$! port=""
    for _ in $(seq 1 600); do
        port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$OUT/$name.out" 2>/dev/null | head -1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$name did not start:" >&2; cat "$OUT/$name.err" >&2; exit 1; }
    NODE_PIDS+=("$pid")
    NODE_PORTS+=("$port")
}

# start_config CONFIG: fresh database and node(s) for one measurement.
start_config() {
    stop_nodes
    case "$1" in
    sqlite-1) start_node "$1-node1" --database "$OUT/relay-$RANDOM$RANDOM.sqlite" ;;
    postgres-1)
        local url
        url=$(fresh_database)
        start_node "$1-node1" --postgres "$url" --node-id node1
        ;;
    postgres-2)
        local url
        url=$(fresh_database)
        start_node "$1-node1" --postgres "$url" --node-id node1
        start_node "$1-node2" --postgres "$url" --node-id node2
        ;;
    *) echo "unknown configuration $1 (sqlite-1, postgres-1, postgres-2)" >&2; exit 64 ;;
    esac
}

# cpu_ticks PID: utime + stime of PID in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# bench LABEL ARGS...: flitz-bench throughput against the current nodes; keeps the RESULT line with each node's CPU
# over the whole bench run (registration included) as node1_cpu / node2_cpu (% of one core).
bench() {
    local label=$1
    shift
    local recipient=()
    [ "${#NODE_PORTS[@]}" -gt 1 ] && recipient=(--recipient-port "${NODE_PORTS[1]}")
    say "$label: flitz-bench throughput --port ${NODE_PORTS[0]} ${recipient[*]} $*"
    local before=() pid start end
    for pid in "${NODE_PIDS[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    start=$(date +%s.%N)
    if "$BENCH" throughput --port "${NODE_PORTS[0]}" "${recipient[@]}" --server-pid "${NODE_PIDS[0]}" --pairs "$PAIRS" --size "$SIZE" \
        --warmup "$WARMUP" --duration "$DURATION" --threads "$THREADS" "$@" >"$OUT/$label.out" 2>"$OUT/$label.err"; then
        end=$(date +%s.%N)
        local cpus="" index=0 hz
        hz=$(getconf CLK_TCK)
        for pid in "${NODE_PIDS[@]}"; do
            index=$((index + 1))
            cpus+=" node${index}_cpu=$(awk "BEGIN { printf \"%.1f\", ($(cpu_ticks "$pid") - ${before[$((index - 1))]}) / $hz / ($end - $start) * 100 }")"
        done
        cat "$OUT/$label.out" >&2
        grep '^RESULT' "$OUT/$label.out" | sed "s/^RESULT/RESULT label=$label/; s/\$/$cpus load=$(cut -d' ' -f1 /proc/loadavg)/" >>"$OUT/results.txt"
    else
        echo "   failed (exit $?):" >&2
        tail -5 "$OUT/$label.err" >&2
        echo "FAILED label=$label" >>"$OUT/results.txt"
    fi
}

field() { { grep "^RESULT label=$1" "$OUT/results.txt" 2>/dev/null || true; } | tr ' ' '\n' | sed -n "s/^$2=//p"; }
median() {
    field "$1" "$2" | { grep -E '^[0-9.]+$' || true; } | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "na"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
all() { field "$1" "$2" | paste -sd/ -; }
has_mode() { [[ " $MODES " == *" $1 "* ]]; }
: >"$OUT/results.txt"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

if has_mode load; then
    for config in $CONFIGS; do
        for run in $(seq 1 "$RUNS"); do
            start_config "$config"
            bench "$config-closed-$run" --window "$WINDOW"
        done
    done
    stop_nodes
    if [ -z "$RATE" ]; then
        RATE=$(for config in $CONFIGS; do median "$config-closed" rate; done | grep -E '^[0-9.]+$' | sort -n | head -1 |
            awk '{ printf "%d", $1 / 2 }')
        [ "${RATE:-0}" -gt 0 ] 2>/dev/null || RATE=1
    fi
    for config in $CONFIGS; do
        for run in $(seq 1 "$RUNS"); do
            start_config "$config"
            bench "$config-open-$run" --rate "$RATE" --window 1000
        done
    done
    stop_nodes
fi

if has_mode partitioning; then
    url=$(fresh_database)
    say "partitioning: $ROWS envelopes, $DEVICES devices, $READS reads, $DELETES expiry passes"
    psql "$url" -q -v rows="$ROWS" -v devices="$DEVICES" -v reads="$READS" -v deletes="$DELETES" -f "$HERE/queue-partitioning.sql" \
        >"$OUT/partitioning.out" 2>"$OUT/partitioning.err" || { cat "$OUT/partitioning.err" >&2; exit 1; }
    grep '^PARTITIONING' "$OUT/partitioning.out" >>"$OUT/results.txt"
    cat "$OUT/partitioning.out" >&2
fi

if has_mode vacuum; then
    url=$(fresh_database)
    say "vacuum: $ROWS envelopes, $DEVICES devices, $PASSES expiry passes per copy every $PACE s, autovacuum_naptime $NAPTIME"
    psql "$url" -q -v rows="$ROWS" -v devices="$DEVICES" -v passes="$PASSES" -v pace="$PACE" -v naptime="$NAPTIME" \
        -f "$HERE/queue-vacuum.sql" >"$OUT/vacuum.out" 2>"$OUT/vacuum.err" || { cat "$OUT/vacuum.err" >&2; exit 1; }
    grep '^VACUUM' "$OUT/vacuum.out" >>"$OUT/results.txt"
    cat "$OUT/vacuum.out" >&2
fi

{
    echo
    echo "Flitz relay cluster, $(date -u '+%Y-%m-%d %H:%M UTC'), relay $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    if has_mode load; then
        echo "$PAIRS pairs × $SIZE B; $RUNS runs per row, medians (runs after the slash-separated column); CPU % of one core"
        echo
        printf '%-40s %10s %10s %10s %10s %9s %9s %9s  %s\n' "measurement" "rate/s" "p50 µs" "p99 µs" "p99.9 µs" "node1 CPU" "node2 CPU" "load" "runs (rate/s; p99 µs)"
        for config in $CONFIGS; do
            for kind in closed open; do
                label="$config-$kind"
                grep -q "^RESULT label=$label" "$OUT/results.txt" || continue
                name="$config, $([ $kind = closed ] && echo "closed loop, window $WINDOW" || echo "open loop at $RATE/s")"
                printf '%-40s %10s %10s %10s %10s %9s %9s %9s  %s; %s\n' "$name" "$(median "$label" rate)" "$(median "$label" p50_us)" \
                    "$(median "$label" p99_us)" "$(median "$label" p999_us)" "$(median "$label" node1_cpu)" "$(median "$label" node2_cpu)" \
                    "$(median "$label" load)" "$(all "$label" rate)" "$(all "$label" p99_us)"
            done
        done
    fi
    if grep -q '^PARTITIONING' "$OUT/results.txt"; then
        echo
        echo "queue at $ROWS envelopes ($DEVICES devices), server-side ms:"
        sed 's/^PARTITIONING /  /' <(grep '^PARTITIONING' "$OUT/results.txt")
    fi
    if grep -q '^VACUUM' "$OUT/results.txt"; then
        echo
        echo "expiry passes at $ROWS envelopes with autovacuum ($PASSES passes per copy every $PACE s, naptime $NAPTIME), server-side ms:"
        sed 's/^VACUUM /  /' <(grep '^VACUUM' "$OUT/results.txt")
    fi
    if grep -q '^FAILED' "$OUT/results.txt"; then
        echo
        echo "FAILED runs: $(grep '^FAILED' "$OUT/results.txt" | sed 's/FAILED label=//' | paste -sd' ' -) (see $OUT/*.err)"
    fi
    echo
    echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
