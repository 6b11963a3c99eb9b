#!/usr/bin/env bash
# The Ceph interop module's upload tests (tests/interop/test_ceph_cluster.py) against a
# three-node Garage cluster in network namespaces (tests/garage/cluster.sh): a documented run,
# not CI (docs/cluster.md, "Runs against other backends"). Needs root, a `garage` binary
# (GARAGE_BIN), a built postgate (POSTGATE_BIN, default target/debug/postgate) and the interop
# venv (PYTHON, default /work/main/.venv/bin/python or python3). Extra arguments go to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$(mktemp -d /tmp/postgate-garage.XXXXXX)
PYTHON=${PYTHON:-$( [[ -x /work/main/.venv/bin/python ]] && echo /work/main/.venv/bin/python || echo python3 )}
trap 'bash "$REPO/tests/garage/cluster.sh" stop "$DIR"' EXIT
bash "$REPO/tests/garage/cluster.sh" start "$DIR" >/dev/null
# shellcheck disable=SC1091
source "$DIR/env"
POSTGATE_TEST_BACKEND=external \
    POSTGATE_TEST_BACKEND_ENDPOINT=$GARAGE_S3_ENDPOINT \
    POSTGATE_TEST_BACKEND_ACCESS_KEY=$GARAGE_ACCESS_KEY \
    POSTGATE_TEST_BACKEND_SECRET_KEY=$GARAGE_SECRET_KEY \
    POSTGATE_BIN=${POSTGATE_BIN:-$REPO/target/debug/postgate} \
    "$PYTHON" -m pytest "$REPO/tests/interop/test_ceph_cluster.py" -q -rs "$@"
