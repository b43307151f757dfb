#!/usr/bin/env bash
# Attachment throughput (issue 7): a 50 MiB file sent with `flitz send --file` (encrypt + upload over loopback)
# and fetched with `flitz download` (download + verify + decrypt) through a real relay on a fresh SQLite file and
# blob directory, release builds, ROUNDS times each; next to the raw libsodium XChaCha20-Poly1305 throughput
# over the same size in 64 KiB chunks, measured in the same run (media/xchacha-baseline.c). Prints medians.
# Knobs: MIB (default 50), ROUNDS (default 5), PORT (default 7979). Needs cc and libsodium-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${MIB:-50}
ROUNDS=${ROUNDS:-5}
PORT=${PORT:-7979}

swift build -c release --product flitz-relay >/dev/null
swift build -c release --product flitz >/dev/null
BIN=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
trap 'kill "$relay" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cc -O2 Benchmarks/media/xchacha-baseline.c -lsodium -o "$work/xchacha-baseline"

"$BIN/flitz-relay" serve --host 127.0.0.1 --port "$PORT" --database "$work/relay.sqlite" --blob-dir "$work/blobs" \
  >"$work/relay.log" 2>&1 &
relay=$!
for _ in $(seq 100); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health')" 2>/dev/null && break; sleep 0.1; done

flitz() { "$BIN/flitz" "$@"; }
flitz init --home "$work/alice" --relay "ws://127.0.0.1:$PORT" --handle alice >/dev/null
flitz init --home "$work/bob" --relay "ws://127.0.0.1:$PORT" --handle bob >/dev/null
flitz accept --home "$work/bob" alice >/dev/null
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$work/file.bin"
# A first message sets up the session, so every timed send is the same work.
flitz send --home "$work/alice" bob "warm-up" >/dev/null
flitz receive --home "$work/bob" >/dev/null

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# MiB/s of one run of the command: MIB divided by its wall-clock seconds.
rate() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); python3 -c "print($MIB / (($t1 - $t0) / 1e9))"; }

ids=()
up=()
for _ in $(seq "$ROUNDS"); do
  up+=("$(rate flitz send --home "$work/alice" bob --file "$work/file.bin" --original)")
done
flitz receive --home "$work/bob" --json >"$work/received.json"
mapfile -t ids < <(python3 -c 'import json,sys; [print(json.loads(l)["id"]) for l in open(sys.argv[1]) if "fileName" in l]' "$work/received.json")
down=()
for id in "${ids[@]}"; do
  rm -rf "$work/out" && mkdir "$work/out"
  down+=("$(rate flitz download --home "$work/bob" "$id" --out "$work/out")")
  cmp -s "$work/file.bin" "$work/out/file.bin" || { echo "downloaded file differs" >&2; exit 1; }
done

printf 'upload   (flitz send --file: pad, encrypt, hash, TUS upload, send): median %.0f MiB/s over %d runs of %d MiB\n' \
  "$(printf '%s\n' "${up[@]}" | median)" "$ROUNDS" "$MIB"
printf 'download (flitz download: fetch, verify, decrypt, write):         median %.0f MiB/s over %d runs of %d MiB\n' \
  "$(printf '%s\n' "${down[@]}" | median)" "${#down[@]}" "$MIB"
"$work/xchacha-baseline" "$MIB" "$ROUNDS"
