#!/usr/bin/env bash
# Regenerates the vectors into a temporary directory and compares them with vectors/ byte for byte
# (third_party/ and README.md are not generated). Fails with the diff when they differ.
# Reuses the built generator: FLITZ_VECTORS=path/to/flitz-vectors skips the (incremental) build.
set -euo pipefail
cd "$(dirname "$0")/.."
generator="${FLITZ_VECTORS:-}"
if [[ -z "$generator" ]]; then
    swift build --product flitz-vectors >&2
    generator="$(swift build --show-bin-path)/flitz-vectors"
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$generator" "$out" >/dev/null
if ! diff -r -x third_party -x README.md vectors "$out"; then
    echo "check-vectors: vectors/ differs from a fresh generation (above: < committed, > generated); run 'make vectors' and commit" >&2
    exit 1
fi
echo "check-vectors: vectors/ is what flitz-vectors generates"
