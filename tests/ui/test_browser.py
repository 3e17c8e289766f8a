"""The web view in a real headless Chromium: every page renders the repository's data, clicks navigate, and no
page logs an error (a CSP violation, a failed request, a script error). Screenshots go to the test's tmp dir."""

from __future__ import annotations

import time

import pytest

from ui.served import wait_ready

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def open_page(browser, served, fragment: str, page: str):
    browser.get(served.url + "/" + fragment)
    wait_ready(browser, page)


def css(browser, selector: str) -> list:
    from selenium.webdriver.common.by import By
    return browser.find_elements(By.CSS_SELECTOR, selector)


def errors(browser) -> list[str]:
    """Console errors since the last call (Chromium keeps them per page load)."""
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def shoot(browser, shots, name: str) -> None:
    path = shots / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one


def test_history_page(browser, served, series_repo, shots):
    _, made = series_repo
    open_page(browser, served, "#/history", "history")
    rows = css(browser, ".row.commit")
    ids = [r.get_attribute("data-id") for r in rows]
    assert len(ids) == 9 and set(ids) == set(made["main"] + made["ft"])
    assert ids.index(made["main"][5]) < ids.index(made["main"][4])  # newest first
    assert len(css(browser, "svg.lanes circle.node")) == 9
    assert len(css(browser, "svg.lanes path.edge")) >= 8  # one line per parent link at least
    tagged = rows[ids.index(made["main"][3])].text
    assert "v1" in tagged and "@prod" in tagged and short(made["main"][3]) in tagged
    assert "✓ verified" in rows[ids.index(made["main"][5])].text
    assert "eval" in rows[ids.index(made["main"][4])].text
    assert "9 commits" in css(browser, "#history-status")[0].text
    shoot(browser, shots, "history")
    assert errors(browser) == []
    rows[ids.index(made["main"][3])].click()  # clicking a commit opens it
    wait_ready(browser, "commit")
    assert css(browser, "#commit-id")[0].text == made["main"][3]
    assert browser.current_url.endswith("#/commit/" + made["main"][3])


def short(oid: str) -> str:
    return oid[:12]


def test_history_filter(browser, served, series_repo):
    _, made = series_repo
    open_page(browser, served, "#/history", "history")
    box = css(browser, "#where")[0]
    box.send_keys("metrics.loss < 0.6")
    box.submit()
    deadline = time.monotonic() + 20
    while "where=" not in browser.current_url and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_ready(browser, "history")
    ids = [r.get_attribute("data-id") for r in css(browser, ".row.commit")]
    assert set(ids) == set(made["main"][3:])
    assert "3 of 9 commits match" in css(browser, "#history-status")[0].text
    assert errors(browser) == []


def test_metrics_page(browser, served, series_repo, shots):
    _, made = series_repo
    open_page(browser, served, "#/metrics?name=loss&x=step&by=branch", "metrics")
    series = {g.get_attribute("data-label"): g for g in css(browser, "svg.chart g.series")}
    assert set(series) == {"main", "ft"}
    points = {label: [c.get_attribute("data-id") for c in g.find_elements("css selector", "circle.point")]
              for label, g in series.items()}
    assert points["main"] == made["main"]  # six points, oldest first
    assert points["ft"] == made["main"][:3] + made["ft"]
    shoot(browser, shots, "metrics")
    from selenium.webdriver.common.action_chains import ActionChains
    dot = series["ft"].find_elements("css selector", "circle.point")[-1]
    ActionChains(browser).move_to_element(dot).perform()  # hover names the commit
    tip = css(browser, "#tooltip")[0]
    assert tip.is_displayed() and short(made["ft"][-1]) in tip.text and "ft step 500" in tip.text
    dot.click()  # click opens it
    wait_ready(browser, "commit")
    assert css(browser, "#commit-id")[0].text == made["ft"][-1]
    assert errors(browser) == []


def test_metrics_of_a_note_field(browser, served, series_repo):
    _, made = series_repo
    open_page(browser, served, "#/metrics?name=notes.eval.acc&x=index&by=none", "metrics")
    dots = [c.get_attribute("data-id") for c in css(browser, "svg.chart circle.point")]
    assert dots == [made["main"][4], made["main"][5]]
    options = [o.get_attribute("value") for o in css(browser, "#metric option")]
    assert {"loss", "acc", "notes.eval.acc"} <= set(options)


def test_commit_page(browser, served, series_repo, shots):
    _, made = series_repo
    open_page(browser, served, "#/commit/" + made["main"][5], "commit")
    assert css(browser, "#commit-id")[0].text == made["main"][5]
    assert css(browser, "#commit-message")[0].text == "main step 500"
    names = [r.get_attribute("data-name") for r in css(browser, "#tensors tr.tensor")]
    assert len(names) == 13 and "blocks.3.mlp.fc.weight" in names and "embed.weight" in names
    assert "✓" in css(browser, "#verdict")[0].text and "out" in css(browser, "#verdict")[0].text
    probe = css(browser, "#probe")[0].text
    assert "seriesmodel:load" in probe and "float32" in probe and "[3,16]" in probe  # the output the probe keeps
    assert "mmlu-mini" in css(browser, "#notes")[0].text
    cards = css(browser, "#storage")[0].text
    assert "logical" in cards and "unique" in cards and "KiB" in cards
    shoot(browser, shots, "commit")
    css(browser, "#diff-parent")[0].click()
    wait_ready(browser, "diff")
    assert browser.current_url.endswith(f"#/diff/{made['main'][4]}/{made['main'][5]}")
    assert errors(browser) == []


def test_diff_page_heat_map(browser, served, series_repo, shots):
    _, made = series_repo
    open_page(browser, served, f"#/diff/{made['main'][4]}/{made['main'][5]}", "diff")
    cells = css(browser, "#heat td.cell")
    assert len(cells) == 13  # 4 layers x 3 tensors, and embed.weight
    changed = sorted(c.get_attribute("data-name") for c in cells if c.get_attribute("data-status") == "changed")
    assert changed == made["changed_last"]
    colours = {c.get_attribute("data-status"): c.value_of_css_property("background-color") for c in cells}
    assert colours["changed"] != colours["unchanged"]
    from selenium.webdriver.support.ui import Select
    Select(css(browser, "#heat-by")[0]).select_by_value("frac")  # colour by the fraction of elements changed
    assert css(browser, "#heat")[0].get_attribute("data-by") == "frac"
    cells = css(browser, "#heat td.cell")
    assert sorted(c.get_attribute("data-name") for c in cells if c.get_attribute("data-status") == "changed") \
        == made["changed_last"]
    rows = [r.get_attribute("data-name") for r in css(browser, "#tensors-changed tr.changed")]
    assert sorted(rows) == made["changed_last"]
    assert "loss" in css(browser, "#metric-deltas")[0].text
    # the first changed tensor's values in both commits, as two sets of bars
    assert css(browser, "#hist-name")[0].get_attribute("data-name") == made["changed_last"][0]
    assert len(css(browser, "#hist svg g.bars.old rect.bar")) == 64
    assert len(css(browser, "#hist svg g.bars.new rect.bar")) == 64
    heights = [float(r.get_attribute("height")) for r in css(browser, "#hist svg g.bars.new rect.bar")]
    assert sum(h > 0 for h in heights) >= 8  # a spread of normal values fills many octaves
    cells[[c.get_attribute("data-name") for c in cells].index("embed.weight")].click()  # unchanged: still shown
    deadline = time.monotonic() + 20
    while css(browser, "#hist-name") == [] or css(browser, "#hist-name")[0].get_attribute("data-name") != "embed.weight":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shoot(browser, shots, "diff")
    assert errors(browser) == []


def test_storage_page(browser, served, shots):
    open_page(browser, served, "#/storage?by=branch", "storage")
    bars = {g.get_attribute("data-label") for g in css(browser, "svg.chart g.barrow")}
    assert {"main", "ft"} <= bars
    assert len(css(browser, "#du tbody tr")) == 2
    shoot(browser, shots, "storage")
    open_page(browser, served, "#/storage?by=commit", "storage")
    assert len(css(browser, "#du tbody tr")) == 9
    assert errors(browser) == []


def test_an_unknown_revision_shows_an_error_not_a_blank_page(browser, served):
    open_page(browser, served, "#/commit/nosuchrev", "commit")
    alert = css(browser, "[role=alert]")[0].text
    assert "nosuchrev" in alert
    errors(browser)  # the failed request itself is logged by Chromium: that is the expected 404
