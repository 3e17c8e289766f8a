"""Promotion gates: `LEFT OP RIGHT` comparisons of a candidate commit's values with numbers or with the values of
the alias's current holder, e.g. `metrics.val_loss <= current.metrics.val_loss` or `notes.eval.acc >= 0.7`.

A side is a number, or a dotted path into a commit's record (`metrics.NAME`, `notes.NS.KEY`, `params.NAME`, or a
bare metric name); `current.` reads the current holder instead of the candidate. Pure: records come from the
caller.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

_GATE = re.compile(r"^\s*(\S+)\s*(<=|>=|==|!=|<|>)\s*(\S+)\s*$")
_OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
        ">": operator.gt}
_PATH = re.compile(r"^(current\.)?[A-Za-z_][\w\-/]*(\.[\w\-/]+)*$")


@dataclass(frozen=True)
class Gate:
    """A parsed gate."""

    text: str
    left: str
    op: str
    right: str


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict and the values it compared."""

    gate: str
    passed: bool
    detail: str


def parse_gate(text: str) -> Gate:
    """A gate from its text; UsageError naming what is wrong."""
    m = _GATE.match(text)
    if not m:
        raise UsageError(f"cannot read gate {text!r}", hint="write LEFT OP RIGHT, e.g. "
                         "'metrics.val_loss <= current.metrics.val_loss' or 'notes.eval.acc >= 0.7'")
    left, op, right = m.groups()
    for side in (left, right):
        if _number(side) is None and not _PATH.match(side):
            raise UsageError(f"gate {text!r}: {side!r} is neither a number nor a name like metrics.val_loss")
    return Gate(text, left, op, right)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def lookup(record: dict, path: str) -> Any:
    """The value at a dotted path of a commit record; a bare name is a metric."""
    parts = path.split(".") if "." in path else ["metrics", path]
    value: Any = record if parts[0] in record else record.get("meta") or {}  # data, seeds, extra are under meta
    for part in parts:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None and "." in path:
        value = (record.get("metrics") or {}).get(path)  # a metric whose name has a dot
    return value


def evaluate(gate: Gate, candidate: dict, current: dict | None) -> GateResult:
    """Compare; a side that names a value the commit lacks fails the gate, naming it (an unknown metric);
    `current.` with no current holder passes (nothing to regress against)."""
    sides = []
    for side in (gate.left, gate.right):
        number = _number(side)
        if number is not None:
            sides.append((side, number))
            continue
        if side.startswith("current."):
            if current is None:
                return GateResult(gate.text, True, f"no current holder: {side} not compared")
            value, whose = lookup(current, side[len("current."):]), "the current holder"
        else:
            value, whose = lookup(candidate, side), "the candidate"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return GateResult(gate.text, False, f"{whose} has no number for {side.removeprefix('current.')}")
        sides.append((side, float(value)))
    (ln, lv), (rn, rv) = sides
    passed = bool(_OPS[gate.op](lv, rv))
    return GateResult(gate.text, passed, f"{ln}={lv:.6g} {gate.op} {rn}={rv:.6g}: {'pass' if passed else 'FAIL'}")
