"""Push and clone through remotes, side by side: ckstore, DVC and restic on a directory remote and on S3.

    python bench/remote.py --series /tmp/bench-s/mix-fp32,/tmp/bench-s/mix-bf16 --out /tmp/ckbench-remote \
        --md docs/bench-remote.md

For each checkpoint series (version directories v0..vN written by bench/scenarios.py) every tool keeps a local
repository and two remotes: a directory (a local path) and an S3 bucket prefix on a real S3 server on loopback
(SeaweedFS `weed mini`, else moto's ThreadedMotoServer; one server for every tool). Version by version, every tool
records the version locally (untimed) and pushes it to each remote (timed):

| tool | local record (untimed) | push (timed) | clone of the newest version into an empty place (timed) |
|---|---|---|---|
| ckstore | `ckstore commit vK -m vK` | `ckstore push REMOTE --json` | `ckstore clone URL DIR --json` + `ckstore checkout main -o OUT` |
| dvc | vK copied to `ws/ckpt`, `dvc add ckpt` | `dvc push -r REMOTE` | new workspace: `dvc init`, the remote, the newest `ckpt.dvc`, `dvc pull` |
| restic | `restic backup .` in vK (local repo) | `restic copy --from-repo LOCAL` to the remote repo | `restic restore latest --target OUT` (fresh cache) |

Measured per push: the growth of the remote's stored bytes (directory: apparent bytes of the files under it; S3:
sum of the object sizes listed with boto3, straight from the server), the bytes on the wire (S3: the client goes
through a counting TCP proxy on loopback; request and response bytes, HTTP included), ckstore's own `bytes_sent`,
the process's rchar/wchar (/proc/PID/io read at exit: everything it read or wrote, files and sockets), wall and
CPU time. After the last version: a clone of the newest version into an empty directory with an empty HOME
(bytes downloaded as reported by the tool where it reports them, on the wire for S3, rchar; wall time), the
sha256 of every restored file against the source, and for ckstore also a partial clone (`--filter
tensors=GLOB`) and then a checkout of it (which fetches the rest on demand).

`--repeat N` (default 3) repeats the whole sequence with fresh local repositories and fresh remotes; times are
reported as medians over the repeats, bytes must agree between repeats (any difference is reported). Steps are
interleaved (for each version: every tool, every remote) so load on the shared machine falls on all alike.

Results: --out/results.json (every figure), --out/log.txt, and with --md the tables of docs/bench-remote.md
(only the part between `<!-- tables:begin -->` and `<!-- tables:end -->` is rewritten). `--report-only` rebuilds
the tables from --out/results.json. The code is in bench/lib/ (remote_s3.py, remote_tools.py, remote_run.py,
remote_report.py; subprocess measuring, the ckstore snapshot and the redirected HOME are shared with series.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import BENCH, ROOT, open_log  # noqa: E402
from lib.envs import DEFAULT_ENVS  # noqa: E402
from lib.remote_report import report, write_md  # noqa: E402
from lib.remote_run import environment, measure_series  # noqa: E402
from lib.remote_s3 import CountingProxy, S3Server  # noqa: E402
from lib.remote_tools import TOOLS  # noqa: E402
from lib.tools.ckstore import prepare_ckstore  # noqa: E402

ALL_TOOLS = list(TOOLS)
ALL_KINDS = ["dir", "s3"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", default="", help="comma-separated series directories (DIR/<scenario>-<dtype>)")
    p.add_argument("--out", type=Path, default=Path("/tmp/ckbench-remote"))
    p.add_argument("--work", type=Path, default=None, help="tool repositories and remotes (default OUT/work)")
    p.add_argument("--tools", default="all", help=f"comma list of {','.join(ALL_TOOLS)} or all")
    p.add_argument("--kinds", default="all", help="comma list of dir,s3 or all")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--partial", action="append", default=None, metavar="GLOB",
                   help="tensor glob of a ckstore partial clone, repeatable (default: lm_head* and *; "
                        "'*' = every tensor of the newest version only, no history data); --partial '' skips")
    p.add_argument("--fused", action="append", default=None, metavar="VARIANT",
                   help="ckstore clones that check out while the data arrives: 'checkout' (`clone --checkout`), "
                        "'depth1' (`clone --depth 1 --checkout`); repeatable (default both; --fused '' skips)")
    p.add_argument("--invert-remote", action="store_true",
                   help="ckstore: after the clones, `repack` and push to a new remote, then `clone --depth 1 "
                        "--checkout` from it")
    p.add_argument("--s3-server", choices=["auto", "seaweedfs", "moto"], default="auto")
    p.add_argument("--no-proxy", action="store_true", help="talk to S3 directly (no wire byte counts)")
    p.add_argument("--dvc-env", type=Path, default=Path("/tmp/dvcenv"), help="venv with dvc[s3]")
    p.add_argument("--envs", type=Path, default=DEFAULT_ENVS, help="passed to lib.envs.tool_env")
    p.add_argument("--ckstore-src", type=Path, default=ROOT)
    p.add_argument("--md", type=Path, default=None, help="markdown file whose tables block is rewritten")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or args.out / "work"
    args.tools = ALL_TOOLS if args.tools == "all" else args.tools.split(",")
    args.kinds = ALL_KINDS if args.kinds == "all" else args.kinds.split(",")
    args.partial = [g for g in (args.partial if args.partial is not None else ["lm_head*", "*"]) if g]
    args.fused = [v for v in (args.fused if args.fused is not None else ["checkout", "depth1"]) if v]
    log = open_log(args.out / "log.txt", "%H:%M:%S")

    results_path = args.out / "results.json"
    if args.report_only:
        results = json.loads(results_path.read_text())
        tables = report(results)
        print(tables)
        if args.md:
            write_md(args.md, tables, results)
        return 0

    if not args.series:
        p.error("--series is required (unless --report-only)")
    if "dvc" in args.tools and not (args.dvc_env / "bin" / "dvc").exists():
        p.error(f"{args.dvc_env}/bin/dvc missing: python -m venv {args.dvc_env} && "
                f"{args.dvc_env}/bin/pip install 'dvc[s3]'")
    if "restic" in args.tools and not shutil.which("restic"):
        p.error("restic missing: apt-get install -y restic")
    args.work.mkdir(parents=True, exist_ok=True)
    if "ckstore" in args.tools:
        err = prepare_ckstore(args.ckstore_src, args.work)
        if err:
            p.error(err)
    series_dirs = [Path(x) for x in args.series.split(",") if x]
    for d in series_dirs:
        if not (d / "series.json").exists():
            scen, dtype = d.name.rsplit("-", 1)
            log(f"{d} missing: generating it with scenarios.py")
            subprocess.run([sys.executable, str(BENCH / "scenarios.py"), "--size", "S", "--scenario", scen,
                            "--dtype", dtype, "--out", str(d.parent)], check=True)

    s3 = proxy = None
    if "s3" in args.kinds:
        s3 = S3Server(args.work, args.s3_server, log)
        proxy = None if args.no_proxy else CountingProxy(s3.port)
    log(f"command: {' '.join(sys.argv)}")
    results = {"environment": environment(args, s3), "tools": args.tools, "kinds": args.kinds, "series": []}
    log(json.dumps(results["environment"]))
    try:
        for d in series_dirs:
            results["series"].append(measure_series(d, args, s3, proxy, log))
            results_path.write_text(json.dumps(results, indent=1, default=str))
    finally:
        if proxy:
            proxy.close()
        if s3:
            s3.stop()
    results["environment"]["load_at_end"] = os.getloadavg()
    results_path.write_text(json.dumps(results, indent=1, default=str))
    tables = report(results)
    print(tables)
    if args.md:
        write_md(args.md, tables, results)
    log(f"results: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
