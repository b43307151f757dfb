#!/usr/bin/env bash
# Installs the Debian packages Flitz builds against, only when they are missing.
# Used by `make run`, `make test` (and so by .ci/run; with --test) and `make spec-check` on a fresh Debian 12 machine.
set -euo pipefail

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if command -v pkg-config >/dev/null 2>&1; then
  pkg-config --exists libsodium || missing+=(libsodium-dev)
  pkg-config --exists sqlite3 || missing+=(libsqlite3-dev)
  pkg-config --exists libsrtp2 || missing+=(libsrtp2-dev)
else
  missing+=(libsodium-dev libsqlite3-dev libsrtp2-dev)
fi
# scripts/check-specs.sh makes a Python venv; Debian's python3 has no ensurepip without python3-venv.
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
else
  missing+=(python3 python3-venv)
fi

# `--test`: what only the test suite needs. ffmpeg makes thumbnails, posters and durations (attachments.md 5).
if [ "${1:-}" = "--test" ]; then
  command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
  # A real TURN/STUN server for the call tests (protocol/calls.md 7); the tests start their own on loopback.
  command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
  # A real PostgreSQL server for the PostgreSQL store and cluster tests (protocol/cluster.md); scripts/postgres.sh
  # runs its own throwaway cluster from the server binaries under /usr/lib/postgresql/<version>/bin.
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing Debian packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
