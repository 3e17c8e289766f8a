"""Web view benchmark: the history page of a 10,000-commit repository in headless Chromium.

    python bench/ui_history.py [--commits 10000] [--repo /tmp/bench-ui] [--runs 3] [--md docs/bench-ui.md]

The repository (made once, then reused) is a long main line with 20 side branches of 50 commits forked along
it (so up to 21 lanes are open at once), a tag every 500 commits, a note every 100 and metrics on every commit.
Each run starts a fresh `ckstore ui` process (so the server lays out the whole history from cold) and a fresh
headless Chromium, then times, from the navigation:

  - first page: the newest commits drawn (lanes, badges, metrics) and the page marked ready;
  - jumps: scrolling to 20 evenly spaced places down to the oldest commit and back to the top, each until the
    row there is drawn (the list is windowed: each jump into unfetched history fetches that page of 1,000);
    the oldest commit's own row is checked, and the page never holds more than a screen and its margins;
and, separately, the API's own time for the whole history (cold: layout of every commit; warm: a cached page).
Figures are medians over --runs, with the spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

import numpy as np  # noqa: E402

from served import chromium, start  # noqa: E402


def build(path: Path, commits: int, branches: int = 20, length: int = 50) -> None:
    """The repository, unless it is already there with that many commits."""
    from ckstore import Repo
    if (path / ".ckstore").exists():
        with Repo.open(path) as r:
            if len(r.log(all=True)) == commits:
                return
        raise SystemExit(f"{path} holds another repository: remove it or pick another --repo")
    main_len = commits - branches * length
    fork_every = main_len // (branches + 1)
    t0 = time.perf_counter()
    with Repo.init(path) as r:
        for i in range(main_len):
            r.commit({"w": np.full(4, i, np.float32)}, f"main step {i}", metrics={"loss": 1 / (i + 1), "acc": i / 1e4},
                     step=i, capture_env=False)
            if i % 500 == 0:
                r.tag(f"v{i // 500}")
            if i % 100 == 0:
                r.note_add("HEAD", {"acc": i / 1e4}, ns="eval")
            if i and i % fork_every == 0 and i // fork_every <= branches:
                r.branch(f"exp-{i // fork_every}", "HEAD")
        for b in range(1, branches + 1):
            for k in range(length):
                r.commit({"w": np.full(4, -k, np.float32), "b": np.full(2, b, np.float32)}, f"exp {b} step {k}",
                         metrics={"loss": 0.5 / (k + 1)}, step=b * fork_every + k, branch=f"exp-{b}",
                         capture_env=False)
    print(f"built {commits} commits in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def one_run(repo: Path, commits: int) -> dict:
    proc, url = start(repo)
    driver = None
    try:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url.rstrip("/") + "/api/history?limit=1", timeout=300) as res:
            assert json.loads(res.read())["total"] == commits
        api_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        with urllib.request.urlopen(url.rstrip("/") + "/api/history?offset=5000&limit=1000", timeout=60) as res:
            res.read()
        api_warm = time.perf_counter() - t0
        proc.terminate()
        proc.wait(timeout=10)
        proc, url = start(repo)  # the browser's run starts from a cold server too
        driver = chromium()
        driver.get("about:blank")
        t0 = time.perf_counter()
        driver.get(url.rstrip("/") + "/#/history")
        while driver.execute_script("return document.body.dataset.ready") != "history":
            if time.perf_counter() - t0 > 300:
                raise SystemExit("the history page did not render in 300 s")
            time.sleep(0.005)
        first = time.perf_counter() - t0
        jumps = []
        for k in list(range(1, 21)) + [0]:  # 20 evenly spaced places down to the oldest commit, then back up
            target = min(commits - 1, k * commits // 20)
            t1 = time.perf_counter()
            driver.execute_script(f"window.scrollTo(0, document.getElementById('history').offsetTop + {target} * 28"
                                  " - window.innerHeight / 2)")
            while not driver.execute_script(
                    f"const r = document.querySelectorAll('.row.commit'); const h = document.getElementById('history');"
                    f"return !document.querySelector('.row.pending') && Number(h.dataset.from) <= {target}"
                    f" && {target} < Number(h.dataset.to)"):
                if time.perf_counter() - t1 > 60:
                    raise SystemExit(f"row {target} was not drawn in 60 s")
                time.sleep(0.005)
            jumps.append(time.perf_counter() - t1)
            if target == commits - 1:  # the oldest commit's own row is there
                with urllib.request.urlopen(url.rstrip("/") + f"/api/history?offset={target}&limit=1") as res:
                    oldest = json.loads(res.read())["commits"][0]["id"]
                assert driver.execute_script(f"return !!document.querySelector('.row.commit[data-id=\"{oldest}\"]')")
        rows = driver.execute_script("return document.querySelectorAll('.row.commit').length")
        assert rows < 400, rows  # windowed: a screen and its margins, never the whole history
        return {"api_cold_s": api_cold, "api_warm_page_s": api_warm, "first_page_s": first,
                "jump_median_s": statistics.median(jumps), "jump_max_s": max(jumps),
                "jumps_total_s": sum(jumps), "rows_in_page": rows}
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=10_000)
    ap.add_argument("--repo", type=Path, default=Path("/tmp/bench-ui"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    build(args.repo, args.commits)
    runs = [one_run(args.repo, args.commits) for _ in range(args.runs)]
    keys = ["api_cold_s", "api_warm_page_s", "first_page_s", "jump_median_s", "jump_max_s", "jumps_total_s"]
    summary = {k: {"median": statistics.median(r[k] for r in runs), "min": min(r[k] for r in runs),
                   "max": max(r[k] for r in runs)} for k in keys}
    print(json.dumps({"commits": args.commits, "runs": runs, "summary": summary}, indent=2))
    if args.md:
        labels = {"api_cold_s": "API, cold: first `/api/history` answer (walk, notes, lane layout of every commit)",
                  "api_warm_page_s": "API, warm: a page of 1,000 commits from the cached layout",
                  "first_page_s": "**history page open**: navigation until the newest commits are drawn",
                  "jump_median_s": "jump to a place in the history until its rows are drawn (median of 21 jumps)",
                  "jump_max_s": "slowest jump (a page of 1,000 fetched and drawn)",
                  "jumps_total_s": "all 21 jumps: 20 places down to the oldest commit, then back to the top"}
        lines = [f"| {labels[k]} | {v['median']:.3f} | {v['min']:.3f} – {v['max']:.3f} |" for k, v in summary.items()]
        args.md.write_text(args.md.read_text().split("<!-- figures -->")[0] + "<!-- figures -->\n\n"
                           f"{args.commits} commits, {args.runs} runs (median, min – max, seconds); the page held "
                           f"{max(r['rows_in_page'] for r in runs)} rows at most:\n\n"
                           "| measure | median | range |\n| --- | --- | --- |\n" + "\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
