"""The files of a series.py --out directory: series/<name>.json, meta.json, help.json and results.json."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from . import ROOT
from .report import render
from .summary import losses, tool_summary
from .targets import targets
from .tools import Ckstore
from .tools.ckstore import merge_help


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def load_series(out: Path) -> dict[str, dict]:
    """Every series measured into this --out, by this run or an earlier one."""
    all_series = {}
    for p in sorted((out / "series").glob("*.json")):
        s = json.loads(p.read_text())
        all_series[s["series"]] = s
    return all_series


def build_report(out: Path, md: Path, meta: dict, copy: Path | None = None) -> dict:
    """out/results.json (every figure) and the markdown page md from out/series; copy: a second results.json."""
    all_series = load_series(out)
    help_t = meta.get("help") or (json.loads((out / "help.json").read_text()) if (out / "help.json").exists() else None)
    results = {**meta, "series": all_series, "help": help_t, "json_path": rel((copy or out / "results.json").resolve()),
               "out_dir": rel(out), "targets": targets(all_series, help_t), "losses": losses(all_series),
               "summary": {n: {t: tool_summary(s, t) for t in s["tools"]} for n, s in all_series.items()}}
    text = json.dumps(results, indent=1, default=str)
    (out / "results.json").write_text(text)
    if copy:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(render(results))
    return results


def start_meta(out: Path, cmd_line: str, tools: list[str], scenarios: list[str], tool_info: dict,
               help_t: dict | None, repeat: int, resume: bool) -> dict:
    """meta.json of this run; a run adding tools or series to an earlier one in the same --out keeps its identity."""
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    meta = {"command": cmd_line, "started": old.get("started") if resume else None,
            "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.platform()}, "
                       f"Python {platform.python_version()}",
            "ckstore_snapshot": Ckstore.snapshot_hash, "repeat": repeat, "tools": tool_info, "help": help_t}
    meta["started"] = meta["started"] or time.strftime("%Y-%m-%d %H:%M:%S")
    measured = {f.stem.rpartition("-")[0] for f in (out / "series").glob("*.json")}
    partial_run = set(tools) < set(old.get("tools", {})) or set(scenarios) < measured
    if old and (resume or partial_run):
        meta.update(command=old["command"], started=old["started"], also_ran=old.get("also_ran", []) + [cmd_line],
                    tools={**old["tools"], **tool_info})
        if "ckstore" not in tools:
            meta.update(help=old.get("help"), ckstore_snapshot=old.get("ckstore_snapshot"))
        elif help_t and old.get("help") and old.get("ckstore_snapshot") == Ckstore.snapshot_hash:
            # --help timings of runs of the same code add up; another snapshot's timings are replaced
            meta["help"] = merge_help(old["help"], help_t)
    return meta


def already_measured(target: Path, tools: list[str]) -> bool:
    """--resume: the series file exists, measured with this ckstore snapshot and at least these tools."""
    if not target.exists():
        return False
    prev = json.loads(target.read_text())
    return prev.get("ckstore_snapshot") == Ckstore.snapshot_hash and set(prev["tools"]) >= set(tools)


def save_series(target: Path, res: dict, tools: list[str]) -> None:
    """Write one series' results, keeping the other tools' figures of an earlier run on the same inputs."""
    if target.exists():
        prev = json.loads(target.read_text())
        if prev.get("input_sha256") == res["input_sha256"]:
            res["tools"] = {**{t: r for t, r in prev["tools"].items() if t not in res["tools"]}, **res["tools"]}
            if "ckstore" not in tools:
                res["ckstore_snapshot"] = prev.get("ckstore_snapshot")
    target.write_text(json.dumps(res, indent=1))


def finish_meta(out: Path, meta: dict) -> None:
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
