"""Fixtures for the web view: the branched series, a real `ckstore ui` process on a free loopback port, and a
real headless Chromium driven through Selenium (skipped where Chromium or its driver is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ui import series
from ui.served import CHROMIUM, DRIVER, Served, chromium, start


@pytest.fixture(scope="session")
def series_repo(tmp_path_factory) -> tuple[Path, dict]:
    """The branched series (tests/ui/series.py) and what it holds."""
    path = tmp_path_factory.mktemp("series")
    return path, series.build(path)


@pytest.fixture(scope="session")
def served(series_repo):
    """`ckstore ui` serving the series for the whole session."""
    proc, url = start(series_repo[0])
    yield Served(proc, url)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Selenium at 1400x1000."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    driver = chromium()
    yield driver
    driver.quit()
