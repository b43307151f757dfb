#!/usr/bin/env bash
# Call setup time (issue 8): from the offer leaving `flitz call` to its first authenticated media packet, as the
# CLI reports it (`connected` event, setupMs), over loopback, CALLS calls directly and CALLS calls relay-only through
# a real coturn (scripts/coturn.sh) with relay-provisioned credentials. bob auto-answers, so no ringing is counted.
# Prints every figure and the medians. Not run in CI. Uses the debug binaries of the main package (`swift build`
# first; FLITZ_BIN overrides the directory). Needs turnserver (coturn) and python3.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLITZ_BIN:-$ROOT/.build/debug}
CALLS=${CALLS:-7}
work=$(mktemp -d)
relay_pid=""; listen_pid=""
cleanup() {
    [ -n "$listen_pid" ] && kill "$listen_pid" 2>/dev/null || true
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    "$ROOT/scripts/coturn.sh" stop "$work/coturn" >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

secret=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
turn_port=$("$ROOT/scripts/coturn.sh" start "$work/coturn" "$secret")
relay_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/flitz-relay" serve --host 127.0.0.1 --port "$relay_port" --database "$work/relay.sqlite" \
    --turn-uri "turn:127.0.0.1:$turn_port?transport=udp" --turn-secret "$secret" >"$work/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/relay.log" && break; sleep 0.1; done
relay="ws://127.0.0.1:$relay_port"
"$BIN/flitz" init --home "$work/alice" --relay "$relay" --handle alice >/dev/null
"$BIN/flitz" init --home "$work/bob" --relay "$relay" --handle bob >/dev/null

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
run() {  # $1: label, rest: extra options for both sides
    local label=$1; shift
    "$BIN/flitz" listen --home "$work/bob" --auto-answer --json "$@" >"$work/listen.log" 2>&1 &
    listen_pid=$!
    sleep 1
    : >"$work/$label"
    for _ in $(seq "$CALLS"); do
        "$BIN/flitz" call bob --home "$work/alice" --duration 1 --json "$@" \
            | python3 -c 'import json, sys
for line in sys.stdin:
    event = json.loads(line)
    if event.get("event") == "connected": print(event["setupMs"], event["path"])' >>"$work/$label"
    done
    kill "$listen_pid"; wait "$listen_pid" 2>/dev/null || true; listen_pid=""
    echo "$label: $(cut -d' ' -f1 "$work/$label" | tr '\n' ' ')ms (paths: $(cut -d' ' -f2 "$work/$label" | sort | uniq -c | tr -s ' ' | tr '\n' ' '))"
    echo "$label median: $(cut -d' ' -f1 "$work/$label" | median) ms"
}
echo "$CALLS calls each; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run direct
run relay-only --relay-only
