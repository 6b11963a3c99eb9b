#!/usr/bin/env bash
# A throwaway three-node Garage cluster, each node in its own network namespace, for documented
# (not CI) runs of the Ceph interop module against another backend (docs/cluster.md, "Runs
# against other backends"). Needs root (ip netns) and a `garage` binary built from crates.io
# (`cargo install garage --locked`, see the docs): GARAGE_BIN, default `garage` on PATH.
#
#   tests/garage/cluster.sh start DIR   # prints GARAGE_* lines (also in DIR/env), exits 0
#   tests/garage/cluster.sh stop DIR    # stops the nodes, removes the namespaces and the bridge
#
# Network: a bridge pgg0 (10.88.0.1/24) in the host's namespace, and for node i a namespace
# pgg-i joined to it by a veth pair, address 10.88.0.1i. The host (postgate, pytest) reaches
# node 1's S3 API at http://10.88.0.11:3900; the nodes talk RPC over the bridge. Replication
# factor 3: every object is on all three nodes. State, logs and pids stay under DIR.
set -euo pipefail

GARAGE=${GARAGE_BIN:-garage}
NODES=3
BRIDGE=pgg0
NET=10.88.0
# Fixed keys (Garage's format: GK + 24 hex digits, 64 hex digits), imported into the cluster.
KEY_ID=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
BUCKET=${GARAGE_BUCKET:-pgbackend}

die() { echo "garage/cluster.sh: $*" >&2; exit 1; }
ns() { local i=$1; shift; ip netns exec "pgg-$i" "$@"; }
cli() { ns 1 timeout 30 "$GARAGE" -c "$DIR/node1/garage.toml" "$@"; }

stop_all() {
    local f pid
    for f in "$DIR"/node*/pid; do
        [[ -f $f ]] || continue
        pid=$(<"$f")
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 1
    for f in "$DIR"/node*/pid; do
        [[ -f $f ]] || continue
        pid=$(<"$f")
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$f"
    done
    # Any server still naming one of DIR's configs (a lost pid file).
    pkill -KILL -f -- "-c $DIR/node[0-9]/garage.toml server" 2>/dev/null || true
    for ((i = 1; i <= NODES; i++)); do
        ip netns del "pgg-$i" 2>/dev/null || true
        ip link del "pgg-h$i" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

start() {
    command -v "$GARAGE" >/dev/null || die "$GARAGE not found (set GARAGE_BIN)"
    [[ -e $DIR/env ]] && die "$DIR already holds a cluster"
    ip link show "$BRIDGE" >/dev/null 2>&1 && die "bridge $BRIDGE exists: another cluster runs"
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local secret i
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    for ((i = 1; i <= NODES; i++)); do
        ip netns add "pgg-$i"
        ip link add "pgg-h$i" type veth peer name eth0 netns "pgg-$i"
        ip link set "pgg-h$i" master "$BRIDGE" up
        ns "$i" ip link set lo up
        ns "$i" ip addr add "$NET.1$i/24" dev eth0
        ns "$i" ip link set eth0 up
        mkdir -p "$DIR/node$i"/{meta,data}
        cat >"$DIR/node$i/garage.toml" <<CONF
metadata_dir = "$DIR/node$i/meta"
data_dir = "$DIR/node$i/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "0.0.0.0:3901"
rpc_public_addr = "$NET.1$i:3901"
rpc_secret = "$secret"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "0.0.0.0:3900"
root_domain = ".s3.garage.localhost"
CONF
        # Not through `ns` (a function: `$!` would be its subshell's pid, not the server's).
        ip netns exec "pgg-$i" setsid "$GARAGE" -c "$DIR/node$i/garage.toml" server </dev/null >"$DIR/node$i/log" 2>&1 &
        echo $! >"$DIR/node$i/pid"
    done
    local deadline=$((SECONDS + 60)) ids=() id
    for ((i = 1; i <= NODES; i++)); do
        until id=$(ns "$i" timeout 5 "$GARAGE" -c "$DIR/node$i/garage.toml" node id -q 2>/dev/null); do
            ((SECONDS < deadline)) || { tail "$DIR/node$i/log" >&2; die "node $i did not start"; }
            sleep 0.5
        done
        ids+=("$id")
    done
    for id in "${ids[@]:1}"; do cli node connect "$id" >/dev/null; done
    for id in "${ids[@]}"; do cli layout assign -z dc1 -c 1G "${id%@*}" >/dev/null; done
    cli layout apply --version 1 >/dev/null
    cli key import --yes -n postgate "$KEY_ID" "$SECRET" >/dev/null
    until cli bucket create "$BUCKET" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "bucket create failed"
        sleep 0.5
    done
    cli bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >/dev/null
    # The interop module makes its own buckets with this key.
    cli key allow --create-bucket "$KEY_ID" >/dev/null
    {
        echo "GARAGE_S3_ENDPOINT=http://$NET.11:3900"
        echo "GARAGE_ACCESS_KEY=$KEY_ID"
        echo "GARAGE_SECRET_KEY=$SECRET"
        echo "GARAGE_BUCKET=$BUCKET"
    } | tee "$DIR/env"
}

[[ $# -eq 2 ]] || die "usage: $0 start|stop DIR"
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
case $1 in
start)
    # A failed start leaves nothing behind.
    trap 'rc=$?; ((rc == 0)) || stop_all' EXIT
    start
    ;;
stop) stop_all ;;
*) die "usage: $0 start|stop DIR" ;;
esac
