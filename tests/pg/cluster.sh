#!/usr/bin/env bash
# A throwaway PostgreSQL for tests, from Debian's `postgresql` package only (initdb, pg_ctl of
# /usr/lib/postgresql/*/bin): data, socket, log and pid under DIR, listening on 127.0.0.1 on a
# free ephemeral port, trust authentication for local connections only. For the shared control
# state of several postgate nodes (`--control-db`, docs/cluster.md section 3).
#
#   tests/pg/cluster.sh start DIR   # prints POSTGATE_CONTROL_DB=postgres://... (also in DIR/env)
#   tests/pg/cluster.sh stop DIR    # stops the server of DIR (fast shutdown)
#
# PostgreSQL refuses to run as root, and tests run as root: the server runs as the `postgres`
# user (made by the package) through `runuser`, and DIR is given to it (so DIR's parent must let
# others through, as /tmp does). The start takes a few seconds (initdb without fsync). The URL
# names the `postgres` superuser and its `postgres` database.
set -euo pipefail

die() { echo "cluster.sh: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || die "usage: $0 start|stop DIR"
cmd=$1
DIR=$(realpath -m "$2")

bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x $d/pg_ctl && -x $d/initdb ]] && { echo "$d"; return; }
    done
    die "no PostgreSQL binaries (/usr/lib/postgresql/*/bin/pg_ctl): apt-get install postgresql"
}

as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case $cmd in
start)
    BIN=$(bindir)
    mkdir -p "$DIR"
    rm -rf "$DIR/data" "$DIR/sock"
    mkdir -p "$DIR/data" "$DIR/sock"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$DIR" "$DIR/data" "$DIR/sock"
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_postgres "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust --no-sync \
        -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    # Only local connections exist: the socket in DIR and 127.0.0.1. No fsync (a throwaway
    # database), unless PG_DURABLE=1 (for timings comparable with SQLite's fsynced commits).
    durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    [[ ${PG_DURABLE:-0} == 1 ]] && durability=""
    as_postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR/sock $durability -c max_connections=200" \
        start >/dev/null || { tail -n 20 "$DIR/postgres.log" >&2; die "pg_ctl start failed"; }
    url="postgres://postgres@127.0.0.1:$port/postgres"
    echo "POSTGATE_CONTROL_DB=$url" | tee "$DIR/env"
    ;;
stop)
    [[ -f $DIR/data/postmaster.pid ]] || exit 0
    BIN=$(bindir)
    as_postgres "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 30 stop >/dev/null || true
    ;;
*) die "usage: $0 start|stop DIR" ;;
esac
