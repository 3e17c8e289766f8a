"""Side-by-side benchmark of ckstore and its peers on the checkpoint series of bench/scenarios.py.

    python bench/series.py --size S --scenarios mix,A,B,C,Cfile,D,E,Ept,R --dtypes fp32,bf16 --tools all \
        --out bench/out

For every series <scenario>-<dtype> (generated into --inputs by scenarios.py when missing) every tool commits
the same version directories v0..vN in one run, then checks out every version into a fresh directory and
compares each restored file with the source by sha256. Every tool command runs as a subprocess; measured per
tool: stored bytes after each version (apparent bytes of the repository's files; ckstore's `.ckstore/cache` is
left out of the stored figure and reported apart), commit wall and CPU time and peak RSS per version (os.wait4
of the child: user+sys and ru_maxrss of the command and the children it waited for), checkout of the oldest and
newest version hot (median of --repeat runs) and cold (after `sync` and posix_fadvise(DONTNEED) on every file of
the tool's directory: repository, caches and redirected HOME; the system caches are never dropped), a no-op
re-commit of the newest directory, and the byte-identical check.

Results: --out/series/<scenario>-<dtype>.json per series (kept between runs: `--resume` skips series already
measured with the same ckstore snapshot), --out/results.json (all figures; --json writes a copy elsewhere too),
--md (the tables). `--report-only` rebuilds the report from --out/series without measuring anything.

Tools run from their own directories under --work; HOME, XDG_*, BORG_BASE_DIR, DVC_SITE_CACHE_DIR and the
restic cache point into them. ckstore runs from a snapshot of the ckstore/ package copied at start, so edits
made to the tree during a run do not mix versions; its hash goes into the results. The code is in bench/lib/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import ALL_DTYPES, ALL_SCENARIOS, BENCH, ROOT, SYNTH_SCENARIOS, open_log  # noqa: E402
from lib.envs import DEFAULT_ENVS, install_envs  # noqa: E402
from lib.report import ck  # noqa: E402
from lib.results import already_measured, build_report, finish_meta, save_series, start_meta  # noqa: E402
from lib.series_run import SLOW, disk_check, measure_series  # noqa: E402
from lib.shapes import ALL_SIZES, SYNTH_SIZES  # noqa: E402
from lib.tools import ALL_TOOLS, TOOLS, Ckstore  # noqa: E402
from lib.tools.ckstore import help_timing, merge_help, prepare_ckstore  # noqa: E402


# what --scenarios, --dtypes and --slow default to per size: L (synthetic, ~1.7 GB per bf16 version) has only the
# mix series, one file and sharded, bf16 first; its hot checkouts take seconds, and are repeated all the same
SIZE_DEFAULTS = {
    **{size: {"scenarios": ALL_SCENARIOS, "dtypes": ALL_DTYPES, "slow": SLOW} for size in ("S", "M")},
    **{size: {"scenarios": SYNTH_SCENARIOS, "dtypes": ["bf16", "fp32"], "slow": 120.0} for size in SYNTH_SIZES},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="S", choices=ALL_SIZES, help="L: synthetic 0.84B-parameter model (Ltiny: "
                    "the same generator at 0.33M parameters, to test the pipeline)")
    ap.add_argument("--scenarios", default=None, help="comma list, or all (default: every scenario of the size)")
    ap.add_argument("--dtypes", default=None, help="comma list, or all (default fp32,bf16; L: bf16,fp32)")
    ap.add_argument("--tools", default="all", help=f"comma list of {','.join(ALL_TOOLS)}, or all")
    ap.add_argument("--out", type=Path, default=BENCH / "out", help="per-series results, results.json and logs")
    ap.add_argument("--inputs", type=Path, default=None, help="series from scenarios.py (default /tmp/bench-<size>)")
    ap.add_argument("--work", type=Path, default=None, help="tool repositories (default /tmp/ckbench-work)")
    ap.add_argument("--envs", type=Path, default=DEFAULT_ENVS, help="venvs for DVC, ZipNN, git-theta")
    ap.add_argument("--json", type=Path, default=None, help="also write a copy of --out/results.json there")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--repeat", type=int, default=3, help="hot checkouts of the oldest and newest version")
    ap.add_argument("--slow", type=float, default=None,
                    help=f"a hot checkout slower than this (s) is not repeated (default {SLOW:g}; L: 120)")
    ap.add_argument("--no-disk-check", action="store_true",
                    help="measure a series even when the free disk looks too small for every tool's store")
    ap.add_argument("--theta-scenarios", default="mix", help="series git-theta runs on (it is slow), or all")
    ap.add_argument("--ckstore-src", type=Path, default=ROOT, help="tree whose ckstore/ package is measured")
    ap.add_argument("--install", action="store_true", help="apt-get / pip the peers that are missing first")
    ap.add_argument("--resume", action="store_true", help="skip series already measured with this ckstore")
    ap.add_argument("--keep", action="store_true", help="keep the tool repositories")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from --out/series")
    args = ap.parse_args(argv)
    defaults = SIZE_DEFAULTS[args.size]
    args.scenarios = defaults["scenarios"] if args.scenarios in (None, "all") else args.scenarios.split(",")
    args.dtypes = defaults["dtypes"] if args.dtypes in (None, "all") else args.dtypes.split(",")
    args.slow = defaults["slow"] if args.slow is None else args.slow
    args.theta_scenarios = ALL_SCENARIOS if args.theta_scenarios == "all" else args.theta_scenarios.split(",")
    args.tools = ALL_TOOLS if args.tools == "all" else args.tools.split(",")
    for t in args.tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {', '.join(ALL_TOOLS)}")
    args.inputs = args.inputs or Path(f"/tmp/bench-{args.size.lower()}")
    args.work = (args.work or Path("/tmp/ckbench-work")).resolve()
    args.out = args.out.resolve()
    return args


def tools_info(tools: list[str], envs: Path, log) -> dict:
    """Each tool's description and version, or why it cannot run here."""
    info = {}
    for t in tools:
        why = TOOLS[t].unavailable(envs)
        version = f"ckstore snapshot {Ckstore.snapshot_hash}" if t.startswith("ckstore") else (None if why else
                                                                                   TOOLS[t].version(envs))
        info[t] = {"description": TOOLS[t].description, "available": not why,
                   **({"reason": why} if why else {"version": version})}
        log(f"{t}: {'available, ' + version if not why else 'not available: ' + why}")
    return info


def generate(args: argparse.Namespace, sc: str, dt: str, log) -> bool:
    """Write the inputs of one series with scenarios.py; False when that fails."""
    log(f"{sc}-{dt}: generating into {args.inputs}")
    r = subprocess.run([sys.executable, str(BENCH / "scenarios.py"), "--size", args.size, "--scenario", sc,
                        "--dtype", dt, "--out", str(args.inputs)], capture_output=True, text=True)
    if r.returncode != 0 or not (args.inputs / f"{sc}-{dt}" / "series.json").exists():
        log(f"{sc}-{dt}: could not generate: {r.stderr[-500:]}")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tools = args.tools
    (args.out / "series").mkdir(parents=True, exist_ok=True)
    log = open_log(args.out / "log.txt")
    cmd_line = "python bench/series.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:])
                                                      if a != "--report-only")
    if args.report_only:
        build_report(args.out, args.md, json.loads((args.out / "meta.json").read_text()), args.json)
        log(f"report rebuilt: {args.md}, {args.json or args.out / 'results.json'}")
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    if args.install:
        install_envs(args.envs, tools, log)
    reason = prepare_ckstore(args.ckstore_src, args.work)
    if reason:
        log(f"ckstore: {reason}")
    tool_info = tools_info(tools, args.envs, log)
    help_t = help_timing() if "ckstore" in tools else None
    if help_t:
        (args.out / "help.json").write_text(json.dumps(help_t))
        log(f"ckstore --help: median {help_t['median']:.3f} s")
    meta = start_meta(args.out, cmd_line, tools, args.scenarios, tool_info, help_t, args.repeat, args.resume)
    help_t = meta["help"]
    for sc in args.scenarios:
        for dt in args.dtypes:
            name = f"{sc}-{dt}"
            target = args.out / "series" / f"{name}.json"
            if args.resume and already_measured(target, tools):
                log(f"{name}: already measured, skipped (--resume)")
                continue
            series_dir = args.inputs / name
            have = series_dir / "series.json"
            if have.exists() and json.loads(have.read_text()).get("size", args.size) != args.size:
                log(f"{name}: {series_dir} holds another size, generated again")
                have.unlink()
            if not have.exists() and not generate(args, sc, dt, log):
                continue
            short = None if args.no_disk_check else disk_check(series_dir, tools, args.work)
            if short:
                log(f"{name}: skipped, {short} (--no-disk-check to try anyway)")
                continue
            log(f"{name}: measuring {len(tools)} tools")
            save_series(target, measure_series(name, series_dir, tools, args, log), tools)
            finish_meta(args.out, meta)
            build_report(args.out, args.md, meta, args.json)  # the report grows as series finish
    end_help = help_timing() if "ckstore" in tools else None  # again at the end: the machine's load changes
    if help_t and end_help:
        meta["help"] = merge_help(help_t, end_help, end=True)
        (args.out / "help.json").write_text(json.dumps(meta["help"]))
    finish_meta(args.out, meta)
    results = build_report(args.out, args.md, meta, args.json)
    log(f"done: {args.md}, {args.json or args.out / 'results.json'}")
    for r in results["targets"]:
        log(f"  {ck(r['ok'])} {r['target']}: {r['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
