"""The AWS SDK for JavaScript v3 (client-s3, lib-storage, s3-presigned-post) against postgate.

The tests themselves are in `tests/interop/node/*.test.mjs`, run by Node's built-in test runner
(`node --test`) against the session's server and a fresh bucket, passed as environment variables
(POSTGATE_ENDPOINT, POSTGATE_ACCESS_KEY, POSTGATE_SECRET_KEY, POSTGATE_REGION, POSTGATE_BUCKET).

The npm packages are pinned in `tests/interop/node/package-lock.json`; `tests/run.sh` installs
them (`npm ci`). Without them, or without node, this module is skipped, except under CI, where
that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
IN_CI = bool(os.environ.get("CI"))
TIMEOUT_S = 120


def _node() -> str:
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not (NODE_DIR / "node_modules").is_dir():
        missing = f"{NODE_DIR / 'node_modules'} is missing (run `npm ci` there, or tests/run.sh)"
    if missing:
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)
    return node


def test_aws_sdk_js_v3(server, bucket):
    node = _node()
    test_files = sorted(str(p) for p in NODE_DIR.glob("*.test.mjs"))
    assert test_files, f"no *.test.mjs in {NODE_DIR}"
    env = dict(os.environ)
    env.update(
        POSTGATE_ENDPOINT=server.endpoint,
        POSTGATE_ACCESS_KEY=server.access_key,
        POSTGATE_SECRET_KEY=server.secret_key,
        POSTGATE_REGION=server.region,
        POSTGATE_BUCKET=bucket,
        NO_COLOR="1",
    )
    # The files are named rather than the folder: how `node --test DIR` searches differs between
    # Node versions.
    cmd = [node, "--test", "--test-reporter=spec", *test_files]
    try:
        proc = subprocess.run(
            cmd,
            cwd=NODE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode("utf-8", "replace")
        pytest.fail(f"node --test did not finish within {TIMEOUT_S}s; its output:\n{out}")
    out = proc.stdout.decode("utf-8", "replace")
    print(out)
    assert proc.returncode == 0, f"node --test exited with {proc.returncode}; its output:\n{out}"
