"""Probes a running cluster's RGW for conditional writes (the figures in docs/cluster.md).

    tests/ceph/cluster.sh start /tmp/c
    python tests/ceph/probe_conditional.py /tmp/c/env
    tests/ceph/cluster.sh stop /tmp/c

Not part of the suite: it prints what the backend does (status codes, a race of exclusive
creates, a compare-and-swap counter under contention, small-PUT latency), it asserts nothing.
"""

import statistics
import sys
import threading
import time
import uuid

import boto3
import botocore
from botocore.config import Config

env = dict(line.split("=", 1) for line in open(sys.argv[1]).read().splitlines() if "=" in line)
s3 = boto3.client(
    "s3",
    endpoint_url=env["CEPH_RGW_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id=env["CEPH_RGW_ACCESS_KEY"],
    aws_secret_access_key=env["CEPH_RGW_SECRET_KEY"],
    config=Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=50,
    ),
)
b = f"probe-{uuid.uuid4().hex[:8]}"
s3.create_bucket(Bucket=b)


def code(f) -> str:
    try:
        f()
        return "200"
    except botocore.exceptions.ClientError as e:
        return f'{e.response["ResponseMetadata"]["HTTPStatusCode"]} {e.response["Error"]["Code"]}'


print("If-None-Match * on a new key     :", code(lambda: s3.put_object(Bucket=b, Key="k", Body=b"1", IfNoneMatch="*")))
print("If-None-Match * on an existing key:", code(lambda: s3.put_object(Bucket=b, Key="k", Body=b"2", IfNoneMatch="*")))
quoted = s3.head_object(Bucket=b, Key="k")["ETag"]
print("If-Match, quoted current ETag    :", code(lambda: s3.put_object(Bucket=b, Key="k", Body=b"3", IfMatch=quoted)))
bare = quoted.strip('"')
print("If-Match, bare current ETag      :", code(lambda: s3.put_object(Bucket=b, Key="k", Body=b"3", IfMatch=bare)))
print("If-Match, stale ETag             :", code(lambda: s3.put_object(Bucket=b, Key="k", Body=b"4", IfMatch=bare)))
print("If-Match on a missing key        :", code(lambda: s3.put_object(Bucket=b, Key="none", Body=b"4", IfMatch=bare)))
up = s3.create_multipart_upload(Bucket=b, Key="k")
part = s3.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=1, Body=b"x")
print(
    "CompleteMultipartUpload, If-None-Match * on an existing key:",
    code(
        lambda: s3.complete_multipart_upload(
            Bucket=b,
            Key="k",
            UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            IfNoneMatch="*",
        )
    ),
    "-> body now",
    s3.get_object(Bucket=b, Key="k")["Body"].read()[:8],
)

# Exclusive creates: 32 writers race on one new key; exactly one should win each round.
wins = []
for r in range(20):
    results: list[str] = []
    barrier = threading.Barrier(32)

    def create(i: int, r: int = r) -> None:
        barrier.wait()
        results.append(code(lambda: s3.put_object(Bucket=b, Key=f"race/{r}", Body=str(i).encode(), IfNoneMatch="*")))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins.append(results.count("200"))
print("If-None-Match * race, winners per round (32 writers):", wins)

# A compare-and-swap counter: 16 threads x 10 increments (GET, then PUT If-Match, retry on 412).
s3.put_object(Bucket=b, Key="counter", Body=b"0")
retries = [0]
lock = threading.Lock()
ok_attempts: list[float] = []


def increment() -> None:
    for _ in range(10):
        while True:
            t0 = time.perf_counter()
            got = s3.get_object(Bucket=b, Key="counter")
            value, etag = int(got["Body"].read()), got["ETag"].strip('"')
            try:
                s3.put_object(Bucket=b, Key="counter", Body=str(value + 1).encode(), IfMatch=etag)
                with lock:
                    ok_attempts.append(time.perf_counter() - t0)
                break
            except botocore.exceptions.ClientError:
                with lock:
                    retries[0] += 1


threads = [threading.Thread(target=increment) for _ in range(16)]
t0 = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - t0
final = s3.get_object(Bucket=b, Key="counter")["Body"].read().decode()
print(
    f"CAS counter: final {final} (want 160), {retries[0]} retries, {160 / elapsed:.0f} increments/s, "
    f"median successful attempt {statistics.median(ok_attempts) * 1000:.1f} ms"
)


def latency(f, n: int = 200) -> str:
    xs = []
    for i in range(n):
        t0 = time.perf_counter()
        f(i)
        xs.append(time.perf_counter() - t0)
    xs.sort()
    return f"p50 {xs[n // 2] * 1000:.1f} ms, p99 {xs[int(n * 0.99)] * 1000:.1f} ms"


print("PUT 1 KiB                  :", latency(lambda i: s3.put_object(Bucket=b, Key=f"lat/{i}", Body=b"x" * 1024)))
print("PUT 1 KiB, If-None-Match * :", latency(lambda i: s3.put_object(Bucket=b, Key=f"lat2/{i}", Body=b"x" * 1024, IfNoneMatch="*")))
