"""A real Ceph cluster (tests/ceph/cluster.sh: one monitor, three memstore OSDs, radosgw) and
boto3 against its RGW: the ground the S3 backend's tests stand on. Then postgate itself in
front of it (`serve --backend s3`, one backend bucket created in RGW first): boto3 round trips,
presigned POSTs, a 20 MiB PUT stored as a backend multipart upload and an upload link posted
from headless Chromium, each checked through postgate and in RGW (`{bucket}/{key}`).

The cluster starts once per session. It is skipped only when POSTGATE_SKIP_CEPH=1 is set; a
cluster that cannot start fails the module (the Ceph packages are part of CI's install).

The last test kills one OSD with SIGKILL while uploads are in flight, directly to RGW and
through postgate, so it must stay last in this module: later tests here would run on two OSDs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import boto3
import botocore
import pytest
import urllib3
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "tests" / "ceph" / "cluster.sh"
MIB = 1024 * 1024


class Cluster:
    def __init__(self, directory: Path, env: dict[str, str]):
        self.dir = directory
        self.endpoint = env["CEPH_RGW_ENDPOINT"]
        self.access_key = env["CEPH_RGW_ACCESS_KEY"]
        self.secret_key = env["CEPH_RGW_SECRET_KEY"]
        self.conf = env["CEPH_CONF"]
        self.osd_pids = {int(i): int(env[f"CEPH_OSD_{i}_PID"]) for i in env["CEPH_OSD_IDS"].split()}
        self.start_seconds = int(env.get("CEPH_START_SECONDS", "0"))

    def logs_tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted((self.dir / "log").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"---- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _other_backend(kind: str, directory: Path):
    """The backend named by POSTGATE_TEST_BACKEND when it is not Ceph (documented runs, not CI;
    docs/cluster.md "Runs against other backends"), as the env lines cluster.sh would print:
    `postgate` starts a second postgate (local store) as the cluster; `external` takes a running
    S3 service from POSTGATE_TEST_BACKEND_ENDPOINT, _ACCESS_KEY and _SECRET_KEY (Garage,
    tests/garage/cluster.sh). Neither has OSDs: the OSD-kill test skips."""
    if kind == "external":
        return None, {
            "CEPH_RGW_ENDPOINT": os.environ["POSTGATE_TEST_BACKEND_ENDPOINT"],
            "CEPH_RGW_ACCESS_KEY": os.environ["POSTGATE_TEST_BACKEND_ACCESS_KEY"],
            "CEPH_RGW_SECRET_KEY": os.environ["POSTGATE_TEST_BACKEND_SECRET_KEY"],
            "CEPH_CONF": "",
            "CEPH_OSD_IDS": "",
        }
    assert kind == "postgate", f"POSTGATE_TEST_BACKEND={kind!r}: ceph, postgate or external"
    from conftest import _binary, _free_port, _wait_ok

    access, secret = "PGBACKENDKEY0001", "backend-secret-key-0123456789abcdefghij"
    env = {k: v for k, v in os.environ.items() if k != "POSTGATE_CONFIG"}
    env.update(POSTGATE_ACCESS_KEY=access, POSTGATE_SECRET_KEY=secret, NO_COLOR="1")
    endpoint = f"http://127.0.0.1:{_free_port()}"
    (directory / "log").mkdir()
    with open(directory / "log" / "backend-postgate.log", "ab") as log:
        process = subprocess.Popen(
            [str(_binary()), "serve", "--data-dir", str(directory / "data"), "--addr", endpoint.removeprefix("http://")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    if not _wait_ok(f"{endpoint}/-/health", process, time.monotonic() + 20):
        process.kill()
        pytest.fail("the backend postgate did not become healthy in 20 s")
    return process, {
        "CEPH_RGW_ENDPOINT": endpoint,
        "CEPH_RGW_ACCESS_KEY": access,
        "CEPH_RGW_SECRET_KEY": secret,
        "CEPH_CONF": "",
        "CEPH_OSD_IDS": "",
    }


@pytest.fixture(scope="session")
def ceph(tmp_path_factory):
    if os.environ.get("POSTGATE_SKIP_CEPH") == "1":
        pytest.skip("POSTGATE_SKIP_CEPH=1")
    directory = tmp_path_factory.mktemp("ceph")
    kind = os.environ.get("POSTGATE_TEST_BACKEND", "ceph")
    if kind != "ceph":
        from conftest import _stop

        process, env = _other_backend(kind, directory)
        try:
            yield Cluster(directory, env)
        finally:
            if process is not None:
                _stop(process)
        return
    try:
        started = subprocess.run(
            ["bash", str(CLUSTER_SH), "start", str(directory)],
            capture_output=True,
            text=True,
            timeout=150,
        )
    except subprocess.TimeoutExpired as e:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(directory)], timeout=60)
        pytest.fail(f"cluster.sh start did not return in 150 s: {e.stderr}")
    if started.returncode != 0:
        pytest.fail(f"cluster.sh start failed ({started.returncode}):\n{started.stderr[-6000:]}")
    env = dict(line.split("=", 1) for line in started.stdout.splitlines() if line.startswith("CEPH_"))
    cluster = Cluster(directory, env)
    try:
        yield cluster
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(directory)], timeout=60)
        left = subprocess.run(["pgrep", "-f", f"-c {directory}/ceph.conf"], capture_output=True, text=True)
        assert not left.stdout.strip(), f"cluster.sh stop left processes: {left.stdout}"


def rgw_client(ceph: Cluster):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=ceph.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ceph.access_key,
        aws_secret_access_key=ceph.secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            # No retries: a failed upload must raise, not be papered over by a second attempt.
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=90,
            # Plain requests: Ceph 16's RGW neither keeps nor returns the flexible checksums
            # botocore adds by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=16,
        ),
    )


@pytest.fixture
def s3(ceph):
    return rgw_client(ceph)


@pytest.fixture
def bucket(s3):
    name = f"pg-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def test_round_trip(s3, bucket):
    body = os.urandom(100_000)
    put = s3.put_object(
        Bucket=bucket, Key="dir/a.bin", Body=body, ContentType="application/x-test", Metadata={"color": "blue"}
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    got = s3.get_object(Bucket=bucket, Key="dir/a.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"color": "blue"}

    head = s3.head_object(Bucket=bucket, Key="dir/a.bin")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"]

    s3.put_object(Bucket=bucket, Key="dir/b.txt", Body=b"b")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/a.bin", "dir/b.txt"]

    s3.delete_object(Bucket=bucket, Key="dir/a.bin")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key="dir/a.bin")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/b.txt"]


def _post_form(url: str, fields: dict[str, str], data: bytes):
    form = list(fields.items()) + [("file", ("upload.bin", data, "application/octet-stream"))]
    return urllib3.PoolManager().request("POST", url, fields=form, timeout=30, retries=False)


def test_presigned_post(s3, bucket):
    post = s3.generate_presigned_post(
        Bucket=bucket,
        Key="forms/${filename}",
        Fields={"success_action_status": "201"},
        Conditions=[{"success_action_status": "201"}, ["starts-with", "$key", "forms/"], ["content-length-range", 1, 1000]],
        ExpiresIn=300,
    )
    body = os.urandom(1000)
    r = _post_form(post["url"], post["fields"], body)
    assert r.status == 201, r.data
    assert b"<Key>forms/upload.bin</Key>" in r.data
    assert s3.get_object(Bucket=bucket, Key="forms/upload.bin")["Body"].read() == body

    # Over content-length-range: refused, nothing stored.
    post = s3.generate_presigned_post(
        Bucket=bucket, Key="forms/big.bin", Conditions=[["content-length-range", 1, 1000]], ExpiresIn=300
    )
    r = _post_form(post["url"], post["fields"], os.urandom(1001))
    assert r.status == 400, r.data
    assert b"EntityTooLarge" in r.data
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["forms/upload.bin"]


def test_multipart_three_parts(s3, bucket):
    parts_data = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(MIB + 7)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp.bin", ContentType="video/mp4")
    parts = []
    for n, data in enumerate(parts_data, start=1):
        r = s3.upload_part(Bucket=bucket, Key="mp.bin", UploadId=up["UploadId"], PartNumber=n, Body=data)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    listed = s3.list_parts(Bucket=bucket, Key="mp.bin", UploadId=up["UploadId"])
    assert [p["Size"] for p in listed["Parts"]] == [len(d) for d in parts_data]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp.bin", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )
    # Ceph 16 leaves CompleteMultipartUploadResult's ETag empty; HEAD carries the multipart ETag.
    assert done["Key"] == "mp.bin"
    assert s3.head_object(Bucket=bucket, Key="mp.bin")["ETag"].strip('"').endswith("-3")

    whole = b"".join(parts_data)
    got = s3.get_object(Bucket=bucket, Key="mp.bin")
    assert got["ContentType"] == "video/mp4"
    assert got["ContentLength"] == len(whole)
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(whole).digest()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# ---------------------------------------------------------------------------------------------
# Through postgate: `postgate serve --backend s3` in front of the cluster's RGW. Every postgate
# object `{bucket}/{key}` is the backend object `{bucket}/{key}` in one backend bucket.

PG_ACCESS_KEY = "PGCEPHADMINKEY01"
PG_SECRET_KEY = "ceph-secret-key-0123456789abcdefghijkl"


class Gateway:
    """One postgate process with `--backend s3` against the cluster's RGW."""

    def __init__(self, root: Path, ceph: Cluster, backend_bucket: str, extra_env: dict | None = None):
        from conftest import _binary, _free_port, _wait_ok

        self.binary = _binary()
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.backend_bucket = backend_bucket
        self.env = dict(os.environ)
        self.env.pop("POSTGATE_CONFIG", None)
        self.env.update(
            POSTGATE_ACCESS_KEY=PG_ACCESS_KEY,
            POSTGATE_SECRET_KEY=PG_SECRET_KEY,
            POSTGATE_LOG=os.environ.get("POSTGATE_LOG", "postgate=debug,tower_http=info"),
            NO_COLOR="1",
            # The backend's credentials (the conftest clears AWS_* for the clients' sake).
            AWS_ACCESS_KEY_ID=ceph.access_key,
            AWS_SECRET_ACCESS_KEY=ceph.secret_key,
        )
        self.env.update(extra_env or {})
        for _attempt in range(3):
            self.endpoint = f"http://127.0.0.1:{_free_port()}"
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [
                        str(self.binary), "serve",
                        "--data-dir", str(self.data_dir),
                        "--addr", self.endpoint.removeprefix("http://"),
                        "--backend", "s3",
                        "--backend-endpoint", ceph.endpoint,
                        "--backend-bucket", backend_bucket,
                        "--backend-region", "us-east-1",
                    ],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.env, cwd=root,
                )
            if _wait_ok(f"{self.endpoint}/-/health", self.process, time.monotonic() + 20):
                return
            self.stop()
        pytest.fail("postgate --backend s3 did not become healthy in 20 s; its log:\n" + self.log_text())

    def stop(self) -> None:
        from conftest import _stop

        _stop(self.process)

    # The conftest's failure hook attaches these to a failing test's report.
    def log_text(self, start: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def client(self, **config):
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=PG_ACCESS_KEY,
            aws_secret_access_key=PG_SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=5,
                read_timeout=90,
                max_pool_connections=16,
                **config,
            ),
        )

    def create_link(self, bucket: str, max_size: str) -> str:
        res = subprocess.run(
            [
                str(self.binary), "link", "create", bucket, "--prefix", "in/",
                "--max-size", max_size, "--max-files", "10", "--expires", "1h",
                "--url", self.endpoint, "--data-dir", str(self.data_dir),
            ],
            env=self.env, capture_output=True, text=True, timeout=30,
        )
        assert res.returncode == 0, f"postgate link create failed: {res.stderr}"
        url = res.stdout.strip().splitlines()[-1]
        assert url.startswith(f"{self.endpoint}/-/u/"), res.stdout
        return url


@pytest.fixture(scope="module")
def pg(ceph, tmp_path_factory):
    backend_bucket = f"pgbackend-{uuid.uuid4().hex[:12]}"
    rgw_client(ceph).create_bucket(Bucket=backend_bucket)
    gw = Gateway(tmp_path_factory.mktemp("postgate-ceph"), ceph, backend_bucket)
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _attach_pg_log(request):
    # Picked up by conftest's pytest_runtest_makereport: postgate's log during a failing test.
    if "pg" in request.fixturenames:
        gw = request.getfixturevalue("pg")
        request.node._postgate_server = gw
        request.node._postgate_log_start = gw.log_size()
    yield


@pytest.fixture
def pgs3(pg):
    return pg.client()


@pytest.fixture
def pgbucket(pgs3):
    name = f"pb-{uuid.uuid4().hex[:12]}"
    pgs3.create_bucket(Bucket=name)
    return name


def _status(e: botocore.exceptions.ClientError) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


def _backend_keys(s3, pg: Gateway, bucket: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=pg.backend_bucket, Prefix=f"{bucket}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def _backend_uploads(s3, pg: Gateway, bucket: str) -> list[str]:
    listed = s3.list_multipart_uploads(Bucket=pg.backend_bucket, Prefix=f"{bucket}/")
    return [u["Key"] for u in listed.get("Uploads", [])]


def test_through_postgate_round_trip(s3, pg, pgs3, pgbucket):
    body = os.urandom(100_000)  # past --inline-max-bytes: sent to RGW as the body arrives
    small = b"small body"
    put = pgs3.put_object(
        Bucket=pgbucket, Key="dir/a.bin", Body=body, ContentType="application/x-test", Metadata={"color": "blue"}
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    pgs3.put_object(Bucket=pgbucket, Key="dir/b.txt", Body=small)

    got = pgs3.get_object(Bucket=pgbucket, Key="dir/a.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"color": "blue"}
    assert got["ETag"] == put["ETag"]
    head = pgs3.head_object(Bucket=pgbucket, Key="dir/a.bin")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"]
    assert pgs3.get_object(Bucket=pgbucket, Key="dir/b.txt")["Body"].read() == small
    listed = pgs3.list_objects_v2(Bucket=pgbucket, Prefix="dir/")
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [("dir/a.bin", len(body)), ("dir/b.txt", len(small))]

    # The same objects in RGW, as `{bucket}/{key}` in the backend bucket, with the client's
    # metadata beside postgate's own.
    raw = s3.get_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/dir/a.bin")
    assert raw["Body"].read() == body
    assert raw["ContentType"] == "application/x-test"
    assert raw["Metadata"]["color"] == "blue"
    assert s3.get_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/dir/b.txt")["Body"].read() == small
    assert _backend_keys(s3, pg, pgbucket) == [f"{pgbucket}/dir/a.bin", f"{pgbucket}/dir/b.txt"]

    pgs3.delete_object(Bucket=pgbucket, Key="dir/a.bin")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        pgs3.head_object(Bucket=pgbucket, Key="dir/a.bin")
    assert _status(e.value) == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        pgs3.get_object(Bucket=pgbucket, Key="dir/a.bin")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    assert [o["Key"] for o in pgs3.list_objects_v2(Bucket=pgbucket)["Contents"]] == ["dir/b.txt"]
    assert _backend_keys(s3, pg, pgbucket) == [f"{pgbucket}/dir/b.txt"]


def test_through_postgate_presigned_post(s3, pg, pgs3, pgbucket):
    post = pgs3.generate_presigned_post(
        Bucket=pgbucket,
        Key="forms/${filename}",
        Fields={"success_action_status": "201"},
        Conditions=[
            {"success_action_status": "201"},
            ["starts-with", "$key", "forms/"],
            ["content-length-range", 1, 200_000],
        ],
        ExpiresIn=300,
    )
    body = os.urandom(150_000)
    r = _post_form(post["url"], post["fields"], body)
    assert r.status == 201, r.data
    assert b"<Key>forms/upload.bin</Key>" in r.data
    assert pgs3.get_object(Bucket=pgbucket, Key="forms/upload.bin")["Body"].read() == body
    assert s3.get_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/forms/upload.bin")["Body"].read() == body

    # Over content-length-range (and past --inline-max-bytes, so the body was on its way to
    # RGW when it was found too large): refused, and RGW holds no key and no open upload.
    post = pgs3.generate_presigned_post(
        Bucket=pgbucket, Key="forms/big.bin", Conditions=[["content-length-range", 1, 200_000]], ExpiresIn=300
    )
    r = _post_form(post["url"], post["fields"], os.urandom(300_000))
    assert r.status == 400, r.data
    assert b"<Code>EntityTooLarge</Code>" in r.data, r.data
    with pytest.raises(botocore.exceptions.ClientError) as e:
        pgs3.head_object(Bucket=pgbucket, Key="forms/big.bin")
    assert _status(e.value) == 404
    assert _backend_keys(s3, pg, pgbucket) == [f"{pgbucket}/forms/upload.bin"]
    assert _backend_uploads(s3, pg, pgbucket) == []


def test_through_postgate_20_mib_put_is_a_backend_multipart_upload(s3, pg, pgs3, pgbucket):
    body = os.urandom(20 * MIB)
    put = pgs3.put_object(Bucket=pgbucket, Key="big.bin", Body=body)
    etag = put["ETag"].strip('"')
    assert re.fullmatch(r"[0-9a-f]{32}-[0-9]+", etag), etag
    raw_head = s3.head_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/big.bin")
    assert raw_head["ETag"] == put["ETag"]
    assert raw_head["ContentLength"] == len(body)

    got = pgs3.get_object(Bucket=pgbucket, Key="big.bin")
    assert got["ContentLength"] == len(body)
    assert got["ETag"] == put["ETag"]
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(body).digest()

    # Ranges: across the backend's part boundaries, and the last bytes.
    for first, last in ((5 * MIB - 10, 5 * MIB + 9), (8 * MIB - 1, 16 * MIB + 1), (len(body) - 100, len(body) - 1)):
        ranged = pgs3.get_object(Bucket=pgbucket, Key="big.bin", Range=f"bytes={first}-{last}")
        assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert ranged["ContentRange"] == f"bytes {first}-{last}/{len(body)}"
        assert ranged["Body"].read() == body[first : last + 1]
    suffix = pgs3.get_object(Bucket=pgbucket, Key="big.bin", Range="bytes=-1000")
    assert suffix["Body"].read() == body[-1000:]
    assert _backend_uploads(s3, pg, pgbucket) == []

    # The same size with a wrong Content-MD5: found only at the end of the body, after its
    # parts went to RGW; refused, and the backend upload is aborted (no key, no open upload).
    wrong_md5 = base64.b64encode(hashlib.md5(b"other bytes").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        pgs3.put_object(Bucket=pgbucket, Key="bad.bin", Body=os.urandom(20 * MIB), ContentMD5=wrong_md5)
    assert e.value.response["Error"]["Code"] == "BadDigest"
    assert _status(e.value) == 400
    assert _backend_keys(s3, pg, pgbucket) == [f"{pgbucket}/big.bin"]
    assert _backend_uploads(s3, pg, pgbucket) == []


def test_through_postgate_client_multipart_upload(s3, pg, pgs3, pgbucket):
    """A client's multipart upload through postgate maps onto RGW's own multipart upload: boto3's
    upload_file in 5 MiB parts (a retried part, an abort), read back whole through postgate and
    from RGW, with no upload left open."""
    import io

    from boto3.s3.transfer import TransferConfig

    body = os.urandom(13 * MIB)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=3)
    pgs3.upload_fileobj(
        io.BytesIO(body), pgbucket, "parts.bin", Config=config, ExtraArgs={"Metadata": {"color": "green"}}
    )
    head = pgs3.head_object(Bucket=pgbucket, Key="parts.bin")
    assert re.fullmatch(r'"[0-9a-f]{32}-3"', head["ETag"]), head["ETag"]
    assert head["ContentLength"] == len(body)
    assert head["Metadata"] == {"color": "green"}
    raw = s3.get_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/parts.bin")
    assert raw["ETag"] == head["ETag"]
    assert hashlib.sha256(raw["Body"].read()).digest() == hashlib.sha256(body).digest()
    got = pgs3.get_object(Bucket=pgbucket, Key="parts.bin")
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(body).digest()

    # A part sent twice: the second wins. Then an aborted upload leaves nothing in RGW.
    up = pgs3.create_multipart_upload(Bucket=pgbucket, Key="twice.bin")["UploadId"]
    first, second = os.urandom(5 * MIB), os.urandom(5 * MIB)
    pgs3.upload_part(Bucket=pgbucket, Key="twice.bin", UploadId=up, PartNumber=1, Body=first)
    etag = pgs3.upload_part(Bucket=pgbucket, Key="twice.bin", UploadId=up, PartNumber=1, Body=second)["ETag"]
    pgs3.complete_multipart_upload(
        Bucket=pgbucket, Key="twice.bin", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}
    )
    assert pgs3.get_object(Bucket=pgbucket, Key="twice.bin")["Body"].read() == second
    gone = pgs3.create_multipart_upload(Bucket=pgbucket, Key="gone.bin")["UploadId"]
    pgs3.upload_part(Bucket=pgbucket, Key="gone.bin", UploadId=gone, PartNumber=1, Body=first)
    pgs3.abort_multipart_upload(Bucket=pgbucket, Key="gone.bin", UploadId=gone)
    assert _backend_uploads(s3, pg, pgbucket) == []
    assert sorted(_backend_keys(s3, pg, pgbucket)) == [f"{pgbucket}/parts.bin", f"{pgbucket}/twice.bin"]


def test_through_postgate_upload_link_from_chromium(s3, pg, pgs3, pgbucket, tmp_path):
    # The browser suite's helpers; without Chromium it skips (and fails under CI).
    tb = pytest.importorskip("test_browser")
    driver, profile = tb._chrome(javascript=True)
    try:
        url = pg.create_link(pgbucket, max_size="1MiB")
        small, large = b"from chromium\n" * 30, os.urandom(400_000)
        paths = []
        for name, data in (("small.txt", small), ("large.bin", large)):
            p = tmp_path / name
            p.write_bytes(data)
            paths.append(str(p))
        tb.open_link_page(driver, url)
        tb.upload(driver, *paths)
        rows = tb.settled_rows(driver, 2)
        for row in rows:
            assert "done" in row["classes"] and "failed" not in row["classes"], row
        assert {row["key"] for row in rows} == {"in/small.txt", "in/large.bin"}, rows
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert pgs3.get_object(Bucket=pgbucket, Key="in/small.txt")["Body"].read() == small
    assert pgs3.get_object(Bucket=pgbucket, Key="in/large.bin")["Body"].read() == large
    assert s3.get_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/in/small.txt")["Body"].read() == small
    assert s3.get_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/in/large.bin")["Body"].read() == large
    assert sorted(_backend_keys(s3, pg, pgbucket)) == [f"{pgbucket}/in/large.bin", f"{pgbucket}/in/small.txt"]


class _SlowBody:
    """An upload body that trickles out at about 3.4 MiB/s (a pause at every 512 KiB), so the
    upload is still in flight when the OSD dies. botocore reads a body twice over plain HTTP
    (once to hash it for SigV4, then to send it), so `started` is set once the first MiB of the
    last pass has been read: when the server is receiving it. With `release`, the body then
    waits for it (set right after the kill), so that uploads of any size are all mid-body when
    the OSD dies."""

    STEP = 512 * 1024
    PAUSE_S = 0.15

    def __init__(self, data: bytes, started: threading.Event, passes: int, release: threading.Event | None = None):
        self.data = data
        self.release = release
        self.pos = 0
        self.started = started
        self.passes_left = passes

    def __len__(self):
        return len(self.data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = len(self.data) - self.pos
        start = self.pos
        chunk = self.data[start : start + n]
        self.pos += len(chunk)
        if self.pos // self.STEP != start // self.STEP:
            time.sleep(self.PAUSE_S)
        if self.passes_left == 1 and self.pos >= MIB and not self.started.is_set():
            self.started.set()
            if self.release is not None:
                self.release.wait(60)
        if self.pos >= len(self.data) and chunk:
            self.passes_left -= 1
        return chunk

    def seek(self, pos: int, whence: int = 0):
        self.pos = pos if whence == 0 else (len(self.data) + pos if whence == 2 else self.pos + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos


PG_SH = REPO / "tests" / "pg" / "cluster.sh"


def test_two_nodes_hold_a_links_max_files(ceph, s3, tmp_path_factory):
    """Two postgate nodes over the cluster's RGW sharing one PostgreSQL (`--control-db`): 20
    concurrent form uploads alternating between them on a link with max_files 5 store exactly 5
    files in RGW, refuse 15 with the link's full answer, and both nodes count 5."""
    import concurrent.futures
    import json

    import tempfile

    # Straight under /tmp: the `postgres` user must reach it (pytest's own dirs are root's alone).
    pgdir = Path(tempfile.mkdtemp(prefix="postgate-pg-"))
    started = subprocess.run(["bash", str(PG_SH), "start", str(pgdir)], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().split("POSTGATE_CONTROL_DB=", 1)[1].splitlines()[0]
    backend_bucket = f"pgnodes-{uuid.uuid4().hex[:12]}"
    rgw_client(ceph).create_bucket(Bucket=backend_bucket)
    nodes = []
    try:
        for name in ("a", "b"):
            nodes.append(
                Gateway(tmp_path_factory.mktemp(f"node-{name}"), ceph, backend_bucket,
                        {"POSTGATE_CONTROL_DB": url, "POSTGATE_NODE_ID": f"node-{name}"})
            )
        bucket = f"nb-{uuid.uuid4().hex[:12]}"
        # Buckets are shared: made on one node, every node has it (at once on the change's
        # notification, within 5 s at worst).
        nodes[0].client().create_bucket(Bucket=bucket)
        deadline = time.monotonic() + 10
        while True:
            try:
                nodes[1].client().head_bucket(Bucket=bucket)
                break
            except botocore.exceptions.ClientError:
                assert time.monotonic() < deadline, "node b never had the bucket"
                time.sleep(0.05)
        http = urllib3.PoolManager(maxsize=32)
        auth = {"authorization": f"Bearer {PG_ACCESS_KEY}:{PG_SECRET_KEY}"}
        made = http.request("POST", f"{nodes[0].endpoint}/-/api/links", headers=auth,
                            body=json.dumps({"bucket": bucket, "prefix": "in/", "max_files": 5}))
        assert made.status == 201, made.data
        link = json.loads(made.data)
        token = link["url"].rsplit("/-/u/", 1)[1]
        forms = []
        for i in range(20):
            node = nodes[i % 2]
            res = http.request("GET", f"{node.endpoint}/-/u/{token}/policy?filename=f{i}.txt&type=text%2Fplain")
            assert res.status == 200, res.data
            forms.append(json.loads(res.data))

        def post(i: int) -> urllib3.BaseHTTPResponse:
            form = forms[i]
            fields = list(form["fields"].items()) + [("file", ("f.txt", f"file {i}".encode(), "text/plain"))]
            return http.request("POST", form["url"], fields=fields)

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(post, range(20)))
        statuses = sorted(r.status for r in answers)
        assert statuses == [201] * 5 + [403] * 15, statuses
        for r in answers:
            if r.status == 403:
                assert b"received all the files" in r.data, r.data
        listed = s3.list_objects_v2(Bucket=backend_bucket, Prefix=f"{bucket}/in/")
        assert len(listed.get("Contents", [])) == 5
        for node in nodes:
            res = http.request("GET", f"{node.endpoint}/-/api/links", headers=auth)
            mine = [l for l in json.loads(res.data)["links"] if l["id"] == link["id"]]
            assert mine and mine[0]["uploaded_files"] == 5, mine
    finally:
        for node in nodes:
            node.stop()
        subprocess.run(["bash", str(PG_SH), "stop", str(pgdir)], timeout=60)
        shutil.rmtree(pgdir, ignore_errors=True)


def _slow_chunks(data: bytes, started: threading.Event, release: threading.Event):
    """A POST body sent at the pace of `_SlowBody` (one pass: urllib3 does not hash it);
    `started` is set once the first MiB is out, then the rest waits for `release`."""
    for pos in range(0, len(data), _SlowBody.STEP):
        yield data[pos : pos + _SlowBody.STEP]
        if pos + _SlowBody.STEP >= MIB and not started.is_set():
            started.set()
            release.wait(60)
        time.sleep(_SlowBody.PAUSE_S)


def _pg_post(pgs3, bucket: str, key: str, data: bytes, slow: tuple | None = None) -> str:
    """POSTs `data` with a presigned form (201); "ok" once postgate acknowledged it with its
    key, otherwise raises. The body goes through `_slow_chunks(body, *slow)` when given."""
    post = pgs3.generate_presigned_post(
        Bucket=bucket, Key=key, Fields={"success_action_status": "201"},
        Conditions=[{"success_action_status": "201"}], ExpiresIn=600,
    )
    fields = list(post["fields"].items()) + [("file", ("f.bin", data, "application/octet-stream"))]
    body, content_type = urllib3.encode_multipart_formdata(fields)
    r = urllib3.PoolManager().request(
        "POST", post["url"],
        body=_slow_chunks(body, *slow) if slow else body,
        headers={"Content-Type": content_type, "Content-Length": str(len(body))},
        timeout=urllib3.Timeout(connect=5, read=90), retries=False,
    )
    if r.status == 201 and f"<Key>{key}</Key>".encode() in r.data:
        return "ok"
    # A refusal must be an S3 error document, never a success status with something else.
    assert r.status >= 400 and b"<Code>" in r.data, (key, r.status, r.data[:500])
    raise RuntimeError(f"POST {key}: {r.status} {r.data[:200]!r}")


# Clean failures of an upload through postgate: an S3 error, or the connection dropped/timed out.
_CLEAN_FAILURES = (
    botocore.exceptions.ClientError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ConnectionError,
    urllib3.exceptions.HTTPError,
    RuntimeError,  # _pg_post's S3 error answer
)


# Must stay the module's last test (see the module docstring).
def test_kill_one_osd_during_uploads(ceph, s3, bucket, pg, pgbucket):
    """RGW directly and postgate in front of it, both with uploads in flight when one OSD is
    killed: each upload either succeeds whole or fails cleanly, and whatever was acknowledged
    reads back byte-exact (through postgate and from RGW)."""
    if not ceph.osd_pids:
        pytest.skip("the backend is not Ceph (POSTGATE_TEST_BACKEND): no OSD to kill")
    uploads = 8
    payloads = {f"inflight/{i}.bin": os.urandom(8 * MIB) for i in range(uploads)}
    # Through postgate: slow PUTs and POSTs of 1.5-20 MiB, all mid-body at the kill...
    pg_slow = {
        "slow/put-4.bin": ("put", os.urandom(4 * MIB)),
        "slow/put-12.bin": ("put", os.urandom(12 * MIB)),
        "slow/put-20.bin": ("put", os.urandom(20 * MIB)),
        "slow/post-1.bin": ("post", os.urandom(MIB + MIB // 2)),
        "slow/post-4.bin": ("post", os.urandom(4 * MIB)),
        "slow/post-10.bin": ("post", os.urandom(10 * MIB + 12345)),
    }
    started = {key: threading.Event() for key in [*payloads, *pg_slow]}
    release = threading.Event()
    outcome: dict[str, object] = {}
    # ...and 1-3 MiB PUTs and POSTs, one after another from the kill until the slow ones end.
    pg_fast: dict[str, bytes] = {}
    fast_done = threading.Event()

    # One client per upload, made here (not in the threads), and a barrier so that all start
    # together: the kill must find every one of them mid-body. The postgate clients send plain
    # bodies (no flexible checksum), so botocore reads a body twice, as `_SlowBody` expects.
    clients = {key: rgw_client(ceph) for key in payloads}
    plain = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
    clients.update({key: pg.client(**plain) for key in pg_slow})
    fast_client = pg.client(**plain)
    barrier = threading.Barrier(len(started))

    def upload(key: str):
        client = clients[key]
        try:
            barrier.wait(timeout=30)
            client.put_object(
                Bucket=bucket,
                Key=key,
                Body=_SlowBody(payloads[key], started[key], passes=2, release=release),
                ContentLength=len(payloads[key]),
            )
            outcome[key] = "ok"
        except Exception as e:  # noqa: BLE001 - any clean failure is an allowed outcome
            outcome[key] = e

    def pg_upload(key: str):
        how, data = pg_slow[key]
        try:
            barrier.wait(timeout=30)
            if how == "put":
                clients[key].put_object(
                    Bucket=pgbucket, Key=key, Body=_SlowBody(data, started[key], 2, release), ContentLength=len(data)
                )
                outcome[key] = "ok"
            else:
                outcome[key] = _pg_post(clients[key], pgbucket, key, data, (started[key], release))
        except Exception as e:  # noqa: BLE001 - checked against _CLEAN_FAILURES below
            outcome[key] = e

    def pg_fast_uploads():
        release.wait(90)
        n = 0
        # Bounded: the OSDs are memstores, every byte written stays in memory.
        while not fast_done.is_set() and n < 30:
            key, data = f"fast/{n}.bin", os.urandom(MIB + (n * 409_600) % (2 * MIB))
            pg_fast[key] = data
            try:
                if n % 2:
                    outcome[key] = _pg_post(fast_client, pgbucket, key, data)
                else:
                    fast_client.put_object(Bucket=pgbucket, Key=key, Body=data)
                    outcome[key] = "ok"
            except Exception as e:  # noqa: BLE001 - checked against _CLEAN_FAILURES below
                outcome[key] = e
            n += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=upload, args=(k,), daemon=True) for k in payloads]
    threads += [threading.Thread(target=pg_upload, args=(k,), daemon=True) for k in pg_slow]
    for t in threads:
        t.start()
    fast = threading.Thread(target=pg_fast_uploads, daemon=True)
    fast.start()
    try:
        for key, ev in started.items():
            assert ev.wait(60), f"upload {key} never started: {outcome.get(key)!r}"
    finally:
        # On a failure here too: no thread may stay parked on `release`.
        if not all(ev.is_set() for ev in started.values()):
            release.set()

    victim = sorted(ceph.osd_pids)[1]
    os.kill(ceph.osd_pids[victim], signal.SIGKILL)
    killed_at = time.monotonic()
    # The kill must land while the uploads are in flight, not after.
    assert sum(t.is_alive() for t in threads) == len(threads)
    release.set()

    for t in threads:
        t.join(timeout=max(1.0, 150 - (time.monotonic() - killed_at)))
    fast_done.set()
    fast.join(timeout=max(1.0, 150 - (time.monotonic() - killed_at)))
    settled_s = time.monotonic() - killed_at
    hung = [t.name for t in [*threads, fast] if t.is_alive()]
    assert not hung, f"uploads neither succeeded nor failed within 150 s of the kill\n{ceph.logs_tail()}"
    assert set(outcome) == {*payloads, *pg_slow, *pg_fast}

    # Every acknowledged upload reads back byte-exact; a failed one may or may not exist, but
    # if it does it must be whole (RGW commits an object's head only after all its data).
    acked = [k for k, v in outcome.items() if v == "ok"]
    for key, data in payloads.items():
        try:
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as e:
            assert key not in acked, f"acknowledged {key} is gone: {e}"
            continue
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), f"{key} differs"

    # Through postgate: every failure was clean, and each key reads the same through postgate
    # and from RGW: the whole bytes (always, when acknowledged) or nothing.
    pg_payloads = {**{k: d for k, (_, d) in pg_slow.items()}, **pg_fast}
    unclean = {k: repr(v) for k, v in outcome.items() if k in pg_payloads and v != "ok"
               and not isinstance(v, _CLEAN_FAILURES)}
    assert not unclean, unclean
    reader = pg.client()
    for key, data in pg_payloads.items():
        for where, client, b, k in (("postgate", reader, pgbucket, key),
                                    ("RGW", s3, pg.backend_bucket, f"{pgbucket}/{key}")):
            try:
                got = client.get_object(Bucket=b, Key=k)["Body"].read()
            except botocore.exceptions.ClientError as e:
                assert _status(e) == 404, f"{where} {key}: {e}"
                assert key not in acked, f"acknowledged {key} is gone from {where}: {e}"
                continue
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), f"{where} {key} differs"
    listed = {o["Key"] for o in reader.list_objects_v2(Bucket=pgbucket).get("Contents", [])}
    assert {k for k in pg_payloads if k in acked} <= listed
    # Every upload has ended: none may leave its backend multipart upload open (a failed one is
    # aborted; the abort may land a moment after the client's answer, and RGW may retry it
    # while the dead OSD is being marked down).
    open_uploads = _backend_uploads(s3, pg, pgbucket)
    deadline = time.monotonic() + 30
    while open_uploads and time.monotonic() < deadline:
        time.sleep(0.5)
        open_uploads = _backend_uploads(s3, pg, pgbucket)

    def summary(keys):
        return ", ".join(f"{k}={'ok' if outcome[k] == 'ok' else type(outcome[k]).__name__}" for k in sorted(keys))

    print(f"osd.{victim} killed; {len([k for k in payloads if k in acked])}/{uploads} RGW uploads and "
          f"{len([k for k in pg_payloads if k in acked])}/{len(pg_payloads)} postgate uploads acknowledged, "
          f"last {settled_s:.1f} s after the kill; open backend uploads left: {len(open_uploads)}\n"
          f"RGW: {summary(payloads)}\npostgate: {summary(pg_payloads)}")
    assert open_uploads == [], f"backend multipart uploads left open after the uploads ended: {open_uploads}"

    # The cluster keeps serving on two of three OSDs: new writes, reads, lists and deletes,
    # directly and through postgate.
    for i in range(4):
        data = os.urandom(2 * MIB)
        s3.put_object(Bucket=bucket, Key=f"after/{i}.bin", Body=data)
        assert s3.get_object(Bucket=bucket, Key=f"after/{i}.bin")["Body"].read() == data
        reader.put_object(Bucket=pgbucket, Key=f"after/{i}.bin", Body=data)
        assert reader.get_object(Bucket=pgbucket, Key=f"after/{i}.bin")["Body"].read() == data
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="after/")["Contents"]}
    assert keys == {f"after/{i}.bin" for i in range(4)}
    s3.delete_object(Bucket=bucket, Key="after/0.bin")
    reader.delete_object(Bucket=pgbucket, Key="after/0.bin")
    assert _backend_keys(s3, pg, pgbucket + "/after") == [f"{pgbucket}/after/{i}.bin" for i in (1, 2, 3)]
    osd_up = subprocess.run(
        ["ceph", "-c", ceph.conf, "osd", "stat", "-f", "json"], capture_output=True, text=True, timeout=30
    )
    assert '"num_up_osds":2' in osd_up.stdout.replace(" ", ""), osd_up.stdout


def test_through_postgate_copy_object_and_managed_multipart_copy(s3, pg, pgs3, pgbucket):
    """CopyObject and UploadPartCopy through postgate are RGW's own server-side copies: boto3's
    copy_object (metadata carried, a stale source condition refused with 412) and its managed
    copy in 5 MiB UploadPartCopy parts, read back whole, with no upload left open."""
    from boto3.s3.transfer import TransferConfig

    body = os.urandom(12 * MIB)
    pgs3.put_object(Bucket=pgbucket, Key="src.bin", Body=body, Metadata={"color": "blue"})
    source = {"Bucket": pgbucket, "Key": "src.bin"}
    copied = pgs3.copy_object(Bucket=pgbucket, Key="copy.bin", CopySource=source)
    head = pgs3.head_object(Bucket=pgbucket, Key="copy.bin")
    assert head["Metadata"] == {"color": "blue"}
    assert copied["CopyObjectResult"]["ETag"] == head["ETag"]
    assert pgs3.get_object(Bucket=pgbucket, Key="copy.bin")["Body"].read() == body
    raw = s3.head_object(Bucket=pg.backend_bucket, Key=f"{pgbucket}/copy.bin")
    assert raw["Metadata"]["color"] == "blue"
    assert raw["Metadata"].get("postgate-owner")

    with pytest.raises(botocore.exceptions.ClientError) as e:
        pgs3.copy_object(
            Bucket=pgbucket, Key="stale.bin", CopySource=source, CopySourceIfMatch='"0123456789abcdef0123456789abcdef"'
        )
    assert _status(e.value) == 412

    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    pgs3.copy(source, pgbucket, "managed.bin", Config=config)
    got = pgs3.get_object(Bucket=pgbucket, Key="managed.bin")
    assert re.fullmatch(r"[0-9a-f]{32}-3", got["ETag"].strip('"')), got["ETag"]
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(body).digest()
    assert sorted(_backend_keys(s3, pg, pgbucket)) == [f"{pgbucket}/{k}" for k in ("copy.bin", "managed.bin", "src.bin")]
    assert _backend_uploads(s3, pg, pgbucket) == []
