"""Fixtures for the real-client interop suite.

One postgate server runs for the whole session (the built binary, `target/debug/postgate`, or
`POSTGATE_BIN`), on a free loopback port, with a temporary data directory and a fixed admin key.
Every test gets a fresh bucket. When a test fails, the lines the server logged during that test
are attached to its report.

Some clients only use their production code paths over TLS (botocore sends PutObject bodies as
`aws-chunked` with a CRC32 trailer only on https URLs), so the session also offers a small
TLS-terminating proxy in front of the server, like the reverse proxy of a real deployment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import botocore
import pytest
from botocore.config import Config

REPO = Path(__file__).resolve().parents[2]
ACCESS_KEY = "PGINTEROPADMINKEY01"
SECRET_KEY = "interop-secret-key-0123456789abcdefghij"
REGION = "us-east-1"
HEALTH_TIMEOUT_S = 20.0

# Environment variables that would change how boto3 or the AWS CLI behave; the suite must not
# depend on the machine's AWS configuration.
_AWS_ENV_PREFIXES = ("AWS_", "BOTO_")


@dataclasses.dataclass(frozen=True)
class Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def log_text(self, start: int = 0) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0


def pytest_configure(config):
    # Isolate boto3 and the CLI from the machine: no profile, no endpoint or checksum overrides.
    for name in list(os.environ):
        if name.startswith(_AWS_ENV_PREFIXES):
            del os.environ[name]
    empty_dir = Path(tempfile.mkdtemp(prefix="postgate-aws-home-"))
    (empty_dir / "config").write_text("")
    (empty_dir / "credentials").write_text("")
    os.environ["AWS_CONFIG_FILE"] = str(empty_dir / "config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(empty_dir / "credentials")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def _binary() -> Path:
    env = os.environ.get("POSTGATE_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "postgate"
    if not path.is_file():
        pytest.exit(
            f"postgate binary not found at {path}: run `cargo build` (or set POSTGATE_BIN)",
            returncode=3,
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ok(url: str, proc: subprocess.Popen, deadline: float, context=None) -> bool:
    """Polls `url` until it answers 200 (True), `proc` exits or `deadline` passes (False)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as res:
                if res.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary = _binary()
    root = tmp_path_factory.mktemp("postgate")
    data_dir = root / "data"
    log_path = root / "server.log"
    env = dict(os.environ)
    env.update(
        POSTGATE_ACCESS_KEY=ACCESS_KEY,
        POSTGATE_SECRET_KEY=SECRET_KEY,
        POSTGATE_LOG=os.environ.get("POSTGATE_LOG", "postgate=debug,tower_http=debug"),
        NO_COLOR="1",
    )
    # The port is found free and then handed over, so another process may take it in between:
    # try a few ports before giving up.
    for _attempt in range(3):
        endpoint = f"http://127.0.0.1:{_free_port()}"
        log = open(log_path, "ab")
        proc = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--data-dir",
                str(data_dir),
                "--addr",
                endpoint.removeprefix("http://"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
        log.close()
        if _wait_ok(f"{endpoint}/-/health", proc, time.monotonic() + HEALTH_TIMEOUT_S):
            break
        _stop(proc)
    else:
        text = log_path.read_text(errors="replace")
        pytest.exit(
            f"postgate did not become healthy within {HEALTH_TIMEOUT_S}s; its log:\n{text}",
            returncode=3,
        )
    srv = Server(endpoint, ACCESS_KEY, SECRET_KEY, REGION, data_dir, log_path, proc)
    yield srv
    _stop(proc)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    srv = getattr(item, "_postgate_server", None)
    if srv is None or report.passed or report.skipped:
        return
    start = getattr(item, "_postgate_log_start", 0)
    text = srv.log_text(start)
    if srv.process.poll() is not None:
        text += f"\n[postgate exited with code {srv.process.returncode}]\n"
    if len(text) > 20_000:
        text = "[...]\n" + text[-20_000:]
    report.sections.append(("postgate log during this test", text or "(nothing)"))


@pytest.fixture(autouse=True)
def _attach_server_log(request):
    """Remembers where the server log stood when the test began (for failure reports)."""
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        request.node._postgate_server = srv
        request.node._postgate_log_start = srv.log_size()
    yield


# ---------------------------------------------------------------------------------------------
# boto3 clients and buckets

def client_config(**extra) -> Config:
    return Config(
        s3={"addressing_style": "path"},
        # No retries: a server error must show, not be papered over.
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        **extra,
    )


def make_client(endpoint: str, server: Server, **kw):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=client_config(),
        **kw,
    )


@pytest.fixture(scope="session")
def s3(server):
    """A boto3 S3 client with the admin key, path-style, against the plain-HTTP endpoint."""
    return make_client(server.endpoint, server)


@pytest.fixture(scope="session")
def anon_s3(server):
    """A boto3 client that sends unsigned (anonymous) requests."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        config=client_config(signature_version=botocore.UNSIGNED),
    )


def unique_bucket_name() -> str:
    return f"it-{uuid.uuid4().hex[:20]}"


def empty_and_delete_bucket(s3, name: str) -> None:
    try:
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        for i in range(0, len(keys), 1000):
            s3.delete_objects(
                Bucket=name,
                Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
            )
        s3.delete_bucket(Bucket=name)
    except Exception:  # cleanup is best-effort; the data dir is temporary anyway
        pass


@pytest.fixture
def bucket(s3) -> str:
    """A fresh, empty bucket (unique name), emptied and removed after the test."""
    name = unique_bucket_name()
    s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete_bucket(s3, name)


# ---------------------------------------------------------------------------------------------
# TLS in front of the server

@dataclasses.dataclass(frozen=True)
class TlsEndpoint:
    endpoint: str
    ca_bundle: str


class _TlsProxy:
    """Accepts TLS on a loopback port and pipes the decrypted bytes to the server, unchanged."""

    def __init__(self, upstream_port: int, context: ssl.SSLContext):
        self.upstream_port = upstream_port
        self.context = context
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=120)
        except OSError:
            tls.close()
            return

        def pipe(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pipe, args=(up, tls), daemon=True)
        t.start()
        pipe(tls, up)
        t.join(timeout=120)
        tls.close()
        up.close()

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture(scope="session")
def tls(server, tmp_path_factory) -> TlsEndpoint:
    """An https endpoint (self-signed certificate for 127.0.0.1) in front of the server."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (.ci/run installs it)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext", "basicConstraints=critical,CA:TRUE",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    upstream_port = int(server.endpoint.rsplit(":", 1)[1])
    proxy = _TlsProxy(upstream_port, ctx)
    yield TlsEndpoint(f"https://127.0.0.1:{proxy.port}", str(cert))
    proxy.close()


@pytest.fixture(scope="session")
def s3_tls(server, tls):
    """A boto3 client using the https endpoint: botocore's defaults for TLS apply (unsigned
    payloads with a checksum trailer)."""
    return make_client(tls.endpoint, server, verify=tls.ca_bundle)


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the test modules

def venv_bin(name: str) -> str:
    """A console script installed next to the running Python (the suite's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {Path(sys.executable).parent} (run tests/run.sh)")
    return str(path)


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's ETag of an object uploaded in parts of `part_size`: md5 of the part md5s, then -N."""
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'
