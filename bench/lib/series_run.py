"""One series measured for every tool: commits, checkouts (cold and hot), a no-op re-commit, all interleaved."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from . import MIB
from .envs import tool_env
from .measure import Step, ToolError, apparent_bytes, evict, files_under, load, mismatches, run, tree_hashes
from .safetensors_io import largest_tensor, subset
from .summary import tool_rank
from .tools import TOOLS, Ckstore, Ctx, Tool
from .tools import zipnn

SLOW = 5.0  # seconds: a hot checkout slower than this is not repeated (series.py --slow; size L: 120)
Log = Callable[[str], None]
# what each tool stores, as a share of the logical bytes of a whole series (rough upper bounds from the S and M
# runs), and whether it also keeps a working copy of one version; ckstore's cache is counted in its share
STORE_SHARE = {"ckstore": 0.6, "ckstore-repack": 0.6, "ckstore-encrypted": 0.6, "restic": 0.8, "restic-max": 0.8, "borg": 0.8, "dvc": 1.0, "git-lfs": 1.0,
               "git-theta": 1.0, "zstd": 1.0, "zipnn": 1.0, "copy": 1.0}
WORKING_COPY = ("dvc", "git-lfs", "git-theta")


def disk_check(series_dir: Path, tools: list[str], work: Path) -> str | None:
    """None when the free space under work looks enough for every tool's store of the series (all are kept
    until the series ends), one working copy per tool that keeps one and one restored version; else why not."""
    versions = [series_dir / v["name"] for v in json.loads((series_dir / "series.json").read_text())["versions"]]
    sizes = [apparent_bytes(v) for v in versions]
    need = (sum(STORE_SHARE.get(t, 1.0) for t in tools) * sum(sizes)
            + (sum(t in WORKING_COPY for t in tools) + 1) * max(sizes) + (1 << 30))
    probe = work
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return None if need <= free else f"needs about {need / 1e9:.1f} GB under {work} for {', '.join(tools)}, " \
                                     f"{free / 1e9:.1f} GB free"


def adapter_reference(series_dir: Path, versions: list[Path], dtype: str, envs: Path, work: Path) -> dict | None:
    """The LoRA adapter of the first LoRA version, alone, and what zstd -3 and ZipNN make of it."""
    name = series_dir.name.rsplit("-", 1)[0]
    if name == "Cfile":
        i, blob = 1, (versions[1] / "adapter_model.safetensors").read_bytes()
    elif name in ("C", "mix", "mixsharded"):
        i = 1 if name == "C" else 3
        blob = subset(sorted(versions[i].glob("*.safetensors")), lambda k: ".lora_" in k)
    else:
        return None
    import zstandard
    ref = {"version": i, "raw": len(blob), "zstd3": len(zstandard.ZstdCompressor(level=3).compress(blob))}
    if not zipnn.Zipnn.unavailable(envs):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            (Path(tmp) / "in").mkdir()
            (Path(tmp) / "in" / "adapter.safetensors").write_bytes(blob)
            try:
                run(zipnn.compress_cmd(envs, Path(tmp) / "in", Path(tmp) / "out", dtype))
                ref["zipnn"] = apparent_bytes(Path(tmp) / "out")
            except ToolError:
                pass
    ref["compressed"] = min(v for k, v in ref.items() if k in ("zstd3", "zipnn"))
    return ref


class Measured:
    """One tool's figures on one series, filled in step by step; a failure stops only this tool."""

    def __init__(self, tool: Tool, slow: float = SLOW) -> None:
        self.tool = tool
        self.slow = slow
        self.res: dict[str, Any] = {"available": True, "commits": [], "checkouts": [], "identical": True,
                                    "mismatches": []}
        self.failed = False

    def attempt(self, what: str, fn: Callable[[], None], log: Log) -> None:
        if self.failed:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one tool failing must not stop the others
            self.failed = True
            self.res = {"available": True, "error": f"{what}: {type(e).__name__}: {e}"[-2500:]}
            log(f"    {self.tool.name} FAILED at {what}: {str(e)[-300:]}")

    def commit(self, i: int, src: Path, log: Log) -> None:
        os.sync()
        step, ld = Step(), load()
        self.tool.commit(i, src, step)
        stored, aux = self.tool.stored()
        self.res["commits"].append({"version": i, **asdict(step), "stored": stored, "aux": aux, "load": ld})
        log(f"    v{i} commit {self.tool.name}: {step.wall:.2f} s wall, {step.cpu:.2f} s cpu, "
            f"{step.maxrss / MIB:.0f} MiB, stored {stored / MIB:.1f} MiB (load {ld})")

    def checkout(self, i: int, k: int, kind: str, want: dict[str, str]) -> None:
        prev = [c for c in self.res["checkouts"] if c["version"] == i]
        if k >= 2 and prev and prev[-1]["wall"] > self.slow:
            return  # repeating is not cheap for this tool: one hot run is the figure
        root = self.tool.ctx.dir / "restore"
        shutil.rmtree(root, ignore_errors=True)
        dest = root / f"v{i}-{k}"
        dest.mkdir(parents=True)
        if kind == "cold":
            evict(self.tool.cold_paths())
        else:
            os.sync()
        step, ld = Step(), load()
        got = self.tool.checkout(i, dest, step)
        entry = {"version": i, "kind": kind, **asdict(step), "load": ld}
        # every restore is checked, repeats included (outside the timed step)
        restored = {p: h for p, h in tree_hashes(got).items() if p.split("/")[0] not in self.tool.restore_ignore}
        bad = mismatches(restored, want)
        entry["identical"] = not bad
        if bad:
            self.res["identical"] = False
            self.res["mismatches"].append({"version": i, "paths": bad[:20]})
        self.res["checkouts"].append(entry)
        shutil.rmtree(root, ignore_errors=True)

    def maintain(self, log: Log) -> None:
        """The tool's upkeep after the last commit (ckstore-repack: `repack`), if it has one."""
        os.sync()
        step, ld = Step(), load()
        if self.tool.maintain(step):
            stored, aux = self.tool.stored()
            self.res["maintain"] = {**asdict(step), "stored": stored, "aux": aux, "load": ld}
            log(f"    upkeep {self.tool.name}: {step.wall:.2f} s wall, {step.maxrss / MIB:.0f} MiB, "
                f"stored {stored / MIB:.1f} MiB")

    def recommit(self, src: Path, log: Log) -> None:
        """A no-op re-commit: the newest version once more, unchanged (same directory where possible)."""
        before = self.tool.stored()[0]
        os.sync()
        step, ld = Step(), load()
        self.tool.commit(-1, self.tool.recommit_src(src), step)
        self.res["recommit"] = {**asdict(step), "added": self.tool.stored()[0] - before, "load": ld}
        log(f"    re-commit {self.tool.name}: {step.wall:.2f} s, +{self.res['recommit']['added']} B")

    def log_checkouts(self, i: int, log: Log) -> None:
        if not self.failed:
            hot = [c["wall"] for c in self.res["checkouts"] if c["version"] == i and c["kind"] == "hot"]
            cold = [c["wall"] for c in self.res["checkouts"] if c["version"] == i and c["kind"] == "cold"]
            log(f"    v{i} checkout {self.tool.name}: hot {statistics.median(hot):.2f} s"
                + (f", cold {cold[0]:.2f} s" if cold else ""))


def measure_all(tools: list[Tool], versions: list[Path], hashes: list[dict[str, str]], repeat: int,
                log: Log, slow: float = SLOW) -> dict[str, dict]:
    """Every tool, interleaved: version by version, checkout by checkout, so a load change on the shared machine
    falls on all tools alike instead of on whichever ran at that moment."""
    ms = [Measured(t, slow) for t in tools]
    for m in ms:
        def init(m: Measured = m) -> None:
            m.tool.init()
            m.res["init_stored"] = m.tool.stored()[0]
        m.attempt("init", init, log)
    for i, src in enumerate(versions):
        for m in ms:
            m.attempt(f"commit v{i}", lambda m=m: m.commit(i, src, log), log)
    for m in ms:
        m.attempt("upkeep", lambda m=m: m.maintain(log), log)
    last = len(versions) - 1
    for i in range(len(versions)):
        kinds = ["cold"] + ["hot"] * repeat if i in (0, last) else ["hot"]
        for k, kind in enumerate(kinds):
            for m in ms:
                m.attempt(f"checkout v{i} ({kind})", lambda m=m: m.checkout(i, k, kind, hashes[i]), log)
        for m in ms:
            m.log_checkouts(i, log)
    for m in ms:
        m.attempt("re-commit", lambda m=m: m.recommit(versions[-1], log), log)
    return {m.tool.name: m.res for m in ms}


def measure_series(name: str, series_dir: Path, tools: list[str], args: Any, log: Log) -> dict:
    """The figures of every tool on the series in series_dir (args: envs, work, repeat, keep, theta_scenarios)."""
    info = json.loads((series_dir / "series.json").read_text())
    versions = [series_dir / v["name"] for v in info["versions"]]
    hashes = [tree_hashes(v) for v in versions]  # also warms the page cache with the inputs, the same for all tools
    logical = [apparent_bytes(v) for v in versions]
    largest = max((largest_tensor(p) for v in versions for p in files_under(v)), default=0)
    out: dict[str, Any] = {
        "series": name, "scenario": info["scenario"], "dtype": info["dtype"], "size": info.get("size", "-"),
        "versions": [{"name": v["name"], "description": v["description"], "logical": b, "files": v["files"]}
                     for v, b in zip(info["versions"], logical)],
        "logical_total": sum(logical), "largest_tensor": largest,
        "input_sha256": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16],
        "ckstore_snapshot": Ckstore.snapshot_hash, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "repeat": args.repeat, "tools": {},
    }
    out["adapter"] = adapter_reference(series_dir, versions, info["dtype"], args.envs, args.work)
    runnable: list[Tool] = []
    for t in tools:
        cls = TOOLS[t]
        reason = cls.unavailable(args.envs)
        if t == "git-theta" and not reason and info["scenario"] not in args.theta_scenarios:
            reason = f"optional; run only on {','.join(args.theta_scenarios)} (--theta-scenarios)"
        if reason:
            out["tools"][t] = {"available": False, "reason": reason}
            continue
        d = args.work / name / t
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        runnable.append(cls(Ctx(d, tool_env(d, args.envs), info["dtype"], args.envs)))
    log(f"  {name}: {', '.join(t.name for t in runnable)} interleaved")
    try:
        out["tools"].update(measure_all(runnable, versions, hashes, args.repeat, log,
                                            getattr(args, "slow", SLOW)))
    finally:
        if not args.keep:
            for t in runnable:
                shutil.rmtree(t.ctx.dir, ignore_errors=True)
    out["tools"] = dict(sorted(out["tools"].items(), key=lambda x: tool_rank(x[0])))
    return out
