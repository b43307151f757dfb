#!/usr/bin/env bash
# SRTP cost per 20 ms packet (issue 8): protect + unprotect of a PCMU packet (12-byte RTP header, 160 µ-law bytes)
# through FlitzMedia (SRTPSender.packet + SRTPReceiver.receive: numbering, libsrtp2 protect, unprotect, RTP parsing,
# receive statistics; Sources/SRTPTiming, release build) next to the same protect + unprotect in a plain C loop over
# libsrtp2 (calls/srtp-baseline.c, cc -O2), both profiles, ROUNDS interleaved rounds of PACKETS packets each.
# Prints the median nanoseconds per packet of each. Not run in CI. Needs cc and libsrtp2-dev.
# Knobs: ROUNDS (default 7), PACKETS (default 100000), SKIP_BUILD=1 reuses the release build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-7}
PACKETS=${PACKETS:-100000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$HERE" && swift build -c release --product SRTPTiming) >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
fi
SWIFT_BIN="$HERE/.build/release/SRTPTiming"
cc -O2 "$HERE/calls/srtp-baseline.c" -lsrtp2 -o "$work/srtp-baseline"

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "libsrtp2: $(dpkg-query -W -f='${Version}' libsrtp2-1 2>/dev/null || echo unknown); $ROUNDS rounds of $PACKETS packets; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-26s %14s %14s %8s\n' profile "FlitzMedia ns" "libsrtp2 ns" ratio
for profile in 1 2; do
    name=$([ "$profile" = 1 ] && echo AEAD_AES_256_GCM || echo AES_CM_128_HMAC_SHA1_80)
    : >"$work/swift.$profile"
    : >"$work/c.$profile"
    for _ in $(seq "$ROUNDS"); do
        "$SWIFT_BIN" "$profile" "$PACKETS" >>"$work/swift.$profile"
        "$work/srtp-baseline" "$profile" "$PACKETS" >>"$work/c.$profile"
    done
    s=$(median <"$work/swift.$profile")
    c=$(median <"$work/c.$profile")
    printf '%-26s %14s %14s %8s\n' "$name" "$s" "$c" "$(python3 -c "print(f'{$s / $c:.2f}')")"
done
