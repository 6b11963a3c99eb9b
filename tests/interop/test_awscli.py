"""The real AWS CLI (v1, from the suite's venv) against postgate, driven as a user would."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from conftest import empty_and_delete_bucket, multipart_etag, unique_bucket_name, venv_bin


class Aws:
    """Runs `aws --endpoint-url ENDPOINT ...` with credentials from the environment only."""

    def __init__(self, endpoint: str, server, home, ca_bundle: str | None = None):
        self.exe = venv_bin("aws")
        self.endpoint = endpoint
        self.ca_bundle = ca_bundle
        config = home / "aws-config"
        # The CLI's own defaults: multipart above 8 MiB, 8 MiB parts, 10 in flight.
        config.write_text("[default]\n")
        credentials = home / "aws-credentials"
        credentials.write_text("")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
        self.env.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_DEFAULT_REGION=server.region,
            AWS_CONFIG_FILE=str(config),
            AWS_SHARED_CREDENTIALS_FILE=str(credentials),
            AWS_EC2_METADATA_DISABLED="true",
            AWS_PAGER="",
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.exe, "--endpoint-url", self.endpoint]
        if self.ca_bundle:
            cmd += ["--ca-bundle", self.ca_bundle]
        cmd += list(args)
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"`aws {' '.join(args)}` exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str):
        return json.loads(self.run(*args, "--output", "json").stdout)


@pytest.fixture(scope="module")
def aws(server, tmp_path_factory) -> Aws:
    return Aws(server.endpoint, server, tmp_path_factory.mktemp("awscli"))


@pytest.fixture(scope="module")
def aws_tls(server, tls, tmp_path_factory) -> Aws:
    return Aws(tls.endpoint, server, tmp_path_factory.mktemp("awscli-tls"), tls.ca_bundle)


def sha256_file(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mb_ls_rb(aws, s3):
    name = unique_bucket_name()
    out = aws.run("s3", "mb", f"s3://{name}").stdout
    assert f"make_bucket: {name}" in out
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    listing = aws.run("s3", "ls").stdout
    assert any(line.split()[-1] == name for line in listing.splitlines())
    out = aws.run("s3", "rb", f"s3://{name}").stdout
    assert f"remove_bucket: {name}" in out
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    # Removing it again fails with NoSuchBucket.
    proc = aws.run("s3", "rb", f"s3://{name}", check=False)
    assert proc.returncode != 0
    assert "NoSuchBucket" in proc.stderr


def test_rb_force_removes_objects(aws, s3):
    name = unique_bucket_name()
    aws.run("s3", "mb", f"s3://{name}")
    try:
        for k in ["x/1", "x/2", "y"]:
            s3.put_object(Bucket=name, Key=k, Body=b"data")
        proc = aws.run("s3", "rb", f"s3://{name}", check=False)
        assert proc.returncode != 0
        assert "BucketNotEmpty" in proc.stderr
        aws.run("s3", "rb", "--force", f"s3://{name}")
        assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    finally:
        empty_and_delete_bucket(s3, name)


@pytest.mark.parametrize("size", [11, 6 * 1024 * 1024])
def test_cp_up_and_down(aws, s3, bucket, tmp_path, size):
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(size))
    out = aws.run("s3", "cp", str(src), f"s3://{bucket}/dir/up.bin").stdout
    # The CLI prints the local path relative to its working directory.
    assert out.splitlines()[-1].startswith("upload: ")
    assert out.splitlines()[-1].endswith(f"up.bin to s3://{bucket}/dir/up.bin")
    head = s3.head_object(Bucket=bucket, Key="dir/up.bin")
    assert head["ContentLength"] == size
    assert head["ETag"] == '"' + hashlib.md5(src.read_bytes()).hexdigest() + '"'

    dst = tmp_path / "down.bin"
    out = aws.run("s3", "cp", f"s3://{bucket}/dir/up.bin", str(dst)).stdout
    assert out.splitlines()[-1].startswith(f"download: s3://{bucket}/dir/up.bin to ")
    assert out.splitlines()[-1].endswith("down.bin")
    assert sha256_file(dst) == sha256_file(src)


@pytest.mark.parametrize("over_tls", [False, True], ids=["http", "https"])
def test_cp_40mib_goes_multipart_and_reads_back(aws, aws_tls, s3, bucket, tmp_path, over_tls):
    """Above 8 MiB the CLI uploads in 8 MiB parts (aws-chunked with CRC32 trailers over https)
    and downloads with parallel ranged GETs."""
    cli = aws_tls if over_tls else aws
    src = tmp_path / "video.mp4"
    data = os.urandom(40 * 1024 * 1024)
    src.write_bytes(data)
    cli.run("s3", "cp", str(src), f"s3://{bucket}/media/video.mp4")
    head = s3.head_object(Bucket=bucket, Key="media/video.mp4")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag(data, 8 * 1024 * 1024)
    assert head["ContentType"] == "video/mp4"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    dst = tmp_path / "down.mp4"
    cli.run("s3", "cp", f"s3://{bucket}/media/video.mp4", str(dst))
    assert sha256_file(dst) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [11, 6 * 1024 * 1024])
def test_cp_over_tls_stores_exact_bytes(aws_tls, s3, bucket, tmp_path, size):
    """Over https the CLI (botocore) uploads aws-chunked with a CRC32 trailer."""
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(size))
    aws_tls.run("s3", "cp", str(src), f"s3://{bucket}/tls.bin")
    got = s3.get_object(Bucket=bucket, Key="tls.bin")
    assert got["ContentLength"] == size
    assert got["Body"].read() == src.read_bytes()
    dst = tmp_path / "down.bin"
    aws_tls.run("s3", "cp", f"s3://{bucket}/tls.bin", str(dst))
    assert sha256_file(dst) == sha256_file(src)


def test_cp_content_type_guessed(aws, s3, bucket, tmp_path):
    src = tmp_path / "page.html"
    src.write_text("<h1>hi</h1>")
    aws.run("s3", "cp", str(src), f"s3://{bucket}/page.html")
    assert s3.head_object(Bucket=bucket, Key="page.html")["ContentType"] == "text/html"


def test_cp_stdin_and_stdout(aws, s3, bucket):
    # `-` streams from stdin (no Content-Length known up front to the CLI).
    cmd = [aws.exe, "--endpoint-url", aws.endpoint, "s3", "cp", "-", f"s3://{bucket}/piped"]
    proc = subprocess.run(cmd, env=aws.env, input=b"piped bytes\n", capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert s3.get_object(Bucket=bucket, Key="piped")["Body"].read() == b"piped bytes\n"
    out = subprocess.run(
        [aws.exe, "--endpoint-url", aws.endpoint, "s3", "cp", f"s3://{bucket}/piped", "-"],
        env=aws.env, capture_output=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == b"piped bytes\n"


def test_ls_prefixes_and_objects(aws, s3, bucket):
    for key, body in [("photos/2024/a.jpg", b"a" * 10), ("photos/b.jpg", b"b" * 20), ("readme", b"r")]:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    root = aws.run("s3", "ls", f"s3://{bucket}").stdout.splitlines()
    assert [line.split() for line in root if "PRE" in line] == [["PRE", "photos/"]]
    objects = [line.split() for line in root if "PRE" not in line]
    assert [(o[-2], o[-1]) for o in objects] == [("1", "readme")]

    photos = aws.run("s3", "ls", f"s3://{bucket}/photos/").stdout.splitlines()
    assert ["PRE", "2024/"] in [line.split() for line in photos]
    assert [(line.split()[-2], line.split()[-1]) for line in photos if "PRE" not in line] == [
        ("20", "b.jpg")
    ]

    rec = aws.run("s3", "ls", "--recursive", f"s3://{bucket}").stdout.splitlines()
    assert [line.split()[-1] for line in rec] == ["photos/2024/a.jpg", "photos/b.jpg", "readme"]


def test_rm_and_recursive_rm(aws, s3, bucket):
    for k in ["keep", "tmp/1", "tmp/2", "tmp/sub/3"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    out = aws.run("s3", "rm", f"s3://{bucket}/keep").stdout
    assert f"delete: s3://{bucket}/keep" in out
    aws.run("s3", "rm", "--recursive", f"s3://{bucket}/tmp/")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_sync_up_and_down(aws, s3, bucket, tmp_path):
    up = tmp_path / "up"
    (up / "nested").mkdir(parents=True)
    files = {"a.txt": b"alpha", "nested/b.bin": os.urandom(70_000), "nested/c.txt": b"gamma"}
    for rel, data in files.items():
        (up / rel).write_bytes(data)
    aws.run("s3", "sync", str(up), f"s3://{bucket}/site")
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == sorted(f"site/{k}" for k in files)
    # A second sync has nothing to do.
    assert aws.run("s3", "sync", str(up), f"s3://{bucket}/site").stdout.strip() == ""
    down = tmp_path / "down"
    aws.run("s3", "sync", f"s3://{bucket}/site", str(down))
    for rel, data in files.items():
        assert (down / rel).read_bytes() == data


def test_s3api_put_object_metadata_and_head(aws, bucket, tmp_path):
    body = tmp_path / "body.json"
    body.write_text('{"ok": true}')
    put = aws.json(
        "s3api", "put-object", "--bucket", bucket, "--key", "meta/doc.json",
        "--body", str(body), "--content-type", "application/json",
        "--metadata", "project=postgate,Stage=Test",
    )
    etag = '"' + hashlib.md5(body.read_bytes()).hexdigest() + '"'
    assert put["ETag"] == etag
    head = aws.json("s3api", "head-object", "--bucket", bucket, "--key", "meta/doc.json")
    assert head["ContentLength"] == len(body.read_bytes())
    assert head["ContentType"] == "application/json"
    assert head["ETag"] == etag
    # S3 lower-cases user metadata names.
    assert head["Metadata"] == {"project": "postgate", "stage": "Test"}

    missing = aws.run("s3api", "head-object", "--bucket", bucket, "--key", "nope", check=False)
    assert missing.returncode != 0
    assert "404" in missing.stderr


def test_s3api_get_object(aws, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="g", Body=b"0123456789", Metadata={"k": "v"})
    out = tmp_path / "g.out"
    res = aws.json("s3api", "get-object", "--bucket", bucket, "--key", "g", "--range", "bytes=3-6", str(out))
    assert out.read_bytes() == b"3456"
    assert res["ContentRange"] == "bytes 3-6/10"
    assert res["Metadata"] == {"k": "v"}


def test_s3api_list_objects_v2(aws, s3, bucket):
    keys = [f"list/{i:02d}" for i in range(12)] + ["other/x"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"12")
    # The CLI paginates by itself; --page-size forces several requests.
    res = aws.json("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "list/", "--page-size", "5")
    assert [o["Key"] for o in res["Contents"]] == keys[:12]
    assert all(o["Size"] == 2 for o in res["Contents"])
    one = aws.json(
        "s3api", "list-objects-v2", "--bucket", bucket, "--delimiter", "/", "--no-paginate",
    )
    assert [p["Prefix"] for p in one["CommonPrefixes"]] == ["list/", "other/"]
    assert one["KeyCount"] == 2
    capped = aws.json("s3api", "list-objects-v2", "--bucket", bucket, "--max-keys", "3", "--no-paginate")
    assert capped["IsTruncated"] is True
    assert len(capped["Contents"]) == 3
    assert capped["NextContinuationToken"]


def test_s3api_get_object_acl(aws, s3, bucket):
    s3.put_object(Bucket=bucket, Key="private", Body=b"p")
    s3.put_object(Bucket=bucket, Key="public", Body=b"p", ACL="public-read")
    all_users = "http://acs.amazonaws.com/groups/global/AllUsers"

    private = aws.json("s3api", "get-object-acl", "--bucket", bucket, "--key", "private")
    assert private["Owner"]["ID"]
    assert [g["Permission"] for g in private["Grants"]] == ["FULL_CONTROL"]
    assert private["Grants"][0]["Grantee"]["Type"] == "CanonicalUser"

    public = aws.json("s3api", "get-object-acl", "--bucket", bucket, "--key", "public")
    perms = {(g["Grantee"].get("URI"), g["Permission"]) for g in public["Grants"]}
    assert (all_users, "READ") in perms
    assert any(p == "FULL_CONTROL" for _, p in perms)

    aws.run("s3api", "put-object-acl", "--bucket", bucket, "--key", "private", "--acl", "public-read")
    now = aws.json("s3api", "get-object-acl", "--bucket", bucket, "--key", "private")
    assert (all_users, "READ") in {(g["Grantee"].get("URI"), g["Permission"]) for g in now["Grants"]}
