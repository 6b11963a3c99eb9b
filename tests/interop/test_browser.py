"""A real browser (headless Chromium driven by Selenium) against postgate.

What only a browser can check: CORS as Chromium enforces it (the JSON API's server-wide origins
and a bucket's CORS rules, seen from a page on another origin), the shareable upload-link page
with its script (several files, progress bars, S3 error messages, Retry), the same page as a
plain HTML form with JavaScript disabled (303 to the "received" page), a revoked link, a
100 MiB file going up in parts, and Uppy's real bundle (`@uppy/aws-s3`) signing through a link.

The module starts its own postgate (it needs `--api-cors-origins`) and a static file server for
`tests/interop/browser/` on another port: a different port is a different origin.

Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`; `.ci/run` installs
them). Without them the module is skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IN_CI = bool(os.environ.get("CI"))

_missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
if _missing and not IN_CI:
    pytest.skip(
        f"{' and '.join(_missing)} not installed (apt-get install chromium chromium-driver; "
        ".ci/run does it)",
        allow_module_level=True,
    )
try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    if IN_CI:
        raise
    pytest.skip("selenium is not installed (tests/run.sh installs it)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
PAGES = Path(__file__).resolve().parent / "browser"
SCREENSHOTS = REPO / "target" / "screenshots"
ACCESS_KEY = "PGBROWSERADMINKEY01"
SECRET_KEY = "browser-secret-key-0123456789abcdefghij"
REGION = "us-east-1"
WAIT_S = 20  # every wait in this module is bounded by this
TOO_LARGE = "Your proposed upload exceeds the maximum allowed size"


# ---------------------------------------------------------------------------------------------
# Servers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary() -> Path:
    env = os.environ.get("POSTGATE_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "postgate"
    if not path.is_file():
        pytest.fail(f"postgate binary not found at {path}: run `cargo build` (or set POSTGATE_BIN)")
    return path


class Postgate:
    """One postgate process with its own data directory; also runs the operator commands."""

    def __init__(self, root: Path, api_origins: list[str]):
        self.binary = _binary()
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.env = dict(os.environ)
        self.env.update(
            POSTGATE_ACCESS_KEY=ACCESS_KEY,
            POSTGATE_SECRET_KEY=SECRET_KEY,
            POSTGATE_LOG=os.environ.get("POSTGATE_LOG", "postgate=debug,tower_http=debug"),
            NO_COLOR="1",
        )
        self.env.pop("POSTGATE_CONFIG", None)
        # The port is free when found and taken a moment later: another process may get there
        # first, so try a few.
        for _attempt in range(3):
            self.endpoint = f"http://127.0.0.1:{_free_port()}"
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [
                        str(self.binary), "serve",
                        "--data-dir", str(self.data_dir),
                        "--addr", self.endpoint.removeprefix("http://"),
                        "--api-cors-origins", ",".join(api_origins),
                    ],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.env, cwd=root,
                )
            if self._wait_healthy(time.monotonic() + WAIT_S):
                return
            self.stop()
        pytest.fail(f"postgate did not become healthy within {WAIT_S}s; its log:\n"
                    + self.log_text())

    def _wait_healthy(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/-/health", timeout=1) as res:
                    if res.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

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

    def cli(self, *args: str) -> str:
        res = subprocess.run(
            [str(self.binary), *args, "--data-dir", str(self.data_dir)],
            env=self.env, capture_output=True, text=True, timeout=WAIT_S,
        )
        assert res.returncode == 0, f"postgate {' '.join(args)} failed: {res.stderr}"
        return res.stdout

    def create_link(self, bucket: str, max_size: str = "1KiB", max_files: int = 10) -> str:
        out = self.cli(
            "link", "create", bucket, "--prefix", "in/", "--max-size", max_size,
            "--max-files", str(max_files), "--expires", "1h", "--url", self.endpoint,
        )
        url = out.strip().splitlines()[-1]
        assert url.startswith(f"{self.endpoint}/-/u/"), out
        return url


NODE_MODULES = Path(__file__).resolve().parent / "node" / "node_modules"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves tests/interop/browser/, and /node_modules/ from the Node suite's packages (the
    real Uppy bundle)."""

    def translate_path(self, path):
        if path.startswith("/node_modules/"):
            rel = urllib.parse.unquote(path.split("?", 1)[0]).removeprefix("/node_modules/")
            target = (NODE_MODULES / rel).resolve()
            if NODE_MODULES.resolve() in target.parents:
                return str(target)
        return super().translate_path(path)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pages():
    """Serves tests/interop/browser/ on its own port: the origin of the "web app"."""
    handler = functools.partial(_QuietHandler, directory=str(PAGES))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def pg(pages, tmp_path_factory):
    srv = Postgate(tmp_path_factory.mktemp("postgate-browser"), [f"http://127.0.0.1:{pages}"])
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _attach_log(request, pg):
    # Picked up by conftest's pytest_runtest_makereport: the server's log lines during a failing
    # test go into its report.
    request.node._postgate_server = pg
    request.node._postgate_log_start = pg.log_size()
    yield


@pytest.fixture(scope="module")
def s3(pg):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=pg.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"},
                      retries={"max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture
def bucket(s3):
    name = f"br-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    yield name
    # The data directory is temporary; leaving the objects is harmless.


@pytest.fixture
def files(tmp_path):
    """Writes test files into a temp dir: files(name, data) -> absolute path."""
    def write(name: str, data: bytes) -> str:
        p = tmp_path / "upload" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        return str(p)
    return write


# ---------------------------------------------------------------------------------------------
# Browsers


def _chrome(javascript: bool):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.fail(f"CI is set but {' and '.join(missing)} is missing (.ci/run installs them)")
    profile = tempfile.mkdtemp(prefix="postgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        "--window-size=1000,800",
    ):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver, profile


@pytest.fixture(scope="module")
def browser():
    driver, profile = _chrome(javascript=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser_nojs():
    driver, profile = _chrome(javascript=False)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, what: str):
    """Waits (at most WAIT_S) until condition(driver) is truthy, returning it. An element that
    goes stale while the page navigates (a form being submitted) just means "not yet"."""
    try:
        return WebDriverWait(
            driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        ).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {WAIT_S}s waiting for {what}; page text:\n"
                    + driver.find_element(By.TAG_NAME, "body").text)


def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def read_object(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


# ---------------------------------------------------------------------------------------------
# 1. A web app on another origin: the JSON API, then a POST to the bucket


def blob_bytes(size: int, mul: int = 31) -> bytes:
    """The bytes cross_origin.html and uppy.html build their Blobs from."""
    return bytes((i * mul + 7) & 255 for i in range(size))


def run_cross_origin_page(browser, page_origin: str, pg, bucket: str, key: str, size: int):
    query = urllib.parse.urlencode({
        "api": pg.endpoint, "bucket": bucket, "key": key, "size": size,
        "auth": f"{ACCESS_KEY}:{SECRET_KEY}",
    })
    browser.get(f"{page_origin}/cross_origin.html?{query}")
    result = wait_for(
        browser,
        lambda d: (el := d.find_element(By.ID, "result")).get_attribute("data-state") != "pending"
        and el,
        "the cross-origin page to finish",
    )
    text = {i: browser.find_element(By.ID, i).text
            for i in ("origin", "policy-status", "upload-status", "etag", "location", "error")}
    return result.get_attribute("data-state"), result.get_attribute("data-stage"), text


def put_cors(s3, bucket: str, origin: str):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [origin],
        "AllowedMethods": ["POST"],
        "AllowedHeaders": ["*"],
        "MaxAgeSeconds": 60,
    }]})


def test_cross_origin_upload_with_bucket_cors(browser, pages, pg, s3, bucket):
    origin = f"http://127.0.0.1:{pages}"
    put_cors(s3, bucket, origin)
    size = 1500
    state, stage, text = run_cross_origin_page(browser, origin, pg, bucket, "web/blob.bin", size)
    assert text["origin"] == origin
    assert text["origin"] != pg.endpoint  # really another origin
    assert (state, stage) == ("ok", "upload"), text
    assert text["policy-status"] == "200"
    assert text["upload-status"] == "204"
    data = blob_bytes(size)
    # The ETag is readable by the script only because the matched rule exposes it.
    assert text["etag"] == md5_etag(data)
    assert read_object(s3, bucket, "web/blob.bin") == data


def test_cross_origin_upload_without_bucket_cors_is_unreadable(browser, pages, pg, s3, bucket):
    origin = f"http://127.0.0.1:{pages}"
    state, stage, text = run_cross_origin_page(browser, origin, pg, bucket, "web/blocked.bin", 64)
    # The API call is allowed (server-wide --api-cors-origins); the bucket has no CORS rule, so
    # the browser withholds the POST's answer from the script: fetch rejects with a TypeError.
    assert text["policy-status"] == "200"
    assert (state, stage) == ("blocked", "upload"), text
    assert text["error"].startswith("TypeError"), text
    assert text["upload-status"] == "pending" and text["etag"] == ""
    # A simple CORS request is still sent (no preflight): S3 stores the file all the same; only
    # reading the answer is refused. This also shows the block was CORS, not a broken upload.
    assert read_object(s3, bucket, "web/blocked.bin") == blob_bytes(64)


def test_api_refuses_an_origin_it_does_not_list(browser, pages, pg, s3, bucket):
    # http://localhost:PORT is a different origin from http://127.0.0.1:PORT, which is the only
    # one the server lists in --api-cors-origins.
    put_cors(s3, bucket, "*")
    state, stage, text = run_cross_origin_page(
        browser, f"http://localhost:{pages}", pg, bucket, "web/never.bin", 16)
    assert (state, stage) == ("blocked", "policy"), text
    assert text["error"].startswith("TypeError"), text
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


# ---------------------------------------------------------------------------------------------
# 2. The upload-link page with its script


def file_rows(driver) -> list[dict]:
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#files li.file')).map(function (li) {
          var a = li.querySelector('.status a');
          return {
            classes: li.className.split(/\\s+/),
            progress: li.querySelector('progress').value,
            name: li.querySelector('.name').textContent,
            status: li.querySelector('.status').textContent,
            key: li.dataset.key || null,
            linkText: a ? a.textContent : null,
            linkHref: a ? a.href : null,
            retry: !!li.querySelector('.status button'),
          };
        });
    """)


def settled_rows(driver, count: int):
    """The file rows once there are `count` and each has finished (done or failed)."""
    def check(d):
        rows = file_rows(d)
        if len(rows) == count and all({"done", "failed"} & set(r["classes"]) for r in rows):
            return rows
        return False
    return wait_for(driver, check, f"{count} file rows to finish")


def open_link_page(driver, url: str):
    driver.get(url)
    # The script makes the picker take several files; before that, send_keys with two paths
    # would be refused.
    wait_for(driver, lambda d: d.find_element(By.ID, "file").get_property("multiple"),
             "upload.js to take over the form")


def upload(driver, *paths: str):
    """Chooses files (the page lists them, with a preview each) and presses Upload."""
    driver.find_element(By.ID, "file").send_keys("\n".join(paths))
    driver.find_element(By.ID, "submit").click()


def test_upload_link_page_with_javascript(browser, pg, s3, bucket, files):
    url = pg.create_link(bucket, max_size="1KiB")
    open_link_page(browser, url)
    assert browser.find_element(By.ID, "drop-zone").is_displayed()
    assert "1 KiB" in browser.find_element(By.CSS_SELECTOR, "p.limits").text

    first, second = b"first file\n" * 20, os.urandom(700)
    paths = [files("first.txt", first), files("second.bin", second)]
    upload(browser, *paths)
    rows = settled_rows(browser, 2)
    for row in rows:
        assert "done" in row["classes"], row
        assert "failed" not in row["classes"], row
        assert row["progress"] == 100, row
    by_key = {row["key"]: row for row in rows}
    assert set(by_key) == {"in/first.txt", "in/second.bin"}, rows
    # A private bucket: the uploader could not open a link to the file, so there is none.
    for key in by_key:
        assert by_key[key]["linkHref"] is None, by_key[key]
        assert f"Received as {key}" in by_key[key]["status"], by_key[key]
    assert browser.find_element(By.ID, "summary").text.startswith("2 files received."), rows
    assert read_object(s3, bucket, "in/first.txt") == first
    assert read_object(s3, bucket, "in/second.bin") == second
    # The link takes 10 files: the page counts the two it sent.
    assert browser.find_element(By.ID, "files-left").text == "8 more files accepted"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "upload-link.png"))

    # Too large for the link: the page's own check refuses it before sending anything.
    big = files("big.bin", os.urandom(2048))
    browser.find_element(By.ID, "file").send_keys(big)
    rows = settled_rows(browser, 3)
    assert "failed" in rows[2]["classes"] and "done" not in rows[2]["classes"], rows[2]
    assert "Too large" in rows[2]["status"], rows[2]
    assert not rows[2]["retry"], rows[2]
    assert browser.find_element(By.ID, "submit").get_property("disabled")


def test_upload_link_page_never_replaces_a_file(browser, pg, s3, bucket, files):
    """The same file name twice: the page asks the server for a name and the second file is
    stored beside the first as `name (2).ext` (a link never replaces a file)."""
    url = pg.create_link(bucket, max_size="1KiB")
    open_link_page(browser, url)
    first, second = b"first\n", b"second\n"
    upload(browser, files("same.txt", first))
    settled_rows(browser, 1)
    upload(browser, files("again/same.txt", second))
    rows = settled_rows(browser, 2)
    assert [r["key"] for r in rows] == ["in/same.txt", "in/same (2).txt"], rows
    assert read_object(s3, bucket, "in/same.txt") == first
    assert read_object(s3, bucket, "in/same (2).txt") == second


def test_upload_link_page_holds_files_to_the_links_types(browser, pg, s3, bucket, files):
    """A link for PNG and JPEG files: the picker offers only those, the page refuses an SVG
    before sending it, and nothing is stored; a PNG goes through."""
    out = pg.cli(
        "link", "create", bucket, "--prefix", "in/", "--max-size", "1KiB",
        "--content-type", "image/png,image/jpeg", "--expires", "1h", "--url", pg.endpoint,
    )
    open_link_page(browser, out.strip().splitlines()[-1])
    picker = browser.find_element(By.ID, "file")
    assert picker.get_attribute("accept") == "image/png,image/jpeg"
    picker.send_keys(files("x.svg", b"<svg/>"))
    rows = settled_rows(browser, 1)
    assert "failed" in rows[0]["classes"], rows[0]
    assert "this link only takes PNG files or JPEG files" in rows[0]["status"], rows[0]
    upload(browser, files("x.png", b"\x89PNG"))
    rows = settled_rows(browser, 2)
    assert "done" in rows[1]["classes"], rows[1]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["in/x.png"], keys


def test_upload_link_page_shows_a_type_check_refusal(browser, pg, s3, bucket, files):
    """A link that verifies types: an HTML page named photo.png (Chromium declares image/png from
    the name) is refused by the server from its first bytes, the page shows why, and nothing is
    stored; a real PNG goes through and its detected type is recorded."""
    out = pg.cli(
        "link", "create", bucket, "--prefix", "in/", "--max-size", "1KiB", "--verify-type",
        "--expires", "1h", "--url", pg.endpoint,
    )
    open_link_page(browser, out.strip().splitlines()[-1])
    upload(browser, files("photo.png", b"<!DOCTYPE html><script>alert(1)</script>"))
    [row] = settled_rows(browser, 1)
    assert "failed" in row["classes"] and "done" not in row["classes"], row
    assert "text/html, not image/png" in row["status"], row
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="in/")

    upload(browser, files("real.png", png_bytes(2, 2, (200, 10, 10))))
    rows = settled_rows(browser, 2)
    assert "done" in rows[1]["classes"], rows[1]
    head = s3.head_object(Bucket=bucket, Key="in/real.png")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-postgate-detected-type"] == "image/png"


def test_upload_link_page_shows_the_servers_size_error(browser, pg, s3, bucket, files):
    """The page's size check bypassed (as by an old or altered page): the server's policy still
    refuses the file, and the page shows S3's own message."""
    url = pg.create_link(bucket, max_size="1KiB")
    # Runs before the deferred upload.js reads data-max-size.
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        document.addEventListener('readystatechange', function () {
          if (document.readyState === 'interactive') {
            var f = document.getElementById('upload-form');
            if (f) f.dataset.maxSize = String(1 << 30);
          }
        });
    """})
    try:
        open_link_page(browser, url)
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                                {"identifier": script["identifier"]})
    upload(browser, files("big.bin", os.urandom(2048)))
    [row] = settled_rows(browser, 1)
    assert "Too large" not in row["status"], "the page's own check was not bypassed"
    assert "failed" in row["classes"] and "done" not in row["classes"], row
    assert TOO_LARGE in row["status"], row
    assert row["retry"], row
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="in/")


# ---------------------------------------------------------------------------------------------
# 3. The same page without JavaScript: a plain form, 303 to the "received" page


def test_upload_link_form_without_javascript(browser_nojs, pg, s3, bucket, files):
    driver = browser_nojs
    url = pg.create_link(bucket, max_size="1KiB")
    driver.get(url)
    # The script did not run: the picker takes one file and the drop zone stays hidden.
    picker = driver.find_element(By.ID, "file")
    assert picker.get_dom_attribute("multiple") is None
    assert driver.find_element(By.ID, "drop-zone").get_dom_attribute("hidden") is not None

    data = b"sent by a browser without JavaScript\n" + bytes(range(256))
    picker.send_keys(files("notes 1.txt", data))
    driver.find_element(By.ID, "submit").click()
    token = url.rsplit("/", 1)[1]
    wait_for(driver, lambda d: urllib.parse.urlsplit(d.current_url).path == f"/-/u/{token}/done",
             "the redirect to the received page")
    wait_for(driver, lambda d: d.find_elements(By.ID, "etag"), "the received page")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Upload received"
    assert driver.find_element(By.ID, "bucket").text == bucket
    assert driver.find_element(By.ID, "key").text == "in/notes 1.txt"
    assert driver.find_element(By.ID, "etag").text == md5_etag(data)
    assert read_object(s3, bucket, "in/notes 1.txt") == data


# ---------------------------------------------------------------------------------------------
# 4. A revoked link


FORBIDDEN_ON_ERROR_PAGES = ("panicked", "backtrace", "src/", ".rs:", "Traceback", "RUST_")


def test_revoked_link(browser, browser_nojs, pg, s3, bucket, files):
    url = pg.create_link(bucket, max_size="1KiB")
    token = url.rsplit("/", 1)[1]
    # Both pages are open (with their signed policies) when the link is revoked.
    open_link_page(browser, url)
    browser_nojs.get(url)
    assert "revoked" in pg.cli("link", "revoke", token)

    # The script asks for a fresh policy per file and shows why there is none.
    upload(browser, files("late.txt", b"too late"))
    [row] = settled_rows(browser, 1)
    assert "failed" in row["classes"], row
    assert "revoked" in row["status"], row

    # The plain form still holds a policy signed before: the server refuses it anyway.
    browser_nojs.find_element(By.ID, "file").send_keys(files("late2.txt", b"too late"))
    browser_nojs.find_element(By.ID, "submit").click()
    wait_for(browser_nojs, lambda d: "revoked" in d.find_element(By.TAG_NAME, "body").text,
             "the refusal of the stale form")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)

    # Opening the link now: a clear page, HTTP 410, nothing internal.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=WAIT_S)
    assert e.value.code == 410
    assert e.value.headers.get_content_type() == "text/html"
    html = e.value.read().decode()
    assert "revoked" in html
    browser.get(url)
    heading = browser.find_element(By.TAG_NAME, "h1").text
    body = browser.find_element(By.TAG_NAME, "body").text
    assert heading == "Link unavailable"
    assert "This upload link has been revoked." in body
    assert not browser.find_elements(By.ID, "upload-form")
    for marker in FORBIDDEN_ON_ERROR_PAGES:
        assert marker not in html, f"{marker!r} on the revoked-link page:\n{html}"


# ---------------------------------------------------------------------------------------------
# 5. Large files: the page switches to S3 multipart upload


def test_upload_link_page_sends_a_100_mib_file_in_parts(browser, pg, s3, bucket, files):
    url = pg.create_link(bucket, max_size="200MiB")
    open_link_page(browser, url)
    threshold = int(browser.find_element(By.ID, "upload-form").get_attribute("data-multipart-threshold"))
    data = os.urandom(100 * 1024 * 1024)
    assert len(data) > threshold
    path = files("video.bin", data)
    upload(browser, path)
    rows = settled_rows(browser, 1)
    assert "done" in rows[0]["classes"], rows[0]
    assert rows[0]["progress"] == 100, rows[0]
    assert rows[0]["key"] == "in/video.bin", rows[0]
    head = s3.head_object(Bucket=bucket, Key="in/video.bin")
    # A multipart object's ETag is "<md5 of the part md5s>-<parts>"; 8 MiB parts make 13.
    assert head["ETag"].endswith('-13"'), head["ETag"]
    assert head["ContentLength"] == len(data)
    got = read_object(s3, bucket, "in/video.bin")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # Nothing is left half-done: no upload remains open for the bucket.
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# ---------------------------------------------------------------------------------------------
# 6. Uppy (@uppy/aws-s3 from the real `uppy` bundle) signing through an upload link


def test_uppy_aws_s3_uploads_through_an_upload_link(browser, pages, pg, s3, bucket):
    if not (NODE_MODULES / "uppy" / "dist" / "uppy.min.js").is_file():
        pytest.fail("the uppy npm package is missing: run `npm ci` in tests/interop/node")
    origin = f"http://127.0.0.1:{pages}"
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [origin], "AllowedMethods": ["POST", "PUT"], "AllowedHeaders": ["*"],
    }]})
    link = pg.create_link(bucket, max_size="20MiB")
    browser.get(f"{origin}/uppy.html?" + urllib.parse.urlencode({"link": link}))
    result = wait_for(
        browser,
        lambda d: (el := d.find_element(By.ID, "result")).get_attribute("data-state") != "pending"
        and el,
        "Uppy to finish",
    )
    assert result.get_attribute("data-state") == "done", result.text
    outcome = json.loads(result.text)
    assert outcome["failed"] == [], outcome
    assert sorted(f["name"] for f in outcome["successful"]) == ["large.bin", "small.txt"]

    # Uppy asks for a key from the file name (some versions put a random id in front); the link
    # puts it under its prefix.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 2, keys
    small = next(k for k in keys if k.endswith("small.txt"))
    large = next(k for k in keys if k.endswith("large.bin"))
    assert small.startswith("in/") and large.startswith("in/"), keys
    assert read_object(s3, bucket, small) == blob_bytes(1000, 31)
    assert read_object(s3, bucket, large) == blob_bytes(12 * 1024 * 1024, 17)
    head = s3.head_object(Bucket=bucket, Key=large)
    assert re.fullmatch(r'"[0-9a-f]{32}-\d+"', head["ETag"]), head["ETag"]  # multipart
    assert s3.head_object(Bucket=bucket, Key=small)["ContentType"] == "text/plain"
    by_name = {f["name"]: f for f in outcome["successful"]}
    assert by_name["small.txt"]["uploadURL"] == f"{pg.endpoint}/{bucket}/{small}"
    assert by_name["large.bin"]["uploadURL"] == f"{pg.endpoint}/{bucket}/{large}"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# ---------------------------------------------------------------------------------------------
# 7. The page on a phone and on a desktop: previews, refusals before sending, remove, done


def png_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG (one colour), so the page's thumbnail can be drawn from it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    # Noise in the low bits keeps the file from compressing to nothing (it has to take time
    # on a throttled connection).
    raw = b"".join(b"\x00" + bytes(
        (c ^ ((x * 7 + y * 13) & 15)) for x in range(width) for c in rgb) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("screen", ["phone", "desktop"])
def test_upload_link_page_previews_refuses_removes_and_uploads(screen, browser, pg, s3, bucket, files):
    phone = screen == "phone"
    if phone:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    try:
        out = pg.cli(
            "link", "create", bucket, "--prefix", "in/", "--max-size", "1MiB",
            "--content-type", "image/", "--expires", "1h", "--url", pg.endpoint,
        )
        open_link_page(browser, out.strip().splitlines()[-1])
        picker = browser.find_element(By.ID, "file")
        assert picker.get_attribute("accept") == "image/*"
        help_text = browser.find_element(By.ID, "drop-help").text
        assert help_text == ("Tap to choose files" if phone
                             else "Drop files here, or press Enter to choose files."), help_text
        # On a touch screen, an image-only link offers the camera too.
        assert browser.find_element(By.ID, "camera-row").is_displayed() == phone
        assert not browser.find_elements(By.CSS_SELECTOR, "input[name=Content-Type]:not([type=hidden])")

        red, blue = png_bytes(120, 80, (200, 30, 30)), png_bytes(80, 120, (30, 30, 200))
        pdf = b"%PDF-1.4\n% not an image\n"
        picker.send_keys("\n".join([files("red.png", red), files("blue.png", blue),
                                    files("notes.pdf", pdf)]))
        rows = wait_for(browser, lambda d: len(r := file_rows(d)) == 3 and r, "3 chosen files")
        assert "ready" in rows[0]["classes"] and "ready" in rows[1]["classes"], rows
        assert "failed" in rows[2]["classes"], rows[2]
        assert "this link only takes images" in rows[2]["status"], rows[2]
        # Thumbnails drawn from the chosen files (blob: URLs), an icon for the PDF.
        thumbs = wait_for(browser, lambda d: d.execute_script("""
            var imgs = Array.from(document.querySelectorAll('#files img.thumb'));
            return imgs.length === 2 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; })
              && imgs.map(function (i) { return [i.src.slice(0, 5), i.naturalWidth]; });
        """), "two thumbnails")
        assert thumbs == [["blob:", 120], ["blob:", 80]], thumbs
        assert browser.find_element(By.CSS_SELECTOR, "#files li:nth-child(3) .icon").text == "PDF"
        assert browser.find_element(By.ID, "submit").text == "Upload 2 files"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        if phone:
            assert browser.save_screenshot(str(SCREENSHOTS / "phone-1-chosen.png"))

        # Remove the blue one before uploading; upload the red one over a slow connection.
        # (A script click: chromedriver's own click waits forever under touch emulation.)
        browser.execute_script("arguments[0].click()", browser.find_element(
            By.CSS_SELECTOR, "#files li:nth-child(2) .actions button"))
        assert len(file_rows(browser)) == 2
        assert browser.find_element(By.ID, "submit").text == "Upload 1 file"
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 100, "downloadThroughput": 200_000,
            "uploadThroughput": 10_000})
        try:
            browser.execute_script("arguments[0].click()", browser.find_element(By.ID, "submit"))
            wait_for(browser, lambda d: "sending" in file_rows(d)[0]["classes"]
                     and 0 < file_rows(d)[0]["progress"] < 100, "the upload under way")
            if phone:
                assert browser.save_screenshot(str(SCREENSHOTS / "phone-2-uploading.png"))
            rows = settled_rows(browser, 2)
        finally:
            browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
                "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        assert "done" in rows[0]["classes"], rows[0]
        assert rows[0]["key"] == "in/red.png" and rows[0]["linkHref"] is None, rows[0]
        summary = browser.find_element(By.ID, "summary").text
        assert summary.startswith("1 file received."), summary
        if phone:
            assert browser.save_screenshot(str(SCREENSHOTS / "phone-3-done.png"))
        # Byte for byte what was chosen; nothing of the removed image or the refused PDF.
        assert read_object(s3, bucket, "in/red.png") == red
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == ["in/red.png"], keys
    finally:
        if phone:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
