"""Pure history algorithms: revision syntax, walks in time order, ancestry and merge bases."""

from __future__ import annotations

import heapq
import re
from typing import Callable, Iterator

from .errors import UnknownRevision

_SUFFIX = re.compile(r"(~\d*|\^\d*)")

Parents = Callable[[bytes], tuple[bytes, ...]]


def parse_rev(rev: str) -> tuple[str, list[tuple[str, int]]]:
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


def apply_ops(oid: bytes, ops: list[tuple[str, int]], parents: Parents, rev: str) -> bytes:
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


def walk(starts: list[bytes], parents: Parents, time_of: Callable[[bytes], float]) -> Iterator[bytes]:
    """Every commit reachable from `starts`, newest first (ties broken by id), each once."""
    seen = set(starts)
    heap = [(-time_of(s), s) for s in starts]
    heapq.heapify(heap)
    while heap:
        _, oid = heapq.heappop(heap)
        yield oid
        for p in parents(oid):
            if p not in seen:
                seen.add(p)
                heapq.heappush(heap, (-time_of(p), p))


def ancestors(start: bytes, parents: Parents) -> set[bytes]:
    """`start` and everything reachable from it."""
    seen, stack = {start}, [start]
    while stack:
        for p in parents(stack.pop()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def is_ancestor(a: bytes, b: bytes, parents: Parents) -> bool:
    """Is `a` reachable from `b` (a fast-forward from a to b)?"""
    return a in ancestors(b, parents)


def merge_base(a: bytes, b: bytes, parents: Parents, time_of: Callable[[bytes], float]) -> bytes | None:
    """The newest common ancestor of a and b."""
    mine = ancestors(a, parents)
    return next((c for c in walk([b], parents, time_of) if c in mine), None)
