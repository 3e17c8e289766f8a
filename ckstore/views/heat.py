"""The per-layer change map of a diff: tensors grouped by the structure of their names (`blocks.3.attn.q.weight`
is row 3, column `attn.q.weight` of group `blocks`), each cell the relative change ‖Δ‖/‖old‖ and the fraction
of elements changed."""

from __future__ import annotations

import math
import re
from typing import Any

_INDEX = re.compile(r"^\d+$")


def split_name(name: str) -> tuple[str, str, str] | None:
    """(group, index, rest) at the first numeric part of a dotted name, or None when it has none or nothing
    follows it (`layers.0.weight` -> ("layers", "0", "weight"))."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if _INDEX.match(p) and 0 < i < len(parts) - 1:
            return ".".join(parts[:i]), p, ".".join(parts[i + 1:])
    return None


def cells(diff: dict) -> list[dict[str, Any]]:
    """Every tensor of a diff (as `Diff.to_dict()` gives it) as a cell: name, status, rel_l2, frac_changed."""
    t = diff["tensors"]
    out = [{"name": n, "status": "unchanged", "rel_l2": 0.0, "frac_changed": 0.0} for n in t["unchanged"]]
    for c in t["changed"]:
        if c.get("comparable", True) and "rel_l2" in c:
            out.append({"name": c["name"], "status": "changed", "rel_l2": c["rel_l2"],
                        "frac_changed": c.get("frac_changed")})
        else:
            out.append({"name": c["name"], "status": "reshaped", "rel_l2": None, "frac_changed": 1.0})
    out += [{"name": n, "status": "added", "rel_l2": None, "frac_changed": None} for n in t["added"]]
    out += [{"name": n, "status": "removed", "rel_l2": None, "frac_changed": None} for n in t["removed"]]
    return sorted(out, key=lambda c: c["name"])


def heat(diff: dict) -> dict[str, Any]:
    """{"groups": [{"name", "rows": [index...], "cols": [suffix...], "cells": [[cell | None]]}], "other": [cell],
    "max_rel_l2"}: groups of numbered layers as matrices (rows in numeric order), the rest as a list."""
    groups: dict[str, dict[str, dict[str, dict]]] = {}
    other = []
    for cell in cells(diff):
        where = split_name(cell["name"])
        if where is None:
            other.append(cell)
            continue
        group, index, rest = where
        groups.setdefault(group, {}).setdefault(index, {})[rest] = cell
    out = []
    for name, rows in sorted(groups.items()):
        indices = sorted(rows, key=int)
        cols = sorted({c for r in rows.values() for c in r})
        out.append({"name": name, "rows": indices, "cols": cols,
                    "cells": [[rows[i].get(c) for c in cols] for i in indices]})
    # a tensor whose old norm is 0 or NaN has an infinite or NaN change: it must not become the scale's maximum
    finite = [c["rel_l2"] for c in cells(diff) if isinstance(c["rel_l2"], float) and math.isfinite(c["rel_l2"])]
    return {"groups": out, "other": other, "max_rel_l2": max(finite, default=0.0)}


def changed_cells(view: dict) -> list[str]:
    """Names of the tensors the map shows as changed (what a reader should find highlighted)."""
    names = [c["name"] for g in view["groups"] for r in g["cells"] for c in r if c and c["status"] != "unchanged"]
    return sorted(names + [c["name"] for c in view["other"] if c["status"] != "unchanged"])
