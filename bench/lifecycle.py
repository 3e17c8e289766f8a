"""Lifecycle benchmark: what gc frees against what forget/du predicted, and checkout speed before and after repack.

    python bench/lifecycle.py --series A-fp32,mix-bf16 --inputs /tmp/bench-s --md docs/bench-lifecycle.md

For every series (version directories v0..vN from bench/scenarios.py; generated into --inputs when missing), in one
run and through a snapshot of the ckstore/ package (bench/lib/tools/ckstore.py):

  1. gc accounting: commit every version, `forget --keep-last 2 --dry-run` (its "bytes gc would free"), then
     `forget --keep-last 2` and `gc --now`; freed = the repository's bytes on disk (`du` totals: packs/ and
     objects/) before minus after; the two must agree within 1%. For scale, the same two kept versions committed
     alone into a fresh repository.
  2. inversion: commit every version into a fresh repository, time hot checkouts (one warm-up, then the median of
     --repeat into fresh directories) of the newest and the oldest version, `repack --invert`, time them again;
     stored bytes before and after; after the repack every version is checked out and compared with its source
     (sha256 of every file), and `fsck --read-data` must pass.

Checkouts run as CLI subprocesses (`ckstore checkout ID -o DIR`), so each includes the interpreter's start; the
other steps call the Python API in a subprocess. Results: --json (default bench/out/lifecycle.json) and --md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import BENCH, ROOT  # noqa: E402
from lib.measure import run, tree_digest  # noqa: E402
from lib.tools import Ckstore  # noqa: E402
from lib.tools.ckstore import prepare_ckstore  # noqa: E402


def api(repo: Path, code: str) -> dict:
    """Run `code` (which ends by printing one JSON line) against Repo.open(repo) in a snapshot subprocess."""
    snap = Ckstore.launcher.parent
    prog = (f"import sys, json\nsys.path.insert(0, {str(snap)!r})\nfrom ckstore import Repo\n"
            f"with Repo.open({str(repo)!r}) as repo:\n" + textwrap.indent(textwrap.dedent(code), "    "))
    r = run([sys.executable, "-c", prog])
    return json.loads(r.out.strip().splitlines()[-1])


def commit_all(repo: Path, versions: list[Path]) -> list[str]:
    """init + commit each version in order; the commit ids."""
    run(Ckstore.cmd("init", repo))
    ids = []
    for i, v in enumerate(versions):
        r = run(Ckstore.cmd("-C", repo, "commit", v, "-m", f"v{i}", "--json"))
        ids.append(json.loads(r.out)["id"])
    return ids


def disk(repo: Path) -> dict:
    return api(repo, "print(json.dumps(repo.du().disk))")


def hot_checkout(repo: Path, rev: str, work: Path, repeat: int) -> dict:
    """One warm-up checkout, then the median of `repeat` timed ones, each into a fresh directory."""
    times = []
    for k in range(repeat + 1):
        dest = work / f"co-{rev[:8]}-{k}"
        t = run(Ckstore.cmd("-C", repo, "checkout", rev, "-o", dest)).wall
        shutil.rmtree(dest)
        if k:
            times.append(t)
    return {"median": statistics.median(times), "runs": times}


def gc_accounting(name: str, versions: list[Path], work: Path) -> dict:
    repo = work / f"{name}-gc"
    commit_all(repo, versions)
    before = disk(repo)
    predicted = api(repo, "print(json.dumps(repo.forget({'keep_last': 2}, dry_run=True).bytes_freed))")
    api(repo, "print(json.dumps(len(repo.forget({'keep_last': 2}).commits)))")
    t = time.perf_counter()
    gc = api(repo, "print(json.dumps(repo.gc(now=True).to_dict()))")
    gc_wall = time.perf_counter() - t
    after = disk(repo)
    fsck = api(repo, "print(json.dumps(repo.fsck(read_data=True).ok))")
    alone = work / f"{name}-alone"
    commit_all(alone, versions[-2:])
    alone_disk = disk(alone)["total"]
    shutil.rmtree(repo)
    shutil.rmtree(alone)
    freed = before["total"] - after["total"]
    return {"before": before["total"], "after": after["total"], "predicted": predicted, "freed": freed,
            "error": (predicted - freed) / freed if freed else None, "gc_wall": gc_wall,
            "repack_freed": gc["repack_freed"], "repacked": gc["repacked"], "fsck_ok": fsck,
            "kept_alone": alone_disk}


def inversion(name: str, versions: list[Path], work: Path, repeat: int) -> dict:
    repo = work / f"{name}-inv"
    ids = commit_all(repo, versions)
    out: dict = {"before": disk(repo)["total"]}
    out["newest_before"] = hot_checkout(repo, ids[-1], work, repeat)
    out["oldest_before"] = hot_checkout(repo, ids[0], work, repeat)
    t = time.perf_counter()
    res = api(repo, "print(json.dumps(repo.repack(invert=True).to_dict()))")
    out["repack_wall"] = time.perf_counter() - t
    out["repacked"] = res["repacked"]
    out["after"] = disk(repo)["total"]
    out["newest_after"] = hot_checkout(repo, ids[-1], work, repeat)
    out["oldest_after"] = hot_checkout(repo, ids[0], work, repeat)
    identical = []
    for rev, src in zip(ids, versions):
        dest = work / f"verify-{rev[:8]}"
        run(Ckstore.cmd("-C", repo, "checkout", rev, "-o", dest))
        identical.append(tree_digest(dest) == tree_digest(src))
        shutil.rmtree(dest)
    out["identical"] = all(identical)
    out["fsck_ok"] = api(repo, "print(json.dumps(repo.fsck(read_data=True).ok))")
    out["tip_full"] = api(repo, f"""
        st = repo.engine.store
        m = repo.engine.manifest_of(bytes.fromhex({ids[-1]!r}))
        full = [st.frame_base(st.index.get(c)) is None for t in m.tensors for c in t.chunks]
        print(json.dumps(sum(full) / len(full)))""")
    shutil.rmtree(repo)
    return out


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def report(results: dict, meta: dict) -> str:
    lines = ["# Lifecycle benchmark", "",
             f"Generated by `bench/lifecycle.py` on {meta['date']} (ckstore snapshot {meta['snapshot'][:12]}, "
             f"{meta['cpus']} CPUs, S series from `bench/scenarios.py`). Bytes are the repository's `packs/` and "
             "`objects/` on disk (`du` totals); MiB = 2^20 bytes.", "",
             "## forget --keep-last 2, then gc --now", "",
             "| series | before MiB | predicted (forget --dry-run) | freed | error | after MiB | 2 versions alone MiB "
             "| gc s | fsck |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        g = r["gc"]
        lines.append(f"| {name} | {mib(g['before'])} | {mib(g['predicted'])} | {mib(g['freed'])} | "
                     f"{g['error'] * 100:+.2f}% | {mib(g['after'])} | {mib(g['kept_alone'])} | {g['gc_wall']:.1f} | "
                     f"{'ok' if g['fsck_ok'] else 'FAIL'} |")
    lines += ["", "## Hot checkout before and after repack --invert", "",
              "Median of 3 hot checkouts into fresh directories, seconds (CLI process included).", "",
              "| series | newest before | oldest before | newest after | oldest after | stored before MiB | "
              "stored after MiB | change | repack s | tip full frames | identical, fsck |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        v = r["invert"]
        change = (v["after"] - v["before"]) / v["before"] * 100
        lines.append(f"| {name} | {v['newest_before']['median']:.3f} | {v['oldest_before']['median']:.3f} | "
                     f"{v['newest_after']['median']:.3f} | {v['oldest_after']['median']:.3f} | {mib(v['before'])} | "
                     f"{mib(v['after'])} | {change:+.2f}% | {v['repack_wall']:.1f} | {v['tip_full'] * 100:.0f}% | "
                     f"{'yes' if v['identical'] and v['fsck_ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", default="A-fp32,mix-bf16", help="comma list of <scenario>-<dtype>")
    ap.add_argument("--inputs", type=Path, default=Path("/tmp/bench-s"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/cklife-work"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=BENCH / "out" / "lifecycle.json")
    ap.add_argument("--md", type=Path, default=None, help="write the tables here (e.g. docs/bench-lifecycle.md)")
    args = ap.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    why = prepare_ckstore(ROOT, args.work)
    if why:
        sys.exit(why)
    results = {}
    for name in args.series.split(","):
        folder = args.inputs / name
        if not (folder / "series.json").exists():
            scenario, dtype = name.rsplit("-", 1)
            run([sys.executable, str(BENCH / "scenarios.py"), "--size", "S", "--dtype", dtype, "--scenario",
                 scenario, "--out", args.inputs])
        versions = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith("v")),
                          key=lambda p: int(p.name[1:]))
        print(f"{name}: {len(versions)} versions", flush=True)
        results[name] = {"gc": gc_accounting(name, versions, args.work)}
        print(f"  gc: {results[name]['gc']}", flush=True)
        results[name]["invert"] = inversion(name, versions, args.work, args.repeat)
        print(f"  invert: {results[name]['invert']}", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "snapshot": Ckstore.snapshot_hash,
            "cpus": len(__import__("os").sched_getaffinity(0))}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    if args.md:
        args.md.write_text(report(results, meta))
    print(report(results, meta))
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
