#!/usr/bin/env bash
# Starts and stops a real PostgreSQL server on loopback for tests (protocol/cluster.md; issue 9).
#
#   scripts/postgres.sh start [DIR] [DATABASE]   makes (once) a cluster in DIR (default .build/postgres), starts it
#                                                unless it runs, creates DATABASE (default flitz) unless it exists,
#                                                and prints its URL: postgres://flitz@127.0.0.1:PORT/DATABASE?sslmode=disable
#   scripts/postgres.sh stop [DIR]               stops the server of DIR (idempotent; nothing running is fine)
#   scripts/postgres.sh url [DIR] [DATABASE]     prints the URL of the running server of DIR; exit 1 if none runs
#   scripts/postgres.sh run DIR -- COMMAND...    starts the server of DIR, runs COMMAND with FLITZ_TEST_POSTGRES_URL
#                                                set to the URL of database flitz (a maintenance database tests
#                                                create their own databases from), then stops the server whatever
#                                                COMMAND did (also on SIGINT/SIGTERM); exits with COMMAND's status
#
# The server binaries are the newest /usr/lib/postgresql/*/bin (Debian's `postgresql` package:
# scripts/install-deps.sh --test). The superuser is `flitz`; authentication is `trust` for TCP from 127.0.0.1 and
# ::1 only, the server listens on 127.0.0.1 only (no Unix socket: a deep DIR overflows the 107-byte socket path),
# on a free port chosen by the kernel at each start, with fsync on. As root the server runs as the `postgres`
# user (initdb refuses root): DIR is chown'ed to it and must be reachable by it (every parent directory
# searchable). Calls on one DIR are serialized with a lock file, so tests that start it concurrently share one
# server. Log: DIR/log. Needs: python3, flock.
set -euo pipefail

usage() { echo "usage: $0 start [DIR] [DATABASE] | stop [DIR] | url [DIR] [DATABASE] | run DIR -- COMMAND..." >&2; exit 2; }

free_tcp_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

find_bin() {
    local best=""
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] || continue
        if [ -z "$best" ] || [ "$(basename "$(dirname "$dir")")" -gt "$(basename "$(dirname "$best")")" ] 2>/dev/null; then
            best="$dir"
        fi
    done
    [ -n "$best" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: scripts/install-deps.sh --test" >&2; exit 1; }
    echo "$best"
}

# Runs the server-side binary "$@" as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() { [ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

url_of() { echo "postgres://flitz@127.0.0.1:$(cat "$dir/port")/$1?sslmode=disable"; }

command="${1:-}"
[ -n "$command" ] || usage
if [ "$command" = run ]; then
    [ $# -ge 4 ] && [ "$3" = "--" ] || usage
    dir="$2"
    shift 3
    url="$("$0" start "$dir")"
    trap '"$0" stop "$dir"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    status=0
    FLITZ_TEST_POSTGRES_URL="$url" "$@" || status=$?
    exit "$status"
fi
dir="${2:-.build/postgres}"
database="${3:-flitz}"
case "$database" in
    *[!A-Za-z0-9_]*|"") echo "database name must be [A-Za-z0-9_]+: $database" >&2; exit 2 ;;
esac

case "$command" in
start)
    bin="$(find_bin)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    data="$dir/data"
    exec 9>"$dir/lock"
    flock 9
    if [ "$(id -u)" -eq 0 ]; then
        getent passwd postgres >/dev/null || { echo "running as root needs the postgres user (Debian's postgresql package)" >&2; exit 1; }
        chown postgres "$dir"
        runuser -u postgres -- test -w "$dir" || { echo "the postgres user cannot write $dir (a parent directory not searchable?)" >&2; exit 1; }
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        rm -rf "$data"
        as_owner "$bin/initdb" -D "$data" -U flitz -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { echo "initdb failed; see $dir/initdb.log" >&2; exit 1; }
        cat >"$data/pg_hba.conf" <<'EOF'
# scripts/postgres.sh: trust on loopback TCP only, nothing else.
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
EOF
        [ "$(id -u)" -ne 0 ] || chown postgres "$data/pg_hba.conf"
    fi
    if ! running; then
        port="$(free_tcp_port)"
        # -w waits until the server accepts connections (at most -t seconds).
        as_owner "$bin/pg_ctl" -D "$data" -l "$dir/log" -w -t 60 -o \
            "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=on -c max_connections=1000" \
            start >/dev/null 9>&- \
            || { echo "PostgreSQL did not start; see $dir/log" >&2; exit 1; }
        echo "$port" >"$dir/port"
    fi
    port="$(cat "$dir/port")"
    for _ in $(seq 1 100); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U flitz -d postgres && break
        sleep 0.1
    done
    exists="$("$bin/psql" -h 127.0.0.1 -p "$port" -U flitz -d postgres -tAX -v ON_ERROR_STOP=1 \
        -c "SELECT 1 FROM pg_database WHERE datname = '$database'")"
    if [ "$exists" != "1" ]; then
        "$bin/createdb" -h 127.0.0.1 -p "$port" -U flitz "$database"
    fi
    url_of "$database"
    ;;
stop)
    [ -d "$dir" ] || exit 0
    dir="$(cd "$dir" && pwd)"
    data="$dir/data"
    [ -f "$data/PG_VERSION" ] || exit 0
    bin="$(find_bin)"
    exec 9>"$dir/lock"
    flock 9
    if running; then
        as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 9>&-
    fi
    rm -f "$dir/port"
    ;;
url)
    [ -d "$dir" ] || { echo "no PostgreSQL in $dir: $0 start $dir" >&2; exit 1; }
    dir="$(cd "$dir" && pwd)"
    data="$dir/data"
    bin="$(find_bin)"
    running && [ -f "$dir/port" ] || { echo "no PostgreSQL running in $dir: $0 start $dir" >&2; exit 1; }
    url_of "$database"
    ;;
*) usage ;;
esac
