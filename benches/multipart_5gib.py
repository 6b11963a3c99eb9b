"""A 5 GiB multipart upload with boto3, against the disk's own write speed, in one run.

    python3 benches/multipart_5gib.py [--size-gib 5] [--postgate target/release/postgate]

Measures, on the same filesystem and in the same run:
- the disk limit: `dd if=/dev/zero bs=1M count=N conv=fdatasync` (N MiB = the upload size);
- boto3 `upload_file` of an N MiB file (8 parallel parts of 64 MiB, as `TransferConfig` sets),
  wall time from the first request to CompleteMultipartUpload's answer, as MB/s;
- the server's peak RSS (VmHWM of a fresh process) during that upload.
Targets: at least 70% of dd's MB/s, peak RSS under 128 MiB.
The test file is written before the clock starts and read from the page cache where it fits.
Needs boto3 (the test venv has it: `.venv/bin/python benches/multipart_5gib.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1))


def dd_mb_s(path: Path, mib: int) -> float:
    start = time.monotonic()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fdatasync"],
        check=True, capture_output=True,
    )
    elapsed = time.monotonic() - start
    path.unlink()
    return mib * MIB / elapsed / 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=5.0)
    ap.add_argument("--postgate", default=str(REPO / "target/release/postgate"))
    ap.add_argument("--out", default=str(REPO / "target/bench/multipart.json"))
    args = ap.parse_args()
    mib = int(args.size_gib * 1024)

    scratch = Path(tempfile.mkdtemp(prefix="pg-mpbench-", dir=REPO / "target"))
    try:
        disk = dd_mb_s(scratch / "dd.bin", mib)
        src = scratch / "upload.bin"
        with open(src, "wb") as f:
            chunk = os.urandom(MIB)
            for _ in range(mib):
                f.write(chunk)

        port = free_port()
        env = dict(os.environ, POSTGATE_ACCESS_KEY="PGBENCHMP", POSTGATE_SECRET_KEY="bench-secret",
                   POSTGATE_LOG="postgate=warn")
        server = subprocess.Popen(
            [args.postgate, "serve", "--data-dir", str(scratch / "data"), "--addr", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(endpoint + "/-/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="PGBENCHMP", aws_secret_access_key="bench-secret",
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
        )
        s3.create_bucket(Bucket="bench")
        transfer = TransferConfig(multipart_threshold=64 * MIB, multipart_chunksize=64 * MIB,
                                  max_concurrency=8)
        start = time.monotonic()
        s3.upload_file(str(src), "bench", "big", Config=transfer)
        elapsed = time.monotonic() - start
        head = s3.head_object(Bucket="bench", Key="big")
        assert head["ContentLength"] == mib * MIB, head
        peak_mib = vm_hwm_kib(server.pid) / 1024
        server.terminate()
        server.wait(timeout=30)

        put = mib * MIB / elapsed / 1e6
        rows = [
            ("disk: dd conv=fdatasync", f"{disk:,.0f} MB/s", "", ""),
            (f"boto3 upload_file {args.size_gib:g} GiB, 8 parts in flight", f"{put:,.0f} MB/s",
             f"{put / disk:.2f}x of dd", "PASS" if put >= 0.7 * disk else "FAIL (>= 0.70x)"),
            ("server peak RSS (VmHWM)", f"{peak_mib:.1f} MiB", "budget 128 MiB",
             "PASS" if peak_mib < 128 else "FAIL"),
        ]
        for r in rows:
            print(f"{r[0]:<50} {r[1]:>14}  {r[2]:<16} {r[3]}")
        print(f"ETag {head['ETag']}, {elapsed:.1f} s; load: {os.getloadavg()}")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"dd_mb_s": disk, "upload_mb_s": put, "ratio": put / disk,
                                   "peak_rss_mib": peak_mib, "seconds": elapsed}, indent=2))
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
