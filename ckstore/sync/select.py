"""Which commits and chunks a sync moves: commits parents first, the chunks of a manifest (or of the tensors a
partial clone's filter selects), and that filter parsed from the command line."""

from __future__ import annotations

import fnmatch
from typing import Callable

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


def manifest_chunks(manifest: Manifest, partial: dict | None = None) -> list[bytes]:
    """The chunks of a manifest in file order, or only those of the tensors a partial filter selects."""
    if partial is not None:
        return list(dict.fromkeys(c for t in manifest.tensors if _tensor_matches(t, partial["tensors"])
                                  for c in t.chunks))
    return list(dict.fromkeys(manifest.file_chunks(manifest.files)))


def parse_filter(filters: str | list[str] | None, metadata_only: bool = False) -> dict | None:
    """--filter 'tensors=GLOB[,GLOB...]' (repeatable) and --metadata-only -> the `partial` setting of a remote."""
    if isinstance(filters, str):
        filters = [filters]
    if metadata_only:
        if filters:
            raise UsageError("--metadata-only and --filter exclude each other")
        return {"tensors": []}
    if not filters:
        return None
    globs: list[str] = []
    for f in filters:
        kind, sep, value = f.partition("=")
        if kind.strip() != "tensors" or not sep or not value.strip():
            raise UsageError(f"unsupported filter {f!r}", hint="use --filter 'tensors=GLOB' (e.g. 'tensors=*.embed*')")
        globs += [g.strip() for g in value.split(",") if g.strip()]
    return {"tensors": globs}
