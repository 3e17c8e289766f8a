"""One series of bench/remote.py measured: per repeat, every version recorded and pushed, then the clones."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .measure import apparent_bytes, load, mismatches, tree_hashes
from .remote_s3 import CountingProxy, S3Server
from .remote_tools import TOOLS, Meter, Remote, Tool, bench_env
from .report import fmt_b
from .tools import Ckstore
from .versions import pip_version, tool_version

Log = Callable[[str], None]


def guarded(res: dict, key: str, what: str, fn: Callable[[], None], log: Log) -> None:
    """Run fn unless this tool/remote already failed; a failure is recorded and the others go on."""
    if res.get("error"):
        return
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - one tool failing must not stop the others
        res["error"] = f"{what}: {type(e).__name__}: {e}"[-2000:]
        log(f"    {key} FAILED at {what}: {str(e)[-400:]}")


class Rep:
    """One repeat over one series: fresh local repositories and fresh remotes for every tool."""

    def __init__(self, name: str, rep: int, args: Any, s3: S3Server | None, proxy: CountingProxy | None,
                 log: Log) -> None:
        self.rep, self.args, self.proxy, self.log = rep, args, proxy, log
        self.base = args.work / name / f"r{rep}"
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)
        self.out: dict[str, Any] = {}
        self.tools: list[tuple[Tool, list[Remote], dict]] = []
        for t in args.tools:
            d = self.base / t
            tool = TOOLS[t](d, bench_env(d, args.envs), args.dvc_env if t == "dvc" else args.envs)
            remotes = [Remote(k, t, self.base, f"{name}/r{rep}/{t}", s3, proxy) for k in args.kinds]
            res: dict[str, Any] = {"records": [], "kinds": {k: {"pushes": []} for k in args.kinds}}
            self.out[t] = res

            def init(tool: Tool = tool, remotes: list[Remote] = remotes, res: dict = res) -> None:
                tool.init(remotes)
                for r in remotes:
                    res["kinds"][r.kind]["init_stored"] = r.stored()[0]
            guarded(res, t, "init", init, log)
            self.tools.append((tool, remotes, res))

    def meter(self, remote: Remote) -> Meter:
        return Meter(self.proxy if remote.kind == "s3" else None)

    def record(self, tool: Tool, res: dict, i: int, src: Path) -> None:
        os.sync()
        m = Meter(None)
        tool.record(i, src, m)
        res["records"].append({"version": i, **m.figures()})

    def push(self, tool: Tool, remote: Remote, kres: dict, i: int) -> None:
        before, _ = remote.stored()
        os.sync()
        ld = load()
        m = self.meter(remote)
        extra = tool.push(i, remote, m)
        after, nobj = remote.stored()
        entry = {"version": i, **m.figures(), "stored": after, "objects": nobj, "growth": after - before, "load": ld,
                 **extra}
        kres["pushes"].append(entry)
        rep_b = f", reported {fmt_b(extra['reported_sent'])}" if "reported_sent" in extra else ""
        wire = f", wire up {fmt_b(entry['wire_up'])}" if entry["wire_up"] is not None else ""
        self.log(f"    r{self.rep} v{i} push {tool.name:7} {remote.kind:3}: {m.wall:6.2f} s, remote +"
                 f"{fmt_b(entry['growth'])} (total {fmt_b(after)}){rep_b}{wire} (load {ld})")

    def clone_dir(self, name: str) -> tuple[Path, dict[str, str]]:
        """An empty place to clone into, with an empty HOME."""
        cdir = self.base / "clones" / name
        shutil.rmtree(cdir, ignore_errors=True)
        cdir.mkdir(parents=True)
        return cdir, bench_env(cdir, self.args.envs)

    def clone(self, tool: Tool, remote: Remote, kres: dict, want: dict[str, str]) -> None:
        cdir, env = self.clone_dir(f"{tool.name}-{remote.kind}")
        dest = cdir / "out"
        os.sync()
        ld = load()
        m = self.meter(remote)
        extra = tool.clone(remote, dest, env, m)
        got = Path(extra.pop("restored", dest))
        bad = mismatches(tree_hashes(got) if got.exists() else {}, want)
        kres["clone"] = {**m.figures(), "load": ld, "identical": not bad, "mismatches": bad[:10],
                         "restored_bytes": apparent_bytes(got), **extra}
        shown = extra.get("reported_received", kres["clone"]["wire_down"])
        self.log(f"    r{self.rep} clone {tool.name:7} {remote.kind:3}: {m.wall:6.2f} s, "
                 f"{fmt_b(shown) if shown is not None else 'rchar ' + fmt_b(m.rchar)}, identical {not bad}")
        shutil.rmtree(cdir, ignore_errors=True)

    def fused(self, tool: Tool, remote: Remote, kres: dict, variant: str, want: dict[str, str]) -> None:
        """A ckstore clone that checks out while the data arrives (`--checkout`, and `--depth 1` for depth1)."""
        cdir, env = self.clone_dir(f"{tool.name}-{remote.kind}-{variant}")
        dest = cdir / "out"
        os.sync()
        ld = load()
        m = self.meter(remote)
        extra = tool.fused(remote, dest, env, m, 1 if variant.startswith("depth1") else None)  # type: ignore[attr-defined]
        bad = mismatches(tree_hashes(dest) if dest.exists() else {}, want)
        kres.setdefault("fused", {})[variant] = {**m.figures(), "load": ld, "identical": not bad,
                                                 "mismatches": bad[:10], **extra}
        self.log(f"    r{self.rep} clone --checkout ckstore {remote.kind:3} {variant}: {m.wall:6.2f} s, "
                 f"{fmt_b(extra['reported_received'])}, identical {not bad}")
        shutil.rmtree(cdir, ignore_errors=True)

    def inverted(self, tool: Tool, remotes: list[Remote], res: dict, want: dict[str, str]) -> None:
        """`ckstore repack` (the newest version full frames, older ones deltas against newer), a push of the whole
        history to a new remote of each kind, and a `clone --depth 1 --checkout` from it (after every other
        clone: the repack changes the local repository)."""
        m = Meter(self.proxy)
        tool.sh(m, Ckstore.cmd("-C", tool.repo, "repack", "--json"))  # type: ignore[attr-defined]
        res["repack"] = {"wall": m.wall, "cpu": m.cpu, "maxrss": m.maxrss}
        self.log(f"    r{self.rep} repack ckstore: {m.wall:.2f} s")
        for remote in remotes:
            inv = Remote(remote.kind, "ckstore-inv", self.base, remote.prefix + "-inv", remote.s3, self.proxy)
            inv.name = f"{remote.kind}-inv"
            tool.sh(None, Ckstore.cmd("-C", tool.repo, "remote", "add", inv.name,  # type: ignore[attr-defined]
                                      *tool.url(inv)))  # type: ignore[attr-defined]
            mp = self.meter(inv)
            tool.sh(mp, Ckstore.cmd("-C", tool.repo, "push", inv.name, "--json"))  # type: ignore[attr-defined]
            kres = res["kinds"][remote.kind]
            kres["inverted"] = {"push_wall": mp.wall, "stored": inv.stored()[0]}
            self.fused(tool, inv, kres, "depth1-inverted", want)
            kres["fused"]["depth1-inverted"]["push_wall"] = mp.wall
            kres["fused"]["depth1-inverted"]["stored"] = kres["inverted"]["stored"]
            inv.cleanup()

    def partial(self, tool: Tool, remote: Remote, kres: dict, g: int, glob: str, want: dict[str, str]) -> None:
        """A ckstore partial clone (--filter tensors=GLOB), then a checkout that fetches the rest on demand."""
        cdir, env = self.clone_dir(f"{tool.name}-{remote.kind}-partial{g}")
        dest = cdir / "out"
        os.sync()
        m = self.meter(remote)
        extra = tool.clone(remote, dest, env, m, filt=f"tensors={glob}")  # type: ignore[call-arg]
        bad = mismatches(tree_hashes(dest) if dest.exists() else {}, want)
        fig = m.figures()
        ck = extra.pop("checkout")
        kres.setdefault("partial", {})[glob] = {
            "filter": f"tensors={glob}", "clone_wall": extra["clone_wall"],
            "reported_received": extra["reported_received"],
            "clone_wire_down": None if fig["wire_down"] is None else fig["wire_down"] - ck["wire_down"],
            "clone_rchar": fig["rchar"] - ck["rchar"], "local_store": extra["local_store"],
            "local_store_after_clone": extra["local_store_after_clone"],
            "checkout_wall": extra["checkout_wall"], "checkout_wire_down": ck["wire_down"],
            "checkout_rchar": ck["rchar"], "wall": fig["wall"], "wire_down": fig["wire_down"],
            "checkout_identical": not bad, "mismatches": bad[:10]}
        self.log(f"    r{self.rep} partial clone ckstore {remote.kind:3} tensors={glob}: {extra['clone_wall']:.2f} s, "
                 f"{fmt_b(extra['reported_received'])}; then checkout {extra['checkout_wall']:.2f} s"
                 + (f" ({fmt_b(ck['wire_down'])} on the wire)" if ck["wire_down"] is not None else "")
                 + f", identical {not bad}")
        shutil.rmtree(cdir, ignore_errors=True)

    def measure(self, versions: list[Path], want: dict[str, str]) -> dict:
        """Every version recorded and pushed to each remote, interleaved; then the clones of the newest version."""
        for i, src in enumerate(versions):
            for tool, remotes, res in self.tools:
                guarded(res, tool.name, f"record v{i}", lambda: self.record(tool, res, i, src), self.log)
                for remote in remotes:
                    if res.get("error"):
                        break
                    kres = res["kinds"][remote.kind]
                    guarded(res, tool.name, f"push v{i} to {remote.kind}", lambda: self.push(tool, remote, kres, i),
                            self.log)
        for kind in self.args.kinds:
            for tool, remotes, res in self.tools:
                remote = next(r for r in remotes if r.kind == kind)
                kres = res["kinds"][kind]
                guarded(res, tool.name, f"clone from {kind}", lambda: self.clone(tool, remote, kres, want), self.log)
                for variant in self.args.fused if tool.name == "ckstore" else []:
                    guarded(res, tool.name, f"clone --checkout ({variant}) from {kind}",
                            lambda: self.fused(tool, remote, kres, variant, want), self.log)
                for g, glob in enumerate(self.args.partial if tool.name == "ckstore" else []):
                    guarded(res, tool.name, f"partial clone tensors={glob} from {kind}",
                            lambda: self.partial(tool, remote, kres, g, glob, want), self.log)
        if self.args.invert_remote:
            for tool, remotes, res in self.tools:
                if tool.name == "ckstore":
                    guarded(res, tool.name, "repack + push to a new remote",
                            lambda: self.inverted(tool, remotes, res, want), self.log)
        for tool, remotes, res in self.tools:
            for r in remotes:
                try:
                    r.cleanup()
                except Exception as e:  # noqa: BLE001 - cleanup only
                    self.log(f"    cleanup of {r.kind} remote of {tool.name} failed: {e}")
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        return self.out


def measure_series(series_dir: Path, args: Any, s3: S3Server | None, proxy: CountingProxy | None, log: Log) -> dict:
    info = json.loads((series_dir / "series.json").read_text())
    versions = [series_dir / v["name"] for v in info["versions"]]
    hashes = [tree_hashes(v) for v in versions]  # also warms the page cache with the inputs, the same for all tools
    logical = [apparent_bytes(v) for v in versions]
    log(f"{series_dir.name}: {len(versions)} versions, {fmt_b(sum(logical))} logical")
    reps = []
    for rep in range(args.repeat):
        log(f"  repeat {rep + 1}/{args.repeat}")
        reps.append(Rep(series_dir.name, rep, args, s3, proxy, log).measure(versions, hashes[-1]))
    return {"series": series_dir.name, "path": str(series_dir), "scenario": info["scenario"], "dtype": info["dtype"],
            "size": info.get("size"), "versions": [{"name": v["name"], "description": v["description"],
                                                    "logical": b} for v, b in zip(info["versions"], logical)],
            "newest_sha256": hashes[-1], "reps": reps}


def environment(args: Any, s3: S3Server | None) -> dict:
    """What the run ran on and with: machine, tool versions, S3 server, the command line."""
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
        "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "load_at_start": os.getloadavg(),
        "ckstore_snapshot": Ckstore.snapshot_hash, "dvc": tool_version([str(args.dvc_env / "bin" / "dvc"), "--version"])
        + f" (dvc-s3 {pip_version(args.dvc_env / 'bin' / 'python', 'dvc-s3')})",
        "restic": tool_version(["restic", "version"]),
        "s3_server": s3.version if s3 else "-", "s3_kind": s3.kind if s3 else "-",
        "boto3": __import__("boto3").__version__, "proxy": not args.no_proxy,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
