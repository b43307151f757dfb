#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of Fuzz/ (see Fuzz/README.md).
#
#   scripts/fuzz.sh ci                        build, replay Fuzz/Corpus, then a fixed run of every target
#   scripts/fuzz.sh long [SECONDS] [TARGET…]  SECONDS (default 600) of fuzzing per target, one after another;
#                                             new inputs go to Fuzz/.build/fuzz-long/<target>, never to Fuzz/Corpus
#
# Exits non-zero with a FAIL line when a build fails, a target crashes, hangs or reports no coverage.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(relay-frame envelope ratchet-header message-content prekey-bundle)
# ci: -runs per target, measured to take about 30 s each on the 2-core build machines (docs/decisions.md).
declare -A CI_RUNS=(
    [relay-frame]=175000
    [envelope]=250000
    [ratchet-header]=14000
    [message-content]=210000
    [prekey-bundle]=200000
)
CI_SEED=1
SCRATCH=Fuzz/.build
BIN=$SCRATCH/debug
# Swift's backtracer would add seconds per crash and hide libFuzzer's report; LeakSanitizer is off because
# Swift keeps enum tags in pointer bits, which makes its scan report live globals as leaks.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=detect_leaks=0
# libFuzzer options shared by every run: a hang of 10 s per input is a failure; no leak reports (above).
COMMON=(-timeout=10 -detect_leaks=0 -max_len=4096 -print_final_stats=1)

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Reports a failed run; the caller decides whether to go on.
failed() {
    echo "FAIL: $*" >&2
    return 1
}

build() {
    local started=$SECONDS status=0
    echo "building the fuzz targets (Fuzz/, scratch $SCRATCH)"
    # --sanitize alone hands the compiler only its last -sanitize flag (with "fuzzer address" the code gets
    # no coverage instrumentation), so both go in once more together. gold's notes about ASan symbols are noise.
    timeout 3600 nice "${SWIFT:-swift}" build --package-path Fuzz --scratch-path "$SCRATCH" \
        --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address \
        2>&1 | { grep -v "Cannot export local symbol" || true; } || status=$?
    [ "$status" -eq 0 ] || fail "building the fuzz targets (exit $status)"
    echo "built in $((SECONDS - started)) s"
}

# run LABEL LOG TIMEOUT TARGET ARGS…: runs one fuzzer, checks its exit and its cov: figure.
run() {
    local label=$1 log=$2 limit=$3 target=$4
    shift 4
    local started=$SECONDS status=0
    mkdir -p "$SCRATCH/fuzz-artifacts/$target"
    timeout "$limit" nice "$BIN/fuzz-$target" "${COMMON[@]}" -artifact_prefix="$SCRATCH/fuzz-artifacts/$target/" "$@" >"$log" 2>&1 \
        || status=$?
    local elapsed=$((SECONDS - started))
    if [ "$status" -eq 124 ]; then
        failed "$label: still running after $limit s (log: $log)"; return
    elif [ "$status" -ne 0 ]; then
        grep -E "^(==[0-9]+==ERROR|SUMMARY|Fatal error|.*fuzz invariant violated)" "$log" | head -5 >&2 || true
        failed "$label crashed (exit $status); input in $SCRATCH/fuzz-artifacts/$target/, log: $log"; return
    fi
    local stats cov
    stats=$(grep -E "^#[0-9]+[[:space:]]+(DONE|INITED|pulse|NEW|REDUCE)" "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9][0-9]*\).*/\1/p' <<<"$stats")
    if [ -z "$cov" ] || [ "$cov" -eq 0 ]; then
        failed "$label reported no coverage (is the build instrumented?); log: $log"; return
    fi
    local execs rate
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "ok   $label: cov $cov, ${execs:-?} execs in ${elapsed} s (${rate:-?} exec/s)"
}

ci() {
    local started=$SECONDS target logs=$SCRATCH/fuzz-logs
    build
    # Only this run's crashing inputs, so a FAIL line points at the right file.
    rm -rf "$SCRATCH/fuzz-artifacts"
    mkdir -p "$logs"
    for target in "${TARGETS[@]}"; do
        [ -d "Fuzz/Corpus/$target" ] || fail "no committed corpus Fuzz/Corpus/$target"
        run "replay $target" "$logs/$target-replay.log" 300 "$target" -runs=0 "Fuzz/Corpus/$target" || exit 1
    done
    for target in "${TARGETS[@]}"; do
        # New inputs go to an emptied scratch directory so every ci run starts from the committed corpus.
        local scratch=$SCRATCH/fuzz-ci/$target
        rm -rf "$scratch" && mkdir -p "$scratch"
        run "fuzz $target" "$logs/$target-ci.log" 300 "$target" -seed=$CI_SEED -runs="${CI_RUNS[$target]}" \
            "$scratch" "Fuzz/Corpus/$target" || exit 1
    done
    echo "fuzz ci passed in $((SECONDS - started)) s"
}

long() {
    local seconds=${1:-600} logs=$SCRATCH/fuzz-logs target failures=0
    shift || true
    [[ $seconds =~ ^[0-9]+$ ]] || fail "SECONDS must be a whole number, got '$seconds'"
    local targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    build
    mkdir -p "$logs"
    for target in "${targets[@]}"; do
        [ -d "Fuzz/Corpus/$target" ] || fail "unknown target $target (one of: ${TARGETS[*]})"
        local corpus=$SCRATCH/fuzz-long/$target
        mkdir -p "$corpus"
        # A failure does not stop the other targets; the exit status reports it at the end.
        run "long $target" "$logs/$target-long.log" $((seconds + 300)) "$target" -max_total_time="$seconds" \
            "$corpus" "Fuzz/Corpus/$target" || failures=$((failures + 1))
        echo "     new inputs: $corpus (merge: $BIN/fuzz-$target -merge=1 Fuzz/Corpus/$target $corpus)"
    done
    [ "$failures" -eq 0 ] || fail "$failures of ${#targets[@]} targets failed"
}

case "${1:-}" in
    ci) ci ;;
    long) shift; long "$@" ;;
    *) echo "usage: scripts/fuzz.sh ci | long [SECONDS] [TARGET...]" >&2; exit 64 ;;
esac
