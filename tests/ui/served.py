"""Helpers for the web view's tests: start a real `ckstore ui` process, call its API, drive headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
                 if p and os.path.exists(p)), None)
DRIVER = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "") if p and os.path.exists(p)),
              None)


class Served:
    """A running `ckstore ui`: its URL, and GET helpers for the API."""

    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url.rstrip("/")

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict | bytes, dict]:
        """(status, parsed JSON or bytes, headers) of GET path."""
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as res:
                status, body, hdrs = res.status, res.read(), dict(res.headers)
        except urllib.error.HTTPError as exc:
            status, body, hdrs = exc.code, exc.read(), dict(exc.headers)
        if hdrs.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(body), hdrs
        return status, body, hdrs

    def api(self, path: str) -> dict:
        """GET /api/PATH, which must succeed."""
        status, body, _ = self.get("/api/" + path)
        assert status == 200, (status, body)
        return body


def start(repo: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """Start `ckstore ui --port 0` on `repo`; returns the process and the URL it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ckstore", "-C", str(repo), "ui", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"ckstore ui did not start: {line!r} {proc.stderr.read()!r}")
    return proc, line.split(" at ", 1)[1].strip()


def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium through Selenium (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def wait_ready(driver, page: str, timeout: float = 30.0) -> None:
    """Wait until the single-page app says `page` finished rendering (body[data-ready])."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.execute_script("return document.body && document.body.dataset.ready") == page:
            return
        time.sleep(0.05)
    raise AssertionError(f"page {page} did not render in {timeout} s: "
                         + driver.execute_script("return document.body.innerText.slice(0, 500)"))
