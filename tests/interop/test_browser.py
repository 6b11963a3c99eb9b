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

import contextlib
import datetime
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
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
from conftest import _binary, _free_port, _stop, _wait_ok

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


class Postgate:
    """One postgate process with its own data directory; also runs the operator commands."""

    def __init__(self, root: Path, api_origins: list[str], extra: tuple[str, ...] = ()):
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
                        "--api-cors-origins", ",".join(api_origins), *extra,
                    ],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.env, cwd=root,
                )
            if _wait_ok(f"{self.endpoint}/-/health", self.process, time.monotonic() + WAIT_S):
                return
            self.stop()
        pytest.fail(f"postgate did not become healthy within {WAIT_S}s; its log:\n"
                    + self.log_text())

    def stop(self) -> None:
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
    assert "1 KiB" in browser.find_element(By.CSS_SELECTOR, ".limits").text

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


AXE = NODE_MODULES / "axe-core" / "axe.min.js"


def assert_accessible(driver, state: str):
    """axe-core (npm) run in the page as it is now: no violation of any rule it checks (WCAG
    A/AA, contrast included, and its best practices)."""
    if not AXE.is_file():
        pytest.fail("the axe-core npm package is missing: run `npm ci` in tests/interop/node")
    if not driver.execute_script("return !!window.axe"):
        driver.execute_script(AXE.read_text())
    violations = driver.execute_async_script("""
        var done = arguments[arguments.length - 1];
        axe.run(document, { resultTypes: ['violations'] }).then(function (r) {
          done(r.violations.map(function (v) {
            return { id: v.id, help: v.help, nodes: v.nodes.map(function (n) {
              return n.target.join(' ') + ': ' + n.failureSummary; }) };
          }));
        }, function (e) { done([{ id: 'axe-error', help: String(e) }]); });
    """)
    assert violations == [], f"axe-core, state {state!r}:\n{json.dumps(violations, indent=1)}"


def assert_no_horizontal_overflow(driver, width: int):
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    wide = driver.execute_script("""
        return Array.from(document.querySelectorAll('body *')).filter(function (e) {
          return e.getBoundingClientRect().right > arguments[0];
        }).map(function (e) { return e.tagName + '#' + e.id + '.' + e.className + ' ' +
          Math.round(e.getBoundingClientRect().right); });
    """.replace("arguments[0]", str(width)))
    assert scroll <= width, f"the page is {scroll}px wide on a {width}px screen: {wide}"


@contextlib.contextmanager
def screen_size(driver, screen: str):
    """Phone (390x844, touch) or desktop (the window's own size) for the block."""
    phone = screen == "phone"
    if phone:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    try:
        yield phone
    finally:
        if phone:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})


@contextlib.contextmanager
def throttled(driver, upload_bytes_per_s: int):
    """A slow upload link (Chromium's network emulation) for the block."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 50, "downloadThroughput": -1,
        "uploadThroughput": upload_bytes_per_s})
    try:
        yield
    finally:
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})


def click(driver, element):
    # A script click: chromedriver's own click waits forever under touch emulation.
    driver.execute_script("arguments[0].click()", element)


def row_button(driver, index: int, text: str):
    """The button labelled `text` in the index-th file row (1-based)."""
    for b in driver.find_elements(By.CSS_SELECTOR, f"#files li:nth-child({index}) button"):
        if b.text == text:
            return b
    pytest.fail(f"no {text!r} button in row {index}: {file_rows(driver)}")


@pytest.mark.parametrize("screen", ["phone", "desktop"])
def test_upload_link_page_previews_refuses_cancels_and_uploads(screen, browser, pg, s3, bucket, files):
    """The issue's scenario: two images and a PDF through an image-only link. The PDF is refused
    in the page, the images show previews; a third image is removed before sending, one is
    cancelled during its upload, the other arrives byte for byte. axe-core finds nothing in any
    state (chosen, uploading, done, a refused file), and nothing is wider than a phone."""
    with screen_size(browser, screen) as phone:
        width = 390 if phone else browser.execute_script("return window.innerWidth")
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
        assert_accessible(browser, "opened")

        red, blue = png_bytes(120, 80, (200, 30, 30)), png_bytes(80, 120, (30, 30, 200))
        green = png_bytes(60, 60, (30, 160, 30))
        pdf = b"%PDF-1.4\n% not an image\n"
        picker.send_keys("\n".join([files("red.png", red), files("green.png", green),
                                    files("blue.png", blue), files("notes.pdf", pdf)]))
        rows = wait_for(browser, lambda d: len(r := file_rows(d)) == 4 and r, "4 chosen files")
        assert all("ready" in r["classes"] for r in rows[:3]), rows
        assert "failed" in rows[3]["classes"], rows[3]
        assert "this link only takes images" in rows[3]["status"], rows[3]
        # Thumbnails drawn from the chosen files (blob: URLs), an icon for the PDF.
        thumbs = wait_for(browser, lambda d: d.execute_script("""
            var imgs = Array.from(document.querySelectorAll('#files img.thumb'));
            return imgs.length === 3 && imgs.every(function (i) { return i.complete && i.naturalWidth > 0; })
              && imgs.map(function (i) { return [i.src.slice(0, 5), i.naturalWidth]; });
        """), "three thumbnails")
        assert thumbs == [["blob:", 120], ["blob:", 60], ["blob:", 80]], thumbs
        assert browser.find_element(By.CSS_SELECTOR, "#files li:nth-child(4) .icon").text == "PDF"
        assert browser.find_element(By.ID, "submit").text == "Upload 3 files"

        # Remove the green one before uploading.
        click(browser, row_button(browser, 2, "Remove"))
        assert [r["name"].split(" ")[0] for r in file_rows(browser)] == ["red.png", "blue.png", "notes.pdf"]
        assert browser.find_element(By.ID, "submit").text == "Upload 2 files"
        assert_accessible(browser, "chosen (one refused)")
        assert_no_horizontal_overflow(browser, width)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        if phone:
            assert browser.save_screenshot(str(SCREENSHOTS / "phone-1-chosen.png"))

        # Upload both images over a slow connection; cancel the blue one on its way.
        with throttled(browser, 12_000):
            click(browser, browser.find_element(By.ID, "submit"))
            wait_for(browser, lambda d: all("sending" in r["classes"] and r["progress"] > 0
                                            for r in file_rows(d)[:2]), "both uploads under way")
            click(browser, row_button(browser, 2, "Cancel"))
            rows = file_rows(browser)
            assert "cancelled" in rows[1]["classes"], rows[1]
            assert rows[1]["status"] == "Cancelled: nothing was kept.", rows[1]
            assert "sending" in rows[0]["classes"], rows[0]
            assert_accessible(browser, "uploading")
            assert_no_horizontal_overflow(browser, width)
            if phone:
                assert browser.save_screenshot(str(SCREENSHOTS / "phone-2-uploading.png"))
            wait_for(browser, lambda d: "done" in file_rows(d)[0]["classes"], "the red image to arrive")
        rows = file_rows(browser)
        assert rows[0]["key"] == "in/red.png" and rows[0]["linkHref"] is None, rows[0]
        assert "cancelled" in rows[1]["classes"] and "failed" in rows[2]["classes"], rows
        summary = browser.find_element(By.ID, "summary").text
        assert summary.startswith("1 file received."), summary
        assert_accessible(browser, "done")
        assert_no_horizontal_overflow(browser, width)
        if phone:
            assert browser.save_screenshot(str(SCREENSHOTS / "phone-3-done.png"))
        # Byte for byte what was chosen; nothing of the removed, cancelled or refused files.
        assert read_object(s3, bucket, "in/red.png") == red
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == ["in/red.png"], keys


def test_upload_link_page_error_state_is_accessible(browser, pg, s3, bucket, files):
    """A failed upload (the server refuses it: the link was revoked after the page opened) with
    its Retry button: still no axe-core violation, in light and dark colours."""
    url = pg.create_link(bucket, max_size="1KiB")
    open_link_page(browser, url)
    pg.cli("link", "revoke", url.rsplit("/", 1)[1])
    upload(browser, files("late.txt", b"too late"))
    [row] = settled_rows(browser, 1)
    assert "failed" in row["classes"] and row["retry"], row
    assert_accessible(browser, "error")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        assert_accessible(browser, "error, dark")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_upload_link_page_by_keyboard_with_visible_focus_light_and_dark(browser, pg, s3, bucket, files):
    """Tab reaches every control in order, each shows a visible focus ring; Enter on the drop
    zone opens the picker and Enter on Upload sends. Dark mode has its own colours and passes
    axe-core's contrast rules."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    url = pg.create_link(bucket, max_size="1KiB")
    open_link_page(browser, url)
    browser.find_element(By.ID, "file").send_keys(
        "\n".join([files("a.txt", b"first"), files("b.txt", b"second")]))
    wait_for(browser, lambda d: len(file_rows(d)) == 2, "2 chosen files")
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    focus_js = """
        var el = document.activeElement, cs = getComputedStyle(el);
        return { id: el.id, text: el.textContent.trim(), tag: el.tagName,
                 ring: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2 };
    """
    seen = []
    for _ in range(6):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        seen.append(browser.execute_script(focus_js))
    order = [f["id"] or f["text"] for f in seen]
    assert order[:4] == ["drop-zone", "submit", "Remove", "Remove"], seen
    assert all(f["ring"] for f in seen[:4]), seen
    # Enter on the drop zone opens the file picker (the native dialog is replaced by a marker).
    browser.execute_script("""
        document.getElementById('file').click = function () { window.__picker = true; };
        document.getElementById('drop-zone').focus();
    """)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert browser.execute_script("return window.__picker === true")
    # Enter on Upload sends both.
    browser.execute_script("document.getElementById('submit').focus()")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    rows = settled_rows(browser, 2)
    assert all("done" in r["classes"] for r in rows), rows
    assert read_object(s3, bucket, "in/a.txt") == b"first"

    colours = "return [getComputedStyle(document.body).backgroundColor, " \
              "getComputedStyle(document.getElementById('submit')).backgroundColor]"
    light = browser.execute_script(colours)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        dark = browser.execute_script(colours)
        assert dark[0] != light[0], (light, dark)
        assert_accessible(browser, "done, dark")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOTS / "desktop-dark-done.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_upload_link_page_in_french_with_the_expiry_in_local_time(browser, pg, s3, bucket, files):
    """Accept-Language fr-CA: every word French (the server's and the script's), the expiry in
    the visitor's words and time zone (Tokyo here), the exact date in the <time>'s title."""
    import zoneinfo

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Accept-Language": "fr-CA,fr;q=0.9"}})
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Tokyo"})
    try:
        with screen_size(browser, "phone"):
            out = pg.cli(
                "link", "create", bucket, "--prefix", "in/", "--max-size", "1MiB",
                "--content-type", "image/", "--max-files", "5", "--expires", "2d",
                "--url", pg.endpoint,
            )
            open_link_page(browser, out.strip().splitlines()[-1])
            assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
            assert browser.find_element(By.TAG_NAME, "h1").text == "Envoyer des fichiers"
            assert browser.find_element(By.ID, "drop-help").text == "Touchez pour choisir des fichiers"
            expiry = browser.find_element(By.ID, "expiry")
            assert expiry.text == "Ce lien expire dans 2 jours.", expiry.text
            time_el = expiry.find_element(By.TAG_NAME, "time")
            at = datetime.datetime.fromisoformat(time_el.get_attribute("datetime"))
            local = at.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
            title = time_el.get_attribute("title")
            assert f"{local.hour:02d}:{local.minute:02d}" in title and str(local.year) in title, title
            assert "UTC" not in title, title

            red = png_bytes(40, 40, (200, 30, 30))
            browser.find_element(By.ID, "file").send_keys(
                "\n".join([files("rouge.png", red), files("notes.pdf", b"%PDF-1.4\n")]))
            rows = wait_for(browser, lambda d: len(r := file_rows(d)) == 2 and r, "2 chosen files")
            assert rows[0]["status"] == "Prêt à envoyer.", rows
            assert "ce lien n’accepte que des images" in rows[1]["status"], rows
            assert browser.find_element(By.ID, "submit").text == "Envoyer 1 fichier"
            assert_accessible(browser, "french, chosen")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(SCREENSHOTS / "phone-fr-chosen.png"))
            click(browser, browser.find_element(By.ID, "submit"))
            wait_for(browser, lambda d: "done" in file_rows(d)[0]["classes"], "the upload")
            rows = file_rows(browser)
            assert rows[0]["status"].startswith("Reçu sous le nom in/rouge.png"), rows
            assert browser.find_element(By.ID, "summary").text.startswith("1 fichier reçu."), rows
            assert browser.find_element(By.ID, "files-left").text == "4 fichiers de plus acceptés"
            assert_accessible(browser, "french, done")
            assert browser.save_screenshot(str(SCREENSHOTS / "phone-fr-done.png"))
            assert read_object(s3, bucket, "in/rouge.png") == red
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
        browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ""})


# ---------------------------------------------------------------------------------------------
# 8. Multipart from the page: pause, resume (also after the page is reopened), cancel


@pytest.fixture(scope="module")
def pg_parts(pages, tmp_path_factory):
    """A server whose page sends files above 5 MiB in 5 MiB parts (S3's minimum part size)."""
    srv = Postgate(tmp_path_factory.mktemp("postgate-parts"), [f"http://127.0.0.1:{pages}"],
                   ("--link-multipart-threshold", "5MiB", "--link-part-size", "5MiB"))
    yield srv
    srv.stop()


def parts_link(pg, **link):
    """A fresh bucket on `pg` (the `pg_parts` server) and an upload link to it (`link`: what
    `create_link` takes): (an S3 client, the bucket, the link's URL)."""
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=pg.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, config=Config(s3={"addressing_style": "path"}))
    bucket = f"br-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=bucket)
    return s3, bucket, pg.create_link(bucket, **link)


def status_log(driver):
    """Records every status text the first file row shows from now on (window.__statuses)."""
    driver.execute_script("""
        window.__statuses = [];
        new MutationObserver(function () {
          var s = document.querySelector('#files li .status');
          if (s && window.__statuses[window.__statuses.length - 1] !== s.textContent)
            window.__statuses.push(s.textContent);
        }).observe(document.getElementById('files'), { subtree: true, childList: true, characterData: true });
    """)


def test_multipart_upload_pauses_resumes_and_resumes_after_reopening(browser, pg_parts, files):
    """12 MiB in three 5 MiB parts over a slow link: Pause stops it with a part stored, Resume
    goes on; paused again, the page is reopened and the same file chosen again: it resumes the
    same upload (no new one) and the object is byte for byte the file."""
    s3, bucket, url = parts_link(pg_parts, max_size="20MiB", max_files=2)
    data = os.urandom(12 * 1024 * 1024)
    path = files("film.bin", data)

    def uploads():
        return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def stored_parts(upload_id):
        return s3.list_parts(Bucket=bucket, Key="in/film.bin", UploadId=upload_id).get("Parts", [])

    open_link_page(browser, url)
    browser.execute_script("localStorage.clear()")
    with throttled(browser, 1_500_000):
        upload(browser, path)
        wait_for(browser, lambda d: len(uploads()) == 1, "the multipart upload to start")
        upload_id = uploads()[0]["UploadId"]
        # The smallest part (the last, 2 MiB) arrives first; pause once one part is stored.
        wait_for(browser, lambda d: stored_parts(upload_id), "a first part")
        click(browser, row_button(browser, 1, "Pause"))
        wait_for(browser, lambda d: "paused" in file_rows(d)[0]["classes"], "the paused state")
        assert file_rows(browser)[0]["status"] == "Paused.", file_rows(browser)
        kept = {p["PartNumber"] for p in stored_parts(upload_id)}
        assert kept and kept != {1, 2, 3}, kept
        assert_accessible(browser, "paused")

        # Resume: the upload goes on, then pause it again.
        click(browser, row_button(browser, 1, "Resume"))
        wait_for(browser, lambda d: "sending" in file_rows(d)[0]["classes"], "resumed")
        time.sleep(0.5)
        click(browser, row_button(browser, 1, "Pause"))
        wait_for(browser, lambda d: "paused" in file_rows(d)[0]["classes"], "paused again")
        assert [u["UploadId"] for u in uploads()] == [upload_id]

        # The page is closed and reopened: choosing the same file resumes the same upload.
        open_link_page(browser, url)
        status_log(browser)
        upload(browser, path)
        [row] = wait_for(browser, lambda d: (r := file_rows(d)) and "done" in r[0]["classes"] and r,
                         "the resumed upload to finish")
    statuses = browser.execute_script("return window.__statuses")
    assert "Resuming…" in statuses, statuses
    assert row["key"] == "in/film.bin", row
    assert uploads() == []
    head = s3.head_object(Bucket=bucket, Key="in/film.bin")
    assert head["ETag"].endswith('-3"'), head["ETag"]
    got = read_object(s3, bucket, "in/film.bin")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # One file counted: the link (2 files) has one left.
    open_link_page(browser, url)
    assert browser.find_element(By.ID, "files-left").text == "1 more file accepted"


def test_multipart_upload_cancel_aborts_it_on_the_server(browser, pg_parts, files):
    """Cancel during a multipart upload: the server aborts it (no upload left, nothing stored)
    and the link gets its slot back (a one-file link takes another file)."""
    s3, bucket, url = parts_link(pg_parts, max_size="20MiB", max_files=1)
    open_link_page(browser, url)
    browser.execute_script("localStorage.clear()")
    with throttled(browser, 1_000_000):
        upload(browser, files("big.bin", os.urandom(12 * 1024 * 1024)))
        wait_for(browser, lambda d: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
                 "the multipart upload to start")
        wait_for(browser, lambda d: file_rows(d)[0]["progress"] > 0, "bytes on their way")
        click(browser, row_button(browser, 1, "Cancel"))
    [row] = file_rows(browser)
    assert "cancelled" in row["classes"], row
    wait_for(browser, lambda d: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
             "the upload to be aborted on the server")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    # The slot is back: the one-file link still takes a file.
    open_link_page(browser, url)
    assert browser.find_element(By.ID, "files-left").text == "1 more file accepted"
    upload(browser, files("small.txt", b"after the cancel"))
    [row] = settled_rows(browser, 1)
    assert "done" in row["classes"], row
    assert read_object(s3, bucket, "in/small.txt") == b"after the cancel"


def test_multipart_upload_retries_after_a_dropped_connection(browser, pg_parts, files):
    """A bad connection: part 2's first two requests are lost (their XHRs fail as a dropped
    connection does), and so is the first request that completes the upload (as fetch fails
    offline). The page tries again after a growing pause, asks nothing of the person (no Retry),
    and the file arrives whole."""
    s3, bucket, url = parts_link(pg_parts, max_size="20MiB")
    data = os.urandom(12 * 1024 * 1024)
    open_link_page(browser, url)
    browser.execute_script("""
        localStorage.clear();
        var open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
        window.__dropped = 0;
        XMLHttpRequest.prototype.open = function (m, u) { this.__url = u; return open.apply(this, arguments); };
        XMLHttpRequest.prototype.send = function () {
          if (/[?&]partNumber=2&/.test(this.__url) && window.__dropped < 2) {
            window.__dropped++;
            var x = this;
            setTimeout(function () { x.onerror(new ProgressEvent('error')); }, 50);
            return;
          }
          return send.apply(this, arguments);
        };
        var fetch0 = window.fetch;
        window.__lostCompletes = 0;
        window.fetch = function (url) {
          if (String(url).endsWith('/complete') && window.__lostCompletes < 1) {
            window.__lostCompletes++;
            return Promise.reject(new TypeError('Failed to fetch'));
          }
          return fetch0.apply(this, arguments);
        };
    """)
    with throttled(browser, 3_000_000):
        upload(browser, files("clip.bin", data))
        [row] = wait_for(browser, lambda d: (r := file_rows(d)) and {"done", "failed"} & set(r[0]["classes"]) and r,
                         "the upload to finish")
    assert "done" in row["classes"], row["status"]
    assert not row["retry"], row
    assert browser.execute_script("return [window.__dropped, window.__lostCompletes]") == [2, 1]
    got = read_object(s3, bucket, "in/clip.bin")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert s3.head_object(Bucket=bucket, Key="in/clip.bin")["ETag"].endswith('-3"')


# The page's POSTs counted; the first `lose` (arguments[0]) fail as a dropped connection does;
# with arguments[1], each POST carries a wrong signature (the server refuses it).
LOSE_POSTS = """
    var open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
    window.__posts = 0;
    window.__lose = arguments[0];
    var badSignature = arguments[1];
    XMLHttpRequest.prototype.open = function (m) { this.__method = m; return open.apply(this, arguments); };
    XMLHttpRequest.prototype.send = function (body) {
      if (this.__method === 'POST') {
        window.__posts++;
        if (badSignature && body instanceof FormData) body.set('x-amz-signature', '0'.repeat(64));
        if (window.__lose > 0) {
          window.__lose--;
          var x = this;
          setTimeout(function () { x.onerror(new ProgressEvent('error')); }, 50);
          return;
        }
      }
      return send.apply(this, arguments);
    };
"""


def test_single_request_upload_retries_after_a_dropped_connection(browser, pg_parts, files):
    """A file sent in one form POST (below the multipart threshold) whose first two POSTs are
    lost: the page asks for a fresh policy and tries again after a pause, without a Retry
    button, and the file arrives whole."""
    s3, bucket, url = parts_link(pg_parts, max_size="1MiB")
    data = os.urandom(200 * 1024)
    open_link_page(browser, url)
    browser.execute_script(LOSE_POSTS, 2)
    upload(browser, files("note.bin", data))
    [row] = wait_for(browser, lambda d: (r := file_rows(d)) and {"done", "failed"} & set(r[0]["classes"]) and r,
                     "the upload to finish")
    assert "done" in row["classes"], row["status"]
    assert not row["retry"], row
    assert browser.execute_script("return [window.__posts, window.__lose]") == [3, 0]
    assert read_object(s3, bucket, "in/note.bin") == data


def test_single_request_upload_refusal_is_not_retried(browser, pg_parts, files):
    """A 4xx refusal (here SignatureDoesNotMatch: the POST's signature is spoiled in the page)
    is final: one POST only, the server's sentence shown, and the Retry button offered."""
    s3, bucket, url = parts_link(pg_parts, max_size="1MiB")
    open_link_page(browser, url)
    browser.execute_script(LOSE_POSTS, 0, True)
    upload(browser, files("note.bin", os.urandom(64 * 1024)))
    [row] = wait_for(browser, lambda d: (r := file_rows(d)) and {"done", "failed"} & set(r[0]["classes"]) and r,
                     "the upload to be refused")
    assert "failed" in row["classes"], row
    assert row["retry"], row
    time.sleep(2)  # a retry would have gone by now (the first pause is 0.5 s)
    assert browser.execute_script("return window.__posts") == 1
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_single_request_upload_cancel_during_the_pause(browser, pg_parts, files):
    """Every POST lost: Cancel pressed while the page waits before its next try stops the
    tries (no further POST), and nothing is stored."""
    s3, bucket, url = parts_link(pg_parts, max_size="1MiB")
    open_link_page(browser, url)
    browser.execute_script(LOSE_POSTS, 100)
    upload(browser, files("note.bin", os.urandom(64 * 1024)))
    # The third try comes 1.5 s after the first: cancel once two have been lost.
    wait_for(browser, lambda d: d.execute_script("return window.__posts") >= 2, "two lost POSTs")
    click(browser, row_button(browser, 1, "Cancel"))
    [row] = file_rows(browser)
    assert "cancelled" in row["classes"], row
    posts = browser.execute_script("return window.__posts")
    time.sleep(5)  # the next pauses are 1 and 2 s
    assert browser.execute_script("return window.__posts") == posts
    assert "cancelled" in file_rows(browser)[0]["classes"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
