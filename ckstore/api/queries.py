"""The query verbs of `Repo`: find commits by their metadata, the best by a metric, and did-you-mean lists."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..formats.base import element_dtype, values
from ..model import stats
from ..model.diff import tensors_by_name
from ..model.query import query_paths, record_paths, sort_key
from ..results import CommitInfo, metric_value

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..model.objects import Manifest


class Queries:
    """Mixed into `Repo` (which provides `log`, `manifest` and `load`)."""

    log: Callable[..., list[CommitInfo]]
    manifest: Callable[..., Manifest]
    load: Callable[..., dict]

    def tensor_stats(self, rev: str, name: str) -> tuple[dict, bool] | None:
        """A tensor's statistics in `rev` (`name` as diff names tensors: "name", or "file:name" where two files
        share one) and whether they were computed just now: the stored ones, or for a commit made before
        histograms were stored, computed from its data (Q8_0 and Q4_0 blocks decoded); {} for a tensor without
        element statistics (complex, other block types). None when `rev` has no such tensor."""
        entry = tensors_by_name(self.manifest(rev)).get(name)
        if entry is None:
            return None
        if stats.histogram(entry.stats) is not None or element_dtype(entry.dtype) is None:
            return entry.stats or {}, False
        tree = self.load(rev, names=[entry.name])
        if entry.name not in tree:          # a committed state dict comes back nested by the dots of its names
            for part in entry.name.split("."):
                tree = tree[part]
        else:
            tree = tree[entry.name]
        return stats.of_array(values(entry.dtype, tree)), True

    def find(self, expr: str, *, rev: str | None = None, sort: str | None = None,
             limit: int | None = None) -> list[CommitInfo]:
        """Commits matching `expr` (all refs, or what `rev` reaches); `sort` is a key, "-key" for descending."""
        found = self.log(rev, all=rev is None, where=expr)
        if sort:
            key = sort_key(sort)  # "-key" sorts descending; missing values last either way
            found.sort(key=lambda e: key(e.to_dict()))
        return found[:limit] if limit is not None else found

    def unknown_keys(self, expr: str, *, rev: str | None = None) -> dict[str, list[str]]:
        """The keys `expr` names that no commit `rev` reaches (default: every ref) has, each with the known keys
        that look like it (a did-you-mean list)."""
        wanted = query_paths(expr)
        have: set[tuple[str, ...]] = set()
        for e in self.log(rev, all=rev is None):
            have |= record_paths(e.to_dict())
        known = {".".join(p) for p in have}
        return {".".join(p): similar(".".join(p), known) for p in wanted if p not in have}

    def best(self, metric: str, *, mode: str = "min", rev: str = "HEAD") -> CommitInfo | None:
        """The ancestor of `rev` (itself included) with the lowest (`min`) or highest (`max`) finite metric."""
        if mode not in ("min", "max"):
            raise UsageError(f"mode must be 'min' or 'max', not {mode!r}")
        scored = [(v, e) for e in self.log(rev) for v in [metric_value(e, metric)]
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if not scored:
            return None
        pick = min if mode == "min" else max
        return pick(scored, key=lambda pair: pair[0])[1]


def similar(key: str, known: set[str], n: int = 5) -> list[str]:
    """Known keys of the same depth that look like `key` (same last part, or close spelling)."""
    import difflib
    known = {k for k in known if k.count(".") == key.count(".")}
    tail = key.rsplit(".", 1)[-1]
    same_tail = sorted(k for k in known if k.rsplit(".", 1)[-1] == tail)
    close = difflib.get_close_matches(key, sorted(known), n=n, cutoff=0.6)
    return list(dict.fromkeys(same_tail + close))[:n]
