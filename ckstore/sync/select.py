"""Which commits and chunks a sync moves: commits parents first, the chunks of a manifest (or of the tensors a
partial clone's filter selects), a partial clone's depth, and that filter parsed from the command line."""

from __future__ import annotations

import fnmatch
from typing import Callable, Iterator

from ..errors import UsageError
from ..model.objects import Manifest, TensorEntry


def topo_order(commits: set[bytes], parents: Callable[[bytes], tuple[bytes, ...]]) -> list[bytes]:
    """`commits` ordered parents first (within the set)."""
    out, done = [], set()
    for start in sorted(commits):
        stack = [(start, False)]
        while stack:
            oid, expanded = stack.pop()
            if oid in done:
                continue
            if expanded:
                done.add(oid)
                out.append(oid)
                continue
            stack.append((oid, True))
            stack.extend((p, False) for p in parents(oid) if p in commits and p not in done)
    return out


def _tensor_matches(t: TensorEntry, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(t.name, g) or fnmatch.fnmatchcase(f"{t.file}:{t.name}", g) for g in globs)


def _chunks(manifest: Manifest, partial: dict | None) -> Iterator[bytes]:
    if partial is not None and "tensors" in partial:
        return (c for t in manifest.tensors if _tensor_matches(t, partial["tensors"]) for c in t.chunks)
    return manifest.file_chunks(manifest.files)


def manifest_chunks(manifest: Manifest, partial: dict | None = None) -> list[bytes]:
    """The chunks of a manifest in file order, or only those of the tensors a partial filter selects."""
    return list(dict.fromkeys(_chunks(manifest, partial)))


def chunks_in_order(manifests: list[Manifest], partial: dict | None = None) -> list[bytes]:
    """The chunks of `manifests` (oldest first), ordered by their position in the first manifest using each, then
    by age: the same part of the model in every version together, so a delta frame comes just after its base.
    Push packs frames in this order and fetch reads them in it (see `chunks`): each delta's base is verified
    moments before, and is still in memory."""
    pos: dict[bytes, tuple[int, int]] = {}
    for age, m in enumerate(manifests):
        # positions count repeats: a version whose zero-filled chunks repeat stays aligned with the next
        for i, c in enumerate(_chunks(m, partial)):
            pos.setdefault(c, (i, age))
    return sorted(pos, key=pos.__getitem__)


def depth_of(partial: dict | None) -> int | None:
    """How many commits of each branch (first parents from its tip) a partial clone fetches the chunks of; None:
    every commit's (a full repository). A filter without a depth means the tips only."""
    return None if partial is None else partial.get("depth", 1)


def parse_filter(filters: str | list[str] | None, metadata_only: bool = False,
                 depth: int | None = None) -> dict | None:
    """--filter 'tensors=GLOB[,GLOB...]' (repeatable), --metadata-only and --depth N -> the `partial` setting of a
    remote. A filter and a depth intersect: the selected tensors of the newest N commits."""
    if isinstance(filters, str):
        filters = [filters]
    if depth is not None and (type(depth) is not int or depth < 1):
        raise UsageError(f"--depth must be a whole number of commits, 1 or more, not {depth!r}",
                         hint="--depth 1 fetches the data of each branch's newest commit only")
    if metadata_only:
        if filters:
            raise UsageError("--metadata-only and --filter exclude each other")
        if depth is not None:
            # a metadata-only clone fetches no commit's data, so a depth would say nothing
            raise UsageError("--metadata-only and --depth exclude each other",
                             hint="--metadata-only fetches no data at all; --depth N the data of the newest N commits")
        return {"tensors": []}
    if not filters:
        return None if depth is None else {"depth": depth}
    globs: list[str] = []
    for f in filters:
        kind, sep, value = f.partition("=")
        if kind.strip() != "tensors" or not sep or not value.strip():
            raise UsageError(f"unsupported filter {f!r}", hint="use --filter 'tensors=GLOB' (e.g. 'tensors=*.embed*')")
        globs += [g.strip() for g in value.split(",") if g.strip()]
    return {"tensors": globs} if depth is None else {"tensors": globs, "depth": depth}
