#!/usr/bin/env bash
# A throwaway Ceph cluster for tests, from Debian's packages only (ceph-mon, ceph-osd, radosgw,
# ceph-common): one monitor, three memstore OSDs, one radosgw (beast) with an S3 user.
# Everything listens on 127.0.0.1 and keeps all its state, logs, sockets and pids under DIR;
# no cephadm, containers or systemd.
#
#   tests/ceph/cluster.sh start DIR   # prints CEPH_* lines (also written to DIR/env), exits 0
#   tests/ceph/cluster.sh stop DIR    # stops every daemon of DIR; none is left behind
#
# start prints: CEPH_RGW_ENDPOINT, CEPH_RGW_ACCESS_KEY, CEPH_RGW_SECRET_KEY, CEPH_CONF,
# CEPH_OSD_IDS ("0 1 2") and CEPH_OSD_<id>_PID for each OSD, so a test can kill -9 one.
# The whole start is bounded by CEPH_START_TIMEOUT seconds (default 90); on failure it stops
# what it started, shows the tail of the logs and exits non-zero.
# CEPH_MEMSTORE_BYTES (default 2 GiB) is each OSD's memstore capacity: every byte stored lives in
# RAM three times (pool size 3), so a test stores a few hundred MiB at most and the benchmark's
# 1 GiB objects (benches/s3/cluster.rs) need more.
#
# Why memstore: the OSDs keep objects in memory, so there is no disk format to make (mkfs takes
# milliseconds) and nothing to clean but DIR. Why no cephx: the cluster only listens on loopback
# and lives for one test session; auth "none" spares keyring plumbing between daemons. Why no
# ceph-mgr: nothing here needs it (pools are made by the monitor, RGW talks to the OSDs), and it
# would add seconds and python modules to the start; its absence is silenced in the health.
set -euo pipefail

OSD_COUNT=3
USER_ID=postgate-test
ACCESS_KEY=PGCEPHTESTACCESS0001
SECRET_KEY=pg-ceph-test-secret-key-0123456789abcdef

die() { echo "cluster.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a daemon in the foreground of its own session (so stop can take its whole group) with its
# output in DIR/log, and records its pid in DIR/run/NAME.pid.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/run/$name.pid"
}

ceph_cli() { timeout 30 ceph -c "$DIR/ceph.conf" "$@"; }

deadline_check() {
    ((SECONDS < DEADLINE)) || fail "start took longer than ${CEPH_START_TIMEOUT:-90} s ($*)"
}

fail() {
    echo "cluster.sh: $*" >&2
    for f in "$DIR"/log/*.log "$DIR"/log/*.out; do
        [[ -s $f ]] || continue
        echo "---- tail of $f" >&2
        tail -n 15 "$f" >&2
    done
    stop_all
    exit 1
}

# Stops every daemon whose pid file is in DIR/run: SIGTERM to its process group, then SIGKILL
# after 3 s for any survivor (the cluster is throwaway; an OSD's clean stop waits seconds for the
# monitor). Also finds any process still naming DIR's ceph.conf (a daemon
# started by a crashed earlier start whose pid file was lost).
stop_all() {
    local pids=() pid f
    for f in "$DIR"/run/*.pid; do
        [[ -f $f ]] || continue
        pid=$(<"$f")
        [[ $pid =~ ^[0-9]+$ ]] && pids+=("$pid")
    done
    for pid in $(pgrep -f -- "-c $DIR/ceph.conf" || true); do pids+=("$pid"); done
    ((${#pids[@]})) || return 0
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
    local end=$((SECONDS + 3)) alive
    while :; do
        alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        ((${#alive[@]})) || break
        if ((SECONDS >= end)); then
            for pid in "${alive[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f "$DIR"/run/*.pid
}

write_conf() {
    local mon_port=$1 rgw_port=$2 fsid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
mon initial members = a
public network = 127.0.0.1/32
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
# radosgw defaults to a "secure" monitor session, which auth "none" cannot give.
ms mon client mode = crc secure
# Commit monitor changes (pools, OSD up/down) every 100 ms instead of every second.
paxos propose interval = 0.1
run dir = $DIR/run
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = true
crash dir = $DIR/crash
keyring = $DIR/keyring
# All OSDs are on one host: replicate across OSDs, not hosts.
osd crush chooseleaf type = 0
osd pool default size = 3
osd pool default min size = 2
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool delete = true
mon allow pool size one = false
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
# A killed OSD is refused at once by its peers (osd fast fail on connection refused), so it is
# marked down within a second or two; these bound the case where it is not.
osd heartbeat interval = 1
osd heartbeat grace = 6
mon osd min down reporters = 1
# Do not mark a killed OSD "out" during a test: the test wants 2 of 3 replicas serving, not a rebalance.
mon osd down out interval = 600

[mon]
admin socket = $DIR/run/\$name.asok
mon data = $DIR/mon/\$name
mon cluster log file = $DIR/log/cluster.log

[osd]
admin socket = $DIR/run/\$name.asok
osd data = $DIR/osd/\$id
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-2147483648}
osd max object size = 134217728

[client.rgw]
admin socket = $DIR/run/\$name.asok
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $DIR/rgw
rgw enable usage log = false
rgw dns name = 127.0.0.1
rgw thread pool size = 64
EOF
}

start() {
    [[ -e $DIR/ceph.conf ]] && die "$DIR already holds a cluster (stop it and remove the directory first)"
    for cmd in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool python3; do
        command -v "$cmd" >/dev/null || die "$cmd not found (apt-get install ceph-mon ceph-osd radosgw ceph-common)"
    done
    mkdir -p "$DIR"/{run,log,mon,osd,rgw,crash}
    DEADLINE=$((SECONDS + ${CEPH_START_TIMEOUT:-90}))
    trap 'fail "interrupted"' INT TERM

    local mon_port rgw_port
    mon_port=$(free_port)
    rgw_port=$(free_port)
    while [[ $rgw_port == "$mon_port" ]]; do rgw_port=$(free_port); done
    write_conf "$mon_port" "$rgw_port"
    : >"$DIR/keyring"

    # Monitor.
    local fsid
    fsid=$(ceph-conf -c "$DIR/ceph.conf" --lookup fsid)
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$DIR/ceph.conf" -i a --mkfs --monmap "$DIR/monmap" >>"$DIR/log/mkfs.out" 2>&1 ||
        fail "ceph-mon --mkfs failed"
    spawn mon.a ceph-mon -c "$DIR/ceph.conf" -i a -f
    until ceph_cli --connect-timeout 2 mon stat >/dev/null 2>&1; do
        deadline_check "waiting for the monitor"
        sleep 0.2
    done
    ceph_cli config set mon mon_warn_on_insecure_global_id_reclaim_allowed false >/dev/null 2>&1 || true

    # OSDs: register, mkfs (memstore: instant), start.
    local id uuid ids=()
    for ((i = 0; i < OSD_COUNT; i++)); do
        uuid=$(cat /proc/sys/kernel/random/uuid)
        id=$(ceph_cli osd new "$uuid") || fail "ceph osd new failed"
        mkdir -p "$DIR/osd/$id"
        ceph-osd -c "$DIR/ceph.conf" -i "$id" --mkfs --osd-uuid "$uuid" >>"$DIR/log/mkfs.out" 2>&1 ||
            fail "ceph-osd --mkfs $id failed"
        spawn "osd.$id" ceph-osd -c "$DIR/ceph.conf" -i "$id" -f
        ids+=("$id")
    done
    until [[ $(ceph_cli osd stat -f json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])' 2>/dev/null) == "$OSD_COUNT" ]]; do
        deadline_check "waiting for $OSD_COUNT OSDs up"
        sleep 0.3
    done

    # RGW's pools, made up front with few placement groups (size 3 / min_size 2 from the
    # defaults above, set again explicitly on the data pool), so radosgw finds them ready.
    # In parallel: the monitor folds the changes into a few map epochs.
    local pool pids=()
    for pool in .rgw.root default.rgw.control default.rgw.meta default.rgw.log \
        default.rgw.buckets.index default.rgw.buckets.non-ec default.rgw.buckets.data; do
        (ceph_cli osd pool create "$pool" 8 8 replicated >/dev/null 2>&1 &&
            ceph_cli osd pool application enable "$pool" rgw >/dev/null 2>&1) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || fail "creating RGW's pools failed"; done
    ceph_cli osd pool set default.rgw.buckets.data size 3 >/dev/null 2>&1 || fail "pool size"
    ceph_cli osd pool set default.rgw.buckets.data min_size 2 >/dev/null 2>&1 || fail "pool min_size"

    # radosgw (beast) and its S3 user.
    spawn client.rgw radosgw -c "$DIR/ceph.conf" -n client.rgw -f
    until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$rgw_port/" >/dev/null 2>&1; do
        kill -0 "$(<"$DIR/run/client.rgw.pid")" 2>/dev/null || fail "radosgw exited"
        deadline_check "waiting for radosgw on 127.0.0.1:$rgw_port"
        sleep 0.3
    done
    timeout 30 radosgw-admin -c "$DIR/ceph.conf" user create --uid "$USER_ID" --display-name "postgate tests" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >>"$DIR/log/radosgw-admin.out" 2>&1 ||
        fail "radosgw-admin user create failed"

    {
        echo "CEPH_RGW_ENDPOINT=http://127.0.0.1:$rgw_port"
        echo "CEPH_RGW_ACCESS_KEY=$ACCESS_KEY"
        echo "CEPH_RGW_SECRET_KEY=$SECRET_KEY"
        echo "CEPH_CONF=$DIR/ceph.conf"
        echo "CEPH_OSD_IDS=${ids[*]}"
        for id in "${ids[@]}"; do echo "CEPH_OSD_${id}_PID=$(<"$DIR/run/osd.$id.pid")"; done
        echo "CEPH_START_SECONDS=$SECONDS"
    } | tee "$DIR/env"
    trap - INT TERM
}

[[ $# -eq 2 ]] || die "usage: $0 start|stop DIR"
[[ $1 == stop && ! -d $2 ]] && exit 0
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
case $1 in
start) start ;;
stop) stop_all ;;
*) die "usage: $0 start|stop DIR" ;;
esac
