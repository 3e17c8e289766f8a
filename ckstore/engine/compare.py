"""Diffing two stored commits: the pure comparison plus change statistics streamed over the chunks that differ."""

from __future__ import annotations

import functools
from concurrent.futures import Executor


from ..formats.base import element_count, element_dtype, is_blocked, values
from ..model import stats
from ..model.diff import (Diff, TensorPair, compare_files, compare_metadata, compare_tensors, hist_pair,
                          shape_change)
from ..model.objects import Commit, Manifest
from ..storage.store import Store
from .parallel import ordered_map
from .restore import read_tensor


def _pair_stats(store: Store, pool: Executor, pair: TensorPair, atol: float, rtol: float) -> dict:
    old, new = pair.old, pair.new
    dtype = element_dtype(old.dtype)
    if dtype is None:
        kind = f"{old.dtype} blocks" if is_blocked(old.dtype) else "complex tensors"
        return {"name": pair.name, "comparable": False, "note": f"{kind}: no element statistics"}
    kind = old.dtype
    if old.chunk_bytes == new.chunk_bytes:
        differing = [(a, b) for a, b in zip(old.chunks, new.chunks) if a != b]
        differing_bytes = sum(end - start for (a, start, end), b in zip(old.chunk_ranges(), new.chunks) if a != b)
        same_elems = element_count(kind, old.nbytes - differing_bytes)  # identical chunks: counted, never read

        def one(ids: tuple[bytes, bytes]) -> stats.DeltaPartial:
            a, b = (values(kind, store.get_chunk(i)) for i in ids)
            return stats.delta_partial(a, b, atol, rtol)

        parts = ordered_map(pool, one, differing)
        total = functools.reduce(stats.merge_delta, parts, stats.DeltaPartial(count=same_elems))
    else:  # chunked differently (the chunk size changed between them): compare whole tensors
        total = stats.delta_partial(values(kind, read_tensor(store, old, pool)),
                                    values(kind, read_tensor(store, new, pool)), atol, rtol)
    result = stats.finish_delta(total, old.stats.get("l2") or 0.0, new.stats.get("l2") or 0.0)
    return {"name": pair.name, "file": new.file, "comparable": True, **result}


def stored_bytes_added(store: Store, old: Manifest | None, new: Manifest) -> int:
    """Bytes of frames the newer version needs that the older one does not."""
    extra = new.chunk_ids() - (old.chunk_ids() if old else set())
    return sum(loc.length for loc in store.index.get_many(list(extra)).values())


def diff_commits(store: Store, pool: Executor, old_id: bytes | None, old: Commit | None, old_m: Manifest | None,
                 new_id: bytes, new: Commit, new_m: Manifest, *, tensors: list[str] | None = None,
                 atol: float = 0.0, rtol: float = 0.0) -> Diff:
    """Compare `new` with `old` (None: all added): files, tensors within atol/rtol, metadata and a summary."""
    empty = Manifest((), ())
    base_m = old_m or empty
    added, removed, pairs, same = compare_tensors(base_m, new_m, tensors)
    changed = []
    for pair in pairs:
        entry = _pair_stats(store, pool, pair, atol, rtol) if pair.comparable else shape_change(pair)
        entry.update(hist_pair(pair))
        if entry.get("comparable") and entry["changed"] == 0:
            same.append(pair.name)  # within tolerance, or only NaN payload noise under a tolerance
        else:
            changed.append(entry)
    comparable = [c for c in changed if c.get("comparable")]
    summary = {
        "tensors_changed": len(changed), "tensors_added": len(added), "tensors_removed": len(removed),
        "tensors_unchanged": len(same),
        "elements_changed": sum(c["changed"] for c in comparable),
        "max_rel_l2": max((c["rel_l2"] for c in comparable), default=0.0),
        "stored_bytes_added": stored_bytes_added(store, old_m, new_m),
    }
    metadata = compare_metadata(old, new) if old else {"metrics": {k: {"old": None, "new": v, "delta": None}
                                                                   for k, v in new.metrics.items()}}
    return Diff(old_id.hex() if old_id else "", new_id.hex(), compare_files(base_m, new_m),
                {"added": added, "removed": removed, "changed": changed, "unchanged": sorted(same)}, metadata, summary)
