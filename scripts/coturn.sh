#!/usr/bin/env bash
# Starts and stops a real coturn (`turnserver`) on loopback for tests (protocol/calls.md 3.5 and 7.1).
#
#   scripts/coturn.sh start STATE_DIR SECRET [REALM]   prints "PORT" (the UDP listening port) once coturn answers
#                                                      a STUN binding request; exit 1 if it does not within 10 s
#   scripts/coturn.sh stop STATE_DIR                   stops the coturn started with STATE_DIR (idempotent)
#
# coturn runs with the REST-API credential scheme the relay provisions (`--use-auth-secret
# --static-auth-secret SECRET`), listens and relays on 127.0.0.1 only, allows loopback peers (both call sides are
# on this machine), has TLS, DTLS and its CLI off, and keeps its pid file, log and user database in STATE_DIR (it
# never touches /var/lib/turn). Free ports are chosen by the kernel (python3 binds port 0) for the listener and a
# random 200-port window for relays. Needs: turnserver (coturn), python3.
set -euo pipefail

usage() { echo "usage: $0 start STATE_DIR SECRET [REALM] | stop STATE_DIR" >&2; exit 2; }

free_udp_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Sends one STUN Binding request (RFC 8489 6) to 127.0.0.1:$1 and succeeds when a Binding success response arrives.
stun_probe() {
    python3 - "$1" <<'EOF'
import os, socket, struct, sys
port = int(sys.argv[1])
tid = os.urandom(12)
request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
try:
    s.sendto(request, ("127.0.0.1", port))
    data, _ = s.recvfrom(2048)
    sys.exit(0 if len(data) >= 20 and struct.unpack("!H", data[:2])[0] == 0x0101 and data[8:20] == tid else 1)
except OSError:
    sys.exit(1)
EOF
}

command="${1:-}"
case "$command" in
start)
    [ $# -ge 3 ] || usage
    state="$2"; secret="$3"; realm="${4:-flitz.test}"
    mkdir -p "$state"
    state="$(cd "$state" && pwd)"
    command -v turnserver >/dev/null || { echo "turnserver (coturn) is not installed: scripts/install-deps.sh --test" >&2; exit 1; }
    port="$(free_udp_port)"
    min=$(( 20000 + (RANDOM % 200) * 200 ))
    max=$(( min + 199 ))
    turnserver -n \
        --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$port" \
        --min-port "$min" --max-port "$max" \
        --use-auth-secret --static-auth-secret "$secret" --realm "$realm" \
        --allow-loopback-peers --no-tls --no-dtls --no-cli --no-tcp-relay \
        --pidfile "$state/turnserver.pid" --log-file "$state/turnserver.log" --simple-log --no-stdout-log \
        --userdb "$state/turndb" \
        >"$state/turnserver.out" 2>&1 </dev/null &
    echo $! >"$state/coturn.pid"
    for _ in $(seq 1 50); do
        if stun_probe "$port"; then echo "$port"; exit 0; fi
        if ! kill -0 "$(cat "$state/coturn.pid")" 2>/dev/null; then
            echo "turnserver exited; see $state/turnserver.log" >&2; exit 1
        fi
    done
    echo "turnserver did not answer on 127.0.0.1:$port within 10 s; see $state/turnserver.log" >&2
    kill "$(cat "$state/coturn.pid")" 2>/dev/null || true
    exit 1
    ;;
stop)
    [ $# -ge 2 ] || usage
    state="$2"
    [ -f "$state/coturn.pid" ] || exit 0
    pid="$(cat "$state/coturn.pid")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$state/coturn.pid"
    ;;
*) usage ;;
esac
