"""boto3 (botocore) against postgate: what the most common S3 SDK sends, read back and compared."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import urllib.error
import urllib.request
import zlib

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import _binary, client_config, empty_and_delete_bucket, multipart_etag, unique_bucket_name


def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def b64_crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def capture_requests(client, operation: str):
    """Records the headers and body type of every `operation` request the client sends."""
    sent = []

    def on_send(request, **_):
        sent.append({k.lower(): (v.decode() if isinstance(v, bytes) else v)
                     for k, v in request.headers.items()})

    client.meta.events.register(f"before-send.s3.{operation}", on_send)
    return sent


# ---------------------------------------------------------------------------------------------
# Buckets


def test_bucket_create_head_list_delete(s3):
    name = unique_bucket_name()
    s3.create_bucket(Bucket=name)
    try:
        assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        with pytest.raises(ClientError) as e:
            s3.create_bucket(Bucket=name)
        assert error_of(e) == ("BucketAlreadyOwnedByYou", 409)
    finally:
        s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert error_of(e)[1] == 404
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# ---------------------------------------------------------------------------------------------
# Objects: put / get / head / delete


def test_put_get_head_with_metadata(s3, bucket):
    data = b"hello postgate\n" * 100
    put = s3.put_object(
        Bucket=bucket,
        Key="docs/hello.txt",
        Body=data,
        ContentType="text/plain; charset=utf-8",
        Metadata={"color": "blue", "owner-name": "Ada Lovelace"},
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="hello.txt"',
    )
    assert put["ETag"] == md5_etag(data)

    got = s3.get_object(Bucket=bucket, Key="docs/hello.txt")
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    assert got["ContentType"] == "text/plain; charset=utf-8"
    assert got["Metadata"] == {"color": "blue", "owner-name": "Ada Lovelace"}
    assert got["ETag"] == md5_etag(data)
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == 'attachment; filename="hello.txt"'
    assert got["LastModified"] is not None

    head = s3.head_object(Bucket=bucket, Key="docs/hello.txt")
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert head["Metadata"] == {"color": "blue", "owner-name": "Ada Lovelace"}
    assert head["ETag"] == md5_etag(data)


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024 + 7])
def test_put_get_sizes(s3, bucket, size):
    """Around the inline/blob boundary (64 KiB by default) and an empty object."""
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key=f"obj-{size}", Body=data)
    got = s3.get_object(Bucket=bucket, Key=f"obj-{size}")
    assert got["ContentLength"] == size
    assert got["Body"].read() == data
    assert got["ETag"] == md5_etag(data)


def test_overwrite_replaces_content_and_metadata(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", Metadata={"v": "1"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"second!", ContentType="text/x-second")
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == b"second!"
    assert got["Metadata"] == {}
    assert got["ContentType"] == "text/x-second"


def test_head_missing_key_is_404(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="no/such/key")
    # HEAD responses have no body, so botocore reports the bare status as the code.
    assert error_of(e) == ("404", 404)


def test_get_missing_key_is_nosuchkey(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="no/such/key")
    assert error_of(e) == ("NoSuchKey", 404)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="no/such/key")


def test_get_missing_bucket_is_nosuchbucket(s3):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=unique_bucket_name(), Key="k")
    assert error_of(e) == ("NoSuchBucket", 404)


def test_delete_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    res = s3.delete_object(Bucket=bucket, Key="gone")
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="gone")
    assert error_of(e)[1] == 404
    # Deleting a key that does not exist succeeds, as on S3.
    res = s3.delete_object(Bucket=bucket, Key="never-existed")
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_objects(s3, bucket):
    keys = [f"batch/{i}" for i in range(6)]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    res = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": k} for k in keys[:4]] + [{"Key": "batch/missing"}]},
    )
    # S3 reports keys that did not exist as deleted too.
    assert sorted(d["Key"] for d in res["Deleted"]) == sorted(keys[:4] + ["batch/missing"])
    assert res.get("Errors", []) == []
    left = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in left["Contents"]] == keys[4:]

    quiet = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": keys[4]}], "Quiet": True}
    )
    assert quiet.get("Deleted", []) == [] and quiet.get("Errors", []) == []
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == keys[5:]


# ---------------------------------------------------------------------------------------------
# Listing


def test_list_objects_v2_prefix_and_delimiter(s3, bucket):
    keys = ["a/1.txt", "a/2.txt", "a/b/3.txt", "a/b/c/4.txt", "b/5.txt", "top.txt"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"12345")

    flat = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in flat["Contents"]] == sorted(keys)
    assert flat["KeyCount"] == len(keys)
    assert flat["IsTruncated"] is False
    assert all(o["Size"] == 5 for o in flat["Contents"])
    assert all(o["ETag"] == md5_etag(b"12345") for o in flat["Contents"])

    root = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in root["Contents"]] == ["top.txt"]
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["a/", "b/"]
    assert root["KeyCount"] == 3

    a = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in a["Contents"]] == ["a/1.txt", "a/2.txt"]
    assert [p["Prefix"] for p in a["CommonPrefixes"]] == ["a/b/"]
    assert a["Prefix"] == "a/"

    ab = s3.list_objects_v2(Bucket=bucket, Prefix="a/b/")
    assert [o["Key"] for o in ab["Contents"]] == ["a/b/3.txt", "a/b/c/4.txt"]

    none = s3.list_objects_v2(Bucket=bucket, Prefix="zzz")
    assert none["KeyCount"] == 0
    assert "Contents" not in none

    after = s3.list_objects_v2(Bucket=bucket, StartAfter="a/b/c/4.txt")
    assert [o["Key"] for o in after["Contents"]] == ["b/5.txt", "top.txt"]


def test_list_objects_v2_paginator(s3, bucket):
    keys = sorted(f"page/{i:03d}" for i in range(30))
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"")
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="page/", PaginationConfig={"PageSize": 7}
        )
    )
    assert [len(p["Contents"]) for p in pages] == [7, 7, 7, 7, 2]
    assert [p["IsTruncated"] for p in pages] == [True] * 4 + [False]
    assert all(p["MaxKeys"] == 7 for p in pages)
    assert [o["Key"] for p in pages for o in p["Contents"]] == keys

    # The same by hand with MaxKeys and the continuation token.
    seen, token = [], None
    for _ in range(10):
        kw = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=7, **kw)
        seen += [o["Key"] for o in page["Contents"]]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == keys


def test_list_objects_v1(s3, bucket):
    for k in ["x/1", "x/2", "y"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"v1")
    res = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1000)
    assert [o["Key"] for o in res["Contents"]] == ["y"]
    assert [p["Prefix"] for p in res["CommonPrefixes"]] == ["x/"]
    pages = list(s3.get_paginator("list_objects").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}))
    assert [o["Key"] for p in pages for o in p["Contents"]] == ["x/1", "x/2", "y"]


# ---------------------------------------------------------------------------------------------
# Copy


def test_copy_object_copies_metadata_by_default(s3, bucket):
    data = os.urandom(70 * 1024)
    s3.put_object(
        Bucket=bucket, Key="src", Body=data, ContentType="image/png",
        Metadata={"origin": "camera", "n": "1"},
    )
    res = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert res["CopyObjectResult"]["ETag"] == md5_etag(data)
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/png"
    assert got["Metadata"] == {"origin": "camera", "n": "1"}
    # The source is untouched.
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == data


def test_copy_object_replace_metadata(s3, bucket):
    s3.put_object(
        Bucket=bucket, Key="src", Body=b"payload", ContentType="text/plain",
        Metadata={"origin": "camera"},
    )
    s3.copy_object(
        Bucket=bucket, Key="dst", CopySource=f"{bucket}/src",
        MetadataDirective="REPLACE", ContentType="application/json",
        Metadata={"fresh": "yes"},
    )
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"payload"
    assert got["ContentType"] == "application/json"
    assert got["Metadata"] == {"fresh": "yes"}
    src = s3.head_object(Bucket=bucket, Key="src")
    assert src["Metadata"] == {"origin": "camera"}
    assert src["ContentType"] == "text/plain"


def test_copy_object_across_buckets(s3, bucket):
    other = unique_bucket_name()
    s3.create_bucket(Bucket=other)
    try:
        s3.put_object(Bucket=bucket, Key="a b/ü", Body=b"cross")
        s3.copy_object(Bucket=other, Key="copied", CopySource={"Bucket": bucket, "Key": "a b/ü"})
        assert s3.get_object(Bucket=other, Key="copied")["Body"].read() == b"cross"
    finally:
        empty_and_delete_bucket(s3, other)


def test_copy_object_onto_itself_requires_replace(s3, bucket):
    s3.put_object(Bucket=bucket, Key="self", Body=b"same", Metadata={"a": "1"})
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"})
    assert error_of(e) == ("InvalidRequest", 400)
    s3.copy_object(
        Bucket=bucket, Key="self", CopySource={"Bucket": bucket, "Key": "self"},
        MetadataDirective="REPLACE", Metadata={"a": "2"},
    )
    got = s3.get_object(Bucket=bucket, Key="self")
    assert got["Metadata"] == {"a": "2"}
    assert got["Body"].read() == b"same"


# ---------------------------------------------------------------------------------------------
# Presigned URLs (fetched with the standard library, not boto3)


@pytest.fixture(params=["default", "s3v4", "s3"])
def presigner(request, server, s3):
    """The default client (botocore presigns SigV2 query URLs for us-east-1 unless told
    otherwise), and clients forced to SigV4 (`s3v4`) and SigV2 (`s3`)."""
    if request.param == "default":
        return s3
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=client_config(signature_version=request.param),
    )


def test_presigned_get(presigner, s3, bucket):
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="shared/file.bin", Body=data)
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared/file.bin"}, ExpiresIn=300
    )
    with urllib.request.urlopen(url, timeout=30) as res:
        assert res.status == 200
        assert res.read() == data

    # Tampering with the signature or the key is refused.
    sig = "X-Amz-Signature=" if "X-Amz-Signature=" in url else "Signature="
    assert sig in url
    for bad in (url.replace(sig, sig + "0"), url.replace("shared/file.bin", "shared/other.bin")):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=30)
        assert e.value.code == 403
        assert b"SignatureDoesNotMatch" in e.value.read()


def test_presigned_put(presigner, s3, bucket):
    data = os.urandom(200_000)
    # SigV2 signs the Content-Type, so the upload must send the type the URL was made for.
    url = presigner.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": "uploads/p.bin", "ContentType": "image/jpeg"},
        ExpiresIn=300,
    )
    req = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": "image/jpeg"}
    )
    with urllib.request.urlopen(req, timeout=30) as res:
        assert res.status == 200
        assert res.headers["ETag"] == md5_etag(data)
    got = s3.get_object(Bucket=bucket, Key="uploads/p.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/jpeg"


def test_presigned_put_sigv2_wrong_content_type_is_refused(server, bucket):
    v2 = boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=client_config(signature_version="s3"),
    )
    url = v2.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "k", "ContentType": "image/jpeg"}
    )
    req = urllib.request.Request(url, data=b"x", method="PUT", headers={"Content-Type": "text/html"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 403
    assert b"SignatureDoesNotMatch" in e.value.read()


def test_sigv2_metadata_with_inner_blanks(server, s3, bucket):
    """botocore's SigV2 signer trims x-amz-* values but keeps blanks inside them (found while
    recording the fuzz corpus: this PutObject was refused with SignatureDoesNotMatch)."""
    v2 = boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=client_config(signature_version="s3"),
    )
    v2.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"note": "a b  c"})
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == {"note": "a b  c"}


# ---------------------------------------------------------------------------------------------
# Managed transfers


def test_upload_file_download_file_20mib_single_part(s3, bucket, tmp_path):
    config = TransferConfig(multipart_threshold=64 * 1024 * 1024)
    src = tmp_path / "src.bin"
    data = os.urandom(20 * 1024 * 1024)
    src.write_bytes(data)
    s3.upload_file(str(src), bucket, "big/20mib.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big/20mib.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == md5_etag(data)
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "big/20mib.bin", str(dst), Config=config)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_upload_file_download_file_40mib_goes_multipart(s3, bucket, tmp_path):
    """boto3's default TransferConfig: 8 MiB threshold and parts, 10 threads; the download is
    ranged and parallel too."""
    src = tmp_path / "src.bin"
    data = os.urandom(40 * 1024 * 1024)
    src.write_bytes(data)
    s3.upload_file(
        str(src),
        bucket,
        "big/40mib.bin",
        ExtraArgs={"ContentType": "video/mp4", "Metadata": {"camera": "phone"}},
    )
    head = s3.head_object(Bucket=bucket, Key="big/40mib.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag(data, 8 * 1024 * 1024)
    assert head["ETag"].endswith('-5"')
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {"camera": "phone"}
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    dst = tmp_path / "dst.bin"
    s3.download_file(bucket, "big/40mib.bin", str(dst))
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_upload_fileobj_multipart_over_tls_with_checksum_trailers(s3_tls, s3, bucket):
    """Over https botocore sends each part aws-chunked with a CRC32 trailer."""
    data = os.urandom(17 * 1024 * 1024)
    config = TransferConfig(multipart_chunksize=8 * 1024 * 1024)
    s3_tls.upload_fileobj(io.BytesIO(data), bucket, "big/tls.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big/tls.bin")
    assert head["ETag"] == multipart_etag(data, 8 * 1024 * 1024)
    assert s3.get_object(Bucket=bucket, Key="big/tls.bin")["Body"].read() == data


def test_low_level_multipart_calls(s3, bucket):
    key = "mp/low-level.bin"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="text/plain")
    uid = upload["UploadId"]
    first = os.urandom(5 * 1024 * 1024)
    last = b"tail"
    e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=first)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=last)["ETag"]
    assert e1 == md5_etag(first)
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (1, e1, len(first)),
        (2, e2, len(last)),
    ]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, uid)]
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key=key)
    assert err.value.response["Error"]["Code"] == "404"
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == first + last
    assert got["ContentType"] == "text/plain"

    doomed = s3.create_multipart_upload(Bucket=bucket, Key="mp/aborted")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp/aborted", UploadId=doomed, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp/aborted", UploadId=doomed)
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=bucket, Key="mp/aborted", UploadId=doomed)
    assert err.value.response["Error"]["Code"] == "NoSuchUpload"


# ---------------------------------------------------------------------------------------------
# Integrity: checksums, aws-chunked bodies, Content-MD5


def test_put_checksum_sha256_and_get_checksum_mode(s3, bucket):
    data = os.urandom(150_000)
    put = s3.put_object(Bucket=bucket, Key="sum", Body=data, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == b64_sha256(data)
    got = s3.get_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == b64_sha256(data)
    assert got["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64_sha256(data)


@pytest.mark.parametrize("size", [13, 100_000])
def test_default_put_over_http_sends_crc32_header(s3, bucket, size):
    """botocore's default PutObject over plain http: a CRC32 checksum header, signed payload."""
    sent = capture_requests(s3, "PutObject")
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key="crc", Body=data)
    assert sent[-1].get("x-amz-checksum-crc32") == b64_crc32(data)
    assert put["ChecksumCRC32"] == b64_crc32(data)
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ChecksumCRC32"] == b64_crc32(data)


@pytest.mark.parametrize("size", [0, 13, 100_000, 3 * 1024 * 1024 + 5])
def test_default_put_over_tls_stores_exact_bytes(s3_tls, s3, bucket, size):
    """Regression: recent botocore sends PutObject over https as aws-chunked with
    `x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER` and an `x-amz-checksum-crc32`
    trailer. The server must store the decoded payload, not the chunk framing."""
    sent = capture_requests(s3_tls, "PutObject")
    data = os.urandom(size)
    key = f"chunked-{size}"
    put = s3_tls.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/x-test")
    assert sent[-1]["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert sent[-1]["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert "aws-chunked" in sent[-1]["content-encoding"]
    assert put["ETag"] == md5_etag(data)
    assert put["ChecksumCRC32"] == b64_crc32(data)

    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    body = got["Body"].read()
    assert len(body) == size
    assert body == data
    assert got["ContentLength"] == size
    assert got["ChecksumCRC32"] == b64_crc32(data)
    assert got["ContentType"] == "application/x-test"
    # aws-chunked is a transfer detail, never part of the stored object's headers.
    assert "aws-chunked" not in got.get("ContentEncoding", "")


def test_tls_put_sha256_trailer_and_get(s3_tls, bucket):
    data = os.urandom(2 * 1024 * 1024 + 3)
    sent = capture_requests(s3_tls, "PutObject")
    put = s3_tls.put_object(Bucket=bucket, Key="sha", Body=data, ChecksumAlgorithm="SHA256")
    assert sent[-1]["x-amz-trailer"] == "x-amz-checksum-sha256"
    assert put["ChecksumSHA256"] == b64_sha256(data)
    got = s3_tls.get_object(Bucket=bucket, Key="sha", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got["ChecksumSHA256"] == b64_sha256(data)


def test_wrong_content_md5_is_bad_digest(s3, bucket):
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="md5", Body=b"the real body", ContentMD5=wrong)
    assert error_of(e) == ("BadDigest", 400)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="md5")
    assert error_of(e)[1] == 404

    right = base64.b64encode(hashlib.md5(b"the real body").digest()).decode()
    s3.put_object(Bucket=bucket, Key="md5", Body=b"the real body", ContentMD5=right)
    assert s3.get_object(Bucket=bucket, Key="md5")["Body"].read() == b"the real body"


def test_wrong_checksum_sha256_is_refused(s3, bucket):
    wrong = b64_sha256(b"not the body")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad-sum", Body=b"the body", ChecksumSHA256=wrong)
    code, status = error_of(e)
    assert status == 400
    assert code in ("BadDigest", "InvalidRequest")  # S3 answers BadDigest
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad-sum")


# ---------------------------------------------------------------------------------------------
# Keys and ranges


@pytest.mark.parametrize(
    "key",
    [
        "with space.txt",
        "  leading and trailing  ",
        "ünïcödé/日本語/файл.txt",
        "emoji-😀.bin",
        "../escape",
        "a/../../b",
        "./dot/./seg",
        "dir//double//slash",
        "special !$&'()*+,;=:@[]{}^`|~%#?.txt",
        "percent%2Fencoded%20already",
    ],
)
def test_unusual_keys_roundtrip(s3, bucket, key):
    data = key.encode() + b"\x00payload"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)
    listed = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_range_get(s3, bucket):
    s3.put_object(Bucket=bucket, Key="r", Body=b"0123456789")
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=2-5")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == b"2345"
    assert got["ContentRange"] == "bytes 2-5/10"
    assert got["ContentLength"] == 4

    suffix = s3.get_object(Bucket=bucket, Key="r", Range="bytes=-3")
    assert suffix["Body"].read() == b"789"
    open_end = s3.get_object(Bucket=bucket, Key="r", Range="bytes=7-")
    assert open_end["Body"].read() == b"789"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", Range="bytes=20-30")
    assert error_of(e) == ("InvalidRange", 416)


def test_range_get_large_blob(s3, bucket):
    data = os.urandom(1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    got = s3.get_object(Bucket=bucket, Key="big", Range="bytes=500000-600000")
    assert got["Body"].read() == data[500000:600001]
    assert got["ContentRange"] == f"bytes 500000-600000/{len(data)}"


def test_conditional_get(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"cond")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=put["ETag"])
    assert error_of(e)[1] == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert error_of(e) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=put["ETag"])["Body"].read() == b"cond"


# ---------------------------------------------------------------------------------------------
# Lifecycle


def test_bucket_lifecycle_round_trip(s3, bucket):
    """put/get/delete_bucket_lifecycle_configuration as boto3 sends them (with its Content-MD5
    or flexible checksum), and the errors it parses."""
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_of(e) == ("NoSuchLifecycleConfiguration", 404)
    rules = [
        {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
         "Expiration": {"Days": 3}},
        {"ID": "uploads", "Filter": {"Prefix": ""}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
        {"ID": "dated", "Prefix": "old/", "Status": "Disabled",
         "Expiration": {"Date": "2030-01-01T00:00:00Z"}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in got] == ["tmp", "uploads", "dated"]
    assert got[0]["Filter"] == {"Prefix": "tmp/"} and got[0]["Expiration"] == {"Days": 3}
    assert got[1]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert got[2]["Prefix"] == "old/" and got[2]["Status"] == "Disabled"
    assert got[2]["Expiration"]["Date"].year == 2030
    with pytest.raises(ClientError) as e:
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
            {"ID": "tagged", "Filter": {"Tag": {"Key": "a", "Value": "b"}}, "Status": "Enabled",
             "Expiration": {"Days": 1}}]})
    assert error_of(e) == ("NotImplemented", 501)
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert error_of(e) == ("NoSuchLifecycleConfiguration", 404)


def test_quota_refusal_is_a_client_error_and_stores_nothing(server, s3, bucket):
    """A bucket quota set with `postgate bucket quota` on the running server's data directory:
    boto3 sees 400 XPostgateQuotaExceeded (not retried), and nothing is stored."""
    def quota(*args):
        out = subprocess.run(
            [str(_binary()), "--data-dir", str(server.data_dir),
             "bucket", "quota", bucket, *args],
            capture_output=True, text=True, timeout=30,
            env={k: v for k, v in os.environ.items() if not k.startswith("POSTGATE_")},
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    quota("--max-size", "1KiB")
    try:
        s3.put_object(Bucket=bucket, Key="fits", Body=b"a" * 1000)
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket=bucket, Key="over", Body=b"b" * 100)
        assert error_of(e) == ("XPostgateQuotaExceeded", 400)
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key="over")
        assert "1000 bytes in 1 objects" in quota()
    finally:
        quota("--clear")


# ---------------------------------------------------------------------------------------------
# ACLs and anonymous access


def test_public_read_object_is_readable_anonymously(s3, anon_s3, bucket):
    s3.put_object(Bucket=bucket, Key="public.txt", Body=b"for everyone", ACL="public-read")
    s3.put_object(Bucket=bucket, Key="private.txt", Body=b"secret")

    got = anon_s3.get_object(Bucket=bucket, Key="public.txt")
    assert got["Body"].read() == b"for everyone"
    assert anon_s3.head_object(Bucket=bucket, Key="public.txt")["ContentLength"] == 12

    with pytest.raises(ClientError) as e:
        anon_s3.get_object(Bucket=bucket, Key="private.txt")
    assert error_of(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        anon_s3.head_object(Bucket=bucket, Key="private.txt")
    assert error_of(e)[1] == 403
    # Anonymous callers cannot list a private bucket nor write to it.
    with pytest.raises(ClientError) as e:
        anon_s3.list_objects_v2(Bucket=bucket)
    assert error_of(e) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as e:
        anon_s3.put_object(Bucket=bucket, Key="anon.txt", Body=b"x")
    assert error_of(e) == ("AccessDenied", 403)


def test_put_object_acl_switches_visibility(s3, anon_s3, bucket):
    s3.put_object(Bucket=bucket, Key="flip", Body=b"flip")
    with pytest.raises(ClientError):
        anon_s3.get_object(Bucket=bucket, Key="flip")
    s3.put_object_acl(Bucket=bucket, Key="flip", ACL="public-read")
    assert anon_s3.get_object(Bucket=bucket, Key="flip")["Body"].read() == b"flip"
    grants = s3.get_object_acl(Bucket=bucket, Key="flip")["Grants"]
    assert any(
        g["Permission"] == "READ"
        and g["Grantee"].get("URI") == "http://acs.amazonaws.com/groups/global/AllUsers"
        for g in grants
    )
    s3.put_object_acl(Bucket=bucket, Key="flip", ACL="private")
    with pytest.raises(ClientError) as e:
        anon_s3.get_object(Bucket=bucket, Key="flip")
    assert error_of(e)[1] == 403


def test_wrong_secret_is_signature_does_not_match(server, bucket):
    bad = boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key="wrong-secret",
        config=client_config(),
    )
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert error_of(e) == ("SignatureDoesNotMatch", 403)
    unknown = boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, region_name=server.region,
        aws_access_key_id="AKIDOESNOTEXIST", aws_secret_access_key="x",
        config=client_config(),
    )
    with pytest.raises(ClientError) as e:
        unknown.list_objects_v2(Bucket=bucket)
    assert error_of(e) == ("InvalidAccessKeyId", 403)



# ---------------------------------------------------------------------------------------------
# Signature Version 2 (header auth)


def test_sigv2_client_bucket_and_object_calls(server, s3):
    """boto3 with `signature_version="s3"`, path-style: it signs the resource `/bucket/` for the
    bucket-level calls (`PUT /bucket`, `GET /bucket?…`), which S3 accepts like `/bucket`."""
    v2 = boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, region_name=server.region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=client_config(signature_version="s3"),
    )
    sent = capture_requests(v2, "CreateBucket")
    name = unique_bucket_name()
    v2.create_bucket(Bucket=name)
    try:
        assert sent and sent[0]["authorization"].startswith("AWS ")
        data = b"signed with sigv2\n" * 50
        put = v2.put_object(
            Bucket=name, Key="dir/v2.txt", Body=data, ContentType="text/plain",
            Metadata={"via": "sigv2"}, ACL="private",
        )
        assert put["ETag"] == md5_etag(data)
        listed = v2.list_objects(Bucket=name, Prefix="dir/")
        assert [o["Key"] for o in listed["Contents"]] == ["dir/v2.txt"]
        assert [o["Key"] for o in v2.list_objects_v2(Bucket=name)["Contents"]] == ["dir/v2.txt"]
        got = v2.get_object(Bucket=name, Key="dir/v2.txt")
        assert got["Body"].read() == data
        assert got["ContentType"] == "text/plain"
        assert got["Metadata"] == {"via": "sigv2"}
        assert v2.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
        v2.delete_object(Bucket=name, Key="dir/v2.txt")
        v2.delete_bucket(Bucket=name)
    finally:
        empty_and_delete_bucket(s3, name)


# ---------------------------------------------------------------------------------------------
# Bucket notifications (webhook targets the operator declared, named by postgate's ARN)


def test_bucket_notification_configuration_round_trip(s3, bucket, server):
    import subprocess

    from conftest import _binary

    subprocess.run(
        [str(_binary()), "--data-dir", str(server.data_dir), "webhook", "add", "boto",
         "--url", "http://127.0.0.1:9/hook", "--secret", "s3cr3t"],
        check=True, capture_output=True,
    )
    arn = "arn:postgate:sqs::boto:webhook"
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{
            "Id": "uploads", "QueueArn": arn,
            "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:Delete"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"},
                                               {"Name": "suffix", "Value": ".jpg"}]}},
        }]},
    )
    got = s3.get_bucket_notification_configuration(Bucket=bucket)
    (queue,) = got["QueueConfigurations"]
    assert queue["Id"] == "uploads" and queue["QueueArn"] == arn
    assert queue["Events"] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:Delete"]
    rules = {r["Name"].lower(): r["Value"] for r in queue["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "in/", "suffix": ".jpg"}

    with pytest.raises(ClientError) as e:
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={"QueueConfigurations": [{
                "QueueArn": "arn:aws:sqs:us-east-1:123456789012:elsewhere",
                "Events": ["s3:ObjectCreated:*"],
            }]},
        )
    assert error_of(e) == ("InvalidArgument", 400)

    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)
