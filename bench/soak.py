"""Run the reliability soak tier (RELIABILITY.md T1-T16) and write its figures to docs/reliability.md: `python
bench/soak.py [--out docs/reliability.md] [--only T3,T9] [--jobs 2] [--report DIR]`. Runs `CKSTORE_SOAK=1 python -m
pytest -m soak` over tests/soak (each test records `count`, `failures`, `target` as JUnit properties) and, without
`-m soak`, the CI-tier tests whose counts are already the soak target; every figure comes from the JUnit XML."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Longest first: two workers run them, and the fuzz group alone is about a third of the whole run.
GROUPS = {"fuzz": ["tests/soak/test_soak_fuzz.py"], "cache": ["tests/soak/test_soak_cache.py"],
          "sync": ["tests/soak/test_soak_sync.py"], "engine": ["tests/soak/test_soak_engine.py"],
          "io": ["tests/soak/test_soak_io.py"], "gc": ["tests/engine/test_gc_race.py"]}
# CI-tier tests already at the soak target: (T-id, what, target, pytest node ids).
CI_AT_TARGET = [
    ("T7", "one commit and one checkout on a real full tmpfs", "a full filesystem",
     ["tests/engine/test_diskfull.py::test_commit_and_checkout_on_a_full_disk"]),
    ("T9", "malicious pickles in .pt zips and legacy files", "20 payloads",
     ["tests/formats/test_torchzip.py::test_hostile_pickle_stays_opaque"]),
    ("T10", "hostile manifest paths", "every name",
     ["tests/engine/test_reliability.py::test_hostile_manifest_paths_refused"]),
    ("T10", "symlinked parents, symlink at a final name", "every layout",
     ["tests/engine/test_reliability.py::test_symlinked_parent_refused",
      "tests/engine/test_reliability.py::test_symlink_at_final_name_is_replaced_not_followed",
      "tests/engine/test_restore_safety.py::test_symlinked_destination_root_refused"]),
    ("T14", "names and values through API and CLI", "every case", ["tests/engine/test_bad_input.py"]),
    ("T16", "amplification by a hostile remote", "every case", ["tests/sync/test_hostile_remote.py"])]
WHAT = {
    "test_t1_crash_sweep_commit": "commit: os._exit at every durable I/O step", "test_t3_no_false_alarms":
    "bit rot: fsck --read-data of clean copies", "test_t1_sigkill_commit": "commit SIGKILLed at a random moment",
    "test_t1_crash_sweep_directory_remote": "os._exit at every durable I/O step of a {p} (directory remote)",
    "test_t1_sigkill_push_pull": "{p} SIGKILLed at a random moment", "test_t13_flipped_entries":
    "LMDB cache: entries of table {p} flipped",
    "test_t3_bit_rot": "bit rot: packs (flip/truncate/zero 4 KiB), objects, swapped packs, refs",
    "test_t4_concurrent_writers_fsck_throughout": "2 writers x 100 commits, {p}, fsck looping throughout",
    "test_t5_racing_pushes": "2 racing pushes per round, {p} remote", "test_t6_interrupted_transfer":
    "{p} cut, then resumed",
    "test_t8_fuzz_mutated_every_reader": "fuzz: mutated files, each under its own and a random reader",
    "test_t8_fuzz_random_bytes_every_reader": "fuzz: random bytes under every reader", "test_t11_bad_remote":
    "bad remote: {p}",
    "test_t8_every_truncation_of_every_base": "every truncation of every base file (st, npy, npz, pt)",
    "test_t8_fuzz_structured_headers": "fuzz (hypothesis): structured {p}", "test_t13_pages_zeroed_flipped_truncated":
    "LMDB cache: pages zeroed/flipped, data file truncated", "test_t15_destination_races":
    "destination component swapped ({p}) during a 300-file checkout",
    "test_t2_power_loss": "power loss: every state of every prefix of a recorded {p} (strace)",
    "test_t7_enospc_every_step": "ENOSPC from every write-like call of a {p} (LD_PRELOAD shim), CLI process",
    "test_t12_soak": "commit (2 per round, deduping against dropped chunks) racing forget + gc, two processes, "
                     "{p}; rounds"}
NOT_BUILT: list[str] = []


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()


def run_pytest(name: str, args: list[str], soak: bool, tmp: Path) -> tuple[str, Path, float]:
    xml = tmp / f"{name}.xml"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "junit_family=xunit1",
           f"--junitxml={xml}", *(["-m", "soak"] if soak else []), *args]
    env = dict(os.environ, **({"CKSTORE_SOAK": "1"} if soak else {}))
    t0 = print(f"[soak] {name}: {' '.join(cmd[1:])}", flush=True) or time.monotonic()
    with open(tmp / f"{name}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"[soak] {name} done in {time.monotonic() - t0:.0f}s (log {tmp / (name + '.log')})", flush=True)
    return name, xml, time.monotonic() - t0


def cases(xml: Path) -> list[dict]:
    out = []
    for tc in ET.parse(xml).getroot().iter("testcase") if xml.exists() else ():
        found = [e for e in (tc.find("failure"), tc.find("error"), tc.find("skipped")) if e is not None]
        out.append({"name": tc.get("name"), "module": (tc.get("classname") or "").split(".")[-1],
                    "time": float(tc.get("time") or 0), "props": {p.get("name"): p.get("value") for p in tc.iter(
                        "property")}, "outcome": ("skipped" if found[0].tag == "skipped" else "FAIL") if found else
                    "pass", "message": (found[0].get("message") or "") if found else ""})
    return out


def soak_row(c: dict) -> dict:
    m = re.match(r"(test_t(\d+)_\w+?)(?:\[(.*)\])?$", c["name"])
    func, tid, param = m.group(1), f"T{m.group(2)}", m.group(3) or ""
    p = c["props"]
    return {"tid": tid, "what": WHAT.get(func, func).format(p=param.replace("b'", "").replace("'", "")),
            "target": p.get("target", "?"), "ran": p.get("count", "0"),
            "failures": p.get("failures", "-" if c["outcome"] != "pass" else "0"), "outcome": c["outcome"],
            "time": c["time"], "test": f"{c['module']}::{c['name']}", "seeds": p.get("failed_seeds", ""),
            "message": c["message"]}


def ci_rows(all_cases: list[dict], only: set[str] | None) -> list[dict]:
    rows = []
    for tid, what, target, nodes in [row for row in CI_AT_TARGET if not only or row[0] in only]:
        funcs = {n.split("::")[1] if "::" in n else None for n in nodes}
        files = {Path(n.split("::")[0]).stem for n in nodes}
        mine = [c for c in all_cases if c["module"] in files and (None in funcs or c["name"].split("[")[0] in funcs)]
        failed, ran = [c for c in mine if c["outcome"] == "FAIL"], sum(c["outcome"] != "skipped" for c in mine)
        rows.append({"tid": tid, "what": what + " (CI tier)", "target": target, "ran": str(ran),
                     "failures": str(len(failed)), "outcome": "FAIL" if failed else ("pass" if ran else "skipped"), "time": sum(c["time"] for c in mine),
                     "test": ", ".join(n.split("/")[-1] for n in nodes),
                     "seeds": "; ".join(f"{c['name']}: {c['message'][:200]}" for c in failed), "message": ""})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split(":")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    ap.add_argument("--only", help="comma-separated T-ids, e.g. T3,T9")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--report", metavar="DIR", help="re-render the document from a finished run's directory")
    args = ap.parse_args()
    only = {t.strip().upper() for t in args.only.split(",")} if args.only else None
    if args.report:  # the figures of that run; its revision as recorded then (or HEAD as of its start)
        tmp = Path(args.report)
        suites = {x.stem: ET.parse(x).getroot().find("testsuite") for x in sorted(tmp.glob("*.xml"))}
        done = [(n, tmp / f"{n}.xml", float(s.get("time"))) for n, s in suites.items()]
        spans = [(dt.datetime.fromisoformat(s.get("timestamp")), float(s.get("time"))) for s in suites.values()]
        started = min(t for t, _ in spans).astimezone(dt.timezone.utc)
        wall = max((t.astimezone(dt.timezone.utc) - started).total_seconds() + d for t, d in spans)
        meta = json.loads((tmp / "meta.json").read_text()) if (tmp / "meta.json").exists() else {
            "rev": sh("git", "rev-list", "-1", "--abbrev-commit", "--abbrev=12", f"--before={started:%Y-%m-%dT%H:%M:%S}Z",
                      "HEAD"), "dirty": "unknown: not recorded by the run"}
    else:
        tmp = Path(tempfile.mkdtemp(prefix="ckstore-soak-"))
        meta = {"load": "%.1f" % os.getloadavg()[0], "rev": sh("git", "rev-parse", "--short=12", "HEAD"), "dirty": ", ".join(
            ln.split(maxsplit=1)[-1] for ln in sh("git", "status", "--porcelain", "--", "ckstore").splitlines())}
        (tmp / "meta.json").write_text(json.dumps(meta))
        select = ["-k", " or ".join(f"test_{t.lower()}_" for t in sorted(only))] if only else []
        jobs = [(g, files + select, True) for g, files in GROUPS.items()]
        ci = [n for tid, _, _, nodes in CI_AT_TARGET if not only or tid in only for n in nodes]
        jobs += [("ci-tier", ci, False)] if ci else []
        started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
        with ThreadPoolExecutor(args.jobs) as pool:
            done, wall = list(pool.map(lambda j: run_pytest(j[0], j[1], j[2], tmp), jobs)), time.monotonic() - t0
    rows = [soak_row(c) for name, xml, _ in done if name != "ci-tier" for c in cases(xml)
            if re.match(r"test_t\d+_", c["name"])]
    rows += ci_rows([c for name, xml, _ in done if name == "ci-tier" for c in cases(xml)], only)
    rows.sort(key=lambda r: (int(r["tid"][1:]), r["test"]))
    write(Path(args.out), rows, started, wall, args, done, tmp, meta)
    bad = sum(r["outcome"] == "FAIL" for r in rows)
    sys.exit(print(f"[soak] {len(rows)} rows, {bad} failed, {wall:.0f}s; wrote {args.out}") or int(bad or not rows))


def write(out: Path, rows: list[dict], started, wall: float, args, done, tmp: Path, meta: dict) -> None:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    total = sum(int(r["ran"]) for r in rows if r["ran"].isdigit())
    lines = ["# Reliability: soak figures", "",
             "What RELIABILITY.md (T1-T16) promises, run at the soak counts. Written by `bench/soak.py` from the "
             "JUnit XML of the run below; regenerate with `python bench/soak.py" + (f" --only {args.only}" if args.only
                                                                       else "") + "`.", "",
             f"- date: {started:%Y-%m-%d %H:%M} UTC, wall time {wall / 60:.1f} min",
             f"- machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
             f"Python {platform.python_version()}",
             f"- ckstore revision at the start: {meta['rev']}; uncommitted changes under ckstore/ then: "
             f"{meta['dirty'] or 'none'}",
             "- pytest runs: " + ", ".join(f"{n} {s:.0f}s" for n, _, s in done)
             + (f"; load average at the start {meta['load']}" if meta.get("load") else ""),
             *([f"- CKSTORE_SOAK_SCALE={os.environ['CKSTORE_SOAK_SCALE']} (a rehearsal, not the soak counts)"]
               if os.environ.get("CKSTORE_SOAK_SCALE") else []),
             f"- {len(rows)} rows, {total} cases, {sum(r['outcome'] == 'FAIL' for r in rows)} rows failed", "",
             "| T-id | what | target | ran | failures | result | seconds | test |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tgt = r["target"]
        note = "" if not (tgt.isdigit() and r["ran"].isdigit() and int(r["ran"]) < int(tgt)) else " (below target)"
        lines.append(f"| {r['tid']} | {r['what']} | {tgt} | {r['ran']}{note} | {r['failures']} | {r['outcome']} | "
                     f"{r['time']:.0f} | `{r['test']}` |")
    bad = [f"- {r['tid']} `{r['test']}` {r['outcome']}: " + (f"{r['failures']} failed: " + ", ".join(
        x.split(": ", 1)[0] for x in r["seeds"].split(" ; ")) + ". Each: " + " || ".join(
        " ".join(x.split(": ", 1)[-1].split())[:700] for x in r["seeds"].split(" ; ")) if r["seeds"] else
        " ".join(r["message"].split())[:700]) for r in rows if r["outcome"] != "pass"]
    lines += ["", "## Failures and skips", ""] + (bad or ["None: every row passed with 0 failures."])
    lines += ["", "## Not built", ""] + [f"- {x}" for x in NOT_BUILT]
    lines += ["", "## Notes", "",
              "- `target` is RELIABILITY.md's soak count for the case (`target` property of each soak test); `ran` "
              "is the number of cases the run counted. Where a target did not fit the ~30 minute budget on this "
              "machine the test runs fewer and says so here (\"below target\").",
              "- T4 counts runs (each: 2 writer processes x 100 commits, a reader or a second branch, `ckstore fsck` "
              "in a loop meanwhile). T13's entry rows count flipped entries (3 in each damaged copy; `failures` counts "
              "copies).",
              "- S3 cases run against SeaweedFS `weed mini` (moto lets two conditional writers both win: "
              "tests/sync/test_sync.py). T6 cuts a transfer after a random number of requests, not at a byte.",
              "- T2 records the real CLI process under `strace -f` and rebuilds, for every prefix of its file "
              "operations, the states a power loss can leave (unsynced writes dropped or torn in half, unsynced "
              "directory entries undone: one at a time, all, those of tmp/ only; tests/powerloss.py); `ran` counts "
              "distinct states checked (fsck --read-data, history, byte-identical checkouts; a pushed remote is "
              "cloned).",
              "- T7 preloads tests/enospc_shim.c into the CLI process: from the k-th write-like call under the "
              "repository (write, pwrite, writev, fsync, fdatasync, ftruncate, rename, link, mkdir, open with "
              "O_CREAT; Python's and LMDB's) every one fails with ENOSPC, for every k of a clean run.",
              "- T11 stalls: every 3rd-6th request hangs 120 s; RetryingTransport's per-request timeout "
              "(CKSTORE_REMOTE_TIMEOUT, 0.3 s in the test, 300 s by default) abandons it, warns and retries.",
              "- Wall time depends on what else runs on the 2 cores: the run of 2026-12-01 12:35 shared them with "
              "other jobs (load average 3-5) and took 42 min, its unchanged T13 entry rows 2.5x as long as in the "
              "12.8-minute run before; the hypothesis header fuzzers at 10^5 examples (st_header alone 24 min "
              "there) are the longest part.",
              "- The older `soak` tests in tests/engine and tests/formats are not run here: tests/soak runs the same "
              "cases and records its counts (their 10^5-example hypothesis fuzzers alone take ~18 min).",
              f"- Logs and JUnit XML of this run were in {tmp}.", ""]
    out.parent.mkdir(parents=True, exist_ok=True) or out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
