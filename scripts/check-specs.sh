#!/usr/bin/env bash
# Checks protocol/openapi.yaml and protocol/asyncapi.yaml (scripts/check_specs.py says what exactly).
# The validators run in a Python venv under .build/spec-venv (git-ignored), created on first use with
# pinned versions from PyPI; `make deps` installs what a fresh Debian 12 needs for that (python3-venv).
# Used by `make spec-check`. Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=.build/spec-venv

# Every package the validators load, pinned (the top two are what we use; the rest is their closure), so
# that the same versions run everywhere. Change them together and re-run: the venv is rebuilt.
pins=(
  openapi-spec-validator==0.9.0
  jsonschema==4.26.0
  PyYAML==6.0.4
  annotated-types==0.8.0
  attrs==26.1.0
  jsonschema-path==0.5.0
  jsonschema-specifications==2025.9.1
  lazy-object-proxy==1.13.0
  openapi-schema-validator==0.9.0
  pathable==0.6.0
  pydantic==2.14.4
  pydantic-settings==2.16.3
  pydantic_core==2.50.5
  python-dotenv==1.2.4
  referencing==0.37.0
  rfc3339-validator==0.1.4
  rpds-py==2026.9.1
  six==1.17.0
  typing-inspection==0.4.5
  typing_extensions==4.16.0
)
stamp="$venv/flitz-pins.txt"

if [ ! -x "$venv/bin/python" ] || ! printf '%s\n' "${pins[@]}" | cmp -s - "$stamp"; then
  command -v "$python" >/dev/null 2>&1 || { echo "check-specs: $python not found; run 'make deps'" >&2; exit 1; }
  echo "check-specs: creating $venv (pinned validators from PyPI)" >&2
  rm -rf "$venv"
  mkdir -p .build
  if ! "$python" -m venv "$venv" >&2; then
    rm -rf "$venv"
    echo "check-specs: '$python -m venv' failed; on Debian it needs python3-venv ('make deps' installs it)" >&2
    exit 1
  fi
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --only-binary=:all: \
      --no-deps "${pins[@]}" >&2; then
    rm -rf "$venv"
    echo "check-specs: installing the validators from PyPI failed (behind a TLS-intercepting proxy, set PIP_CERT to a CA bundle that trusts it)" >&2
    exit 1
  fi
  if ! report=$("$venv/bin/python" -m pip check 2>&1); then
    echo "$report" >&2
    rm -rf "$venv"
    echo "check-specs: the pinned packages do not fit together" >&2
    exit 1
  fi
  printf '%s\n' "${pins[@]}" >"$stamp"
fi

exec "$venv/bin/python" scripts/check_specs.py
