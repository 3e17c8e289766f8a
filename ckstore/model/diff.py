"""Pure comparison of two commits: files, tensors (matched by name), and metadata, metric by metric."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from . import stats
from .objects import Commit, Manifest, TensorEntry


@dataclass(frozen=True, slots=True)
class TensorPair:
    """A tensor present in both versions whose chunks differ."""

    name: str
    old: TensorEntry
    new: TensorEntry

    @property
    def comparable(self) -> bool:
        """True when both versions have the same dtype and shape, so element statistics apply."""
        return self.old.dtype == self.new.dtype and self.old.shape == self.new.shape


@dataclass
class Diff:
    """The comparison of two commits: old and new ids (old "" for none), file, tensor and metadata changes, summary."""

    old: str
    new: str
    files: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @property
    def differs(self) -> bool:
        """True when any file or tensor was added, removed or changed (metadata alone does not count)."""
        t, f = self.tensors, self.files
        return bool(t["added"] or t["removed"] or t["changed"] or f["added"] or f["removed"] or f["changed"])

    def to_dict(self) -> dict:
        """The diff as a JSON-ready dict, metrics also at the top level. Each changed tensor's entry carries
        `hist: {"old": [...], "new": [...]}`, both versions' value histograms (edges: `stats.hist_edges()`; null
        for a version whose statistics predate histograms), and `hist_of: {"old": n, "new": n}`, the elements
        each was counted over (a sample of large tensors), when either version has one."""
        return {"old": self.old, "new": self.new, "files": self.files, "tensors": self.tensors,
                "metrics": self.metadata.get("metrics", {}), "metadata": self.metadata, "summary": self.summary}


def tensors_by_name(manifest: Manifest) -> dict[str, TensorEntry]:
    """Tensors by the names diff reports: names that repeat across files are qualified as "file:name"."""
    counts: dict[str, int] = {}
    for t in manifest.tensors:
        counts[t.name] = counts.get(t.name, 0) + 1
    return {(t.name if counts[t.name] == 1 else f"{t.file}:{t.name}"): t for t in manifest.tensors}


def selected(manifest: Manifest, globs: list[str] | None = None) -> dict[str, TensorEntry]:
    """`tensors_by_name`, only those whose diff name matches one of `globs` (all without globs)."""
    named = tensors_by_name(manifest)
    if not globs:
        return named
    return {k: v for k, v in named.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}


def compare_files(old: Manifest, new: Manifest) -> dict:
    """Paths added, removed and changed (by content hash) from `old` to `new`, and the number unchanged."""
    a = {f.path: f for f in old.files}
    b = {f.path: f for f in new.files}
    changed = sorted(p for p in a.keys() & b.keys() if a[p].hash != b[p].hash)
    return {"added": sorted(b.keys() - a.keys()), "removed": sorted(a.keys() - b.keys()), "changed": changed,
            "unchanged": len(a.keys() & b.keys()) - len(changed)}


def compare_tensors(old: Manifest, new: Manifest, globs: list[str] | None = None
                    ) -> tuple[list[str], list[str], list[TensorPair], list[str]]:
    """(added, removed, changed pairs, unchanged) — unchanged means the same chunks, so the same bytes."""
    a, b = selected(old, globs), selected(new, globs)
    both = sorted(a.keys() & b.keys())
    same = [n for n in both if a[n].chunks == b[n].chunks and a[n].dtype == b[n].dtype and a[n].shape == b[n].shape]
    pairs = [TensorPair(n, a[n], b[n]) for n in both if n not in set(same)]
    return sorted(b.keys() - a.keys()), sorted(a.keys() - b.keys()), pairs, same


def _changed_keys(a: dict, b: dict) -> dict:
    return {k: {"old": a.get(k), "new": b.get(k)} for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def compare_metadata(old: Commit, new: Commit) -> dict:
    """Old/new/delta per metric; changed keys of params, seeds, data, extra and env packages; python, platform, step."""
    metrics = {}
    for k in sorted(old.metrics.keys() | new.metrics.keys()):
        x, y = old.metrics.get(k), new.metrics.get(k)
        metrics[k] = {"old": x, "new": y, "delta": (y - x) if x is not None and y is not None else None}
    out: dict[str, Any] = {"metrics": metrics}
    for section in ("params", "seeds", "data", "extra"):
        out[section] = _changed_keys(getattr(old, section), getattr(new, section))
    out["env"] = _changed_keys(old.env.get("packages", {}), new.env.get("packages", {}))
    for key in ("python", "platform"):
        if old.env.get(key) != new.env.get(key):
            out["env"][key] = {"old": old.env.get(key), "new": new.env.get(key)}
    if old.step != new.step:
        out["step"] = {"old": old.step, "new": new.step}
    return out


def hist_pair(pair: TensorPair) -> dict:
    """`{"hist": {"old": counts, "new": counts}, "hist_of": {"old": n, "new": n}}` for a changed tensor's diff
    entry (`hist_of`: the elements each side's bins were counted over), a side without a stored histogram null;
    {} when neither version has one."""
    old, new = pair.old.stats.get("hist"), pair.new.stats.get("hist")
    if old is None and new is None:
        return {}
    of = [None if h is None else stats.hist_of(s) for h, s in ((old, pair.old.stats), (new, pair.new.stats))]
    return {"hist": {"old": old, "new": new}, "hist_of": {"old": of[0], "new": of[1]}}


def shape_change(pair: TensorPair) -> dict:
    """The entry for a changed tensor whose dtype or shape differs: no numbers, just what changed."""
    d: dict[str, Any] = {"name": pair.name, "comparable": False}
    if pair.old.dtype != pair.new.dtype:
        d["dtype"] = [pair.old.dtype, pair.new.dtype]
    if pair.old.shape != pair.new.shape:
        d["shape"] = [list(pair.old.shape), list(pair.new.shape)]
    d["note"] = " and ".join(k for k in ("dtype", "shape") if k in d) + " changed: no element statistics"
    return d
