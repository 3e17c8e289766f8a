"""Metric curves: one series per branch (or one for the whole history) of a metric or a note field, over step,
time or commit order, each point naming its commit so a click can open it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..api import similar
from ..errors import UsageError
from ..results import metric_value

if TYPE_CHECKING:
    from ..api import Repo
    from ..results import CommitInfo

AXES = ("step", "time", "index")


def names(repo: Repo) -> dict[str, list[str]]:
    """What can be plotted: {"metrics": [...], "notes": ["notes.NS.KEY", ...], "params": [...]} over all history,
    numeric values only."""
    metrics: set[str] = set()
    notes: set[str] = set()
    params: set[str] = set()
    for info in repo.log(all=True):
        metrics.update(k for k, v in info.metrics.items() if _number(v) is not None)
        params.update(f"params.{k}" for k, v in _flat(info.params) if _number(v) is not None)
        for ns, data in info.notes.items():
            notes.update(f"notes.{ns}.{k}" for k, v in _flat(data) if _number(v) is not None)
    return {"metrics": sorted(metrics), "notes": sorted(notes), "params": sorted(params)}


def series(repo: Repo, name: str, *, by: str = "branch", x: str = "step") -> dict[str, Any]:
    """{"name", "x", "series": [{"label", "points": [{"x", "y", "id", "message", "step", "time"}]}]}.

    `by="branch"`: one series per branch along its first-parent lineage, oldest first (a fork's line starts with
    the history it shares, as the run it resumed from); `by="none"`: every commit of every ref in one series.
    Commits without a numeric value for `name` are left out; x="step" also leaves out commits without a step."""
    if x not in AXES:
        raise UsageError(f"unknown x axis {x!r}", hint=f"use one of {', '.join(AXES)}")
    if by == "branch":
        groups = [(b.name, list(reversed(repo.lineage(b.name)))) for b in repo.branches()]
    elif by == "none":
        groups = [("all", list(reversed(repo.log(all=True))))]
    else:
        raise UsageError(f"unknown grouping {by!r}", hint="use --by branch or --by none")
    out = [{"label": label, "points": _points(chain, name, x)} for label, chain in groups]
    return {"name": name, "x": x, "by": by, "series": [s for s in out if s["points"]]}


def require_points(repo: Repo, view: dict[str, Any]) -> None:
    """Raise UsageError when a `series` view has no point: for a name no commit has (numeric), naming the known
    ones that look like it and what can be plotted; for a known one, saying which choice left every point out."""
    if view["series"]:
        return
    name, x, by = view["name"], view["x"], view["by"]
    known = names(repo)
    plottable = known["metrics"] + known["notes"] + known["params"]
    spelled = set(plottable) | {f"metrics.{m}" for m in known["metrics"]}  # "metrics.loss" names "loss" too
    if name not in spelled:
        like = similar(name, spelled)
        shown = ", ".join(plottable[:12]) + (", ..." if len(plottable) > 12 else "")
        raise UsageError(f"no commit has a numeric {name!r}" + (f"; did you mean {', '.join(like)}?" if like else ""),
                         hint=f"plottable: {shown}" if plottable else "no commit has a metric or numeric note yet")
    if x != "index" and series(repo, name, by=by, x="index")["series"]:
        raise UsageError(f"no commit with {name!r} has a {x}", hint="plot it in commit order: --x index")
    raise UsageError(f"no branch's first-parent history has {name!r}", hint="--by none plots every commit")


def _points(chain: list[CommitInfo], name: str, x: str) -> list[dict[str, Any]]:
    points = []
    for i, info in enumerate(chain):
        y = _number(metric_value(info, name))
        xv = {"step": info.step, "time": info.time, "index": i}[x]
        if y is None or xv is None:
            continue
        points.append({"x": xv, "y": y, "id": info.id, "message": info.message.split("\n", 1)[0],
                       "step": info.step, "time": info.time})
    return points


def _number(v: Any) -> float | None:
    """A finite number as float; None for anything else (booleans, strings, NaN)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(d, dict):
        return [(prefix, d)] if prefix else []
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out
