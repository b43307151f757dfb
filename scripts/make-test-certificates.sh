#!/usr/bin/env bash
# Makes the TLS test fixtures of Tests/Fixtures/tls (used by Tests/FlitzClientTests/TLSTests.swift): a test CA
# and a relay certificate signed by it, valid for localhost and 127.0.0.1 for 100 years, EC P-256. The CA's
# private key is thrown away: nothing else can be signed by this CA. Run again only to replace the fixtures.
set -euo pipefail
out="$(cd "$(dirname "$0")/.." && pwd)/Tests/Fixtures/tls"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca-key.pem"
openssl req -x509 -new -key "$work/ca-key.pem" -sha256 -days 36500 -subj "/CN=Flitz test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$out/ca.pem"

openssl ecparam -name prime256v1 -genkey -noout -out "$work/server-key.pem"
openssl pkcs8 -topk8 -nocrypt -in "$work/server-key.pem" -out "$out/server-key.pem"
openssl req -new -key "$out/server-key.pem" -subj "/CN=localhost" -out "$work/server.csr"
cat > "$work/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in "$work/server.csr" -CA "$out/ca.pem" -CAkey "$work/ca-key.pem" -CAcreateserial \
    -CAserial "$work/ca.srl" -sha256 -days 36500 -extfile "$work/server.ext" -out "$out/server.pem"
openssl verify -CAfile "$out/ca.pem" "$out/server.pem"
