#!/usr/bin/env python3
"""Regenerates the seed corpus of the fuzz targets from real clients.

A postgate server (POSTGATE_BIN, else target/debug/postgate) runs with the fuzz key pair
(fuzz/src/lib.rs) behind a small TCP proxy that records every byte clients send. Then boto3
(SigV4 and SigV2, header and presigned), the AWS CLI, the AWS SDK for JavaScript v3
(tests/interop/node) and headless Chromium (a real HTML form, SigV4 and SigV2 policies) make
ordinary requests through the proxy. The recorded streams are cut into requests and written
as seeds, in each target's input format (see the doc comment of each target):

  auth/         request heads (request line and headers)
  post_form/    multipart/form-data bodies: [flags][split seed][body]; flags 1 = the policy
                field holds its JSON, which the target signs
  aws_chunked/  aws-chunked bodies: [0 or 2][split seed][body]
  parsers/      [selector][input]: CORS, DeleteObjects, CompleteMultipartUpload, Tagging XML
                bodies, Range, dates, Content-Disposition, bucket names and keys, policy JSON

Run from the repository root: /work/main/.venv/bin/python fuzz/corpus/gen.py
The seeds are written under fuzz/corpus/<target>/, named after a digest of their content.

sigv4_differential/ is not made here: its input is a structure (fuzz_targets/sigv4_differential.rs)
that the target signs itself. Its seeds are a set-cover merge of a long run's corpus:
  fuzz/target/x86_64-unknown-linux-gnu/release/sigv4_differential -set_cover_merge=1 \
      fuzz/corpus/sigv4_differential fuzz/runs/sigv4_differential/corpus
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus"
ACCESS_KEY = "AKIAFUZZEXAMPLE00001"
SECRET_KEY = "fuzzSecretKey/0123456789abcdefghijklmnopq"
REGION = "us-east-1"
# Policies must outlive the fuzzing clock of post_form.rs (2026-05-28).
EXPIRES = 10 * 365 * 24 * 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A TCP proxy that keeps what each client connection sent."""

    def __init__(self, upstream: int, tls: ssl.SSLContext | None = None):
        self.upstream = upstream
        self.tls = tls
        self.streams: list[bytearray] = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
                if self.tls is not None:
                    client = self.tls.wrap_socket(client, server_side=True)
            except OSError:
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            record = bytearray()
            with self.lock:
                self.streams.append(record)
            threading.Thread(target=self._pipe, args=(client, server, record), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src, dst, record):
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def split_requests(stream: bytes):
    """Cuts one connection's bytes into (head, body) pairs (Content-Length or chunked)."""
    out = []
    while stream:
        end = stream.find(b"\r\n\r\n")
        if end < 0:
            break
        head, rest = stream[: end + 4], stream[end + 4 :]
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            if b":" in line:
                n, v = line.split(b":", 1)
                headers[n.strip().lower().decode()] = v.strip().decode("latin-1")
        if "chunked" in headers.get("transfer-encoding", ""):
            body = bytearray()
            while True:
                nl = rest.find(b"\r\n")
                size = int(rest[:nl].split(b";")[0], 16)
                body += rest[nl + 2 : nl + 2 + size]
                rest = rest[nl + 2 + size + 2 :]
                if size == 0:
                    break
            body = bytes(body)
        else:
            n = int(headers.get("content-length", "0"))
            body, rest = rest[:n], rest[n:]
        out.append((head, headers, body))
        stream = rest
    return out


def write(target: str, data: bytes, seen: set):
    path = CORPUS / target / hashlib.sha1(data).hexdigest()[:16]
    if path in seen:
        return
    seen.add(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ------------------------------------------------------------------------------------------------
# Clients


def boto3_clients(endpoint: str):
    import boto3
    from botocore.config import Config

    def client(sig):
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(signature_version=sig, s3={"addressing_style": "path"}),
        )

    return client("s3v4"), client("s3")


def post_multipart(url: str, fields: dict, filename: str, data: bytes, ctype="text/plain"):
    """A form POST as Python back ends send it (urllib3's multipart encoder, used by requests)."""
    import urllib3

    fields = list(fields.items()) + [("file", (filename, data, ctype))]
    urllib3.PoolManager().request("POST", url, fields=fields, redirect=False, timeout=10)


def run_boto3(endpoint: str):
    import urllib3

    http = urllib3.PoolManager()

    v4, v2 = boto3_clients(endpoint)
    v4.create_bucket(Bucket="fuzzbucket")
    v4.put_bucket_cors(
        Bucket="fuzzbucket",
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": ["https://app.example.com", "http://*.example.org"],
                    "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag", "x-amz-request-id"],
                    "MaxAgeSeconds": 3000,
                },
                {"ID": "any", "AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
            ]
        },
    )
    v4.get_bucket_cors(Bucket="fuzzbucket")
    for client, name in ((v4, "v4"), (v2, "v2")):
        client.put_object(
            Bucket="fuzzbucket",
            Key=f"{name}/dir/ünïcode key+plus%percent ~tilde.txt",
            Body=b"hello world\n" * 10,
            ContentType="text/plain; charset=utf-8",
            Metadata={"origin": "boto3", "note": "a b  c"},
            Tagging="a=1&b=two words",
        )
        client.get_object(Bucket="fuzzbucket", Key=f"{name}/dir/ünïcode key+plus%percent ~tilde.txt", Range="bytes=3-7")
        client.list_objects_v2(Bucket="fuzzbucket", Prefix=f"{name}/", Delimiter="/", MaxKeys=5)
        try:
            client.head_object(
                Bucket="fuzzbucket",
                Key=f"{name}/dir/ünïcode key+plus%percent ~tilde.txt",
                IfModifiedSince="Wed, 21 Oct 2015 07:28:00 GMT",
            )
        except Exception:
            pass
        client.delete_objects(
            Bucket="fuzzbucket",
            Delete={"Objects": [{"Key": f"{name}/a"}, {"Key": f"{name}/b & <c>"}], "Quiet": True},
        )
        mpu = client.create_multipart_upload(Bucket="fuzzbucket", Key=f"{name}/big")
        part = client.upload_part(
            Bucket="fuzzbucket", Key=f"{name}/big", UploadId=mpu["UploadId"], PartNumber=1, Body=b"x" * 64
        )
        client.complete_multipart_upload(
            Bucket="fuzzbucket",
            Key=f"{name}/big",
            UploadId=mpu["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        url = client.generate_presigned_url(
            "get_object",
            Params={"Bucket": "fuzzbucket", "Key": f"{name}/big", "ResponseContentDisposition": "attachment; filename=\"b.bin\""},
            ExpiresIn=EXPIRES if name == "v2" else 604800,
        )
        http.request("GET", url, timeout=10)
        url = client.generate_presigned_url(
            "put_object", Params={"Bucket": "fuzzbucket", "Key": f"{name}/presigned put"}, ExpiresIn=3600
        )
        http.request("PUT", url, body=b"presigned body", timeout=10)
    # POST policies, SigV4 and SigV2, as web back ends make them.
    for client in (v4, v2):
        post = client.generate_presigned_post(
            "fuzzbucket",
            "uploads/${filename}",
            Fields={
                "Content-Type": "image/png",
                "x-amz-meta-origin": "form",
                "success_action_status": "201",
                "Content-Disposition": "inline",
            },
            Conditions=[
                ["starts-with", "$key", "uploads/"],
                {"Content-Type": "image/png"},
                {"x-amz-meta-origin": "form"},
                {"success_action_status": "201"},
                ["starts-with", "$Content-Disposition", ""],
                ["content-length-range", 1, 4096],
            ],
            ExpiresIn=EXPIRES,
        )
        post_multipart(post["url"], post["fields"], "cat.png", b"\x89PNG fake image bytes", "image/png")
        post = client.generate_presigned_post(
            "fuzzbucket",
            "r.txt",
            Fields={"success_action_redirect": "http://app.test/done?x=1", "x-amz-checksum-crc32": "DUoRhQ=="},
            Conditions=[{"success_action_redirect": "http://app.test/done?x=1"}, ["eq", "$x-amz-checksum-crc32", "DUoRhQ=="]],
            ExpiresIn=EXPIRES,
        )
        post_multipart(post["url"], post["fields"], "r.txt", b"hello world")


def run_tls(endpoint: str):
    """boto3 sends PutObject as aws-chunked (unsigned, CRC32 trailer) only over https."""
    import io

    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name=REGION, verify=False, config=Config(s3={"addressing_style": "path"}),
    )
    client.put_object(Bucket="fuzzbucket", Key="tls/a", Body=io.BytesIO(b"chunked body " * 100))
    client.put_object(Bucket="fuzzbucket", Key="tls/b", Body=io.BytesIO(b"sha256 trailer"), ChecksumAlgorithm="SHA256")
    client.upload_fileobj(io.BytesIO(b"y" * 3000), "fuzzbucket", "tls/c")


def run_awscli(endpoint: str):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    aws = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", endpoint]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "file name.txt"
        src.write_bytes(b"aws cli bytes " * 50)
        subprocess.run(aws + ["s3", "cp", str(src), "s3://fuzzbucket/cli/file name.txt"], env=env, check=True, capture_output=True)
        subprocess.run(aws + ["s3", "ls", "s3://fuzzbucket/cli/"], env=env, check=True, capture_output=True)
        subprocess.run(aws + ["s3", "cp", "s3://fuzzbucket/cli/file name.txt", str(Path(d) / "back")], env=env, check=True, capture_output=True)
        subprocess.run(
            aws + ["s3api", "put-object", "--bucket", "fuzzbucket", "--key", "cli/meta", "--body", str(src),
                   "--metadata", "a=1,b=2", "--content-disposition", "attachment; filename*=UTF-8''na%C3%AFve.txt",
                   "--checksum-algorithm", "SHA256"],
            env=env, check=True, capture_output=True,
        )
        subprocess.run(aws + ["s3", "rm", "s3://fuzzbucket/cli/meta"], env=env, check=True, capture_output=True)


NODE_SCRIPT = r"""
import { S3Client, PutObjectCommand, GetObjectCommand, DeleteObjectsCommand, PutBucketCorsCommand } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { createPresignedPost } from "@aws-sdk/s3-presigned-post";
const [endpoint, ak, sk] = process.argv.slice(2);
const s3 = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true,
  credentials: { accessKeyId: ak, secretAccessKey: sk } });
await s3.send(new PutObjectCommand({ Bucket: "fuzzbucket", Key: "node/a b.txt", Body: "node body ".repeat(20),
  ContentType: "text/plain", Metadata: { origin: "node" } }));
await s3.send(new PutObjectCommand({ Bucket: "fuzzbucket", Key: "node/crc.txt", Body: "checksummed",
  ChecksumAlgorithm: "CRC32C" }));
const got = await s3.send(new GetObjectCommand({ Bucket: "fuzzbucket", Key: "node/a b.txt", Range: "bytes=-5" }));
await got.Body.transformToString();
await s3.send(new DeleteObjectsCommand({ Bucket: "fuzzbucket", Delete: { Objects: [{ Key: "node/x" }, { Key: "node/y" }] } }));
await s3.send(new PutBucketCorsCommand({ Bucket: "fuzzbucket", CORSConfiguration: { CORSRules: [
  { AllowedOrigins: ["https://*.example.net"], AllowedMethods: ["PUT", "POST"], AllowedHeaders: ["content-type", "x-amz-*"], MaxAgeSeconds: 600 } ] } }));
const up = new Upload({ client: s3, params: { Bucket: "fuzzbucket", Key: "node/multi", Body: Buffer.alloc(6 * 1024 * 1024, 1) },
  partSize: 5 * 1024 * 1024, queueSize: 1 });
await up.done();
const post = await createPresignedPost(s3, { Bucket: "fuzzbucket", Key: "node/${filename}", Expires: 315360000,
  Conditions: [["content-length-range", 0, 1000], ["starts-with", "$Content-Type", "text/"]],
  Fields: { "Content-Type": "text/plain" } });
const form = new FormData();
for (const [k, v] of Object.entries(post.fields)) form.append(k, v);
form.append("file", new Blob(["node form bytes"], { type: "text/plain" }), "nöde.txt");
await fetch(post.url, { method: "POST", body: form });
"""


def run_node(endpoint: str):
    node_dir = REPO / "tests" / "interop" / "node"
    script = node_dir / ".fuzz-corpus.mjs"
    script.write_text(NODE_SCRIPT)
    try:
        subprocess.run(["node", str(script), endpoint, ACCESS_KEY, SECRET_KEY], check=True, cwd=node_dir, timeout=120)
    finally:
        script.unlink()


def run_chromium(endpoint: str):
    """A real HTML form in headless Chromium: the browser writes the multipart body."""
    from selenium import webdriver

    v4, v2 = boto3_clients(endpoint)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts)
    try:
        with tempfile.TemporaryDirectory() as d:
            upload = Path(d) / "photo é.jpg"
            upload.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 4)
            for i, client in enumerate((v4, v2)):
                post = client.generate_presigned_post(
                    "fuzzbucket",
                    "browser/${filename}",
                    Fields={"acl": "private", "x-amz-meta-from": "chromium"},
                    Conditions=[["starts-with", "$key", "browser/"], {"acl": "private"},
                                ["starts-with", "$x-amz-meta-from", ""], ["content-length-range", 0, 1 << 20]],
                    ExpiresIn=EXPIRES,
                )
                inputs = "".join(
                    f'<input type="hidden" name="{k}" value="{v}">' for k, v in post["fields"].items()
                )
                page = Path(d) / f"form{i}.html"
                page.write_text(
                    f'<html><body><form id="f" method="post" action="{post["url"]}" enctype="multipart/form-data">'
                    f'{inputs}<input type="file" name="file" id="file"></form></body></html>'
                )
                driver.get(page.as_uri())
                driver.find_element("id", "file").send_keys(str(upload))
                driver.execute_script("document.getElementById('f').submit()")
                time.sleep(1.5)
    finally:
        driver.quit()


# ------------------------------------------------------------------------------------------------
# Seeds


def seeds(requests):
    seen: set = set()
    for head, headers, body in requests:
        write("auth", head, seen)
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, target = first.split(" ")[:2]
        path, _, query = target.partition("?")
        ctype = headers.get("content-type", "")
        if method == "POST" and ctype.startswith("multipart/form-data"):
            write("post_form", b"\x00\x00" + body, seen)
            write("post_form", b"\x00\x2a" + body, seen)
            m = re.search(rb'name="policy"\r\n\r\n([^\r]*)\r\n--', body)
            if m:
                policy = base64.b64decode(m.group(1))
                write("post_form", b"\x01\x07" + body[: m.start(1)] + policy + body[m.end(1) :], seen)
                write("parsers", b"\x08" + policy, seen)
            for cd in re.findall(rb"Content-Disposition: ([^\r]*)", body, re.I):
                write("parsers", b"\x06" + cd, seen)
        sha = headers.get("x-amz-content-sha256", "")
        if sha.startswith("STREAMING") or "aws-chunked" in headers.get("content-encoding", ""):
            body_seed = body if len(body) <= 4096 else body[:2048] + body[-2048:]
            write("aws_chunked", b"\x00\x00" + body_seed, seen)
            write("aws_chunked", b"\x02\x11" + body_seed, seen)
        if body.lstrip().startswith(b"<"):
            kind = b"\x01" if "delete" in query else b"\x02" if "uploadId" in query else b"\x00" if "cors" in query else b"\x03"
            write("parsers", kind + body, seen)
        for name in ("range",):
            if name in headers:
                size = (1000).to_bytes(8, "little")
                write("parsers", b"\x04" + size + headers[name].encode(), seen)
        for name in ("date", "if-modified-since", "if-unmodified-since", "x-amz-date"):
            if name in headers:
                write("parsers", b"\x05" + headers[name].encode(), seen)
        segments = urllib.parse.unquote(path).lstrip("/").split("/", 1)
        write("parsers", b"\x07" + segments[0].encode(), seen)
        if len(segments) > 1:
            write("parsers", b"\x07" + segments[1].encode(), seen)
    return len(seen)


def main():
    binary = Path(os.environ.get("POSTGATE_BIN", REPO / "target" / "debug" / "postgate"))
    for target in ("auth", "post_form", "aws_chunked", "parsers"):
        shutil.rmtree(CORPUS / target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        env = dict(os.environ, POSTGATE_ACCESS_KEY=ACCESS_KEY, POSTGATE_SECRET_KEY=SECRET_KEY, NO_COLOR="1")
        server = subprocess.Popen(
            [str(binary), "serve", "--data-dir", f"{d}/data", "--addr", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/-/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            proxy = Recorder(port)
            endpoint = f"http://127.0.0.1:{proxy.port}"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
                 f"{d}/key.pem", "-out", f"{d}/cert.pem", "-subj", "/CN=127.0.0.1"],
                check=True, capture_output=True,
            )
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(f"{d}/cert.pem", f"{d}/key.pem")
            tls_proxy = Recorder(port, ctx)
            tls_endpoint = f"https://127.0.0.1:{tls_proxy.port}"
            clients = (
                ("boto3", run_boto3, endpoint),
                ("boto3 over https", run_tls, tls_endpoint),
                ("awscli", run_awscli, endpoint),
                ("node", run_node, endpoint),
                ("chromium", run_chromium, endpoint),
            )
            for name, run, url in clients:
                try:
                    run(url)
                    print(f"{name}: done")
                except Exception as e:  # one client failing must not lose the others' seeds
                    print(f"{name}: failed: {e!r}", file=sys.stderr)
            time.sleep(0.5)
        finally:
            server.terminate()
            server.wait(timeout=10)
        streams = proxy.streams + tls_proxy.streams
        requests = [r for s in streams for r in split_requests(bytes(s))]
    print(f"{len(requests)} requests, {seeds(requests)} seeds")


if __name__ == "__main__":
    main()
