"""Pure history algorithms over a parents function: walks in time order, first-parent lines, ancestry, merge bases,
fast-forwards."""

from __future__ import annotations

import heapq
from typing import Callable, Iterator

Parents = Callable[[bytes], tuple[bytes, ...]]


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


def first_parents(tips: list[bytes], parents: Parents, n: int) -> list[bytes]:
    """The newest `n` commits of each tip following first parents (a merge's other side is older history), each
    once, tips first."""
    out: dict[bytes, None] = {}
    for tip in tips:
        oid: bytes | None = tip
        for _ in range(n):
            if oid is None:
                break
            out[oid] = None
            ps = parents(oid)
            oid = ps[0] if ps else None
    return list(out)


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


def ff_status(old: bytes | None, new: bytes, parents: Parents) -> str:
    """How moving a ref from `old` to `new` relates the two: "same", "create", "fast-forward" (new contains old),
    "behind" (old contains new) or "diverged"."""
    if old is None:
        return "create"
    if old == new:
        return "same"
    if is_ancestor(old, new, parents):
        return "fast-forward"
    if is_ancestor(new, old, parents):
        return "behind"
    return "diverged"
