"""Revision syntax: a base name with `~N` (N first parents back) and `^N` (the N-th parent) suffixes; the base may
end in `@{N}` (an alias's N-th previous holder), `@vN` (a branch's N-th commit, counting from its root, as MLflow
numbers versions) or `@latest` (a branch's newest)."""

from __future__ import annotations

import re
from typing import Callable

from ..errors import UnknownRevision

_SUFFIX = re.compile(r"(~\d*|\^\d*)")
_AT = re.compile(r"^(.+)@(?:\{(\d+)\}|v(\d+)|(latest))$")

Parents = Callable[[bytes], tuple[bytes, ...]]


def parse(rev: str) -> tuple[str, list[tuple[str, int]]]:
    """Split "main~2^" into ("main", [("~", 2), ("^", 1)])."""
    m = re.search(r"([~^]\d*)+$", rev)
    base = rev[: m.start()] if m else rev
    ops = []
    if m:
        for tok in _SUFFIX.findall(m.group(0)):
            ops.append((tok[0], int(tok[1:]) if len(tok) > 1 else 1))
    if not base:
        raise UnknownRevision(f"revision {rev!r} has no base name")
    return base, ops


def apply(oid: bytes, ops: list[tuple[str, int]], parents: Parents, rev: str) -> bytes:
    """Follow `~N` (N first parents back) and `^N` (the N-th parent) from `oid`."""
    for op, n in ops:
        if op == "~":
            for _ in range(n):
                ps = parents(oid)
                if not ps:
                    raise UnknownRevision(f"{rev}: history is shorter than that")
                oid = ps[0]
        elif n:
            ps = parents(oid)
            if len(ps) < n:
                raise UnknownRevision(f"{rev}: commit has no parent number {n}")
            oid = ps[n - 1]
    return oid


def split_at(base: str) -> tuple[str, str | None, int]:
    """("champion", "history", 1) for "champion@{1}", ("main", "version", 12) for "main@v12", ("main", "latest", 0)
    for "main@latest", (base, None, 0) for a plain name."""
    m = _AT.match(base)
    if not m:
        return base, None, 0
    name, back, version, latest = m.groups()
    if back is not None:
        return name, "history", int(back)
    if version is not None:
        if int(version) < 1:
            raise UnknownRevision(f"{base}: versions count from v1")
        return name, "version", int(version)
    return name, "latest", 0
