"""boto3 against the S3 conformance rows of docs/s3-compatibility.md that upload apps meet:
multipart listings with a delimiter, reads by part number, conditional copies and writes,
flexible checksums. Each case cites the API reference section it follows.

CRC32C and CRC64NVME need botocore's optional `awscrt`; without it those cases are skipped,
except under CI, where that is a failure (tests/run.sh installs it).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os

import pytest
from botocore.compat import HAS_CRT
from botocore.exceptions import ClientError

IN_CI = bool(os.environ.get("CI"))
MIB = 1024 * 1024


def error_of(excinfo) -> tuple[str, int]:
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def needs_crt():
    if not HAS_CRT:
        if IN_CI:
            pytest.fail("awscrt is not installed (botocore needs it for CRC32C and CRC64NVME)")
        pytest.skip("awscrt is not installed")


def two_part_object(s3, bucket, key) -> tuple[bytes, bytes, str]:
    first, last = os.urandom(5 * MIB), os.urandom(1234)
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for n, body in enumerate([first, last], start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
    )
    return first, last, done["ETag"]


# ListMultipartUploads: prefix, delimiter, paginator
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html


def test_list_multipart_uploads_with_delimiter(s3, bucket):
    ids = {}
    for key in ["a.bin", "photos/2024/x.jpg", "photos/2024/y.jpg", "photos/top.jpg", "videos/v.mp4"]:
        ids[key] = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    got = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in got["Uploads"]] == ["a.bin"]
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["photos/", "videos/"]

    got = s3.list_multipart_uploads(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [(u["Key"], u["UploadId"]) for u in got["Uploads"]] == [
        ("photos/top.jpg", ids["photos/top.jpg"])
    ]
    assert [p["Prefix"] for p in got["CommonPrefixes"]] == ["photos/2024/"]

    # boto3's paginator follows NextKeyMarker/NextUploadIdMarker one entry at a time.
    pages = s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}
    )
    seen = []
    for page in pages:
        seen += [u["Key"] for u in page.get("Uploads", [])]
        seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert seen == ["a.bin", "photos/", "videos/"]


# Conditional deletes (2024): DeleteObject IfMatch / IfMatchSize / IfMatchLastModifiedTime,
# DeleteObjects per-object ETag, AbortMultipartUpload IfMatchInitiatedTime
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html


def test_conditional_deletes(s3, bucket):
    stale = '"00000000000000000000000000000000"'
    etag = s3.put_object(Bucket=bucket, Key="cd", Body=b"kept")["ETag"]
    for kwargs in [{"IfMatch": stale}, {"IfMatchSize": 5}, {"IfMatch": etag, "IfMatchSize": 5}]:
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket=bucket, Key="cd", **kwargs)
        assert error_of(e) == ("PreconditionFailed", 412), kwargs
    assert s3.get_object(Bucket=bucket, Key="cd")["Body"].read() == b"kept"
    # botocore sends the header timestamp as an HTTP date: HeadObject's LastModified names it.
    modified = s3.head_object(Bucket=bucket, Key="cd")["LastModified"]
    s3.delete_object(
        Bucket=bucket, Key="cd", IfMatch=etag, IfMatchSize=4, IfMatchLastModifiedTime=modified
    )
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=bucket, Key="cd", IfMatch="*")
    assert error_of(e) == ("NoSuchKey", 404)

    etag_a = s3.put_object(Bucket=bucket, Key="cd-a", Body=b"a")["ETag"]
    s3.put_object(Bucket=bucket, Key="cd-b", Body=b"b")
    res = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "cd-a", "ETag": etag_a}, {"Key": "cd-b", "ETag": stale}]},
    )
    assert [d["Key"] for d in res["Deleted"]] == ["cd-a"]
    assert [(e["Key"], e["Code"]) for e in res["Errors"]] == [("cd-b", "PreconditionFailed")]
    assert s3.get_object(Bucket=bucket, Key="cd-b")["Body"].read() == b"b"

    uid = s3.create_multipart_upload(Bucket=bucket, Key="cd-up")["UploadId"]
    initiated = next(
        u["Initiated"]
        for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
        if u["UploadId"] == uid
    )
    with pytest.raises(ClientError) as e:
        s3.abort_multipart_upload(
            Bucket=bucket,
            Key="cd-up",
            UploadId=uid,
            IfMatchInitiatedTime=initiated - datetime.timedelta(days=1),
        )
    assert error_of(e) == ("PreconditionFailed", 412)
    s3.list_parts(Bucket=bucket, Key="cd-up", UploadId=uid)
    s3.abort_multipart_upload(
        Bucket=bucket, Key="cd-up", UploadId=uid, IfMatchInitiatedTime=initiated
    )
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="cd-up", UploadId=uid)
    assert error_of(e) == ("NoSuchUpload", 404)


# ListBuckets: Prefix, MaxBuckets, ContinuationToken, BucketRegion (2024)
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListBuckets.html


def test_list_buckets_pages_by_prefix(s3, server):
    prefix = f"lb{os.urandom(4).hex()}-"
    names = [f"{prefix}{i}" for i in range(5)]
    for name in names:
        s3.create_bucket(Bucket=name)
    try:
        first = s3.list_buckets(MaxBuckets=2, Prefix=prefix)
        assert [b["Name"] for b in first["Buckets"]] == names[:2]
        assert first["Prefix"] == prefix
        assert first["ContinuationToken"]
        assert {b["BucketRegion"] for b in first["Buckets"]} == {server.region}
        seen = []
        pages = s3.get_paginator("list_buckets").paginate(
            Prefix=prefix, PaginationConfig={"PageSize": 2}
        )
        for page in pages:
            seen += [b["Name"] for b in page["Buckets"]]
        assert seen == names
        other = "eu-west-3" if server.region != "eu-west-3" else "us-west-2"
        assert s3.list_buckets(Prefix=prefix, BucketRegion=other)["Buckets"] == []
    finally:
        for name in names:
            s3.delete_bucket(Bucket=name)


# GetObject / HeadObject PartNumber
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html (partNumber, PartsCount)


def test_get_object_part_number(s3, bucket):
    first, last, etag = two_part_object(s3, bucket, "parts.bin")
    got = s3.get_object(Bucket=bucket, Key="parts.bin", PartNumber=1)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["PartsCount"] == 2
    assert got["ETag"] == etag
    assert got["Body"].read() == first
    got = s3.get_object(Bucket=bucket, Key="parts.bin", PartNumber=2)
    assert got["Body"].read() == last
    assert got["ContentRange"] == f"bytes {len(first)}-{len(first) + len(last) - 1}/{len(first) + len(last)}"
    head = s3.head_object(Bucket=bucket, Key="parts.bin", PartNumber=2)
    assert head["ContentLength"] == len(last)
    assert head["PartsCount"] == 2
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="parts.bin", PartNumber=3)
    assert error_of(e) == ("InvalidPartNumber", 416)


# Conditional copies
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html (x-amz-copy-source-if-*)


def test_conditional_copies(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="src", Body=b"source")["ETag"]
    src = {"Bucket": bucket, "Key": "src"}
    now = datetime.datetime.now(datetime.timezone.utc)
    hour = datetime.timedelta(hours=1)
    ok = [
        {"CopySourceIfMatch": etag},
        {"CopySourceIfNoneMatch": '"00000000000000000000000000000000"'},
        {"CopySourceIfModifiedSince": now - hour},
        {"CopySourceIfUnmodifiedSince": now + hour},
        {"CopySourceIfMatch": etag, "CopySourceIfUnmodifiedSince": now - hour},
    ]
    for i, cond in enumerate(ok):
        s3.copy_object(Bucket=bucket, Key=f"ok{i}", CopySource=src, **cond)
        assert s3.get_object(Bucket=bucket, Key=f"ok{i}")["Body"].read() == b"source"
    refused = [
        {"CopySourceIfMatch": '"00000000000000000000000000000000"'},
        {"CopySourceIfNoneMatch": etag},
        {"CopySourceIfModifiedSince": now + hour},
        {"CopySourceIfUnmodifiedSince": now - hour},
        {"CopySourceIfNoneMatch": etag, "CopySourceIfModifiedSince": now - hour},
    ]
    for i, cond in enumerate(refused):
        with pytest.raises(ClientError) as e:
            s3.copy_object(Bucket=bucket, Key=f"no{i}", CopySource=src, **cond)
        assert error_of(e) == ("PreconditionFailed", 412), cond
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key=f"no{i}")


# Conditional writes and a repeated completion
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html


def test_conditional_and_repeated_complete_multipart_upload(s3, bucket):
    s3.put_object(Bucket=bucket, Key="c", Body=b"old")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="c")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="c", UploadId=uid, PartNumber=1, Body=b"new")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="c", UploadId=uid, MultipartUpload=parts, IfNoneMatch="*"
        )
    assert error_of(e) == ("PreconditionFailed", 412)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="c", UploadId=uid, MultipartUpload=parts)
    # A retry after a lost answer: S3 answers 200 with the same ETag (adobe/S3Mock#2586).
    again = s3.complete_multipart_upload(Bucket=bucket, Key="c", UploadId=uid, MultipartUpload=parts)
    assert again["ETag"] == done["ETag"]
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"new"


# Flexible checksums
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize("algorithm", ["CRC32C", "SHA256", "CRC64NVME", "SHA1", "CRC32"])
def test_put_object_flexible_checksums(s3, bucket, algorithm):
    if algorithm in ("CRC32C", "CRC64NVME"):
        needs_crt()
    data = os.urandom(200_000)
    put = s3.put_object(Bucket=bucket, Key="sum", Body=data, ChecksumAlgorithm=algorithm)
    value = put[f"Checksum{algorithm}"]
    if algorithm == "SHA256":
        assert value == b64(hashlib.sha256(data).digest())
    if algorithm == "SHA1":
        assert value == b64(hashlib.sha1(data).digest())
    got = s3.get_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert got["Body"].read() == data  # botocore validates the returned checksum as it reads
    assert got[f"Checksum{algorithm}"] == value
    assert got.get("ChecksumType") == "FULL_OBJECT"


@pytest.mark.parametrize("algorithm", ["CRC32C", "SHA256"])
def test_multipart_flexible_checksums(s3, bucket, algorithm):
    if algorithm == "CRC32C":
        needs_crt()
    key = "mp-sum.bin"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm)["UploadId"]
    parts = []
    bodies = [os.urandom(5 * MIB), os.urandom(4321)]
    for n, body in enumerate(bodies, start=1):
        res = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body, ChecksumAlgorithm=algorithm
        )
        parts.append(
            {"PartNumber": n, "ETag": res["ETag"], f"Checksum{algorithm}": res[f"Checksum{algorithm}"]}
        )
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    assert [p[f"Checksum{algorithm}"] for p in listed] == [p[f"Checksum{algorithm}"] for p in parts]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
    )
    assert done[f"Checksum{algorithm}"].endswith("-2")
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(bodies)
    assert got[f"Checksum{algorithm}"] == done[f"Checksum{algorithm}"]


# Full-object checksums and x-amz-mp-object-size on CompleteMultipartUpload
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html


def multipart_file(tmp_path, size=11 * MIB):
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(size)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return data, str(path), TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)


def test_upload_file_crc64nvme_is_the_full_object_crc(s3, bucket, tmp_path):
    needs_crt()
    from awscrt import checksums

    data, path, config = multipart_file(tmp_path)
    s3.upload_file(path, bucket, "nvme.bin", Config=config, ExtraArgs={"ChecksumAlgorithm": "CRC64NVME"})
    head = s3.head_object(Bucket=bucket, Key="nvme.bin", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == b64(checksums.crc64nvme(data).to_bytes(8, "big"))
    assert head["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="nvme.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == data  # botocore checks the full-object value as it reads


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C"])
def test_upload_file_with_a_full_object_checksum_and_size(s3, bucket, tmp_path, algorithm):
    needs_crt()
    from awscrt import checksums

    data, path, config = multipart_file(tmp_path)
    crc = {"CRC32": checksums.crc32, "CRC32C": checksums.crc32c}[algorithm](data)
    whole = b64(crc.to_bytes(4, "big"))
    # s3transfer sends the value on the completion with x-amz-checksum-type: FULL_OBJECT.
    s3.upload_file(
        path, bucket, "full.bin", Config=config,
        ExtraArgs={f"Checksum{algorithm}": whole, "MpuObjectSize": len(data)},
    )
    head = s3.head_object(Bucket=bucket, Key="full.bin", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == whole
    assert head["ChecksumType"] == "FULL_OBJECT"

    wrong = b64((crc ^ 1).to_bytes(4, "big"))
    with pytest.raises(Exception) as e:
        s3.upload_file(path, bucket, "bad.bin", Config=config, ExtraArgs={f"Checksum{algorithm}": wrong})
    assert "BadDigest" in str(e.value)
    with pytest.raises(Exception) as e:
        s3.upload_file(
            path, bucket, "bad.bin", Config=config,
            ExtraArgs={f"Checksum{algorithm}": whole, "MpuObjectSize": len(data) + 1},
        )
    assert "InvalidRequest" in str(e.value)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad.bin")


# CopyObject ChecksumAlgorithm
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html


@pytest.mark.parametrize("algorithm", ["SHA256", "CRC32C"])
def test_copy_object_with_checksum_algorithm(s3, bucket, algorithm):
    if algorithm == "CRC32C":
        needs_crt()
    data = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    done = s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, ChecksumAlgorithm=algorithm
    )
    value = done["CopyObjectResult"][f"Checksum{algorithm}"]
    if algorithm == "SHA256":
        assert value == b64(hashlib.sha256(data).digest())
    head = s3.head_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == value
    got = s3.get_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert got["Body"].read() == data


# PostObject checksum fields
# https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html


def test_presigned_post_with_checksum_fields(server, s3, bucket):
    from test_post_forms import error_code, post_form, signer

    data = os.urandom(50_000)
    sha = b64(hashlib.sha256(data).digest())
    v4 = signer(server, "s3v4")
    for key, fields in [
        ("by-value", {"x-amz-checksum-sha256": sha}),
        ("by-algorithm", {"x-amz-checksum-algorithm": "SHA256"}),
    ]:
        post = v4.generate_presigned_post(
            bucket, key, Fields=fields, Conditions=[dict([kv]) for kv in fields.items()]
        )
        status, headers, _ = post_form(post["url"], post["fields"], "f.bin", data)
        assert status == 204
        assert headers["x-amz-checksum-sha256"] == sha
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == sha

    wrong = b64(hashlib.sha256(b"other").digest())
    post = v4.generate_presigned_post(
        bucket, "bad", Fields={"x-amz-checksum-sha256": wrong}, Conditions=[{"x-amz-checksum-sha256": wrong}]
    )
    status, _, body = post_form(post["url"], post["fields"], "f.bin", data)
    assert (status, error_code(body)) == (400, "BadDigest")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")
