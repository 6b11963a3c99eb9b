"""postgate behind a real nginx (Debian's package) terminating TLS, with the configuration taken
from the README's "Behind nginx" block, so the documented configuration is the tested one.

nginx runs in the foreground with its own prefix, pid file, temp directories and logs under a
temp directory, on an ephemeral port, with a CA and a `localhost` certificate made by the
openssl CLI. Through it: a link page upload in headless Chromium (the page's URLs must be the
https origin nginx was reached on, from the trusted proxy's headers), a boto3 round trip
verifying the test CA, and a 1 GiB streamed PUT with nginx's memory sampled during the upload
(it must stay flat: nginx neither buffers the body in memory nor spools it to disk).

The README's systemd unit is checked with `systemd-analyze verify` here too.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from conftest import _binary, _free_port, _stop, _wait_ok

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IN_CI = bool(os.environ.get("CI"))
REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
ACCESS_KEY = "PGNGINXADMINKEY0001"
SECRET_KEY = "nginx-secret-key-0123456789abcdefghijkl"
REGION = "us-east-1"
WAIT_S = 20
GIB = 1 << 30

if not os.path.exists(NGINX) and not IN_CI:
    pytest.skip("nginx is not installed (apt-get install nginx; .ci/run does it)",
                allow_module_level=True)


def readme_block(heading: str, lang: str) -> str:
    """The first fenced `lang` block under the README's `### heading`."""
    text = README.read_text()
    section = text.split(f"### {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"no ```{lang} block under '### {heading}' in the README"
    return match.group(1)


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replaces each placeholder, failing if the README no longer has it."""
    for old, new in replacements.items():
        assert old in text, f"the README's block no longer contains {old!r}"
        text = text.replace(old, new)
    return text


class Stack:
    """postgate on loopback behind nginx on https://localhost:PORT."""

    def __init__(self, root: Path):
        self.root = root
        self.ca = root / "ca.pem"
        self._make_certs()
        self.pg_port = _free_port()
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        env = dict(os.environ)
        env.update(POSTGATE_ACCESS_KEY=ACCESS_KEY, POSTGATE_SECRET_KEY=SECRET_KEY,
                   POSTGATE_LOG="postgate=info", NO_COLOR="1")
        env.pop("POSTGATE_CONFIG", None)
        with open(self.log_path, "ab") as log:
            self.postgate = subprocess.Popen(
                [str(_binary()), "serve", "--data-dir", str(self.data_dir),
                 "--addr", f"127.0.0.1:{self.pg_port}", "--trusted-proxies", "127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
            )
        if not _wait_ok(f"http://127.0.0.1:{self.pg_port}/-/health", self.postgate,
                        time.monotonic() + WAIT_S):
            self.stop()
            pytest.fail("postgate did not start:\n" + self.log_text())
        self.port = _free_port()
        self.endpoint = f"https://localhost:{self.port}"
        self._start_nginx()

    def _make_certs(self) -> None:
        r = self.root
        def run(*args):
            subprocess.run([OPENSSL, *args], check=True, capture_output=True, cwd=r)
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=postgate nginx test CA", "-keyout", "ca.key", "-out", "ca.pem")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")
        (r / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")

    def _start_nginx(self) -> None:
        prefix = self.root / "nginx"
        for d in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        site = substitute(readme_block("Behind nginx", "nginx"), {
            "server 127.0.0.1:9000;": f"server 127.0.0.1:{self.pg_port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{self.port} ssl;",
            "/etc/letsencrypt/live/upload.example.com/fullchain.pem": str(self.root / "server.pem"),
            "/etc/letsencrypt/live/upload.example.com/privkey.pem": str(self.root / "server.key"),
            "server_name upload.example.com;": "server_name localhost;",
        })
        (prefix / "postgate.conf").write_text(site)
        # What a distribution's nginx.conf holds around a site, pointed at the temp prefix.
        (prefix / "nginx.conf").write_text(f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/postgate.conf;
}}
""")
        self.nginx_prefix = prefix
        self.nginx = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
             str(prefix / "logs" / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        if not _wait_ok(f"{self.endpoint}/-/health", self.nginx, time.monotonic() + WAIT_S,
                        self.ssl_context()):
            self.stop()
            pytest.fail("nginx did not start:\n" + (prefix / "logs" / "error.log").read_text())

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def nginx_pids(self) -> list[int]:
        """The master and its workers."""
        pids = [self.nginx.pid]
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                              if ":\t" in line)
            except OSError:
                continue
            if fields.get("PPid", "").strip() == str(self.nginx.pid):
                pids.append(int(status.parent.name))
        return pids

    def nginx_rss(self) -> int:
        """Resident bytes of nginx, master and workers together."""
        total = 0
        for pid in self.nginx_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

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

    @property
    def process(self):  # for conftest's failure hook
        return self.postgate

    def stop(self) -> None:
        for proc in (getattr(self, "nginx", None), self.postgate):
            if proc is not None:
                _stop(proc)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("postgate-nginx"))
    yield st
    st.stop()


@pytest.fixture(autouse=True)
def _attach_log(request, stack):
    request.node._postgate_server = stack
    request.node._postgate_log_start = stack.log_size()
    yield


@pytest.fixture(scope="module")
def s3(stack):
    return boto3.session.Session().client(
        "s3", endpoint_url=stack.endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        verify=str(stack.ca),
        config=Config(s3={"addressing_style": "path"},
                      retries={"max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture
def bucket(s3):
    name = f"ng-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    return name


def api(stack, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{stack.endpoint}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {ACCESS_KEY}:{SECRET_KEY}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=WAIT_S, context=stack.ssl_context()) as res:
        return json.loads(res.read())


def test_boto3_round_trip_through_nginx(stack, s3, bucket):
    body = os.urandom(3 * 1024 * 1024 + 17)
    # botocore sends this over https as aws-chunked with a CRC32 trailer: through nginx intact.
    s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body, ContentType="application/x-test")
    got = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["dir/obj.bin"]
    # A presigned URL built for the https endpoint works through the proxy.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "dir/obj.bin"})
    with urllib.request.urlopen(url, context=stack.ssl_context()) as res:
        assert res.read() == body
    s3.delete_object(Bucket=bucket, Key="dir/obj.bin")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_link_urls_name_the_https_origin_nginx_was_reached_on(stack, bucket):
    link = api(stack, "POST", "/-/api/links", {"bucket": bucket, "prefix": "in/"})
    assert link["url"].startswith(f"{stack.endpoint}/-/u/"), link
    ctx = stack.ssl_context()
    with urllib.request.urlopen(link["url"], context=ctx) as res:
        page = res.read().decode()
    assert f"{stack.endpoint}/{bucket}" in page, page
    assert "http://" not in page.replace("http://www.w3.org", ""), page
    policy = api(stack, "POST", "/-/api/presign/post", {"bucket": bucket, "key": "k"})
    assert policy["url"] == f"{stack.endpoint}/{bucket}"


def _chrome():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("selenium is not installed (tests/run.sh installs it)")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        if IN_CI:
            pytest.fail(f"{' and '.join(missing)} missing (.ci/run installs them)")
        pytest.skip(f"{' and '.join(missing)} not installed")
    profile = tempfile.mkdtemp(prefix="postgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--ignore-certificate-errors",
                 f"--user-data-dir={profile}", "--window-size=1000,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver, profile


def test_browser_uploads_through_the_link_page_behind_nginx(stack, s3, bucket, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    link = api(stack, "POST", "/-/api/links", {"bucket": bucket, "prefix": "in/"})
    data = os.urandom(200_000)
    path = tmp_path / "photo.bin"
    path.write_bytes(data)
    driver, profile = _chrome()
    try:
        driver.get(link["url"])
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.find_element(By.ID, "file").get_property("multiple"))
        driver.find_element(By.ID, "file").send_keys(str(path))
        driver.find_element(By.ID, "submit").click()
        def done(d):
            rows = d.execute_script(
                "return Array.from(document.querySelectorAll('#files li.file'))"
                ".map(function (li) { return [li.className, li.dataset.key || null,"
                " li.querySelector('.status').textContent]; });")
            return rows if rows and all("done" in r[0] or "failed" in r[0] for r in rows) else False
        rows = WebDriverWait(driver, WAIT_S).until(done)
        assert len(rows) == 1 and "done" in rows[0][0], rows
        assert rows[0][1] == "in/photo.bin", rows
        assert driver.current_url.startswith(f"{stack.endpoint}/-/u/")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert s3.get_object(Bucket=bucket, Key="in/photo.bin")["Body"].read() == data


def test_a_1_gib_put_streams_through_nginx_with_flat_memory(stack, s3, bucket):
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "big.bin"}, ExpiresIn=3600)
    target = url.removeprefix(stack.endpoint)
    chunk = 1 << 20
    # Varied bytes (a keyed pattern per MiB) so a misplaced chunk changes the digest.
    seed = os.urandom(chunk)
    digest = hashlib.md5()
    samples: list[int] = []
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            samples.append(stack.nginx_rss())
            time.sleep(0.1)
    baseline = stack.nginx_rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = http.client.HTTPSConnection("localhost", stack.port, context=stack.ssl_context(),
                                       timeout=600)
    try:
        conn.putrequest("PUT", target, skip_host=True)
        conn.putheader("Host", f"localhost:{stack.port}")
        conn.putheader("Content-Length", str(GIB))
        conn.endheaders()
        started = time.monotonic()
        for i in range(GIB // chunk):
            block = i.to_bytes(8, "little") + seed[8:]
            digest.update(block)
            conn.send(block)
        res = conn.getresponse()
        body = res.read()
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        sampler.join()
        conn.close()
    assert res.status == 200, body
    md5 = digest.hexdigest()
    assert res.getheader("ETag") == f'"{md5}"'
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == GIB
    assert head["ETag"] == f'"{md5}"'
    # Read back through nginx (proxy_buffering off): the same bytes.
    back = hashlib.md5()
    got = s3.get_object(Bucket=bucket, Key="big.bin")["Body"]
    for part in iter(lambda: got.read(chunk), b""):
        back.update(part)
    assert back.hexdigest() == md5
    peak = max(samples)
    print(f"\n1 GiB PUT through nginx in {elapsed:.1f}s; nginx RSS baseline "
          f"{baseline / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB over {len(samples)} samples")
    # Flat: nginx holds a few buffers, not the body (1 GiB) nor a growing share of it.
    assert peak - baseline < 32 * 2**20, (baseline, peak)
    # Nor did it spool the body to disk.
    assert not any((stack.nginx_prefix / "client_body").rglob("*")), "nginx buffered to disk"


def test_readme_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if IN_CI:
            pytest.fail("systemd-analyze missing (.ci/run installs systemd)")
        pytest.skip("systemd-analyze not installed")
    unit = readme_block("systemd", "ini")
    # verify checks that ExecStart's program exists: point it at the built binary.
    unit = substitute(unit, {"/usr/local/bin/postgate": str(_binary())})
    path = tmp_path / "postgate.service"
    path.write_text(unit)
    res = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    # verify exits 0 on an unknown or malformed setting but reports it: both must be empty.
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), \
        (res.returncode, res.stdout, res.stderr)
